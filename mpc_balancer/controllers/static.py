"""Static allocation: the papers' Static arm, as a fixed lambda from a stress test.

A static system sets its allocation rules once, from a stress test at the peak-hour QPS of the
history (the median over history days of each day's busiest hour). Here the rule is a fixed
lambda: on the first request sample it sees, each cluster's lambda is bisected (jointly, in log
space) to the smallest value whose estimated cost per request, at the peak-hour QPS, fits ``C_m``
(clusters still over at the joint point, where the others' lambdas moved too, are bisected upward
again with the others held).
That lambda is then held, whatever the traffic does, except for predefined downgrades: while a
cluster is measured over ``C_m`` the controller climbs a ladder of lambdas ``step`` x higher per
rung (up to ``max_rungs``), and it steps back down, never below the stress-tested lambda, once
every cluster is below ``recover_below * C_m``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .base import ControlContext, Controller, Observation, Plan
from .bisection import bisect_budget


def peak_hour_qps(qps: np.ndarray, times: pd.DatetimeIndex) -> float:
    """Median over days of each day's busiest hourly-mean QPS."""
    s = pd.Series(np.asarray(qps, dtype=float), index=times)
    s = s[s > 0]
    if s.empty:
        raise ValueError("static controller needs traffic history to stress-test (give history, or use a later "
                         "--start or fewer --days)")
    hourly = s.resample("1h").mean().dropna()
    return float(hourly.groupby(hourly.index.normalize()).max().median())


class StaticController(Controller):
    """A fixed lambda from a stress test at the peak-hour QPS, with a downgrade ladder (module doc).

    Parameters
    ----------
    recover_below : float
        Step down a rung once every cluster is below ``recover_below * C_m`` (in ``(0, 1)``).
    step : float
        Each rung multiplies lambda by this (> 1).
    max_rungs : int
        Rungs of the ladder (>= 1).
    iterations : int
        Bisection steps of the stress test (>= 1).

    Attributes
    ----------
    peak_qps_ : float
        The stress test's QPS: the median over history days of each day's busiest hour.
    base_lam_ : ndarray or None
        The stress-tested lambda (set on the first request sample).
    rung_ : int
        The current rung of the ladder.
    """

    name = "static"
    needs_policy = True

    def __init__(self, recover_below: float = 0.8, step: float = 4.0, max_rungs: int = 8, iterations: int = 30):
        if not 0 < recover_below < 1:
            raise ValueError(f"recover_below must be in (0, 1), got {recover_below!r}")
        if not step > 1:
            raise ValueError(f"step must be > 1, got {step!r}")
        for k, v in {"max_rungs": max_rungs, "iterations": iterations}.items():
            if not (isinstance(v, (int, np.integer)) and v >= 1):
                raise ValueError(f"{k} must be an integer >= 1, got {v!r}")
        self.recover_below, self.step, self.max_rungs, self.iterations = recover_below, float(step), int(max_rungs), int(iterations)

    def setup(self, context: ControlContext) -> StaticController:
        """Bind the context and read the peak-hour QPS from its history; returns ``self``."""
        super().setup(context)
        self.peak_qps_ = peak_hour_qps(context.history_qps, context.history_times)
        self.base_lam_: np.ndarray | None = None
        self.rung_ = 0
        return self

    def make_step(self, obs: Observation, forecast=None, response=None) -> Plan:
        """The stress-tested lambda times ``step`` per rung; the first call runs the stress test on ``response``."""
        ctx = self.ctx_
        if self.base_lam_ is None:
            if response is None:
                return Plan(lam=self.clip(obs.lam), controller=self.name, status="error: no request sample to stress-test")
            budget = ctx.target * ctx.capacity / self.peak_qps_
            G = ctx.n_clusters
            lo, hi = np.full(G, np.log(ctx.lam_min)), np.full(G, np.log(ctx.lam_max))
            z = bisect_budget(response.cost, budget, lo, hi, self.iterations)
            # each bracket moved while the others did: repair the clusters still over at the joint point
            for _ in range(5):
                over = response.cost(np.exp(z)) > budget
                if not over.any():
                    break
                held = lambda lam, z=z, over=over: response.cost(np.where(over, lam, np.exp(z)))  # noqa: E731
                z = np.where(over, bisect_budget(held, np.where(over, budget, np.inf), z, hi, self.iterations), z)
            self.base_lam_ = self.clip(np.exp(z))
        if np.any(obs.load > ctx.target) and self.rung_ < self.max_rungs:
            self.rung_ += 1
        elif np.all(obs.load < self.recover_below * ctx.target) and self.rung_ > 0:
            self.rung_ -= 1
        return Plan(lam=self.clip(self.base_lam_ * self.step ** self.rung_), controller=self.name,
                    info={"rung": self.rung_, "peak_qps": self.peak_qps_})

    def state_dict(self) -> dict:
        """The stress-tested lambda and the rung."""
        return {"base_lam": None if self.base_lam_ is None else self.base_lam_.tolist(), "rung": self.rung_}

    def load_state_dict(self, d: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.base_lam_ = None if d["base_lam"] is None else np.asarray(d["base_lam"], dtype=float)
        self.rung_ = int(d["rung"])
