"""Run closed-loop comparisons from Python: the API behind ``mpc-balancer simulate`` and ``compare``."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policies.cascade import FEATURES, Cascade, CascadeSpec
from policies.oracle import OraclePolicy

from ..controllers import make_controller
from ..forecast import TickForecaster
from ..jsonio import write_json
from ..traces import load_trace
from ..traffic import Traffic
from .disturbances import BurstSpec, Disturbances, OutageSpec
from .plant import PlantConfig
from .simulator import SimResult, Simulator


@dataclass
class ExperimentConfig:
    trace: str = "nasa"
    days: float = 7.0
    start: str | None = None
    seed: int = 0
    period_s: float = 60.0
    n_requests: int = 1000
    sampling: str = "stratified"  # per-tick request sample: stratified (Latin hypercube) or iid
    peak_qps: float = 20000.0
    traffic_mode: str = "rate"
    policy: str = "pretrained"
    cost_table: str | None = None
    events: str | None = None  # announced events CSV (start,end,name[,expected_multiplier]) for forecasters
    subticks: int = 12  # plant steps per control period (12: 5 s at 60 s)
    guard: str | dict = "proportional"  # node-local guard: proportional, maxpower or none (or {"rule": ..., settings})
    bursts: str | None = None  # injected unannounced bursts "PER_DAY,FMIN-FMAX,MMIN-MMAX" (e.g. "10,3-6,1-5")
    outages: str | None = None  # injected outages "PER_DAY,MINUTES" (e.g. "1,20")

    def disturbances(self) -> Disturbances:
        """The injected bursts and outages of this run (seeded by ``seed``)."""
        return Disturbances(bursts=None if self.bursts is None else BurstSpec.parse(self.bursts),
                            outages=None if self.outages is None else OutageSpec.parse(self.outages), seed=self.seed)


def parse_overrides(items: list[str] | None) -> tuple[dict[str, dict], dict]:
    """``["pid.kp=0.4", "plant.target_load=0.85"]`` -> ({"pid": {"kp": 0.4}}, {"target_load": 0.85})."""
    ctrl: dict[str, dict] = {}
    plant: dict = {}
    for item in items or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"--set expects SECTION.KEY=VALUE (e.g. pid.kp=0.4, plant.target_load=0.85), got {item!r}")
        key, raw = item.split("=", 1)
        section, name = key.split(".", 1)
        try:
            value = None if raw == "None" else json.loads(raw)  # JSON values; None or null: no value
        except json.JSONDecodeError:  # a string, but nan and inf are numbers (each setting's check names them)
            value = float(raw) if raw.strip().lower() in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity") else raw
        (plant if section == "plant" else ctrl.setdefault(section, {}))[name] = value
    return ctrl, plant


def make_policy(name: str, cascade: Cascade):
    """The per-request policy: ``oracle`` (exact argmax), ``pretrained`` (the shipped AWRQ-Mixer bundle),
    another shipped bundle (``rem``, ``dqn``: one agent over the joint action) or the path of a bundle
    written by ``mpc-balancer train``: its ``--out`` directory, the ``.json``/``.npz`` file or their
    stem. Learned policies decide with the cascade's current cost table (the same estimate the
    controllers use).

    A path is anything that exists on disk as given (``--policy mybundle``, the directory ``train
    --out mybundle`` wrote, is a path although it has no ``/``) or holds a ``/`` or a bundle suffix;
    a shipped bundle's name wins over a file of that name in the working directory."""
    if name == "oracle":
        return OraclePolicy(cascade, dtype=np.float32)
    from pathlib import Path

    from policies.bundle import shipped_bundles
    from policies.runtime import load_runtime

    if name in shipped_bundles() or name.endswith((".json", ".npz")) or "/" in name or (name and Path(name).exists()):
        policy = load_runtime(name, cost=cascade.cost)
        if tuple(policy.features) != FEATURES:
            raise ValueError(f"policy bundle {name!r} reads features {list(policy.features)}, the simulated requests "
                             f"carry {list(FEATURES)} (in this order)")
        return policy
    raise ValueError(f"unknown policy {name!r}; available: oracle, {', '.join(shipped_bundles())}, or a bundle path")


