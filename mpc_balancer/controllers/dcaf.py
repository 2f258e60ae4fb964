"""DCAF (Jiang et al., 2020): lambda by bisection on the previous period's requests.

Each tick the multiplier is found so that the previous tick's request sample, allocated by the
policy, would spend exactly the per-request budget ``(1 - margin) C_m * capacity / qps`` on each cluster, with
the budget rescaled by the QPS ratio: DCAF plans at the last measured QPS and uses the cost
*estimates* (it has no feedback from measured load). All clusters' multipliers are bisected
together in log space; each cluster's bracket moves on its own cost, since raising
``lambda_g`` never raises cluster ``g``'s cost.
"""
from __future__ import annotations

import numpy as np

from .base import Controller, Observation, Plan
from .bisection import bisect_budget


class DcafController(Controller):
    """DCAF: lambda by bisection of the last request sample against the per-request budget (module doc).

    Parameters
    ----------
    iterations : int
        Bisection steps per tick (>= 1).
    bracket : float
        Half-width, in log lambda, of the warm bracket around the last lambda (> 0); widened to
        the bounds where it does not bracket the budget.
    margin : float
        The budget is ``(1 - margin) C_m``, ``margin`` in ``[0, 1)``.
    """

    name = "dcaf"
    needs_policy = True

    def __init__(self, iterations: int = 7, bracket: float = 1.5, margin: float = 0.0):
        if not 0 <= margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {margin!r}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations!r}")
        if not bracket > 0:
            raise ValueError(f"bracket must be > 0, got {bracket!r}")
        self.iterations, self.bracket, self.margin = iterations, bracket, margin

    def make_step(self, obs: Observation, forecast=None, response=None) -> Plan:
        """The lambda whose estimated cost on ``response`` fits the budget at the last QPS."""
        ctx = self.ctx_
        if response is None:
            return Plan(lam=self.clip(obs.lam), controller=self.name, status="error: no request sample")
        if obs.qps <= 0:
            return Plan(lam=self.clip(obs.lam), controller=self.name, status="hold: no traffic in the last tick")
        budget = (1 - self.margin) * ctx.target * ctx.capacity / obs.qps  # CPU-ms per request
        lmin, lmax = np.log(ctx.lam_min), np.log(ctx.lam_max)
        # warm bracket around the last lambda; widened to the bounds where it does not bracket
        prev = np.log(self.clip(np.asarray(obs.lam, dtype=float)))
        lo, hi = np.maximum(prev - self.bracket, lmin), np.minimum(prev + self.bracket, lmax)
        lo = np.where(response.cost(np.exp(lo)) > budget, lo, lmin)
        hi = np.where(response.cost(np.exp(hi)) <= budget, hi, lmax)
        lam = np.exp(bisect_budget(response.cost, budget, lo, hi, self.iterations))
        return Plan(lam=self.clip(lam), controller=self.name, info={"budget_per_request": budget})
