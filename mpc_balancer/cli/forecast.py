"""``mpc-balancer forecast backtest``: rolling-origin backtest of the forecasters on a trace.

Defaults: 5-minute steps, horizon 24 (two hours), origins at every step of the last 7 days,
each model refitted every 2 days on the (up to) 28 days before the origin and only ``update``-d
with each new observation in between (as it would run online). Prints a table and optionally
writes JSON and a plot. The work is :func:`forecasting.report.compare_models`.
"""
from __future__ import annotations

from ..jsonio import write_json
from .args import name_list, positive
from .outputs import declare_outputs


def register(sub):
    from forecasting.report import MODELS

    p = sub.add_parser("forecast", help="traffic forecasting: backtests")
    fsub = p.add_subparsers(dest="forecast_command", metavar="SUBCOMMAND")
    fsub.required = True
    b = fsub.add_parser("backtest", help="rolling-origin backtest of forecasters on a trace")
    b.add_argument("--trace", required=True, help="bundled trace (nasa, nyc-taxi, elb) or a CSV path")
    b.add_argument("--resample", default="5min", help="step to resample the trace to (default 5min)")
    b.add_argument("--horizon", type=positive(int, 100_000), default=24, help="forecast steps per origin (default 24)")
    b.add_argument("--models", default="hybrid,sarima,seasonal_naive",
                   help=f"comma-separated, from {', '.join(MODELS)} (default hybrid,sarima,seasonal_naive)")
    b.add_argument("--events", default=None, help="announced events CSV: start,end,name[,expected_multiplier]")
    b.add_argument("--test-days", type=positive(float, 36500.0), default=7.0, help="origins over the last D days (default 7)")
    b.add_argument("--train-days", type=positive(float, 36500.0), default=28.0, help="history per fit (default 28 days)")
    b.add_argument("--refit-every", type=positive(int), default=None, help="refit every N steps (default: 2 days)")
    b.add_argument("--json", default=None, help="write the results JSON here")
    b.add_argument("--plot", default=None, help="write a PNG of actuals, 1-step-ahead forecasts and the hybrid 80%% band")
    declare_outputs(b, files=("--json", "--plot"))
    b.set_defaults(func=run_backtest)


def run_backtest(args) -> int:
    import pandas as pd

    from forecasting import load_events
    from forecasting.report import EVENT_MODELS, compare_models, format_report, plot_report

    from ..traces import load_trace

    try:
        step = pd.Timedelta(args.resample)
    except ValueError:
        raise ValueError(f"--resample: {args.resample!r} is not a time step (e.g. 5min)") from None
    models = name_list(args.models)
    if args.events and not set(models) & set(EVENT_MODELS):  # else the file would be read and silently unused
        raise ValueError(f"--events: none of --models {','.join(models)} reads announced events (only "
                         f"{' and '.join(EVENT_MODELS)} do)")
    events = load_events(args.events) if args.events else None
    y = load_trace(args.trace).resample(step)
    if events is not None and len(events) and len(y):
        # the backtest reads the last --test-days and the --train-days of history before them: an events
        # file none of whose events falls there (a wrong year, another trace's dates) has no effect
        end = y.index[-1] + step
        begin = max(y.index[0], end - pd.Timedelta(days=args.test_days + args.train_days))
        if not events.overlapping(begin, end):
            import sys

            n = len(events)
            print(f"warning: --events {args.events}: none of its {n} event{'s' if n > 1 else ''} "
                  f"({events.events[0].start} .. {max(e.end for e in events.events)}) falls in the backtest's span "
                  f"{begin} .. {end} (the last --test-days {args.test_days:g} and the --train-days "
                  f"{args.train_days:g} before them): the file has no effect; check its dates", file=sys.stderr)
    report, results = compare_models(y, models, horizon=args.horizon, test_days=args.test_days,
                                     train_days=args.train_days, refit_every=args.refit_every, events=events,
                                     label=str(args.trace), freq=args.resample)
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    if args.plot:
        plot_report(args.plot, results, args.trace)
        print(f"wrote {args.plot}")
    return 0
