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

from .balancer import Balancer, Decision
from .controllers.base import ControlContext, Controller
from .controllers.hindsight import Clairvoyance
from .telemetry import Telemetry
from .plant import Plant, PlantConfig
from .traffic import Traffic


SAMPLINGS = ("stratified", "iid")


@dataclass
class SimResult:
    controller: str
    log: pd.DataFrame
    clusters: tuple[str, ...]
    target: np.ndarray
    wall_s: float
    extra: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        log = self.log
        active = log["arrivals"].to_numpy() > 0
        per = {}
        for g, name in enumerate(self.clusters):
            L = log[f"true_load_{name}"].to_numpy()[active]
            cm = self.target[g]
            per[name] = {"mu": float(np.mean(np.minimum(L, cm)) / cm) if L.size else float("nan"),
                         "nu": float(np.mean(np.maximum(L - cm, 0)) / cm) if L.size else float("nan")}
        arrivals = int(log["arrivals"].sum())
        return {
            "controller": self.controller,
            "revenue": float(log["revenue"].sum()),
            "mu": float(np.mean([per[c]["mu"] for c in self.clusters])),
            "nu": float(np.mean([per[c]["nu"] for c in self.clusters])),
            "clusters": per,
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
                 response_requests: int = 256, sampling: str = "stratified"):
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

    def context(self, policy) -> ControlContext:
        plant = self.make_plant()
        return ControlContext(clusters=tuple(self.cascade.clusters), policy=policy, target=plant.target.copy(), capacity=plant.capacity.copy(),
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
                        sampling=self.sampling)
        return sim.run(controller, policy)

    def make_plant(self) -> Plant:
        return Plant(self.cascade, self.plant_config, peak_qps=self.traffic.peak_qps, period_s=self.traffic.period_s)

    def environment(self):
        """Yield per-tick (arrivals, features, shed order u, load noise), identical for every run."""
        rng = np.random.default_rng(self.seed)
        arrivals = self.traffic.arrivals(self.window, rng)
        hours = (self.times.hour + self.times.minute / 60.0 + self.times.second / 3600.0).to_numpy()
        G = len(self.cascade.clusters)
        for k in range(len(arrivals)):
            x = self.cascade.sample_features(self.n_requests, hours[k], rng, stratified=self.sampling == "stratified")
            yield int(arrivals[k]), x, rng.random(self.n_requests), rng.standard_normal(G)

    def run(self, controller: Controller | Balancer, policy, progress: bool = False, initial_lam: float = 0.01) -> SimResult:
        """Close the loop over the window with ``controller`` (wrapped in a default :class:`Balancer`
        unless one is given) and ``policy``: its ``act(features, lam)`` serves the requests (the
        plant), its ``respond(features, lam)`` is all the controller sees of them (the policy
        protocol). The cascade's ground truth drives the plant and the metrics only; the
        clairvoyant hindsight limit alone is shown the coming tick."""
        cas, plant = self.cascade, self.make_plant()
        balancer = controller if isinstance(controller, Balancer) else Balancer(controller, response_requests=self.response_requests)
        name = balancer.controller.name
        balancer.setup(self.context(policy), initial_lam=initial_lam)
        clairvoyant = balancer.controller.clairvoyant
        G, T, period = len(cas.clusters), len(self.times), self.traffic.period_s
        lam = np.full(G, initial_lam)
        cols = {k: np.zeros(T) for k in ("qps", "arrivals", "revenue", "served", "degraded", "dropped", "solve_ms")}
        lam_log, load_log, true_log = np.zeros((T, G)), np.zeros((T, G)), np.zeros((T, G))
        plan_log = np.full((T, G), np.nan)  # the controller's planned load for this tick, where it plans
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
        t0 = time.perf_counter()
        for k, (arrivals, x, u, noise) in enumerate(it):
            tsec = float(self.times[k].hour * 3600 + self.times[k].minute * 60 + self.times[k].second)
            if clairvoyant:
                balancer.controller.foresee(Clairvoyance(qps=arrivals / period, features=x, cost_factor=plant.cost_factor(tsec),
                                                         load=plant.load.copy(), lag_alpha=plant.alpha))
            s0 = time.perf_counter()
            dec: Decision = balancer.step(tel)
            cols["solve_ms"][k] = (time.perf_counter() - s0) * 1e3
            w = cas.weights(x)
            lam = dec.lam_vector
            actions = policy.act(x, lam)
            qps = arrivals / period
            out = plant.step(qps, arrivals, actions, w, tsec, u, noise)
            cols["qps"][k], cols["arrivals"][k], cols["revenue"][k] = qps, arrivals, out.revenue
            cols["served"][k], cols["degraded"][k], cols["dropped"][k] = out.served, out.degraded, out.dropped
            lam_log[k], load_log[k], true_log[k], acted[k] = lam, out.load, out.true_load, dec.controller
            if dec.plan is not None and dec.plan.load_plan is not None:
                plan_log[k] = dec.plan.load_plan[0]
            tel = Telemetry(time=self.times[k], qps=qps, load=out.load, lam=lam, features=x)
        wall = time.perf_counter() - t0
        log = pd.DataFrame(cols, index=self.times)
        for g, cname in enumerate(cas.clusters):
            log[f"lambda_{cname}"] = lam_log[:, g]
            log[f"load_{cname}"] = load_log[:, g]
            log[f"true_load_{cname}"] = true_log[:, g]
            log[f"planned_load_{cname}"] = plan_log[:, g]
        log["acted"] = acted
        return SimResult(controller=name, log=log, clusters=cas.clusters, target=plant.target.copy(), wall_s=wall,
                         extra={"decisions": dict(balancer.counts_)})
