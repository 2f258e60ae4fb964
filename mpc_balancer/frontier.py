"""Response curves c(lambda), r(lambda) and the efficient frontier R(u).

For each cluster ``g`` the policy is run over a recent request sample while ``lambda_g`` sweeps a
log grid (the other clusters' multipliers held at their current values). This gives the mean
estimated cost per request ``c_g(lambda)`` and the mean expected revenue per request
``r(lambda)``, both non-increasing in ``lambda_g``. Their upper concave envelope in the
``(cost, revenue)`` plane is the efficient frontier ``R_g(u)``: concave, piecewise linear,
non-decreasing, whose segment slopes play the role of lambdas. The MPC plans the cost per request
``u`` and applies the lambda whose ``c_g(lambda)`` equals the planned ``u`` (monotone
interpolation in log lambda).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


def default_grid(lam_min: float = 1e-5, lam_max: float = 10.0, n: int = 12) -> np.ndarray:
    """``n`` lambdas spaced geometrically over ``[lam_min, lam_max]``: the grid response curves are measured on."""
    return np.geomspace(lam_min, lam_max, n)


@dataclass
class ResponseCurve:
    """The policy's mean cost and revenue per request as each cluster's lambda sweeps a grid.

    Attributes
    ----------
    lam_grid : ndarray, shape (L,)
        Increasing lambdas.
    cost : ndarray, shape (G, L)
        Mean estimated cost per request on cluster ``g`` while ``lambda_g`` sweeps (the others held).
    revenue : ndarray, shape (G, L)
        Mean expected revenue per request on the same sweep.

    A curve is not changed once made (what its readings share is computed on the first one).
    """

    lam_grid: np.ndarray  # (L,) increasing
    cost: np.ndarray  # (G, L) mean estimated cost per request on cluster g while lambda_g sweeps
    revenue: np.ndarray  # (G, L) mean expected revenue per request on the same sweep

    # a curve is read many times a tick and never changed once measured (a refresh makes a new one):
    # what every reading needs is computed on the first
    @cached_property
    def _falling_cost(self) -> np.ndarray:
        """``cost`` made non-increasing along the grid (its running minimum), against sampling ties."""
        return np.minimum.accumulate(self.cost, axis=1)

    @cached_property
    def _log_grid(self) -> np.ndarray:
        return np.log(self.lam_grid)

    def lam_for_cost(self, g: int, u: float) -> float:
        """The lambda whose cost per request on cluster ``g`` is ``u`` (log-linear interpolation)."""
        c, x = self._falling_cost[g], self._log_grid
        if u >= c[0]:
            return float(self.lam_grid[0])
        if u <= c[-1]:
            return float(self.lam_grid[-1])
        # c is non-increasing in lambda: interpolate on the reversed arrays
        i = int(np.searchsorted(-c, -u, side="left"))  # first index with c[i] <= u
        c0, c1 = c[i - 1], c[i]
        t = 0.0 if c0 == c1 else (c0 - u) / (c0 - c1)
        return float(np.exp(x[i - 1] + t * (x[i] - x[i - 1])))

    def lam_for_costs(self, g: int, u: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`lam_for_cost` (log-linear interpolation on the non-increasing curve)."""
        # np.interp needs increasing abscissae: reverse (cost decreases with lambda); ties keep the smallest lambda
        cr, xr = self._falling_cost[g][::-1], self._log_grid[::-1]
        keep = np.concatenate([np.diff(cr) > 0, [True]])
        return np.exp(np.interp(np.asarray(u, dtype=float), cr[keep], xr[keep]))

    def cost_at(self, g: int, lam: float) -> float:
        """Cost per request on cluster ``g`` at ``lambda_g = lam`` (log-linear interpolation)."""
        grid = self.lam_grid
        return float(np.interp(np.log(min(max(lam, grid[0]), grid[-1])), self._log_grid, self._falling_cost[g]))

    def costs_at(self, lam) -> np.ndarray:
        """:meth:`cost_at` of every cluster at its own lambda: ``(G,)`` from ``lam`` of shape ``(G,)``."""
        return np.array([self.cost_at(g, lam[g]) for g in range(len(lam))])

    def hull(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        """Breakpoints (cost ascending, revenue) of cluster ``g``'s efficient frontier."""
        return concave_hull(self.cost[g], self.revenue[g])


def concave_hull(cost: np.ndarray, revenue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints of the upper concave envelope of points (cost, revenue), made non-decreasing
    (more compute never earns less on the frontier: the policy could ignore it)."""
    order = np.lexsort((-np.asarray(revenue), np.asarray(cost)))
    c, r = np.asarray(cost, dtype=float)[order], np.maximum.accumulate(np.asarray(revenue, dtype=float)[order])
    hull: list[int] = []
    cl, rl = c.tolist(), r.tolist()  # Python floats: the same IEEE double arithmetic, without numpy's per-scalar cost
    for i in range(len(cl)):
        if hull and cl[i] - cl[hull[-1]] < 1e-12:
            continue  # same cost, no more revenue (sorted): skip
        while len(hull) >= 2:
            i0, i1 = hull[-2], hull[-1]
            cross = (cl[i1] - cl[i0]) * (rl[i] - rl[i0]) - (rl[i1] - rl[i0]) * (cl[i] - cl[i0])
            if cross >= 0:  # i1 lies on or below the chord i0 -> i: not on the upper hull
                hull.pop()
            else:
                break
        hull.append(i)
    return c[hull], r[hull]


def measure_response(evaluate_many, lam_current: np.ndarray, grid: np.ndarray) -> ResponseCurve:
    """Sweep each cluster's lambda over ``grid``, the others held at ``lam_current``.

    ``evaluate_many`` is ``lams (K, G) -> (mean cost per request (K, G), mean revenue per request
    (K,))``, e.g. :meth:`mpc_balancer.response.Response.evaluate_many`: the policy's own estimates
    on a request sample. All ``G x len(grid)`` lambda vectors go in one call.
    """
    G, L = len(lam_current), len(grid)
    lams = np.tile(np.asarray(lam_current, dtype=float), (G * L, 1))
    for g in range(G):
        lams[g * L:(g + 1) * L, g] = grid
    c, r = evaluate_many(lams)
    c, r = np.asarray(c, dtype=float).reshape(G, L, G), np.asarray(r, dtype=float).reshape(G, L)
    cost = c[np.arange(G), :, np.arange(G)]  # cluster g's own cost on its sweep
    return ResponseCurve(lam_grid=np.asarray(grid, dtype=float), cost=cost, revenue=r.copy())


def measure_response_near(evaluate_many, lam_current: np.ndarray, old: ResponseCurve, points: int,
                          max_ratio: float = 2.0) -> ResponseCurve | None:
    """``old`` refreshed around the operating point on a new request sample.

    Each cluster's ``points`` grid lambdas on either side of its current lambda (``2 * points`` in
    all, shifted inward at the ends of the grid; a lambda on a grid point counts as above it) are
    re-measured, the other clusters held at ``lam_current``, as :func:`measure_response` does. The
    rest of that cluster's cost and revenue curve is scaled, on each side of the window, by the
    ratio of the new to the old value at the window's edge: the far points keep their shape and
    meet the new ones as the old curve met its own, so the curve's running minimum never lets a
    stale far point cap the operating point's cost. The near points, where the next lambda is read
    off and the disturbance re-based, are the new sample's.
    On the sample ``old`` was measured on, at the same ``lam_current``, the result equals ``old``
    bit for bit.

    Returns None, for a full measurement instead, when a ratio is not finite and positive or
    lies outside ``[1 / max_ratio, max_ratio]``: the sample moved too far (or to zero) for the
    old shape to be trusted.
    """
    grid = old.lam_grid
    G, L = len(lam_current), len(grid)
    idx = []
    for g in range(G):
        first = min(max(int(np.searchsorted(grid, lam_current[g])) - points, 0), max(L - 2 * points, 0))
        idx.append(np.arange(first, min(first + 2 * points, L)))
    lams = np.tile(np.asarray(lam_current, dtype=float), (sum(len(j) for j in idx), 1))
    rows = np.cumsum([0] + [len(j) for j in idx])
    for g, j in enumerate(idx):
        lams[rows[g]:rows[g + 1], g] = grid[j]
    c, r = evaluate_many(lams)
    c, r = np.asarray(c, dtype=float), np.asarray(r, dtype=float)
    cost, revenue = old.cost.copy(), old.revenue.copy()
    for g, j in enumerate(idx):
        cg, rg = c[rows[g]:rows[g + 1], g], r[rows[g]:rows[g + 1]]
        for curve, new in ((cost[g], cg), (revenue[g], rg)):
            with np.errstate(divide="ignore", invalid="ignore"):
                left, right = new[0] / curve[j[0]], new[-1] / curve[j[-1]]
            for ratio in (left, right):
                if not (np.isfinite(ratio) and 1.0 / max_ratio <= ratio <= max_ratio):
                    return None
            curve[:j[0]] *= left
            curve[j[-1] + 1:] *= right
            curve[j] = new
    return ResponseCurve(lam_grid=grid, cost=cost, revenue=revenue)
