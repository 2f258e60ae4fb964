"""The serving runtime (numpy only): a trained AWRQ-Mixer bundle behind the policy slot.

``PolicyRuntime.load("pretrained")`` reads the shipped bundle; ``act(features, lam)`` returns the
joint action of each request, ``bind(features)`` returns ``lam -> actions`` with the per-request
work done once.

The network's estimate of revenue factorises (see :class:`policies.training.nets.AWRQMixerNet`)::

    Rev(x, a) = v(x) * (z(x) . psi(a) + b(x)),     z(x) = concat_i w_i(x) * rho_i(x) >= 0

The action side ``psi(a)`` -- every agent's recurrent utility heads run over its ordered
sub-decisions, combined with the AW head weights -- depends on the action only, so it is computed
once when the bundle loads (numpy GRU). Per request the runtime evaluates the small request-side
networks (``v * z``, ``P = n_agents x channels`` numbers) and takes

    a* = argmax_a  v z(x) . psi(a) - lambda . cost(a)

with ``cost`` the cascade's cost table. This joint argmax is what the agents reach deciding in
stage order, each maximising its value-to-go given its own observation (request, lambda, upstream
decisions) under the learned utilities; the runtime computes it in one vectorised pass instead of
three separate argmaxes, because a greedy per-agent argmax that ignored the downstream agents would
not be exact here (upstream decisions cap downstream queues and costs). Lambda enters every
decision and, since the revenue estimate does not depend on lambda, raising ``lambda_g`` never
raises the chosen actions' cost on cluster ``g``.

Speed: because ``z >= 0`` and ``lambda >= 0``, an action whose ``psi`` is no larger in every
component and whose cost is no smaller on every cluster than another's can never be chosen; those
are dropped at load. For large batches the remaining candidates are further pruned for the given
lambda (dominance in ``(psi, lambda . cost)``, cached per lambda) and then per chunk of similar
requests by score bounds (see :meth:`PolicyRuntime._grouped_argmax`); the argmax stays exact.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from .bundle import read_bundle
from .oracle import check_lambda


def _softplus(x):
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _gru_last(p: dict, name: str, seq: np.ndarray) -> np.ndarray:
    """Final hidden state of a torch GRU cell (gates r, z, n) run over ``seq`` (N, L, I) from zero."""
    w_ih, w_hh, b_ih, b_hh = (p[f"{name}.{k}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    H = w_hh.shape[1]
    h = np.zeros((seq.shape[0], H))
    for t in range(seq.shape[1]):
        gi = seq[:, t] @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        r = _sigmoid(gi[:, :H] + gh[:, :H])
        z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        h = (1.0 - z) * n + z * h
    return h


def action_profiles(p: dict, n_agents: int, heads: int, channels: int) -> np.ndarray:
    """``psi`` (A, n_agents * channels): head-combined agent utilities of every joint action."""
    cols = []
    for i in range(n_agents):
        ids, vals = p[f"ids_{i}"].astype(np.int64), p[f"vals_{i}"]
        tok = np.concatenate([p["embed.weight"][ids], vals[..., None]], axis=-1)
        h = _gru_last(p, f"grus.{i}", tok)
        out = (h @ p[f"agent_heads.{i}.weight"].T + p[f"agent_heads.{i}.bias"]).reshape(len(h), heads, channels)
        cols.append(np.einsum("k,nkj->nj", p["head_weights"], out)[p[f"prefix_{i}"].astype(np.int64)])
    return np.concatenate(cols, axis=1)


def _dominance_free(psi: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Indices of actions no other action weakly dominates in (psi >=, cost <=); ties keep the lowest index."""
    A = len(psi)
    keep = np.ones(A, dtype=bool)
    for a in range(A):
        ge = np.all(psi >= psi[a], axis=1) & np.all(cost <= cost[:, [a]], axis=0)
        same = np.all(psi == psi[a], axis=1) & np.all(cost == cost[:, [a]], axis=0)
        ge &= ~same | (np.arange(A) < a)
        ge[a] = False
        keep[a] = not ge.any()
    return np.flatnonzero(keep)


