"""What better foresight could give the MPC over the PID at equal nu: the MPC with a perfect
traffic forecast, and with the coming tick's requests too, against the PID and the plain MPC.

    python benchmarks/bench_forecast_limit.py --days 7 --targets 0.0003,0.0005 --jobs 2

On smooth traffic the MPC and the PID earn within about 0.1% of each other at the same nu, while
hindsight earns 0.15-0.33% more than the PID. Hindsight is shown three things no deployment has:
the coming tick's traffic, its requests, and the plant's true costs. This script gives the MPC
each of the first two in turn (through the simulator's :class:`Clairvoyance`, as it gives
hindsight) and measures revenue against the PID's at the PID's nu:

- ``mpc``: the deployable MPC (the tick forecaster's mean and upper band);
- ``mpc+qps``: its forecast of the coming tick replaced by the tick's real QPS (mean = upper band
  = the truth; the later steps of the horizon keep the forecaster's shape, rescaled to it): the
  most a better traffic forecast could give;
- ``mpc+sample``: also its response curve measured on the coming tick's request sample instead of
  the last tick's.

Each MPC runs at every back-off target of ``--targets`` (``mpc.backoff_target``); its revenue at
the PID's nu is interpolated between the two targets whose nu brackets it (linearly in nu;
outside the bracket the nearest run is quoted, marked ``~``). Same traffic, requests and outcome
draws for every run of a (trace, seed).
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

VARIANTS = ("mpc", "mpc+qps", "mpc+sample")


def make(variant: str, target: float | None):
    """The controller of ``variant`` (``pid`` or one of :data:`VARIANTS`) at back-off ``target``."""
    from mpc_balancer.controllers import MpcController, make_controller
    from mpc_balancer.response import Response

    if variant == "pid":
        return make_controller("pid")
    if variant == "mpc":
        return make_controller("mpc", backoff_target=target)

    class ForesightMpc(MpcController):
        """The MPC shown the coming tick's QPS (and, with ``sample``, its requests)."""

        name = variant
        clairvoyant = True

        def foresee(self, future) -> None:
            self.future_ = future

        def make_step(self, obs, forecast=None, response=None):
            f = self.future_
            if forecast is not None:
                mean, hi = np.array(forecast["mean"], dtype=float), np.array(forecast["hi"], dtype=float)
                band = np.maximum(hi / np.maximum(mean, 1e-12), 1.0)  # the forecaster's own band, kept
                mean[1:] *= f.qps / mean[0] if mean[0] > 0 else 1.0
                hi[1:] = mean[1:] * band[1:]
                mean[0] = hi[0] = f.qps
                forecast = {"mean": mean, "hi": hi}
            if variant == "mpc+sample" and response is not None:
                response = Response(self.ctx_.policy, f.features, max_requests=len(response.features), lam=obs.lam)
            return super().make_step(obs, forecast, response)

    return ForesightMpc(backoff_target=target)


def one(job):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from mpc_balancer.sim.experiment import ExperimentConfig, build_simulator, make_policy

    trace, seed, days, variant, target = job
    cfg = ExperimentConfig(trace=trace, days=days, seed=seed)
    sim = build_simulator(cfg)
    t0 = time.perf_counter()
    m = sim.run(make(variant, target), make_policy(cfg.policy, sim.cascade)).metrics()
    return {"trace": trace, "seed": seed, "variant": variant, "target": target, "revenue": m["revenue"],
            "nu": m["nu"], "mu": m["mu"], "wall_s": time.perf_counter() - t0}


def at_nu(runs: list[dict], nu: float) -> tuple[float, str]:
    """Revenue at ``nu``, interpolated between the runs that bracket it ('' exact, '~' nearest)."""
    runs = sorted(runs, key=lambda r: r["nu"])
    nus = np.array([r["nu"] for r in runs])
    rev = np.array([r["revenue"] for r in runs])
    if nus[0] <= nu <= nus[-1]:
        return float(np.interp(nu, nus, rev)), ""
    return float(rev[0] if nu < nus[0] else rev[-1]), "~"


def table(rows: list[dict]) -> str:
    out = [f"{'trace':<9}{'seed':>5}{'pid nu':>9}  " + "".join(f"{v + ' @pid nu':>19}" for v in VARIANTS)
           + "   runs: variant target -> revenue vs pid % / nu"]
    for trace, seed in sorted({(r["trace"], r["seed"]) for r in rows}):
        sel = [r for r in rows if r["trace"] == trace and r["seed"] == seed]
        pid = next(r for r in sel if r["variant"] == "pid")
        cells, runs = [], []
        for v in VARIANTS:
            vs = [r for r in sel if r["variant"] == v]
            if not vs:
                cells.append(f"{'-':>19}")
                continue
            rev, mark = at_nu(vs, pid["nu"])
            cell = f"{mark}{100 * (rev / pid['revenue'] - 1):+.3f}%"
            cells.append(f"{cell:>19}")
            runs += [f"{v} {r['target']:g} -> {100 * (r['revenue'] / pid['revenue'] - 1):+.3f}% / {r['nu']:.5f}"
                     for r in sorted(vs, key=lambda r: r["target"])]
        out.append(f"{trace:<9}{seed:>5}{pid['nu']:>9.5f}  " + "".join(cells) + "   " + "; ".join(runs))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default="nasa,elb,nyc-taxi")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--targets", default="0.0003,0.0005", help="mpc.backoff_target of every MPC run")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    variants = a.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"--variants: unknown {unknown}, choose from {list(VARIANTS)}")
    targets = [float(t) for t in a.targets.split(",")]
    jobs = [(t, int(s), a.days, "pid", None) for t in a.traces.split(",") for s in a.seeds.split(",")]
    jobs += [(t, int(s), a.days, v, x) for t in a.traces.split(",") for s in a.seeds.split(",")
             for v in variants for x in targets]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=a.jobs) as ex:
        rows = list(ex.map(one, jobs))
    print(f"{len(jobs)} runs, {a.days:g} days each, {time.perf_counter() - t0:.0f} s wall")
    print("revenue against the PID's at the PID's nu (nu: mean over clusters, per sub-tick)")
    print(table(rows))
    if a.json:
        import json

        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
