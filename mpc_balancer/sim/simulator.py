"""The closed-loop simulator: traffic -> controller -> policy -> plant -> telemetry, every tick.

Each tick ``n_requests`` sampled requests stand for all arrivals of the tick (revenue and costs
are scaled by ``arrivals / n_requests``). By default (``sampling="stratified"``) the sample is a
Latin hypercube over the request distribution, so its mean cost is close to the mean over the
tick's real arrivals (at 20,000 QPS, 1.2 million requests a minute); ``sampling="iid"`` draws
independent requests, whose sample mean alone moves the load by 1-3% from tick to tick (more
at high lambda), noise no system at that volume sees. Every random draw of the environment (arrivals, request
features, which requests are shed first, load noise) comes from one generator seeded by ``seed``
and is drawn in the same order whatever the controller does, so all runs of one comparison see the
same traffic and the same request samples.

Metrics (MaRCA's): per cluster ``mu = mean_t min(L_t, C_m) / C_m`` and
``nu = mean_t max(L_t - C_m, 0) / C_m`` on the plant's true load (controllers see it through a
noisy sensor; the sensor's noise is not over-utilisation), over ticks with traffic (no controller
can load a cluster during an outage), total revenue, degraded % (requests not served at their chosen action: degraded
or dropped), dropped %, and the lambda trajectory in the per-tick log.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from policies.cascade import Cascade

from ..balancer import Balancer, Decision
from ..controllers.base import ControlContext, Controller
from ..controllers.hindsight import Clairvoyance
from ..guard import GUARD_SETTINGS, NodeGuard, check_rule_settings
from ..telemetry import Telemetry
from ..traffic import Traffic
from .disturbances import Disturbances
from .plant import Plant, PlantConfig, ServedActions

SAMPLINGS = ("stratified", "iid")
MIN_SUBTICK_S = 0.05  # the shortest sub-tick (the default 12 at the shortest period, 1 s, is 0.083 s)


@dataclass
class SimResult:
    controller: str
    log: pd.DataFrame
    clusters: tuple[str, ...]
    target: np.ndarray
    wall_s: float
    subtick_load: np.ndarray | None = None  # (ticks, subticks, clusters) true load at the end of every sub-tick
    subtick_arrivals: np.ndarray | None = None  # (ticks, subticks)
    extra: dict = field(default_factory=dict)

    def _mu_nu(self, L: np.ndarray) -> dict:
        """Per cluster mu and nu of loads ``L`` (samples, clusters)."""
        per = {}
        for g, name in enumerate(self.clusters):
            x, cm = L[:, g], self.target[g]
            per[name] = {"mu": float(np.mean(np.minimum(x, cm)) / cm) if x.size else float("nan"),
                         "nu": float(np.mean(np.maximum(x - cm, 0)) / cm) if x.size else float("nan")}
        return per

    def metrics(self) -> dict:
        """MaRCA's figures. ``mu``, ``nu`` and ``clusters`` are measured per sub-tick (what the
        nodes see); ``tick_mu``, ``tick_nu`` and ``tick_clusters`` on each tick's mean load."""
        log = self.log
        active = log["arrivals"].to_numpy() > 0
        tick = self._mu_nu(np.stack([log[f"true_load_{c}"].to_numpy()[active] for c in self.clusters], axis=1))
        if self.subtick_load is not None:
            on = self.subtick_arrivals > 0
            per = self._mu_nu(self.subtick_load[on])
        else:
            per = tick
        arrivals = int(log["arrivals"].sum())
        guard = {}
        if "guard_cost" in log:
            revenue = float(log["revenue"].sum())
            guard = {"guard_cost": float(log["guard_cost"].sum()),
                     "guard_cost_pct": 100.0 * float(log["guard_cost"].sum()) / revenue if revenue > 0 else 0.0,
                     "guard_subticks": {c: int(log[f"guard_subticks_{c}"].sum()) for c in self.clusters}}
        return {
            "controller": self.controller,
            "revenue": float(log["revenue"].sum()),
            "mu": float(np.mean([per[c]["mu"] for c in self.clusters])),
            "nu": float(np.mean([per[c]["nu"] for c in self.clusters])),
            "clusters": per,
            "tick_mu": float(np.mean([tick[c]["mu"] for c in self.clusters])),
            "tick_nu": float(np.mean([tick[c]["nu"] for c in self.clusters])),
            "tick_clusters": tick,
            **guard,
            "degraded_pct": 100.0 * float(log["degraded"].sum() + log["dropped"].sum()) / max(arrivals, 1),
            "dropped_pct": 100.0 * float(log["dropped"].sum()) / max(arrivals, 1),
            "arrivals": arrivals,
            "wall_s": self.wall_s,
            **self.extra,
        }

    def to_csv(self, path: str | Path) -> None:
        self.log.to_csv(path, index_label="time")

    def plot(self, path: str | Path) -> None:
        from .plotting import plot_run

        plot_run(self, path)


