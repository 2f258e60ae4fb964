"""Traffic forecasting for the MPC: SARIMA with Fourier seasonality, a neural residual model,
calibrated bands, announced events, metrics and rolling-origin backtests.

Models (one contract, scikit-learn / statsforecast style):

* :class:`SeasonalNaive` -- daily or weekly seasonal naive baseline.
* :class:`SarimaForecaster` -- log1p traffic = Fourier (daily, weekly) + calendar + event
  regressors (least squares, harmonics by BIC) + ARMA(1,0,1)/(2,0,0) errors (conditional ML).
* :class:`HybridForecaster` -- SARIMA + :class:`ResidualNet` (small torch MLP on what SARIMA
  misses, numpy inference), split-conformal bands per horizon step; by default the conformal
  window rolls online with every ``update`` and the net's correction is gated by its recent
  accuracy, so bands and point forecast re-adapt after a regime change without a refit.

Contract. The constructor stores configuration only. ``fit(y, X=None)`` returns ``self``;
``y`` is a pandas Series with a DatetimeIndex (calendar and Fourier features come from the
timestamps) or a 1-D array with ``freq=`` / ``start=`` given to the constructor. NaN values and
missing timestamps are missing observations (see :mod:`forecasting.series`); negative values,
too little history, ``h <= 0`` raise :class:`ForecastInputError` subclasses (``ValueError``).
``predict(h, X_future=None, level=(80, 95))`` returns a :class:`Forecast`: numpy arrays of
length ``h`` under ``"mean"`` (the point forecast; for SARIMA/hybrid the predictive median on the
original scale), ``"lo-80"``, ``"hi-80"``, ``"lo-95"``, ``"hi-95"``. ``update(y_new, X_new=None)``
ingests new observations without refitting; ``refit_every=N`` refits the slow part every N steps.

Use from the controller (per 5-minute tick, numpy only; ~1 ms for update + predict(96))::

    from forecasting import HybridForecaster, load_events
    fc = HybridForecaster(horizon=96, events=load_events("events.csv"), refit_every=288)
    fc.fit(history)                       # pandas Series of counts per 5 min (>= ~5 days; 28 ideal)
    ...
    fc.update(count_of_last_tick)         # every tick
    f = fc.predict(96)
    qps_mean, qps_hi = f["mean"], f["hi-80"]   # or f["hi-95"]

torch is imported only inside :meth:`ResidualNet.fit` (training). Importing this package,
fitting, ``update`` and ``predict`` use numpy/scipy alone.

Evaluation: :func:`backtest` (rolling origin), :mod:`forecasting.metrics` (MASE with the daily
season, sMAPE, pinball, coverage).
"""
from .backtest import BacktestResult, backtest
from .errors import EventFileError, ForecastInputError, HorizonError, InsufficientHistoryError, NegativeValueError, NotFittedError
from .events import Event, EventCalendar, load_events, parse_events
from .hybrid import HybridForecaster
from .metrics import coverage, mase, mase_scale, pinball, smape
from .naive import SeasonalNaive
from .residual_net import ResidualNet
from .result import Forecast
from .sarima import SarimaForecaster

__all__ = [
    "BacktestResult", "backtest", "EventFileError", "ForecastInputError", "HorizonError",
    "InsufficientHistoryError", "NegativeValueError", "NotFittedError", "Event", "EventCalendar",
    "load_events", "parse_events", "HybridForecaster", "coverage", "mase", "mase_scale", "pinball",
    "smape", "SeasonalNaive", "ResidualNet", "Forecast", "SarimaForecaster",
]
