"""``SeasonalNaive``: tomorrow looks like today (or next week like this week).

Point forecast ``y_hat[t+h] = y[t+h-k*s]`` with the smallest ``k >= 1`` that lands in the
history. Bands are empirical quantiles of the in-sample seasonal differences ``y_t - y_{t-s}``
over the retained history (widened by ``sqrt(k)`` for ``k`` seasons ahead). Missing values in the
history are skipped (the point forecast falls back one more season, then to the last
observation).
"""
from __future__ import annotations

import numpy as np

from .errors import InsufficientHistoryError, NotFittedError
from .result import Forecast, band_name, check_levels
from .series import align_new, as_grid_series, check_horizon, season_steps
from .state import StateError, StateReader, pack


class SeasonalNaive:
    """Seasonal naive baseline.

    Parameters
    ----------
    season : "daily", "weekly" or int (steps).
    max_history_days : float, history retained for the band quantiles.
    freq, start : time grid when ``y`` is a plain array.
    """

    def __init__(self, season="daily", max_history_days=28.0, freq=None, start=None):
        self.season = season
        self.max_history_days = max_history_days
        self.freq = freq
        self.start = start

    def fit(self, y, X=None):
        """Store the history (``X`` is accepted for API symmetry and ignored). Returns self."""
        vals, grid = as_grid_series(y, self.freq, self.start)
        self.grid_ = grid
        self.season_ = season_steps(self.season, grid)
        day = season_steps("daily", grid)
        self.max_len_ = max(int(round(float(self.max_history_days) * day)), 2 * self.season_)
        if np.count_nonzero(~np.isnan(vals)) < self.season_ + 1 or len(vals) < self.season_ + 1:
            raise InsufficientHistoryError(
                f"y has {len(vals)} points; season={self.season!r} ({self.season_} steps) needs at least {self.season_ + 1}")
        self.y_ = vals[-self.max_len_:].copy()
        self.n_ = len(vals)
        self._q_cache = {}
        return self

    def update(self, y_new, X_new=None):
        """Append new observations (no refit needed). Returns self."""
        if not hasattr(self, "y_"):
            raise NotFittedError("SeasonalNaive is not fitted; call fit(y) first")
        vals = align_new(y_new, self.grid_, self.n_)
        self.y_ = np.concatenate([self.y_, vals])[-self.max_len_:]
        self.n_ += len(vals)
        self._q_cache = {}
        return self

    def skip(self, k: int):
        """Advance over ``k`` missing steps (a telemetry gap) in bounded time. Returns self."""
        if not hasattr(self, "y_"):
            raise NotFittedError("SeasonalNaive is not fitted; call fit(y) first")
        k = int(k)
        if k > 0:
            self.y_ = np.concatenate([self.y_, np.full(min(k, self.max_len_), np.nan)])[-self.max_len_:]
            self.n_ += k
            self._q_cache = {}
        return self

    def refit(self):
        """Nothing to refit: the history is the model. Returns self."""
        return self

    @property
    def next_timestamp(self):
        """Timestamp (``pandas.Timestamp``) of the step after the last observed one."""
        return self.grid_.start + self.n_ * self.grid_.freq

    def state_dict(self) -> dict:
        """The retained history as JSON (see :mod:`forecasting.state`)."""
        if not hasattr(self, "y_"):
            raise NotFittedError("SeasonalNaive is not fitted; call fit(y) first")
        return {"grid": [self.grid_.start.value, self.grid_.freq.value], "n": self.n_, "y": pack(self.y_)}

    def load_state_dict(self, d, path: str = "model") -> SeasonalNaive:
        """Validate then restore :meth:`state_dict` into a model fitted on the same grid."""
        s = StateReader(d, path)
        if s.raw("grid") != [self.grid_.start.value, self.grid_.freq.value]:
            raise StateError(f"{s.name('grid')} is {s.raw('grid')!r}, this model's grid is "
                             f"[{self.grid_.start.value}, {self.grid_.freq.value}] (fitted on another history)")
        n = s.number("n", self.season_ + 1, integer=True)
        y = s.array("y", shape=(None,), finite=False, lo=0.0)
        if not self.season_ + 1 <= len(y) <= min(n, self.max_len_):
            raise StateError(f"{s.name('y')} must hold {self.season_ + 1} to {min(n, self.max_len_)} values, got {len(y)}")
        self.y_, self.n_, self._q_cache = y, n, {}
        return self

    def _quantiles(self, q: float) -> float:
        if q not in self._q_cache:
            d = self.y_[self.season_:] - self.y_[: -self.season_]
            d = d[~np.isnan(d)]
            if len(d) == 0:
                raise InsufficientHistoryError("no pair of non-missing points one season apart in the history")
            self._q_cache[q] = float(np.quantile(d, q))
        return self._q_cache[q]

    def predict(self, h: int, X_future=None, level=(80, 95)) -> Forecast:
        """Forecast of the next ``h`` steps; see :class:`forecasting.result.Forecast`."""
        if not hasattr(self, "y_"):
            raise NotFittedError("SeasonalNaive is not fitted; call fit(y) first")
        h = check_horizon(h)
        levels = check_levels(level)
        s, y, n = self.season_, self.y_, len(self.y_)
        steps = np.arange(1, h + 1)
        k = np.ceil(steps / s).astype(int)
        pos = n - 1 + steps - k * s
        mean = y[pos]
        for _ in range(3):  # missing: one more season back
            miss = np.isnan(mean) & (pos - s >= 0)
            if not miss.any():
                break
            pos = np.where(miss, pos - s, pos)
            mean = y[pos]
        if np.isnan(mean).any():
            last = y[~np.isnan(y)][-1]
            mean = np.where(np.isnan(mean), last, mean)
        widen = np.sqrt(k)
        bands = {}
        for L in levels:
            a = (1 - L / 100) / 2
            bands[band_name("lo", L)] = np.maximum(mean + widen * self._quantiles(a), 0.0)
            bands[band_name("hi", L)] = np.maximum(mean + widen * self._quantiles(1 - a), 0.0)
        return Forecast(mean, bands, self.grid_.start + self.n_ * self.grid_.freq, self.grid_.freq)
