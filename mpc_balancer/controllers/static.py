"""Static allocation: the papers' Static arm.

One fixed joint action for every request, chosen from a stress test at the peak-hour QPS of the
history (the median over history days of each day's busiest hour): the highest-revenue action
whose estimated load at that QPS fits ``C_m`` on every cluster. A rule-based downgrade steps down a ladder of cheaper fixed actions while a cluster is
measured over ``C_m`` and climbs back (never above the stress-tested action) once every cluster is
below ``recover_below * C_m``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .base import ControlContext, Controller, Observation, Plan


def peak_hour_qps(qps: np.ndarray, times: pd.DatetimeIndex) -> float:
    """Median over days of each day's busiest hourly-mean QPS."""
    s = pd.Series(qps, index=times)
    s = s[s > 0]
    if s.empty:
        raise ValueError("static controller needs traffic history to stress-test (use a later --start or fewer --days)")
    hourly = s.resample("1h").mean().dropna()
    return float(hourly.groupby(hourly.index.normalize()).max().median())


class StaticController(Controller):
    name = "static"

    def __init__(self, recover_below: float = 0.8, sample_size: int = 4096, seed: int = 0):
        if not 0 < recover_below < 1:
            raise ValueError(f"recover_below must be in (0, 1), got {recover_below!r}")
        self.recover_below, self.sample_size, self.seed = recover_below, sample_size, seed

    def setup(self, context: ControlContext) -> "StaticController":
        super().setup(context)
        cas = context.cascade
        self.peak_qps_ = peak_hour_qps(context.history_qps, context.history_times)
        rng = np.random.default_rng(self.seed)
        x = cas.sample_features(self.sample_size, rng.uniform(0, 24, self.sample_size), rng)
        mean_w = cas.weights(x).mean(axis=0)
        revenue = mean_w @ cas.phi  # mean revenue per request of each fixed action
        peak_load = self.peak_qps_ * cas.cost / context.capacity[:, None]  # (G, A)
        rel = (peak_load / context.target[:, None]).max(axis=0)
        # ladder: actions on the (max relative load, revenue) frontier, cheapest first
        order = np.lexsort((-revenue, rel))
        ladder, best = [], -np.inf
        for a in order:
            if revenue[a] > best + 1e-12:
                ladder.append(int(a))
                best = revenue[a]
        self.ladder_ = np.array(ladder)
        fits = rel[self.ladder_] <= 1.0
        self.base_rung_ = int(np.flatnonzero(fits).max()) if fits.any() else 0
        self.rung_ = self.base_rung_
        return self

    def make_step(self, obs: Observation, forecast=None, response=None) -> Plan:
        tgt = self.ctx_.target
        if np.any(obs.load > tgt) and self.rung_ > 0:
            self.rung_ -= 1
        elif np.all(obs.load < self.recover_below * tgt) and self.rung_ < self.base_rung_:
            self.rung_ += 1
        a = int(self.ladder_[self.rung_])
        return Plan(lam=np.zeros(self.ctx_.n_clusters), controller=self.name, fixed_action=a,
                    info={"rung": self.rung_, "base_rung": self.base_rung_})
