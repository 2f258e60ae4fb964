"""The versioned cost-table format: measured CPU cost per request, by stage, as the cascade reads it.

A cost table is what ``mpc-balancer testbench fit`` writes and what :class:`policies.cascade.CascadeSpec`
loads. All costs are CPU-milliseconds per request. It holds, per stage, monotone (isotonic)
queue-length -> cost tables, and says how they combine into a joint action's cost per cluster:

* retrieval: ``channels * channel(queue) + switch * switch(queue)`` -- each recall channel costs
  ``channel(queue)`` for the queue it fetches; the retrieval switch adds the extended ANN channel,
  measured on its own (``switch``); channel costs are summed;
* pre-ranking: ``models[model](n_p)`` -- one table per model behind the model switch, each measured
  one by one;
* ranking: ``queue(n_k)``.

Between knots a table interpolates linearly (a monotone interpolation of monotone knots); below the
first knot it holds the first value; above the last it extends the last segment's (non-negative)
slope. A degradation term per cluster converts a degradation level (the share of requests served
at the stage's cheapest, degraded action) into equivalent compute: ``level * (mean_cost -
degraded_cost_ms)``, the compute the degraded requests would have needed.

The JSON carries its provenance (machine, date, load-test durations, repeats, rates) so a table can
be traced to the run that measured it. :func:`load_cost_table` validates everything and names the
offending field and value in its errors. This module depends on numpy only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .files import write_atomic

FORMAT = "mpc-balancer.cost-table"
VERSION = 1
CLUSTERS = ("retrieval", "prerank", "rank")
DEFAULT_PATH = Path(__file__).with_name("data") / "cost_table.json"
REQUIRED_PROVENANCE = ("tool", "created", "machine", "measurements")
REQUIRED_MEASUREMENT = ("workload", "stage", "date", "duration_s", "warmup_s", "repeats")


@dataclass(frozen=True)
class QueueCostTable:
    """A monotone queue-length -> CPU-ms-per-request table (knots of an isotonic fit)."""

    queue: tuple[float, ...]
    cost_ms: tuple[float, ...]
    spread_ms: tuple[float, ...] | None = None  # measured standard deviation at each knot, if known

    def __post_init__(self):
        _check_table(self.queue, self.cost_ms, self.spread_ms, "table")

    def __call__(self, n) -> np.ndarray:
        """Cost (CPU-ms) at queue lengths ``n`` (array-like)."""
        n = np.asarray(n, dtype=float)
        q, c = np.asarray(self.queue), np.asarray(self.cost_ms)
        out = np.interp(n, q, c)
        if len(q) > 1:
            slope = (c[-1] - c[-2]) / (q[-1] - q[-2])
            out = np.where(n > q[-1], c[-1] + slope * (n - q[-1]), out)
        return out

    def to_dict(self) -> dict:
        """The table as JSON-able values."""
        d = {"queue": [float(v) for v in self.queue], "cost_ms": [float(v) for v in self.cost_ms]}
        if self.spread_ms is not None:
            d["spread_ms"] = [float(v) for v in self.spread_ms]
        return d

    @classmethod
    def from_dict(cls, d, where: str) -> QueueCostTable:
        """The inverse of :meth:`to_dict` (checked: ``ValueError`` naming the field)."""
        if not isinstance(d, dict):
            raise ValueError(f"cost table: {where} must be an object with queue and cost_ms, got {d!r}")
        unknown = set(d) - {"queue", "cost_ms", "spread_ms"}
        if unknown:
            raise ValueError(f"cost table: {where} has unknown keys {sorted(unknown)}")
        for key in ("queue", "cost_ms"):
            if key not in d:
                raise ValueError(f"cost table: {where}.{key} is missing")
        q, c = _floats(d["queue"], f"{where}.queue"), _floats(d["cost_ms"], f"{where}.cost_ms")
        s = _floats(d["spread_ms"], f"{where}.spread_ms") if "spread_ms" in d else None
        _check_table(q, c, s, where)
        return cls(q, c, s)


@dataclass(frozen=True)
class CostTable:
    """Measured per-stage cost tables plus the degradation term and the measurement provenance."""

    retrieval_channel: QueueCostTable
    retrieval_switch: QueueCostTable
    prerank_models: tuple[QueueCostTable, ...]
    rank: QueueCostTable
    degraded_cost_ms: tuple[float, float, float]  # per cluster: cost of a request served degraded
    provenance: dict = field(default_factory=dict, compare=False, hash=False)

    def cost_array(self, channels, queue, switch, n_p, model, n_k) -> np.ndarray:
        """``(3, A)`` CPU-ms per request per cluster for joint actions given as arrays of length A:
        retrieval ``channels``, per-channel ``queue``, ``switch``; pre-ranking count ``n_p`` and
        ``model``; ranking count ``n_k``."""
        model = np.asarray(model).astype(int)
        if model.size and (model.min() < 0 or model.max() >= len(self.prerank_models)):
            raise ValueError(f"prerank model switch values {sorted(set(model.tolist()))} need a cost table per model; "
                             f"this table has {len(self.prerank_models)} (models 0..{len(self.prerank_models) - 1})")
        ch, q, sw = (np.asarray(v, dtype=float) for v in (channels, queue, switch))
        retrieval = ch * self.retrieval_channel(q) + sw * self.retrieval_switch(q)
        per_model = np.stack([t(n_p) for t in self.prerank_models])
        prerank = np.take_along_axis(per_model, model[None, :], axis=0)[0]
        return np.stack([retrieval, prerank, self.rank(n_k)])

    def degradation_equivalent(self, cluster: str, level, mean_cost_ms) -> np.ndarray:
        """Equivalent compute (CPU-ms per request) of a degradation ``level`` in [0, 1] on ``cluster``
        when undegraded requests would cost ``mean_cost_ms`` on average."""
        if cluster not in CLUSTERS:
            raise ValueError(f"unknown cluster {cluster!r}; expected one of {', '.join(CLUSTERS)}")
        level = np.asarray(level, dtype=float)
        if np.any((level < 0) | (level > 1)) or not np.all(np.isfinite(level)):
            raise ValueError(f"degradation level must be in [0, 1], got {level.tolist()}")
        floor = self.degraded_cost_ms[CLUSTERS.index(cluster)]
        return level * np.maximum(np.asarray(mean_cost_ms, dtype=float) - floor, 0.0)

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The table as JSON-able values, with its provenance."""
        return {
            "format": FORMAT, "version": VERSION, "unit": "cpu_ms_per_request",
            "provenance": self.provenance,
            "stages": {
                "retrieval": {"channel": self.retrieval_channel.to_dict(), "switch": self.retrieval_switch.to_dict()},
                "prerank": {"models": [t.to_dict() for t in self.prerank_models]},
                "rank": {"queue": self.rank.to_dict()},
            },
            "degradation": {c: {"degraded_cost_ms": float(v)} for c, v in zip(CLUSTERS, self.degraded_cost_ms)},
        }

    @classmethod
    def from_dict(cls, d) -> CostTable:
        """The inverse of :meth:`to_dict` (checked: ``ValueError`` naming the field)."""
        if not isinstance(d, dict):
            raise ValueError(f"cost table must be a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise ValueError(f"cost table: format must be {FORMAT!r}, got {d.get('format')!r}")
        if d.get("version") != VERSION:
            raise ValueError(f"cost table: version {d.get('version')!r} is not supported (this build reads version {VERSION})")
        if d.get("unit", "cpu_ms_per_request") != "cpu_ms_per_request":
            raise ValueError(f"cost table: unit must be 'cpu_ms_per_request', got {d.get('unit')!r}")
        unknown = set(d) - {"format", "version", "unit", "provenance", "stages", "degradation"}
        if unknown:
            raise ValueError(f"cost table: unknown top-level keys {sorted(unknown)}")
        prov = _check_provenance(d.get("provenance"))
        stages = _obj(d.get("stages"), "stages")
        missing = [c for c in CLUSTERS if c not in stages]
        if missing or set(stages) - set(CLUSTERS):
            raise ValueError(f"cost table: stages must be exactly {list(CLUSTERS)}, got {sorted(stages)}")
        ret = _obj(stages["retrieval"], "stages.retrieval")
        pre = _obj(stages["prerank"], "stages.prerank")
        rnk = _obj(stages["rank"], "stages.rank")
        models = pre.get("models")
        if not isinstance(models, list) or not models:
            raise ValueError(f"cost table: stages.prerank.models must be a non-empty list of tables (one per model), got {models!r}")
        deg = _obj(d.get("degradation"), "degradation")
        floors = []
        for c in CLUSTERS:
            entry = _obj(deg.get(c), f"degradation.{c}")
            v = entry.get("degraded_cost_ms")
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v) or v < 0:
                raise ValueError(f"cost table: degradation.{c}.degraded_cost_ms must be a finite number >= 0, got {v!r}")
            floors.append(float(v))
        return cls(
            retrieval_channel=QueueCostTable.from_dict(ret.get("channel"), "stages.retrieval.channel"),
            retrieval_switch=QueueCostTable.from_dict(ret.get("switch"), "stages.retrieval.switch"),
            prerank_models=tuple(QueueCostTable.from_dict(t, f"stages.prerank.models[{i}]") for i, t in enumerate(models)),
            rank=QueueCostTable.from_dict(rnk.get("queue"), "stages.rank.queue"),
            degraded_cost_ms=tuple(floors), provenance=prov)

    def save(self, path: str | Path) -> None:
        """Write the table as JSON to ``path`` (creating its folder), atomically (:func:`policies.files.write_atomic`)."""
        write_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")



