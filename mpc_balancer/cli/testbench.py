"""``mpc-balancer testbench``: measure stage costs by load tests (run), fit a cost table (fit) and
check a table against fresh measurements (check)."""
from __future__ import annotations

import time

from .args import int_list, nonnegative, positive
from .outputs import declare_outputs

DEFAULT_QUEUES = "25,50,100,200,400"


def register(sub):
    p = sub.add_parser("testbench", help="AutoBucket TestBench: measured cost per request -> cost table")
    tsub = p.add_subparsers(dest="testbench_command", metavar="SUBCOMMAND")
    tsub.required = True

    r = tsub.add_parser("run", help="load-test a workload over queue lengths and variants")
    r.add_argument("--workload", required=True, help="builtin:retrieval|builtin:prerank|builtin:ranking or module:function")
    r.add_argument("--stage", choices=["retrieval", "prerank", "rank"], default=None,
                   help="stage of a module:function workload (default rank)")
    r.add_argument("--variants", default=None, help="comma-separated variants (model switch / channel kind); default: all the workload has")
    r.add_argument("--queues", default=DEFAULT_QUEUES, help=f"comma-separated queue lengths (default {DEFAULT_QUEUES})")
    r.add_argument("--qps", type=positive(float), default=None,
                   help="fixed request rate; default: automatic, ~50%% utilisation of one core")
    r.add_argument("--duration", type=positive(float), default=0.3, help="seconds per repeat window (default 0.3)")
    r.add_argument("--warmup", type=nonnegative(float), default=0.05, help="warm-up seconds before each window (default 0.05)")
    r.add_argument("--repeats", type=positive(int), default=9, help="repeats per bucket, interleaved across buckets (default 9)")
    r.add_argument("--estimator", choices=["median", "mean"], default="median", help="bucket cost from its repeats (default median)")
    r.add_argument("--value-buckets", type=positive(int, 1000), default=1, help="number of request value buckets (default 1)")
    r.add_argument("--machines", type=positive(int), default=1)
    r.add_argument("--cores", type=positive(int), default=1, help="cores the utilisation p%% is measured against (default 1)")
    r.add_argument("--json", default=None, help="write the measurements JSON here (input of `testbench fit`)")
    declare_outputs(r, files=("--json",))
    r.set_defaults(func=run)

    f = tsub.add_parser("fit", help="fit isotonic queue->cost tables and write a cost table")
    f.add_argument("--measurements", required=True, nargs="+", action="extend", help="measurement JSON files (all three stages)")
    f.add_argument("--out", required=True, help="cost table JSON to write")
    f.add_argument("--metric", choices=["cpu", "formula"], default="cpu",
                   help="cpu: robust mean process CPU per request (default); formula: p%% x machines x cores / QPS")
    declare_outputs(f, files=("--out",))
    f.set_defaults(func=fit)

    c = tsub.add_parser("check", help="compare a cost table's predictions with measurements")
    c.add_argument("--cost-table", required=True)
    c.add_argument("--measurements", required=True, nargs="+", action="extend")
    c.add_argument("--tolerance", type=nonnegative(float), default=0.10, help="relative error allowed (default 0.10); exit 1 beyond it")
    c.add_argument("--calibrate", action="store_true",
                   help="scale each measurement file's predictions by one session speed factor before comparing (shape check)")
    c.set_defaults(func=check)


