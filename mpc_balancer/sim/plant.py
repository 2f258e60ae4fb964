"""The plant: one cluster per stage, with capacity, lagged and noisy load, true costs that differ
from the controller's estimate, and degradation under overload.

Per tick, for the requests' chosen joint actions ``a_i``:

* true cost ``cost_true[g, a] = cost_est[g, a] * bias_g * (1 + drift * sin(2 pi t / day + phase_g))``;
* demand load ``D_g = qps * mean_i cost_true[g, a_i] / capacity_g`` (1.0 = all cores busy);
* measured load follows with a first-order lag and multiplicative noise:
  ``L_g <- e^(-period/lag) L_g + (1 - e^(-period/lag)) D_g``, reported as ``L_g (1 + eps)``;
* overload: of a cluster's requests a fraction ``1 - 1/L`` (when ``L > 1``) cannot be served at
  their chosen action and is *degraded* (that stage runs its cheapest action; revenue is lost),
  and a fraction ``1 - drop_load/L`` (when ``L > drop_load``) is *dropped* (no revenue). Each
  request is counted once: served, degraded (at one or more stages) or dropped.

Defaults size capacity so that compute is scarce at peaks and plentiful at night: the
unconstrained allocation (the exact oracle at the smallest lambda, averaged over a day of
requests) at the trace's peak rate would need ``scarcity`` times ``C_m`` (14x), so at a
fourteenth of the peak rate it just fills ``C_m``; where a cluster's cost range is narrower, its
capacity is raised so that the cheapest allocation still fits at the peak (``peak_fit`` x ``C_m``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from policies.cascade import Cascade


@dataclass(frozen=True)
class PlantConfig:
    """The plant's settings (``--set plant.KEY=VALUE``, a config file's ``[plant]`` table).

    ``target_load``
        C_m: the load budget, a fraction of capacity, in (0, 1.5].
    ``scarcity``
        Demand of the unconstrained allocation at the trace's peak QPS, in units of C_m; in
        [1, 100]. Below 1 compute is not scarce even at the peak (every controller serves the
        unconstrained allocation: nothing to balance); above 100 the unconstrained allocation
        would cost a hundred times the budget, a cost range beyond any cascade's. Where
        ``peak_fit`` binds (for the shipped cascade: every cluster above about 18) a larger
        value changes nothing.
    ``peak_fit``
        ... but never so little capacity that the cheapest allocation needs more than this x C_m
        at the peak; in [0.01, 100] (0 sized an infinite capacity).
    ``capacity``
        Explicit capacity per cluster (CPU-ms per second), instead of the sizing from
        ``scarcity`` and ``peak_fit``: given with either of them set to another value than its
        default, the combination is an error (one of the two would be ignored).
    ``lag_s``
        Time constant of the load's first-order lag, seconds (0: none).
    ``load_noise``
        Relative standard deviation of the load meter: a reading is ``L (1 + load_noise N(0, 1))``;
        in [0, 0.2]. Above it readings below zero are no longer rare (at 0.3, 3 ticks a day; at 1,
        16% of the readings), and the Balancer holds its last lambda on every such sensor fault.
    ``cost_bias``
        True cost / estimated cost, per cluster.
    ``cost_drift``
        Amplitude of the daily drift of true costs, below 1.
    ``drop_load``
        The load above which requests are dropped, above 1.
    """

    target_load: float = 0.9  # C_m: the load budget, a fraction of capacity
    scarcity: float = 14.0  # demand of the unconstrained allocation at peak QPS, in units of C_m
    peak_fit: float = 0.8  # ... but never so little capacity that the cheapest allocation needs more than this x C_m at peak
    capacity: tuple | None = None  # explicit capacity per cluster (CPU-ms per second), instead of scarcity and peak_fit
    lag_s: float = 30.0
    load_noise: float = 0.01  # relative noise of the load meter, in [0, 0.2]
    cost_bias: tuple = (1.08, 0.94, 1.05)  # true cost / estimated cost, per cluster
    cost_drift: float = 0.05  # amplitude of the daily drift of true costs
    drop_load: float = 1.3

    def __post_init__(self):
        """Check every field; each error names ``plant.FIELD`` and the value.

        A value of the wrong type (``--set plant.capacity=abc``, ``plant.target_load=true``,
        ``plant.lag_s=[1,2,3]``, ``plant.lag_s=null``) is refused here, not by numpy's conversion or
        a comparison deep in the plant or the node guard; ``cost_drift`` must stay below 1, or the true cost per request
        ``bias (1 + drift sin(.))`` turns negative for part of each day (negative loads)."""
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None and f.name == "capacity":  # the only optional field: sized from scarcity
                continue
            per_cluster = f.name in ("capacity", "cost_bias")
            items = v if per_cluster and isinstance(v, (tuple, list)) else (v,)
            if any(isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) for x in items):
                want = "a number or a list of numbers, one per cluster" if per_cluster else "a number"
                raise ValueError(f"plant.{f.name} must be {want}, got {v!r}")
            arr = np.atleast_1d(np.asarray(v, dtype=float))
            if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise ValueError(f"plant.{f.name} must be finite and >= 0, got {v!r}")
        if self.cost_drift >= 1:
            raise ValueError(f"plant.cost_drift must be < 1 (the true cost bias (1 + drift sin) would turn negative), "
                             f"got {self.cost_drift!r}")
        if not 0 < self.target_load <= 1.5:
            raise ValueError(f"plant.target_load (C_m) must be in (0, 1.5], got {self.target_load!r}")
        for name, low, high, what in (  # the settings with a physical range (see the class doc)
                ("scarcity", 1.0, 100.0, "demand of the unconstrained allocation at the peak, in units of C_m: "
                                         "below 1 compute is never scarce"),
                ("peak_fit", 0.01, 100.0, "demand of the cheapest allocation at the peak, in units of C_m"),
                ("load_noise", 0.0, 0.2, "relative noise of the load meter: above 0.2 readings below zero are "
                                         "no longer rare")):
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"plant.{name} must be in [{low:g}, {high:g}] ({what}), got {getattr(self, name)!r}")
        if self.capacity is not None:
            # an explicit capacity replaces the sizing: a scarcity or peak_fit given beside it would be ignored
            # (the defaults are what `config show` lists, so they may stand beside it)
            moved = [f"plant.{f.name} = {getattr(self, f.name)!r}" for f in fields(self)
                     if f.name in ("scarcity", "peak_fit") and getattr(self, f.name) != f.default]
            if moved:
                raise ValueError(f"plant.capacity = {self.capacity!r} is given with {' and '.join(moved)}: an explicit "
                                 "capacity replaces the sizing from scarcity and peak_fit (which would be ignored); "
                                 "give one or the other")
        if self.drop_load <= 1:
            raise ValueError(f"plant.drop_load must be > 1, got {self.drop_load!r}")

    @classmethod
    def from_dict(cls, d: dict) -> PlantConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown plant config keys: {sorted(unknown)} (known: {sorted(known)})")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class TickOutcome:
    load: np.ndarray  # measured load per cluster
    true_load: np.ndarray  # noise-free lagged load
    demand: np.ndarray  # instantaneous demand load
    revenue: float
    served: int
    degraded: int
    dropped: int
    degraded_by_cluster: np.ndarray = field(default_factory=lambda: np.zeros(0))
    actions: np.ndarray | None = None  # the sampled requests' joint actions as served (after degradation)
    shed: np.ndarray | None = None  # which sampled requests were dropped (bool)


def unconstrained_cost(cascade: Cascade, n: int = 4096, lam: float = 1e-5) -> np.ndarray:
    """Mean estimated cost per request per cluster of the exact oracle at ``lam`` over a day of requests."""
    from policies.oracle import OraclePolicy

    rng = np.random.default_rng(12345)
    x = cascade.sample_features(n, rng.uniform(0, 24, n), rng)
    a = OraclePolicy(cascade).act(x, np.full(len(cascade.clusters), lam))
    return cascade.cost[:, a].mean(axis=1)


@dataclass(frozen=True)
class ServedActions:
    """What one set of chosen actions gives the plant whatever the load: the mean estimated cost per
    request per cluster, and each request's expected revenue at its action (and their sum)."""

    actions: np.ndarray  # (n,) joint action of each request
    mean_cost: np.ndarray  # (G,)
    revenue: np.ndarray  # (n,)
    revenue_sum: np.float64

    @property
    def revenue_per_request(self) -> float:
        return float(self.revenue_sum) / max(len(self.actions), 1)