def build_simulator(cfg: ExperimentConfig, plant_overrides: dict | None = None) -> Simulator:
    trace = load_trace(cfg.trace)
    traffic = Traffic(trace, period_s=cfg.period_s, peak_qps=cfg.peak_qps, mode=cfg.traffic_mode)
    spec = CascadeSpec.from_cost_table(cfg.cost_table) if cfg.cost_table else CascadeSpec()
    return Simulator(traffic, cascade=Cascade(spec), plant=PlantConfig.from_dict(plant_overrides or {}),
                     n_requests=cfg.n_requests, seed=cfg.seed, days=cfg.days, start=cfg.start,
                     sampling=cfg.sampling, subticks=cfg.subticks, guard=cfg.guard, disturbances=cfg.disturbances())


def run_comparison(cfg: ExperimentConfig, controllers: list[str], controller_options: dict | None = None,
                   plant_overrides: dict | None = None, progress: bool = False) -> tuple[list[SimResult], dict]:
    """Run each controller over the same traffic and request samples; return runs and the summary."""
    if not controllers:
        raise ValueError("no controllers given")
    dup = {c for c in controllers if controllers.count(c) > 1}
    if dup:
        raise ValueError(f"controller listed twice: {sorted(dup)}")
    opts = controller_options or {}
    unknown = set(opts) - set(controllers)
    if unknown:
        raise ValueError(f"--set names controller(s) {sorted(unknown)} that are not in this run ({', '.join(controllers)})")
    built = [make_controller(name, **opts.get(name, {})) for name in controllers]  # fail fast on bad names/options
    cfg.disturbances()  # fail fast on bad --bursts / --outages
    calendar = None
    if cfg.events is not None:
        from forecasting import load_events

        calendar = load_events(cfg.events)  # fail fast on a bad events file
        # only forecasting controllers read the calendar: under pid/static/dcaf alone the file was
        # checked and then had no effect on the run
        if not any(c.needs_forecast for c in built):
            raise ValueError(f"--events {cfg.events}: none of the controllers ({', '.join(controllers)}) forecasts "
                             "traffic, so the announced events would have no effect (the mpc's forecaster reads "
                             "them); drop --events or add mpc")
    sim = build_simulator(cfg, plant_overrides)
    if calendar is not None:
        note = events_outside_note(cfg.events, calendar, sim, TickForecaster().history_days)
        if note is not None and note not in _NOTED:  # once per process: tune's trials run the same window again
            _NOTED.add(note)
            print(note, file=sys.stderr)
    policy = make_policy(cfg.policy, sim.cascade)
    # forecasting controllers first: one that cannot fit its forecaster on the history fails at its
    # set-up, before the others have run (each run is independent; the results keep the given order)
    order = sorted(range(len(built)), key=lambda i: not built[i].needs_forecast)
    runs: list = [None] * len(built)
    for i in order:
        c = built[i]
        forecaster = TickForecaster(events=cfg.events) if c.needs_forecast else None
        runs[i] = sim.run(sim.balancer(c, forecaster), policy, progress=progress)
    return runs, summarize(cfg, sim, runs)


_NOTED: set = set()  # the notes of events_outside_note this process has printed


