"""Response curves learned from aggregate telemetry alone (no request sample, no policy).

Many schedulers can report only QPS, the load of each cluster and the lambda in force. Each such
tick measures one point of every cluster's cost-per-request curve::

    u_g = load_g * capacity_g / qps        (CPU-ms per request at the lambda then in force)

:class:`TelemetryResponse` keeps the last ``window`` of those points and fits, per cluster, a
non-increasing function of ``log lambda_g`` by weighted isotonic regression (weights halve every
``halflife`` ticks, so the curve follows the drift of the request mix over the day). Outside the
lambdas seen the curve is extrapolated with a prior elasticity: cost per request changes by a
factor ``exp(-elasticity)`` per e-fold of lambda (default 0.1, about what the bundled cascade's
policies show on average over the lambda range). A flat extension would leave the MPC no
authority where it has no data (a night spent at the smallest lambda teaches one point, and the
morning's overload could not be shed); the prior gives it a direction, and each tick at a new
lambda replaces the prior by a measurement. The MPC's exploration dither and the daily swing of
lambda widen the range seen.

Load meters lag (a CPU average, a queue draining), so a tick whose QPS moved by ``steady_ratio`` or
more since the tick before measures neither operating point: it is not a point of the curve (the
MPC's disturbance ``theta`` skips such ticks for the same reason). Kept, one tick of a QPS reported
near zero under a normal load (a counter that reset, ``qps=1e-300``) put a cost per request of
``1e302`` in the window: the curve overflowed and the MPC fell back for the day the point stayed.

Telemetry carries no revenue. The revenue curve follows from the policy being Lagrangian: at the
lambda it is given, the policy's marginal revenue per unit of compute on cluster ``g`` is
``lambda_g`` (envelope theorem), so the frontier's slope between two grid points is the geometric
mean of their lambdas and ``r(lambda)`` is its integral (up to a constant, which the MPC's
objective does not see).
"""
from __future__ import annotations

from collections import deque

import numpy as np
from scipy.optimize import isotonic_regression

from .config import is_number
from .frontier import ResponseCurve