class Plant:
    """The clusters. ``step`` advances one tick; all randomness comes from the arrays passed in,
    so every controller of a comparison sees the same noise."""

    def __init__(self, cascade: Cascade, config: PlantConfig, peak_qps: float, period_s: float):
        self.cascade, self.config, self.period_s = cascade, config, float(period_s)
        G = len(cascade.clusters)
        if len(config.cost_bias) != G:
            raise ValueError(f"plant.cost_bias needs {G} values (one per cluster), got {config.cost_bias!r}")
        if config.capacity is not None:
            cap = np.asarray(config.capacity, dtype=float)
            if cap.shape != (G,) or np.any(cap <= 0):
                raise ValueError(f"plant.capacity needs {G} positive values, got {config.capacity!r}")
        else:
            need = np.maximum(unconstrained_cost(cascade) / config.scarcity, cascade.cost.min(axis=1) / config.peak_fit)
            cap = peak_qps * need * np.asarray(config.cost_bias) / config.target_load
        self.capacity = cap
        self.target = np.full(G, config.target_load)
        self.bias = np.asarray(config.cost_bias, dtype=float)
        self._alphas: dict = {}  # lag_alpha per dt_s (every sub-tick asks for the same one)
        self.alpha = self.lag_alpha(self.period_s)
        self.phase = np.linspace(0, np.pi, G)
        self.reset()

    def reset(self, load: np.ndarray | None = None):
        self.load = np.zeros(len(self.capacity)) if load is None else np.asarray(load, dtype=float).copy()

    def cost_factor(self, t_seconds: float) -> np.ndarray:
        """True / estimated cost per cluster at time ``t_seconds`` (seconds since midnight ok)."""
        return self.bias * (1 + self.config.cost_drift * np.sin(2 * np.pi * t_seconds / 86400.0 + self.phase))

    def lag_alpha(self, dt_s: float) -> float:
        """Share of the load kept over ``dt_s`` seconds: ``L <- alpha L + (1 - alpha) D``."""
        alpha = self._alphas.get(dt_s)
        if alpha is None:
            alpha = self._alphas[dt_s] = float(np.exp(-dt_s / self.config.lag_s)) if self.config.lag_s > 0 else 0.0
        return alpha

    def served(self, actions: np.ndarray, weights: np.ndarray) -> ServedActions:
        """The load-independent part of :meth:`step` for ``actions`` on requests of revenue ``weights``."""
        rev = self.cascade.expected_revenue_w(weights, actions)
        return ServedActions(actions=actions, mean_cost=self.cascade.cost[:, actions].mean(axis=1), revenue=rev,
                             revenue_sum=rev.sum())

    def _next_load(self, qps, served: ServedActions, t_seconds: float, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """(demand load, lagged load) after a step at ``qps`` with ``served``'s actions (the module
        doc's formulas); the plant's state is left to the caller."""
        demand = qps * served.mean_cost * self.cost_factor(t_seconds) / self.capacity
        return demand, alpha * self.load + (1 - alpha) * demand

    def step_while_calm(self, arrivals: np.ndarray, dt_s: float, t_seconds: float, served: ServedActions,
                        limit: np.ndarray, start: int = 0) -> tuple[np.ndarray, list]:
        """Advance sub-ticks ``start, start + 1, ...`` of a tick (``arrivals``: one count per sub-tick
        of ``dt_s`` seconds, sub-tick ``j`` starting at ``t_seconds + j dt_s``) at one set of
        ``served`` actions for as long as the load stays at or under ``limit`` (per cluster) and
        under 1: the sub-ticks where :meth:`step` degrades and drops nothing. Stops before the
        first sub-tick that would go over either (or be NaN), leaving that one to :meth:`step`.

        Returns the loads of the sub-ticks advanced ((m, G), m possibly 0) and their revenues
        (m floats): the very numbers (same floating-point steps) :meth:`step` gives them.
        """
        alpha = self.lag_alpha(dt_s)
        bound = np.minimum(np.asarray(limit, dtype=float), 1.0)
        n = max(len(served.actions), 1)
        loads, revenue = [], []
        for j in range(start, len(arrivals)):
            _, L = self._next_load(arrivals[j] / dt_s, served, t_seconds + j * dt_s, alpha)
            if not (L <= bound).all():
                break
            self.load = L
            loads.append(L)
            revenue.append(float(served.revenue_sum * int(arrivals[j]) / n))
        return (np.array(loads) if loads else np.empty((0, len(self.capacity)))), revenue

    def step(self, qps: float, arrivals: int, actions: np.ndarray, weights: np.ndarray, t_seconds: float,
             u: np.ndarray, noise: np.ndarray, dt_s: float | None = None, served: ServedActions | None = None) -> TickOutcome:
        """Advance ``dt_s`` seconds (default: one control period) at ``qps`` with the requests'
        chosen ``actions``; ``arrivals`` requests arrive in that time.

        ``served`` (:meth:`served` of these ``actions`` and ``weights``) holds what depends only on
        them (their mean estimated cost and revenue), computed once when several sub-ticks serve
        the same actions: the very numbers the step computes without it."""
        cas = self.cascade
        if served is None:
            served = self.served(actions, weights)
        demand, self.load = self._next_load(qps, served, t_seconds, self.alpha if dt_s is None else self.lag_alpha(dt_s))
        L = self.load
        n = len(actions)
        if (L > 1).any():  # overload (drop_load > 1: no drop without it)
            deg_frac = np.where(L > 1, 1 - 1 / np.maximum(L, 1e-12), 0.0)
            drop_frac = np.where(L > self.config.drop_load, 1 - self.config.drop_load / np.maximum(L, 1e-12), 0.0)
            # the same (late-in-queue) requests are the first to be shed at every cluster: rank by u
            dropped = u < drop_frac.max()
            deg_mask = (u[:, None] < deg_frac[None, :]) & ~dropped[:, None]
            final = actions
            if deg_mask.any():
                final = actions.copy()
                for g in range(len(L)):
                    rows = np.flatnonzero(deg_mask[:, g])
                    if rows.size:
                        final[rows] = cas.degrade(final[rows], g)
            rev = cas.expected_revenue_w(weights, final) if final is not actions else served.revenue.copy()
            rev[dropped] = 0.0
            rev_sum = rev.sum()
            # counts: rounding the cumulative fractions keeps served + degraded + dropped == arrivals
            n_drop = int(round(arrivals * float(drop_frac.max())))
            n_deg = int(round(arrivals * float(deg_frac.max()))) - n_drop
        else:  # every request is served at its chosen action
            deg_frac = np.zeros(len(L))
            rev_sum = served.revenue_sum
            final, dropped = actions, np.zeros(n, dtype=bool)
            n_drop = n_deg = 0
        return TickOutcome(
            load=L * (1 + self.config.load_noise * noise),
            true_load=L.copy(),
            demand=demand,
            revenue=float(rev_sum * arrivals / max(n, 1)),
            served=arrivals - n_drop - n_deg,
            degraded=n_deg,
            dropped=n_drop,
            degraded_by_cluster=deg_frac,
            actions=final,
            shed=dropped,
        )