class Simulator:
    """Closed loop over a window of a trace. Construct once per comparison; ``run`` per controller."""

    def __init__(self, traffic: Traffic, cascade: Cascade | None = None, plant: PlantConfig | None = None,
                 n_requests: int = 1000, seed: int = 0, days: float | None = 7.0, start=None,
                 response_requests: int = 256, sampling: str = "stratified", subticks: int = 12,
                 guard: str | dict = "proportional", disturbances: Disturbances | None = None, outcomes=None):
        if not (isinstance(subticks, (int, np.integer)) and subticks >= 1):
            raise ValueError(f"subticks must be an integer >= 1, got {subticks!r}")
        if traffic.period_s / subticks < MIN_SUBTICK_S:  # (100,000 at 60 s ran for minutes, then out of memory)
            raise ValueError(f"subticks must leave sub-ticks of at least {MIN_SUBTICK_S:g} s: at most "
                             f"{int(traffic.period_s / MIN_SUBTICK_S)} at a {traffic.period_s:g} s period, got {subticks}")
        self.subticks = int(subticks)
        self.guard = {"rule": guard} if isinstance(guard, str) else dict(guard)
        unknown = set(self.guard) - GUARD_SETTINGS
        if unknown:
            raise ValueError(f"unknown guard settings {sorted(unknown)} (known: {sorted(GUARD_SETTINGS)})")
        NodeGuard(target=(1.0,), **self.guard)  # validate early
        check_rule_settings(self.guard)  # a setting the rule does not read (--guard none --set guard.gain=4)
        self.disturbances = disturbances or Disturbances()
        self.outcomes = outcomes  # optional per-request outcome recorder (mpc_balancer.sim.outcomes.AdOutcomes)
        if n_requests < 1:
            raise ValueError(f"n_requests must be >= 1, got {n_requests!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        self.sampling = sampling
        self.traffic, self.cascade = traffic, cascade or Cascade()
        self.plant_config = plant or PlantConfig()
        self.n_requests, self.seed, self.response_requests = int(n_requests), int(seed), int(response_requests)
        self.history, self.window = traffic.window(days, start)
        self.times = traffic.times[self.window]
        # the rate of every sub-tick relative to its tick's trace rate: the trace's shape inside the
        # tick times the injected bursts and outages (whose mean moves the tick's own traffic)
        self.profile = traffic.subtick_shape(self.window, self.subticks) * self.disturbances.multiplier(
            len(self.times), traffic.period_s, self.subticks)

    def context(self, policy) -> ControlContext:
        plant = self.make_plant()
        return ControlContext(clusters=tuple(self.cascade.clusters), policy=policy, target=plant.target.copy(),
                              capacity=plant.capacity.copy(),
                              period_s=self.traffic.period_s, history_qps=self.traffic.rate_qps[self.history],
                              history_times=self.traffic.times[self.history],
                              simulate_history=lambda controller, days: self.history_run(controller, policy, days).log)

    def history_run(self, controller, policy, days: float) -> SimResult:
        """Closed loop over the last ``days`` of the history window (what precedes the evaluated one)."""
        if self.history.stop == 0:
            raise ValueError("no history before the simulated window: use a later --start or fewer --days")
        start = self.traffic.times[max(self.history.stop - int(round(days * 86400 / self.traffic.period_s)), 0)]
        hist_days = (self.traffic.times[self.history.stop - 1] - start).total_seconds() / 86400.0
        sim = Simulator(self.traffic, cascade=self.cascade, plant=self.plant_config, n_requests=self.n_requests,
                        seed=self.seed + 1000, days=hist_days, start=start, response_requests=self.response_requests,
                        sampling=self.sampling, subticks=self.subticks, guard=self.guard)
        return sim.run(controller, policy)

    def balancer(self, controller: Controller, forecaster=None) -> Balancer:
        """A Balancer for a simulated run: no wall-clock time budget, so that a run's decisions do
        not depend on how fast or how busy the machine is (a deployment sets ``time_budget_s``)."""
        return Balancer(controller, forecaster=forecaster, response_requests=self.response_requests, time_budget_s=float("inf"))

    def make_plant(self) -> Plant:
        return Plant(self.cascade, self.plant_config, peak_qps=self.traffic.peak_qps, period_s=self.traffic.period_s)

    def environment(self):
        """Yield per-tick (arrivals, features, shed order u, load noise), identical for every run."""
        rng = np.random.default_rng(self.seed)
        arrivals = self.traffic.arrivals(self.window, rng, factor=self.profile.mean(axis=1))
        hours = (self.times.hour + self.times.minute / 60.0 + self.times.second / 3600.0).to_numpy()
        G = len(self.cascade.clusters)
        for k in range(len(arrivals)):
            x = self.cascade.sample_features(self.n_requests, hours[k], rng, stratified=self.sampling == "stratified")
            x.setflags(write=False)  # read-only: the policy caches its work on the sample (plant, then controller)
            yield int(arrivals[k]), x, rng.random(self.n_requests), rng.standard_normal(G)

    def run(self, controller: Controller | Balancer, policy, progress: bool = False, initial_lam: float = 0.01,
            faults=None) -> SimResult:
        """Close the loop over the window with ``controller`` (wrapped in a default :class:`Balancer`
        unless one is given) and ``policy``: its ``act(features, lam)`` serves the requests (the
        plant), its ``respond(features, lam)`` is all the controller sees of them (the policy
        protocol). The cascade's ground truth drives the plant and the metrics only; the
        clairvoyant hindsight limit alone is shown the coming tick. ``faults`` (a
        :class:`mpc_balancer.sim.faults.Injector`) may alter the telemetry the Balancer receives, the
        lambda the nodes apply, and replace the Balancer (a restart from a checkpoint)."""
        cas, plant = self.cascade, self.make_plant()
        # a Controller is wrapped in a simulated-run Balancer; a Balancer (or anything with its setup/step/controller/
        # counts_/ctx_, such as the fleet replay's remote one) is used as it is
        balancer = self.balancer(controller) if isinstance(controller, Controller) else controller
        name = balancer.controller.name
        balancer.setup(self.context(policy), initial_lam=initial_lam)
        clairvoyant = balancer.controller.clairvoyant
        G, T, period = len(cas.clusters), len(self.times), self.traffic.period_s
        lam = np.full(G, initial_lam)
        cols = {k: np.zeros(T) for k in ("qps", "arrivals", "revenue", "served", "degraded", "dropped", "solve_ms")}
        lam_log, load_log, true_log = np.zeros((T, G)), np.zeros((T, G)), np.zeros((T, G))
        plan_log = np.full((T, G), np.nan)  # the controller's planned load for this tick, where it plans
        backoff_log = np.full((T, G), np.nan)  # the MPC's back-off (load margin under C_m)
        extra: dict = {}
        acted = np.empty(T, dtype=object)
        # warm start: the plant's load before the window, as if the policy ran at initial_lam
        qps0 = float(self.traffic.rate_qps[self.window][0])
        prev_x = cas.sample_features(self.n_requests, float(self.times[0].hour), np.random.default_rng(self.seed + 1),
                                     stratified=self.sampling == "stratified")
        plant.reset(qps0 * cas.cost[:, policy.act(prev_x, lam)].mean(axis=1) * plant.cost_factor(0) / plant.capacity)
        tel = Telemetry(time=self.times[0] - pd.Timedelta(seconds=period), qps=qps0, load=plant.load.copy(),
                        lam=lam.copy(), features=prev_x)
        it = self.environment()
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=T, desc=name, unit="tick", leave=False, mininterval=0.5)
        N = self.subticks
        dt = period / N
        guard = NodeGuard(target=plant.target, lam_max=balancer.ctx_.lam_max, **self.guard)
        sub_load, sub_arrivals = np.zeros((T, N, G)), np.zeros((T, N), dtype=np.int64)
        guard_cost, guard_subticks = np.zeros(T), np.zeros((T, G), dtype=np.int64)
        held = lam.copy()  # the lambda the nodes hold (the last decided and applied one)
        ads = None if self.outcomes is None else self.outcomes.recorder(T)
        day_s = (self.times.hour * 3600 + self.times.minute * 60 + self.times.second).to_numpy()  # seconds since midnight
        t0 = time.perf_counter()
        for k, (arrivals, x, u, noise) in enumerate(it):
            tsec = float(day_s[k])
            split = split_arrivals(arrivals, self.profile[k])
            if clairvoyant:
                balancer.controller.foresee(Clairvoyance(qps=arrivals / period, features=x, cost_factor=plant.cost_factor(tsec),
                                                         load=plant.load.copy(), lag_alpha=plant.alpha,
                                                         subtick_qps=split / dt, subtick_alpha=plant.lag_alpha(dt)))
            s0 = time.perf_counter()
            if faults is None:
                dec: Decision | None = balancer.step(tel)
            else:
                balancer = faults.restart(k, balancer)
                report = faults.telemetry(k, tel)
                dec = None if report is None else balancer.step(report)  # None: no report this tick
            cols["solve_ms"][k] = (time.perf_counter() - s0) * 1e3
            w = cas.weights(x)
            decided = held if dec is None else dec.lam_vector  # without a decision the nodes keep their lambda
            lam_c = held = decided if faults is None else faults.applied(k, decided, held)
            serve = TickActions(policy, plant, x, w)
            log_lam = np.zeros(G)
            tick = {"revenue": 0.0, "served": 0, "degraded": 0, "dropped": 0}
            j = 0
            while j < N:
                lam_j = guard.apply(lam_c)
                sv = serve.at(lam_j)
                if ads is None and not guard.floor.any():
                    # the guard idle: the sub-ticks that stay under C_m and 1 in one go (the same numbers)
                    calm, revenues = plant.step_while_calm(split, dt, tsec, sv, guard.target, start=j)
                    if len(calm):
                        m = len(calm)
                        guard.observe_many(calm)
                        sub_load[k, j:j + m] = calm
                        for r in revenues:
                            tick["revenue"] += r
                        tick["served"] += int(split[j:j + m].sum())
                        log_one = np.log(lam_j)
                        for _ in range(m):
                            log_lam = log_lam + log_one
                        j += m
                        if j == N:
                            break
                out = plant.step(split[j] / dt, int(split[j]), sv.actions, w, tsec + j * dt, u, noise, dt_s=dt, served=sv)
                guard.observe(out.true_load)
                if ads is not None:
                    ads.observe(k, x, w, out, int(split[j]))
                on = guard.active
                if on.any():  # what the guard's downgrade gave up on these requests (no overload counted)
                    central = serve.at(lam_c)
                    guard_cost[k] += (central.revenue_per_request - sv.revenue_per_request) * split[j]
                    guard_subticks[k] += on
                sub_load[k, j], log_lam = out.true_load, log_lam + np.log(lam_j)
                for f in tick:
                    tick[f] += getattr(out, f)
                j += 1
            # the lambda the nodes applied over the tick (geometric mean over its sub-ticks)
            lam = np.exp(log_lam / N) if guard_subticks[k].any() else lam_c
            true_tick = sub_load[k].mean(axis=0)
            measured = true_tick * (1 + plant.config.load_noise * noise)
            sub_arrivals[k] = split
            qps = arrivals / period
            cols["qps"][k], cols["arrivals"][k], cols["revenue"][k] = qps, arrivals, tick["revenue"]
            cols["served"][k], cols["degraded"][k], cols["dropped"][k] = tick["served"], tick["degraded"], tick["dropped"]
            lam_log[k], load_log[k], true_log[k] = lam, measured, true_tick
            acted[k] = "no report" if dec is None else dec.controller
            if dec is not None and dec.plan is not None and dec.plan.load_plan is not None:
                plan_log[k] = dec.plan.load_plan[0]
            if dec is not None and dec.plan is not None and "backoff" in dec.plan.info:
                backoff_log[k] = dec.plan.info["backoff"]
                extra["backoff_target"] = dec.plan.info["backoff_target"]
            # the nodes report the overload their guard read over the tick (its sub-tick loads)
            tel = Telemetry(time=self.times[k], qps=qps, load=measured, lam=lam, features=x, over=guard.take_over())
        wall = time.perf_counter() - t0
        log = pd.DataFrame(cols, index=self.times)
        for g, cname in enumerate(cas.clusters):
            log[f"lambda_{cname}"] = lam_log[:, g]
            log[f"load_{cname}"] = load_log[:, g]
            log[f"true_load_{cname}"] = true_log[:, g]
            log[f"planned_load_{cname}"] = plan_log[:, g]
        log["acted"] = acted
        if np.isfinite(backoff_log).any():
            for g, cname in enumerate(cas.clusters):
                log[f"backoff_{cname}"] = backoff_log[:, g]
        log["guard_cost"] = guard_cost
        if ads is not None:
            for cname, values in ads.columns().items():
                log[cname] = values
        for g, cname in enumerate(cas.clusters):
            log[f"guard_subticks_{cname}"] = guard_subticks[:, g]
        return SimResult(controller=name, log=log, clusters=cas.clusters, target=plant.target.copy(), wall_s=wall,
                         subtick_load=sub_load, subtick_arrivals=sub_arrivals,
                         extra={"decisions": dict(balancer.counts_), "subticks": N, "guard": self.guard["rule"], **extra})


