"""Traffic forecasts at the control period for the MPC, built on the ``forecasting`` package.

The slow model (SARIMA with Fourier seasonality, optionally the hybrid with its residual net)
runs on 5-minute means of the measured QPS: it gives the shape of the next hours. Every tick:

* a *nowcast* scales that shape by the ratio of the last measured QPS to the model's value for
  the last tick, the ratio decaying geometrically over the horizon (``nowcast_decay`` per tick),
  so the first steps follow what is happening now and the far steps follow the model;
* the upper band is *calibrated at tick resolution*: the relative errors of past forecasts, per
  horizon step, are kept in a rolling window and their ``band`` quantile (80% or 95%) is the
  margin (split-conformal, online). The calibration starts warm: ``fit`` holds out the history's
  last ``warm_calib`` ticks, fits the slow model on the rest and replays them tick by tick exactly
  as live operation would (forecast ``calib_horizon`` steps, observe, score), so the first live
  forecast already carries a calibrated band. Horizon steps without enough scored errors (a
  history too short to replay, a horizon longer than ``calib_horizon``) use the model's own band;
* the band keeps its coverage under shift by *adaptive conformal inference* (Gibbs & Candes,
  2021): each horizon step's quantile level ``q_k`` starts at ``band`` and moves after every scored
  tick by ``aci_gain (miss - (1 - band / 100))``, ``miss`` = the tick came out above the step's
  upper band. A run of misses (bursts the window's quantile has not seen yet) raises ``q_k`` at
  once; a calm spell lowers it back. Over ``T`` scored ticks the miss rate is within
  ``1 / (aci_gain T)`` of ``1 - band / 100`` whatever the traffic does (``aci_gain=0``: plain
  rolling-window split conformal);
* announced events with an ``expected_multiplier`` multiply the forecast over their span, at tick
  resolution (their past occurrences are divided out of the history before fitting); events
  without a multiplier are regressors of the slow model, which learns their lift from history.
"""
from __future__ import annotations

import copy
import logging
import threading
from collections import deque

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MODELS = ("sarima", "hybrid", "seasonal_naive")
# what TickForecaster calls on its slow model: the forecasting contract, with its online part
# (and the property next_timestamp: the step after the last observation)
MODEL_METHODS = ("fit", "predict", "update", "skip", "refit", "state_dict", "load_state_dict")


def check_model(model) -> None:
    """``ValueError`` naming ``model`` unless it is a model name or follows the ``forecasting``
    contract the tick forecaster drives (:data:`MODEL_METHODS`)."""
    if isinstance(model, str):
        if model not in MODELS:
            raise ValueError(f"forecast model must be one of {MODELS} or a forecasting model, got {model!r}")
        return
    missing = [m for m in MODEL_METHODS if not callable(getattr(model, m, None))]
    if not hasattr(type(model), "next_timestamp"):
        missing.append("next_timestamp")
    if missing:
        raise ValueError(f"forecast model {type(model).__name__} does not follow the forecasting contract: "
                         f"no {', '.join(missing)} (see forecasting's module doc)")


