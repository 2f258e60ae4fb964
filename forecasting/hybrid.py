"""``HybridForecaster``: SARIMA part + neural residual correction + split-conformal bands.

On the log1p scale, for an origin ``t`` and step ``k = 1..H``::

    log1p(y_hat[t+k]) = sarima_log_forecast[t, k] + net(features_t)[k]

Fit:

1. :class:`~forecasting.sarima.SarimaForecaster` on the history.
2. From every origin ``t`` of the history, the SARIMA part's k-step errors ``T[t, k]`` (the
   regression residual minus the ARMA k-step forecast; excluded/missing points dropped) and
   features: the last ``lags`` residuals, the residuals one day (and, with 14+ days of history,
   one week) before each target step, time of day / day of week, and the announced-event flag
   of each target step.
3. The origins are split in time: the last ``calib_days`` days are held out for calibration
   (with an ``H``-step gap); :class:`~forecasting.residual_net.ResidualNet` is trained on the
   earlier ones.
4. Split-conformal bands: on the held-out origins, the hybrid's log-scale errors per step ``k``;
   the band for level L at step ``k`` is the point forecast plus their ``(1-L/100)/2`` and
   ``(1+L/100)/2`` empirical quantiles (finite-sample corrected), mapped back with ``expm1``.

Online (``online_calibration=True``, the default), each ``update`` scores the forecasts issued at
the previous H origins against the new observation: the calibration window rolls (the newest
errors replace the oldest), and a per-step gate keeps the net's correction only while its
exponentially weighted (one-day half-life) absolute error beats SARIMA alone. Both make the
forecaster re-adapt after a regime change (holidays, a blizzard) without waiting for a refit;
validated on pre-test holiday weeks, not on the reported test windows.

``update`` only advances the SARIMA state (numpy); ``predict`` builds one feature row and runs the
numpy MLP: well under a millisecond of arithmetic. ``refit_every=N`` refits everything on the
retained history every N ingested steps.
"""
from __future__ import annotations

import numpy as np

from .errors import ForecastInputError, InsufficientHistoryError, NotFittedError
from .features import time_of_day_week
from .residual_net import ResidualNet
from .result import Forecast, band_name, check_levels
from .sarima import SarimaForecaster
from .series import align_new, check_horizon


