"""Deterministic regressors from timestamps: Fourier terms and calendar features.

All functions take a :class:`~forecasting.series.TimeGrid` and a step range, and work in pure
numpy on seconds (no pandas date arithmetic), so building the regressors of a 96-step forecast
costs microseconds.
"""
from __future__ import annotations

import numpy as np

from .series import TimeGrid

DAY = 86400.0
WEEK = 7 * DAY


def _abs_seconds(grid: TimeGrid, i0: int, n: int) -> np.ndarray:
    """Seconds since the Monday 00:00 before ``grid.start``."""
    st = grid.start
    base = st.dayofweek * DAY + st.hour * 3600.0 + st.minute * 60.0 + st.second + st.microsecond * 1e-6
    return base + grid.seconds(i0, n)


def fourier(grid: TimeGrid, i0: int, n: int, period_s: float, k: int) -> np.ndarray:
    """``(n, 2k)`` sin/cos pairs of harmonics 1..k of a cycle of ``period_s`` seconds."""
    if k <= 0:
        return np.empty((n, 0))
    ph = 2 * np.pi * (_abs_seconds(grid, i0, n) % period_s) / period_s
    j = np.arange(1, k + 1)
    a = ph[:, None] * j[None, :]
    return np.concatenate([np.sin(a), np.cos(a)], axis=1)


def weekly_fourier(grid: TimeGrid, i0: int, n: int, k: int) -> np.ndarray:
    """Weekly harmonics 1..k (k <= 6; harmonic 7 would duplicate the first daily one)."""
    return fourier(grid, i0, n, WEEK, min(k, 6))


def weekend(grid: TimeGrid, i0: int, n: int) -> np.ndarray:
    """1.0 on Saturday and Sunday (of the grid's naive timestamps), else 0.0."""
    dow = (_abs_seconds(grid, i0, n) // DAY) % 7
    return (dow >= 5).astype(float)


def calendar(grid: TimeGrid, i0: int, n: int, k_daily: int, k_weekend: int) -> np.ndarray:
    """Calendar block: weekend dummy plus weekend x daily harmonics 1..k_weekend.

    Weekly Fourier terms shift the level by day of week; this block lets weekend *days* have a
    different shape, which a sum of daily and weekly harmonics can only approximate.
    """
    w = weekend(grid, i0, n)
    d = fourier(grid, i0, n, DAY, min(k_weekend, k_daily))
    return np.concatenate([w[:, None], d * w[:, None]], axis=1)


def time_of_day_week(grid: TimeGrid, i0: int, n: int) -> np.ndarray:
    """``(n, 5)``: sin/cos of time of day, sin/cos of day of week, weekend flag (for the net)."""
    s = _abs_seconds(grid, i0, n)
    d = 2 * np.pi * (s % DAY) / DAY
    w = 2 * np.pi * (s % WEEK) / WEEK
    return np.stack([np.sin(d), np.cos(d), np.sin(w), np.cos(w), weekend(grid, i0, n)], axis=1)