def column_quantiles(E: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``np.quantile(E[:, k][~np.isnan(E[:, k])], levels[k])`` (the default linear method) of every
    column ``k``, in one sort: the same order statistics and the same interpolation steps as
    numpy's, so the same numbers. Every column needs at least one value."""
    S = np.sort(np.ascontiguousarray(E.T), axis=1)  # NaNs sort last
    n = np.sum(~np.isnan(S), axis=1)
    virtual = (n - 1) * np.asarray(levels, dtype=float)
    prev = np.floor(virtual)
    top = virtual >= n - 1  # at or past the largest value: numpy takes the largest (index -1 of the values)
    prev = np.where(top, -1, prev).astype(np.intp)
    rows = np.arange(len(S))
    a = S[rows, np.where(top, n - 1, prev)]
    b = S[rows, np.where(top, n - 1, prev + 1)]
    gamma = virtual - prev
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


class TickForecaster:
    """H-step QPS forecast (mean and an upper quantile) at the control period: the Balancer's
    adapter over a ``forecasting`` model (see the module doc).

    Parameters
    ----------
    model : str or forecasting model
        ``"sarima"``, ``"hybrid"`` or ``"seasonal_naive"`` (built with ``history_days`` and the
        events), or an unfitted model of the ``forecasting`` contract (``fit``, ``predict``,
        ``update``, ``skip``, ``refit``, ``state_dict``, ``load_state_dict``, ``next_timestamp``),
        copied for every fit;
        it keeps its own events and history window.
    step : str
        The slow model's step (default ``"5min"``): ticks are averaged into buckets of this length.
    band : {80, 95}
        The upper band issued as ``"hi"``.
    nowcast_decay : float
        Per-tick decay, in ``[0, 1]``, of the nowcast's correction over the horizon.
    calib_window, min_calib, warm_calib, calib_horizon, aci_gain
        The band's calibration: scored ticks kept, needed before use, replayed at ``fit``,
        horizon steps scored, and the adaptive conformal step.
    events : EventCalendar, path or list of Event, optional
        Announced events (named models only).
    history_days : float
        History the named models retain and refit on.
    refit_every : int or None
        Refit the slow model every this many buckets (None: never).
    max_fill : int
        A gap of at most this many buckets is filled as missing observations; a longer one is skipped.
    refit_in_background : bool
        Refit in a thread (the result is swapped in before the next bucket, so forecasts do not
        depend on the thread's timing).
    """

    def __init__(self, model: str = "sarima", step: str = "5min", band: int = 80, nowcast_decay: float = 0.97,
                 calib_window: int = 1440, min_calib: int = 120, events=None, history_days: float = 28.0,
                 refit_every: int | None = 288, warm_calib: int = 360, calib_horizon: int = 96,
                 aci_gain: float = 0.005, max_fill: int = 12, refit_in_background: bool = True):
        check_model(model)
        if band not in (80, 95):
            raise ValueError(f"band must be 80 or 95, got {band!r}")
        if not 0 <= nowcast_decay <= 1:
            raise ValueError(f"nowcast_decay must be in [0, 1], got {nowcast_decay!r}")
        self.model, self.step, self.band, self.nowcast_decay = model, pd.Timedelta(step), band, nowcast_decay
        self.calib_window, self.min_calib, self.events, self.history_days = calib_window, min_calib, events, history_days
        self.refit_every = refit_every
        for k, v, least in (("warm_calib", warm_calib, 0), ("min_calib", min_calib, 0), ("calib_horizon", calib_horizon, 1)):
            if not (isinstance(v, (int, np.integer)) and v >= least):
                raise ValueError(f"{k} must be an integer >= {least}, got {v!r}")
        self.warm_calib, self.calib_horizon = int(warm_calib), int(calib_horizon)
        if not (isinstance(aci_gain, (int, float)) and 0 <= aci_gain <= 0.1):
            raise ValueError(f"aci_gain must be in [0, 0.1], got {aci_gain!r}")
        self.aci_gain = float(aci_gain)
        if not (isinstance(max_fill, (int, np.integer)) and max_fill >= 0):
            raise ValueError(f"max_fill must be an integer >= 0 (missing 5-minute buckets filled one by one), got {max_fill!r}")
        if refit_every is not None and not (isinstance(refit_every, (int, np.integer)) and refit_every >= 1):
            raise ValueError(f"refit_every must be None or an integer >= 1, got {refit_every!r}")
        self.max_fill, self.refit_in_background = int(max_fill), bool(refit_in_background)

    # ---------------------------------------------------------------------------------- setup
    def _make_model(self, events):
        import forecasting as fc

        # refits are scheduled here (every ``refit_every`` buckets, off the tick path), not by the model
        if not isinstance(self.model, str):
            return copy.deepcopy(self.model)  # a fresh copy of the given model for every fit
        days = self.history_days  # the window the model retains (and refits on)
        if self.model == "seasonal_naive":
            return fc.SeasonalNaive(season="daily", max_history_days=days)
        if self.model == "hybrid":
            return fc.HybridForecaster(horizon=36, events=events, max_history_days=days)
        return fc.SarimaForecaster(events=events, max_history_days=days)

    def fit(self, qps: np.ndarray, times: pd.DatetimeIndex, period_s: float) -> TickForecaster:
        """Fit the slow model on the history and calibrate the band on its last ``warm_calib`` ticks
        (held out of the fit and replayed; skipped when less than two days of history would remain)."""
        qps, times = np.asarray(qps, dtype=float), pd.DatetimeIndex(times)
        n = self.warm_calib
        if n and len(times) > n and times[-n - 1] - times[0] >= pd.Timedelta(days=2):
            self._fit(qps[:-n], times[:-n], period_s)
            self.predict(self.calib_horizon)
            for t, q in zip(times[-n:], qps[-n:]):
                self.observe(t, q)
                self.predict(self.calib_horizon)
            self._finish_refit()  # set-up time: no refit is left running
            self._update_margin()
            self.ticks_ = 0  # ticks observed live
            return self
        return self._fit(qps, times, period_s)

    def _fit(self, qps: np.ndarray, times: pd.DatetimeIndex, period_s: float) -> TickForecaster:
        cal = self._calendar()
        self.period_s_ = float(period_s)
        s = pd.Series(qps, index=times)
        s = s[s.index >= s.index[-1] - pd.Timedelta(days=self.history_days)]
        s = s / _multiplier(cal, s.index.asi8)  # divide out announced multipliers
        y = s.resample(self.step, origin=s.index[0].floor(self.step)).mean()
        # a partial last bucket would read as a traffic drop
        if len(s) and (s.index[-1] + pd.Timedelta(seconds=period_s)) < y.index[-1] + self.step:
            y = y.iloc[:-1]
        self.calendar_ = cal
        self.model_ = self._make_model(self._regressor_calendar(cal)).fit(y)
        self._model_changed()
        self.next_bucket_ = y.index[-1] + self.step
        self.bucket_ = []
        self.last_qps_ = float(s.iloc[-1] * _multiplier(cal, s.index[-1:].asi8)[0]) if len(s) else 0.0
        self.last_time_ = s.index[-1]
        self.pending_: deque = deque()  # (target tick times, predicted means, issued margins) for calibration
        self.errors_ = np.full((self.calib_window, 0), np.nan)
        self.err_rows_ = 0
        self.margin_ = None
        self.level_ = np.zeros(0)  # the adaptive quantile level per horizon step
        self.ticks_ = 0
        self.since_refit_ = 0  # buckets fed since the last refit
        self.refit_ = None  # a refit running in the background: (thread, result box)
        return self

    def _calendar(self):
        if self.events is None:
            return None
        from forecasting import load_events
        from forecasting.events import as_calendar

        return load_events(self.events) if isinstance(self.events, str) else as_calendar(self.events)

    @staticmethod
    def _regressor_calendar(cal):
        if cal is None:
            return None
        from forecasting import EventCalendar

        return EventCalendar([e for e in cal.events if e.expected_multiplier is None]) or None

    # ----------------------------------------------------------------------------- per tick
    def observe(self, time: pd.Timestamp, qps: float) -> None:
        """Ingest the QPS measured over the tick that ended at ``time``."""
        qps = float(qps)
        if not np.isfinite(qps) or qps < 0:
            raise ValueError(f"observation qps must be finite and >= 0, got {qps!r}")
        time = pd.Timestamp(time)
        if time < self.last_time_:
            raise ValueError(f"observation time {time} is before the last one, {self.last_time_}")
        self._calibrate(time, qps)
        self.last_qps_, self.last_time_ = qps, time
        base = qps / _multiplier(self.calendar_, np.array([time.value]))[0]
        edge = self.next_bucket_ + self.step - pd.Timedelta(seconds=self.period_s_)
        if time >= edge:  # buckets complete: feed the slow model (empty buckets are missing observations)
            done = int((time - edge) // self.step) + 1
            self._feed(np.array([float(np.mean(self.bucket_)) if self.bucket_ else float("nan")]))
            gap = done - 1
            if 0 < gap <= self.max_fill:
                self._feed(np.full(gap, np.nan))  # a short gap: missing observations, filtered one by one
            elif gap > self.max_fill:
                self._skip(gap)  # a long gap: skipped in bounded time
            self.bucket_ = []
            self.next_bucket_ += done * self.step
        self.bucket_.append(base)
        self.ticks_ += 1

    # ------------------------------------------------------------------------------ refits
    def _feed(self, values: np.ndarray) -> None:
        self._finish_refit()
        self.model_.update(values)
        self._model_changed()
        self.since_refit_ += len(values)
        self._maybe_refit()

    def _skip(self, k: int) -> None:
        self._finish_refit()
        log.info("forecaster: telemetry gap of %d buckets of %s, skipped (model state held, no catch-up)", k, self.step)
        self.model_.skip(k)
        self._model_changed()
        self.since_refit_ += k
        self._maybe_refit()

    def _maybe_refit(self) -> None:
        if self.refit_every is None or self.since_refit_ < self.refit_every:
            return
        self.since_refit_ = 0
        self._start_refit()

    def _start_refit(self) -> None:
        """Refit a copy of the slow model on its retained window. In the background (a thread)
        unless ``refit_in_background`` is off; either way the copy replaces the model just before
        the next bucket is fed, so the forecasts do not depend on the thread's timing."""
        clone = copy.deepcopy(self.model_)
        box: dict = {}

        def work():
            try:
                box["model"] = clone.refit()
            except Exception as e:  # noqa: BLE001 -- a failed refit keeps the fitted model
                box["error"] = e

        if not self.refit_in_background:
            work()
            self.refit_ = (None, box)
            return
        t = threading.Thread(target=work, name="forecaster-refit", daemon=True)
        t.start()
        self.refit_ = (t, box)

    def _finish_refit(self) -> None:
        if self.refit_ is None:
            return
        t, box = self.refit_
        if t is not None:
            t.join()
        self.refit_ = None
        if "model" in box:
            self.model_ = box["model"]
            self._model_changed()
        else:
            log.warning("forecaster: refit failed (%s: %s); keeping the fitted model until the next refit",
                        type(box.get("error")).__name__, box.get("error"))

    def predict(self, h: int) -> dict:
        """``{"mean": (h,), "hi": (h,)}`` for the next ``h`` ticks after the last observation."""
        if h < 1:
            raise ValueError(f"horizon must be >= 1, got {h!r}")
        dt = int(self.period_s_ * 1e9)
        t = self.last_time_.value + dt * np.arange(0, h + 1)  # ns: [last observed, next h]
        nb, step = self.next_bucket_.value, self.step.value
        steps = int(np.ceil((t[-1] - nb) / step)) + 2
        f = self._model_forecast(max(steps, 1))
        centers = (nb + step // 2 + step * np.arange(len(f["mean"]))).astype(float)
        tf = t.astype(float)
        base = np.interp(tf, centers, f["mean"])
        hi_model = np.interp(tf, centers, f[f"hi-{self.band}"])
        mult = _multiplier(self.calendar_, t)
        base_now = max(base[0] * mult[0], 1e-9)
        ratio = self.last_qps_ / base_now if self.last_qps_ > 0 else 1.0
        k = np.arange(1, h + 1)
        mean = np.maximum(base[1:] * mult[1:] * (1 + (ratio - 1) * self.nowcast_decay ** k), 0.0)
        margin = np.maximum(hi_model[1:] / np.maximum(base[1:], 1e-9), 1.0) - 1.0  # the model's band
        issued = np.full(h, np.nan)  # the calibrated margin of each step, as issued (ACI scores it)
        if self.margin_ is not None:
            m = self.margin_[:h]
            margin[: len(m)] = np.where(np.isnan(m), margin[: len(m)], m)  # calibrated steps
            issued[: len(m)] = m
        hi = mean * (1 + margin)
        self._remember(t[1:], mean, issued)
        return {"mean": mean, "hi": np.maximum(hi, mean)}

    def _model_changed(self) -> None:
        """Forget the slow model's forecast: its state moved (a bucket fed or skipped, a refit
        swapped in, a checkpoint restored)."""
        self._memo = None

    def _model_forecast(self, steps: int) -> dict:
        """The slow model's forecast of ``steps`` buckets. Its state moves once a bucket (every
        ``step / period`` ticks), so the ticks in between ask the same question: answered from the
        last call (the same arrays; :meth:`predict` only reads them)."""
        memo = self._memo
        if memo is not None and memo[0] is self.model_ and memo[1] == steps:
            return memo[2]
        f = self.model_.predict(steps)
        self._memo = (self.model_, steps, f)
        return f

    # ------------------------------------------------------------------------- calibration
    def _remember(self, times_ns, mean, issued):
        self.pending_.append((times_ns, mean, issued))
        while len(self.pending_) > len(mean) + 1:
            self.pending_.popleft()

    def _calibrate(self, time, qps):
        if not self.pending_:
            return
        H = max(len(m) for _, m, _ in self.pending_)
        if self.errors_.shape[1] < H:  # a longer horizon than so far: the new steps start unscored
            self.errors_ = np.concatenate([self.errors_, np.full((self.calib_window, H - self.errors_.shape[1]), np.nan)], axis=1)
        row = np.full(self.errors_.shape[1], np.nan)
        band = np.full(self.errors_.shape[1], np.nan)  # the calibrated margin issued for this tick, per step
        t = pd.Timestamp(time).value
        for times, mean, issued in self.pending_:
            k = (t - times[0]) // max(int(self.period_s_ * 1e9), 1)
            if 0 <= k < len(times) and times[k] == t and mean[k] > 0:
                row[k], band[k] = qps / mean[k] - 1.0, issued[k]
        self.errors_[self.err_rows_ % self.calib_window] = row
        self.err_rows_ += 1
        if self.level_.size < row.size:
            self.level_ = np.concatenate([self.level_, np.full(row.size - self.level_.size, self.band / 100.0)])
        if self.aci_gain > 0:
            scored = ~np.isnan(row) & ~np.isnan(band)
            miss = row[scored] > band[scored]
            self.level_[scored] = np.clip(self.level_[scored] + self.aci_gain * (miss - (1 - self.band / 100.0)), 0.5, 1.0)
            if miss.any():  # a miss moves that step's band now, not at the next refresh
                self._update_margin(np.flatnonzero(scored)[miss])
        if self.err_rows_ % 30 == 0:
            self._update_margin()

    def _update_margin(self, steps: np.ndarray | None = None):
        """The adaptive quantile of the scored relative errors per horizon step (NaN: too few
        scored); only ``steps`` when given (the others keep their margin)."""
        E = self.errors_[: min(self.err_rows_, self.calib_window)]
        if steps is not None and self.margin_ is not None:  # only these steps' scores are counted (a tick's misses)
            ok = np.zeros(E.shape[1], dtype=bool)
            ok[steps] = np.sum(~np.isnan(E[:, steps]), axis=0) >= max(self.min_calib, 1)
        else:
            ok = np.sum(~np.isnan(E), axis=0) >= max(self.min_calib, 1)
        if not ok.any():
            return
        margin = np.full(E.shape[1], np.nan)
        if steps is not None and self.margin_ is not None:
            margin[: len(self.margin_)] = self.margin_[: E.shape[1]]
        level = np.full(E.shape[1], self.band / 100.0)
        level[: min(self.level_.size, level.size)] = self.level_[: level.size]
        cols = np.flatnonzero(ok)
        margin[cols] = np.maximum(column_quantiles(E[:, cols], level[cols]), 0.0)
        self.margin_ = margin

    # ---------------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        """What the next forecasts depend on, as JSON: the slow model's own state (retained
        window, fitted parameters, filter state), the open bucket, the forecasts awaiting their
        score and the scored errors. Bounded by the windows (``history_days``, ``calib_window``),
        not by the ticks observed."""
        from forecasting.state import pack
        pending = [[pack(t, "i8"), pack(m), pack(b)] for t, m, b in self.pending_]
        return {"model_name": self._model_name(), "period_s": self.period_s_, "next_bucket": self.next_bucket_.value,
                "bucket": pack(self.bucket_), "last_qps": self.last_qps_, "last_time": self.last_time_.value,
                "pending": pending, "errors": pack(self.errors_), "err_rows": self.err_rows_,
                "margin": None if self.margin_ is None else pack(self.margin_), "aci_level": pack(self.level_),
                "ticks": self.ticks_,
                "since_refit": self.since_refit_, "refit_pending": self.refit_ is not None,
                "model": self.model_.state_dict()}

    def _model_name(self) -> str:
        return self.model if isinstance(self.model, str) else type(self.model).__name__

    def load_state_dict(self, d, path: str = "forecaster") -> None:
        """Restore :meth:`state_dict` into a forecaster fitted on the same history. Every field is
        checked first (a :class:`~forecasting.state.StateError` names it); nothing changes unless
        all of them are good."""
        from forecasting.state import StateError, StateReader

        s = StateReader(d, path)
        s.string("model_name", (self._model_name(),))
        if s.number("period_s", 0.0) != self.period_s_:
            raise StateError(f"{s.name('period_s')} is {s.raw('period_s')!r}, this forecaster's is {self.period_s_}")
        step_ns = self.step.value
        next_bucket = s.number("next_bucket", integer=True, lo=-(2 ** 62), hi=2 ** 62)
        if (next_bucket - self.model_.next_timestamp.value) % step_ns:
            raise StateError(f"{s.name('next_bucket')} is not on the {self.step} grid")
        bucket = s.array("bucket", shape=(None,), lo=0.0)
        last_time = s.number("last_time", integer=True, lo=-(2 ** 62), hi=2 ** 62)
        pend = s.raw("pending")
        if not isinstance(pend, list):
            raise StateError(f"{s.name('pending')} must be a list, got {type(pend).__name__}")
        pending = deque()
        for j, pair in enumerate(pend):
            if not (isinstance(pair, list) and len(pair) == 3):
                raise StateError(f"{s.name('pending')}[{j}] must be [times, mean, issued margin]")
            ps = StateReader({"times": pair[0], "mean": pair[1], "issued": pair[2]}, f"{s.name('pending')}[{j}]")
            t = ps.array("times", "i8", (None,))
            pending.append((t, ps.array("mean", shape=(len(t),), lo=0.0), ps.array("issued", shape=(len(t),), finite=False)))
        errors = s.array("errors", shape=(self.calib_window, None), finite=False)
        margin = s.array("margin", shape=(errors.shape[1],), finite=False, lo=0.0, optional=True)
        level = s.array("aci_level", shape=(None,), lo=0.5)
        if len(level) > errors.shape[1] or np.any(level > 1.0):
            raise StateError(f"{s.name('aci_level')} must hold at most {errors.shape[1]} levels in [0.5, 1]")
        new = dict(next_bucket_=pd.Timestamp(next_bucket), bucket_=bucket.tolist(),
                   last_qps_=s.number("last_qps", 0.0), last_time_=pd.Timestamp(last_time), pending_=pending,
                   errors_=errors, err_rows_=s.number("err_rows", 0, integer=True), margin_=margin, level_=level,
                   ticks_=s.number("ticks", 0, integer=True), since_refit_=s.number("since_refit", 0, integer=True))
        refit_pending = s.raw("refit_pending")
        if not isinstance(refit_pending, bool):
            raise StateError(f"{s.name('refit_pending')} must be true or false, got {refit_pending!r}")
        self.model_.load_state_dict(s.raw("model"), s.name("model"))  # validates, then restores at once
        self._model_changed()
        if self.refit_ is not None and self.refit_[0] is not None:
            self.refit_[0].join()  # a refit of the replaced state is of no use
        self.refit_ = None
        self.__dict__.update(new)
        if refit_pending:  # the same refit the checkpointed forecaster had running
            self._start_refit()


def _multiplier(cal, times_ns: np.ndarray) -> np.ndarray:
    """The announced traffic multiplier at each time (1 without a calendar)."""
    return np.ones(len(times_ns)) if cal is None else cal.multiplier(times_ns)
