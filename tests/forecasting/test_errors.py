"""Bad input raises ValueError subclasses naming the field and value."""
import numpy as np
import pandas as pd
import pytest

from forecasting import (
    ForecastInputError,
    HorizonError,
    HybridForecaster,
    InsufficientHistoryError,
    NegativeValueError,
    NotFittedError,
    SarimaForecaster,
    SeasonalNaive,
)


@pytest.mark.parametrize("cls", [SeasonalNaive, SarimaForecaster])
def test_negative_values(cls, traffic):
    y = traffic.copy()
    y.iloc[7] = -3
    with pytest.raises(NegativeValueError, match=r"y\[7\] = -3 is negative"):
        cls().fit(y)
    m = cls().fit(traffic)
    with pytest.raises(NegativeValueError, match=r"y_new\[1\] = -1"):
        m.update([1.0, -1.0])


def test_infinite_and_non_numeric(traffic):
    y = traffic.copy()
    y.iloc[3] = np.inf
    with pytest.raises(ForecastInputError, match=r"y\[3\] = inf is infinite"):
        SarimaForecaster().fit(y)
    with pytest.raises(ForecastInputError, match="numeric"):
        SeasonalNaive(freq="1h").fit(["a", "b"])


@pytest.mark.parametrize("h", [0, -2, 1.5, True])
def test_bad_horizon(h, traffic):
    m = SeasonalNaive().fit(traffic)
    with pytest.raises(HorizonError, match="horizon h="):
        m.predict(h)


def test_too_little_history(make_traffic):
    y = make_traffic(days=1.5)
    with pytest.raises(InsufficientHistoryError, match="needs at least 48"):
        SarimaForecaster().fit(y)
    with pytest.raises(InsufficientHistoryError, match="weekly_harmonics=2 needs 14 days"):
        SarimaForecaster(weekly_harmonics=2).fit(make_traffic(days=5))
    with pytest.raises(InsufficientHistoryError, match=r"season='weekly' \(168 steps\)"):
        SeasonalNaive("weekly").fit(make_traffic(days=5))
    with pytest.raises(InsufficientHistoryError, match="needs at least"):
        HybridForecaster(horizon=12).fit(make_traffic(days=4))


def test_hybrid_horizon_beyond_training(traffic):
    m = HybridForecaster(horizon=6, hidden=8, epochs=3, lags=6).fit(traffic)
    with pytest.raises(HorizonError, match="h=7 exceeds"):
        m.predict(7)


def test_missing_freq_irregular_index_and_not_fitted():
    with pytest.raises(ForecastInputError, match="pass freq="):
        SarimaForecaster().fit(np.ones(100))
    idx = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 01:30", "2024-01-01 03:00"])
    with pytest.raises(ForecastInputError, match=r"y.index\[2\]"):
        SeasonalNaive(freq="1h").fit(pd.Series([1.0, 2, 3, 4], index=idx))
    with pytest.raises(NotFittedError):
        SarimaForecaster().predict(3)
    with pytest.raises(NotFittedError):
        HybridForecaster().update(1.0)


def test_bad_config_and_exog(traffic):
    with pytest.raises(ForecastInputError, match="daily_harmonics=-1"):
        SarimaForecaster(daily_harmonics=-1).fit(traffic)
    with pytest.raises(ForecastInputError, match="season='monthly'"):
        SeasonalNaive("monthly").fit(traffic)
    with pytest.raises(ForecastInputError, match="level=150"):
        SeasonalNaive().fit(traffic).predict(3, level=(80, 150))
    m = SarimaForecaster().fit(traffic, X=np.ones((len(traffic), 1)) * (traffic.index.hour == 12)[:, None])
    with pytest.raises(ForecastInputError, match="X_future is required"):
        m.predict(3)
    with pytest.raises(ForecastInputError, match=r"X_future must have 3 rows"):
        m.predict(3, X_future=np.zeros((2, 1)))
    assert m.predict(3, X_future=np.zeros((3, 1)))["mean"].shape == (3,)


def test_update_series_with_overlap_is_rejected(traffic):
    m = SeasonalNaive().fit(traffic)
    with pytest.raises(ForecastInputError, match="already seen"):
        m.update(traffic.iloc[-2:])
    # a later start fills the hole with missing values
    nxt = pd.Series([5.0], index=[traffic.index[-1] + pd.Timedelta("3h")])
    m.update(nxt)
    assert m.n_ == len(traffic) + 3
