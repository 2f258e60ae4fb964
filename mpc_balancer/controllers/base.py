"""The controller interface shared by every balancer (static, DCAF, PID, MPC, NMPC, hindsight).

Life cycle (do-mpc style): construct with configuration only, ``setup(context)`` once the plant and
the policy are known, then ``make_step(obs, forecast, response) -> Plan`` every control tick.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from policies.cascade import Cascade

LAM_MIN, LAM_MAX = 1e-5, 10.0


@dataclass
class ControlContext:
    """What a controller may know when it is set up (never the future, never the true plant)."""

    cascade: Cascade
    policy: object  # act(features, lam) -> joint actions
    target: np.ndarray  # C_m per cluster (load fraction)
    capacity: np.ndarray  # CPU-ms per second per cluster
    period_s: float
    history_qps: np.ndarray  # rate per tick before the simulated window
    history_times: pd.DatetimeIndex
    lam_min: float = LAM_MIN
    lam_max: float = LAM_MAX
    # runs a controller in closed loop over the last ``days`` of the *history* (never the evaluated
    # window) and returns its per-tick log: how learned-dynamics controllers collect training logs
    simulate_history: object = None  # Callable[[Controller, float], pandas.DataFrame] | None

    @property
    def n_clusters(self) -> int:
        return len(self.target)


@dataclass
class Observation:
    """Telemetry at the start of a tick, about the tick that just ended."""

    t: int
    time: pd.Timestamp
    qps: float  # measured over the last tick
    load: np.ndarray  # measured load per cluster
    lam: np.ndarray  # lambda applied in the last tick
    features: np.ndarray  # request sample of the last tick
    revenue: float = 0.0


@dataclass
class Plan:
    """A controller's decision: lambda per cluster (or one fixed action for every request)."""

    lam: np.ndarray
    controller: str
    status: str = "ok"
    solve_time_s: float = 0.0
    fixed_action: int | None = None
    lam_plan: np.ndarray | None = None  # (H, G) planned lambdas
    load_plan: np.ndarray | None = None  # (H, G) planned loads
    info: dict = field(default_factory=dict)


class Controller:
    """Base class: stores configuration; ``setup`` binds the context."""

    name = "controller"

    def setup(self, context: ControlContext) -> "Controller":
        self.ctx_ = context
        return self

    def make_step(self, obs: Observation, forecast=None, response=None) -> Plan:  # pragma: no cover
        raise NotImplementedError

    def clip(self, lam: np.ndarray) -> np.ndarray:
        return np.clip(lam, self.ctx_.lam_min, self.ctx_.lam_max)
