"""Drive the closed loop from Python: trace -> traffic -> simulator -> controllers -> metrics.

Run: python examples/closed_loop.py [--days D]   (a few seconds per controller per simulated day)
"""
import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrix products: one BLAS thread is fastest

import numpy as np  # noqa: E402

from mpc_balancer.controllers import DcafController, PidController, StaticController  # noqa: E402
from mpc_balancer.sim.plant import PlantConfig  # noqa: E402
from mpc_balancer.sim.simulator import Simulator  # noqa: E402
from mpc_balancer.traces import load_trace  # noqa: E402
from mpc_balancer.traffic import Traffic  # noqa: E402
from policies.cascade import Cascade  # noqa: E402
from policies.oracle import OraclePolicy  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=float, default=1.0, help="simulated days (default 1)")
    args = p.parse_args(argv)
    trace = load_trace("nasa")  # or load_trace("my_qps.csv.gz") with a header timestamp,<value>
    traffic = Traffic(trace, period_s=60, peak_qps=20000)  # de-noised rate, scaled to 20k QPS at peak
    cascade = Cascade()  # retrieval -> pre-ranking -> ranking, 960 joint actions
    sim = Simulator(traffic, cascade=cascade, plant=PlantConfig(target_load=0.9), n_requests=500, days=args.days, seed=0)
    policy = OraclePolicy(cascade, dtype=np.float32)  # per request: argmax_a E[rev] - lambda . cost

    results = {}
    for controller in (StaticController(), DcafController(), PidController(kp=0.5, ki=1.0)):
        run = sim.run(controller, policy)
        results[controller.name] = m = run.metrics()
        print(f"{controller.name:<7} revenue {m['revenue']:.4g}  mu {m['mu']:.4f}  nu {m['nu']:.4f}  degraded {m['degraded_pct']:.3f}%")
    static = results["static"]["revenue"]
    for name, m in results.items():
        print(f"{name:<7} uplift vs static {100 * (m['revenue'] / static - 1):+.2f}%")
    # the per-tick log: qps, lambda and load per cluster, revenue, served/degraded/dropped counts
    print(run.log[["qps", "lambda_rank", "load_rank", "revenue"]].describe().loc[["mean", "min", "max"]])


if __name__ == "__main__":
    main()
