"""numpy forward pass of :class:`~policies.offline._torch_nets.SequenceNet` (eval mode).

Serving needs no torch: the trained parameters are plain arrays (saved as ``.npz``), and this
module recomputes the network's outputs from them. It is tested against the torch forward.
"""
from __future__ import annotations

import numpy as np


def _relu(x):
    return np.maximum(x, 0.0)


def _linear(p, name, x):
    return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]


def _causal_conv(p, name, h, dilation):
    w, b = p[f"{name}.conv.weight"], p[f"{name}.conv.bias"]  # w [out, in, k]
    k = w.shape[2]
    pad = (k - 1) * dilation
    n, t, d = h.shape
    x = np.concatenate([np.zeros((n, pad, d), h.dtype), h], axis=1)
    y = np.broadcast_to(b, (n, t, w.shape[0])).copy()
    for j in range(k):
        y += x[:, j * dilation: j * dilation + t] @ w[:, :, j].T
    return h + _relu(y)


def _attention(p, name, h, n_heads):
    n, t, d = h.shape
    dh = d // n_heads
    q, k, v = np.split(_linear(p, f"{name}.qkv", h), 3, axis=-1)
    q, k, v = (x.reshape(n, t, n_heads, dh).transpose(0, 2, 1, 3) for x in (q, k, v))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh)
    causal = np.tril(np.ones((t, t), dtype=bool))
    scores = np.where(causal, scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    w = np.exp(scores) * causal
    w = w / w.sum(axis=-1, keepdims=True)
    out = (w @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
    return h + _linear(p, f"{name}.proj", out)


def forward(params: dict, x: np.ndarray, n_conv: int, attention: bool, n_heads: int,
            chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Action logits and reward-head outputs ``[N, T, A]`` for tokens ``x [N, T, F]``."""
    outs_a, outs_r = [], []
    for start in range(0, max(len(x), 1), chunk):
        xb = np.asarray(x[start:start + chunk], dtype=np.float32)
        h = _relu(_linear(params, "inp", xb))
        for i in range(n_conv):
            h = _causal_conv(params, f"convs.{i}", h, 2 ** i)
        if attention:
            h = _attention(params, "attn", h, n_heads)
        h = h + _relu(_linear(params, "mlp", h))
        outs_a.append(_linear(params, "action_head", h))
        outs_r.append(_linear(params, "reward_head", h))
    return np.concatenate(outs_a), np.concatenate(outs_r)


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))
