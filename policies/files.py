"""Files written whole or not at all: what a run, a fit or an export leaves is never truncated.

Each writer writes a temporary file beside the target and renames it into place (``os.replace``,
atomic on one file system): an interrupted or failed write leaves the previous file, or none.
``testbench fit --out T --force`` replaces a cost table that runs read (``--cost-table T``), and a
plain write interrupted there left every later run unable to read it.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def replace_file(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to write a temporary file beside ``path`` (creating its folder), then
    rename it onto ``path``; the temporary file never outlives the call. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`replace_file`. Returns the path."""
    return replace_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
