"""The convex MPC controller: frontier from the policy's response, forecast-driven QP, offset-free.

Every tick: (1) the response curve of each cluster is measured whole every ``curve_every`` ticks on
a pool of the last ``pool_ticks`` request samples, and near the operating point on the ticks in
between (``local_points``; the frontier's segments refresh the QP's ``A`` values); (2) the load
disturbance ``theta`` (measured / predicted load) is updated with gain
``offset_gain`` (offset-free MPC: true costs differ from the estimates, and ``theta`` learns by how
much; a gain below 1 filters the load sensors' noise), and the load budget is tightened by the back-off ``b`` (below); (3) the QP
over ``horizon`` ticks is solved warm by OSQP (or cvxpy, ``solver="cvxpy"``), with the frontier
either as a fitted concave quadratic (``frontier="quadratic"``, default: ~50 ADMM iterations)
or as its exact piecewise-linear epigraph (``frontier="pwl"``: LP-like, several hundred
iterations; benchmarks/bench_mpc.py times both);
(4) the applied lambda is the one whose cost per request equals the first planned ``u``: read off
the curve; when some cluster's lambda moves by more than ``refine_above`` x (a spike, a step in
the plan), it is refined by ``refine_steps`` joint bisection steps in log lambda on the request
sample itself: all clusters' lambdas move together, and read off the per-cluster curves a joint
cut of every cluster lands far below the plan (the cross-cluster effects the sweeps miss). Small
moves keep the curve's reading, whose errors the disturbance ``theta`` has already learned.
Lambda may rise at once but falls at most ``max_fall`` x per tick.

The back-off is an online chance constraint. Each cluster's load budget is ``C_m - b`` and, after
every tick, ``b <- clip(b + backoff_gain (e - nu*), backoff_min, backoff_max)`` with ``e`` the
over-utilisation the nodes saw during the tick (:class:`~mpc_balancer.telemetry.Telemetry`
``over``: the mean of ``max(L - C_m, 0) / C_m`` over their own load readings, MaRCA's nu where
it happens) and ``nu* = backoff_target``. A tick without ``over`` uses ``e = max(L - C_m, 0) /
C_m`` of its mean measured load and ``nu* = backoff_target_load``: that reading misses overloads
shorter than a tick and counts the meter's noise near ``C_m`` as overload, so where it settles
depends on the meter (:class:`MpcSettings`). Calm ticks lower the
margin by ``backoff_gain nu*``, overloaded ones raise it by their excess. Summed over ``T``
ticks the updates telescope, so the mean of ``e`` is within ``(backoff_max - backoff_min) /
(backoff_gain T)`` of ``nu*`` whenever ``b`` stays inside its bounds (stochastic approximation, as
in adaptive conformal inference): the long-run nu of the counted ticks converges to the target on
any trace, without a quantile tuned on one trace (the ticks not counted, below, add to the nu of
the run). ``b`` may go below zero (``backoff_min=-0.05``): the plan is made on
the forecast's upper band, itself a margin, and where that band alone over-protects the chance
constraint gives part of it back. The margin answers the plan's own misses (the cost model, the
disturbance estimate, the sampled request mix, the forecast's ordinary error): a tick counts if the
plan for it met ``C_m - b`` without slack and lambda was below its maximum (an overload no lambda
can shed is not the margin's to answer). Traffic above the forecast's upper band counts with the
weight ``1 - log(qps / hi) / log(backoff_burst_ratio)`` (clipped to ``[0, 1]``): an 80% band
leaves a fifth of ordinary ticks above it, and their overloads are the chance constraint's (counting
only the ticks within the band held those to the target and left the rest out: on a noisy
synthetic trace with bursts, 0.0009-0.0011 of each cluster's nu, about a third, came from ticks
1-1.5x over the band); traffic ``backoff_burst_ratio`` x the band or more is a burst, as is
traffic after a band of 0 (the return from an outage). A tick the node guards raised lambda
within counts with the weight ``1 - |log r| / log(steady_ratio)`` (clipped to ``[0, 1]``), ``r`` the ratio of the
curve's cost at the decided lambda to that at the applied one: a guard's nudge on a plan a little
over ``C_m`` scores the plan almost fully, the raise that sheds a burst not at all. Skipping every
guarded tick instead counts only the ticks the guard left calm: the margin then falls to
``backoff_min`` and the guard catches the plan's overshoot on most sub-ticks. The target thus holds
on the ticks the margin is responsible for; bursts beyond every forecast are the guard's.

Where the response comes from (``response``): ``"sample"`` sweeps the policy's
:meth:`~mpc_balancer.policy.Policy.respond` over the last request samples (costs and revenue as
the policy estimates them: never the plant's truth); ``"telemetry"`` learns each cluster's cost
per request from aggregate telemetry alone (:class:`~mpc_balancer.telemetry_response.TelemetryResponse`)
and multiplies the applied lambda by a small exploration dither ``exp(U(-dither, dither))``;
``"auto"`` (default) uses the sample when the Balancer has a policy and the tick brings features,
telemetry otherwise. Until the telemetry model has ``telemetry_min_ticks`` points the controller
reports ``warming up`` and the Balancer's PID steers.
"""
from __future__ import annotations

import numbers
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from ..frontier import ResponseCurve, default_grid, measure_response, measure_response_near
from ..mpc import CvxpyMpcSolver, MpcData, MpcProblem, MpcWeights, OsqpMpcSolver, QuadraticMpcProblem, frontier_data
from ..response import Response
from ..telemetry_response import TelemetryResponse
from .base import ControlContext, Controller, Observation, Plan