class PolicyRuntime:
    """A trained value model serving ``act(features, lam)``; build with :meth:`load`.

    ``dtype`` is the precision of the per-request argmax (float64 by default; float32 is faster).
    """

    PRUNE_MIN_BATCH = 1024  # per-lambda and per-chunk candidate pruning pay off from this batch size on
    CHUNK = 128
    PROFILE_CHUNK = 1024
    _CACHE = 32

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict, name: str = "policy", dtype=np.float64, cost=None):
        self.meta, self.name, self.dtype = meta, name, np.dtype(dtype)
        arch = meta["architecture"]
        try:
            p = {k: np.asarray(v, dtype=np.float64) if v.dtype.kind == "f" else v for k, v in arrays.items()}
            self.n_agents, self.heads, self.channels = int(arch["n_agents"]), int(arch["heads"]), int(arch["channels"])
            self.smc = bool(arch["smc"])
            self.features = tuple(meta["features"])
            self.value_column = self.features.index("log_value")
            self.mean, self.scale = p["feature_mean"], p["feature_scale"]
            self.cost = p["cost"] if cost is None else np.asarray(cost, dtype=np.float64)
            self._p = p
            self.psi = action_profiles(p, self.n_agents, self.heads, self.channels)
        except (KeyError, ValueError, IndexError) as e:
            raise ValueError(f"policy bundle {name!r}: arrays do not match its metadata ({e!r})") from None
        if self.cost.shape != p["cost"].shape or not np.isfinite(self.cost).all() or self.cost.min() < 0:
            raise ValueError(f"policy bundle {name!r}: cost table must be finite, >= 0 and of shape {p['cost'].shape}, "
                             f"got shape {self.cost.shape}")
        if self.psi.shape[0] != self.cost.shape[1] or self.mean.shape != (len(self.features),):
            raise ValueError(f"policy bundle {name!r}: {self.psi.shape[0]} actions in the network but "
                             f"{self.cost.shape[1]} in the cost table, or feature normalisation of the wrong size")
        self.n_actions = self.psi.shape[0]
        self.lambda_range = tuple(meta["lambda_range"])
        self._cand = _dominance_free(self.psi, self.cost)
        psi_c = self.psi[self._cand]
        self._psi_ge = np.all(psi_c[None, :, :] >= psi_c[:, None, :], axis=-1)  # [a, b]: psi_b >= psi_a
        self._psi_eq = np.all(psi_c[None, :, :] == psi_c[:, None, :], axis=-1)
        self._lower = np.arange(len(self._cand))[None, :] < np.arange(len(self._cand))[:, None]
        self._set_dtype_tables()
        self._fuse_request_networks()
        self._lam_cache: OrderedDict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()

    def _set_dtype_tables(self):
        self._psi_t = np.ascontiguousarray(self.psi[self._cand].T, dtype=self.dtype)
        self._cost_c = self.cost[:, self._cand]

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str | Path = "pretrained", dtype=np.float64, cost=None) -> "PolicyRuntime":
        """Load a bundle by name (``"pretrained"`` is the shipped one) or path; checks its sha256.

        ``cost`` (G, A) replaces the bundle's cost table (the one it was trained with) by the serving
        system's current estimate, e.g. a TestBench measurement; the value network is unchanged.
        """
        arrays, meta, path = read_bundle(name_or_path)
        name = path.stem if str(name_or_path) != "pretrained" else "pretrained"
        return cls(arrays, meta, name=name, dtype=dtype, cost=cost)

    # -- request side ----------------------------------------------------------------------------
    def _check_features(self, features) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"features must have shape (n, {len(self.features)}) with columns {self.features}, got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"features row {int(np.argwhere(~np.isfinite(x))[0, 0])} is not finite")
        return x

    def _fuse_request_networks(self):
        """Stack the request-side MLPs (each agent's reading and the two hypernetworks), which all read
        the same normalised features, so one request batch runs through them in three matrix products."""
        p, dt = self._p, self.dtype
        names = [f"obs.{i}" for i in range(self.n_agents)] + ["hyper_w", "hyper_b"]
        out = max(p[f"{n}.4.weight"].shape[0] for n in names)
        self._w1 = np.concatenate([p[f"{n}.0.weight"] for n in names]).T.astype(dt)  # (F, M*H)
        self._b1 = np.concatenate([p[f"{n}.0.bias"] for n in names]).astype(dt)
        self._w2 = np.stack([p[f"{n}.2.weight"].T for n in names]).astype(dt)  # (M, H, H)
        self._b2 = np.stack([p[f"{n}.2.bias"] for n in names]).astype(dt)[:, None, :]
        w3 = np.zeros((len(names), self._w2.shape[1], out))
        b3 = np.zeros((len(names), 1, out))
        for k, n in enumerate(names):
            w3[k, :, : p[f"{n}.4.weight"].shape[0]] = p[f"{n}.4.weight"].T
            b3[k, 0, : p[f"{n}.4.bias"].shape[0]] = p[f"{n}.4.bias"]
        self._w3, self._b3 = w3.astype(dt), b3.astype(dt)
        self._mean_dt, self._inv_scale_dt = self.mean.astype(dt), (1.0 / self.scale).astype(dt)

    def request_profiles(self, features) -> tuple[np.ndarray, np.ndarray]:
        """(``v z(x)`` (N, P) >= 0, ``v b(x)`` (N,)): the per-request part of the revenue estimate,
        in the runtime's ``dtype``. Large batches run in chunks of ``PROFILE_CHUNK`` rows: the
        layers' temporaries then stay small and cached (measured 11.4 -> 6.3 ms for 4096 rows)."""
        x = self._check_features(features)
        C = self.PROFILE_CHUNK
        if len(x) <= C:
            return self._profiles(x)
        parts = [self._profiles(x[i:i + C]) for i in range(0, len(x), C)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _profiles(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xn = ((x - self._mean_dt) * self._inv_scale_dt).astype(self.dtype, copy=False)
        M, H = self._w2.shape[0], self._w2.shape[1]
        h = np.maximum(xn @ self._w1 + self._b1, 0.0).reshape(len(x), M, H).transpose(1, 0, 2)  # (M, N, H)
        h = np.maximum(h @ self._w2 + self._b2, 0.0)
        o = h @ self._w3 + self._b3  # (M, N, out)
        n, J = self.n_agents, self.channels
        rho = _softplus(o[:n, :, :J]).transpose(1, 0, 2)  # (N, n_agents, J)
        raw = o[n, :, :n]
        w = _softplus(raw) if self.smc else np.abs(raw)
        v = np.exp(x[:, self.value_column]).astype(self.dtype)
        z = (w[:, :, None] * rho).reshape(len(x), -1) * v[:, None]
        return z, v * o[n + 1, :, 0]

    def predict_revenue(self, features) -> np.ndarray:
        """Estimated revenue of every joint action (N, A)."""
        z, b = self.request_profiles(features)
        return z @ self.psi.T.astype(self.dtype) + b[:, None]

    # -- decisions -------------------------------------------------------------------------------
    def _candidates(self, lam: np.ndarray, prune: bool):
        if not prune:
            return self._cand, self._psi_t, (lam @ self._cost_c).astype(self.dtype)
        key = lam.tobytes()
        hit = self._lam_cache.get(key)
        if hit is not None:
            self._lam_cache.move_to_end(key)
            return hit
        pen = lam @ self._cost_c
        le, lt = pen[None, :] <= pen[:, None], pen[None, :] < pen[:, None]
        dominated = np.any(self._psi_ge & le & (~self._psi_eq | lt | self._lower), axis=1)
        keep = np.flatnonzero(~dominated)
        out = (self._cand[keep], np.ascontiguousarray(self._psi_t[:, keep]), pen[keep].astype(self.dtype))
        self._lam_cache[key] = out
        if len(self._lam_cache) > self._CACHE:
            self._lam_cache.popitem(last=False)
        return out

    def _decide(self, z: np.ndarray, lam) -> np.ndarray:
        lam = check_lambda(lam, self.cost.shape[0])
        large = len(z) >= self.PRUNE_MIN_BATCH
        idx, psi_t, pen = self._candidates(lam, prune=large)
        if large:
            return idx[self._grouped_argmax(z, psi_t, pen)]
        scores = z @ psi_t
        scores -= pen
        return idx[np.argmax(scores, axis=1)]

    def _grouped_argmax(self, z: np.ndarray, psi_t: np.ndarray, pen: np.ndarray) -> np.ndarray:
        """Exact ``argmax(z @ psi_t - pen)`` for a large batch, over far fewer candidates per request.

        Requests are sorted by the scale of ``z`` and cut into chunks of ``CHUNK``. Over a chunk's
        bounding box ``[lo, hi]`` of ``z``, an action's score lies between
        ``sum_j min(lo_j psi_j, hi_j psi_j) - pen`` and ``sum_j max(...) - pen``; an action whose upper
        bound is below the best lower bound in the chunk cannot be any member's argmax, so only the
        rest are scored (padded to the chunk with the most survivors, ties resolved by index order).
        """
        n, P = z.shape
        C = -(-n // self.CHUNK)
        order = np.argsort(z.sum(axis=1), kind="stable")
        zs = z[order]
        if C * self.CHUNK > n:
            zs = np.concatenate([zs, np.repeat(zs[-1:], C * self.CHUNK - n, axis=0)])
        zc = zs.reshape(C, self.CHUNK, P)
        psi = psi_t.T  # (m, P)
        t_lo, t_hi = zc.min(axis=1)[:, None, :] * psi, zc.max(axis=1)[:, None, :] * psi  # (C, m, P)
        upper = np.maximum(t_lo, t_hi).sum(axis=-1) - pen
        lower = np.minimum(t_lo, t_hi).sum(axis=-1) - pen
        best_lower = lower.max(axis=1, keepdims=True)
        slack = (1e-9 if self.dtype == np.float64 else 1e-4) * (np.abs(best_lower) + 1.0)
        keep = upper >= best_lower - slack  # slack for rounding: never drops the argmax
        K = int(keep.sum(axis=1).max())
        cols = np.argsort(~keep, axis=1, kind="stable")[:, :K]  # survivors first, in index order
        cols = np.where(np.take_along_axis(keep, cols, axis=1), cols, cols[:, :1])  # pad with a repeat
        scores = zc @ np.ascontiguousarray(psi[cols].transpose(0, 2, 1))  # (C, CHUNK, K)
        scores -= pen[cols][:, None, :]
        best = np.take_along_axis(cols, scores.argmax(axis=-1), axis=1).reshape(-1)[:n]
        out = np.empty(n, dtype=np.int64)
        out[order] = best
        return out

    def act(self, features, lam) -> np.ndarray:
        """Joint action index (N,) int64 of each request at multipliers ``lam`` (one per cluster)."""
        return self._decide(self.request_profiles(features)[0], lam)

    def bind(self, features):
        """``lam -> actions`` for a fixed batch: the request-side networks run once."""
        z = self.request_profiles(features)[0]
        return lambda lam: self._decide(z, lam)

    def __repr__(self) -> str:
        return f"PolicyRuntime({self.name!r}, actions={self.n_actions}, candidates={len(self._cand)}, dtype={self.dtype.name})"
