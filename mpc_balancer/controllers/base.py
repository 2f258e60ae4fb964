"""The controller interface shared by every balancer (static, DCAF, PID, MPC, NMPC, hindsight).

Life cycle (do-mpc style): construct with configuration only, ``setup(context)`` once the clusters,
the policy and the history are known, then ``make_step(obs, forecast, response) -> Plan`` every
control tick. A controller declares what it needs as class attributes, read by the Balancer and the
simulator (never probed): ``needs_forecast`` (a traffic forecast every tick), ``needs_policy``
(a :class:`~mpc_balancer.policy.Policy` and the tick's request sample), ``reads_response`` (the
policy's response on that sample, which the Balancer builds for it) and ``clairvoyant`` (the
simulator's view of the coming tick through :meth:`Controller.foresee`; only the hindsight limit).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

LAM_MIN, LAM_MAX = 1e-5, 10.0


@dataclass
class ControlContext:
    """What a controller may know when it is set up: never the future, never the true plant."""

    clusters: tuple[str, ...]
    policy: object  # a mpc_balancer.policy.Policy, or None (telemetry only)
    target: np.ndarray  # C_m per cluster (load fraction)
    capacity: np.ndarray  # CPU-ms per second per cluster
    period_s: float
    history_qps: np.ndarray  # rate per tick before the first step (may be empty)
    history_times: pd.DatetimeIndex
    lam_min: float = LAM_MIN
    lam_max: float = LAM_MAX
    # runs a controller in closed loop over the last ``days`` of the *history* (never the evaluated
    # window) and returns its per-tick log: how learned-dynamics controllers collect training logs
    simulate_history: object = None  # Callable[[Controller, float], pandas.DataFrame] | None

    @property
    def n_clusters(self) -> int:
        """Number of clusters ``G``."""
        return len(self.clusters)


@dataclass
class Observation:
    """Telemetry at the start of a tick, about the tick that just ended, as arrays in cluster order."""

    t: int
    time: pd.Timestamp
    qps: float  # measured over the last tick
    load: np.ndarray  # measured load per cluster
    lam: np.ndarray  # lambda applied in the last tick
    features: np.ndarray | None = None  # request sample of the last tick (None: telemetry only)
    over: np.ndarray | None = None  # over-utilisation per cluster the nodes saw (None: not reported)


@dataclass
class Plan:
    """A controller's decision for the coming tick: lambda per cluster and what it planned."""

    lam: np.ndarray
    controller: str
    status: str = "ok"
    solve_time_s: float = 0.0
    lam_plan: np.ndarray | None = None  # (H, G) planned lambdas
    load_plan: np.ndarray | None = None  # (H, G) planned loads
    info: dict = field(default_factory=dict)


class Controller:
    """Base class of every central controller: stores configuration; ``setup`` binds the context.

    Subclasses set the class attributes below, take their options in ``__init__`` (validated
    there, stored as given) and implement :meth:`make_step`; learned state ends in ``_``.

    Attributes
    ----------
    name : str
        The name the registry and the logs use.
    needs_forecast : bool
        The Balancer passes a traffic forecast over ``horizon`` ticks to :meth:`make_step`.
    needs_policy : bool
        The controller bisects the policy's response: it needs a policy and request samples.
    reads_response : bool
        :meth:`make_step` reads its ``response`` argument, so the Balancer builds it when there is a
        policy and a request sample (the policy's decision on the whole sample, then a cut of it);
        a controller that never reads it sets False and its ticks skip that work.
    clairvoyant : bool
        The simulator shows it the coming tick through :meth:`foresee` (the hindsight limit only).
    horizon : int or None
        Forecast steps a forecasting controller plans over.
    """

    name = "controller"
    needs_forecast = False
    needs_policy = False
    reads_response = True
    clairvoyant = False
    horizon: int | None = None  # steps of forecast a needs_forecast controller plans over

    def setup(self, context: ControlContext) -> Controller:
        """Bind ``context`` (clusters, targets, capacities, policy, history); returns ``self``.

        Raises
        ------
        ValueError
            The controller needs a policy and ``context.policy`` is None.
        """
        if self.needs_policy and context.policy is None:
            raise ValueError(f"controller {self.name!r} needs a policy (it bisects the policy's response); "
                             "without one use 'pid' or 'mpc' (telemetry-only)")
        self.ctx_ = context
        return self

    def make_step(self, obs: Observation, forecast=None, response=None) -> Plan:  # pragma: no cover
        """Decide the coming tick's lambda.

        Parameters
        ----------
        obs : Observation
            The telemetry of the tick that just ended, in cluster order.
        forecast : dict, optional
            ``{"mean", "hi"}`` arrays over the horizon (``needs_forecast`` controllers).
        response : Response, optional
            The policy's response on the tick's request sample (``needs_policy`` controllers, and
            the MPC when it has a policy).

        Returns
        -------
        Plan
            Lambda per cluster, a status (``"ok"`` or why not) and what the controller planned.
        """
        raise NotImplementedError

    def notify_applied(self, lam: np.ndarray) -> None:
        """The Balancer applied ``lam`` (possibly clamped, rate-limited, or from a fallback)."""

    def foresee(self, future) -> None:
        """Receive the simulator's view of the coming tick (clairvoyant controllers only)."""
        raise TypeError(f"controller {self.name!r} is not clairvoyant")

    def state_dict(self) -> dict:
        """What happened since ``setup``, as JSON-able values (none by default)."""
        return {}

    def load_state_dict(self, d: dict) -> None:
        """Restore :meth:`state_dict` into a controller set up with the same context."""

    def clip(self, lam: np.ndarray) -> np.ndarray:
        """``lam`` clipped to the context's ``[lam_min, lam_max]``."""
        return np.clip(lam, self.ctx_.lam_min, self.ctx_.lam_max)
