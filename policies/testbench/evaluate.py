"""Compare a cost table's predictions with (fresh) measurements of the same workloads.

With ``calibrate``, each stage's predictions are first scaled by one factor per measurement
session (the geometric mean of measured / predicted over that stage's buckets): on a shared machine
the speed of a whole session drifts (other tenants, frequency), and the cascade only uses cost
ratios within a cluster, so what must hold is the table's shape. The factor is reported.
"""
from __future__ import annotations

import numpy as np

from policies.cost_table import CostTable


def table_for(table: CostTable, stage: str, variant: int):
    """The queue->cost table a (stage, variant) measurement corresponds to."""
    if stage == "retrieval":
        if variant not in (0, 1):
            raise ValueError(f"retrieval variant must be 0 (channel) or 1 (switch), got {variant}")
        return table.retrieval_channel if variant == 0 else table.retrieval_switch
    if stage == "prerank":
        if not 0 <= variant < len(table.prerank_models):
            raise ValueError(f"prerank variant {variant} has no model table (have 0..{len(table.prerank_models) - 1})")
        return table.prerank_models[variant]
    if stage == "rank":
        return table.rank
    raise ValueError(f"unknown stage {stage!r}")


def compare(table: CostTable, docs: list[dict], metric_key: str = "cpu_ms", calibrate: bool = False) -> list[dict]:
    """Per measured bucket: predicted cost (times the session factor when ``calibrate``), measured
    cost, the relative error and the factor used."""
    rows = []
    for d in docs:
        pred = np.array([float(table_for(table, d["stage"], int(b["variant"]))(b["queue"])) for b in d["buckets"]])
        meas = np.array([float(b[metric_key]) for b in d["buckets"]])
        if np.any(meas <= 0) or np.any(pred <= 0):
            raise ValueError(f"measurements {d.get('source', d['workload'])!r}: costs must be > 0 to compare")
        factor = session_factor(pred, meas) if calibrate else 1.0
        for b, p, m in zip(d["buckets"], pred, meas):
            rows.append({"stage": d["stage"], "variant": int(b["variant"]), "queue": int(b["queue"]),
                         "value_bucket": int(b["value_bucket"]), "predicted_ms": float(p * factor), "measured_ms": float(m),
                         "rel_error": float((p * factor - m) / m), "factor": factor})
    return rows


def session_factor(predicted, measured) -> float:
    """One speed factor for a session: geometric mean of measured / predicted."""
    return float(np.exp(np.mean(np.log(np.asarray(measured) / np.asarray(predicted)))))


def max_abs_error(rows: list[dict]) -> float:
    return float(np.max(np.abs([r["rel_error"] for r in rows]))) if rows else 0.0
