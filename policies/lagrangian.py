"""Lagrange multipliers by bisection: the one implementation behind every budgeted allocation.

A budgeted choice ``max sum revenue  s.t.  cost_g <= B_g`` is solved through its Lagrangian: each
item takes ``argmax_a revenue(a) - lambda . cost(a)``, and ``lambda`` is raised until the cost
fits. Raising ``lambda_g`` never raises cluster ``g``'s cost, so the smallest multiplier whose
cost fits is found by bisection. The Lagrangian solution is exactly optimal for the budget it
spends (weak duality): no allocation with the same or lower cost per cluster earns more.

- :func:`bisect`: narrow a bracket ``[lo, hi]`` around the point where a monotone predicate
  turns false;
- :func:`bracket`: find such a bracket from a starting guess, growing it geometrically;
- :func:`smallest_multiplier`: both, for one multiplier;
- :func:`cluster_multipliers`: one multiplier per cluster, by coordinate-wise bisection swept
  until no multiplier moves, then raised until every cluster fits.

Used by :func:`policies.oracle.batch_optimum` (the exact optimum of a batch),
:mod:`policies.allocation` (the Return% protocols) and
:class:`policies.offline.allocation.BudgetAllocator` (MTORL's channel prices).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

MIN_START = 1e-6  # the first upper bracket end when the current multiplier is 0
GROWTH = 4.0  # the bracket's growth factor per step


def bisect(over: Callable[[float], bool], lo: float, hi: float, *, atol: float = 0.0, rtol: float = 0.0,
           iterations: int | None = None) -> tuple[float, float]:
    """Narrow ``[lo, hi]`` around the point where ``over`` turns false.

    Parameters
    ----------
    over : callable
        ``over(x)`` is true below the point sought and false above it (a monotone predicate,
        e.g. ``cost(x) > budget`` for a cost non-increasing in ``x``). ``over(hi)`` should be
        false; ``over(lo)`` is not evaluated.
    lo, hi : float
        The bracket.
    atol, rtol : float
        Stop when ``hi - lo <= max(atol, rtol * hi)``.
    iterations : int, optional
        Stop after this many halvings (``None``: only the tolerance stops).

    Returns
    -------
    (lo, hi) : tuple of float
        The narrowed bracket; ``hi`` is the feasible side (``over(hi)`` false if it was at the start).
    """
    if iterations is None and not (atol > 0 or rtol > 0):
        raise ValueError("bisect needs a positive atol or rtol, or a number of iterations")
    n = 0
    while hi - lo > max(atol, rtol * hi) and (iterations is None or n < iterations):
        mid = 0.5 * (lo + hi)
        if over(mid):
            lo = mid
        else:
            hi = mid
        n += 1
    return lo, hi


def bracket(over: Callable[[float], bool], start: float, upper: float) -> tuple[float, float]:
    """``(lo, hi)`` with ``over(hi)`` false, grown from ``hi = max(start, 1e-6)`` by factors of 4.

    ``lo`` is the last end found over (0 if the first was not); ``hi`` is capped at ``upper``
    (where ``over`` may still be true: the multiplier is then ``upper``)."""
    lo, hi = 0.0, max(start, MIN_START)
    while over(hi):
        lo, hi = hi, hi * GROWTH
        if hi >= upper:
            hi = upper
            break
    return lo, hi


def smallest_multiplier(over: Callable[[float], bool], start: float = 0.0, upper: float = 1e3, *,
                        atol: float = 0.0, rtol: float = 1e-4) -> float:
    """The smallest multiplier in ``(0, upper]`` with ``over`` false, to the tolerance of :func:`bisect`.

    ``start`` is a guess (e.g. the multiplier of the previous sweep). ``over(0)`` is not checked:
    callers that want exactly 0 when nothing binds test it first."""
    lo, hi = bracket(over, start, upper)
    return bisect(over, lo, hi, atol=atol, rtol=rtol)[1]


def check_budget(budget, n_clusters: int | None = None) -> np.ndarray:
    """``budget`` as a float array ``(G,)`` (a scalar is broadcast to ``n_clusters``); ``ValueError``
    naming the values unless each is >= 0 (``np.inf``: no budget)."""
    B = np.asarray(budget, dtype=float)
    if n_clusters is not None:
        B = np.broadcast_to(B, (n_clusters,)).copy()
    if B.ndim != 1 or np.any(np.isnan(B)) or np.any(B < 0):
        raise ValueError(f"budget must be >= 0 per cluster, got {B.tolist()}")
    return B


def cluster_multipliers(allocate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], budget, *,
                        upper: float = 1e3, tol: float = 1e-7, max_sweeps: int = 30, tighten: float = 1.05,
                        max_tighten: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One multiplier per cluster such that each cluster's total cost fits its budget.

    Parameters
    ----------
    allocate : callable
        ``allocate(lam) -> (actions, cost)``: the Lagrangian choice at multipliers ``lam (G,)``
        and its total cost per cluster ``(G,)``.
    budget : array_like
        ``(G,)`` budgets (``np.inf``: no budget; that multiplier stays 0).
    upper : float
        The largest multiplier tried.
    tol : float
        Bisection tolerance, ``hi - lo <= tol * max(1, hi)``; a sweep in which no multiplier moves
        by more than that ends the search.
    max_sweeps : int
        Coordinate sweeps at most.
    tighten, max_tighten : float, int
        A sweep can leave an earlier cluster over its budget: the most over (relative to its
        budget) has its multiplier multiplied by ``tighten``, at most ``max_tighten`` times,
        until all fit.

    Returns
    -------
    (lam, actions, cost) : tuple of ndarray
        The multipliers ``(G,)``, the allocation at them and its cost per cluster ``(G,)``.

    Notes
    -----
    A cluster whose cost fits at its current multiplier, and would not fit 0.1% below it, is
    already tight and is not bisected again in that sweep.
    """
    B = check_budget(budget)
    G = len(B)
    lam = np.zeros(G)

    def cost_with(g: int, value: float) -> float:
        trial = lam.copy()
        trial[g] = value
        return allocate(trial)[1][g]

    for _ in range(max_sweeps):
        moved = False
        for g in range(G):
            if not np.isfinite(B[g]):
                continue
            c = allocate(lam)[1]
            if c[g] <= B[g] and (lam[g] == 0 or cost_with(g, lam[g] * (1 - 1e-3)) > B[g]):
                continue  # already tight from the feasible side
            value = smallest_multiplier(lambda v, g=g: cost_with(g, v) > B[g], lam[g], upper, atol=tol, rtol=tol)
            if abs(value - lam[g]) > tol * max(1.0, value):
                moved = True
            lam[g] = value
        if not moved:
            break
    a, c = allocate(lam)
    for _ in range(max_tighten):
        if not np.any(c > B + 1e-9):
            break
        g = int(np.argmax((c - B) / np.maximum(B, 1e-12)))
        lam[g] = max(lam[g] * tighten, MIN_START)
        a, c = allocate(lam)
    return lam, a, c
