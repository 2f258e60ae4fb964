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
  the last tick's;
- ``mpc+ar1``: deployable again, a better nowcast: the tick forecaster's, times the last tick's
  change beyond the slow model's shape carried forward by an AR(1) fitted online
  (:class:`Ar1Nowcast`): what part of the perfect forecast's gain an achievable forecast keeps.

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

from mpc_balancer.cli.outputs import check_file

VARIANTS = ("mpc", "mpc+qps", "mpc+sample", "mpc+ar1")


def ar1_nowcast(forget: float = 0.995, cap: float = 0.1, clip: float = 0.2):
    """A :class:`~mpc_balancer.forecast.TickForecaster` whose forecast is also scaled by
    ``exp(d phi (1 - phi^k) / (1 - phi))`` at step ``k``: ``d`` the last tick's change of log QPS
    beyond the slow model's slope (clipped to ``+-clip``), ``phi`` the lag-1 regression of these
    changes on the previous ones, fitted online with forgetting factor ``forget`` (clipped to
    ``+-0.9``); the scale's log is capped at ``+-cap``."""
    from mpc_balancer.forecast import TickForecaster, _multiplier

    class Ar1Nowcast(TickForecaster):
        def _fit(self, qps, times, period_s):
            super()._fit(qps, times, period_s)
            self.ar1_ = {"time": None, "log_qps": None, "slope": 0.0, "d": None, "sxy": 0.0, "sxx": 0.0}
            return self

        def predict(self, h: int) -> dict:
            out = super().predict(h)
            st = self.ar1_
            dt = int(self.period_s_ * 1e9)
            now_ns = self.last_time_.value
            t = now_ns + dt * np.arange(2)
            nb, step = self.next_bucket_.value, self.step.value
            f = self._model_forecast(max(int(np.ceil((now_ns + dt * h - nb) / step)) + 2, 1))  # predict's, memoised
            centers = (nb + step // 2 + step * np.arange(len(f["mean"]))).astype(float)
            base = np.interp(t.astype(float), centers, f["mean"]) * _multiplier(self.calendar_, t)
            if self.last_qps_ <= 0 or base[0] <= 0 or base[1] <= 0:
                st.update(time=None, log_qps=None, d=None)
                return out
            now, log_qps = now_ns, float(np.log(self.last_qps_))
            if st["time"] != now:  # a new tick: score the change since the last one
                if st["log_qps"] is not None and st["time"] == now - dt:
                    d = float(np.clip(log_qps - st["log_qps"] - st["slope"], -clip, clip))
                    if st["d"] is not None:
                        st["sxy"] = forget * st["sxy"] + d * st["d"]
                        st["sxx"] = forget * st["sxx"] + st["d"] ** 2
                    st["d"] = d
                else:
                    st["d"] = None
                st.update(time=now, log_qps=log_qps, slope=float(np.log(base[1] / base[0])))
            if st["d"] is None or st["sxx"] <= 0:
                return out
            phi = float(np.clip(st["sxy"] / st["sxx"], -0.9, 0.9))
            k = np.arange(1, h + 1)
            scale = np.exp(np.clip(st["d"] * phi * (1 - phi ** k) / (1 - phi), -cap, cap))
            mean = out["mean"] * scale
            return {"mean": mean, "hi": np.maximum(out["hi"] * scale, mean)}

    return Ar1Nowcast()


def make(variant: str, target: float | None):
    """The controller of ``variant`` (``pid`` or one of :data:`VARIANTS`) at back-off ``target``.
    An MPC records the one-tick forecast it was given (``errors()``: the relative errors of the
    forecaster's mean for the coming tick against the QPS then measured)."""
    from mpc_balancer.controllers import MpcController, make_controller
    from mpc_balancer.response import Response

    if variant == "pid":
        return make_controller("pid")

    class VariantMpc(MpcController):
        """The MPC, shown the coming tick's QPS (``mpc+qps``) and its requests (``mpc+sample``)."""

        name = variant
        clairvoyant = variant in ("mpc+qps", "mpc+sample")

        def setup(self, context):
            super().setup(context)
            self.pairs_: list = []  # (forecast mean for the coming tick, QPS measured) per tick
            return self

        def foresee(self, future) -> None:
            self.future_ = future

        def errors(self) -> np.ndarray:
            pairs = np.array(self.pairs_, dtype=float).reshape(-1, 2)
            ok = pairs[:-1, 0] > 0
            return pairs[1:, 1][ok] / pairs[:-1, 0][ok] - 1.0  # QPS measured a tick later / its forecast

        def make_step(self, obs, forecast=None, response=None):
            if forecast is not None:
                self.pairs_.append((float(forecast["mean"][0]), float(obs.qps)))
            if not self.clairvoyant:
                return super().make_step(obs, forecast, response)
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

    return VariantMpc(backoff_target=target)


def one(job):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from mpc_balancer.sim.experiment import ExperimentConfig, build_simulator, make_policy

    trace, seed, days, variant, target = job
    cfg = ExperimentConfig(trace=trace, days=days, seed=seed)
    sim = build_simulator(cfg)
    t0 = time.perf_counter()
    controller = make(variant, target)
    balancer = sim.balancer(controller, forecaster=ar1_nowcast() if variant == "mpc+ar1" else None)
    m = sim.run(balancer, make_policy(cfg.policy, sim.cascade)).metrics()
    e = controller.errors() if variant in ("mpc", "mpc+ar1") else np.array([])
    return {"trace": trace, "seed": seed, "variant": variant, "target": target, "revenue": m["revenue"],
            "nu": m["nu"], "mu": m["mu"], "forecast_error_sd": float(e.std()) if e.size else None,
            "wall_s": time.perf_counter() - t0}


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
                     + (f" (one-tick forecast error {100 * r['forecast_error_sd']:.2f}%)" if r.get("forecast_error_sd") else "")
                     for r in sorted(vs, key=lambda r: r["target"])]
        out.append(f"{trace:<9}{seed:>5}{pid['nu']:>9.5f}  " + "".join(cells) + "   " + "; ".join(runs))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", default="nasa,elb,nyc-taxi")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--targets", default="0.0003,0.0005", help="mpc.backoff_target of every MPC run")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    a = ap.parse_args()
    try:  # checked before the runs: an existing file is kept without --force, a missing directory made now
        check_file("--json", a.json, a.force)
    except ValueError as e:
        ap.error(str(e))
    variants = a.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"--variants: unknown {unknown}, choose from {list(VARIANTS)}")
    try:
        targets = [float(t) for t in a.targets.split(",")]
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError as e:
        ap.error(f"--targets must be numbers and --seeds integers, comma-separated ({e})")
    if not all(0 <= t < 1 for t in targets):
        ap.error(f"--targets: every back-off target must be in [0, 1), got {targets}")
    jobs = [(t, s, a.days, "pid", None) for t in a.traces.split(",") for s in seeds]
    jobs += [(t, s, a.days, v, x) for t in a.traces.split(",") for s in seeds for v in variants for x in targets]
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
