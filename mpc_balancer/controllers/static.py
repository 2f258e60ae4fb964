"""Static allocation: the papers' Static arm, as fixed lambdas from stress tests.

A static system sets its allocation rules once, from stress tests at a load read off the history.
The rule is a lambda, found on a request sample by bisecting each cluster's lambda (jointly, in log
space) to the smallest value whose estimated cost per request, at the stress-test QPS, fits ``C_m``
(clusters still over at the joint point, where the others' lambdas moved too, are bisected upward
again with the others held). Two rules:

* ``rule="peak"`` (default): one lambda for the whole day, stress-tested at the peak-hour QPS of
  the history (the median over history days of each day's busiest hour), on the first request
  sample the controller sees;
* ``rule="hourly"`` (MaRCA's Static arm: "one action rule per hour of day"): one lambda per hour
  of day ``h``, stress-tested at ``(1 + margin) x`` the ``quantile`` over history days of hour
  ``h``'s mean QPS (an operator's high quantile plus a safety margin; defaults 0.95 and 10%), on
  the first request sample of hour ``h`` the controller sees (the requests of that hour). An hour
  without history takes the peak-hour QPS.

Only the history's traffic (telemetry), the request samples and the policy's cost estimates
enter: never the evaluated window's traffic. The rule's lambda is then held, whatever the traffic
does, except for predefined downgrades: while a cluster is measured over ``C_m`` the controller
climbs a ladder of lambdas ``step`` x higher per rung (up to ``max_rungs``), and it steps back
down, never below the stress-tested lambda, once every cluster is below ``recover_below * C_m``.
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


def hourly_qps(qps: np.ndarray, times: pd.DatetimeIndex, quantile: float) -> np.ndarray:
    """Per hour of day (24,), the ``quantile`` over history days of that hour's mean QPS (NaN where
    the history has no traffic in that hour)."""
    s = pd.Series(np.asarray(qps, dtype=float), index=times)
    s = s[s > 0]
    hourly = s.resample("1h").mean().dropna()
    by_hour = hourly.groupby(hourly.index.hour).quantile(quantile)
    return by_hour.reindex(range(24)).to_numpy(dtype=float)


class StaticController(Controller):
    """Stress-tested lambdas (one for the day, or one per hour of day) with a downgrade ladder (module doc).

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
    rule : {"peak", "hourly"}
        One lambda at the peak-hour QPS, or one per hour of day at that hour's QPS.
    quantile, margin : float
        The hourly rule's stress-test QPS: ``(1 + margin)`` x the ``quantile`` over history days.

    Attributes
    ----------
    peak_qps_ : float
        The median over history days of each day's busiest hour.
    stress_qps_ : ndarray (24,)
        The stress test's QPS per hour of day (all ``peak_qps_`` under the peak rule).
    base_lam_ : dict
        Stress-tested lambda per rule (key 0 for the peak rule, the hour for the hourly rule),
        set on the first request sample of that rule.
    rung_ : int
        The current rung of the ladder.
    """

    name = "static"
    needs_policy = True

    RULES = ("peak", "hourly")

    def __init__(self, recover_below: float = 0.8, step: float = 4.0, max_rungs: int = 8, iterations: int = 30,
                 rule: str = "peak", quantile: float = 0.95, margin: float = 0.1):
        if rule not in self.RULES:
            raise ValueError(f"rule must be one of {self.RULES}, got {rule!r}")
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
        if not (np.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin must be finite and >= 0, got {margin!r}")
        self.rule, self.quantile, self.margin = rule, float(quantile), float(margin)
        if not 0 < recover_below < 1:
            raise ValueError(f"recover_below must be in (0, 1), got {recover_below!r}")
        if not step > 1:
            raise ValueError(f"step must be > 1, got {step!r}")
        for k, v in {"max_rungs": max_rungs, "iterations": iterations}.items():
            if not (isinstance(v, (int, np.integer)) and v >= 1):
                raise ValueError(f"{k} must be an integer >= 1, got {v!r}")
        self.recover_below, self.step, self.max_rungs, self.iterations = recover_below, float(step), int(max_rungs), int(iterations)

    def setup(self, context: ControlContext) -> StaticController:
        """Bind the context and read the stress-test QPS from its history; returns ``self``."""
        super().setup(context)
        self.peak_qps_ = peak_hour_qps(context.history_qps, context.history_times)
        if self.rule == "hourly":
            q = hourly_qps(context.history_qps, context.history_times, self.quantile)
            self.stress_qps_ = (1 + self.margin) * np.where(np.isfinite(q), q, self.peak_qps_)
        else:
            self.stress_qps_ = np.full(24, self.peak_qps_)
        self.base_lam_: dict[int, np.ndarray] = {}  # rule -> stress-tested lambda (rule 0 for "peak", the hour for "hourly")
        self.rung_ = 0
        return self

    def _stress_test(self, response, qps: float) -> np.ndarray:
        """The smallest lambda per cluster whose estimated cost on the sample fits ``C_m`` at ``qps``."""
        ctx = self.ctx_
        budget = ctx.target * ctx.capacity / qps
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
        return self.clip(np.exp(z))

    def make_step(self, obs: Observation, forecast=None, response=None) -> Plan:
        """The rule's stress-tested lambda times ``step`` per rung; a rule's first call runs its stress test on ``response``."""
        ctx = self.ctx_
        key = int(pd.Timestamp(obs.time).hour) if self.rule == "hourly" else 0
        if key not in self.base_lam_:
            if response is None:
                return Plan(lam=self.clip(obs.lam), controller=self.name, status="error: no request sample to stress-test")
            self.base_lam_[key] = self._stress_test(response, float(self.stress_qps_[key]))
        if np.any(obs.load > ctx.target) and self.rung_ < self.max_rungs:
            self.rung_ += 1
        elif np.all(obs.load < self.recover_below * ctx.target) and self.rung_ > 0:
            self.rung_ -= 1
        return Plan(lam=self.clip(self.base_lam_[key] * self.step ** self.rung_), controller=self.name,
                    info={"rung": self.rung_, "stress_qps": float(self.stress_qps_[key])})

    def state_dict(self) -> dict:
        """The stress-tested lambdas and the rung."""
        return {"base_lam": {str(k): v.tolist() for k, v in self.base_lam_.items()}, "rung": self.rung_}

    def load_state_dict(self, d: dict) -> None:
        """Restore :meth:`state_dict`."""
        lam = d["base_lam"]
        if lam is None:  # checkpoints written before the hourly rule: no stress test yet
            lam = {}
        elif isinstance(lam, list):  # ... or the one lambda of the peak rule
            lam = {"0": lam}
        self.base_lam_ = {int(k): np.asarray(v, dtype=float) for k, v in lam.items()}
        self.rung_ = int(d["rung"])
