"""``mpc-balancer simulate`` and ``mpc-balancer compare``: closed-loop runs on a trace."""
from __future__ import annotations

import sys

from ..jsonio import write_json
from ..sim.experiment import ExperimentConfig, format_table, parse_overrides, run_comparison, write_outputs
from .args import name_list, positive
from .config import add_config_option
from .outputs import declare_outputs


def seed(text):
    """An argparse type: a random seed, an integer in [0, 2**32)."""
    try:
        v = int(text)
    except ValueError:
        raise_arg(f"expected an integer, got {text!r}")
    if not 0 <= v < 2 ** 32:
        raise_arg(f"must be an integer in [0, 2**32), got {text!r}")
    return v


MAX_TICKS = 1_000_000  # per run: a million ticks is 1.9 years at 60 s


def check_run_length(days: float, period: float, horizon: int | None) -> None:
    """``--days``, ``--period`` and ``--horizon`` together: a period of at least 1 s, at least two ticks, at most
    ``MAX_TICKS``, and a horizon within a day (the forecaster's model is daily)."""
    if period < 1:
        raise ValueError(f"--period {period:g} s is below 1 s: the trace is interpolated to the period over its whole span")
    ticks = days * 86400.0 / period
    if ticks < 2:
        raise ValueError(f"--days {days:g} is {ticks:.3g} control ticks of --period {period:g} s; need at least 2")
    if ticks > MAX_TICKS:
        raise ValueError(f"--days {days:g} at --period {period:g} s is {ticks:,.0f} ticks; at most {MAX_TICKS:,} "
                         "(raise --period or lower --days)")
    if horizon is not None and horizon * period > 86400:
        raise ValueError(f"--horizon {horizon} ticks of --period {period:g} s reaches beyond one day; "
                         f"at most {int(86400 // period)} (the traffic forecast is a daily model)")


def raise_arg(msg):
    import argparse

    raise argparse.ArgumentTypeError(msg)


