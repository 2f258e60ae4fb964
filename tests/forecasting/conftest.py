"""Small synthetic traffic series for the forecasting tests (hourly: daily season = 24 steps)."""
import numpy as np
import pandas as pd
import pytest


def synth_traffic(days=21, freq="1h", seed=0, level=200.0, start="2024-01-01"):
    """Poisson counts with a daily cycle, a weekend dip and AR(1) log-noise."""
    idx = pd.date_range(start, periods=int(days * pd.Timedelta("1D") / pd.Timedelta(freq)), freq=freq)
    rng = np.random.default_rng(seed)
    hours = idx.hour + idx.minute / 60
    daily = 0.6 * np.sin(2 * np.pi * (hours - 8) / 24) + 0.2 * np.cos(4 * np.pi * hours / 24)
    weekend = np.where(idx.dayofweek >= 5, -0.3, 0.0)
    ar = np.zeros(len(idx))
    for t in range(1, len(idx)):
        ar[t] = 0.7 * ar[t - 1] + 0.05 * rng.normal()
    rate = level * np.exp(daily + weekend + ar)
    return pd.Series(rng.poisson(rate).astype(float), index=idx)


@pytest.fixture
def traffic():
    return synth_traffic()


@pytest.fixture
def make_traffic():
    """The generator itself, for tests that need other lengths or seeds."""
    return synth_traffic
