"""Checkpoint size and restore time after 1, 7 and 30 days of 1-minute ticks, and step times.

An embedded telemetry-only MPC Balancer (two clusters, the default ``TickForecaster``: SARIMA on
5-minute buckets, 28 days retained, daily refit in the background) runs against a made-up plant
(a daily QPS cycle with noise; load = QPS x cost(lambda) / capacity) from 3 days of history.
At each reported day it prints the checkpoint's JSON size, the median time of
``load_state_dict`` into a freshly created Balancer (5 repeats), the time to create that
Balancer (the baseline a restore adds to), the restore's CPU time in its own thread (what it costs
when the machine is shared, and the running Balancer's background refit competes), and whether the restored Balancer's next decision
equals the uninterrupted one bit for bit. At the end: the step time distribution (median, p99,
max, ticks over 50 ms), refit ticks included.

Run: ``python benchmarks/bench_checkpoint.py [--days 1,7,30]`` (about 5 minutes for 30 days on an
idle core). Timings on a shared machine: quote ``uptime`` beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import mpc_balancer as mb  # noqa: E402

CLUSTERS = ("c0", "c1")


def qps_at(t: pd.DatetimeIndex, rng) -> np.ndarray:
    h = t.hour + t.minute / 60.0
    return 1000.0 * (1 + 0.5 * np.sin(2 * np.pi * np.asarray(h) / 24)) * (1 + 0.03 * rng.standard_normal(len(t)))


def make(history: pd.Series) -> mb.Balancer:
    return mb.Balancer.create("mpc", clusters={c: mb.Cluster(capacity=1500.0) for c in CLUSTERS}, policy=None,
                              history=history, period_s=60, horizon=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", default="1,7,30", help="comma-separated days at which to checkpoint (default 1,7,30)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    marks = sorted(float(d) for d in args.days.split(","))
    rng = np.random.default_rng(0)
    idx = pd.date_range("2024-05-01", periods=3 * 1440, freq="min")
    history = pd.Series(qps_at(idx, rng), index=idx)
    t0 = time.perf_counter()
    bal = make(history)
    create_s = time.perf_counter() - t0
    print(f"Balancer.create (3 days of history, forecaster fit + warm calibration): {create_s:.2f} s")
    print(f"{'day':>5} {'ticks':>7} {'checkpoint KiB':>15} {'restore ms (median)':>20} {'thread CPU ms':>14} {'create s':>9} "
          f"{'next decision equal':>20}")
    t, lam, load = idx[-1] + pd.Timedelta(minutes=1), np.full(2, 0.05), np.full(2, 0.6)
    steps: list[float] = []
    n_total = int(round(marks[-1] * 1440))
    mark_ticks = {int(round(d * 1440)): d for d in marks}
    for k in range(1, n_total + 1):
        q = float(qps_at(pd.DatetimeIndex([t]), rng)[0])
        tel = mb.Telemetry(time=t, qps=q, load=dict(zip(CLUSTERS, load)), lam=dict(zip(CLUSTERS, lam)))
        if k in mark_ticks:
            state = json.loads(json.dumps(bal.state_dict()))
            size = len(json.dumps(state).encode())
            times, cpu = [], []
            for _ in range(args.repeats):
                c0 = time.perf_counter()
                other = make(history)
                c1, u1 = time.perf_counter(), time.thread_time()
                other.load_state_dict(state)
                times.append(time.perf_counter() - c1)
                cpu.append(time.thread_time() - u1)
            d = bal.step(tel)
            equal = np.array_equal(d.lam_vector, other.step(tel).lam_vector)
            print(f"{mark_ticks[k]:>5g} {k:>7} {size / 1024:>15.1f} {statistics.median(times) * 1e3:>20.1f} "
                  f"{statistics.median(cpu) * 1e3:>14.1f} {c1 - c0:>9.2f} {str(equal):>20}", flush=True)
        else:
            s0 = time.perf_counter()
            d = bal.step(tel)
            steps.append(time.perf_counter() - s0)
        lam = d.lam_vector
        load = q * np.array([1.1, 0.9]) * (0.4 + 0.1 / (1.0 + 20.0 * lam)) / 1500.0 * 3.0
        t += pd.Timedelta(minutes=1)
    s = np.array(steps) * 1e3
    print(f"step ms over {len(s)} ticks: median {np.median(s):.2f}, p99 {np.percentile(s, 99):.2f}, max {s.max():.1f}, "
          f"over 50 ms: {int((s > 50).sum())}; statuses {bal.counts_}")


if __name__ == "__main__":
    main()
