"""Measurement files: what ``testbench run`` writes and ``testbench fit`` reads (JSON)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .workloads import STAGES

FORMAT = "mpc-balancer.testbench-measurements"
VERSION = 1
BUCKET_KEYS = ("value_bucket", "variant", "queue", "cpu_ms", "cpu_ms_std", "cv", "formula_ms", "wall_ms")


def measurement_doc(workload_name: str, workload, config, results: list[dict], machine: dict, started: str,
                    finished: str, wall_s: float, cpu_s: float) -> dict:
    return {"format": FORMAT, "version": VERSION, "workload": workload_name, "stage": workload.stage,
            "variants": list(workload.variants), "variant_names": list(workload.variant_names),
            "config": config.to_dict(),
            "provenance": {"machine": machine, "started": started, "finished": finished,
                           "wall_s": round(wall_s, 3), "cpu_s": round(cpu_s, 3)},
            "buckets": results}


def save_measurements(doc: dict, path: str | Path) -> None:
    """Write a measurement document as JSON to ``path``, atomically (a load test's hours are not
    lost to a truncated file)."""
    from ..files import write_atomic

    write_atomic(path, json.dumps(doc, indent=1) + "\n")


def load_measurements(path: str | Path) -> dict:
    """Read and validate a measurement file; adds ``source`` (path) and ``sha256``."""
    try:
        raw = Path(path).read_bytes()
        doc = json.loads(raw)
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, and UnicodeDecodeError (not UTF-8/16/32)
        raise ValueError(f"measurements {str(path)!r}: cannot read ({e})") from None
    where = f"measurements {str(path)!r}"
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{where}: format must be {FORMAT!r}, got {doc.get('format') if isinstance(doc, dict) else doc!r}")
    if doc.get("version") != VERSION:
        raise ValueError(f"{where}: version {doc.get('version')!r} is not supported (this build reads {VERSION})")
    if doc.get("stage") not in STAGES:
        raise ValueError(f"{where}: stage must be one of {', '.join(STAGES)}, got {doc.get('stage')!r}")
    buckets = doc.get("buckets")
    if not isinstance(buckets, list) or not buckets:
        raise ValueError(f"{where}: buckets must be a non-empty list")
    for i, b in enumerate(buckets):
        missing = [k for k in BUCKET_KEYS if not isinstance(b, dict) or k not in b]
        if missing:
            raise ValueError(f"{where}: buckets[{i}] lacks {missing}")
        if not (isinstance(b["cpu_ms"], (int, float)) and b["cpu_ms"] >= 0):
            raise ValueError(f"{where}: buckets[{i}].cpu_ms must be a number >= 0, got {b['cpu_ms']!r}")
    doc["source"] = str(path)
    doc["sha256"] = hashlib.sha256(raw).hexdigest()
    return doc
