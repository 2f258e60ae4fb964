"""The serving runtime (numpy only) of a ``joint-q`` bundle: one agent over the joint action.

REM and DQN (:class:`policies.training.nets.JointQNet`) are one MLP from the request features to
``heads x n_actions`` value-normalised revenue estimates; the estimate is the mean over the heads
(REM's ensemble; DQN has one head). Since the last layer is linear, the mean over the heads is one
linear layer with the heads' weights averaged, so a request costs two hidden layers and one
``hidden x n_actions`` product::

    Rev(x, a) = v(x) * q(x)[a],     q = mean_k  W2_k relu(W1 relu(W0 xn + b0) + b1) + b2_k
    a* = argmax_a  Rev(x, a) - lambda . cost(a)

with ``v = exp(log_value)`` and ``cost`` the cascade's cost table. Unlike AWRQ-Mixer, the joint
agent has no factorised action side: every request scores every joint action. This is MaRCA's
RL-MPCA baseline (a centralised agent; in the paper's Table 1, REM reaches Return% 89.47 against
AWRQ-Mixer's 97.26).

The runtime implements the policy protocol of :mod:`mpc_balancer.policy` (``respond``,
``respond_many``, ``act``) and caches the revenue estimates of a read-only sample, so that the
plant's decision and the controller's sweep on the same sample run the network once. The cached
estimates and the per-lambda scores are float32: a decision is one pass over an (N, A) score
matrix, and its memory traffic is what it costs.
"""
from __future__ import annotations

import numpy as np

from .bundle import read_bundle
from .cascade import DEFAULT_CLUSTERS
from .oracle import check_lambda
from .runtime import check_features
from .sweep import check_lambdas


class JointQRuntime:
    """A ``joint-q`` bundle serving ``act(features, lam)``; build with :meth:`load`."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict, name: str = "policy", cost=None):
        if meta.get("kind") != "joint-q":
            raise ValueError(f"policy bundle {name!r}: kind {meta.get('kind')!r} is not 'joint-q'")
        self.meta, self.name = meta, name
        try:
            p = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
            self.heads = int(meta["architecture"]["heads"])
            self.features = tuple(meta["features"])
            self.value_column = self.features.index("log_value")
            mean, scale = p["feature_mean"], p["feature_scale"]
            bundle_cost = p["cost"]
            self.cost = bundle_cost if cost is None else np.asarray(cost, dtype=np.float64)
            G, A = bundle_cost.shape
            w0, b0 = p["net.0.weight"], p["net.0.bias"]
            # the feature normalisation folded into the first layer: W0 (x - m) / s + b0
            self._w0 = (w0 / scale[None, :]).T
            self._b0 = b0 - w0 @ (mean / scale)
            self._w1, self._b1 = p["net.2.weight"].T, p["net.2.bias"]
            w2, b2 = p["net.4.weight"], p["net.4.bias"]
            H = w2.shape[1]
            if w2.shape[0] != self.heads * A or mean.shape != (len(self.features),):
                raise ValueError(f"output layer has {w2.shape[0]} rows for {self.heads} heads x {A} actions")
            self._w2 = np.ascontiguousarray(w2.reshape(self.heads, A, H).mean(axis=0).T, dtype=np.float32)  # (H, A): the head mean
            self._b2 = b2.reshape(self.heads, A).mean(axis=0).astype(np.float32)
        except (KeyError, ValueError, IndexError) as e:
            raise ValueError(f"policy bundle {name!r}: arrays do not match its metadata ({e})") from None
        if self.cost.shape != (G, A) or not np.isfinite(self.cost).all() or self.cost.min() < 0:
            raise ValueError(f"policy bundle {name!r}: cost table must be finite, >= 0 and of shape {(G, A)}, "
                             f"got shape {self.cost.shape}")
        self.n_actions = A
        self.clusters = tuple(meta.get("clusters", DEFAULT_CLUSTERS))
        if len(self.clusters) != G:
            raise ValueError(f"policy bundle {name!r}: {len(self.clusters)} cluster names for {G} clusters")
        self.lambda_range = tuple(meta["lambda_range"])
        self._cache = (None, None)  # (read-only features array, revenue estimates (N, A), float32)
        self._buf = None  # scores buffer of the last batch size

    @classmethod
    def load(cls, name_or_path, cost=None) -> JointQRuntime:
        """Load a ``joint-q`` bundle by name (e.g. ``"rem"``, shipped) or path; checks its sha256."""
        arrays, meta, path = read_bundle(name_or_path)
        return cls(arrays, meta, name=path.stem, cost=cost)

    def predict_revenue(self, features) -> np.ndarray:
        """Estimated revenue of every joint action, (N, A) float64."""
        return self._forward(features).astype(np.float64)

    def _forward(self, features) -> np.ndarray:
        """The network in float32 (as trained): the first layer in float64 (it holds the folded
        normalisation), the wide output layer, which is the cost, in float32."""
        x = check_features(features, self.features)
        h = np.maximum(x @ self._w0 + self._b0, 0.0)
        h = np.maximum(h @ self._w1 + self._b1, 0.0).astype(np.float32)
        q = h @ self._w2
        q += self._b2
        q *= np.exp(x[:, self.value_column]).astype(np.float32)[:, None]
        return q

    def _estimates(self, features) -> np.ndarray:
        """:meth:`predict_revenue`, cached for the same read-only array owning its data (the plant's
        sample, which the controller reads next); anything else is recomputed."""
        cached, rev = self._cache
        if cached is not None and features is cached:
            return rev
        rev = self._forward(features)
        if isinstance(features, np.ndarray) and not features.flags.writeable and features.flags.owndata:
            self._cache = (features, rev)
        return rev

    def _argmax(self, rev: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """``argmax_a rev - lam . cost(a)`` per row, in float32 (the scores' memory traffic is the cost of
        a decision; float32 halves it) into a reused buffer."""
        pen = (lam @ self.cost).astype(np.float32)
        buf = self._buf if self._buf is not None and self._buf.shape == rev.shape else np.empty(rev.shape, np.float32)
        self._buf = buf
        np.subtract(rev, pen, out=buf)
        return buf.argmax(axis=1)

    def act(self, features, lam) -> np.ndarray:
        """Joint action index (N,) int64 of each request at multipliers ``lam`` (one per cluster)."""
        lam = check_lambda(lam, self.cost.shape[0])
        return self._argmax(self._estimates(features), lam)

    def respond(self, features, lam) -> tuple[np.ndarray, np.ndarray]:
        """(estimated cost (N, G) of each request's chosen action, the network's revenue estimate (N,) of it)."""
        rev = self._estimates(features)
        a = self._argmax(rev, check_lambda(lam, self.cost.shape[0]))
        return self.cost[:, a].T, rev[np.arange(len(a)), a].astype(np.float64)

    def respond_many(self, features, lams) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`respond` at every row of ``lams`` (K, G): cost (K, N, G) and revenue (K, N)."""
        rev = self._estimates(features)
        lams = check_lambdas(lams, self.cost.shape[0])
        a = np.stack([self._argmax(rev, lam) for lam in lams]) if len(lams) else np.empty((0, len(rev)), np.int64)
        rows = np.arange(rev.shape[0])
        return self.cost[:, a].transpose(1, 2, 0), rev[rows[None, :], a].astype(np.float64)

    def __repr__(self) -> str:
        return f"JointQRuntime({self.name!r}, heads={self.heads}, actions={self.n_actions})"
