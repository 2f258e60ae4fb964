"""``mpc-balancer spike-test``."""
from __future__ import annotations

from .args import name_list
from .config import add_config_option
from .simulate import _positive


def register(sub):
    p = sub.add_parser("spike-test", help="DCAF-style spike: traffic x FACTOR in one tick, announced or not")
    p.add_argument("--controllers", default="pid,mpc")
    p.add_argument("--factor", type=_positive(float), default=8.0)
    p.add_argument("--duration", type=_positive(int), default=30, help="spike length in minutes (default 30)")
    p.add_argument("--announced", action="store_true", help="the spike is in the forecasters' event calendar")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--requests", type=_positive(int), default=1000,
                   help="sampled requests per tick (default 1000, as in simulate and compare)")
    p.add_argument("--subticks", type=_positive(int), default=12, help="plant steps per control period (default 12: 5 s)")
    p.add_argument("--guard", choices=["proportional", "maxpower", "none"], default="proportional",
                   help="node-local overload guard (default proportional)")
    p.add_argument("--set", action="append", metavar="CONTROLLER.KEY=VALUE", help="controller option, e.g. mpc.max_fall=4")
    p.add_argument("--json", default=None)
    add_config_option(p)
    p.set_defaults(func=spike)


def spike(args) -> int:
    from ..experiment import parse_overrides
    from ..scenarios import dump, format_spike, run_spike_test

    names = name_list(args.controllers)
    opts, plant = parse_overrides(args.set)
    guard = {"rule": args.guard, **opts.pop("guard", {})}
    if plant:
        raise ValueError("spike-test takes controller options only (--set CONTROLLER.KEY=VALUE)")
    res = run_spike_test(names, factor=args.factor, announced=args.announced, duration_min=args.duration, seed=args.seed,
                         n_requests=args.requests, controller_options=opts, subticks=args.subticks, guard=guard)
    print(format_spike(res))
    if args.json:
        dump(res, args.json)
    return 0
