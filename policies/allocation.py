"""Budgeted allocations from a revenue-score matrix (numpy): the protocols Return% is measured with.

``scores`` is an ``(N, A)`` matrix of (estimated or true) revenue of every joint action for every
request; ``cost`` is the cascade's ``(G, A)`` cost table. Both allocations are Lagrangian: each
request takes ``argmax_a scores - lambda . cost`` with multipliers found by bisection.

* :func:`quota_allocation` -- the paper's protocol: one compute quota for the whole batch (the sum
  of CPU-ms over all clusters) and one multiplier, i.e. greedy allocation by marginal revenue per
  unit of compute until the quota is spent.
* :func:`cluster_allocation` -- one budget and one multiplier per cluster (coordinate-wise
  bisection), the setting of :func:`policies.oracle.batch_optimum`.
"""
from __future__ import annotations

import numpy as np


def _argmax(scores: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    return np.argmax(scores - penalty, axis=1)


def _bisect(used, limit: float, lam0: float = 0.0, lam_max: float = 1e3, rel_tol: float = 1e-4) -> float:
    """Smallest multiplier (to ``rel_tol``) with ``used(lam) <= limit``; ``used`` non-increasing."""
    if used(0.0) <= limit:
        return 0.0
    lo, hi = 0.0, max(lam0, 1e-6)
    while used(hi) > limit:
        lo, hi = hi, hi * 4.0
        if hi >= lam_max:
            hi = lam_max
            break
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        if used(mid) > limit:
            lo = mid
        else:
            hi = mid
    return hi


def quota_allocation(scores: np.ndarray, cost: np.ndarray, quota: float) -> np.ndarray:
    """Joint actions maximising ``scores`` with total compute (all clusters) within ``quota``."""
    total = np.asarray(cost, dtype=float).sum(axis=0)
    used = lambda mu: float(total[_argmax(scores, mu * total)].sum())
    mu = _bisect(used, quota)
    return _argmax(scores, mu * total)


def cluster_allocation(scores: np.ndarray, cost: np.ndarray, budget, sweeps: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """(joint actions, multipliers) maximising ``scores`` with each cluster's total within ``budget``."""
    cost = np.asarray(cost, dtype=float)
    G = cost.shape[0]
    B = np.broadcast_to(np.asarray(budget, dtype=float), (G,)).copy()
    lam = np.zeros(G)

    def used_with(g, value):
        trial = lam.copy()
        trial[g] = value
        return float(cost[g, _argmax(scores, trial @ cost)].sum())

    for _ in range(sweeps):
        before = lam.copy()
        for g in range(G):
            lam[g] = _bisect(lambda v: used_with(g, v), B[g], lam0=lam[g])
        if np.allclose(before, lam, rtol=1e-3, atol=0):
            break
    a = _argmax(scores, lam @ cost)
    for _ in range(500):  # a sweep can leave an earlier cluster slightly over: tighten until all fit
        over = cost[:, a].sum(axis=1) - B
        if not np.any(over > 1e-9):
            break
        g = int(np.argmax(over / np.maximum(B, 1e-12)))
        lam[g] = max(lam[g] * 1.02, 1e-6)
        a = _argmax(scores, lam @ cost)
    return a, lam
