"""Errors raised for input a caller can fix; all are ``ValueError`` subclasses.

Every message names the offending field and value, e.g. ``y[17] = -3 is negative``.
"""
from __future__ import annotations


class ForecastInputError(ValueError):
    """Bad input to a forecaster (series, horizon, regressors, configuration)."""


class NegativeValueError(ForecastInputError):
    """Traffic counts must be non-negative."""


class InsufficientHistoryError(ForecastInputError):
    """Too few (non-missing) observations for the configured seasonality."""


class HorizonError(ForecastInputError):
    """Forecast horizon out of range (``h <= 0`` or beyond what a model was trained for)."""


class EventFileError(ForecastInputError):
    """An announced-events CSV that cannot be used; the message names the row and problem."""


class NotFittedError(ForecastInputError):
    """``predict``/``update`` called before ``fit``."""
