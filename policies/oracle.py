"""Exact oracle: the per-request optimum and the batch optimum under a compute budget.

Per request, ``a*(x, lambda) = argmax_a E[rev | x, a] - sum_g lambda_g * cost_g(a)`` over all joint
actions (vectorised over the batch; dominated actions are skipped, which never changes the argmax
because all revenue weights are non-negative).

Under a budget ``B_g`` per cluster, the batch optimum ``max sum_i E[rev_i] s.t. sum_i cost_g(a_i) <=
B_g`` is found by Lagrangian bisection on lambda. The Lagrangian solution is *exactly* optimal for
the budget it consumes (any allocation using no more compute on every cluster earns no more); a
discrete problem can leave a small duality gap against ``B`` itself, which the tests bound against
``scipy.optimize.milp``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cascade import Cascade
from .lagrangian import check_budget, cluster_multipliers
from .sweep import check_lambdas, repeat_rows, sweep_argmax


def check_lambda(lam, n_clusters: int) -> np.ndarray:
    """Validate a lambda vector (one per cluster, finite, >= 0)."""
    arr = np.asarray(lam, dtype=float)
    if arr.shape == (n_clusters,) and np.isfinite(arr).all() and arr.min() >= 0:  # fast path
        return arr
    if arr.ndim == 0:
        arr = np.full(n_clusters, float(arr))
    if arr.shape != (n_clusters,):
        raise ValueError(f"lambda must have shape ({n_clusters},) (one per cluster), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"lambda must be finite and >= 0, got {arr.tolist()}")
    return arr


class OraclePolicy:
    """The exact per-request argmax, behind the same ``act(features, lam)`` slot as learned policies.

    ``dtype=np.float32`` is the simulator's fast path (scores in single precision); evaluation uses
    float64.
    """

    name = "oracle"

    def __init__(self, cascade: Cascade, dtype=np.float64):
        self.cascade = cascade
        self.clusters = tuple(cascade.clusters)
        self.dtype = np.dtype(dtype)
        idx = cascade.efficient
        self._idx = idx
        self._phi = cascade.phi[:, idx].astype(self.dtype)
        self._cost = cascade.cost[:, idx]
        self._respond_cache = (None, None)  # (read-only features array, [revenue weights, scores, last decision])

    def act(self, features: np.ndarray, lam) -> np.ndarray:
        """Joint actions (N,) at ``lam``; a read-only sample is cached as in :meth:`respond`."""
        lam = check_lambda(lam, self._cost.shape[0])
        return self._actions(self._cached_weights(features), lam[None, :])[0].copy()

    def bind(self, features: np.ndarray):
        """``lam -> actions`` for a fixed request batch, with per-request work done once."""
        w = self.cascade.weights(features)
        return lambda lam: self.act_weights(w, lam)

    def _cached_weights(self, features: np.ndarray) -> list:
        """``[revenue weights, scores, last]`` of a request batch: ``scores`` (the lambda-free
        ``w @ phi``) is filled in by the first sweep, ``last`` is the last single decision
        ``(lambda bytes, actions)``. Reused while ``features`` is the same read-only array owning its
        data (as in :meth:`policies.runtime.PolicyRuntime.respond`)."""
        cached, entry = self._respond_cache
        if cached is not None and features is cached:
            return entry
        entry = [self.cascade.weights(features), None, None]
        if isinstance(features, np.ndarray) and not features.flags.writeable and features.flags.owndata:
            self._respond_cache = (features, entry)
        return entry

    def _actions(self, entry: list, lams: np.ndarray) -> np.ndarray:
        """Actions ``(K, N)`` at every lambda row: one decision as :meth:`act_weights` takes it, or, for
        several, the lambda-free scores once (:mod:`policies.sweep`; the same numbers)."""
        if len(lams) == 1:
            if entry[2] is None or entry[2][0] != lams[0].tobytes():
                entry[2] = (lams[0].tobytes(), self.act_weights(entry[0], lams[0]))
            return entry[2][1][None, :]
        if entry[1] is None:
            entry[1] = np.asarray(entry[0], dtype=self.dtype) @ self._phi
        return self._idx[sweep_argmax(entry[1], self._cost, lams)]

    def respond(self, features: np.ndarray, lam) -> tuple[np.ndarray, np.ndarray]:
        """(estimated cost (N, G) of each request's chosen action, its expected revenue (N,)): the
        policy protocol of :mod:`mpc_balancer.policy`. The oracle's own revenue estimate is the
        cascade's revenue model: that is what makes it the oracle. As in
        :meth:`policies.runtime.PolicyRuntime.respond`, a read-only array that owns its data is
        assumed unchanged between calls and its revenue weights are reused."""
        lam = check_lambda(lam, self._cost.shape[0])
        cost, revenue = self._respond(self._cached_weights(features), lam[None, :])
        return cost[0], revenue[0]

    def respond_cost(self, features: np.ndarray, lam) -> np.ndarray:
        """The cost part of :meth:`respond` (the same numbers), without the revenue."""
        lam = check_lambda(lam, self._cost.shape[0])
        return self.cascade.cost[:, self._actions(self._cached_weights(features), lam[None, :])[0]].T

    def respond_many(self, features: np.ndarray, lams) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`respond` at every row of ``lams`` (K, G): cost (K, N, G), revenue (K, N), the same
        numbers as K calls, with the lambda-free scores computed once (:mod:`policies.sweep`)."""
        return self._respond(self._cached_weights(features), check_lambdas(lams, self._cost.shape[0]))

    def _respond(self, entry: list, lams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = self._actions(entry, lams)
        w = entry[0]
        revenue = np.einsum("nk,kn->n", repeat_rows(w, len(a)), self.cascade.phi[:, a.reshape(-1)])
        return self.cascade.cost[:, a].transpose(1, 2, 0), revenue.reshape(a.shape)

    def act_weights(self, weights: np.ndarray, lam) -> np.ndarray:
        """Joint actions for revenue weights ``(N, K)`` at ``lam`` ``(G,)``."""
        lam = check_lambda(lam, self._cost.shape[0])
        w = np.asarray(weights, dtype=self.dtype)
        # one matrix product: [w, 1] @ [phi; -lam . cost]
        m = np.vstack([self._phi, -(lam @ self._cost)[None, :].astype(self.dtype)])
        scores = w @ m[:-1]
        scores += m[-1]
        return self._idx[np.argmax(scores, axis=1)]


@dataclass
class BatchOptimum:
    """The Lagrangian optimum of a batch under a budget per cluster (see :func:`batch_optimum`)."""

    actions: np.ndarray  # (N,) joint actions
    lam: np.ndarray  # (G,) multipliers
    revenue: float  # sum of expected revenue
    cost: np.ndarray  # (G,) total cost per cluster


def batch_optimum(cascade: Cascade, weights: np.ndarray, budget, lam_max: float = 1e3, tol: float = 1e-7,
                  max_sweeps: int = 30) -> BatchOptimum:
    """Lagrangian bisection for ``max sum E[rev] s.t. total cost_g <= budget_g`` (``np.inf`` = no budget).

    Coordinate-wise bisection on each cluster's lambda (:func:`policies.lagrangian.cluster_multipliers`:
    raising ``lambda_g`` never raises cluster ``g``'s cost), swept until no multiplier moves. Always
    returns a feasible allocation if the cheapest one is feasible; raises ``ValueError`` otherwise.
    """
    pol = OraclePolicy(cascade)
    w = np.asarray(weights, dtype=float)
    G = cascade.cost.shape[0]
    B = check_budget(budget, G)
    cheapest = pol.act_weights(w, np.full(G, lam_max))
    floor = cascade.cost[:, cheapest].sum(axis=1)
    if np.any(floor > B + 1e-9):
        g = int(np.argmax(floor - B))
        raise ValueError(f"budget for cluster {cascade.clusters[g]!r} is {B[g]:g}, below the cheapest allocation's {floor[g]:g}")

    def allocate(lam):
        a = pol.act_weights(w, lam)
        return a, cascade.cost[:, a].sum(axis=1)

    lam, a, c = cluster_multipliers(allocate, B, upper=lam_max, tol=tol, max_sweeps=max_sweeps)
    return BatchOptimum(actions=a, lam=lam, revenue=float(cascade.expected_revenue_w(w, a).sum()), cost=c)