class TelemetryResponse:
    """Per-cluster cost per request as a monotone function of lambda, learned online from telemetry.

    Parameters
    ----------
    capacity : (G,) array
        CPU-ms per second of each cluster.
    window : int
        Ticks of telemetry kept.
    halflife : float
        Age, in ticks, at which a point's weight has halved.
    min_ticks : int
        Points needed before :attr:`ready`.
    elasticity : float
        Prior ``-d log(cost) / d log(lambda)`` outside the lambdas seen.
    steady_ratio : float
        A tick whose QPS is this factor or more away from the previous tick's is skipped (> 1; the
        module doc).
    """

    def __init__(self, capacity: np.ndarray, window: int = 1440, halflife: float = 720.0, min_ticks: int = 30,
                 elasticity: float = 0.1, steady_ratio: float = 2.5):
        for k, v, least in (("window", window, 2), ("min_ticks", min_ticks, 1)):
            if not (isinstance(v, (int, np.integer)) and v >= least):
                raise ValueError(f"telemetry {k} must be an integer >= {least}, got {v!r}")
        if not (np.isfinite(halflife) and halflife > 0):
            raise ValueError(f"telemetry halflife must be finite and > 0, got {halflife!r}")
        if not (np.isfinite(elasticity) and elasticity >= 0):
            raise ValueError(f"telemetry elasticity must be finite and >= 0, got {elasticity!r}")
        if not (is_number(steady_ratio) and np.isfinite(steady_ratio) and steady_ratio > 1):
            raise ValueError(f"telemetry steady_ratio must be a finite number > 1, got {steady_ratio!r}")
        self.capacity, self.elasticity = np.asarray(capacity, dtype=float), float(elasticity)
        self.window, self.halflife, self.min_ticks = int(window), float(halflife), int(min_ticks)
        self.steady_ratio = float(steady_ratio)
        self.points_: deque = deque(maxlen=self.window)  # (log lambda (G,), cost per request (G,))
        self.qps_prev_: float | None = None  # the QPS of the tick observed last (taken or not)

    @property
    def ready(self) -> bool:
        """Whether it has ``min_ticks`` points: enough to steer on."""
        return len(self.points_) >= self.min_ticks

    def observe(self, qps: float, load: np.ndarray, lam: np.ndarray) -> None:
        """Add the tick that just ended (skipped without traffic, with unusable values, or when its
        QPS moved by ``steady_ratio`` or more since the tick before: the module doc)."""
        load, lam = np.asarray(load, dtype=float), np.asarray(lam, dtype=float)
        qps = float(qps)
        prev, self.qps_prev_ = self.qps_prev_, (qps if np.isfinite(qps) and qps >= 0 else None)
        if not (np.isfinite(qps) and qps > 0) or not (np.all(np.isfinite(load)) and np.all(lam > 0) and np.all(np.isfinite(lam))):
            return
        if prev is not None and not (prev > 0 and abs(np.log(qps / prev)) < np.log(self.steady_ratio)):
            return  # the load meters answer the tick before as much as this one
        u = load * self.capacity / qps
        if np.all(np.isfinite(u)):
            self.points_.append((np.log(lam), u))

    def curve(self, grid: np.ndarray) -> ResponseCurve:
        """The fitted cost curves on ``grid`` and the revenue curves implied by them (module doc)."""
        if not self.points_:
            raise ValueError("telemetry response has no data yet")
        z = np.array([p[0] for p in self.points_])  # (n, G)
        u = np.array([p[1] for p in self.points_])
        n, G = z.shape
        w = 0.5 ** (np.arange(n)[::-1] / self.halflife)
        zg = np.log(np.asarray(grid, dtype=float))
        cost = np.empty((G, len(zg)))
        for g in range(G):
            # ticks at the same lambda (a bound, a held value) are pooled into their weighted mean first
            zs, inv = np.unique(z[:, g], return_inverse=True)
            wsum = np.bincount(inv, weights=w)
            fs = isotonic_regression(np.bincount(inv, weights=w * u[:, g]) / wsum, weights=wsum, increasing=False).x
            cost[g] = np.interp(zg, zs, fs)
            below, above = zg < zs[0], zg > zs[-1]  # the prior elasticity beyond the lambdas seen
            cost[g, below] = fs[0] * np.exp(self.elasticity * (zs[0] - zg[below]))
            cost[g, above] = fs[-1] * np.exp(-self.elasticity * (zg[above] - zs[-1]))
        lam = np.asarray(grid, dtype=float)
        slope = np.sqrt(lam[:-1] * lam[1:])  # marginal revenue per unit cost between grid points
        gain = slope[None, :] * (cost[:, :-1] - cost[:, 1:])
        revenue = np.concatenate([np.cumsum(gain[:, ::-1], axis=1)[:, ::-1], np.zeros((G, 1))], axis=1)
        return ResponseCurve(lam_grid=lam, cost=cost, revenue=revenue)

    def state_dict(self) -> dict:
        """The points in the window, as lists."""
        return {"points": [[p[0].tolist(), p[1].tolist()] for p in self.points_], "qps_prev": self.qps_prev_}

    def load_state_dict(self, d: dict) -> None:
        """Restore :meth:`state_dict` (a checkpoint without ``qps_prev``, written before it was
        kept, takes its next tick as it comes)."""
        qps_prev = d.get("qps_prev")
        if qps_prev is not None and not (is_number(qps_prev) and np.isfinite(qps_prev) and qps_prev >= 0):
            raise ValueError(f"telemetry qps_prev must be a finite number >= 0 or null, got {qps_prev!r}")
        self.points_ = deque(((np.asarray(a, dtype=float), np.asarray(b, dtype=float)) for a, b in d["points"]),
                             maxlen=self.window)
        self.qps_prev_ = None if qps_prev is None else float(qps_prev)
