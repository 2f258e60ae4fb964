"""A/B timing of one controller's closed loop, this code against a baseline, runs interleaved.

``bench_sim.py`` times the current code's repeats, then the baseline's: on a machine whose speed
drifts by 10-25% over minutes (a shared VM), a change of a few percent is lost in that drift. Here
each pair runs the two codes back to back, alternating which goes first, each in a fresh process
pinned to one core, so drift hits both alike; the medians and their ratio are printed with every
run's figures, and whether the two decided alike (the run's revenue, to the last bit). Run::

    python benchmarks/bench_ab.py --baseline DIR [--controller mpc] [--trace nasa] [--days 1]
        [--pairs 8] [--core 0]

``DIR`` is a checkout of the code to compare with (e.g. ``git worktree add /tmp/base main~3``); the
current code is this script's checkout. Figures per run: the process's CPU seconds in
``Simulator.run`` (the set-up and the forecaster's fit included), and ``Balancer.step``'s median
and 99th percentile wall milliseconds over the run's ticks.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]

# one run, in the checkout given as the working directory (first on sys.path with -c)
RUN = r'''
import os, sys, time, json
os.environ["OPENBLAS_NUM_THREADS"] = "1"
import numpy as np
from mpc_balancer.controllers import make_controller
from mpc_balancer.sim.experiment import ExperimentConfig, build_simulator, make_policy
controller, trace, days = sys.argv[1], sys.argv[2], float(sys.argv[3])
cfg = ExperimentConfig(trace=trace, days=days)
sim = build_simulator(cfg)
policy = make_policy(cfg.policy, sim.cascade)
t = time.process_time()
r = sim.run(make_controller(controller), policy)
cpu = time.process_time() - t
ms = r.log["solve_ms"].to_numpy()
print(json.dumps({"cpu": cpu, "p50": float(np.median(ms)), "p99": float(np.percentile(ms, 99)),
                  "revenue": r.metrics()["revenue"]}))
'''


def run_once(tree: Path, args) -> dict:
    """One closed-loop run of the code in ``tree``, in a fresh process on ``args.core``."""
    cmd = [sys.executable, "-c", RUN, args.controller, args.trace, str(args.days)]
    if args.core is not None:
        cmd = ["taskset", "-c", str(args.core)] + cmd
    env = {**os.environ, "PYTHONPATH": str(tree), "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"the run in {tree} failed:\n{out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, type=Path, help="checkout of the code to compare with")
    ap.add_argument("--controller", default="mpc")
    ap.add_argument("--trace", default="nasa")
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--pairs", type=int, default=8, help="runs of each code (interleaved)")
    ap.add_argument("--core", type=int, default=0, help="the core every run is pinned to (-1: not pinned)")
    args = ap.parse_args()
    if not (args.baseline / "mpc_balancer").is_dir():
        ap.error(f"--baseline {args.baseline}: not a checkout of this project (no mpc_balancer/ in it)")
    if args.pairs < 1 or not args.days > 0:
        ap.error("--pairs must be >= 1 and --days > 0")
    args.core = None if args.core < 0 else args.core
    trees = {"current": HERE, "baseline": args.baseline.resolve()}
    res: dict = {k: [] for k in trees}
    for i in range(args.pairs):
        for name in (("current", "baseline") if i % 2 == 0 else ("baseline", "current")):
            res[name].append(run_once(trees[name], args))
    print(f"{args.controller}, {args.days:g} day(s) of {args.trace}, {args.pairs} interleaved runs each"
          + ("" if args.core is None else f", core {args.core}"))
    med = {}
    for name, runs in res.items():
        med[name] = {k: float(np.median([r[k] for r in runs])) for k in ("cpu", "p50", "p99")}
        cpus = ", ".join(f"{r['cpu']:.2f}" for r in runs)
        print(f"{name:9s} CPU s median {med[name]['cpu']:6.2f}  (runs {cpus})"
              f"  step p50 {med[name]['p50']:.3f} ms  p99 {med[name]['p99']:.3f} ms  [{trees[name]}]")
    print(f"speed-up (baseline CPU / current CPU, medians): {med['baseline']['cpu'] / med['current']['cpu']:.3f}x; "
          f"step p50 {med['current']['p50']:.3f} against {med['baseline']['p50']:.3f} ms")
    same = len({r["revenue"] for runs in res.values() for r in runs}) == 1
    print("decisions:", "the same revenue in every run, bit for bit" if same else
          f"revenue differs: current {res['current'][0]['revenue']!r}, baseline {res['baseline'][0]['revenue']!r}")


if __name__ == "__main__":
    main()
