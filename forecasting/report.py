"""A backtest report: several forecasters backtested on one series, as one table.

:func:`compare_models` runs :func:`forecasting.backtest` for each named model on the same series
and settings and returns a JSON-ready report (the settings, and per model the pooled metrics plus
wall time) with the raw results; :func:`format_report` prints it as a table and
:func:`plot_report` draws the one-step-ahead forecasts. ``mpc-balancer forecast backtest`` is
this module on a trace.
"""
from __future__ import annotations

import math
import time

import pandas as pd

from .backtest import BacktestResult, backtest
from .series import as_grid_series, check_horizon, season_steps

MODELS = ("hybrid", "sarima", "seasonal_naive", "seasonal_naive_weekly")
COLUMNS = ("mase", "smape", "pinball", "coverage_80", "coverage_95", "fit_s", "predict_ms_median", "n_refits")


EVENT_MODELS = ("hybrid", "sarima")  # the models that read announced events (the naive ones repeat the past)


def make_forecaster(name: str, horizon: int, events=None):
    """A factory of fresh forecasters called ``name`` (one of :data:`MODELS`).

    Parameters
    ----------
    name : str
        ``hybrid``, ``sarima``, ``seasonal_naive`` (daily) or ``seasonal_naive_weekly``.
    horizon : int
        The hybrid's residual-network horizon.
    events : EventCalendar, optional
        Announced events, for the models that take them (:data:`EVENT_MODELS`).

    Returns
    -------
    callable
        ``make() -> forecaster``, as :func:`forecasting.backtest` takes it.
    """
    from .hybrid import HybridForecaster
    from .naive import SeasonalNaive
    from .sarima import SarimaForecaster

    factories = {"hybrid": lambda: HybridForecaster(horizon=horizon, events=events),
                 "sarima": lambda: SarimaForecaster(events=events),
                 "seasonal_naive": lambda: SeasonalNaive("daily"),
                 "seasonal_naive_weekly": lambda: SeasonalNaive("weekly")}
    if name not in factories:
        raise ValueError(f"models: unknown model {name!r}; choose from {', '.join(MODELS)}")
    return factories[name]


def compare_models(y: pd.Series, models, *, horizon: int = 24, test_days: float = 7.0, train_days: float = 28.0,
                   refit_every: int | None = None, events=None, label: str = "", freq: str = ""
                   ) -> tuple[dict, dict[str, BacktestResult]]:
    """Backtest each of ``models`` on ``y`` with the same settings.

    Parameters
    ----------
    y : pandas.Series
        The series, on a regular DatetimeIndex.
    models : sequence of str
        Names from :data:`MODELS` (checked before any model runs).
    horizon, test_days, train_days, refit_every
        As in :func:`forecasting.backtest` (``refit_every`` defaults to two days of steps).
    events : EventCalendar, optional
        Announced events, for the models that take them.
    label, freq : str
        The series' name and step, copied into the report.

    Returns
    -------
    (report, results) : tuple
        ``report``: ``trace``, ``freq``, ``horizon``, ``season_length``, ``test_days``,
        ``train_days``, ``refit_every``, ``note`` and ``models`` (name -> pooled metrics and
        ``wall_s``); ``results``: name -> :class:`BacktestResult`.
    """
    horizon = check_horizon(horizon)
    if not (0 < test_days < math.inf and 0 < train_days < math.inf):  # NaN and inf fail too
        raise ValueError(f"test_days and train_days must be > 0, got {test_days!r} and {train_days!r}")
    models = list(models)
    if not models:
        raise ValueError("models is empty")
    factories = {m: make_forecaster(m, horizon, events) for m in models}
    _, grid = as_grid_series(y)
    S = season_steps("daily", grid)
    report = {"trace": label, "freq": freq, "horizon": horizon, "season_length": S,
              "test_days": test_days, "train_days": train_days, "refit_every": 2 * S if refit_every is None else refit_every,
              "note": "origins at every step of the test window; models refitted every refit_every steps "
                      "on up to train_days of history and update()-d in between",
              "models": {}}
    results = {}
    for name, make in factories.items():
        t0 = time.perf_counter()
        res = backtest(y, make, horizon=horizon, test_days=test_days, train_days=train_days, refit_every=refit_every)
        results[name] = res
        report["models"][name] = dict(res.metrics) | {"wall_s": round(time.perf_counter() - t0, 2)}
    return report, results


def format_report(report: dict) -> str:
    """The report of :func:`compare_models` as a table, one row per model."""
    lines = [f"trace={report['trace']} freq={report['freq']} horizon={report['horizon']} "
             f"season={report['season_length']} refit_every={report['refit_every']} steps",
             f"{'model':<22}" + "".join(f"{c:>18}" for c in COLUMNS)]
    for name, m in report["models"].items():
        lines.append(f"{name:<22}" + "".join(f"{m[c]:>18.4g}" for c in COLUMNS))
    return "\n".join(lines)


def plot_report(path, results: dict[str, BacktestResult], title: str) -> None:
    """A PNG of the actuals, each model's one-step-ahead forecasts and the hybrid's 80% band."""
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
    ax.set_title(f"{title}: forecasts at 1 step ahead over the test window")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