class HybridForecaster:
    """SARIMA + ResidualNet with conformal bands.

    Parameters
    ----------
    horizon : H, the longest forecast (the net outputs H steps; ``predict(h)`` needs ``h <= H``;
        also ``H <= one day``).
    lags : recent residuals fed to the net.
    calib_days : days of most recent origins held out for conformal calibration.
    hidden, epochs, seed : ResidualNet settings.
    sarima : dict of extra :class:`SarimaForecaster` keyword arguments.
    events : announced events (see :mod:`forecasting.events`), shared with the SARIMA part.
    refit_every : refit everything every this many ``update`` steps (None: never).
    online_calibration : keep the conformal window rolling: each ``update`` scores the forecasts
        made at the previous ``H`` origins against the new observation and replaces the oldest
        calibration errors, so bands re-calibrate after a regime change without a refit.
    max_history_days : history retained and used by fit / refits.
    freq, start : time grid when ``y`` is a plain array.
    """

    def __init__(self, horizon=24, lags=24, calib_days=3.0, hidden=64, epochs=60, seed=0,
                 sarima=None, events=None, refit_every=None, max_history_days=28.0,
                 online_calibration=True, freq=None, start=None):
        self.horizon = horizon
        self.lags = lags
        self.calib_days = calib_days
        self.hidden = hidden
        self.epochs = epochs
        self.seed = seed
        self.sarima = sarima
        self.events = events
        self.refit_every = refit_every
        self.max_history_days = max_history_days
        self.online_calibration = online_calibration
        self.freq = freq
        self.start = start

    # ------------------------------------------------------------------ features
    def _features(self, r: np.ndarray, t: np.ndarray, i0: int) -> np.ndarray:
        """One feature row per origin position ``t`` in the residual buffer ``r`` (grid step i0+t)."""
        H, L, S = self.horizon_, self.lags_, self.season_
        k = np.arange(1, H + 1)
        blocks = [r[t[:, None] - np.arange(L)[None, :]],          # recent residuals
                  r[t[:, None] + k[None, :] - S]]                   # same time yesterday
        if self.use_weekly_:
            blocks.append(r[t[:, None] + k[None, :] - 7 * S])       # same time last week
        sp = self.sarima_
        blocks.append(np.concatenate([time_of_day_week(sp.grid_, i0 + int(tt) + 1, 1) for tt in t])
                      if len(t) < 4 else time_of_day_week(sp.grid_, i0, len(r) + H)[t + 1])
        if len(sp.calendar_):
            ev = sp.calendar_.features(sp.grid_, i0, len(r) + H)[:, 0]
            blocks.append(ev[t[:, None] + k[None, :]])
        return np.concatenate(blocks, axis=1)

    def _min_origin(self) -> int:
        return max(self.lags_ - 1, (7 if self.use_weekly_ else 1) * self.season_)

    # ------------------------------------------------------------------ fit
    def fit(self, y, X=None):
        """Fit SARIMA, the residual net and the conformal bands. Returns self."""
        kw = dict(self.sarima or {})
        for key in ("events", "refit_every", "freq", "start", "max_history_days"):
            if key in kw:
                raise ForecastInputError(f"sarima={{{key!r}: ...}}: set {key} on HybridForecaster itself")
        if self.refit_every is not None and (not isinstance(self.refit_every, (int, np.integer)) or self.refit_every < 1):
            raise ForecastInputError(f"refit_every={self.refit_every!r} must be None or an int >= 1")
        if isinstance(self.lags, bool) or not isinstance(self.lags, (int, np.integer)) or self.lags < 1:
            raise ForecastInputError(f"lags={self.lags!r} must be an int >= 1")
        self.sarima_ = SarimaForecaster(events=self.events, freq=self.freq, start=self.start,
                                        max_history_days=self.max_history_days, **kw)
        self.sarima_.fit(y, X)
        self.season_ = self.sarima_.season_
        self.horizon_ = check_horizon(self.horizon, self.season_)
        self.lags_ = int(self.lags)
        self._fit_residual()
        self.since_refit_ = 0
        return self

    def _fit_residual(self) -> None:
        """Targets/features from the fitted SARIMA part, net training, calibration state."""
        sp, H, S = self.sarima_, self.horizon_, self.season_
        r, e, obs = sp.resid_, sp.innov_, sp.observed_
        n = len(r)
        self.use_weekly_ = n >= 14 * S
        i0 = sp.n_ - n
        t0 = self._min_origin()
        origins = np.arange(t0, n - H)
        n_cal = int(round(float(self.calib_days) * S))
        if len(origins) < n_cal + H + 200:
            need = (t0 + n_cal + 2 * H + 200) / S
            raise InsufficientHistoryError(
                f"y spans {n / S:.1f} days; HybridForecaster(horizon={H}, calib_days={self.calib_days}) "
                f"needs at least {need:.1f} days")
        A = sp.arma_.forecast_all_origins(r, e, H)[origins]
        k = np.arange(1, H + 1)
        tgt_idx = origins[:, None] + k[None, :]
        T = np.where(obs[tgt_idx], r[tgt_idx] - A, np.nan)
        F = self._features(r, origins, i0)
        cal = np.arange(len(origins)) >= len(origins) - n_cal
        train = np.arange(len(origins)) < len(origins) - n_cal - H
        rows = train & ~np.isnan(T).any(axis=1)
        self.net_ = ResidualNet(hidden=self.hidden, epochs=self.epochs, seed=self.seed).fit(F[rows], T[rows])
        err = T[cal] - self.net_.predict(F[cal])
        self._cal_ptr = 0  # next row to overwrite (online calibration)
        # pending forecasts, row j made j+1 steps ago: issued / SARIMA-only / SARIMA+net
        self._pending = np.full((3, H, H), np.nan)
        # online gate: exponentially weighted mean |log error| per step of SARIMA-only and of
        # SARIMA+net, initialised on the calibration origins; the net's correction is applied at
        # step k only while it has recently been helping there.
        self.gate_decay_ = 0.5 ** (1.0 / S)  # half-life one day
        self.err_sarima_ = np.nanmean(np.abs(T[cal]), axis=0)
        self.err_hybrid_ = np.nanmean(np.abs(err), axis=0)
        # calibration errors of the forecast as issued (with the gate applied)
        self.cal_window_ = np.where(self._gate() > 0, err, T[cal])  # NaN = not observed
        self._bands_dirty = True
        self._band_cache = {}
        self._since_sort, self._resort_every = 0, max(1, S // 24)

    def _band_offsets(self, L) -> tuple[np.ndarray, np.ndarray]:
        """Per-step log-scale offsets (lo, hi) for level L from the calibration errors."""
        if self._bands_dirty:
            self._sorted = np.sort(self.cal_window_, axis=0)  # NaN sort last
            self._count = np.maximum(np.sum(~np.isnan(self.cal_window_), axis=0), 1)
            self._band_cache, self._bands_dirty = {}, False
        if L not in self._band_cache:
            a = (1 - L / 100) / 2
            m = self._count
            lo_i = np.clip(np.floor(a * (m + 1)).astype(int) - 1, 0, m - 1)
            hi_i = np.clip(np.ceil((1 - a) * (m + 1)).astype(int) - 1, 0, m - 1)
            cols = np.arange(self.horizon_)
            self._band_cache[L] = (self._sorted[lo_i, cols], self._sorted[hi_i, cols])
        return self._band_cache[L]

    def _score_and_roll(self, value: float) -> None:
        """Online calibration: score pending forecasts against the new observation, then
        record the forecast from the new origin (called after the SARIMA state has ingested it)."""
        H = self.horizon_
        k = np.arange(H)
        P = self._pending
        if value == value:
            z = np.log1p(value)
            self.cal_window_[self._cal_ptr] = z - P[0, k, k]  # NaN while the pending rows fill
            self._cal_ptr = (self._cal_ptr + 1) % len(self.cal_window_)
            self._since_sort += 1
            if self._since_sort >= self._resort_every:  # re-rank the window hourly, not every tick
                self._bands_dirty, self._since_sort = True, 0
            es, eh = np.abs(z - P[1, k, k]), np.abs(z - P[2, k, k])
            ok = ~np.isnan(es)
            d = self.gate_decay_
            self.err_sarima_[ok] = d * self.err_sarima_[ok] + (1 - d) * es[ok]
            self.err_hybrid_[ok] = d * self.err_hybrid_[ok] + (1 - d) * eh[ok]
        P[:, 1:] = P[:, :-1]
        mu, corr = self._components(H)
        P[0, 0], P[1, 0], P[2, 0] = mu + self._gate() * corr, mu, mu + corr

    # ------------------------------------------------------------------ update / predict
    def update(self, y_new, X_new=None):
        """Advance the SARIMA state with new observations (no refit unless scheduled). Returns self."""
        self._check_fitted()
        before = self.sarima_.n_
        if self.online_calibration and X_new is None:
            for v in align_new(y_new, self.sarima_.grid_, before):
                self.sarima_.update(np.array([v]))
                self._score_and_roll(float(v))
        else:
            self.sarima_.update(y_new, X_new)
        self.since_refit_ += self.sarima_.n_ - before
        if self.refit_every is not None and self.since_refit_ >= self.refit_every:
            self.refit()
        return self

    @property
    def next_timestamp(self):
        """Timestamp (``pandas.Timestamp``) of the step after the last observed one."""
        return self.sarima_.next_timestamp

    def skip(self, k: int):
        """Advance over ``k`` missing steps (a telemetry gap) in bounded time: the online
        calibration rolls over at most one horizon of them, the SARIMA part skips the rest."""
        self._check_fitted()
        k = int(k)
        m = min(k, self.horizon_)
        if m > 0:
            self.update(np.full(m, np.nan))
        if k > m:
            self.sarima_.skip(k - m)
            self.since_refit_ += k - m
        return self

    def state_dict(self) -> dict:
        """Not supported: the residual net and its online calibration are not checkpointed."""
        raise ForecastInputError("HybridForecaster state is not checkpointed; use the sarima or seasonal_naive model")

    def refit(self):
        """Refit SARIMA, net and bands on the retained history (the slow part)."""
        self._check_fitted()
        self.sarima_.refit()
        self._fit_residual()
        self.since_refit_ = 0
        return self

    def _components(self, h: int, X_future=None) -> tuple[np.ndarray, np.ndarray]:
        """SARIMA log forecast and the net's correction for the next ``h`` steps."""
        mu, _ = self.sarima_.log_forecast(h, X_future)
        r = self.sarima_.resid_
        corr = self.net_.predict(self._features(r, np.array([len(r) - 1]), self.sarima_.n_ - len(r))[0])
        return mu, corr[:h]

    def _gate(self) -> np.ndarray:
        """1.0 at steps where SARIMA+net has recently been more accurate than SARIMA alone."""
        if not self.online_calibration:
            return np.ones(self.horizon_)
        return (self.err_hybrid_ <= self.err_sarima_).astype(float)

    def log_forecast(self, h: int, X_future=None) -> np.ndarray:
        """Point forecast of ``log1p(y)`` for the next ``h`` steps."""
        self._check_fitted()
        h = check_horizon(h, self.horizon_)
        mu, corr = self._components(h, X_future)
        return mu + self._gate()[:h] * corr

    def predict(self, h: int, X_future=None, level=(80, 95)) -> Forecast:
        """Forecast of the next ``h`` steps; see :class:`forecasting.result.Forecast`."""
        levels = check_levels(level)
        mu = self.log_forecast(h, X_future)
        bands = {}
        for L in levels:
            lo, hi = self._band_offsets(L)
            bands[band_name("lo", L)] = np.maximum(np.expm1(mu + lo[:h]), 0.0)
            bands[band_name("hi", L)] = np.expm1(mu + hi[:h])
        return Forecast(np.maximum(np.expm1(mu), 0.0), bands, self.sarima_.next_timestamp, self.sarima_.grid_.freq)

    def _check_fitted(self):
        if not hasattr(self, "net_"):
            raise NotFittedError("HybridForecaster is not fitted; call fit(y) first")
