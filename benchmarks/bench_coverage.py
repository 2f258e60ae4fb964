"""Coverage of the MPC's tick-level forecast bands, plain rolling conformal against adaptive
conformal inference (ACI), on every bundled trace with and without injected bursts and outages.

    python benchmarks/bench_coverage.py --days 2

For each trace the forecaster is fitted on the history before the last ``--days`` days and then
run tick by tick over them exactly as the Balancer runs it (observe the tick, predict 30 steps);
a tick is covered at step k when its QPS is at or under the upper band issued k ticks earlier.
Printed: coverage at step 1 and averaged over steps 1-30, for the 80% and the 95% band, with
``aci_gain=0`` (the rolling window's quantile alone) beside the default.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from mpc_balancer.forecast import TickForecaster
from mpc_balancer.sim.disturbances import BurstSpec, Disturbances, OutageSpec
from mpc_balancer.traces import load_trace
from mpc_balancer.traffic import Traffic

H = 30


def coverage(trace: str, days: float, band: int, aci_gain: float, bursts: bool, seed: int = 0) -> tuple[float, float]:
    traffic = Traffic(load_trace(trace), period_s=60.0)
    hist, win = traffic.window(days)
    q = traffic.rate_qps.copy()
    if bursts:
        d = Disturbances(BurstSpec.parse("10,3-6,1-5"), OutageSpec.parse("1,20"), seed=seed)
        q[win] = q[win] * d.multiplier(win.stop - win.start, 60.0, 12).mean(axis=1)
    t = traffic.times
    f = TickForecaster(band=band, aci_gain=aci_gain).fit(q[hist], t[hist], 60.0)
    issued = []  # (first tick index, hi over H steps)
    hits = np.zeros(H)
    n = np.zeros(H)
    issued.append((win.start, f.predict(H)["hi"]))
    for i in range(win.start, win.stop):
        for start, hi in issued[-H:]:
            k = i - start
            if 0 <= k < H:
                hits[k] += q[i] <= hi[k]
                n[k] += 1
        f.observe(t[i], q[i])
        issued.append((i + 1, f.predict(H)["hi"]))
    cov = hits / np.maximum(n, 1)
    return float(cov[0]), float(cov.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", default="nasa,elb,nyc-taxi")
    ap.add_argument("--days", type=float, default=2.0)
    ap.add_argument("--aci-gain", type=float, default=TickForecaster().aci_gain)
    a = ap.parse_args()
    print(f"one-step / mean over steps 1-{H} coverage, last {a.days:g} days; plain = aci_gain 0, aci = aci_gain {a.aci_gain:g}")
    print(f"{'trace':<10}{'traffic':<9}{'80% plain':>18}{'80% aci':>18}{'95% plain':>18}{'95% aci':>18}{'wall s':>8}")
    for trace in a.traces.split(","):
        for bursts in (False, True):
            t0 = time.perf_counter()
            cells = [coverage(trace, a.days, band, gain, bursts) for band in (80, 95) for gain in (0.0, a.aci_gain)]
            row = "".join(f"{c1:>9.3f} /{cm:>6.3f}" for c1, cm in cells)
            print(f"{trace:<10}{'bursts' if bursts else 'plain':<9}{row}{time.perf_counter() - t0:>8.0f}")


if __name__ == "__main__":
    main()