RESPONSES = ("auto", "sample", "telemetry")


def log_share(d, ratio: float):
    """``1 - d / log(ratio)`` clipped to ``[0, 1]``: the weight of a tick ``d`` (in log) away from
    where it counts fully, none from ``log(ratio)`` on (``d = inf``: none)."""
    return np.clip(1.0 - d / np.log(ratio), 0.0, 1.0)


def backoff_update(b: np.ndarray, e: np.ndarray, counted: np.ndarray, target: float, gain: float,
                   b_max: float, b_min: float = 0.0) -> np.ndarray:
    """One step of the online chance constraint: ``b + gain (e - target)`` on the counted clusters,
    clipped to ``[b_min, b_max]`` (``e``: the tick's over-utilisation per cluster, in units of C_m;
    a negative ``b`` lets the plan use part of the forecast band's own margin)."""
    return np.clip(b + np.where(counted, gain * (np.asarray(e, dtype=float) - target), 0.0), b_min, b_max)


@dataclass(frozen=True)
class MpcSettings:
    """The convex MPC's settings, grouped and validated in one place (do-mpc style).

    :class:`MpcController` takes these fields as keyword arguments; a config file's ``[mpc]``
    table and ``--set mpc.KEY=VALUE`` name them too. Every field is checked when the settings are
    made (``ValueError`` naming the field and the value).

    Parameters
    ----------
    horizon : int
        Ticks the QP plans over (>= 1).
    objective : {"revenue", "tracking"}
        Maximise planned revenue under the load budget, or track ``C_m`` (the paper's objective).
    solver : {"osqp", "cvxpy"}
        OSQP set up once and warm-started every tick, or cvxpy (a cross-check; slower).
    frontier : {"quadratic", "pwl"}
        The revenue frontier as a fitted concave quadratic, or as its exact piecewise-linear epigraph.
    n_segments : int
        Segments of the piecewise-linear frontier.
    grid_points : int
        Lambdas of the response curve measured on the request sample.
    curve_every : int
        Measure the whole response curve every this many ticks.
    local_points : int
        On the ticks in between, re-measure this many grid points on either side of each
        cluster's current lambda on the pooled sample and scale the rest of the curve to them
        (:func:`~mpc_balancer.frontier.measure_response_near`); 0 keeps the last curve as it is.
        A telemetry-only curve is re-fitted whole on those ticks (it costs little).
        The default (6 and 2) evaluates 12 lambdas on five ticks of six instead of 36 on every
        tick: 11% less CPU for the MPC's closed loop with revenue, mu and nu within the seeds' spread
        (README, "Closed-loop speed").
    pool_ticks : int
        Request samples of the last ticks pooled for the curve.
    pool_min_rows : int
        ... and of older ticks too (up to ``pool_min_rows`` ticks) until the pool holds this many
        requests: a deployment that samples a few requests a tick gets a curve from enough of
        them. With one request a tick the curve, measured on that one, ran the clusters at 22-25%
        of ``C_m``. The simulator's ticks (256 requests after the Balancer's cut) never need an
        older one.
    offset_gain : float
        Gain of the load disturbance ``theta`` (measured / predicted load), in ``(0, 1]``.
    steady_ratio : float
        How far a tick may be from steady state and still teach ``theta`` fully (> 1). The load
        meters lag, so after a step in QPS or in the applied lambda (a decision, or a node guard's
        raise) the measured load answers neither the old nor the new operating point. ``theta``'s
        gain is scaled by ``1 - d / log(steady_ratio)`` (clipped to ``[0, 1]``), ``d`` the cluster's
        larger of ``|log qps/qps_prev|`` and ``|log lambda_applied/lambda_applied_prev|``: a burst's
        edges and the guard's raises do not corrupt ``theta`` for the ticks after them, while small
        moves, and a guard floor held from tick to tick, still teach it. The same ratio
        weighs a guarded tick in the back-off: a guard raise that cut the cost per request by
        ``steady_ratio`` or more (a burst shed) does not score the plan, and a tick whose QPS moved
        by ``steady_ratio`` or more is not a point of the telemetry-only cost curves.
    time_limit_s : float
        OSQP's time limit per solve.
    rho, slack, alpha, beta : float
        The QP's weights (:class:`~mpc_balancer.mpc.MpcWeights`): rate penalty on ``u``, slack
        penalty, tracking discount, tracking rate penalty.
    backoff_target : float
        The chance constraint's target over-utilisation ``nu*`` (in ``[0, 1)``), on the
        over-utilisation the nodes report (:class:`~mpc_balancer.telemetry.Telemetry` ``over``).
    backoff_target_load : float
        The target used instead on a tick without ``over``, whose back-off scores the tick's mean
        measured load. That reading misses overloads shorter than a tick and counts the meter's
        noise near ``C_m`` as overload (1% noise adds about 0.004 at ``C_m``), so its target is not
        ``nu``'s: 0.003 on it gave a per-sub-tick nu of 0.0010-0.0015 on the bundled traces at 1%
        meter noise, but 0.0036-0.0053 without noise and a mu 0.03 short of hindsight's at 3%.
    backoff_gain : float
        Step of the back-off update ``b <- b + gain (e - nu*)`` (>= 0).
    backoff_max, backoff_min, backoff_initial : float
        Bounds of the back-off ``b`` and its value at set-up (``backoff_min`` in ``(-1, 0]``).
        From a cold start ``b`` falls by at most ``backoff_gain * backoff_target`` per calm tick,
        so the start value sets most of the first day: on the bundled traces ``b`` settled (median
        over a week) at -0.012 to -0.026 at the default target and -0.001 to -0.012 at 0.0003, with
        or without bursts, before ticks over the forecast's band were scored (-0.0003 to -0.0039 at
        0.0003 since); at 0.0003, starting at -0.01 instead of 0.02 earned 0.06-0.07% more over a
        week (README, "Bursty traffic"). A restarted controller restores ``b`` from its checkpoint.
    backoff_burst_ratio : float
        Traffic this many times the forecast's upper band or more is a burst (the node guards'
        to shed) and does not score the plan; a tick between the band and this ratio counts with
        the weight ``1 - log(qps / hi) / log(backoff_burst_ratio)`` (> 1).
    max_fall : float or None
        Lambda falls at most this factor per tick (> 1; None: no limit). It may rise at once.
    refine_steps : int
        Joint bisection steps on the request sample when lambda moves a lot (>= 0).
    refine_above : float
        Refine when some cluster's lambda moves by more than this factor (>= 1).
    response : {"auto", "sample", "telemetry"}
        Where the response comes from: the policy on the request sample, cost curves learned from
        telemetry, or the sample when there is one.
    dither : float
        Log-lambda amplitude of the exploration dither of telemetry-only control, in ``[0, 1]``.
    telemetry_window, telemetry_halflife, telemetry_min_ticks, telemetry_elasticity
        Options of the :class:`~mpc_balancer.telemetry_response.TelemetryResponse` (window and
        half-life in ticks, points before it steers, the elasticity prior).
    seed : int
        Seed of the dither.

    """

    horizon: int = 30
    objective: str = "revenue"
    solver: str = "osqp"
    frontier: str = "quadratic"
    n_segments: int = 8
    grid_points: int = 12
    curve_every: int = 6
    local_points: int = 2
    pool_ticks: int = 1
    pool_min_rows: int = 64
    offset_gain: float = 0.5
    steady_ratio: float = 2.5
    time_limit_s: float = 0.05
    rho: float = 0.05
    slack: float = 50.0
    alpha: float = 0.97
    beta: float = 0.05
    backoff_target: float = 0.001
    backoff_target_load: float = 0.003
    backoff_gain: float = 0.15
    backoff_max: float = 0.3
    backoff_initial: float = 0.02
    backoff_min: float = -0.05
    backoff_burst_ratio: float = 1.25
    max_fall: float | None = 10.0
    refine_steps: int = 8
    refine_above: float = 2.0
    response: str = "auto"
    dither: float = 0.02
    telemetry_window: int = 1440
    telemetry_halflife: float = 720.0
    telemetry_min_ticks: int = 30
    telemetry_elasticity: float = 0.1
    seed: int = 0

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 -- normalised once, here
        if self.solver not in ("osqp", "cvxpy"):
            raise ValueError(f"solver must be 'osqp' or 'cvxpy', got {self.solver!r}")
        if self.frontier not in ("quadratic", "pwl"):
            raise ValueError(f"frontier must be 'quadratic' (fitted, fast) or 'pwl' (exact epigraph), got {self.frontier!r}")
        for k in ("horizon", "n_segments", "grid_points", "curve_every", "pool_ticks", "pool_min_rows"):
            v = getattr(self, k)
            if not (isinstance(v, (int, np.integer)) and v >= 1):
                raise ValueError(f"{k} must be an integer >= 1, got {v!r}")
            set_(k, int(v))
        if not 0 < self.offset_gain <= 1:
            raise ValueError(f"offset_gain must be in (0, 1], got {self.offset_gain!r}")
        for k in ("steady_ratio", "backoff_burst_ratio"):
            v = getattr(self, k)
            if not (isinstance(v, numbers.Real) and np.isfinite(v) and v > 1):
                raise ValueError(f"{k} must be a finite number > 1, got {v!r}")
        b_min = self.backoff_min
        for k, ok in (("backoff_target", lambda v: 0 <= v < 1), ("backoff_target_load", lambda v: 0 <= v < 1),
                      ("backoff_gain", lambda v: v >= 0),
                      ("backoff_max", lambda v: 0 <= v < 1), ("backoff_min", lambda v: -1 < v <= 0),
                      ("backoff_initial", lambda v: b_min <= v <= self.backoff_max)):
            v = getattr(self, k)
            if not (isinstance(v, numbers.Real) and np.isfinite(v) and ok(v)):
                raise ValueError(f"{k} out of range: {v!r} (backoff_target, backoff_target_load, backoff_max in [0, 1), "
                                 "backoff_min in (-1, 0], backoff_gain >= 0, backoff_min <= backoff_initial <= backoff_max)")
            set_(k, float(v))
        if not (isinstance(self.local_points, (int, np.integer)) and self.local_points >= 0):
            raise ValueError(f"local_points must be an integer >= 0, got {self.local_points!r}")
        set_("local_points", int(self.local_points))
        if self.max_fall is not None and not (isinstance(self.max_fall, numbers.Real) and self.max_fall > 1):
            raise ValueError(f"max_fall must be > 1 (or None: no limit), got {self.max_fall!r}")
        if not (isinstance(self.refine_steps, (int, np.integer)) and self.refine_steps >= 0):
            raise ValueError(f"refine_steps must be an integer >= 0, got {self.refine_steps!r}")
        if not self.refine_above >= 1:
            raise ValueError(f"refine_above must be >= 1, got {self.refine_above!r}")
        set_("refine_steps", int(self.refine_steps))
        set_("refine_above", float(self.refine_above))
        MpcProblem(1, 1, 1, self.objective, self.weights)  # the weights and the objective
        if self.response not in RESPONSES:
            raise ValueError(f"response must be one of {RESPONSES}, got {self.response!r}")
        if not (isinstance(self.dither, numbers.Real) and 0 <= self.dither <= 1):
            raise ValueError(f"dither must be in [0, 1] (log-lambda amplitude), got {self.dither!r}")
        set_("dither", float(self.dither))
        set_("seed", int(self.seed))
        TelemetryResponse(np.ones(1), **self.telemetry_options)  # the telemetry model's options

    @property
    def weights(self) -> MpcWeights:
        """The QP's weights."""
        return MpcWeights(rho=self.rho, slack=self.slack, alpha=self.alpha, beta=self.beta)

    @property
    def telemetry_options(self) -> dict:
        """The :class:`~mpc_balancer.telemetry_response.TelemetryResponse` options."""
        return {"window": self.telemetry_window, "halflife": self.telemetry_halflife,
                "min_ticks": self.telemetry_min_ticks, "elasticity": self.telemetry_elasticity,
                "steady_ratio": self.steady_ratio}


