"""``mpc-balancer spike-test`` and ``mpc-balancer fault-test``."""
from __future__ import annotations

from ..jsonio import write_json
from .args import names, positive
from .config import add_config_option
from .outputs import declare_outputs
from .simulate import seed

SPIKE_MAX_MIN = 240  # the spike test simulates 6 h from 2 h before the spike: 4 h (240 min) after its start


def register(sub):
    p = sub.add_parser("spike-test", help="DCAF-style spike: traffic x FACTOR in one tick, announced or not")
    p.add_argument("--controllers", default="pid,mpc")
    p.add_argument("--factor", type=positive(float), default=8.0)
    p.add_argument("--duration", type=positive(int, SPIKE_MAX_MIN), default=30,
                   help=f"spike length in minutes (default 30; at most {SPIKE_MAX_MIN}, the simulated time after its start)")
    p.add_argument("--announced", action="store_true", help="the spike is in the forecasters' event calendar")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--requests", type=positive(int), default=1000,
                   help="sampled requests per tick (default 1000, as in simulate and compare)")
    p.add_argument("--subticks", type=positive(int), default=12, help="plant steps per control period (default 12: 5 s)")
    p.add_argument("--guard", choices=["proportional", "maxpower", "none"], default="proportional",
                   help="node-local overload guard (default proportional)")
    p.add_argument("--set", action="append", metavar="CONTROLLER.KEY=VALUE", help="controller option, e.g. mpc.max_fall=4")
    p.add_argument("--json", default=None)
    declare_outputs(p, files=("--json",))
    add_config_option(p)
    p.set_defaults(func=spike)
    p = sub.add_parser("fault-test", help="fault matrix: each telemetry/actuator/solver/restart fault for a stretch of a day")
    p.add_argument("--controllers", default="pid,mpc")
    p.add_argument("--trace", default="nasa")
    p.add_argument("--days", type=positive(float, 7.0), default=1.0, help="the last D days of the trace (default 1)")
    p.add_argument("--faults", default=None, help="comma-separated subset of the faults (default all)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--requests", type=positive(int, 1_000_000), default=1000, help="sampled requests per tick (default 1000)")
    p.add_argument("--json", default=None, help="write the matrix as JSON here")
    p.add_argument("--out", default=None, help="directory for the per-tick CSV log of every run")
    declare_outputs(p, files=("--json",), dirs=("--out",))
    p.set_defaults(func=fault_test)


def _controllers(text: str) -> list[str]:
    """``--controllers`` as a non-empty list without repeats.

    An empty list would print an empty table (spike-test) or fail on a missing key (fault-test),
    and a repeated name runs once: both are errors naming the option and the value.
    """
    vals = names(text, "--controllers")
    repeated = sorted({v for v in vals if vals.count(v) > 1})
    if repeated:
        raise ValueError(f"--controllers {text!r} names {', '.join(repeated)} more than once")
    return vals


def spike(args) -> int:
    from ..sim.config import check_section
    from ..sim.experiment import parse_overrides
    from ..sim.scenarios import dump, format_spike, run_spike_test

    names = _controllers(args.controllers)
    opts, plant = parse_overrides(args.set)
    # --set for a controller that is not run would be ignored (a --config file's tables of such
    # controllers are dropped before they get here: cli/config.py, set_items)
    n_file = len(getattr(args, "config_set", ()))
    cli_ctrl, _ = parse_overrides((args.set or [])[n_file:])
    absent = sorted(set(cli_ctrl) - set(names) - {"guard"})
    if absent:
        raise ValueError(f"--set {absent[0]}.{next(iter(cli_ctrl[absent[0]]))}=...: {', '.join(absent)} is not in "
                         f"--controllers {args.controllers!r}, so the option would have no effect")
    for section, values in opts.items():  # an unknown key or a bad value, named, before any run
        # guard.rule is --guard's value (as under simulate), not an option of the guard's table
        check_section(section, {k: v for k, v in values.items() if (section, k) != ("guard", "rule")}, "--set")
    guard = {"rule": args.guard, **opts.pop("guard", {})}
    if plant:
        raise ValueError(f"spike-test takes controller options only (--set CONTROLLER.KEY=VALUE); its plant is fixed, "
                         f"got plant.{', plant.'.join(plant)}")
    res = run_spike_test(names, factor=args.factor, announced=args.announced, duration_min=args.duration, seed=args.seed,
                         n_requests=args.requests, controller_options=opts, subticks=args.subticks, guard=guard)
    print(format_spike(res))
    if args.json:
        dump(res, args.json)
    return 0


def fault_test(args) -> int:
    import sys
    from pathlib import Path

    from ..sim.faults import FAULTS, format_fault_matrix, run_fault_matrix

    faults = FAULTS if args.faults is None else tuple(names(args.faults, "--faults"))
    res = run_fault_matrix(_controllers(args.controllers), trace=args.trace, days=args.days, seed=args.seed,
                           n_requests=args.requests, faults=faults,
                           progress=(lambda m: print(m, file=sys.stderr, flush=True)) if sys.stderr.isatty() else None)
    print(format_fault_matrix(res))
    logs = res.pop("_logs")
    if args.json:
        write_json(args.json, res)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for (name, fault), log in logs.items():
            log.to_csv(out / f"{name}_{fault}.csv", index_label="time")
        print(f"per-tick logs written to {args.out}")
    crashed = sum(r.get("crashes", 0) for rows in res["controllers"].values() for r in rows.values())
    return 1 if crashed else 0

