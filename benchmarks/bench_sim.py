"""Wall time of the closed loop: 7 simulated days at 1-minute ticks, 1000 requests per tick, per controller.

Target (issue 2): <= 30 s per controller on a 2-core machine. Run:
    python benchmarks/bench_sim.py [--trace nasa] [--days 7] [--controllers static,dcaf,pid]
Prints the wall time per controller and, side by side, the seconds per simulated tick and the share
of it the controller itself took (make_step), in one run.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from mpc_balancer.experiment import ExperimentConfig, build_simulator, make_policy  # noqa: E402
from mpc_balancer.controllers import make_controller  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default="nasa")
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--controllers", default="static,dcaf,pid")
    ap.add_argument("--policy", default="oracle")
    a = ap.parse_args()
    cfg = ExperimentConfig(trace=a.trace, days=a.days, n_requests=a.requests, policy=a.policy)
    t0 = time.perf_counter()
    sim = build_simulator(cfg)
    policy = make_policy(cfg.policy, sim.cascade)
    print(f"setup (trace, traffic, cascade): {time.perf_counter() - t0:.2f} s; {len(sim.times)} ticks x {a.requests} requests")
    print(f"{'controller':<12}{'wall s':>9}{'ms/tick':>10}{'controller ms/tick (median)':>30}{'target':>10}")
    for name in a.controllers.split(","):
        run = sim.run(make_controller(name), policy)
        ticks = len(run.log)
        med = float(np.median(run.log["solve_ms"]))
        print(f"{name:<12}{run.wall_s:>9.1f}{1e3 * run.wall_s / ticks:>10.2f}{med:>30.3f}{'<= 30 s':>10}")


if __name__ == "__main__":
    main()