def events_outside_note(source, calendar, sim: Simulator, history_days: float) -> str | None:
    """A warning when the announced events ``calendar`` (read from ``source``) has events, but none of
    them overlaps what a forecaster of this run reads: the simulated window, the ``history_days``
    of history before it the forecaster fits on (as far as the trace has history) and the day after
    it its forecasts may reach (a horizon is at most a day). None otherwise: a calendar that covers
    a longer period than the run, with at least one event in it, is how a calendar file looks."""
    import pandas as pd

    if not len(calendar):
        return None
    times, period = sim.traffic.times, pd.Timedelta(seconds=sim.traffic.period_s)
    first, last = sim.times[0], sim.times[-1] + period
    start = max(times[0], first - pd.Timedelta(days=history_days))
    end = last + pd.Timedelta(days=1)
    if calendar.overlapping(start, end):
        return None
    n, ends = len(calendar), max(e.end for e in calendar.events)
    return (f"warning: --events {source}: none of its {n} event{'s' if n > 1 else ''} ({calendar.events[0].start} "
            f".. {ends}) falls in the simulated window {first} .. {sim.times[-1]}, the history the forecaster fits on "
            f"(from {start}) or the day its forecasts reach (to {end}): the file has no effect on this run; check its "
            "dates (or --start / --days)")


def summarize(cfg: ExperimentConfig, sim: Simulator, runs: list[SimResult]) -> dict:
    results = [r.metrics() for r in runs]
    static = next((m["revenue"] for m in results if m["controller"] == "static"), None)
    hindsight = next((m["revenue"] for m in results if m["controller"] == "hindsight"), None)
    for m in results:
        m["uplift_vs_static_pct"] = None if static in (None, 0) else 100.0 * (m["revenue"] / static - 1.0)
        if hindsight:
            m["return_vs_hindsight_pct"] = 100.0 * m["revenue"] / hindsight
    return {"trace": cfg.trace, "days": float(len(sim.times) * cfg.period_s / 86400.0), "control_period_s": cfg.period_s,
            "seed": cfg.seed, "window": [str(sim.times[0]), str(sim.times[-1])], "policy": cfg.policy,
            "subticks": sim.subticks, "guard": sim.guard["rule"], "guard_settings": sim.guard, "bursts": cfg.bursts, "outages": cfg.outages,
            "capacity": sim.make_plant().capacity.tolist(), "target_load": sim.plant_config.target_load,
            "results": results}


def write_outputs(out_dir: str | Path, runs: list[SimResult], summary: dict) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for r in runs:
        r.to_csv(out / f"{r.controller}.csv")
    from .plotting import plot_backoff, plot_run

    plot_run(runs[0], out / "comparison.png", results=runs)
    plot_backoff(runs, out / "backoff.png", target=_backoff_target(runs))
    write_json(out / "results.json", summary)


def format_table(summary: dict) -> str:
    rows = summary["results"]
    clusters = list(rows[0]["clusters"])
    per_cluster = "".join(f"{c[:8] + ' mu/nu':>18}" for c in clusters)
    head = f"{'controller':<11}{'revenue':>14}{'uplift%':>9}{'mu':>8}{'nu':>8}" + per_cluster + f"{'degr%':>8}{'wall s':>8}"
    lines = [f"trace {summary['trace']}  {summary['days']:.2f} days  window {summary['window'][0]} .. {summary['window'][1]}  policy "
             f"{summary['policy']}", head]
    for m in rows:
        up = "-" if m["uplift_vs_static_pct"] is None else f"{m['uplift_vs_static_pct']:+.2f}"
        cl = "".join(f"{m['clusters'][c]['mu']:>10.4f}/{m['clusters'][c]['nu']:<7.4f}" for c in clusters)
        lines.append(f"{m['controller']:<11}{m['revenue']:>14.5g}{up:>9}{m['mu']:>8.4f} {m['nu']:>7.4f}{cl}"
                     f"{m['degraded_pct']:>8.3f}{m['wall_s']:>8.1f}")
    if any(m["mu"] is None or m["mu"] != m["mu"] for m in rows):  # None in JSON, NaN in memory
        lines.append("mu and nu are undefined (nan) where the window has no tick with traffic: no controller can load a "
                     "cluster without requests (choose another --start or --days)")
    return "\n".join(lines)


def _backoff_target(runs: list[SimResult]) -> float | None:
    """The MPC's nu target, for the back-off plot."""
    return next((r.extra["backoff_target"] for r in runs if "backoff_target" in r.extra), None)
