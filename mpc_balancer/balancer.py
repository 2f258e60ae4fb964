"""The Balancer: one control tick, end to end, with validation, fallbacks and checkpoints.

``Balancer.create(...)`` builds one from plain values (clusters, a policy or none, the QPS history)
and ``Balancer.step(telemetry) -> Decision`` runs a tick:

1. check the telemetry (a missing cluster or a wrong shape is a caller bug and raises
   ``ValueError`` naming the field; non-finite or negative values, a load above ``max_load``
   (10 x capacity by default: no sensor reading is that), a QPS over ``max_qps_ratio`` (100) times
   the larger of the last accepted QPS and the history's 99th percentile, a lambda in force outside
   ``[lam_min, lam_max]`` (no node applies one the Balancer cannot have sent), a time not after
   the previous tick's and a time outside ``[1970, 2100)`` (a mistyped year) are faults of the
   plant's sensors, and so are a cluster's load of exactly 0 while requests are served and a load
   reading repeated unchanged for more than ``max_flat_ticks`` (5) ticks while the QPS moved by 5% or more (a stuck sensor: a live
   reading carries noise): the tick holds the last good lambda and the Decision's ``reason``
   names the field and the value -- the documented safe fallback); a tick without traffic
   (``qps = 0``: an outage) holds too, its time accepted, and moves no controller, PID or forecaster
   state, so the traffic's return meets the lambda of the last tick with traffic (the clairvoyant
   hindsight limit, shown the coming tick, decides instead);
2. feed the forecaster and ask it for the horizon (controllers that declare ``needs_forecast``);
3. run the controller; if it raises, returns a non-``ok`` status or non-finite lambdas, or runs
   past ``time_budget_s``, fall back to the PID (which runs in the shadow every tick and is kept
   aligned with the applied lambda, so the switch is bumpless), and if that fails too, to the last
   good lambda; the reason is recorded. The budget is preemptive: with a finite budget the
   controller runs in the Balancer's worker thread and ``step`` waits for it at most
   ``time_budget_s``; a call still running then is left to finish in the background (its plan is
   discarded), the ticks until it has finished fall back too, and the controller is told the
   lambda actually applied before it plans again. ``time_budget_s=inf`` calls it inline (what the
   simulator does: its runs must not depend on the machine's speed);
4. clamp lambda to ``[lam_min, lam_max]`` and rate-limit it to a factor ``max_ratio`` per tick;
5. return a :class:`Decision` (lambda per cluster, status, reason, and the controller's
   :class:`~mpc_balancer.controllers.base.Plan`).

Time. A tick's ``time`` must move forward: a time not after the previous tick's is held (a
repeated or late report). A forward jump of more than ``max_gap_s`` is held too (a mistyped stamp)
unless the next report continues from it (the telemetry really stopped for that long); the
forecaster then takes the gap by its documented policy (``TickForecaster``: a short gap is filled
as missing observations, a long one skipped in bounded time, the model's refits postponed until
it has data again) and never raises for it.

``state_dict()`` / ``load_state_dict()`` are JSON holding the state the next decision needs (the
controller's, the PID's, the forecaster's own state: its recent window, fitted parameters,
scored errors; the stuck-sensor watch), bounded by those windows, not by the ticks since ``setup``. Restore into a
Balancer created the same way (same clusters, controller and history): the next decision is the
one the uninterrupted Balancer makes. A checkpoint is validated field by field and applied all or
nothing: a bad one raises :class:`~forecasting.state.StateError` (a ``ValueError``) naming the
field and leaves the Balancer as it was. The decision path imports numpy, scipy and osqp only.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .config import is_number
from .controllers import make_controller
from .controllers.base import LAM_MAX, LAM_MIN, ControlContext, Controller, Observation, Plan
from .controllers.pid import PidController
from .policy import check_policy
from .response import Response, check_sample_size
from .telemetry import TIME_MAX, TIME_MIN, Cluster, Telemetry, to_observation

log = logging.getLogger(__name__)
CHECKPOINT_VERSION = 2


@dataclass
class Decision:
    """The lambda to apply for the coming tick and how it was reached.

    ``lam`` maps cluster -> lambda (``lam_vector`` is the same in cluster order); ``status`` is
    ``"ok"`` (the controller decided), ``"fallback"`` (the PID did; ``reason`` says why) or
    ``"hold"`` (the last good lambda; ``reason`` says why); ``plan`` is the controller's plan when
    it decided (planned lambdas and loads over its horizon, solver details in ``plan.info``)."""

    lam: dict
    lam_vector: np.ndarray
    controller: str  # who acted: the controller's name, "pid (fallback)" or "hold"
    status: str
    reason: str = ""
    solve_time_s: float = 0.0
    plan: Plan | None = None


class Balancer:
    """One control loop: telemetry in, the lambda per cluster out, every control period.

    Most callers build one with :meth:`create` (plain values); the constructor takes a configured
    controller and is followed by :meth:`setup`. Then :meth:`step` once per tick.

    Parameters
    ----------
    controller : Controller
        The central controller (:mod:`mpc_balancer.controllers`).
    forecaster : TickForecaster or forecasting model, optional
        The traffic forecast of controllers that declare ``needs_forecast``: a
        :class:`~mpc_balancer.forecast.TickForecaster`, or a model of the ``forecasting`` contract,
        which is wrapped in one (``TickForecaster(model=...)``); a ``TickForecaster`` with its
        defaults when None.
    fallback : bool
        Run the PID in the shadow and fall back to it when the controller fails.
    max_ratio : float
        Lambda moves by at most this factor per tick (> 1).
    time_budget_s : float
        A controller that takes longer than this (seconds, wall clock) is overruled by the fallback.
    response_requests : int
        Requests of the tick's sample on which the policy's response is measured.
    horizon : int, optional
        Forecast steps asked for; the controller's own ``horizon`` when None.
    max_load : float
        A load above this fraction of capacity is a sensor fault (the tick holds).
    max_gap_s : float
        A forward jump in time longer than this (seconds) is held until the next report confirms it.
    max_qps_ratio : float
        A QPS over this factor times the larger of the last QPS and the history's 99th percentile
        is a sensor fault (the tick holds).
    max_flat_ticks : int
        A cluster's load reading unchanged for more than this many ticks while the QPS moved is a stuck
        sensor (the tick holds; see the module doc).

    Attributes
    ----------
    ctx_ : ControlContext
        What the controller was set up with.
    last_good_ : ndarray
        The last lambda applied, per cluster (what a held tick returns).
    counts_ : dict
        Ticks decided ``"ok"``, by ``"fallback"`` and ``"hold"``.

    See Also
    --------
    Decision : what :meth:`step` returns.
    """

    def __init__(self, controller: Controller, forecaster=None, fallback: bool = True, max_ratio: float = 1000.0,
                 time_budget_s: float = 0.5, response_requests: int = 256, horizon: int | None = None,
                 max_load: float = 10.0, max_gap_s: float = 3600.0, max_qps_ratio: float = 100.0,
                 max_flat_ticks: int = 5):
        if isinstance(max_flat_ticks, bool) or not isinstance(max_flat_ticks, (int, np.integer)) or max_flat_ticks < 1:
            raise ValueError(f"max_flat_ticks must be an integer >= 1, got {max_flat_ticks!r}")
        self.max_flat_ticks = int(max_flat_ticks)
        for name, v in (("max_qps_ratio", max_qps_ratio), ("max_gap_s", max_gap_s), ("max_load", max_load),
                        ("max_ratio", max_ratio), ("time_budget_s", time_budget_s)):
            if not is_number(v):
                raise ValueError(f"{name} must be a number, got {v!r}")
        if not (np.isfinite(max_qps_ratio) and max_qps_ratio > 1):
            raise ValueError(f"max_qps_ratio must be finite and > 1, got {max_qps_ratio!r}")
        self.max_qps_ratio = float(max_qps_ratio)
        if not (np.isfinite(max_gap_s) and max_gap_s > 0):
            raise ValueError(f"max_gap_s must be finite and > 0 (seconds), got {max_gap_s!r}")
        self.max_gap = pd.Timedelta(seconds=float(max_gap_s))
        if not (np.isfinite(max_load) and max_load > 0):
            raise ValueError(f"max_load must be finite and > 0 (the largest plausible load fraction), got {max_load!r}")
        self.max_load = float(max_load)
        if not max_ratio > 1:
            raise ValueError(f"max_ratio must be > 1, got {max_ratio!r}")
        check_sample_size(response_requests, "response_requests")
        if not time_budget_s > 0:
            raise ValueError(f"time_budget_s must be > 0, got {time_budget_s!r}")
        if forecaster is not None:
            from .forecast import TickForecaster, check_model

            if not isinstance(forecaster, TickForecaster):
                try:
                    check_model(forecaster)
                except ValueError as e:
                    raise ValueError(f"forecaster must be a TickForecaster or a forecasting model: {e}") from None
                if isinstance(forecaster, str):
                    raise ValueError(f"forecaster must be a TickForecaster or a forecasting model, got {forecaster!r}")
                forecaster = TickForecaster(model=forecaster)
        self._lock = threading.Lock()  # one tick at a time: step and checkpoints may come from several threads
        self._late: Future | None = None  # a controller call that overran its budget and may still run
        self.controller, self.forecaster, self.fallback, self.max_ratio = controller, forecaster, fallback, max_ratio
        self.time_budget_s, self.response_requests, self.horizon = time_budget_s, response_requests, horizon

    @classmethod
    def create(cls, controller="mpc", clusters: dict | None = None, policy=None, history: pd.Series | None = None,
               period_s: float = 60.0, *, forecaster=None, fallback: bool = True, max_ratio: float = 1000.0,
               time_budget_s: float = 0.5, response_requests: int = 256, max_load: float = 10.0,
               max_gap_s: float = 3600.0, max_qps_ratio: float = 100.0, max_flat_ticks: int = 5,
               lam_min: float = LAM_MIN, lam_max: float = LAM_MAX, initial_lam: float = 0.01,
               **controller_options) -> Balancer:
        """A set-up Balancer from plain values.

        Parameters
        ----------
        controller : str or Controller
            ``"static" | "dcaf" | "pid" | "mpc"``, ``"nmpc" | "shooting"`` (with ``weights=PATH``, a
            dynamics model exported by a simulator run: an embedded Balancer has no simulator to
            train one in), or a configured controller. The hindsight limit is refused (``ValueError``):
            it needs the simulator's view of the coming tick.
        clusters : dict of str -> Cluster
            Each cluster's capacity (CPU-ms per second) and target ``C_m``; the order is the order
            of every array the Balancer returns.
        policy : Policy or None
            The per-request policy's response model (:class:`mpc_balancer.policy.Policy`); None runs
            telemetry-only (``pid``, or ``mpc`` learning cost curves from aggregates).
        history : pandas.Series or None
            Requests per second before the first step, on a DatetimeIndex at ``period_s``. The MPC's
            forecaster needs at least two days; ``static`` needs one day with traffic.
        period_s : float
            Control period in seconds.
        **controller_options
            The controller's own options (e.g. ``horizon=30``, ``backoff_target=0.003``).
        forecaster, fallback, max_ratio, time_budget_s, response_requests, max_load, max_gap_s, max_qps_ratio, max_flat_ticks
            As in :class:`Balancer`.
        lam_min, lam_max : float
            Bounds of every lambda.
        initial_lam : float
            The lambda held before the first decision (and by a hold on the first tick).

        Returns
        -------
        Balancer
            Set up and ready for :meth:`step`.
        """
        if isinstance(controller, Controller):
            if controller_options:
                raise ValueError(f"controller options {sorted(controller_options)} given with a configured controller")
        elif isinstance(controller, str):
            controller = make_controller(controller, **controller_options)
        else:
            raise ValueError(f"controller must be a name or a Controller, got {controller!r}")
        if controller.clairvoyant:  # it would fall back to the PID on every tick, each saying why
            raise ValueError(f"controller {controller.name!r} is clairvoyant: it decides from the simulator's view of "
                             "the coming tick (its true traffic, requests and costs), which Balancer.step never has; "
                             "it is the simulator's reference limit (mpc-balancer simulate/compare), not a controller "
                             "to embed")
        if not isinstance(clusters, dict) or not clusters:
            raise ValueError(f"clusters must be a non-empty dict of name -> Cluster, got {clusters!r}")
        for name, c in clusters.items():
            if not (isinstance(name, str) and name):
                raise ValueError(f"cluster names must be non-empty strings, got {name!r}")
            if not isinstance(c, Cluster):
                raise ValueError(f"clusters[{name!r}] must be a Cluster(capacity=..., target=...), got {c!r}")
        names = tuple(clusters)
        if policy is not None:
            check_policy(policy, names)
        for name, v in (("period_s", period_s), ("lam_min", lam_min), ("lam_max", lam_max), ("initial_lam", initial_lam),
                        ("max_ratio", max_ratio), ("time_budget_s", time_budget_s)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"{name} must be a number, got {v!r}")
        if not (np.isfinite(period_s) and period_s > 0):
            raise ValueError(f"period_s must be finite and > 0, got {period_s!r}")
        if not (0 < lam_min < lam_max and np.isfinite(lam_max)):
            raise ValueError(f"need 0 < lam_min < lam_max < inf, got lam_min={lam_min!r}, lam_max={lam_max!r}")
        qps, times = _history(history)
        ctx = ControlContext(clusters=names, policy=policy, target=np.array([c.target for c in clusters.values()]),
                             capacity=np.array([c.capacity for c in clusters.values()]), period_s=float(period_s),
                             history_qps=qps, history_times=times, lam_min=float(lam_min), lam_max=float(lam_max))
        bal = cls(controller, forecaster=forecaster, fallback=fallback, max_ratio=max_ratio, time_budget_s=time_budget_s,
                  response_requests=response_requests, max_load=max_load, max_gap_s=max_gap_s,
                  max_qps_ratio=max_qps_ratio, max_flat_ticks=max_flat_ticks)
        return bal.setup(ctx, initial_lam=initial_lam)

    def setup(self, context: ControlContext, initial_lam: float = 0.01) -> Balancer:
        """Bind the clusters, policy and history; fit the forecaster if the controller needs one.

        Parameters
        ----------
        context : ControlContext
            Clusters, targets, capacities, policy, control period, traffic history, lambda bounds.
        initial_lam : float
            The lambda held until the first decision.

        Returns
        -------
        Balancer
            ``self``.

        Raises
        ------
        ValueError
            ``initial_lam`` outside the bounds, or a forecasting controller without enough
            history to fit its forecaster (the message names ``history``).
        """
        if not (np.isfinite(initial_lam) and context.lam_min <= initial_lam <= context.lam_max):
            raise ValueError(f"initial_lam must be in [{context.lam_min}, {context.lam_max}], got {initial_lam!r}")
        self.ctx_ = context
        self.controller.setup(context)
        self.pid_ = PidController().setup(context) if self.fallback else None
        if self.controller.needs_forecast:
            if self.forecaster is None:
                from .forecast import TickForecaster

                self.forecaster = TickForecaster()
            need = "at least two days of history at the control period"
            bucket_s = pd.Timedelta(getattr(self.forecaster, "step", pd.Timedelta(minutes=5))).total_seconds()
            if context.period_s > bucket_s:  # each tick fills one of the forecaster's buckets, not all
                ticks = int(np.ceil(2 * 86400 / bucket_s))
                need = (f"at least {ticks} ticks of history ({ticks * context.period_s / 86400:.3g} days at a period of "
                        f"{context.period_s:g} s: the tick forecaster models {bucket_s:g}-second buckets and a tick "
                        f"fills one), or a control period of at most {bucket_s:g} s")
            if len(context.history_qps) == 0:
                raise ValueError(f"history: controller {self.controller.name!r} forecasts traffic and needs {need}; got none")
            try:
                self.forecaster.fit(context.history_qps, context.history_times, context.period_s)
            except (ValueError, IndexError) as e:
                raise ValueError(f"history: controller {self.controller.name!r} forecasts traffic and its forecaster "
                                 f"could not fit {len(context.history_qps)} ticks of history ({e}); it needs {need}") from None
            self.horizon = self.horizon or self.controller.horizon
        self.last_good_ = np.full(context.n_clusters, float(initial_lam))
        self.suspect_time_: pd.Timestamp | None = None  # a forward jump held until the next tick confirms it
        self.jump_: tuple | None = None  # (time before the last accepted jump, forecaster state then)
        hist = np.asarray(context.history_qps, dtype=float)
        self.qps_ref_ = float(np.percentile(hist, 99)) if hist.size else 0.0  # scale of plausible traffic
        self.last_qps_ = 0.0
        self.counts_ = {"ok": 0, "fallback": 0, "hold": 0}
        self.ticks_ = 0
        self.last_time_: pd.Timestamp | None = None
        self.n_features_: int | None = None
        self._reset_sensor_watch()
        return self

    def _reset_sensor_watch(self) -> None:
        """The stuck-sensor watch from scratch (checkpointed with the rest)."""
        G = self.ctx_.n_clusters
        self.last_load_: np.ndarray | None = None
        self.flat_ = np.zeros(G, dtype=int)  # ticks each reading repeated unchanged
        self.flat_lo_ = np.zeros(G)  # lowest and highest QPS seen over that run
        self.flat_hi_ = np.zeros(G)

    # --------------------------------------------------------------------------------------
    def _validate(self, obs: Observation) -> str:
        """Why this tick's values cannot be used ("" if they can)."""
        if not (np.isfinite(obs.qps) and obs.qps >= 0):
            return f"invalid telemetry: qps={obs.qps!r}"
        ref = max(self.last_qps_, self.qps_ref_)
        if ref > 0 and obs.qps > self.max_qps_ratio * ref:
            return f"invalid telemetry: qps={obs.qps!r} is more than max_qps_ratio={self.max_qps_ratio:g} x {ref:.6g}"
        c = self.ctx_
        # the lambda in force: within the bounds up to rounding (the nodes may report a geometric
        # mean over their sub-ticks, exp(mean(log)), which can land an ulp outside)
        for name, v, lo, hi in (("load", obs.load, 0.0, self.max_load),
                                ("lam", obs.lam, c.lam_min * (1 - 1e-9), c.lam_max * (1 + 1e-9))):
            bad = ~np.isfinite(v) | (v < lo) | (v > hi)
            if bad.any():
                g = int(np.flatnonzero(bad)[0])
                bounds = f"[0, max_load={self.max_load:g}]" if name == "load" else f"[lam_min, lam_max] = [{c.lam_min:g}, {c.lam_max:g}]"
                return f"invalid telemetry: {name}[{c.clusters[g]}]={float(v[g])!r} (outside {bounds})"
        if obs.over is not None:
            bad = ~np.isfinite(obs.over) | (obs.over < 0) | (obs.over > self.max_load / self.ctx_.target - 1)
            if bad.any():
                g = int(np.flatnonzero(bad)[0])
                return f"invalid telemetry: over[{self.ctx_.clusters[g]}]={float(obs.over[g])!r}"
        x = obs.features
        if x is not None and self.ctx_.policy is not None and not np.all(np.isfinite(x)):
            return f"invalid telemetry: features row {int(np.argwhere(~np.isfinite(x))[0, 0])} is not finite"
        return ""

    def _check_sensors(self, obs: Observation) -> str:
        """A load sensor that reads 0 under traffic or repeats itself while the QPS moves ("" if none)."""
        c = self.ctx_
        if obs.qps > 0 and np.any(obs.load == 0):
            g = int(np.flatnonzero(obs.load == 0)[0])
            return f"invalid telemetry: load[{c.clusters[g]}]=0.0 while qps={obs.qps:.6g} (a cluster does not serve for free)"
        q = float(obs.qps)
        same = obs.load == self.last_load_ if self.last_load_ is not None else np.zeros(c.n_clusters, dtype=bool)
        self.flat_ = np.where(same, self.flat_ + 1, 0)
        self.flat_lo_ = np.where(same, np.minimum(self.flat_lo_, q), q)
        self.flat_hi_ = np.where(same, np.maximum(self.flat_hi_, q), q)
        self.last_load_ = obs.load.copy()
        moved = self.flat_hi_ - self.flat_lo_ >= 0.05 * self.flat_hi_
        stuck = (self.flat_ >= self.max_flat_ticks) & moved & (self.flat_hi_ > 0)
        if stuck.any():
            g = int(np.flatnonzero(stuck)[0])
            return (f"invalid telemetry: load[{c.clusters[g]}]={float(obs.load[g])!r} repeated for {self.flat_[g]} ticks "
                    f"while qps moved from {self.flat_lo_[g]:.6g} to {self.flat_hi_[g]:.6g} (a stuck sensor; "
                    f"max_flat_ticks={self.max_flat_ticks})")
        return ""

    def _decision(self, lam: np.ndarray, controller: str, status: str, **kw) -> Decision:
        lam = np.asarray(lam, dtype=float)
        return Decision(lam=dict(zip(self.ctx_.clusters, lam.tolist())), lam_vector=lam, controller=controller,
                        status=status, **kw)

    def step(self, telemetry: Telemetry) -> Decision:
        """One control tick: the lambda to apply until the next telemetry (see the module doc).

        Parameters
        ----------
        telemetry : Telemetry
            What the nodes measured over the tick that just ended.

        Returns
        -------
        Decision
            The lambda per cluster and how it was reached (``status`` ``ok``, ``fallback`` or ``hold``).

        Raises
        ------
        ValueError
            A caller bug: a missing cluster or a wrong shape (implausible values hold instead).

        Notes
        -----
        Calls from several threads are serialised.
        """
        with self._lock:
            return self._step(telemetry)

    def _step(self, telemetry: Telemetry) -> Decision:
        obs = to_observation(telemetry, self.ctx_.clusters, self.ticks_, self.n_features_)
        problem = self._validate(obs) or self._check_time(obs.time) or self._check_sensors(obs)
        if problem:
            self.counts_["hold"] += 1
            log.info("hold: %s", problem)
            return self._decision(self.last_good_.copy(), "hold", "hold", reason=problem)
        self.suspect_time_ = None
        if obs.qps == 0 and not self.controller.clairvoyant:
            # an outage: the tick tells nothing of how the load answers lambda, and lambda is spent
            # on nobody. Deciding on it wound every controller down (PID and DCAF to lam_min on a
            # load of 0, the MPC on a nowcast of 0), and the traffic's return, often a retry surge,
            # then met the cheapest allocation: 2.4-4.5 x C_m on the first tick back. Held: the nodes
            # keep the lambda of the last tick with traffic, no controller, PID or forecaster state
            # moves (the forecaster takes the outage as missing observations), the time moves on
            self.last_time_ = obs.time
            self.counts_["hold"] += 1
            reason = "no traffic (qps=0): the last lambda with traffic is held until requests arrive"
            log.info("hold: %s", reason)
            return self._decision(self.last_good_.copy(), "hold", "hold", reason=reason)
        self.last_qps_ = float(obs.qps)
        self.ticks_ += 1
        self.last_time_ = obs.time
        if obs.features is not None and self.ctx_.policy is not None:  # unused features fix no width
            self.n_features_ = obs.features.shape[1]
        shadow = self.pid_.make_step(obs) if self.pid_ is not None else None
        reason, plan = "", None
        try:
            forecast = None
            if self.forecaster is not None:
                self.forecaster.observe(obs.time, obs.qps)
                forecast = self.forecaster.predict(self.horizon)
        except Exception as e:  # noqa: BLE001 -- a forecaster failure falls back like a controller failure
            reason = f"forecaster raised {type(e).__name__}: {e}"
        t0 = time.perf_counter()  # the budget is the controller's (the forecaster's catch-up is bounded by itself)
        if not reason and not self._controller_free():
            reason = f"{self.controller.name}: still running the call that overran its budget"
        if not reason:
            try:
                response = None
                if self.controller.reads_response and self.ctx_.policy is not None and obs.features is not None:
                    response = Response(self.ctx_.policy, obs.features, max_requests=self.response_requests, lam=obs.lam)
                plan = self._make_step(obs, forecast, response, t0)
            except FutureTimeout:
                reason = (f"{self.controller.name}: took more than its budget {self.time_budget_s * 1e3:.0f} ms "
                          f"(preempted; the call finishes in the background and its plan is discarded)")
            except Exception as e:  # noqa: BLE001 -- any controller or policy failure falls back, with the reason recorded
                reason = f"{self.controller.name} raised {type(e).__name__}: {e}"
        elapsed = time.perf_counter() - t0
        if not reason:
            if not isinstance(plan, Plan):
                reason = f"{self.controller.name}: make_step returned {type(plan).__name__}, not a Plan"
            elif plan.status != "ok":
                reason = f"{self.controller.name}: {plan.status}"
            elif np.shape(plan.lam) != (self.ctx_.n_clusters,) or not np.all(np.isfinite(plan.lam)):
                reason = f"{self.controller.name}: lambda must be {self.ctx_.n_clusters} finite values, got {plan.lam!r}"
            elif elapsed > self.time_budget_s:
                reason = f"{self.controller.name}: took {elapsed * 1e3:.1f} ms > budget {self.time_budget_s * 1e3:.0f} ms"
        if not reason:
            lam, who, status = plan.lam, plan.controller, "ok"
        elif shadow is not None and np.all(np.isfinite(shadow.lam)):
            lam, who, status = shadow.lam, "pid (fallback)", "fallback"
        else:
            lam, who, status = self.last_good_.copy(), "hold", "hold"
        self.counts_[status] += 1
        if status != "ok":
            log.log(logging.WARNING if " raised " in reason else logging.INFO, "%s: %s", status, reason)
        lam = self._limit(np.asarray(lam, dtype=float), obs.lam)
        self.last_good_ = lam.copy()
        if self._late is None:  # a call still running owns the controller; it is told on its next tick
            self._notify_applied(lam)
        if self.pid_ is not None and status != "fallback":
            self.pid_.align(lam, obs)
        return self._decision(lam, who, status, reason=reason, plan=plan if status == "ok" else None,
                              solve_time_s=(plan.solve_time_s or elapsed) if status == "ok" else elapsed)

    def _make_step(self, obs: Observation, forecast, response, t0: float) -> Plan:
        """The controller's plan, inline, or in the worker thread waited for until the budget
        (counted from ``t0``) is spent: then ``FutureTimeout`` and the call is left running."""
        if not np.isfinite(self.time_budget_s):
            return self.controller.make_step(obs, forecast=forecast, response=response)
        fut: Future = Future()

        def run():  # a daemon thread: a controller that never returns must not keep the process alive
            try:
                fut.set_result(self.controller.make_step(obs, forecast=forecast, response=response))
            except BaseException as e:  # noqa: BLE001 -- handed to the waiting tick
                fut.set_exception(e)

        threading.Thread(target=run, name="balancer-controller", daemon=True).start()
        try:
            return fut.result(timeout=max(0.0, self.time_budget_s - (time.perf_counter() - t0)))
        except FutureTimeout:
            self._late = fut
            log.warning("%s: preempted after its budget of %.0f ms", self.controller.name, self.time_budget_s * 1e3)
            raise

    def _controller_free(self) -> bool:
        """Whether the controller may plan: no overrun call of an earlier tick is still running.
        When one has just finished, the controller is first told the lambda applied since."""
        if self._late is None:
            return True
        if not self._late.done():
            return False
        self._late = None
        self._notify_applied(self.last_good_)
        return True

    def _wait_late(self) -> None:
        """Let an overrun controller call finish (a checkpoint must not read a state mid-update)."""
        if self._late is not None:
            self._late.exception()  # waits; its outcome was already reported as a fallback
            self._controller_free()

    def _notify_applied(self, lam: np.ndarray) -> None:
        try:
            self.controller.notify_applied(lam)
        except Exception as e:  # noqa: BLE001 -- the lambda stands; the controller's bookkeeping failed, said once
            log.warning("%s: notify_applied raised %s: %s", self.controller.name, type(e).__name__, e)

    def _check_time(self, t: pd.Timestamp) -> str:
        """Why this tick's time cannot be taken ("" if it can); see the module doc."""
        if not TIME_MIN <= t < TIME_MAX:  # a mistyped year: never a suspect jump (a checkpoint could not hold it)
            return f"invalid telemetry: time {t} is outside [{TIME_MIN.date()}, {TIME_MAX.date()})"
        last = self.last_time_
        if last is None:
            return ""
        s = self.suspect_time_
        confirmed = s is not None and s < t <= s + self.max_gap
        if t <= last:
            if self.jump_ is not None and t > self.jump_[0]:
                if confirmed:  # two reports back on the timeline the accepted jump left: undo the jump
                    return self._undo_jump(t)
                self.suspect_time_ = t
            return f"invalid telemetry: time {t} is not after the previous tick's {last}"
        if t - last <= self.max_gap:
            return ""
        if confirmed:
            log.warning("telemetry resumed after a gap of %s (confirmed by two reports)", t - last)
            self.jump_ = (last, None if self.forecaster is None else self.forecaster.state_dict())
            return ""
        self.suspect_time_ = t
        return (f"invalid telemetry: time {t} jumps {t - last} past the previous tick's {last} (more than max_gap_s); "
                f"held until the next report confirms it")

    def _undo_jump(self, t: pd.Timestamp) -> str:
        """The reports went back to the timeline before an accepted forward jump (a clock that
        jumped, not an outage): the forecaster goes back to its state before the jump."""
        before, state = self.jump_
        self.jump_ = None
        if state is not None:
            try:
                self.forecaster.load_state_dict(state)
            except ValueError as e:
                return f"invalid telemetry: time {t} is back before a jump, and the forecaster could not go back ({e})"
        log.warning("telemetry time went back to %s, before the jump accepted at %s: the jump is undone", t, self.last_time_)
        self.last_time_ = before
        return ""

    def _limit(self, lam: np.ndarray, prev: np.ndarray) -> np.ndarray:
        c = self.ctx_
        lam = np.clip(lam, c.lam_min, c.lam_max)
        prev = np.clip(prev, c.lam_min, c.lam_max)
        return np.clip(lam, prev / self.max_ratio, prev * self.max_ratio)

    # ------------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """The state the next decision needs, as JSON-able values (see the module doc).

        Waits for a controller call that overran its budget to finish first.

        Returns
        -------
        dict
            ``version``, the controller's, the shadow PID's and the forecaster's states and the
            Balancer's own counters; :meth:`load_state_dict` restores it.
        """
        with self._lock:
            self._wait_late()
            return self._state_dict()

    def _state_dict(self) -> dict:
        controller_state = self.controller.state_dict()
        # The controller continues from exactly what a restore rebuilds: a solver's workspace
        # (OSQP's adapted step size, its factorisation) is not in the state, so it is rebuilt here
        # as a restore rebuilds it, and the next decision is the same bit for bit either way.
        self.controller.load_state_dict(controller_state)
        d = {"version": CHECKPOINT_VERSION, "controller": self.controller.name, "clusters": list(self.ctx_.clusters),
             "last_good": self.last_good_.tolist(), "counts": dict(self.counts_), "ticks": self.ticks_,
             "last_time": None if self.last_time_ is None else self.last_time_.value,
             "suspect_time": None if self.suspect_time_ is None else self.suspect_time_.value, "last_qps": self.last_qps_,
             "jump": None if self.jump_ is None else [self.jump_[0].value, self.jump_[1]],
             "n_features": self.n_features_, "controller_state": controller_state,
             "sensors": {"last_load": None if self.last_load_ is None else self.last_load_.tolist(),
                         "flat": self.flat_.tolist(), "flat_lo": self.flat_lo_.tolist(), "flat_hi": self.flat_hi_.tolist()},
             "pid": None if self.pid_ is None else self.pid_.state_dict(),
             "forecaster": None if self.forecaster is None else self.forecaster.state_dict()}
        json.dumps(d)  # must be JSON
        return d

    def load_state_dict(self, d: dict) -> None:
        """Restore a checkpoint taken by :meth:`state_dict` (see the module doc): validated field
        by field, applied all or nothing. The last good lambda is clipped to this Balancer's
        ``[lam_min, lam_max]`` (a restart that narrowed them holds its first tick inside them)."""
        from forecasting.state import StateError  # not at import: the package's models are not on the decision path
        with self._lock:
            self._wait_late()
            self._check_state(d)
            # the PID's and the controller's state are small: kept to put back if a later part fails;
            # the forecaster goes last and checks all of its fields before it changes anything
            pid_before = None if self.pid_ is None else self.pid_.state_dict()
            controller_before = self.controller.state_dict()
            try:
                if self.pid_ is not None:
                    try:
                        self.pid_.load_state_dict(d["pid"])
                    except ValueError as e:
                        raise StateError(f"checkpoint.pid: {e}") from None
                try:
                    self.controller.load_state_dict(d["controller_state"])
                except StateError:
                    raise
                except Exception as e:  # noqa: BLE001 -- the controller's own check, reported with the field
                    raise StateError(f"checkpoint.controller_state: {type(e).__name__}: {e}") from None
                if self.forecaster is not None:
                    self.forecaster.load_state_dict(d["forecaster"], "checkpoint.forecaster")
            except Exception:
                self.controller.load_state_dict(controller_before)
                if self.pid_ is not None:
                    self.pid_.load_state_dict(pid_before)
                raise
            # within this Balancer's bounds: a checkpoint written under wider ones (lam_max lowered on
            # restart) was held as it was, the nodes applied it, and their report of a lambda outside
            # [lam_min, lam_max] was held again: every tick, for good
            self.last_good_ = np.clip(np.asarray(d["last_good"], dtype=float), self.ctx_.lam_min, self.ctx_.lam_max)
            self.counts_ = {k: int(v) for k, v in d["counts"].items()}
            self.ticks_, self.n_features_ = int(d["ticks"]), d["n_features"]
            self.last_time_ = None if d["last_time"] is None else pd.Timestamp(d["last_time"])
            self.suspect_time_ = None if d["suspect_time"] is None else pd.Timestamp(d["suspect_time"])
            self.last_qps_ = float(d["last_qps"])
            self.jump_ = None if d["jump"] is None else (pd.Timestamp(d["jump"][0]), d["jump"][1])
            sensors = d.get("sensors")
            if sensors is None:  # a checkpoint written before the watch was kept: it starts again
                self._reset_sensor_watch()
            else:
                self.last_load_ = None if sensors["last_load"] is None else np.asarray(sensors["last_load"], dtype=float)
                self.flat_ = np.asarray(sensors["flat"], dtype=int)
                self.flat_lo_ = np.asarray(sensors["flat_lo"], dtype=float)
                self.flat_hi_ = np.asarray(sensors["flat_hi"], dtype=float)

    def _check_sensor_state(self, sensors) -> None:
        """``checkpoint.sensors``: the stuck-sensor watch (per cluster: the last load read, the
        ticks it repeated, the QPS range over them)."""
        from forecasting.state import StateError
        G = self.ctx_.n_clusters
        if not (isinstance(sensors, dict) and set(sensors) == {"last_load", "flat", "flat_lo", "flat_hi"}):
            raise StateError(f"checkpoint.sensors must be a dict with last_load, flat, flat_lo, flat_hi, got {sensors!r}")
        for k in ("last_load", "flat", "flat_lo", "flat_hi"):
            v = sensors[k]
            if v is None and k == "last_load":
                continue
            ok = (isinstance(v, list) and len(v) == G
                  and all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) and x >= 0 for x in v)
                  and (k != "flat" or all(isinstance(x, int) for x in v)))
            if not ok:
                kind = "integers" if k == "flat" else "finite numbers"
                raise StateError(f"checkpoint.sensors.{k} must be {G} {kind} >= 0{' or null' if k == 'last_load' else ''}, got {v!r}")

    def _check_state(self, d) -> None:
        from forecasting.state import StateError, StateReader
        """The Balancer's own fields (the controller, PID and forecaster check theirs)."""
        s = StateReader(d)
        version = s.raw("version")
        if version != CHECKPOINT_VERSION:
            raise StateError(f"checkpoint version must be {CHECKPOINT_VERSION}, got {version!r}")
        if s.raw("controller") != self.controller.name:
            raise StateError(f"checkpoint is for controller {s.raw('controller')!r}, this Balancer runs {self.controller.name!r}")
        if s.raw("clusters") != list(self.ctx_.clusters):
            raise StateError(f"checkpoint is for clusters {s.raw('clusters')!r}, this Balancer has {list(self.ctx_.clusters)}")
        missing = {"last_good", "counts", "ticks", "last_time", "suspect_time", "last_qps", "jump", "n_features", "controller_state", "pid",
                   "forecaster"} - set(d)
        if missing:
            raise StateError(f"checkpoint is missing {sorted(missing)}")
        last_good = np.asarray(d["last_good"], dtype=float) if isinstance(d["last_good"], list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in d["last_good"]) else None
        if last_good is None or last_good.shape != (self.ctx_.n_clusters,) or not np.all(np.isfinite(last_good)) \
                or np.any(last_good <= 0):
            raise StateError(f"checkpoint last_good must be {self.ctx_.n_clusters} finite values > 0, got {d['last_good']!r}")
        counts = s.sub("counts")
        if set(counts.d) != {"ok", "fallback", "hold"}:
            raise StateError(f"checkpoint.counts must have the keys ok, fallback, hold, got {sorted(counts.d)}")
        for k in ("ok", "fallback", "hold"):
            counts.number(k, 0, integer=True)
        s.number("ticks", 0, integer=True)
        s.number("last_qps", 0.0)
        jump = d["jump"]
        if jump is not None and not (isinstance(jump, list) and len(jump) == 2 and isinstance(jump[0], int)
                                     and (jump[1] is None or isinstance(jump[1], dict))):
            raise StateError(f"checkpoint.jump must be null or [time, forecaster state], got {type(jump).__name__}")
        for k in ("last_time", "suspect_time"):
            s.number(k, integer=True, lo=-(2 ** 62), hi=2 ** 62, optional=True)
        s.number("n_features", 1, integer=True, optional=True)
        if "sensors" in d:
            self._check_sensor_state(d["sensors"])
        if not isinstance(d["controller_state"], dict):
            raise StateError(f"checkpoint.controller_state must be a dict, got {type(d['controller_state']).__name__}")
        if (d["pid"] is None) != (self.pid_ is None):
            raise StateError(f"checkpoint.pid must be {'null' if self.pid_ is None else 'the fallback PID state'}, got {d['pid']!r}")
        if (d["forecaster"] is None) != (self.forecaster is None):
            raise StateError(f"checkpoint.forecaster must be {'null' if self.forecaster is None else 'the forecaster state'}")
        _check_numbers(d["controller_state"], "checkpoint.controller_state")


