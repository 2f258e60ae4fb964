"""Rolling-origin backtest.

Origins are every ``origin_every`` steps over the last ``test_days`` days of the series (minus
the horizon). The slow part is refitted every ``refit_every`` steps on the ``train_days`` before
the current origin (all there is when the series is shorter); between refits the model is only
``update``-d with each new observation, exactly as it would run online. Each origin yields an
``h``-step forecast; the metrics pool every (origin, step) pair:

* MASE, scaled by the in-sample daily seasonal-naive MAE of the history before the first origin
  (one scale for all models, so MASE ratios equal MAE ratios);
* sMAPE; pinball loss averaged over the band-edge quantiles (0.025, 0.1, 0.9, 0.975 for levels
  80 and 95); coverage of each band.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import ForecastInputError, InsufficientHistoryError
from .metrics import band_quantiles, coverage, mase, mase_scale, pinball, smape
from .series import as_grid_series, check_horizon, season_steps


@dataclass
class BacktestResult:
    """Pooled metrics of one model plus the raw forecasts (origins x horizon)."""

    metrics: dict[str, float]
    actual: np.ndarray
    forecasts: dict[str, np.ndarray]
    origins: pd.DatetimeIndex
    fit_seconds: list[float] = field(default_factory=list)


def backtest(y: pd.Series, make_model: Callable[[], object], horizon: int = 24, test_days: float = 7.0,
             train_days: float = 28.0, refit_every: int | None = None, origin_every: int = 1,
             levels=(80, 95), scale: float | None = None) -> BacktestResult:
    """Run a rolling-origin backtest of ``make_model()`` on ``y`` (Series with DatetimeIndex).

    ``refit_every`` defaults to 2 days of steps. ``scale`` overrides the MASE scale.
    """
    h = check_horizon(horizon)
    vals, grid = as_grid_series(y)
    S = season_steps("daily", grid)
    n = len(vals)
    if not (0 < test_days < np.inf and 0 < train_days < np.inf):  # NaN and inf too: round(inf) overflows
        raise ForecastInputError(f"test_days and train_days must be finite and > 0, got {test_days!r} and {train_days!r}")
    first = n - int(round(test_days * S))
    if first < 2 * S:
        raise InsufficientHistoryError(
            f"series spans {n / S:.1f} days: test_days={test_days} leaves {first / S:.1f} days of history (need >= 2)")
    refit_every = int(2 * S if refit_every is None else refit_every)  # 0 is an error below, not the default
    if refit_every < 1 or origin_every < 1:
        raise ForecastInputError("refit_every and origin_every must be >= 1")
    train_len = int(round(train_days * S))
    origins = np.arange(first, n - h + 1, origin_every)
    if len(origins) == 0:
        # a test window shorter than the horizon has no origin whose forecast can be scored
        raise InsufficientHistoryError(
            f"test_days={test_days} is {n - first} steps, shorter than the horizon h={h}: no origin has "
            f"{h} observations after it to score (raise test_days or lower the horizon)")
    if scale is None:
        if min(train_len, first) <= S:  # else mase_scale's "needs more than season=288 history points, got 144"
            raise InsufficientHistoryError(
                f"train_days={train_days} is {min(train_len, first)} steps of history before the test window; the MASE "
                f"scale needs more than one season ({S} steps, 1 day): raise train_days")
        scale = mase_scale(vals[max(0, first - train_len):first], S)
    series_index = y.index if isinstance(y.index, pd.DatetimeIndex) and len(y) == n else grid.times(0, n)

    qmap = band_quantiles(levels)
    keys = ["mean"] + [f"{s}-{L}" for L in levels for s in ("lo", "hi")]
    out = {k: np.empty((len(origins), h)) for k in keys}
    actual = np.stack([vals[o:o + h] for o in origins])
    fit_s, pred_ms = [], []
    model, seen, last_fit = None, 0, None
    for j, o in enumerate(origins):
        if model is None or o - last_fit >= refit_every:
            start = max(0, o - train_len)
            model = make_model()
            t0 = time.perf_counter()
            try:
                model.fit(pd.Series(vals[start:o], index=series_index[start:o]))
            except InsufficientHistoryError as e:  # the model's own message names its settings, not train_days
                raise InsufficientHistoryError(f"train_days={train_days} ({o - start} steps before the origin) is too "
                                               f"short for {type(model).__name__}: {e}") from None
            fit_s.append(time.perf_counter() - t0)
            seen, last_fit = o, o
        if o > seen:
            model.update(vals[seen:o])
            seen = o
        t0 = time.perf_counter()
        f = model.predict(h, level=levels)
        pred_ms.append((time.perf_counter() - t0) * 1e3)
        for k in keys:
            out[k][j] = f[k]
    a = actual.ravel()
    m = {
        "mase": mase(a, out["mean"].ravel(), scale),
        "smape": smape(a, out["mean"].ravel()),
        "pinball": pinball(a, {q: out[name].ravel() for q, name in qmap.items()}),
    }
    for L in levels:
        m[f"coverage_{L}"] = coverage(a, out[f"lo-{L}"].ravel(), out[f"hi-{L}"].ravel())
    m["fit_s"] = float(np.median(fit_s))
    m["predict_ms_median"] = float(np.median(pred_ms))
    m["n_refits"] = len(fit_s)
    return BacktestResult(m, actual, out, series_index[origins], fit_s)
