"""``mpc-balancer paper ab|table3``: MaRCA's online A/B and Table 3 in closed loop (see mpc_balancer/sim/paper.py)."""
from __future__ import annotations

from ..jsonio import write_json
from .args import name_list, positive
from .outputs import declare_outputs

# 5 seeds x 3 traces of the A/B, one day each: measured 1038 s wall, 2048 s CPU (137 CPU-s per (trace, seed)
# and simulated day) on 2 cores with --jobs 2, the default; see the README
DEFAULT_DAYS = 1.0
DEFAULT_JOBS = 2


def register(sub) -> None:
    p = sub.add_parser("paper", help="MaRCA's headline tables in closed loop: the A/B (ab) and feedback vs MPC (table3)")
    psub = p.add_subparsers(dest="paper_command", metavar="TABLE")
    psub.required = True
    for table, text in (("ab", ("Static, DCAF, RL-MPCA, MaRCA-Feedback, MaRCA-MPC: revenue, GMV, impressions, clicks, "
                                 "CTR relative to Static")),
                        ("table3", "MaRCA-Feedback vs MaRCA-MPC: mu and nu per cluster")):
        t = psub.add_parser(table, help=text, description=text + "; mean +- std over traces x seeds.")
        t.add_argument("--traces", default="nasa,elb,nyc-taxi", help="comma list of traces (default: nasa,elb,nyc-taxi)")
        t.add_argument("--seeds", default="0-4", help="seeds, e.g. 0-4 or 0,1,2 (default: 0-4)")
        t.add_argument("--days", type=positive(float), default=DEFAULT_DAYS,
                       help=f"simulated days per run, the last days of each trace (default: {DEFAULT_DAYS:g})")
        t.add_argument("--requests", type=positive(int, 1_000_000), default=1000, help="sampled requests per tick (default: 1000)")
        t.add_argument("--jobs", type=positive(int, 64), default=DEFAULT_JOBS,
                       help=f"processes, one (trace, seed) pair at a time each (default: {DEFAULT_JOBS})")
        t.add_argument("--from", dest="from_runs", metavar="RESULTS_JSON",
                       help="summarise the runs of an earlier --out DIR/results.json instead of running (e.g. table3 "
                            "from the A/B's MaRCA arms: the same runs); --traces, --seeds, --days are then the file's")
        t.add_argument("--json", help="write the table as JSON to this file")
        t.add_argument("--out", help="directory for table.md, bars.png and results.json (every run's totals)")
        declare_outputs(t, files=("--json",), dirs=("--out",))
        t.set_defaults(func=_run, table=table)


def _run(args) -> int:
    from ..sim.paper import (
        PaperConfig,
        format_table,
        json_document,
        parse_seeds,
        run_table,
        table_from_runs,
        write_outputs,
    )
    from ..traces import load_trace

    if args.from_runs:
        doc = table_from_runs(args.from_runs, args.table)
    else:
        traces = tuple(name_list(args.traces))
        for t in traces:
            load_trace(t)  # fail fast on a bad trace name
        cfg = PaperConfig(table=args.table, traces=traces, seeds=parse_seeds(args.seeds), days=args.days,
                          n_requests=args.requests, jobs=args.jobs)
        doc = run_table(cfg)
    print(format_table(doc))
    print(f"wall {doc['wall_s']:.0f}s, CPU {doc['cpu_s']:.0f}s over {len(doc['pairs'])} (trace, seed) pairs")
    if args.json:
        write_json(args.json, json_document(doc))
        print(f"wrote {args.json}")
    if args.out:
        write_outputs(args.out, doc)
        print(f"wrote {args.out}/table.md, bars.png, results.json")
    return 0
