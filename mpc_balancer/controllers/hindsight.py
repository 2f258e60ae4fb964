"""Hindsight: the physical limit. Knows the next tick's real traffic, its requests and the true plant.

Each tick it finds, per cluster, the lambda at which the *true* load of the coming tick lands on
``C_m`` exactly (accounting for the plant's lag), by bisection on the actual requests of that tick
with the true costs. Since revenue grows with compute, no causal controller can beat it at the
same ``C_m`` without exceeding the load budget; comparisons report ``return_vs_hindsight_pct``.
The simulator hands it the future through ``forecast`` (a :class:`Clairvoyance`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Controller, Observation, Plan


@dataclass
class Clairvoyance:
    qps: float  # the coming tick's real QPS
    features: np.ndarray  # its request sample
    cost_factor: np.ndarray  # true cost / estimated cost per cluster
    load: np.ndarray  # the plant's true load now (before the tick)
    lag_alpha: float  # load <- alpha * load + (1 - alpha) * demand


class HindsightController(Controller):
    name = "hindsight"
    clairvoyant = True

    def __init__(self, iterations: int = 22):
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations!r}")
        self.iterations = iterations

    def make_step(self, obs: Observation, forecast=None, response=None) -> Plan:
        ctx = self.ctx_
        fut: Clairvoyance = forecast
        if not isinstance(fut, Clairvoyance):
            return Plan(lam=self.clip(obs.lam), controller=self.name, status="error: hindsight needs the simulator's clairvoyance")
        if fut.qps <= 0:
            return Plan(lam=self.clip(obs.lam), controller=self.name)
        a = fut.lag_alpha
        demand = np.maximum((ctx.target - a * fut.load) / max(1 - a, 1e-9), 0.0)
        budget = demand * ctx.capacity / (fut.qps * fut.cost_factor)  # estimated CPU-ms per request
        act = ctx.policy.bind(fut.features)
        cost = lambda lam: ctx.cascade.cost[:, act(lam)].mean(axis=1)  # noqa: E731
        lo = np.full(ctx.n_clusters, np.log(ctx.lam_min))
        hi = np.full(ctx.n_clusters, np.log(ctx.lam_max))
        free = cost(np.exp(lo)) <= budget
        for _ in range(self.iterations):
            mid = np.where(free, lo, 0.5 * (lo + hi))
            over = cost(np.exp(mid)) > budget
            lo = np.where(over & ~free, mid, lo)
            hi = np.where(~over & ~free, mid, hi)
        return Plan(lam=self.clip(np.exp(np.where(free, lo, hi))), controller=self.name)
