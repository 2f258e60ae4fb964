"""Offline training of the value models on logged data (torch, CPU, one thread).

The task is a one-step contextual bandit per request, so the TD target is the realised reward:
every head regresses ``revenue / v`` (``v = exp(log_value)``, the request value), the
value-normalised revenue, whose noise (click x bid / v) does not grow with the value. Samples are
weighted uniformly by default (``sample_weight="value"`` weights them by ``v / mean(v)``, the
revenue-weighted error, at the price of about half the effective sample size).
All algorithms get the same data, target, weighting, optimiser, batch size, number of steps and
target network, so their differences are their networks and their multi-head / credit rules:

* ``awrq``: AWRQ-Mixer (see :class:`~policies.training.nets.AWRQMixerNet`). Every head is trained on
  its own loss over its own bootstrap half of each batch (so the heads stay an ensemble whose
  disagreement measures uncertainty) and the AW-combined estimate on the whole batch. **AW**: head weights
  ``softmax(-L_k / (T * mean L))`` from an exponential moving average ``L_k`` of each head's loss
  (uniform when ablated). **VGCA**: the gradient each agent receives from the error is scaled by
  its share of the variance of its utility across heads (an agent whose heads disagree is the one
  whose utility is uncertain and gets more of the credit for the error); the forward value is
  unchanged. **SMC**: softplus mixing weights (``abs`` when ablated).
* ``dqn``: one network over the 960 joint actions; ``rem``: the same with K heads trained on a
  random convex combination per batch (Agarwal et al.); ``vdn``: sum of agent utilities;
  ``qmix``: two-layer monotone hypernetwork mixer.

The **target network** is a Polyak average of the online network. With one-step episodes there is
no bootstrap term for it to stabilise, so it serves as the evaluated and exported network (an
averaged, lower-variance estimate of the online one).
"""
from __future__ import annotations

import copy
import time

import numpy as np

from ..bundle import REQUEST_KINDS
from ..cascade import FEATURES, Cascade
from ..logs import LoggedData

ALGOS = ("awrq", "qmix", "vdn", "rem", "dqn")
ABLATIONS = {"awrq-no-aw": {"aw": False}, "awrq-no-smc": {"smc": False}, "awrq-no-vgca": {"vgca": False}}
VALUE_COLUMN = FEATURES.index("log_value")


def request_value(features: np.ndarray) -> np.ndarray:
    """The request value ``v = exp(log_value)`` that revenue estimates scale with."""
    return np.exp(np.asarray(features, dtype=float)[:, VALUE_COLUMN])