def _check_numbers(v, path: str) -> None:
    """A controller's state is JSON of finite numbers, strings, booleans and nulls (NaN admitted:
    some estimates are undefined until scored); an infinity or any other type is refused."""
    from forecasting.state import StateError
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise StateError(f"{path} has a non-string key {k!r}")
            _check_numbers(x, f"{path}.{k}")
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _check_numbers(x, f"{path}[{i}]")
    elif isinstance(v, float):
        if np.isinf(v):
            raise StateError(f"{path} is {v!r}")
    elif not (v is None or isinstance(v, (str, bool, int))):
        raise StateError(f"{path} has a {type(v).__name__}, not a JSON value")


def _history(history) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """(qps, times) from a pandas Series of requests per second on a DatetimeIndex (or None)."""
    if history is None:
        return np.zeros(0), pd.DatetimeIndex([])
    if not isinstance(history, pd.Series) or not isinstance(history.index, pd.DatetimeIndex):
        raise ValueError(f"history must be a pandas Series of requests per second on a DatetimeIndex, got {type(history).__name__}")
    qps = history.to_numpy(dtype=float)
    bad = ~np.isfinite(qps) | (qps < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"history has an invalid value at {history.index[i]}: {float(qps[i])!r} (need finite and >= 0)")
    if history.index.tz is not None:
        raise ValueError(f"history index must be timezone-naive (as telemetry times are), got tz={history.index.tz}")
    if not history.index.is_monotonic_increasing or history.index.has_duplicates:
        raise ValueError("history index must be increasing timestamps without duplicates")
    return qps, history.index
