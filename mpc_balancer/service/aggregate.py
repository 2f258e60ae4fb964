"""One tick's node reports -> one :class:`~mpc_balancer.telemetry.Telemetry`.

The nodes of a serving fleet each report their own share of a tick: ``qps`` is summed, ``load``
and ``lam`` are averaged weighted by each node's ``qps`` (plain mean when no node had traffic; a
value every node reports alike is taken as is, without rounding), so is ``over`` when every node
reports it (a tick where some node does not has no ``over``: the MPC's back-off then scores the
tick's mean load), and the feature samples are
concatenated in node-name order and, above ``max_rows``, thinned to ``max_rows`` evenly spaced
rows. The result does not depend on the order in which the reports arrived.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..telemetry import Telemetry


@dataclass(frozen=True)
class NodeReport:
    """One node's telemetry for one tick, as the service received it.

    ``time`` is the tick's time: the node's own stamp, or, when the node's stamp lay within
    ``tick_tolerance_s`` of an open tick's time and the report joined that tick, the tick's time,
    the node's stamp then kept in ``sent_time`` (see :mod:`.control`)."""

    node: str
    time: pd.Timestamp
    qps: float
    load: dict
    lam: dict
    features: list | None
    received: float  # wall clock (s since the epoch) at acceptance
    over: dict | None = None  # cluster -> over-utilisation the node saw (None: not reported)
    sent_time: pd.Timestamp | None = None  # the node's own stamp when it differs from the tick's time

    def to_json(self) -> dict:
        """The report as JSON-able values (for the store)."""
        return {"node": self.node, "time": self.time.isoformat(), "qps": self.qps, "load": self.load, "lam": self.lam,
                "features": self.features, "received": self.received, "over": self.over,
                "sent_time": None if self.sent_time is None else self.sent_time.isoformat()}

    @classmethod
    def from_json(cls, d: dict) -> NodeReport:
        """The inverse of :meth:`to_json`."""
        return cls(node=d["node"], time=pd.Timestamp(d["time"]), qps=float(d["qps"]), load=dict(d["load"]),
                   lam=dict(d["lam"]), features=d["features"], received=float(d["received"]),
                   over=None if d.get("over") is None else dict(d["over"]),
                   sent_time=None if d.get("sent_time") is None else pd.Timestamp(d["sent_time"]))


def _weighted(values: list[float], weights: list[float]) -> float:
    if all(v == values[0] for v in values):
        return float(values[0])
    total = math.fsum(weights)
    if total <= 0:
        return math.fsum(values) / len(values)
    return math.fsum(v * w for v, w in zip(values, weights)) / total


def aggregate(reports: list[NodeReport], clusters: tuple, max_rows: int) -> Telemetry:
    """The tick's Telemetry from its nodes' reports (all for the same time)."""
    if not reports:
        raise ValueError("aggregate needs at least one report")
    reports = sorted(reports, key=lambda r: r.node)
    times = {r.time for r in reports}
    if len(times) != 1:
        raise ValueError(f"reports of one tick must share their time, got {sorted(map(str, times))}")
    q = [r.qps for r in reports]
    load = {c: _weighted([r.load[c] for r in reports], q) for c in clusters}
    lam = {c: _weighted([r.lam[c] for r in reports], q) for c in clusters}
    over = None
    if all(r.over is not None for r in reports):
        over = {c: _weighted([r.over[c] for r in reports], q) for c in clusters}
    rows = [row for r in reports if r.features for row in r.features]
    x = None
    if rows:
        x = np.asarray(rows, dtype=float)
        if len(x) > max_rows:
            x = x[np.linspace(0, len(x) - 1, max_rows).round().astype(np.int64)]
    return Telemetry(time=reports[0].time, qps=math.fsum(q), load=load, lam=lam, features=x, over=over)
