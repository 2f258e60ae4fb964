"""Solve time of one MPC tick at H=96 for 3 clusters: direct OSQP (warm) vs cvxpy vs CasADi/IPOPT vs random shooting.

The QP instances are real: a closed-loop MPC run on the NASA trace records each tick's numbers
(forecast, frontier, disturbance), and every solver replays the same sequence. Run:
    python benchmarks/bench_mpc.py [--ticks 120] [--horizon 96]
Targets (issue 4): OSQP path p95 <= 2 ms and >= 5x faster than cvxpy.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from mpc_balancer.balancer import Balancer  # noqa: E402
from mpc_balancer.controllers import MpcController, make_controller  # noqa: E402
from mpc_balancer.controllers.nmpc import traffic_state  # noqa: E402
from mpc_balancer.mpc import CvxpyMpcSolver, MpcProblem, OsqpMpcSolver, QuadraticMpcProblem  # noqa: E402
from mpc_balancer.sim.experiment import ExperimentConfig, build_simulator, make_policy  # noqa: E402


class Recorder(MpcController):
    def make_step(self, obs, forecast=None, response=None):
        plan = super().make_step(obs, forecast, response)
        self.recorded.append(self.last_data_)
        return plan


def record(ticks: int, horizon: int):
    cfg = ExperimentConfig(trace="nasa", days=ticks / 1440.0, n_requests=500)
    sim = build_simulator(cfg)
    ctrl = Recorder(horizon=horizon)
    ctrl.recorded = []
    sim.run(Balancer(ctrl), make_policy("oracle", sim.cascade))
    return ctrl.recorded, ctrl.problem_.u_scale, sim


def time_solver(solver, datas):
    times, statuses = [], []
    for d in datas:
        t0 = time.perf_counter()
        sol = solver.solve(d)
        times.append(time.perf_counter() - t0)
        statuses.append(sol.status)
    t = np.array(times[1:]) * 1e3  # the first call sets up (OSQP) or compiles (cvxpy): reported apart
    return {"first_ms": times[0] * 1e3, "p50": np.percentile(t, 50), "p95": np.percentile(t, 95),
            "ok": sum(s == "solved" for s in statuses) / len(statuses)}


def time_nmpc(name, sim, horizon, ticks):
    """CasADi/IPOPT NMPC and random shooting, timed on their own solve of one tick (same horizon)."""
    c = make_controller(name, horizon=horizon)
    ctx = sim.context(make_policy("oracle", sim.cascade))
    c.setup(ctx)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(ticks):
        load0 = rng.uniform(0.6, 1.1, ctx.n_clusters)
        state = traffic_state(float(rng.uniform(2000, 18000)), float(rng.uniform(0, 24)), c.qps_ref_)
        lam_prev = np.exp(rng.uniform(np.log(1e-3), np.log(1.0), ctx.n_clusters))
        t0 = time.perf_counter()
        c.solve(load0, state, lam_prev)
        times.append(time.perf_counter() - t0)
    t = np.array(times[1:]) * 1e3
    return {"first_ms": times[0] * 1e3, "p50": np.percentile(t, 50), "p95": np.percentile(t, 95), "ok": float("nan")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ticks", type=int, default=120)
    ap.add_argument("--horizon", type=int, default=96)
    ap.add_argument("--skip-nmpc", action="store_true")
    a = ap.parse_args()
    datas, u_scale, sim = record(a.ticks, a.horizon)
    G, H = 3, a.horizon
    rows = {}
    quad = QuadraticMpcProblem(G, H, u_scale=u_scale)
    pwl = MpcProblem(G, H, datas[0].widths.shape[1], u_scale=u_scale)
    rows["osqp (quadratic frontier, warm)"] = time_solver(OsqpMpcSolver(quad, time_limit_s=0), datas)
    rows["cvxpy (quadratic frontier)"] = time_solver(CvxpyMpcSolver(quad), datas[: min(len(datas), 40)])
    rows["osqp (exact PWL epigraph, warm)"] = time_solver(OsqpMpcSolver(pwl, time_limit_s=0), datas)
    rows["cvxpy (exact PWL epigraph)"] = time_solver(CvxpyMpcSolver(pwl), datas[: min(len(datas), 40)])
    if not a.skip_nmpc:
        for name, label in (("nmpc", "casadi/ipopt NMPC"), ("shooting", "random shooting")):
            try:
                rows[label] = time_nmpc(name, sim, H, 30)
            except Exception as e:  # noqa: BLE001 -- report and go on with the others
                print(f"{label}: not timed ({type(e).__name__}: {e})")
    print(f"one MPC tick, H={H}, {G} clusters, {len(datas)} recorded ticks of a closed-loop NASA run")
    print(f"{'solver':<36}{'p50 ms':>9}{'p95 ms':>9}{'first ms':>10}{'solved':>8}")
    for k, r in rows.items():  # solved: the QP solvers' status; NMPC and shooting report none ("-")
        ok = "-" if np.isnan(r["ok"]) else f"{r['ok']:.2f}"
        print(f"{k:<36}{r['p50']:>9.3f}{r['p95']:>9.3f}{r['first_ms']:>10.1f}{ok:>8}")
    q, c = rows["osqp (quadratic frontier, warm)"], rows["cvxpy (quadratic frontier)"]
    print(f"OSQP vs cvxpy (same QP): p50 {c['p50'] / q['p50']:.1f}x faster, p95 {c['p95'] / q['p95']:.1f}x; target p95 <= 2 ms and >= 5x")


if __name__ == "__main__":
    main()