class TickActions:
    """One tick's requests served at each distinct lambda of its sub-ticks (the central one, the
    guard's raises): the policy's actions and what they give the plant whatever the load
    (:meth:`Plant.served`), decided once per lambda."""

    def __init__(self, policy, plant: Plant, features: np.ndarray, weights: np.ndarray):
        self.policy, self.plant, self.features, self.weights = policy, plant, features, weights
        self.served: dict = {}

    def at(self, lam: np.ndarray) -> ServedActions:
        key = lam.tobytes()
        if key not in self.served:
            self.served[key] = self.plant.served(self.policy.act(self.features, lam), self.weights)
        return self.served[key]


def split_arrivals(arrivals: int, profile: np.ndarray) -> np.ndarray:
    """A tick's ``arrivals`` spread over its sub-ticks in proportion to ``profile`` (largest
    remainders: integer counts summing exactly to ``arrivals``)."""
    p = np.maximum(np.asarray(profile, dtype=float), 0.0)
    total = p.sum()
    if total <= 0:
        p, total = np.ones(len(p)), float(len(p))
    share = arrivals * p / total
    n = np.floor(share).astype(np.int64)
    rest = int(arrivals - n.sum())
    if rest > 0:
        n[np.argsort(-(share - n), kind="stable")[:rest]] += 1
    return n
