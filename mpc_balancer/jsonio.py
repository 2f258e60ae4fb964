"""JSON output: strict JSON (a NaN or infinity becomes ``null``, never the non-JSON ``NaN``) written
atomically (to a temporary file beside the target, then renamed), so an interrupted or failed
write never leaves a truncated file in place of the previous one."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np


def jsonable(obj):
    """``obj`` with numpy scalars and arrays as Python values and non-finite floats as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj) -> str:
    """Strict JSON text of ``obj`` (see :func:`jsonable`), indented."""
    return json.dumps(jsonable(obj), indent=2, allow_nan=False)


def write_json(path, obj) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically; returns the path."""
    return write_text(path, dumps(obj))


def write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: to a temporary file beside it, then renamed,
    so an interrupted write leaves the previous file (or none), never a truncated one. Returns
    the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