class ValueModel:
    """A value model ``E[revenue | x, a]`` trained offline on logs (scikit-learn style).

    Parameters are configuration only; :meth:`fit` returns ``self`` and sets ``net_`` (the target
    network, evaluation mode), ``feature_mean_``, ``feature_scale_``, ``history_`` and ``fit_seconds_``.

    The defaults are the paper's networks at equal budget for every algorithm (Table 1): AWRQ-Mixer's
    request side is a separate MLP per agent reading and per hypernetwork (``request="separate"``,
    ``hidden=64``, two channels per agent). The shipped serving bundle shares one narrower trunk
    among them with one channel per agent (``request="shared"``, ``hidden=24``, ``channels=1``:
    ``mpc-balancer train``'s defaults), far fewer request-side multiply-adds; its Return% is what
    ``mpc-balancer policies evaluate --algos pretrained`` prints (figures in the README).
    """

    def __init__(self, algo: str = "awrq", *, steps: int = 3000, batch_size: int = 2048, lr: float = 3e-3,
                 heads: int = 4, channels: int = 2, hidden: int = 64, aw: bool = True, smc: bool = True,
                 vgca: bool = True, aw_temperature: float = 0.02, target_tau: float = 0.02,
                 sample_weight: str = "uniform", seed: int = 0, verbose: bool = False, request: str = "separate"):
        self.algo, self.steps, self.batch_size, self.lr = algo, steps, batch_size, lr
        self.heads, self.channels, self.hidden = heads, channels, hidden
        self.aw, self.smc, self.vgca, self.aw_temperature = aw, smc, vgca, aw_temperature
        self.target_tau, self.sample_weight, self.seed, self.verbose = target_tau, sample_weight, seed, verbose
        self.request = request  # AWRQ-Mixer's request side: "separate" MLPs or one "shared" trunk

    def get_params(self) -> dict:
        """The constructor's parameters (scikit-learn style)."""
        return {k: getattr(self, k) for k in ("algo", "steps", "batch_size", "lr", "heads", "channels", "hidden", "aw",
                                              "smc", "vgca", "aw_temperature", "target_tau", "sample_weight", "seed", "verbose",
                                              "request")}

    def _validate(self):
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algorithm {self.algo!r}; available: {', '.join(ALGOS)}")
        for k in ("steps", "batch_size", "heads", "channels", "hidden"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.request not in REQUEST_KINDS:
            raise ValueError(f"request must be 'separate' or 'shared', got {self.request!r}")
        if self.sample_weight not in ("uniform", "value"):
            raise ValueError(f"sample_weight must be 'uniform' or 'value', got {self.sample_weight!r}")
        if not (self.lr > 0 and 0 < self.target_tau <= 1 and self.aw_temperature > 0):
            raise ValueError("lr, aw_temperature must be > 0 and target_tau in (0, 1]")

    def _network_kwargs(self) -> dict:
        if self.algo == "awrq":
            return {"hidden": self.hidden, "heads": self.heads, "channels": self.channels, "smc": self.smc,
                    "request": self.request}
        if self.algo in ("rem", "dqn"):
            return {"hidden": self.hidden, "heads": self.heads if self.algo == "rem" else 1}
        return {"hidden": self.hidden}

    def fit(self, logs: LoggedData, cascade: Cascade | None = None) -> ValueModel:
        """Train on logged requests (torch, CPU, one thread).

        Parameters
        ----------
        logs : LoggedData
            Requests, the actions taken and the realised revenue.
        cascade : Cascade, optional
            The cascade whose cost table and action grid the model decides over (the default cascade when None).

        Returns
        -------
        ValueModel
            ``self``, with ``net_``, ``feature_mean_``, ``feature_scale_``, ``history_`` and ``fit_seconds_``.
        """
        import torch

        from .nets import build_network

        self._validate()
        torch.set_num_threads(1)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.cascade_ = cascade or Cascade()
        x = np.asarray(logs.features, dtype=float)
        self.feature_mean_ = x.mean(axis=0)
        self.feature_scale_ = x.std(axis=0) + 1e-8
        v = request_value(x)
        xn = torch.as_tensor((x - self.feature_mean_) / self.feature_scale_, dtype=torch.float32)
        y = torch.as_tensor(logs.revenue / v, dtype=torch.float32)
        wt = torch.as_tensor(v / v.mean() if self.sample_weight == "value" else np.ones_like(v), dtype=torch.float32)
        joint = torch.as_tensor(logs.joint, dtype=torch.int64)

        net = build_network(self.algo, self.cascade_, x.shape[1], **self._network_kwargs())
        target = copy.deepcopy(net).requires_grad_(False)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=self.steps, pct_start=0.1)
        K = getattr(net, "heads", 1)
        loss_ema = None
        history = []
        t0 = time.perf_counter()
        for step in range(self.steps):
            idx = torch.as_tensor(rng.integers(0, len(y), self.batch_size))
            xb, yb, wb, ab = xn[idx], y[idx], wt[idx], joint[idx]
            q_heads, aux = net(xb, ab)
            if self.algo == "awrq" and self.vgca:
                q_heads = self._vgca(q_heads, aux)
            err = wb.unsqueeze(-1) * (q_heads - yb.unsqueeze(-1)) ** 2  # (B, K)
            if self.algo == "awrq" and K > 1:  # bootstrap masks keep the heads an ensemble, not K copies
                err = err * torch.as_tensor(rng.random((len(yb), K)) < 0.5, dtype=torch.float32) * 2.0
            per_head = err.mean(0)  # (K,)
            if self.algo == "awrq":
                combined = q_heads @ net.head_weights
                loss = per_head.mean() + (wb * (combined - yb) ** 2).mean()
            elif self.algo == "rem":
                alpha = torch.as_tensor(rng.random(K), dtype=torch.float32)
                loss = (wb * (q_heads @ (alpha / alpha.sum()) - yb) ** 2).mean()
            else:
                loss = per_head.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                if self.algo == "awrq":
                    ph = per_head.detach()
                    loss_ema = ph.clone() if loss_ema is None else 0.99 * loss_ema + 0.01 * ph
                    if self.aw:
                        net.head_weights.copy_(torch.softmax(-loss_ema / (self.aw_temperature * loss_ema.mean()), 0))
                for pt, po in zip(target.parameters(), net.parameters()):
                    pt.lerp_(po, self.target_tau)
                for bt, bo in zip(target.buffers(), net.buffers()):
                    bt.copy_(bo)
            if step % 200 == 0 or step == self.steps - 1:
                history.append({"step": step, "loss": loss.item()})
                if self.verbose:
                    print(f"[{self.algo}] step {step:5d} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
        self.net_ = target.eval()
        self.history_ = history
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _vgca(self, q_heads, aux):
        """Rebuild ``q_heads`` so each agent's gradient is scaled by its variance share (value unchanged)."""
        utils, w = aux["utils"], aux["w"]  # (B, n, K), (B, n)
        n = utils.shape[1]
        var = utils.detach().var(dim=-1)  # (B, n)
        share = var / (var.sum(dim=1, keepdim=True) + 1e-12)
        scale = 0.5 + 0.5 * n * share  # mean 1 over agents, never starves an agent
        scaled = utils.detach() + scale.unsqueeze(-1) * (utils - utils.detach())
        return q_heads + (w.unsqueeze(-1) * (scaled - utils)).sum(1)

    def _check_fitted(self):
        if not hasattr(self, "net_"):
            raise RuntimeError("ValueModel is not fitted: call fit(logs) first")

    def predict_revenue(self, features: np.ndarray, chunk: int = 512) -> np.ndarray:
        """Estimated revenue of every joint action, (N, A) float64."""
        import torch

        self._check_fitted()
        x = np.asarray(features, dtype=float)
        xn = torch.as_tensor((x - self.feature_mean_) / self.feature_scale_, dtype=torch.float32)
        with torch.no_grad():
            q = np.concatenate([self.net_.q_all(xn[s:s + chunk]).double().numpy() for s in range(0, len(x), chunk)])
        return request_value(x)[:, None] * q