def add_common(p):
    p.add_argument("--trace", default="nasa", help="bundled trace (nasa, nyc-taxi, elb) or a CSV path (timestamp,<value>; .gz ok)")
    p.add_argument("--days", type=positive(float, 3650.0), default=7.0,
                   help="simulate the last D days (default 7); earlier data is history")
    p.add_argument("--start", default=None, help="start the window at this timestamp instead of D days before the end")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--period", type=positive(float, 86400.0), default=60.0, help="control period in seconds (default 60)")
    p.add_argument("--requests", type=positive(int, 1_000_000), default=1000, help="sampled requests per tick (default 1000)")
    p.add_argument("--sampling", choices=["stratified", "iid"], default="stratified",
                   help="per-tick request sample: stratified (Latin hypercube, default) or iid draws")
    p.add_argument("--peak-qps", type=positive(float, 1e9), default=20000.0, help="QPS the trace's peak is scaled to")
    p.add_argument("--traffic", choices=["rate", "raw"], default="rate", help="rate: de-noised trace rate (default); raw: replay counts")
    p.add_argument("--policy", default="pretrained",
                   help="per-request policy: pretrained (the shipped AWRQ-Mixer bundle), oracle (exact argmax), or a bundle path")
    p.add_argument("--cost-table", default=None, help="cost table JSON from `mpc-balancer testbench fit`")
    p.add_argument("--events", default=None, help="announced events CSV (start,end,name[,expected_multiplier]) for forecasting controllers")
    p.add_argument("--subticks", type=positive(int), default=12,
                   help="plant steps per control period (default 12: 5 s at 60 s); mu and nu are measured per sub-tick")
    p.add_argument("--guard", choices=["proportional", "maxpower", "none"], default="proportional",
                   help="node-local overload guard under every controller (default proportional; maxpower: DCAF's rule); "
                        "its settings with --set guard.KEY=VALUE (gain, step, max_step, release, halflife)")
    p.add_argument("--bursts", default=None, metavar="PER_DAY,FMIN-FMAX,MMIN-MMAX",
                   help="inject unannounced bursts, e.g. 10,3-6,1-5 (10 a day, 3-6x the traffic, 1-5 minutes; seeded by --seed)")
    p.add_argument("--outages", default=None, metavar="PER_DAY,MINUTES",
                   help="inject outages (no traffic, then a retry surge), e.g. 1,20 (seeded by --seed)")
    p.add_argument("--horizon", type=positive(int), default=None, help="MPC / NMPC horizon in ticks")
    p.add_argument("--objective", choices=["revenue", "tracking"], default=None, help="MPC objective (default revenue)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="controller or plant option, e.g. pid.kp=0.4, plant.target_load=0.85")
    p.add_argument("--json", default=None, help="write the results JSON here")
    p.add_argument("--out", default=None, help="directory for per-tick CSV logs and a PNG plot")
    p.add_argument("--no-progress", action="store_true")
    declare_outputs(p, files=("--json",), dirs=("--out",))


def register(sub):
    p = sub.add_parser("simulate", help="closed-loop simulation of one controller on a trace")
    add_common(p)
    add_config_option(p)
    p.add_argument("--controller", default="pid", help="static, dcaf, pid, ...")
    p.set_defaults(func=lambda a: run(a, [a.controller]))
    p = sub.add_parser("compare", help="closed-loop comparison of controllers on the same traffic and requests")
    add_common(p)
    add_config_option(p)
    p.add_argument("--controllers", default="static,dcaf,pid", help="comma-separated (default static,dcaf,pid)")
    p.set_defaults(func=lambda a: run(a, name_list(a.controllers)))


def settings(args, controllers: list[str]) -> tuple[ExperimentConfig, dict, dict]:
    """The experiment, controller options and plant options of a parsed simulate/compare command
    (also how ``tune`` turns each trial into a simulate run)."""
    check_run_length(args.days, args.period, args.horizon if {"mpc", "nmpc", "shooting"} & set(controllers) else None)
    cfg = ExperimentConfig(trace=args.trace, days=args.days, start=args.start, seed=args.seed, period_s=args.period,
                           n_requests=args.requests, sampling=args.sampling, peak_qps=args.peak_qps, traffic_mode=args.traffic,
                           policy=args.policy,
                           cost_table=args.cost_table, events=args.events, subticks=args.subticks, guard=args.guard,
                           bursts=args.bursts, outages=args.outages)
    # a --config file's tables come first in args.set (cli/config.py); --horizon and --objective
    # override the file, --set overrides both
    n_file = len(getattr(args, "config_set", ()))
    ctrl_opts, plant_opts = parse_overrides((args.set or [])[:n_file])
    for name in controllers:
        if name in ("mpc", "nmpc", "shooting") and args.horizon is not None:
            ctrl_opts.setdefault(name, {})["horizon"] = args.horizon
        if name == "mpc" and args.objective is not None:
            ctrl_opts.setdefault(name, {})["objective"] = args.objective
    cli_ctrl, cli_plant = parse_overrides((args.set or [])[n_file:])
    for name, opts in cli_ctrl.items():
        ctrl_opts.setdefault(name, {}).update(opts)
    plant_opts.update(cli_plant)
    cfg.guard = {"rule": args.guard, **ctrl_opts.pop("guard", {})}  # --set guard.max_step=8
    return cfg, ctrl_opts, plant_opts


def run(args, controllers: list[str]) -> int:
    cfg, ctrl_opts, plant_opts = settings(args, controllers)
    runs, summary = run_comparison(cfg, controllers, ctrl_opts, plant_opts, progress=not args.no_progress and sys.stderr.isatty())
    print(format_table(summary))
    if args.json:
        write_json(args.json, summary)
    if args.out:
        write_outputs(args.out, runs, summary)
        print(f"logs and plot written to {args.out}")
    return 0
