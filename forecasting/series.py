"""Input series: validation and the regular time grid every forecaster works on.

A series is either a pandas ``Series`` with a ``DatetimeIndex`` (the step is inferred from the
index unless ``freq`` is given) or a 1-D array plus ``freq`` and ``start`` (``start`` defaults to
``2000-01-03 00:00``, a Monday, so calendar features are still defined).

Missing data. ``NaN`` values and missing timestamps (a ``DatetimeIndex`` with holes) are
*missing observations*: the series is re-indexed to the regular grid, the holes become ``NaN``,
and models skip them (regression fits drop them; the ARMA part treats them as missing
observations, as the Kalman filter would: its state is propagated by its own prediction).
Negative and infinite values are errors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import ForecastInputError, HorizonError, NegativeValueError

DEFAULT_START = pd.Timestamp("2000-01-03 00:00")  # a Monday


@dataclass(frozen=True)
class TimeGrid:
    """A regular grid: ``start + i * freq`` for integer ``i``."""

    start: pd.Timestamp
    freq: pd.Timedelta

    @property
    def steps_per_day(self) -> float:
        """Grid steps in one day."""
        return pd.Timedelta("1D") / self.freq

    def times(self, i0: int, n: int) -> pd.DatetimeIndex:
        """Timestamps of steps ``i0 .. i0+n-1``."""
        return pd.date_range(self.start + i0 * self.freq, periods=n, freq=self.freq)

    def seconds(self, i0: int, n: int) -> np.ndarray:
        """Seconds since ``start`` of steps ``i0 .. i0+n-1`` (float, cheap)."""
        return (i0 + np.arange(n, dtype=float)) * self.freq.total_seconds()

    def index_of(self, t: pd.Timestamp) -> float:
        """Position of time ``t`` on the grid, in steps from its start (fractional between steps)."""
        return (pd.Timestamp(t) - self.start) / self.freq


def parse_freq(freq) -> pd.Timedelta:
    """A time step from a pandas frequency string or timedelta; ``ForecastInputError`` naming it otherwise."""
    try:
        f = pd.Timedelta(pd.tseries.frequencies.to_offset(freq)) if isinstance(freq, str) else pd.Timedelta(freq)
    except (ValueError, TypeError) as e:
        raise ForecastInputError(f"freq={freq!r} is not a time step ({e})") from None
    if f <= pd.Timedelta(0):
        raise ForecastInputError(f"freq={freq!r} must be a positive time step")
    return f


def check_values(v: np.ndarray, name: str = "y") -> np.ndarray:
    """Float copy of ``v``; raises on negative / infinite values (``NaN`` = missing is allowed)."""
    try:
        v = np.asarray(v, dtype=float).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ForecastInputError(f"{name} must be numeric ({e})") from None
    bad = np.isinf(v)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ForecastInputError(f"{name}[{i}] = {v[i]} is infinite")
    neg = v < 0
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise NegativeValueError(f"{name}[{i}] = {v[i]:g} is negative; traffic counts must be >= 0")
    return v


def as_grid_series(y, freq=None, start=None, name: str = "y") -> tuple[np.ndarray, TimeGrid]:
    """Validate ``y`` and return its values on a regular grid (holes as ``NaN``) and the grid."""
    if isinstance(y, pd.Series):
        if not isinstance(y.index, pd.DatetimeIndex):
            raise ForecastInputError(f"{name} is a Series without a DatetimeIndex; pass an array with freq= and start= instead")
        if len(y) < 2 and freq is None:
            raise ForecastInputError(f"{name} has {len(y)} points; cannot infer its step")
        idx = y.index
        if not idx.is_monotonic_increasing or idx.has_duplicates:
            raise ForecastInputError(f"{name}.index must be strictly increasing")
        f = parse_freq(freq) if freq is not None else pd.Timedelta(np.median(np.diff(idx.asi8)), unit="ns")
        off = (idx - idx[0]) / f
        if not np.allclose(off, np.round(off)):
            i = int(np.flatnonzero(~np.isclose(off, np.round(off)))[0])
            raise ForecastInputError(f"{name}.index[{i}] = {idx[i]} is not on the {f} grid starting at {idx[0]}")
        vals = check_values(y.to_numpy(), name)
        n = int(round(off[-1])) + 1
        out = np.full(n, np.nan)
        out[np.round(off).astype(int)] = vals
        return out, TimeGrid(pd.Timestamp(idx[0]), f)
    if freq is None:
        raise ForecastInputError(f"{name} is an array: pass freq= (e.g. '5min') and optionally start=")
    vals = check_values(y, name)
    st = DEFAULT_START if start is None else pd.Timestamp(start)
    return vals, TimeGrid(st, parse_freq(freq))


def check_horizon(h, max_h: int | None = None) -> int:
    """``h`` as an int if it is an integer >= 1 (and at most ``max_h``); ``HorizonError`` otherwise."""
    if isinstance(h, bool) or not isinstance(h, (int, np.integer)):
        raise HorizonError(f"horizon h={h!r} must be a positive integer")
    if h <= 0:
        raise HorizonError(f"horizon h={h} must be >= 1")
    if max_h is not None and h > max_h:
        raise HorizonError(f"horizon h={h} exceeds the horizon this model was fitted for ({max_h}); refit with horizon>={h}")
    return int(h)


def season_steps(season, grid: TimeGrid) -> int:
    """Season length in steps: 'daily', 'weekly', or an int."""
    if isinstance(season, str):
        days = {"daily": 1, "weekly": 7}.get(season)
        if days is None:
            raise ForecastInputError(f"season={season!r} must be 'daily', 'weekly' or a positive int")
        s = days * grid.steps_per_day
        if abs(s - round(s)) > 1e-9:
            raise ForecastInputError(f"season={season!r} is not a whole number of {grid.freq} steps")
        return int(round(s))
    if isinstance(season, bool) or not isinstance(season, (int, np.integer)) or season < 1:
        raise ForecastInputError(f"season={season!r} must be 'daily', 'weekly' or a positive int")
    return int(season)


def align_new(y_new, grid: TimeGrid, n_seen: int, name: str = "y_new") -> np.ndarray:
    """Values of new observations continuing a series of ``n_seen`` points on ``grid``.

    Scalars and arrays continue at the next step. A Series must start at or after the next
    expected timestamp; a later start fills the hole with ``NaN`` (missing observations).
    """
    if isinstance(y_new, pd.Series):
        vals, g = as_grid_series(y_new, freq=grid.freq, name=name)
        pos = grid.index_of(g.start)
        if abs(pos - round(pos)) > 1e-9:
            raise ForecastInputError(f"{name} starts at {g.start}, not on the model's {grid.freq} grid")
        gap = int(round(pos)) - n_seen
        if gap < 0:
            raise ForecastInputError(
                f"{name} starts at {g.start} but the model has already seen up to {grid.start + (n_seen - 1) * grid.freq}")
        return np.concatenate([np.full(gap, np.nan), vals])
    return check_values(np.atleast_1d(y_new), name)
