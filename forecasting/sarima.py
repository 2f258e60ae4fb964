"""``SarimaForecaster``: regression with Fourier / calendar / event terms and ARMA errors.

Model, on ``z = log1p(y)`` (variance-stabilised counts)::

    z_t = x_t' beta + r_t,   r_t ~ ARMA(p, q)   (regression with ARMA errors)

``x_t``: intercept; daily Fourier harmonics 1..K_d; weekly harmonics 1..K_w; a weekend dummy and
weekend x daily harmonics (calendar); announced-event regressors (:mod:`forecasting.events`);
user regressors ``X``. No daily period ever goes into a seasonal ARIMA order (statsmodels does
not finish on s=288); the long cycles are all in ``x_t``.

Fit (two-stage, fast: 60-70 ms of CPU on 28 days of 5-min data):

1. ``beta`` by least squares; ``K_d`` and ``K_w`` (when ``"auto"``) by BIC over a small grid.
   With ``robust=True`` points whose residual is beyond 5 robust sigmas (outages, logging
   glitches) are excluded first (iteratively reweighted, on a moderate fixed design), then the
   harmonics are chosen and ``beta`` fitted without them; they are missing observations for
   step 2. Every candidate's fit comes from one Gram matrix of the largest design.
2. ``(p, q)`` in ``orders`` and their parameters by conditional ML on the residuals, lowest AIC
   (:func:`forecasting.arma.fit_arma`; within about 1e-3 of statsmodels' exact ML).

Prediction and ``update`` are numpy only: ``update`` appends residuals to the ARMA state (no
refit); ``refit_every=N`` refits both stages on the retained history every N ingested steps.
Forecasts are returned on the original scale: the point forecast is the predictive *median*
``expm1(mu)`` (it minimises absolute error; the mean would add ``sd^2/2`` on the log scale) and
bands are the Gaussian log-scale quantiles mapped back, so their coverage carries over.

History requirements: at least 2 days of non-missing points; weekly harmonics need 14 days
(with ``weekly_harmonics="auto"`` they are left out on shorter history).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .arma import ArmaState, fit_arma
from .errors import ForecastInputError, InsufficientHistoryError, NotFittedError
from .events import EventCalendar, as_calendar
from .features import DAY, calendar, fourier, weekly_fourier
from .result import Forecast, check_levels, gaussian_log_forecast
from .series import align_new, as_grid_series, check_horizon, season_steps
from .state import StateError, StateReader, pack

OUTLIER_MADS = 5.0  # residuals beyond this many robust sigmas are excluded (robust=True)
DAILY_GRID = (2, 3, 4, 6, 8, 10, 12, 16, 20)
WEEKLY_GRID = (0, 1, 2, 3, 4, 6)


def _check_k(name, v, allow_auto=True):
    if allow_auto and v == "auto":
        return v
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ForecastInputError(f"{name}={v!r} must be 'auto' or an int >= 0")
    return int(v)


def kd_req_int(v):
    return None if v == "auto" else v


def _as_exog(X, n: int, name: str) -> np.ndarray | None:
    if X is None:
        return None
    a = np.asarray(X.to_numpy() if isinstance(X, (pd.DataFrame, pd.Series)) else X, float)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != n:
        raise ForecastInputError(f"{name} must have {n} rows (one per step), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ForecastInputError(f"{name} contains NaN or infinite values")
    return a


class SarimaForecaster:
    """Regression (Fourier daily/weekly + calendar + events + X) with low-order ARMA errors.

    Parameters
    ----------
    daily_harmonics, weekly_harmonics : "auto" or int
        Fourier harmonics; "auto" picks by BIC.
    weekend_harmonics : int
        Daily harmonics interacted with the weekend dummy (0 disables the calendar block).
    orders : ARMA orders ``(p, 0, q)`` tried; the lowest AIC wins.
    events : None, :class:`EventCalendar`, list of :class:`Event`, or CSV path.
    refit_every : int or None
        Refit on the retained history every this many ``update`` steps (None: never).
    max_history_days : float
        History retained (and used by refits). ``fit`` also uses only the last this many days.
    robust : bool
        Exclude gross outliers from the regression and treat them as missing for the ARMA fit.
    maxiter : int
        Optimizer iterations for the ARMA ML fit.
    freq, start :
        Time grid when ``y`` is a plain array (ignored for a Series with a DatetimeIndex).
    """

    def __init__(self, daily_harmonics="auto", weekly_harmonics="auto", weekend_harmonics=3,
                 orders=((1, 0, 1), (2, 0, 0)), events=None, refit_every=None,
                 max_history_days=28.0, robust=True, maxiter=50, freq=None, start=None):
        self.daily_harmonics = daily_harmonics
        self.weekly_harmonics = weekly_harmonics
        self.weekend_harmonics = weekend_harmonics
        self.orders = orders
        self.events = events
        self.refit_every = refit_every
        self.max_history_days = max_history_days
        self.robust = robust
        self.maxiter = maxiter
        self.freq = freq
        self.start = start

    # ------------------------------------------------------------------ design matrix
    def _design(self, i0: int, n: int, X: np.ndarray | None, kd=None, kw=None) -> np.ndarray:
        g = self.grid_
        kd = self.kd_ if kd is None else kd
        kw = self.kw_ if kw is None else kw
        cols = [np.ones((n, 1)), fourier(g, i0, n, DAY, kd), weekly_fourier(g, i0, n, kw)]
        if self.weekend_harmonics and self.use_weekend_:
            cols.append(calendar(g, i0, n, kd, self.weekend_harmonics))
        ev = self.calendar_.features(g, i0, n)
        cols.append(ev[:, self.event_cols_])
        if X is not None:
            cols.append(X)
        return np.concatenate(cols, axis=1)

    def _column_names(self, kd: int, kw: int) -> list[tuple[str, int]]:
        """(kind, harmonic) per design column, matching :meth:`_design` with ``kd``/``kw``."""
        names = [("i", 0)] + [("d", k) for k in range(1, kd + 1)] + [("d", k) for k in range(1, kd + 1)]
        kw6 = min(kw, 6)
        names += [("w", k) for k in range(1, kw6 + 1)] * 2
        if self.weekend_harmonics and self.use_weekend_:
            kk = min(self.weekend_harmonics, kd)
            names += [("i", 0)] + [("c", k) for k in range(1, kk + 1)] * 2
        names += [("i", 0)] * int(self.event_cols_.sum()) + [("i", 0)] * self.n_exog_
        return names

    def _event_offset(self, i0: int, n: int) -> np.ndarray:
        """Announced multipliers applied as fixed log offsets when the history had no event."""
        if self.event_cols_[0] or self.event_cols_[1]:
            return np.zeros(n)
        return self.calendar_.features(self.grid_, i0, n)[:, 1]

    # ------------------------------------------------------------------ fit
    def fit(self, y, X=None):
        """Fit on ``y`` (Series with DatetimeIndex, or array with ``freq``/``start``). Returns self."""
        _check_k("daily_harmonics", self.daily_harmonics)
        _check_k("weekly_harmonics", self.weekly_harmonics)
        _check_k("weekend_harmonics", self.weekend_harmonics, allow_auto=False)
        if self.refit_every is not None and (not isinstance(self.refit_every, (int, np.integer)) or self.refit_every < 1):
            raise ForecastInputError(f"refit_every={self.refit_every!r} must be None or an int >= 1")
        vals, grid = as_grid_series(y, self.freq, self.start)
        self.grid_ = grid
        self.calendar_: EventCalendar = as_calendar(self.events)
        self.season_ = season_steps("daily", grid)
        self.max_len_ = int(round(float(self.max_history_days) * self.season_))
        self.arma_window_ = min(self.max_len_, 28 * self.season_)
        Xa = _as_exog(X, len(vals), "X")
        self.n_exog_ = 0 if Xa is None else Xa.shape[1]
        off = max(0, len(vals) - self.max_len_)
        self._fit_window(vals[off:], off, None if Xa is None else Xa[off:])
        self.since_refit_ = 0
        return self

    def _fit_window(self, vals: np.ndarray, i0: int, Xa: np.ndarray | None) -> None:
        n, S = len(vals), self.season_
        ok = ~np.isnan(vals)
        if ok.sum() < 2 * S:
            raise InsufficientHistoryError(
                f"y has {int(ok.sum())} non-missing points; the daily season ({S} steps) needs at least {2 * S}")
        span_days = n / S
        self.use_weekend_ = span_days >= 14
        kw_req = self.weekly_harmonics
        if kw_req != "auto" and kw_req > 0 and span_days < 14:
            raise InsufficientHistoryError(
                f"weekly_harmonics={kw_req} needs 14 days of history, y spans {span_days:.1f} days")
        z = np.log1p(vals)
        self.grid_fit_i0_ = i0
        ev = self.calendar_.features(self.grid_, i0, n)
        self.event_cols_ = np.array([np.ptp(ev[ok, j]) > 0 for j in range(2)], bool)
        max_kd = max(1, S // 2 - 1)

        # Largest candidate design once; every candidate is a column subset, solved from the
        # Gram matrix (normal equations): the whole BIC search costs milliseconds.
        kd_max = max_kd if kd_req_int(self.daily_harmonics) is None else self.daily_harmonics
        kd_max = min(kd_max, max(DAILY_GRID))
        kw_max = max(WEEKLY_GRID) if kw_req == "auto" else kw_req
        if span_days < 14:
            kw_max = 0
        Dfull = self._design(i0, n, Xa, kd_max, kw_max)
        names = self._column_names(kd_max, kw_max)

        def cols(kd, kw):
            keep = [j for j, (kind, k) in enumerate(names)
                    if kind == "i" or (kind in ("d", "c") and k <= kd) or (kind == "w" and k <= kw)]
            return np.array(keep)

        def moments(mask):
            """Gram matrix, ``D'z``, ``z'z`` and the count of the observations in ``mask``: one
            matrix product of ``[D, z]`` with itself (a threaded BLAS splits a matrix-vector
            product's sum and rounds ``D'z`` differently with the thread count, not this one)."""
            A = np.column_stack([Dfull[mask], z[mask]])
            M = A.T @ A
            return M[:-1, :-1], M[:-1, -1], float(M[-1, -1]), int(mask.sum())

        def ols(mom, idx):
            G, g = mom[0][np.ix_(idx, idx)], mom[1][idx]
            return np.linalg.solve(G + 1e-8 * np.eye(len(idx)), g)

        def bic(kd, kw, mom):
            idx = cols(kd, kw)
            beta = ols(mom, idx)
            G, g, zz, m = mom[0][np.ix_(idx, idx)], mom[1][idx], mom[2], mom[3]
            rss = max(zz - 2 * float(beta @ g) + float(beta @ G @ beta), 0.0)
            return m * np.log(rss / m + 1e-300) + len(idx) * np.log(m)

        mask = ok.copy()
        self.outliers_ = 0
        if self.robust:
            # Outliers first, with a fixed moderate design (so that weekly harmonics cannot bend
            # towards an outage day before it is excluded); a few reweighting rounds.
            base = cols(min(8, kd_max), min(3, kw_max))
            for _ in range(4):
                rb = z - Dfull[:, base] @ ols(moments(mask), base)
                med = np.median(rb[mask])
                mad = 1.4826 * np.median(np.abs(rb[mask] - med))
                new_mask = ok & (np.abs(rb - med) <= OUTLIER_MADS * mad)
                if new_mask.sum() < 2 * S or np.array_equal(new_mask, mask):
                    break
                mask = new_mask
            self.outliers_ = int((ok & ~mask).sum())
        mom = moments(mask)
        kd = self.daily_harmonics
        kw = kw_req if kw_req != "auto" else min(3, kw_max)
        if kd == "auto":
            cand = [k for k in DAILY_GRID if k <= kd_max] or [kd_max]
            kd = min(cand, key=lambda k: bic(k, kw, mom))
        if kw_req == "auto" and kw_max > 0:
            kw = min([k for k in WEEKLY_GRID if k <= kw_max], key=lambda k: bic(kd, k, mom))
        self.kd_, self.kw_ = int(kd), int(kw)
        idx = cols(self.kd_, self.kw_)
        D = Dfull[:, idx]
        beta = ols(mom, idx)
        r = z - D @ beta
        self.beta_ = beta
        r_obs = np.where(mask, r, np.nan)
        # ARMA parameters are estimated with excluded points set to the residual mean (0), so that
        # the conditional likelihood is one filter pass; the state itself is filtered with those
        # points as missing observations.
        self.order_, phi, theta, sigma2, self.aic_ = fit_arma(
            np.where(mask, r, 0.0)[-self.arma_window_:], self.orders, self.maxiter)
        self.arma_ = ArmaState(phi, theta, sigma2)
        filled, innov = self.arma_.filter(r_obs)
        # retained history (original scale), regression residuals and innovations (log scale)
        self.y_ = vals.copy()
        self.X_ = None if Xa is None else Xa.copy()
        self.resid_ = filled
        self.innov_ = innov
        self.observed_ = mask.copy()  # False where missing or excluded as an outlier
        self.n_ = i0 + n  # index of the next step on the grid

    # ------------------------------------------------------------------ update
    def update(self, y_new, X_new=None):
        """Ingest new observations (scalar, array, or Series continuing the grid). Returns self."""
        self._check_fitted()
        vals = align_new(y_new, self.grid_, self.n_)
        k = len(vals)
        if k == 0:
            return self
        Xn = self._exog_block(X_new, k, "X_new")
        D = self._design(self.n_, k, Xn)
        r = np.log1p(vals) - D @ self.beta_ - self._event_offset(self.n_, k)
        filled, innov = self.arma_.filter(r)
        self.y_ = np.concatenate([self.y_, vals])[-self.max_len_:]
        self.resid_ = np.concatenate([self.resid_, filled])[-self.max_len_:]
        self.innov_ = np.concatenate([self.innov_, innov])[-self.max_len_:]
        self.observed_ = np.concatenate([self.observed_, ~np.isnan(vals)])[-self.max_len_:]
        if self.X_ is not None:
            self.X_ = np.concatenate([self.X_, Xn])[-self.max_len_:]
        self.n_ += k
        self.since_refit_ += k
        if self.refit_every is not None and self.since_refit_ >= self.refit_every:
            self.refit()
        return self

    def refit(self):
        """Refit both stages on the retained history (the slow part; see ``refit_every``)."""
        self._check_fitted()
        self._fit_window(self.y_.copy(), self.n_ - len(self.y_), None if self.X_ is None else self.X_.copy())
        self.since_refit_ = 0
        return self

    def skip(self, k: int):
        """Advance over ``k`` missing steps in bounded time (a telemetry gap). The ARMA state is
        propagated by its own prediction for at most one season (it has decayed to the mean by
        then); the retained window holds the gap as missing; no refit. Returns self."""
        self._check_fitted()
        if self.n_exog_:
            raise ForecastInputError("skip: the model has X columns, whose values over the gap are unknown")
        k = int(k)
        m = min(k, self.max_len_)
        if m <= 0:
            return self
        filled = min(m, self.season_)
        f, e = self.arma_.filter(np.full(filled, np.nan))  # missing: the filter propagates its prediction
        pad = m - filled
        self.y_ = np.concatenate([self.y_, np.full(m, np.nan)])[-self.max_len_:]
        self.resid_ = np.concatenate([self.resid_, f, np.zeros(pad)])[-self.max_len_:]
        self.innov_ = np.concatenate([self.innov_, e, np.zeros(pad)])[-self.max_len_:]
        self.observed_ = np.concatenate([self.observed_, np.zeros(m, bool)])[-self.max_len_:]
        self.n_ += k
        self.since_refit_ += k
        return self

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict:
        """The fitted state as JSON (see :mod:`forecasting.state`): retained window, fitted
        parameters, ARMA filter state. Restore into a model fitted on the same time grid."""
        self._check_fitted()
        if self.X_ is not None:
            raise ForecastInputError("state_dict: models fitted with X columns are not checkpointed")
        a = self.arma_
        return {"grid": [self.grid_.start.value, self.grid_.freq.value], "n": self.n_, "since_refit": self.since_refit_,
                "kd": self.kd_, "kw": self.kw_, "use_weekend": bool(self.use_weekend_), "grid_fit_i0": self.grid_fit_i0_,
                "event_cols": pack(self.event_cols_, "b1"), "outliers": self.outliers_, "beta": pack(self.beta_),
                "order": list(self.order_), "aic": self.aic_, "phi": pack(a.phi), "theta": pack(a.theta),
                "sigma2": a.sigma2, "r_lags": pack(a.r_lags), "e_lags": pack(a.e_lags), "y": pack(self.y_),
                "resid": pack(self.resid_), "innov": pack(self.innov_), "observed": pack(self.observed_, "b1")}

    def load_state_dict(self, d, path: str = "model") -> SarimaForecaster:
        """Validate ``d`` field by field (:class:`StateError` names the field), then restore it
        all at once: a bad state leaves the model as it was."""
        self._check_fitted()
        s = StateReader(d, path)
        grid = s.raw("grid")
        if grid != [self.grid_.start.value, self.grid_.freq.value]:
            raise StateError(f"{s.name('grid')} is {grid!r}, this model's grid is "
                             f"[{self.grid_.start.value}, {self.grid_.freq.value}] (fitted on another history)")
        kd = s.number("kd", 0, 10_000, integer=True)
        kw = s.number("kw", 0, 10_000, integer=True)
        use_weekend = s.raw("use_weekend")
        if not isinstance(use_weekend, bool):
            raise StateError(f"{s.name('use_weekend')} must be true or false, got {use_weekend!r}")
        event_cols = s.array("event_cols", "b1", (2,))
        order = s.raw("order")
        if not (isinstance(order, list) and len(order) == 3 and all(isinstance(o, int) and not isinstance(o,
                                                                                                          bool) and o >= 0 for o in order)):
            raise StateError(f"{s.name('order')} must be three integers >= 0, got {order!r}")
        p, _, q = order
        weh = self.weekend_harmonics if use_weekend else 0
        n_beta = 1 + 2 * kd + 2 * min(kw, 6) + (1 + 2 * min(weh, kd) if weh else 0) + int(event_cols.sum())
        beta = s.array("beta", shape=(n_beta,))
        phi, theta = s.array("phi", shape=(p,)), s.array("theta", shape=(q,))
        r_lags, e_lags = s.array("r_lags", shape=(p,)), s.array("e_lags", shape=(q,))
        sigma2 = s.number("sigma2", 0.0)
        n = s.number("n", 0, integer=True)
        m = min(n, self.max_len_)
        y = s.array("y", shape=(None,), finite=False, lo=0.0)
        if not 1 <= len(y) <= m:
            raise StateError(f"{s.name('y')} must hold 1 to {m} values (the retained window), got {len(y)}")
        resid, innov = s.array("resid", shape=(len(y),)), s.array("innov", shape=(len(y),))
        observed = s.array("observed", "b1", (len(y),))
        new = dict(kd_=kd, kw_=kw, use_weekend_=use_weekend, event_cols_=event_cols, beta_=beta, order_=tuple(order),
                   aic_=s.number("aic"), outliers_=s.number("outliers", 0, integer=True),
                   grid_fit_i0_=s.number("grid_fit_i0", 0, integer=True), n_=n,
                   since_refit_=s.number("since_refit", 0, integer=True), y_=y, resid_=resid, innov_=innov,
                   observed_=observed, X_=None)
        arma = ArmaState(phi, theta, sigma2)
        arma.r_lags, arma.e_lags = r_lags, e_lags
        self.__dict__.update(new)
        self.arma_ = arma
        return self

    # ------------------------------------------------------------------ predict
    def log_forecast(self, h: int, X_future=None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and sd of ``log1p(y)`` for the next ``h`` steps."""
        self._check_fitted()
        h = check_horizon(h)
        Xf = self._exog_block(X_future, h, "X_future")
        reg = self._design(self.n_, h, Xf) @ self.beta_ + self._event_offset(self.n_, h)
        mu, sd = self.arma_.forecast(h)
        return reg + mu, sd

    def predict(self, h: int, X_future=None, level=(80, 95)) -> Forecast:
        """Forecast of the next ``h`` steps; see :class:`forecasting.result.Forecast`."""
        levels = check_levels(level)
        mu, sd = self.log_forecast(h, X_future)
        return gaussian_log_forecast(mu, sd, levels, self.grid_.start + self.n_ * self.grid_.freq, self.grid_.freq)

    # ------------------------------------------------------------------ helpers
    def _exog_block(self, X, k: int, name: str):
        if self.n_exog_ == 0:
            if X is not None:
                raise ForecastInputError(f"{name} given but the model was fitted without X")
            return None
        if X is None:
            raise ForecastInputError(f"{name} is required: the model was fitted with {self.n_exog_} X columns")
        a = _as_exog(X, k, name)
        if a.shape[1] != self.n_exog_:
            raise ForecastInputError(f"{name} has {a.shape[1]} columns, the model was fitted with {self.n_exog_}")
        return a

    def _check_fitted(self):
        if not hasattr(self, "beta_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(y) first")

    @property
    def next_timestamp(self) -> pd.Timestamp:
        """Timestamp of the step after the last observed one."""
        return self.grid_.start + self.n_ * self.grid_.freq
