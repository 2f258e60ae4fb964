"""``mpc-balancer forecast backtest``: rolling-origin backtest of the forecasters on a trace.

Defaults: 5-minute steps, horizon 24 (two hours), origins at every step of the last 7 days,
each model refitted every 2 days on the (up to) 28 days before the origin and only ``update``-d
with each new observation in between (as it would run online). Prints a table and optionally
writes JSON and a plot.
"""
from __future__ import annotations

import time

from ..jsonio import write_json
from .args import name_list
from .outputs import declare_outputs

MODELS = ("hybrid", "sarima", "seasonal_naive", "seasonal_naive_weekly")


def register(sub):
    p = sub.add_parser("forecast", help="traffic forecasting: backtests")
    fsub = p.add_subparsers(dest="forecast_command", metavar="SUBCOMMAND")
    fsub.required = True
    b = fsub.add_parser("backtest", help="rolling-origin backtest of forecasters on a trace")
    b.add_argument("--trace", required=True, help="bundled trace (nasa, nyc-taxi, elb) or a CSV path")
    b.add_argument("--resample", default="5min", help="step to resample the trace to (default 5min)")
    b.add_argument("--horizon", type=int, default=24, help="forecast steps per origin (default 24)")
    b.add_argument("--models", default="hybrid,sarima,seasonal_naive",
                   help=f"comma-separated, from {', '.join(MODELS)} (default hybrid,sarima,seasonal_naive)")
    b.add_argument("--events", default=None, help="announced events CSV: start,end,name[,expected_multiplier]")
    b.add_argument("--test-days", type=float, default=7.0, help="origins over the last D days (default 7)")
    b.add_argument("--train-days", type=float, default=28.0, help="history per fit (default 28 days)")
    b.add_argument("--refit-every", type=int, default=None, help="refit every N steps (default: 2 days)")
    b.add_argument("--json", default=None, help="write the results JSON here")
    b.add_argument("--plot", default=None, help="write a PNG of actuals, 1-step-ahead forecasts and the hybrid 80%% band")
    declare_outputs(b, files=("--json", "--plot"))
    b.set_defaults(func=run_backtest)


def _make(name: str, horizon: int, events):
    from forecasting import HybridForecaster, SarimaForecaster, SeasonalNaive

    if name == "hybrid":
        return lambda: HybridForecaster(horizon=horizon, events=events)
    if name == "sarima":
        return lambda: SarimaForecaster(events=events)
    if name == "seasonal_naive":
        return lambda: SeasonalNaive("daily")
    if name == "seasonal_naive_weekly":
        return lambda: SeasonalNaive("weekly")
    raise ValueError(f"--models: unknown model {name!r}; choose from {', '.join(MODELS)}")


def run_backtest(args) -> int:
    import pandas as pd

    from forecasting import backtest, load_events
    from forecasting.series import as_grid_series, season_steps

    from ..traces import load_trace

    if args.horizon < 1:
        raise ValueError(f"--horizon must be >= 1, got {args.horizon}")
    if args.test_days <= 0 or args.train_days <= 0:
        raise ValueError("--test-days and --train-days must be > 0")
    names = name_list(args.models)
    if not names:
        raise ValueError("--models is empty")
    events = load_events(args.events) if args.events else None
    factories = {m: _make(m, args.horizon, events) for m in names}
    try:
        step = pd.Timedelta(args.resample)
    except ValueError:
        raise ValueError(f"--resample: {args.resample!r} is not a time step (e.g. 5min)") from None
    y = load_trace(args.trace).resample(step)
    _, grid = as_grid_series(y)
    S = season_steps("daily", grid)
    report = {"trace": str(args.trace), "freq": args.resample, "horizon": args.horizon, "season_length": S,
              "test_days": args.test_days, "train_days": args.train_days,
              "refit_every": args.refit_every or 2 * S,
              "note": "origins at every step of the test window; models refitted every refit_every steps "
                      "on up to train_days of history and update()-d in between",
              "models": {}}
    results = {}
    for name, make in factories.items():
        t0 = time.perf_counter()
        res = backtest(y, make, horizon=args.horizon, test_days=args.test_days, train_days=args.train_days,
                       refit_every=args.refit_every)
        results[name] = res
        m = dict(res.metrics)
        m["wall_s"] = round(time.perf_counter() - t0, 2)
        report["models"][name] = m
    print(format_table(report))
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    if args.plot:
        _plot(args.plot, y, results, args.trace)
        print(f"wrote {args.plot}")
    return 0


def format_table(report: dict) -> str:
    cols = ("mase", "smape", "pinball", "coverage_80", "coverage_95", "fit_s", "predict_ms_median", "n_refits")
    lines = [f"trace={report['trace']} freq={report['freq']} horizon={report['horizon']} "
             f"season={report['season_length']} refit_every={report['refit_every']} steps",
             f"{'model':<22}" + "".join(f"{c:>18}" for c in cols)]
    for name, m in report["models"].items():
        lines.append(f"{name:<22}" + "".join(f"{m[c]:>18.4g}" for c in cols))
    return "\n".join(lines)


def _plot(path, y, results, trace):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4))
    any_res = next(iter(results.values()))
    ax.plot(any_res.origins, any_res.actual[:, 0], color="k", lw=0.8, label="actual")
    for name, r in results.items():
        ax.plot(r.origins, r.forecasts["mean"][:, 0], lw=0.8, label=f"{name} (1 step ahead)")
    if "hybrid" in results:
        r = results["hybrid"]
        ax.fill_between(r.origins, r.forecasts["lo-80"][:, 0], r.forecasts["hi-80"][:, 0], alpha=0.25, label="hybrid 80%")
    ax.set_title(f"{trace}: forecasts at 1 step ahead over the test window")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
