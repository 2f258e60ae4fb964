"""Fitting: measured buckets -> isotonic queue->cost tables per stage and variant -> a CostTable."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from policies.cost_table import CLUSTERS, CostTable, QueueCostTable

from .isotonic import isotonic_by_x
from .provenance import now_iso

METRICS = {"cpu": "cpu_ms", "formula": "formula_ms"}


def fit_queue_table(rows: list[dict], metric: str = "cpu") -> QueueCostTable:
    """Isotonic fit of cost against queue length over ``rows`` (buckets of one stage and variant;
    value buckets and repeated runs at one queue length are pooled)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if not rows:
        raise ValueError("no buckets to fit")
    x = np.array([r["queue"] for r in rows], dtype=float)
    y = np.array([r[METRICS[metric]] for r in rows], dtype=float)
    q, fitted, _ = isotonic_by_x(x, y)
    spread = [float(np.sqrt(np.mean([r["cpu_ms_std"] ** 2 for r in rows if r["queue"] == qq]))) for qq in q]
    return QueueCostTable(tuple(float(v) for v in q), tuple(float(v) for v in fitted), tuple(spread))


def fit_variants(docs: list[dict], metric: str = "cpu") -> dict[int, QueueCostTable]:
    """One table per variant from all buckets of ``docs`` (measurements of one stage)."""
    by_variant: dict[int, list[dict]] = {}
    for d in docs:
        for b in d["buckets"]:
            by_variant.setdefault(int(b["variant"]), []).append(b)
    return {v: fit_queue_table(rows, metric) for v, rows in sorted(by_variant.items())}


def fit_cost_table(docs: list[dict], metric: str = "cpu", tool: str = "mpc-balancer testbench") -> CostTable:
    """A cost table from measurement documents covering all three stages (see ``policies.cost_table``).

    retrieval needs variants 0 (a recall channel) and 1 (the extended channel behind the switch);
    pre-ranking one variant per model, numbered 0..M-1; ranking variant 0.
    """
    stages = {c: [d for d in docs if d["stage"] == c] for c in CLUSTERS}
    missing = [c for c, ds in stages.items() if not ds]
    if missing:
        raise ValueError(f"no measurements for stage(s) {missing}; run `mpc-balancer testbench run` for each stage "
                         f"(builtin:retrieval, builtin:prerank, builtin:ranking or your own) and pass all files")
    tables = {c: fit_variants(ds, metric) for c, ds in stages.items()}
    ret, pre, rnk = tables["retrieval"], tables["prerank"], tables["rank"]
    for need, stage, got in (((0, 1), "retrieval", ret), ((0,), "rank", rnk)):
        lacking = [v for v in need if v not in got]
        if lacking:
            raise ValueError(f"{stage} measurements have no variant(s) {lacking} (have {sorted(got)}); "
                             f"retrieval needs 0 = recall channel and 1 = switch channel, rank needs 0")
    if sorted(pre) != list(range(len(pre))):
        raise ValueError(f"prerank variants must be the models 0..M-1, got {sorted(pre)}")
    degraded = tuple(float(min(t.cost_ms[0] for t in tables[c].values())) for c in CLUSTERS)
    return CostTable(retrieval_channel=ret[0], retrieval_switch=ret[1], prerank_models=tuple(pre[m] for m in sorted(pre)),
                     rank=rnk[0], degraded_cost_ms=degraded, provenance=provenance(docs, metric, tool))


def provenance(docs: list[dict], metric: str, tool: str) -> dict:
    machines = [d["provenance"]["machine"] for d in docs]
    hosts = sorted({m.get("hostname", "?") for m in machines})
    return {
        "tool": tool, "created": now_iso(), "metric": METRICS[metric],
        "machine": machines[0], "hosts": hosts,
        "measurements": [{
            "workload": d["workload"], "stage": d["stage"], "date": d["provenance"]["started"],
            "finished": d["provenance"]["finished"], "duration_s": d["config"]["duration_s"],
            "warmup_s": d["config"]["warmup_s"], "repeats": d["config"]["repeats"], "qps": d["config"]["qps"],
            "queues": d["config"]["queues"], "value_buckets": d["config"]["value_buckets"], "variants": d["variants"],
            "variant_names": d["variant_names"], "wall_s": d["provenance"]["wall_s"], "cpu_s": d["provenance"]["cpu_s"],
            "source": Path(d.get("source", "?")).name, "sha256": d.get("sha256")} for d in docs],
    }
