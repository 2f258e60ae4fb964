"""What a deployment tells the balancer: its clusters once, and one :class:`Telemetry` per tick."""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .controllers.base import Observation

# the telemetry times the Balancer takes (a checkpoint holds int64 ns under 2^62, about 2116): a time
# outside is a mistyped year, held by the Balancer, refused by the service and by the trace reader
TIME_MIN, TIME_MAX = pd.Timestamp("1970-01-01"), pd.Timestamp("2100-01-01")


@dataclass(frozen=True)
class Cluster:
    """A stage cluster: ``capacity`` in CPU-ms per second, ``target`` the load fraction ``C_m``."""

    capacity: float
    target: float = 0.9

    def __post_init__(self):
        for name in ("capacity", "target"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"cluster {name} must be a number, got {v!r}")
        if not (np.isfinite(self.capacity) and self.capacity > 0):
            raise ValueError(f"cluster capacity must be finite and > 0 (CPU-ms per second), got {self.capacity!r}")
        if not (np.isfinite(self.target) and 0 < self.target <= 1):
            raise ValueError(f"cluster target must be a load fraction in (0, 1], got {self.target!r}")


@dataclass
class Telemetry:
    """One tick's report, about the tick that just ended.

    Parameters
    ----------
    time : timestamp
        End of the tick (anything ``pandas.Timestamp`` accepts, timezone-naive; not a number: epoch
        seconds, ``time.time()``, went in as nanoseconds, in the first seconds of 1970).
    qps : float
        Requests per second over the tick.
    load : mapping (or pandas Series) cluster -> float, or array in cluster order
        Measured load of each cluster (fraction of capacity).
    lam : mapping (or pandas Series) cluster -> float, or array in cluster order
        The lambda in force during the tick.
    features : (n, d) array or None
        A sample of the tick's requests, as the policy reads them; None sends aggregates only.
    over : mapping (or pandas Series) cluster -> float, array in cluster order, or None
        The over-utilisation the nodes saw during the tick, in units of ``C_m``: the mean over
        their own load readings (e.g. each node guard's sub-tick reading) of
        ``max(load - C_m, 0) / C_m``. This is MaRCA's nu measured where the overload happens; the
        MPC's back-off calibrates on it. None (default): the MPC scores the tick's mean ``load``
        instead, which misses overloads shorter than a tick and counts the meter's noise near
        ``C_m`` as overload.
    """

    time: object
    qps: float
    load: object
    lam: object
    features: np.ndarray | None = None
    over: object = None


def readings(value) -> np.ndarray:
    """``value`` (per-cluster readings) as a new float array; ``TypeError`` for flags, strings or
    bytes, a caller's mistake rather than a reading (an element ``None`` is a missing reading: NaN).
    A numeric array, the common case of a node's own meter, takes the short way."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        return np.array(value, dtype=float)
    arr = np.asarray(value)
    if arr.dtype.kind in "bUSV" or (arr.dtype.kind == "O" and any(isinstance(v, (bool, str, bytes)) for v in arr.ravel())):
        raise TypeError
    return arr.astype(float)


def _per_cluster(name: str, value, clusters: tuple[str, ...]) -> np.ndarray:
    if isinstance(value, (Mapping, pd.Series)):  # keyed by cluster name, never read by position
        keys = list(value.keys())
        missing = [c for c in clusters if c not in keys]
        extra = [str(k) for k in keys if k not in clusters]
        if missing or extra:
            raise ValueError(f"telemetry {name}: missing clusters {missing}, unknown clusters {extra}; "
                             f"expected exactly {list(clusters)}")
        value = [value[c] for c in clusters]
    try:
        arr = readings(value)
    except (TypeError, ValueError):
        raise ValueError(f"telemetry {name} must be numbers, one per cluster {list(clusters)}, got {value!r}") from None
    if arr.shape != (len(clusters),):
        raise ValueError(f"telemetry {name} must have one value per cluster {list(clusters)}, got shape {arr.shape}")
    return arr


def _as_ns(t) -> str:
    """What ``pandas.Timestamp(t)`` makes of the number ``t`` (nanoseconds since 1970), for the message."""
    try:
        return str(pd.Timestamp(t))
    except (TypeError, ValueError, OverflowError):
        return "no time"


def to_observation(tel: Telemetry, clusters: tuple[str, ...], t: int, n_features: int | None) -> Observation:
    """Shape-check ``tel`` into the controllers' array form. A caller's mistake (missing cluster,
    wrong shape or type) raises ``ValueError`` naming the field; bad *values* (NaN, negative) pass
    through for the Balancer's documented hold."""
    if not isinstance(tel, Telemetry):
        raise ValueError(f"step expects a Telemetry, got {type(tel).__name__}")
    if isinstance(tel.time, (numbers.Number, np.bool_)):  # pandas reads a number as nanoseconds since 1970
        raise ValueError(f"telemetry time must be a timestamp, got the number {tel.time!r} (pandas would read it as "
                         f"{_as_ns(tel.time)}); for epoch seconds pass pandas.Timestamp(t, unit='s')")
    try:
        time = pd.Timestamp(tel.time)
    except (TypeError, ValueError):
        raise ValueError(f"telemetry time must be a timestamp, got {tel.time!r}") from None
    if time is pd.NaT or time.tzinfo is not None:
        raise ValueError(f"telemetry time must be a timezone-naive timestamp, got {tel.time!r}")
    try:
        if isinstance(tel.qps, (bool, np.bool_, str, bytes)):  # a flag or a string is a caller's mistake
            raise TypeError
        qps = float(tel.qps)  # a number: int, float, numpy scalar or 0-d array, Decimal, Fraction
    except (TypeError, ValueError):
        raise ValueError(f"telemetry qps must be a number, got {tel.qps!r}") from None
    load, lam = _per_cluster("load", tel.load, clusters), _per_cluster("lam", tel.lam, clusters)
    x = tel.features
    if x is not None:
        try:
            x = np.asarray(x, dtype=float)
        except (TypeError, ValueError):
            raise ValueError("telemetry features must be a numeric 2-D array (requests x features)") from None
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"telemetry features must be a 2-D array (requests x features) with >= 1 row, got shape {x.shape}")
        if n_features is not None and x.shape[1] != n_features:
            raise ValueError(f"telemetry features must have {n_features} columns (as before), got {x.shape[1]}")
    over = None if tel.over is None else _per_cluster("over", tel.over, clusters)
    return Observation(t=t, time=time, qps=qps, load=load, lam=lam, features=x, over=over)
