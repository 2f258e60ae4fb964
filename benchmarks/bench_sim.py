"""Wall time of the closed loop per controller, the latency of one MPC tick and where it goes.

Issue 20's targets, on one core: the MPC's 7-day run (1-minute ticks, 1000 requests per tick) <= 30 s
and hindsight's <= 60 s (median of ``--repeats``); one MPC ``Balancer.step`` p50 <= 2 ms, p99 <= 10 ms,
max <= 50 ms (refit ticks included). Run::

    python benchmarks/bench_sim.py [--days 7] [--repeats 3] [--controllers static,dcaf,pid,mpc,nmpc,hindsight]
        [--baseline DIR]           # the same measurements with the code in DIR (e.g. a git worktree of main)

It prints, for every controller, the wall and CPU time of the run (median of the repeats), that CPU
time split into the ``Balancer.step`` calls ("in step": the controller, its forecaster and the
Balancer) and the rest ("rest": the plant's sub-ticks and policy decisions, the node guard, the
traffic and request samples, the controller's set-up and any background refit), and the
latency of ``Balancer.step`` over all its ticks (p50 / p99 / max, wall clock and this thread's CPU
time: on a shared machine the CPU figures are the ones that do not depend on the other processes);
then the per-phase breakdown of the MPC tick (CPU time) from an instrumented run (``--profile-days``): telemetry validation,
forecaster update/predict,
response curve, QP build, QP solve, refinement, the fallback PID in the shadow, and bookkeeping (the
rest of ``Balancer.step``), each as mean / p99 / max milliseconds per tick (exclusive time: a phase
called inside another counts once). With ``--baseline`` the same script runs in a subprocess on the
code in DIR, its figures are printed beside these, and the decisions of ``--compare-controllers``
(default: the MPC) are compared on ``--compare-days`` of each of ``--compare-traces`` at each of
``--compare-seeds`` (lambda and revenue every tick, revenue, mu, nu).

Timing on a shared machine: pin with ``taskset -c 0`` and quote ``uptime`` beside the figures.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mpc_balancer.cli.outputs import check_file  # noqa: E402
from mpc_balancer.controllers import make_controller  # noqa: E402
from mpc_balancer.sim.experiment import ExperimentConfig, build_simulator, make_policy  # noqa: E402

TARGET_S = {"mpc": 30.0, "hindsight": 60.0}

# phase -> functions whose (exclusive) time it collects; (module, attribute path) as the Balancer reaches them
PHASES = {
    "telemetry validation": [("mpc_balancer.balancer", "to_observation"), ("mpc_balancer.balancer", "Balancer._validate")],
    "forecaster update/predict": [("mpc_balancer.forecast", "TickForecaster.observe"),
                                  ("mpc_balancer.forecast", "TickForecaster.predict")],
    "response curve": [("mpc_balancer.response", "Response.__init__"),
                       ("mpc_balancer.controllers.mpc", "MpcController._refresh_curve")],
    "QP build": [("mpc_balancer.controllers.mpc", "frontier_data"), ("mpc_balancer.frontier", "ResponseCurve.hull")]
                + [("mpc_balancer.mpc.problem", f"{cls}.{m}") for cls in ("QuadraticMpcProblem", "MpcProblem")
                   for m in ("validate", "bounds", "q_vector", "P_matrix", "shift", "planned_cost", "slack")],
    "QP solve": [("mpc_balancer.mpc.solvers", "OsqpMpcSolver.solve")],
    "refinement": [("mpc_balancer.controllers.mpc", "MpcController._refine")],
    "fallback PID (shadow)": [("mpc_balancer.controllers.pid", "PidController.make_step"),
                              ("mpc_balancer.controllers.pid", "PidController.align")],
}
ROOT = ("mpc_balancer.balancer", "Balancer.step")  # its exclusive time is "bookkeeping"


class PhaseProfiler:
    """Exclusive CPU time (this thread's clock) per phase and per tick, by wrapping the functions of
    :data:`PHASES`: on a shared machine, what each phase cost without the time other processes held
    the core."""

    def __init__(self):
        self.stack: list[float] = []
        self.tick: dict = defaultdict(float)
        self.ticks: list[dict] = []
        self.patched: list = []

    def _wrap(self, phase: str, fn):
        prof = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if phase == "bookkeeping" and not prof.stack:  # a tick starts: what ran outside one (the set-up's
                prof.tick = defaultdict(float)  # forecaster fit replays its calibration ticks) is not the tick's
            prof.stack.append(0.0)
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.thread_time() - t0
                child = prof.stack.pop()
                prof.tick[phase] += elapsed - child
                if prof.stack:
                    prof.stack[-1] += elapsed
                elif phase == "bookkeeping":  # the tick is over
                    prof.ticks.append(dict(prof.tick))
                    prof.tick = defaultdict(float)
        return timed

    def __enter__(self):
        for phase, targets in [*PHASES.items(), ("bookkeeping", [ROOT])]:
            for module, path in targets:
                owner = importlib.import_module(module)
                *parents, name = path.split(".")
                for p in parents:
                    owner = getattr(owner, p, None)
                if owner is None or not hasattr(owner, name):
                    continue  # not in this version of the code
                original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
                self.patched.append((owner, name, original))
                setattr(owner, name, self._wrap(phase, original))
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self.patched):
            setattr(owner, name, original)

    def table(self) -> dict:
        names = [*PHASES, "bookkeeping"]
        per = np.array([[t.get(n, 0.0) for n in names] for t in self.ticks]) * 1e3  # (ticks, phases) ms
        total = per.sum(axis=1)
        out = {n: {"mean_ms": float(per[:, i].mean()), "p99_ms": float(np.percentile(per[:, i], 99)),
                   "max_ms": float(per[:, i].max())} for i, n in enumerate(names)}
        out["total"] = {"mean_ms": float(total.mean()), "p99_ms": float(np.percentile(total, 99)), "max_ms": float(total.max())}
        return out


class StepCpuClock:
    """CPU time of every ``Balancer.step`` (this thread's clock: on a shared machine, what the tick
    itself cost, without the time other processes held the core).

    Only outermost calls are recorded (a step called inside another counts in the outer one). A
    controller's set-up may step Balancers of its own before the run's first tick (nmpc trains on
    simulated PID runs: thousands of steps); :meth:`run_ticks` keeps the run's ticks alone."""

    def __enter__(self):
        from mpc_balancer.balancer import Balancer

        self.ms: list[float] = []
        self.original = Balancer.step
        original, ms, depth = self.original, self.ms, [0]

        def step(bal, telemetry):
            depth[0] += 1
            t0 = time.thread_time()
            try:
                return original(bal, telemetry)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    ms.append((time.thread_time() - t0) * 1e3)
        Balancer.step = step
        return self

    def run_ticks(self, ticks: int) -> np.ndarray:
        """The CPU ms of the run's ``ticks`` ticks: the last steps recorded (the set-up's come first)."""
        return np.asarray(self.ms[-ticks:] if ticks else [])

    def __exit__(self, *exc):
        from mpc_balancer.balancer import Balancer

        Balancer.step = self.original


def measure(a) -> dict:
    """Everything this process measures with the code it imports (the current tree or a baseline)."""
    import mpc_balancer

    res = {"code": str(Path(mpc_balancer.__file__).parent.parent), "controllers": {}, "decisions": {}}
    cfg = ExperimentConfig(trace=a.trace, days=a.days, n_requests=a.requests, policy=a.policy)
    sim = build_simulator(cfg)
    policy = make_policy(cfg.policy, sim.cascade)
    for name in [c for c in a.controllers.split(",") if c]:
        walls, cpus, steps, step_cpu = [], [], [], []
        for _ in range(a.repeats):
            with StepCpuClock() as clock:
                c0 = time.process_time()
                run = sim.run(make_controller(name), policy)
                cpus.append(time.process_time() - c0)  # includes the controller's setup (forecaster fit, training)
            walls.append(run.wall_s)
            steps.append(run.log["solve_ms"].to_numpy())
            step_cpu.append(clock.run_ticks(len(run.log)))
        ms, cms = np.concatenate(steps), np.concatenate(step_cpu)
        worst = int(np.argmax(steps[0]))
        in_step = [float(c.sum()) / 1e3 for c in step_cpu]
        res["controllers"][name] = {"wall_s": walls, "wall_median_s": float(np.median(walls)), "ticks": len(steps[0]),
                                    "cpu_s": cpus, "cpu_median_s": float(np.median(cpus)),
                                    "step_cpu_s": in_step, "step_cpu_median_s": float(np.median(in_step)),
                                    "rest_cpu_median_s": float(np.median(np.subtract(cpus, in_step))),
                                    "step_p50_ms": float(np.percentile(ms, 50)), "step_p99_ms": float(np.percentile(ms, 99)),
                                    "step_max_ms": float(ms.max()), "slowest_tick": str(run.log.index[worst]),
                                    "step_cpu_p50_ms": float(np.percentile(cms, 50)), "step_cpu_p99_ms": float(np.percentile(cms, 99)),
                                    "step_cpu_max_ms": float(cms.max())}
    if a.profile_days > 0:
        psim = build_simulator(ExperimentConfig(trace=a.trace, days=a.profile_days, n_requests=a.requests, policy=a.policy))
        with PhaseProfiler() as prof:
            psim.run(make_controller("mpc"), policy)
        res["phases"] = prof.table()
        res["phase_ticks"] = len(prof.ticks)
    seeds = [int(s) for s in a.compare_seeds.split(",") if s] if a.compare_days > 0 else []
    for trace in [t for t in (a.compare_traces or a.trace).split(",") if t]:
        for seed in seeds:
            csim = build_simulator(ExperimentConfig(trace=trace, days=a.compare_days, n_requests=a.requests, policy=a.policy,
                                                    seed=seed))
            for name in [c for c in a.compare_controllers.split(",") if c]:
                run = csim.run(make_controller(name), policy)
                m = run.metrics()
                lam = run.log[[f"lambda_{c}" for c in run.clusters]].to_numpy()
                res["decisions"][f"{trace} {name} seed {seed}"] = {
                    "revenue": m["revenue"], "mu": m["mu"], "nu": m["nu"], "lam": lam.tolist(),
                    "tick_revenue": run.log["revenue"].tolist()}
    return res


def print_results(cur: dict, base: dict | None) -> None:
    b = base or {"controllers": {}}
    print(f"\nclosed loop: wall and CPU s of the run (median of repeats), its CPU s in Balancer.step and in the rest "
          f"(plant, guard, traffic, set-up), Balancer.step ms over all ticks (wall, then CPU time)  [{cur['code']}"
          + (f"  vs baseline {b['code']}]" if base else "]"))
    head = (f"{'controller':<11}{'wall s':>8}{'cpu s':>8}{'in step':>8}{'rest':>7}{'step p50':>9}{'p99':>9}{'max':>9}"
            f"{'| cpu p50':>10}{'p99':>7}{'max':>7}{'target':>9}")
    print(head + (f"{'| base wall':>12}{'cpu s':>8}{'in step':>8}{'rest':>7}{'cpu p50':>8}{'p99':>7}{'max':>7}"
                  f"{'cpu speed-up':>13}" if base else ""))
    for name, r in cur["controllers"].items():
        line = (f"{name:<11}{r['wall_median_s']:>8.1f}{r['cpu_median_s']:>8.1f}{r['step_cpu_median_s']:>8.1f}"
                f"{r['rest_cpu_median_s']:>7.1f}{r['step_p50_ms']:>9.2f}{r['step_p99_ms']:>9.2f}"
                f"{r['step_max_ms']:>9.1f}{'| ':>4}{r['step_cpu_p50_ms']:>6.2f}{r['step_cpu_p99_ms']:>7.2f}{r['step_cpu_max_ms']:>7.1f}"
                f"{f'<= {TARGET_S[name]:g} s' if name in TARGET_S else '':>9}")
        o = b["controllers"].get(name)
        if o:
            line += (f"{'| ':>4}{o['wall_median_s']:>8.1f}{o['cpu_median_s']:>8.1f}{o['step_cpu_median_s']:>8.1f}"
                     f"{o['rest_cpu_median_s']:>7.1f}{o['step_cpu_p50_ms']:>8.2f}"
                     f"{o['step_cpu_p99_ms']:>7.2f}{o['step_cpu_max_ms']:>7.1f}{o['cpu_median_s'] / r['cpu_median_s']:>12.2f}x")
        print(line + f"   (runs wall/cpu: {', '.join(f'{w:.1f}/{c:.1f}' for w, c in zip(r['wall_s'], r['cpu_s']))}; "
                     f"slowest tick {r['slowest_tick']})")
    if "phases" in cur:
        print(f"\none MPC tick by phase, instrumented run of {cur['phase_ticks']} ticks (CPU ms per tick: mean / p99 / max)")
        base_cols = f"{'| base mean':>13}{'p99':>8}{'max':>8}" if base and "phases" in b else ""
        print(f"{'phase':<28}{'mean':>8}{'p99':>8}{'max':>8}{'share':>8}" + base_cols)
        tot = cur["phases"]["total"]["mean_ms"]
        for ph, r in cur["phases"].items():
            line = f"{ph:<28}{r['mean_ms']:>8.3f}{r['p99_ms']:>8.2f}{r['max_ms']:>8.1f}{100 * r['mean_ms'] / tot:>7.1f}%"
            if base and "phases" in b:
                o = b["phases"][ph]
                line += f"{'| ':>5}{o['mean_ms']:>8.3f}{o['p99_ms']:>8.2f}{o['max_ms']:>8.1f}"
            print(line)
    if base and cur["decisions"]:
        print("\ndecisions against the baseline (same traffic and requests): lambda every tick and revenue every tick "
              "identical, max relative lambda difference, revenue, mu, nu current vs baseline (identical: bit for bit)")
        for run, r in cur["decisions"].items():
            o = b["decisions"].get(run)
            if o is None:
                print(f"{run}: not in the baseline's figures")
                continue
            la, lb = np.asarray(r["lam"]), np.asarray(o["lam"])
            rel = float(np.max(np.abs(la / lb - 1))) if la.shape == lb.shape else float("nan")
            same = np.array_equal(la, lb) and r.get("tick_revenue") == o.get("tick_revenue", r.get("tick_revenue"))
            print(f"{run}: identical={same}  max rel diff {rel:.2e}  revenue {r['revenue']!r} vs {o['revenue']!r} "
                  f"({100 * (r['revenue'] / o['revenue'] - 1):+.4f}%)  mu {r['mu']!r} vs {o['mu']!r}  nu {r['nu']!r} vs {o['nu']!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", default="nasa")
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--controllers", default="static,dcaf,pid,mpc,nmpc,hindsight")
    ap.add_argument("--policy", default="pretrained", help="the README's default policy (oracle: the exact argmax)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile-days", type=float, default=2.0, help="days of the instrumented MPC run (0: none); two "
                    "days include a forecaster refit")
    ap.add_argument("--baseline", default=None, help="directory of the code to compare against (e.g. a worktree of main)")
    ap.add_argument("--baseline-repeats", type=int, default=None, help="repeats for the baseline (default: --repeats)")
    ap.add_argument("--compare-days", type=float, default=1.0)
    ap.add_argument("--compare-seeds", default="0,1,2")
    ap.add_argument("--compare-traces", default=None, help="traces of the decision comparison (default: --trace), e.g. "
                    "nasa,elb,nyc-taxi")
    ap.add_argument("--compare-controllers", default="mpc", help="controllers whose decisions are compared (e.g. mpc,pid,hindsight)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    ap.add_argument("--emit", default=None, help=argparse.SUPPRESS)  # subprocess mode: write the measurements here
    a = ap.parse_args()
    if not a.emit:  # checked before the runs: an existing file is kept without --force, a missing directory made now
        try:
            check_file("--json", a.json, a.force)
        except ValueError as e:
            ap.error(str(e))
    if "nmpc" in f"{a.controllers},{a.compare_controllers}".split(","):  # the only controller that uses torch (training)
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:
            pass
    if a.emit:
        Path(a.emit).write_text(json.dumps(measure(a)))
        return
    base = None
    if a.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "baseline.json"
            argv = [x for x in sys.argv[1:]]
            if a.baseline_repeats is not None:
                argv += ["--repeats", str(a.baseline_repeats)]
            env = {**os.environ, "PYTHONPATH": str(Path(a.baseline).resolve())}
            subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--emit", str(out)], env=env, check=True)
            base = json.loads(out.read_text())
    cur = measure(a)
    print_results(cur, base)
    if a.json:
        Path(a.json).write_text(json.dumps({"current": cur, "baseline": base}))


if __name__ == "__main__":
    main()
