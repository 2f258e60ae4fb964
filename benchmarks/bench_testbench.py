"""TestBench accuracy and repeatability on the built-in workloads.

1. Left-out accuracy: a cost table (default: the shipped one, fitted on knots that exclude the
   queue lengths below) predicts the cost at LEFT-OUT queue lengths; each is measured fresh and
   the relative error reported.
2. Repeatability: the same load test is run ``--runs`` times (independent runs, one after the
   other); per bucket, the coefficient of variation of the bucket's cost across runs.

With ``--same-session`` the knots and the left-out queue lengths are measured together in one
interleaved load test per run; the table is fitted on the knots of that run and predicts the
left-out lengths of the same run (fit accuracy without the drift of a shared machine between
sessions).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_testbench.py [--runs 3] [--table FILE] [--json OUT [--force] | --same-session]

Process CPU time is the cost; wall time is reported alongside (the machine may be shared).
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from mpc_balancer.cli.outputs import check_file  # noqa: E402
from policies.cost_table import DEFAULT_PATH, load_cost_table  # noqa: E402
from policies.testbench.evaluate import session_factor, table_for  # noqa: E402
from policies.testbench.fit import fit_queue_table  # noqa: E402
from policies.testbench.provenance import machine_info, now_iso  # noqa: E402
from policies.testbench.runner import LoadTestConfig, run_load_test  # noqa: E402
from policies.testbench.workloads import resolve_workload  # noqa: E402

LEFT_OUT = {"builtin:retrieval": (75, 200, 350), "builtin:prerank": (75, 150, 275, 420), "builtin:ranking": (6, 12, 32, 50, 80)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--table", default=str(DEFAULT_PATH))
    ap.add_argument("--json", default=None)
    ap.add_argument("--same-session", action="store_true")
    ap.add_argument("--duration", type=float, default=0.3, help="seconds per repeat window")
    ap.add_argument("--repeats", type=int, default=9, help="interleaved windows per bucket")
    ap.add_argument("--only", default=None, help="comma-separated workloads (default: all built-ins)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    args = ap.parse_args()
    if args.json and args.same_session:
        ap.error("--json is written by the left-out run only, not with --same-session")
    try:  # checked before the runs: an existing file is kept without --force, a missing directory made now
        check_file("--json", args.json, args.force)
    except ValueError as e:
        ap.error(str(e))
    if args.same_session:
        return same_session(args)
    table = load_cost_table(args.table)
    knots = {m["workload"]: m["queues"] for m in table.provenance["measurements"]}
    w0, c0 = time.perf_counter(), time.process_time()
    rows = []
    for name, queues in _selected(args).items():
        overlap = set(queues) & set(knots.get(name, ()))
        if overlap:
            raise SystemExit(f"{name}: queues {sorted(overlap)} are knots of the table, not left out")
        wl = resolve_workload(name)
        cfg = LoadTestConfig(queues=queues, duration_s=args.duration, repeats=args.repeats)
        runs = [run_load_test(wl, cfg) for _ in range(args.runs)]
        preds = np.array([float(table_for(table, wl.stage, b["variant"])(b["queue"])) for b in runs[0]])
        # one speed factor per run (session) and stage: measured / predicted, geometric mean
        factors = np.array([session_factor(preds, [b["cpu_ms"] for b in r]) for r in runs])
        for i, b in enumerate(runs[0]):
            vals = np.array([r[i]["cpu_ms"] for r in runs])
            pred = float(preds[i])
            rel = vals / factors
            rows.append({"workload": name, "variant": b["variant"], "queue": b["queue"], "predicted_ms": pred,
                         "runs_ms": vals.tolist(), "mean_ms": float(vals.mean()),
                         "cv_runs": float(vals.std(ddof=1) / vals.mean()) if len(vals) > 1 else 0.0,
                         "cv_repeats_median": float(np.median([r[i]["cv"] for r in runs])),
                         "err_each": ((pred - vals) / vals).tolist(), "err_mean": (pred - vals.mean()) / vals.mean(),
                         "factors": factors.tolist(), "err_calibrated": ((pred * factors - vals) / vals).tolist(),
                         "cv_runs_calibrated": float(rel.std(ddof=1) / rel.mean()) if len(vals) > 1 else 0.0,
                         "wall_ms": float(np.mean([r[i]["wall_ms"] for r in runs]))})
    print(f"table {args.table} (created {table.provenance['created']}); {args.runs} fresh runs per left-out bucket, "
          f"{args.repeats} x {args.duration} s windows per bucket")
    print(f"{'workload':<18}{'var':>4}{'queue':>6}{'pred ms':>9}{'fresh ms (runs)':>28}{'err% mean':>10}{'err% worst':>11}"
          f"{'CV runs%':>9}{'CV reps%':>9}{'wall ms':>9}")
    for r in rows:
        runs_txt = " ".join(f"{v:.3f}" for v in r["runs_ms"])
        worst = max(r["err_each"], key=abs)
        print(f"{r['workload']:<18}{r['variant']:>4}{r['queue']:>6}{r['predicted_ms']:>9.3f}{runs_txt:>28}{100 * r['err_mean']:>+10.1f}"
              f"{100 * worst:>+11.1f}{100 * r['cv_runs']:>9.1f}{100 * r['cv_repeats_median']:>9.1f}{r['wall_ms']:>9.3f}")
    err_mean = np.abs([r["err_mean"] for r in rows])
    err_all = np.abs(np.concatenate([r["err_each"] for r in rows]))
    cv = np.array([r["cv_runs"] for r in rows])
    print(f"left-out |error| vs mean of fresh runs: median {100 * np.median(err_mean):.1f}%, max {100 * err_mean.max():.1f}%, "
          f"within 10%: {int((err_mean <= 0.10).sum())}/{len(rows)}")
    print(f"left-out |error| vs each fresh run:     median {100 * np.median(err_all):.1f}%, max {100 * err_all.max():.1f}%, "
          f"within 10%: {int((err_all <= 0.10).sum())}/{len(err_all)}")
    print(f"run-to-run CV: median {100 * np.median(cv):.1f}%, max {100 * cv.max():.1f}%, within 5%: {int((cv <= 0.05).sum())}/{len(cv)}")
    ec = np.abs(np.concatenate([r["err_calibrated"] for r in rows]))
    cvc = np.array([r["cv_runs_calibrated"] for r in rows])
    facs = {r["workload"]: r["factors"] for r in rows}
    print("session speed factors (measured/table, per run): " + "; ".join(f"{k} " + " ".join(f"{v:.2f}" for v in f) for k,
                                                                          f in facs.items()))
    print(f"after one speed factor per run and stage: left-out |error| median {100 * np.median(ec):.1f}%, max {100 * ec.max():.1f}%, "
          f"within 10%: {int((ec <= 0.10).sum())}/{len(ec)}; run-to-run CV median {100 * np.median(cvc):.1f}%, "
          f"max {100 * cvc.max():.1f}%, within 5%: {int((cvc <= 0.05).sum())}/{len(cvc)}")
    print(f"bench: {time.perf_counter() - w0:.1f} s wall, {time.process_time() - c0:.1f} s CPU; load average "
          f"{machine_info().get('load_average')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"created": now_iso(), "table": args.table, "machine": machine_info(), "rows": rows}, f, indent=1)
    return 0


def _selected(args) -> dict:
    if not args.only:
        return LEFT_OUT
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(LEFT_OUT))
    if unknown:
        raise SystemExit(f"--only: unknown workloads {unknown}; choose from {sorted(LEFT_OUT)}")
    return {n: LEFT_OUT[n] for n in names}


def same_session(args) -> int:
    """Knots + left-out lengths in one interleaved load test per run; fit on the knots of the run."""
    knots = {m["workload"]: m["queues"] for m in load_cost_table(args.table).provenance["measurements"]}
    w0, c0 = time.perf_counter(), time.process_time()
    errs, cvs, lines = [], [], []
    for name, left in _selected(args).items():
        wl = resolve_workload(name)
        queues = tuple(sorted(set(knots[name]) | set(left)))
        cfg = LoadTestConfig(queues=queues, duration_s=args.duration, repeats=args.repeats)
        runs = [run_load_test(wl, cfg) for _ in range(args.runs)]
        for i, b in enumerate(runs[0]):
            vals = np.array([r[i]["cpu_ms"] for r in runs])
            cv = float(vals.std(ddof=1) / vals.mean()) if len(vals) > 1 else 0.0
            cvs.append(cv)
            if b["queue"] not in left:
                continue
            e = []
            for r in runs:
                fit = fit_queue_table([x for x in r if x["variant"] == b["variant"] and x["queue"] in knots[name]])
                e.append((float(fit(b["queue"])) - r[i]["cpu_ms"]) / r[i]["cpu_ms"])
            errs.extend(e)
            lines.append(f"{name:<18}{b['variant']:>4}{b['queue']:>6}  measured " + " ".join(f"{v:.3f}" for v in vals)
                         + "  err% " + " ".join(f"{100 * x:+.1f}" for x in e) + f"  CV runs {100 * cv:.1f}%")
    print(f"same-session: knots of {args.table} + left-out lengths, {args.runs} runs, {args.duration} s windows")
    print("\n".join(lines))
    errs, cvs = np.abs(errs), np.array(cvs)
    print(f"left-out |error| (fit on the same run's knots): median {100 * np.median(errs):.1f}%, max {100 * errs.max():.1f}%, "
          f"within 10%: {int((errs <= 0.10).sum())}/{len(errs)}")
    print(f"run-to-run CV over all buckets: median {100 * np.median(cvs):.1f}%, max {100 * cvs.max():.1f}%, within 5%: "
          f"{int((cvs <= 0.05).sum())}/{len(cvs)}")
    print(f"bench: {time.perf_counter() - w0:.1f} s wall, {time.process_time() - c0:.1f} s CPU; load average "
          f"{machine_info().get('load_average')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