class MpcController(Controller):
    """The convex MPC: frontier from the policy's response, forecast-driven QP, offset-free (module doc).

    Parameters
    ----------
    **settings
        The fields of :class:`MpcSettings` (all keyword, all optional), validated there.

    Attributes
    ----------
    settings : MpcSettings
        The settings, as given (validated).
    theta_ : ndarray
        The load disturbance per cluster.
    backoff_ : ndarray
        The back-off ``b`` per cluster.
    curve_ : ResponseCurve or None
        The response curve the last plan was made on.
    mode_ : str
        ``"sample"`` or ``"telemetry"``: where the last curve came from.
    """

    name = "mpc"
    needs_forecast = True
    settings_class = MpcSettings  # the options a config file or --set may give: its fields

    def __init__(self, **settings):
        self.settings = MpcSettings(**settings)

    @property
    def horizon(self) -> int:
        """Ticks the QP plans over (``settings.horizon``)."""
        return self.settings.horizon

    def setup(self, context: ControlContext) -> MpcController:
        """Bind the context, build the telemetry response model and reset the state; returns ``self``.

        Raises
        ------
        ValueError
            ``response="sample"`` without a policy.
        """
        super().setup(context)
        if self.settings.response == "sample" and context.policy is None:
            raise ValueError("mpc: response='sample' needs a policy; use response='telemetry' (or 'auto') without one")
        self.grid_ = default_grid(context.lam_min, context.lam_max, self.settings.grid_points)
        hist = np.asarray(context.history_qps, dtype=float)
        hist = hist[np.isfinite(hist) & (hist > 0)]
        self.qps_ref_ = float(np.percentile(hist, 99)) if hist.size else 1.0
        self.telemetry_ = TelemetryResponse(context.capacity, **self.settings.telemetry_options)
        self.rng_ = np.random.default_rng(self.settings.seed)
        self.problem_ = self.solver_ = None  # built on the first curve: the rate penalty's scale comes from it
        if self.settings.solver == "osqp":
            import osqp  # noqa: F401 -- its import (70-90 ms) is set-up work, not the first tick's
        self.u_scale_: np.ndarray | None = None
        self.pool_: deque = deque()  # the curve's request pool (see _pool)
        self.curve_: ResponseCurve | None = None
        self.mode_: str | None = None  # "sample" or "telemetry": where the current curve came from
        self.theta_ = np.ones(context.n_clusters)
        self.u_applied_: np.ndarray | None = None
        self.lam_out_: np.ndarray | None = None  # the lambda this controller last returned
        self.lam_applied_: np.ndarray | None = None  # the lambda the Balancer last applied
        self.u_exact_ = False  # u_applied_ was measured on the sample (a refined tick), not read off the curve
        self.sample_: Response | None = None  # the policy's response on the pool the curve was measured on
        self.planned_: np.ndarray | None = None  # the load planned for the tick that just ended
        self.feasible_ = np.ones(context.n_clusters, dtype=bool)  # its plan met C_m - b (no slack on its first step)
        self.backoff_ = np.full(context.n_clusters, self.settings.backoff_initial)
        self.qps_hi_: float | None = None  # the upper forecast of the tick that just ended
        self.qps_prev_: float | None = None  # the QPS and applied lambda of the tick before it (steadiness)
        self.lam_prev_: np.ndarray | None = None
        self.ticks_ = 0
        return self

    def _build(self, u_scale: np.ndarray) -> None:
        """The QP and its solver, set up once; the rate penalty is relative to ``u_scale`` (each
        cluster's cost per request at the smallest lambda on the first curve: its most expensive
        allocation)."""
        G, s = self.ctx_.n_clusters, self.settings
        self.u_scale_ = np.maximum(np.asarray(u_scale, dtype=float), 1e-9)
        # The QP's own numbers are absolute (its 1e-9 regularisation, OSQP's tolerances 1e-5): they
        # suit costs per request of about 1e-3 to 1e3. A cluster whose costs are in other units
        # (CPU-ns, cores) is solved in units of the power of two nearest its u_scale, exact in
        # floating point both ways (units_); others in their own. In CPU-ns-like units (costs ~1e6)
        # the regularisation outweighed the revenue, the plan took the least cost the curve allows
        # and the clusters ran at 3% of C_m.
        k = np.round(np.log2(self.u_scale_))
        self.units_ = np.where(np.abs(k) > 10, np.exp2(k), 1.0)
        scale = self.u_scale_ / self.units_
        if s.frontier == "pwl":
            self.problem_ = MpcProblem(G, s.horizon, s.n_segments, s.objective, s.weights, scale)
        else:
            self.problem_ = QuadraticMpcProblem(G, s.horizon, s.objective, s.weights, scale)
        self.solver_ = OsqpMpcSolver(self.problem_, time_limit_s=s.time_limit_s) if s.solver == "osqp" else CvxpyMpcSolver(self.problem_)

    def _solve(self, data: MpcData):
        """The QP solved in the solver's units (:meth:`_build`), its plan and slack read back in the
        curve's. ``last_data_`` keeps the numbers the solver saw (benchmarks replay them on
        ``problem_``)."""
        units = self.units_
        if np.all(units == 1.0):
            self.last_data_ = data
            return self.solver_.solve(data)
        self.last_data_ = replace(data, capacity=data.capacity / units, u_prev=data.u_prev / units,
                                  u_min=data.u_min / units, widths=data.widths / units[:, None],
                                  slopes=data.slopes * units[:, None])
        sol = self.solver_.solve(self.last_data_)
        sol.u, sol.slack = sol.u * units[:, None], sol.slack * units[:, None]
        return sol

    # ----------------------------------------------------------------------------------------
    def _mode(self, obs: Observation) -> str:
        if self.settings.response == "telemetry" or self.ctx_.policy is None:
            return "telemetry"
        if obs.features is None:
            return "telemetry" if self.settings.response == "auto" else ""
        return "sample"

    def _pool(self, features: np.ndarray) -> None:
        """Add a tick's request sample to the pool and drop the oldest ones the pool no longer needs:
        it keeps the last ``pool_ticks`` samples, and older ones while it holds fewer than
        ``pool_min_rows`` requests without them (at most ``max(pool_ticks, pool_min_rows)``)."""
        s, pool = self.settings, self.pool_
        pool.append(features)
        rows = sum(len(p) for p in pool)
        while len(pool) > s.pool_ticks and (rows - len(pool[0]) >= s.pool_min_rows
                                            or len(pool) > max(s.pool_ticks, s.pool_min_rows)):
            rows -= len(pool.popleft())

    def _refresh_curve(self, lam: np.ndarray, mode: str, as_decided: bool = True) -> None:
        s = self.settings
        full = self.curve_ is None or self.mode_ != mode or self.ticks_ % s.curve_every == 0
        if not full and s.local_points == 0:
            return  # the curve of an earlier tick stands
        old_sample = self.sample_
        if mode == "sample":
            # one pooled tick is used as it is (a read-only sample is shared, not copied: the policy's
            # work on it, cached by identity, serves this curve and the next tick's re-basing)
            pool = list(self.pool_)
            self.sample_ = Response(self.ctx_.policy, pool[0] if len(pool) == 1 else np.concatenate(pool), max_requests=None)
            # between full measurements: the points around the operating point, on the pooled sample
            new = None if full else measure_response_near(self.sample_.evaluate_many, lam, self.curve_, s.local_points)
            if new is None:  # a full measurement (or a sample too far from the last for a near refresh)
                new = measure_response(self.sample_.evaluate_many, lam, self.grid_)
        else:  # the telemetry model's curve is cheap: whole whenever a sample's would be refreshed
            self.sample_ = None
            new = self.telemetry_.curve(self.grid_)
        if self.curve_ is not None:
            # re-base the disturbance so the new curve predicts the current load as the old one did
            # (a ratio estimator: the new sample's cost enters only relative to itself). theta is
            # relative to the curve, so the two curves are compared, except (a) after a refined tick,
            # whose cost was measured exactly on the old sample, and (b) after a tick the node guards
            # raised lambda on: each curve holds the other clusters at the lambdas of its own tick,
            # and across a raise the two differ by that move (1.5x measured), not by their samples;
            # both samples' exact costs at the same joint lambda are compared instead
            if old_sample is not None and self.sample_ is not None and (self.u_exact_ or not as_decided):
                exact_old = self.u_exact_ and as_decided and self.u_applied_ is not None
                old_u = self.u_applied_ if exact_old else old_sample.cost(lam)
                new_u = self._sample_cost(lam)
            else:
                old_u = self.curve_.costs_at(lam)
                new_u = new.costs_at(lam)
            # a cluster on which either curve costs nothing (a policy that never loads it) has no
            # ratio to re-base by: its theta stands (0 / 0 made it 0, and the QP's effective capacity
            # ``capacity / theta`` infinite: every tick fell back)
            rebased = self.theta_ * old_u / np.maximum(new_u, 1e-12)
            self.theta_ = np.where((old_u > 0) & (new_u > 0), rebased, self.theta_)
            if self.u_applied_ is not None:
                self.u_applied_ = new_u
        self.curve_, self.mode_ = new, mode
        if self.problem_ is None:
            self._build(new.cost[:, 0])

    def make_step(self, obs: Observation, forecast=None, response=None) -> Plan:
        """Update ``theta`` and the back-off, re-measure the curve, solve the QP warm, read off lambda.

        The plan carries the planned lambdas and loads over the horizon; ``plan.info`` the largest
        slack, ``theta``, the back-off and its target, OSQP's iterations and the curve's source.
        A status other than ``"ok"`` (no forecast, warming up, solver failure) leaves the decision
        to the Balancer's fallback.
        """
        ctx = self.ctx_
        self.lam_out_ = None
        if forecast is None:
            return Plan(lam=self.clip(obs.lam), controller=self.name, status="error: no forecast")
        lam_now = self.clip(np.asarray(obs.lam, dtype=float))
        if self.settings.response != "sample":  # only a telemetry curve reads these points
            self.telemetry_.observe(obs.qps, obs.load, lam_now)
        mode = self._mode(obs)
        if not mode:
            return Plan(lam=lam_now, controller=self.name, status="error: response='sample' but the tick has no features")
        if mode == "sample":
            self._pool(obs.features if response is None else response.features)
        elif not self.telemetry_.ready:
            return Plan(lam=lam_now, controller=self.name, status=(f"warming up: telemetry response has "
                        f"{len(self.telemetry_.points_)} of {self.telemetry_.min_ticks} ticks"))
        decided = lam_now if self.lam_applied_ is None else self.clip(self.lam_applied_)
        as_decided = bool(np.allclose(lam_now, decided, rtol=1e-9, atol=0.0))
        self._refresh_curve(lam_now, mode, as_decided=as_decided)
        curve, G, H = self.curve_, ctx.n_clusters, self.horizon
        steady = self._steadiness(obs.qps, lam_now, decided)
        self.qps_prev_, self.lam_prev_ = float(obs.qps), lam_now
        guard_raise = np.ones(G)  # cost per request at the decided lambda / at the applied one
        if not as_decided:
            # the nodes applied another lambda than decided (their guard raised it in a burst, or
            # they missed the update): the tick's load answers that lambda, not the plan's
            u_now = curve.costs_at(lam_now)
            u_dec = curve.costs_at(decided)
            guard_raise = np.maximum(u_dec, 1e-12) / np.maximum(u_now, 1e-12)
            self.u_applied_, self.u_exact_ = u_now, False
        # offset-free: the disturbance theta (measured / predicted load) is estimated with the same
        # model the plan uses (the frontier's cost at the applied lambda), so it absorbs every model
        # error: the true/estimated cost gap, cross-cluster effects, the lag. It is multiplicative
        # because cost errors are: a gap learned at night still holds at the peak or in a spike.
        u_last = self.u_applied_ if self.u_applied_ is not None else curve.costs_at(lam_now)
        target = self.settings.backoff_target if obs.over is not None else self.settings.backoff_target_load
        if obs.qps > 0:
            predicted = obs.qps * u_last / ctx.capacity
            ok = predicted > 1e-3
            ratio = np.where(ok, np.asarray(obs.load) / np.maximum(predicted, 1e-12), self.theta_)
            self.theta_ += self.settings.offset_gain * steady * (np.clip(ratio, 0.2, 5.0) - self.theta_)
            if self.planned_ is not None and self.ticks_ > 30 and self.qps_hi_ is not None:  # after the start-up transient
                s = self.settings
                if obs.over is not None:  # the nodes' own nu; else the tick's mean load (backoff_target_load)
                    e = obs.over
                else:
                    e = np.maximum(obs.load - ctx.target, 0.0) / ctx.target
                # a guard's nudge, or traffic a little over the upper band, scores the plan almost
                # fully; a burst, or the guard's raise that sheds it, not at all (module doc)
                # (traffic after a forecast of none, e.g. the return from an outage, is beyond any band)
                over_band = obs.qps / self.qps_hi_ if self.qps_hi_ > 0 else np.inf
                weight = (self._steady_share(np.abs(np.log(guard_raise)))
                          * log_share(max(float(np.log(over_band)), 0.0), s.backoff_burst_ratio))
                counted = self.feasible_ & (lam_now < ctx.lam_max * (1 - 1e-9))
                self.backoff_ = backoff_update(self.backoff_, e, counted, target, s.backoff_gain * weight,
                                               s.backoff_max, s.backoff_min)
        fr = [frontier_data(*curve.hull(g), self.settings.n_segments) for g in range(G)]
        u_min = np.array([f[0] for f in fr])
        mean, hi = np.asarray(forecast["mean"][:H], dtype=float), np.asarray(forecast["hi"][:H], dtype=float)
        if len(mean) < H:
            return Plan(lam=lam_now, controller=self.name, status=f"error: forecast has {len(mean)} steps, horizon is {H}")
        cap_eff = ctx.capacity / self.theta_
        data = MpcData(qps=mean, qps_hi=hi, capacity=cap_eff, target=ctx.target, offset=self.backoff_.copy(),
                       u_prev=u_last, u_min=u_min, widths=np.array([f[1] for f in fr]),
                       slopes=np.array([f[2] for f in fr]), qps_ref=self.qps_ref_)
        sol = self._solve(data)
        self.ticks_ += 1
        if not sol.ok:
            return Plan(lam=lam_now, controller=self.name, status=f"error: solver {sol.status}", solve_time_s=sol.solve_time_s)
        u0 = sol.u[:, 0]
        lam = self.clip(np.array([curve.lam_for_cost(g, u0[g]) for g in range(G)]))
        refine = (self.settings.refine_steps > 0 and self.sample_ is not None
                  and np.max(np.abs(np.log(lam / lam_now))) > np.log(self.settings.refine_above))
        if refine:
            lam = self._refine(lam, *self._refine_bound(u0, data, float(hi[0])))
        if mode == "telemetry" and self.settings.dither > 0:
            lam = self.clip(lam * np.exp(self.rng_.uniform(-self.settings.dither, self.settings.dither, G)))  # exploration
        if self.settings.max_fall is not None:
            # asymmetric slew limit: lambda may rise at once (shed load) but falls at most max_fall x per tick
            lam = np.maximum(lam, lam_now / self.settings.max_fall)
        if refine:
            self.u_applied_ = self._sample_cost(lam)  # measured on the sample, not interpolated
        else:
            self.u_applied_ = curve.costs_at(lam)
        self.lam_out_, self.u_exact_ = lam.copy(), bool(refine)
        lam_plan = np.stack([curve.lam_for_costs(g, sol.u[g]) for g in range(G)], axis=1)
        load_plan = hi[:, None] * sol.u.T / cap_eff[None, :]
        # what this plan predicts for the coming tick at the upper forecast: the back-off only adds what
        # the band does not already cover
        self.planned_ = hi[0] * self.u_applied_ / cap_eff
        self.feasible_ = sol.slack[:, 0] <= 1e-6 * self.u_scale_  # the plan meets C_m - b on the coming tick
        self.qps_hi_ = float(hi[0])
        return Plan(lam=lam, controller=self.name, status="ok", solve_time_s=sol.solve_time_s,
                    lam_plan=lam_plan, load_plan=load_plan,
                    info={"slack_max": float(np.max(sol.slack)), "theta": self.theta_.tolist(), "backoff": self.backoff_.tolist(),
                          "backoff_target": target, "iterations": sol.iterations, "response": mode})

    def _steadiness(self, qps: float, lam: np.ndarray, decided: np.ndarray) -> np.ndarray:
        """Per cluster, the share of ``theta``'s gain the tick just ended earns: 1 at steady state,
        0 once QPS or the applied lambda moved by ``steady_ratio`` or more since the tick before
        (``settings.steady_ratio``; on the first tick, the applied lambda against the decided one).
        A node guard's raise over the decided lambda counts as far as it moved the applied lambda:
        a floor the guards hold tick after tick is a steady operating point and the load answers
        it. (Counting the raise itself, ``theta`` could not learn while the guards held up a plan
        that ``theta``'s own error had made too low, and the two sustained each other: on nasa with
        bursts, seed 2, a prerank plan at about half its load for seven hours after an outage.)
        The lambdas are clipped, so positive."""
        if self.lam_prev_ is None:
            d = np.abs(np.log(lam / decided))
        else:
            d = np.abs(np.log(lam / self.lam_prev_))
        if self.qps_prev_ is not None and self.qps_prev_ > 0 and qps > 0:
            d = np.maximum(d, abs(np.log(qps / self.qps_prev_)))
        return self._steady_share(d)

    def _steady_share(self, d: np.ndarray) -> np.ndarray:
        """``1 - d / log(steady_ratio)`` clipped to ``[0, 1]``: the weight of a tick whose operating
        point moved by ``d`` in log (full at 0, none from ``log(steady_ratio)`` on)."""
        return log_share(d, self.settings.steady_ratio)

    def _sample_cost(self, lam: np.ndarray) -> np.ndarray:
        """Mean estimated cost per request of each cluster at ``lam`` on the curve's request pool."""
        return self.sample_.cost(lam)

    @staticmethod
    def _refine_bound(u0: np.ndarray, data: MpcData, qps_hi: float) -> tuple[np.ndarray, np.ndarray]:
        """The cost per request the refinement keeps each cluster under, and the clusters it may
        only raise: the planned ``u0``, except for a cluster whose plan takes all its curve offers
        (``u0`` at the frontier's ``u_max``, under its load cap). That frontier was measured with
        the other clusters' lambdas held, and once they move (a cluster's cost depends on every
        lambda when the policy's actions are joint) it can cost more than ``u_max`` within the
        plan's load budget. Held under ``u0``, it was bisected upward as if over its plan: with
        five clusters sharing joint actions the clusters far under ``C_m`` were raised 100-400x
        in one tick, every load collapsed to a few percent and the curves, each measured with the
        others' lambdas high, went flat (no way back). Its bound is its load cap,
        ``(C_m - b) capacity / qps_hi``, and its lambda is only raised, never set below the plan's:
        searched downward as well, it sank to the bracket's floor, where its own cost no longer
        changes but the other clusters' may (the worst nu of the noisy ``social`` stream rose by
        about 7%)."""
        top = u0 >= data.u_max - 1e-3 * (data.u_max - data.u_min)
        if not top.any():
            return u0, top
        cap = (data.target - data.offset) * data.capacity / max(qps_hi, 1e-9)
        return np.where(top, np.maximum(u0, cap), u0), top

    def _refine(self, lam: np.ndarray, u0: np.ndarray, raise_only: np.ndarray | None = None) -> np.ndarray:
        """Joint bisection in log lambda, within two grid steps either side of ``lam`` (the other
        clusters move too, so the per-cluster curve's own bracket may not hold), for the lambda whose
        cost on the sample is at most ``u0`` (the side that keeps the load plan). A lambda the curve
        put at the end of the grid is searched inward too: once the other clusters have moved, a
        smaller lambda may already reach ``u0`` (a spike raising every lambda at once).

        Each cluster's bracket is cut while the others move, so at the end one may sit above ``u0``
        at the joint point; up to two repair passes then bisect only those clusters upward, the
        others held. ``raise_only``: clusters whose lambda is searched from ``lam`` upward only
        (kept at ``lam`` while their cost there is within ``u0``)."""
        grid = self.grid_
        r2 = (grid[1] / grid[0]) ** 2
        lo, hi = np.maximum(lam / r2, grid[0]), np.minimum(lam * r2, grid[-1])
        if raise_only is not None and raise_only.any():
            keep = raise_only & (self._sample_cost(lam) <= u0)
            lo = np.where(raise_only, np.maximum(lam, grid[0]), lo)
            hi = np.where(keep, lo, hi)  # within its bound at the plan's lambda: nothing to search
        active = np.ones(len(lam), dtype=bool)
        for _ in range(3):
            for _ in range(self.settings.refine_steps):
                mid = np.where(active, np.sqrt(lo * hi), hi)
                over = self._sample_cost(mid) > u0
                lo, hi = np.where(active & over, mid, lo), np.where(active & ~over, mid, hi)
            active = (self._sample_cost(hi) > u0) & (hi < grid[-1])
            if not active.any():
                break
            lo, hi = hi.copy(), np.where(active, np.minimum(hi * r2, grid[-1]), hi)
        return hi

    def notify_applied(self, lam: np.ndarray) -> None:
        """The Balancer applied ``lam`` (possibly clamped, rate-limited, or from a fallback)."""
        self.lam_applied_ = np.asarray(lam, dtype=float).copy()
        if self.lam_out_ is not None and np.allclose(lam, self.lam_out_, rtol=1e-9, atol=0.0):
            return  # applied as planned: u_applied_ and planned_ stand
        if self.curve_ is not None:
            u = self.curve_.costs_at(lam)
            if self.u_applied_ is not None and not np.allclose(u, self.u_applied_, rtol=1e-3):
                self.planned_ = None  # rate-limited or overridden: this tick does not score the plan
            self.u_applied_, self.u_exact_ = u, False

    def state_dict(self) -> dict:
        """``theta``, the back-off, the applied and planned costs, the request pool, the curve, the
        telemetry model, the dither's generator and OSQP's warm start, as JSON-able values."""
        arr = lambda a: None if a is None else np.asarray(a).tolist()  # noqa: E731
        c = self.curve_
        return {"theta": self.theta_.tolist(), "ticks": self.ticks_, "u_applied": arr(self.u_applied_),
                "planned": arr(self.planned_), "feasible": self.feasible_.tolist(), "u_exact": self.u_exact_,
                "lam_applied": arr(self.lam_applied_),
                "backoff": self.backoff_.tolist(), "qps_hi": self.qps_hi_, "qps_prev": self.qps_prev_,
                "lam_prev": arr(self.lam_prev_),
                "pool": [p.tolist() for p in self.pool_], "curve_pool": None if self.sample_ is None else self.sample_.features.tolist(),
                "mode": self.mode_, "u_scale": arr(self.u_scale_), "telemetry": self.telemetry_.state_dict(),
                "rng": self.rng_.bit_generator.state,
                "warm_start": None if self.solver_ is None else self.solver_.warm_state(),
                "curve": None if c is None else {"lam_grid": c.lam_grid.tolist(), "cost": c.cost.tolist(), "revenue": c.revenue.tolist()}}

    def load_state_dict(self, d: dict) -> None:
        """Restore :meth:`state_dict` into a controller set up with the same context."""
        opt = lambda a: None if a is None else np.asarray(a, dtype=float)  # noqa: E731
        self.theta_ = np.asarray(d["theta"], dtype=float)
        self.ticks_ = int(d["ticks"])
        self.u_applied_, self.planned_ = opt(d["u_applied"]), opt(d["planned"])
        feasible = d.get("feasible", [True] * self.ctx_.n_clusters)  # checkpoints before it: every plan feasible
        if not (isinstance(feasible, list) and len(feasible) == self.ctx_.n_clusters
                and all(isinstance(f, bool) for f in feasible)):
            raise ValueError(f"feasible must be a list of {self.ctx_.n_clusters} booleans, got {feasible!r}")
        self.feasible_ = np.array(feasible, dtype=bool)
        self.u_exact_ = bool(d.get("u_exact", False))
        self.lam_applied_ = opt(d.get("lam_applied"))
        self.qps_hi_ = d.get("qps_hi")
        self.qps_prev_, self.lam_prev_ = d.get("qps_prev"), opt(d.get("lam_prev"))
        self.backoff_ = np.asarray(d["backoff"], dtype=float)
        self.pool_ = deque(np.asarray(p, dtype=float) for p in d["pool"])
        cp = d["curve_pool"]
        self.sample_ = None if cp is None else Response(self.ctx_.policy, np.asarray(cp, dtype=float), max_requests=None)
        self.mode_ = d["mode"]
        self.telemetry_.load_state_dict(d["telemetry"])
        self.rng_.bit_generator.state = d["rng"]
        if d["u_scale"] is not None:
            self._build(np.asarray(d["u_scale"], dtype=float))
        else:  # not built yet in the checkpoint: drop whatever this controller had built
            self.problem_ = self.solver_ = self.u_scale_ = None
        if d["warm_start"] is not None:
            try:
                self.solver_.load_warm_state(d["warm_start"])
            except ValueError as e:  # the QP's size is the settings': say which, not only the shapes
                raise ValueError(f"warm_start: {e} (the checkpoint was written by an MPC with another horizon, "
                                 f"frontier or n_segments than this one's horizon={self.settings.horizon}, "
                                 f"frontier={self.settings.frontier!r}, n_segments={self.settings.n_segments}; "
                                 "restore into one created with the same settings)") from None
        c = d["curve"]
        self.curve_ = None if c is None else ResponseCurve(np.asarray(c["lam_grid"]), np.asarray(c["cost"]), np.asarray(c["revenue"]))