def run(args) -> int:
    from policies.testbench.measurements import measurement_doc, save_measurements
    from policies.testbench.provenance import machine_info, now_iso
    from policies.testbench.runner import LoadTestConfig, run_load_test
    from policies.testbench.workloads import resolve_workload

    variants = int_list(args.variants, "--variants") if args.variants is not None else None  # "" is an error, not "all"
    if args.value_buckets < 1:
        raise ValueError(f"--value-buckets must be >= 1, got {args.value_buckets}")
    config = LoadTestConfig(queues=int_list(args.queues, "--queues"), qps=args.qps, duration_s=args.duration,
                            warmup_s=args.warmup, repeats=args.repeats, value_buckets=tuple(range(args.value_buckets)),
                            machines=args.machines, cores=args.cores, estimator=args.estimator)
    wl = resolve_workload(args.workload, stage=args.stage, variants=variants)
    started, w0, c0 = now_iso(), time.perf_counter(), time.process_time()
    print(f"workload {args.workload} (stage {wl.stage}, variants {list(wl.variants)}): "
          f"{len(config.queues) * len(wl.variants) * len(config.value_buckets)} buckets "
          f"x {config.repeats} repeats x {config.duration_s:g} s")
    print(f"{'value':>5} {'variant':>7} {'queue':>6} {'qps':>8} {'cpu ms':>9} {'+-std':>8} {'cv%':>6} {'formula ms':>11} {'wall ms':>8} "
          f"{'util':>6}")

    def show(i, n, b):
        print(f"{b['value_bucket']:>5} {b['variant']:>7} {b['queue']:>6} {b['achieved_qps']:>8.1f} {b['cpu_ms']:>9.4f} "
              f"{b['cpu_ms_std']:>8.4f} "
              f"{100 * b['cv']:>6.2f} {b['formula_ms']:>11.4f} {b['wall_ms']:>8.4f} {b['utilisation']:>6.3f}", flush=True)

    results = run_load_test(wl, config, progress=show)
    doc = measurement_doc(args.workload, wl, config, results, machine_info(), started, now_iso(),
                          time.perf_counter() - w0, time.process_time() - c0)
    cvs = [b["cv"] for b in results]
    print(f"repeat agreement: CV median {100 * sorted(cvs)[len(cvs) // 2]:.2f}%, max {100 * max(cvs):.2f}% "
          f"({doc['provenance']['wall_s']:.1f} s wall, {doc['provenance']['cpu_s']:.1f} s CPU)")
    if args.json:
        save_measurements(doc, args.json)
        print(f"measurements written to {args.json}")
    return 0


def fit(args) -> int:
    from policies.testbench.fit import fit_cost_table
    from policies.testbench.measurements import load_measurements

    docs = [load_measurements(p) for p in args.measurements]
    table = fit_cost_table(docs, metric=args.metric, tool=f"mpc-balancer testbench {_version()}")
    table.save(args.out)
    print(f"cost table written to {args.out} (metric {table.provenance['metric']}, {len(docs)} measurement files)")
    for name, t in [("retrieval channel", table.retrieval_channel), ("retrieval switch", table.retrieval_switch),
                    *[(f"prerank model {m}", t) for m, t in enumerate(table.prerank_models)], ("rank", table.rank)]:
        knots = "  ".join(f"{q:g}:{c:.4f}" for q, c in zip(t.queue, t.cost_ms))
        print(f"  {name:<18} queue:ms  {knots}")
    _print_cascade_ratios(table)
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mpc-balancer")
    except PackageNotFoundError:
        return "unknown"


def _print_cascade_ratios(table) -> None:
    from policies.cascade import Cascade, CascadeSpec

    cas = Cascade(CascadeSpec(cost_table=table))
    for g, name in enumerate(cas.clusters):
        c = cas.cost[g]
        print(f"  default cascade {name:<10} cost/request {c.min():.4f} .. {c.max():.4f} ms  max/min {c.max() / c.min():.1f}")


def check(args) -> int:
    from policies.cost_table import load_cost_table
    from policies.testbench.evaluate import compare, max_abs_error
    from policies.testbench.measurements import load_measurements

    table = load_cost_table(args.cost_table)
    rows = compare(table, [load_measurements(p) for p in args.measurements], calibrate=args.calibrate)
    print(f"{'stage':<10} {'variant':>7} {'queue':>6} {'predicted ms':>13} {'measured ms':>12} {'error%':>8} {'factor':>7}")
    for r in rows:
        print(f"{r['stage']:<10} {r['variant']:>7} {r['queue']:>6} {r['predicted_ms']:>13.4f} {r['measured_ms']:>12.4f} "
              f"{100 * r['rel_error']:>+8.2f} {r['factor']:>7.3f}")
    worst = max_abs_error(rows)
    ok = worst <= args.tolerance
    print(f"max |error| {100 * worst:.2f}% over {len(rows)} buckets: {'within' if ok else 'BEYOND'} {100 * args.tolerance:.0f}%")
    return 0 if ok else 1