def load_cost_table(path: str | Path) -> CostTable:
    """Read and validate a cost table JSON file (ValueError naming the file and the bad field)."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: not UTF-8 or not JSON
        raise ValueError(f"cost table {str(path)!r}: cannot read ({e})") from None
    try:
        return CostTable.from_dict(d)
    except ValueError as e:
        raise ValueError(f"{str(path)!r}: {e}") from None


@lru_cache(maxsize=1)
def default_cost_table() -> CostTable:
    """The shipped table (``policies/data/cost_table.json``), measured by the TestBench."""
    return load_cost_table(DEFAULT_PATH)


# -- validation helpers ----------------------------------------------------------------------
def _obj(d, where: str) -> dict:
    if not isinstance(d, dict):
        raise ValueError(f"cost table: {where} must be an object, got {d!r}")
    return d


def _floats(v, where: str) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise ValueError(f"cost table: {where} must be a list of numbers, got {v!r}")
    return tuple(float(x) for x in v)


def _check_table(q, c, s, where: str) -> None:
    if len(q) == 0:
        raise ValueError(f"cost table: {where}.queue is empty")
    if len(c) != len(q):
        raise ValueError(f"cost table: {where}.cost_ms has {len(c)} values for {len(q)} queue lengths")
    if s is not None and len(s) != len(q):
        raise ValueError(f"cost table: {where}.spread_ms has {len(s)} values for {len(q)} queue lengths")
    for key, vals in (("queue", q), ("cost_ms", c), ("spread_ms", s or ())):
        bad = [v for v in vals if not np.isfinite(v) or v < 0]
        if bad:
            raise ValueError(f"cost table: {where}.{key} must be finite and >= 0, got {bad[0]!r}")
    if any(b <= a for a, b in zip(q, q[1:])):
        raise ValueError(f"cost table: {where}.queue must be strictly increasing, got {list(q)}")
    if any(b < a for a, b in zip(c, c[1:])):
        raise ValueError(f"cost table: {where}.cost_ms must be non-decreasing in queue length (isotonic), got {list(c)}")


def _check_provenance(p) -> dict:
    p = _obj(p, "provenance")
    for key in REQUIRED_PROVENANCE:
        if key not in p:
            raise ValueError(f"cost table: provenance.{key} is missing (required: {', '.join(REQUIRED_PROVENANCE)})")
    if not isinstance(p["measurements"], list) or not p["measurements"]:
        raise ValueError(f"cost table: provenance.measurements must be a non-empty list, got {p['measurements']!r}")
    for i, m in enumerate(p["measurements"]):
        m = _obj(m, f"provenance.measurements[{i}]")
        for key in REQUIRED_MEASUREMENT:
            if key not in m:
                raise ValueError(f"cost table: provenance.measurements[{i}].{key} is missing")
        for key in ("duration_s", "warmup_s"):
            v = m[key]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
                raise ValueError(f"cost table: provenance.measurements[{i}].{key} must be a number >= 0, got {v!r}")
        if not isinstance(m["repeats"], int) or isinstance(m["repeats"], bool) or m["repeats"] < 1:
            raise ValueError(f"cost table: provenance.measurements[{i}].repeats must be an integer >= 1, got {m['repeats']!r}")
    return p
