"""Forecast accuracy metrics (numpy arrays; ``NaN`` actuals are ignored).

* :func:`mase`: mean absolute error scaled by the in-sample MAE of the seasonal naive forecast
  with the daily season, ``mean |y_t - y_{t-s}|`` over the training history.
* :func:`smape`: symmetric MAPE in percent, ``100 * mean(2|y-f| / (|y|+|f|))`` (0/0 counts as 0).
* :func:`pinball`: quantile (pinball) loss averaged over the given quantiles.
* :func:`coverage`: fraction of actuals inside ``[lo, hi]``.
"""
from __future__ import annotations

import numpy as np

from .errors import ForecastInputError


def _pair(y, f):
    y, f = np.asarray(y, float), np.asarray(f, float)
    if y.shape != f.shape:
        raise ForecastInputError(f"actuals shape {y.shape} != forecast shape {f.shape}")
    ok = ~np.isnan(y)
    return y[ok], f[ok], ok


def mase_scale(history, season: int) -> float:
    """In-sample MAE of the seasonal naive forecast: ``mean |y_t - y_{t-season}|``."""
    h = np.asarray(history, float)
    if len(h) <= season:
        raise ForecastInputError(f"MASE scale needs more than season={season} history points, got {len(h)}")
    d = np.abs(h[season:] - h[:-season])
    d = d[~np.isnan(d)]
    if len(d) == 0 or d.mean() == 0:
        raise ForecastInputError("MASE scale is zero or undefined (constant or missing history)")
    return float(d.mean())


def mase(y, f, scale: float) -> float:
    """Mean absolute scaled error: ``mean |y - f| / scale``.

    Parameters
    ----------
    y, f : array_like
        Actuals and forecasts (pairs with a missing actual are left out).
    scale : float
        The scale, usually :func:`mase_scale` of the history (one for all models compared).
    """
    y, f, _ = _pair(y, f)
    return float(np.mean(np.abs(y - f)) / scale)


def smape(y, f) -> float:
    """Symmetric MAPE in percent: ``100 mean(2 |y - f| / (|y| + |f|))`` (0 where both are 0; missing actuals left out)."""
    y, f, _ = _pair(y, f)
    den = np.abs(y) + np.abs(f)
    r = np.where(den > 0, 2 * np.abs(y - f) / np.where(den > 0, den, 1.0), 0.0)
    return float(100 * np.mean(r))


def pinball(y, quantile_forecasts: dict[float, np.ndarray]) -> float:
    """Mean over quantiles ``q`` of ``mean(max(q (y - f_q), (q - 1)(y - f_q)))``."""
    y = np.asarray(y, float)
    ok = ~np.isnan(y)
    losses = []
    for q, f in quantile_forecasts.items():
        d = y[ok] - np.asarray(f, float)[ok]
        losses.append(np.mean(np.maximum(q * d, (q - 1) * d)))
    return float(np.mean(losses))


def coverage(y, lo, hi) -> float:
    """Share of actuals inside ``[lo, hi]`` (missing actuals left out)."""
    y, lo, ok = _pair(y, lo)
    hi = np.asarray(hi, float)[ok]
    return float(np.mean((y >= lo) & (y <= hi)))


def band_quantiles(levels) -> dict[float, tuple[str, str]]:
    """``{0.1: ("lo-80", ...)}``: the quantile each band edge stands for."""
    out = {}
    for L in levels:
        a = (1 - L / 100) / 2
        out[round(a, 6)] = f"lo-{L}"
        out[round(1 - a, 6)] = f"hi-{L}"
    return out
