"""Lagrangian bisection of lambda against a per-request cost budget, shared by the controllers
that bisect the policy's response (static, DCAF, hindsight)."""
from __future__ import annotations

import numpy as np


def bisect_budget(cost, budget: np.ndarray, lo: np.ndarray, hi: np.ndarray, iterations: int) -> np.ndarray:
    """Per cluster, the smallest log lambda in ``[lo, hi]`` whose cost fits ``budget``, by joint
    bisection (raising ``lambda_g`` never raises cluster ``g``'s cost). ``cost`` maps a lambda
    vector to the cost per request of each cluster. Returns the feasible side of each bracket
    (``lo`` where the budget holds even there)."""
    lo, hi = np.array(lo, dtype=float), np.array(hi, dtype=float)
    free = cost(np.exp(lo)) <= budget
    for _ in range(iterations):
        mid = np.where(free, lo, 0.5 * (lo + hi))
        over = cost(np.exp(mid)) > budget
        lo = np.where(over & ~free, mid, lo)
        hi = np.where(~over & ~free, mid, hi)
    return np.where(free, lo, hi)
