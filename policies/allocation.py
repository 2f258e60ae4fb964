"""Budgeted allocations from a revenue-score matrix (numpy): the protocols Return% is measured with.

``scores`` is an ``(N, A)`` matrix of (estimated or true) revenue of every joint action for every
request; ``cost`` is the cascade's ``(G, A)`` cost table. Both allocations are Lagrangian: each
request takes ``argmax_a scores - lambda . cost`` with multipliers found by bisection.

* :func:`quota_allocation` -- the paper's protocol: one compute quota for the whole batch (the sum
  of CPU-ms over all clusters) and one multiplier, i.e. greedy allocation by marginal revenue per
  unit of compute until the quota is spent.
* :func:`cluster_allocation` -- one budget and one multiplier per cluster (coordinate-wise
  bisection), the setting of :func:`policies.oracle.batch_optimum`.

Both search their multipliers with :mod:`policies.lagrangian`.
"""
from __future__ import annotations

import numpy as np

from .lagrangian import check_budget, cluster_multipliers, smallest_multiplier


def _argmax(scores: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    return np.argmax(scores - penalty, axis=1)


def quota_allocation(scores: np.ndarray, cost: np.ndarray, quota: float) -> np.ndarray:
    """Joint actions maximising ``scores`` with total compute (all clusters) within ``quota``.

    One multiplier ``mu`` on the total cost of an action: 0 when the unconstrained choice fits,
    else the smallest that fits, to a relative 1e-4 (:func:`policies.lagrangian.smallest_multiplier`)."""
    total = np.asarray(cost, dtype=float).sum(axis=0)
    used = lambda mu: float(total[_argmax(scores, mu * total)].sum())
    mu = 0.0 if used(0.0) <= quota else smallest_multiplier(lambda m: used(m) > quota, rtol=1e-4)
    return _argmax(scores, mu * total)


def cluster_allocation(scores: np.ndarray, cost: np.ndarray, budget) -> tuple[np.ndarray, np.ndarray]:
    """(joint actions, multipliers) maximising ``scores`` with each cluster's total within ``budget``.

    The multipliers are those of :func:`policies.lagrangian.cluster_multipliers`, the search
    :func:`policies.oracle.batch_optimum` runs on the true revenue."""
    cost = np.asarray(cost, dtype=float)

    def allocate(lam):
        a = _argmax(scores, lam @ cost)
        return a, cost[:, a].sum(axis=1)

    lam, a, _ = cluster_multipliers(allocate, check_budget(budget, cost.shape[0]))
    return a, lam
