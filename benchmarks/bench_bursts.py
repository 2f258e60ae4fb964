"""Over-utilisation on bursty traffic: pid, mpc and the hindsight limit, each bundled trace, with and
without injected bursts and outages, several seeds; every figure measured per sub-tick.

    python benchmarks/bench_bursts.py --days 7 --seeds 0,1,2 --jobs 2 --json bursts.json

One job is ``mpc-balancer compare --controllers pid,mpc,hindsight`` on one (trace, scenario, seed);
the table gives, per trace and scenario, the mean over seeds and the [min, max] spread of:
revenue as % of hindsight, mean mu, the worst cluster's nu, mu's gap to hindsight on the worst
cluster, the guard's revenue cost (% of revenue) and the sub-ticks it was active (per cluster,
mean). Hindsight is the physical limit: it knows every sub-tick's traffic of the coming tick; the
nu it cannot avoid (a burst no allocation fits) is no causal controller's to remove.
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from mpc_balancer.cli.outputs import check_file

SCENARIOS = {"plain": (None, None), "bursts": ("10,3-6,1-5", "1,20")}


def one(job):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from mpc_balancer.sim.experiment import ExperimentConfig, run_comparison

    trace, scenario, seed, days, controllers, guard, options = job
    bursts, outages = SCENARIOS[scenario]
    cfg = ExperimentConfig(trace=trace, days=days, seed=seed, bursts=bursts, outages=outages, guard=guard)
    t0 = time.perf_counter()
    _, summary = run_comparison(cfg, controllers, {c: o for c, o in options.items() if c in controllers})
    return {"trace": trace, "scenario": scenario, "seed": seed, "wall_s": time.perf_counter() - t0,
            "results": summary["results"]}


def table(rows: list[dict]) -> str:
    """The per-trace tables; Return% and the mu gap need hindsight among the controllers ("n/a" without it)."""
    out = []
    for trace in sorted({r["trace"] for r in rows}):
        for scenario in SCENARIOS:
            sel = [r for r in rows if r["trace"] == trace and r["scenario"] == scenario]
            if not sel:
                continue
            out.append(f"\n{trace}, {scenario}: {len(sel)} seeds (mean [min, max])")
            out.append(f"{'controller':<11}{'Return% of hindsight':>25}{'mu':>26}{'worst nu':>29}{'mu gap (worst)':>26}"
                       f"{'guard cost %':>22}{'guard sub-ticks':>18}")
            for name in [m["controller"] for m in sel[0]["results"]]:
                ms = [next(m for m in r["results"] if m["controller"] == name) for r in sel]
                hs = [next((m for m in r["results"] if m["controller"] == "hindsight"), None) for r in sel]
                ret = [m.get("return_vs_hindsight_pct", np.nan) for m in ms]
                mu = [m["mu"] for m in ms]
                nu = [max(c["nu"] for c in m["clusters"].values()) for m in ms]
                gap = [max(h["clusters"][c]["mu"] - m["clusters"][c]["mu"] for c in m["clusters"]) if h else np.nan
                       for m, h in zip(ms, hs)]
                cost = [m.get("guard_cost_pct", 0.0) for m in ms]
                active = [np.mean(list(m.get("guard_subticks", {"-": 0}).values())) for m in ms]

                def f(v, p=4):
                    if np.isnan(v).any():  # no hindsight run to compare with
                        return "n/a"
                    return f"{np.mean(v):.{p}f} [{np.min(v):.{p}f}, {np.max(v):.{p}f}]"
                out.append(f"{name:<11}{f(ret, 2):>25}{f(mu):>26}{f(nu, 5):>29}{f(gap):>26}{f(cost, 2):>22}{np.mean(active):>18.0f}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", default="nasa,elb,nyc-taxi")
    ap.add_argument("--scenarios", default="plain,bursts")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--controllers", default="pid,mpc,hindsight")
    ap.add_argument("--guard", default="proportional")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--set", action="append", metavar="CONTROLLER.KEY=VALUE", help="controller option, e.g. mpc.backoff_min=-0.05")
    ap.add_argument("--json", default=None)
    ap.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    a = ap.parse_args()
    try:  # checked before the runs: an existing file is kept without --force, a missing directory made now
        check_file("--json", a.json, a.force)
    except ValueError as e:
        ap.error(str(e))
    from mpc_balancer.sim.experiment import parse_overrides

    options, _ = parse_overrides(a.set)
    jobs = [(t, s, int(seed), a.days, a.controllers.split(","), a.guard, options) for t in a.traces.split(",")
            for s in a.scenarios.split(",") for seed in a.seeds.split(",")]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=a.jobs) as ex:
        rows = list(ex.map(one, jobs))
    print(f"{len(jobs)} runs of {a.days:g} days, guard {a.guard}, {time.perf_counter() - t0:.0f} s wall on {a.jobs} processes")
    print(table(rows))
    if "hindsight" not in a.controllers.split(","):
        print("\n(Return% of hindsight and the mu gap are n/a: add hindsight to --controllers for them)")
    if a.json:
        from mpc_balancer.jsonio import write_json

        write_json(a.json, {"days": a.days, "guard": a.guard, "runs": rows})


if __name__ == "__main__":
    main()
