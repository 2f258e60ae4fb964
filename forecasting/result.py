"""The return type of every ``predict``: :class:`Forecast`.

``Forecast`` holds numpy arrays of length ``h``: the point forecast ``mean`` and, for each
requested level L, bands ``lo-L`` / ``hi-L``. It supports ``f["mean"]``, ``f["hi-80"]``,
``"lo-95" in f``, ``f.keys()`` and ``f.to_frame()`` (a pandas DataFrame indexed by the forecast
timestamps; only built on request, so ``predict`` itself stays cheap).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import ndtri

from .errors import ForecastInputError


@dataclass
class Forecast:
    """A point forecast and its bands, keyed like statsforecast (``mean``, ``lo-80``, ``hi-80``, ...).

    Attributes
    ----------
    mean : ndarray, shape (h,)
        The point forecast.
    bands : dict of str -> ndarray
        Band edges by name (``band_name("lo", 80) == "lo-80"``).
    start : pandas.Timestamp or None
        Timestamp of the first step.
    freq : pandas.Timedelta or None
        The step.
    """

    mean: np.ndarray
    bands: dict[str, np.ndarray] = field(default_factory=dict)
    start: pd.Timestamp | None = None  # timestamp of the first forecast step
    freq: pd.Timedelta | None = None

    def __getitem__(self, key: str) -> np.ndarray:
        if key == "mean":
            return self.mean
        try:
            return self.bands[key]
        except KeyError:
            raise KeyError(f"forecast has no {key!r}; available: {', '.join(self.keys())}") from None

    def __contains__(self, key: str) -> bool:
        return key == "mean" or key in self.bands

    def __len__(self) -> int:
        return len(self.mean)

    def keys(self) -> list[str]:
        """The keys: mean, then the band names."""
        return ["mean", *self.bands]

    @property
    def index(self) -> pd.DatetimeIndex | None:
        """The forecast's timestamps (None without ``start``)."""
        if self.start is None:
            return None
        return pd.date_range(self.start, periods=len(self.mean), freq=self.freq)

    def to_frame(self) -> pd.DataFrame:
        """The forecast as a DataFrame, one column per key, on :attr:`index`."""
        return pd.DataFrame({k: self[k] for k in self.keys()}, index=self.index)


def check_levels(level) -> tuple[int, ...]:
    """Validate coverage levels (percent, 0 < L < 100)."""
    try:
        lv = tuple(level)
    except TypeError:
        lv = (level,)
    out = []
    for L in lv:
        if isinstance(L, bool) or not isinstance(L, (int, float, np.integer, np.floating)) or not 0 < L < 100:
            raise ForecastInputError(f"level={L!r} must be a coverage in percent, 0 < level < 100")
        out.append(int(L) if float(L).is_integer() else float(L))
    return tuple(sorted(set(out)))


def band_name(side: str, level) -> str:
    """``lo-80``-style name of a band edge (``side`` ``lo`` or ``hi``, ``level`` in percent)."""
    return f"{side}-{level:g}" if isinstance(level, float) else f"{side}-{level}"


def gaussian_log_forecast(mu: np.ndarray, sd: np.ndarray, levels, start=None, freq=None) -> Forecast:
    """Forecast from a Gaussian on the log1p scale: point = median ``expm1(mu)``; bands map
    monotonically, so their coverage carries over exactly."""
    mean = np.maximum(np.expm1(mu), 0.0)
    bands = {}
    for L in levels:
        z = ndtri(0.5 + L / 200.0)  # the standard normal quantile (what norm.ppf computes, without its argument checks)
        bands[band_name("lo", L)] = np.maximum(np.expm1(mu - z * sd), 0.0)
        bands[band_name("hi", L)] = np.expm1(mu + z * sd)
    return Forecast(mean, bands, start, freq)
