"""The shared torch training loop: minibatches of journeys, Adam, early stopping on validation.

torch is imported inside the functions; ``torch.set_num_threads(1)`` is set for training (on
small models more threads were measured to be much slower on shared 2-core machines).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np


def to_tensors(arrays: dict) -> dict:
    """numpy arrays -> torch tensors (int64 stays int64, the rest float32)."""
    import torch

    out = {}
    for k, v in arrays.items():
        v = np.asarray(v)
        out[k] = torch.as_tensor(v, dtype=torch.int64 if v.dtype.kind in "iu" else torch.float32)
    return out


def fit_network(net, loss_fn: Callable, train: dict, val: dict, *, lr=3e-3, batch_size=64,
                max_epochs=30, patience=3, seed=0, weight_decay=0.0, max_seconds=None,
                after_step: Callable | None = None):
    """Train ``net`` on ``loss_fn(net, batch)``; keep the parameters of the best validation loss.

    ``train`` / ``val`` map names to arrays whose first axis is the journey. Returns
    ``(net, history)`` with ``history = {"train": [...], "val": [...], "best_epoch": int}``.
    """
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tr, va = to_tensors(train), to_tensors(val)
    n = len(next(iter(tr.values())))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state, best_epoch, bad = np.inf, copy.deepcopy(net.state_dict()), -1, 0
    history = {"train": [], "val": []}
    t0 = time.perf_counter()
    for epoch in range(max_epochs):
        net.train()
        perm = rng.permutation(n)
        losses = []
        for s in range(0, n, batch_size):
            idx = torch.as_tensor(perm[s:s + batch_size])
            batch = {k: v[idx] for k, v in tr.items()}
            loss = loss_fn(net, batch)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            if after_step is not None:
                after_step(net)
            losses.append(float(loss.detach()))
        net.eval()
        with torch.no_grad():
            vloss = float(loss_fn(net, va))
        history["train"].append(float(np.mean(losses)))
        history["val"].append(vloss)
        if vloss < best - 1e-5:
            best, best_state, best_epoch, bad = vloss, copy.deepcopy(net.state_dict()), epoch, 0
        else:
            bad += 1
            if bad >= patience:
                break
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
    net.load_state_dict(best_state)
    net.eval()
    history["best_epoch"] = best_epoch
    return net, history
