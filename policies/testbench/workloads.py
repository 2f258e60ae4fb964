"""The workload contract and how a ``--workload`` string becomes a workload.

A workload serves one request of one stage: ``workload(queue, variant, value_bucket)`` does the
stage's work for a request whose action asks for ``queue`` items (``variant`` picks a model or
channel kind: the pre-ranking model switch, the extended retrieval channel) and returns a 1-D
array with exactly ``queue`` entries (scores or item ids). A user's plain function with that
signature is wrapped by :class:`CallableWorkload`; ``module:function`` names it on the command line.
"""
from __future__ import annotations

import importlib
import inspect

import numpy as np

STAGES = ("retrieval", "prerank", "rank")


class Workload:
    """Base class: ``stage``, ``variants`` (ints) and ``__call__(queue, variant, value_bucket)``."""

    stage: str = "rank"
    variants: tuple[int, ...] = (0,)
    variant_names: tuple[str, ...] = ("default",)

    def setup(self) -> None:
        """Build tables and weights (called once before any timing)."""

    def __call__(self, queue: int, variant: int = 0, value_bucket: int = 0):  # pragma: no cover - interface
        raise NotImplementedError


class CallableWorkload(Workload):
    """A user callable ``fn(queue, variant, value_bucket)`` (``variant`` and ``value_bucket`` optional)."""

    def __init__(self, fn, stage: str = "rank", variants: tuple[int, ...] = (0,), name: str | None = None):
        if not callable(fn):
            raise ValueError(f"workload {name or fn!r} is not callable (got {type(fn).__name__})")
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
        self.fn, self.stage, self.variants, self.name = fn, stage, tuple(int(v) for v in variants), name or getattr(fn, "__name__",
                                                                                                                    repr(fn))
        self.variant_names = tuple(f"variant_{v}" for v in self.variants)

    def setup(self) -> None:
        getattr(self.fn, "setup", lambda: None)()

    def __call__(self, queue: int, variant: int = 0, value_bucket: int = 0):
        n = _n_positional(self.fn)
        args = (queue, variant, value_bucket)[: max(1, min(n, 3))] if n is not None else (queue, variant, value_bucket)
        return self.fn(*args)


def _n_positional(fn) -> int | None:
    """How many positional arguments ``fn`` takes (None: any number)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _path_hint(module: str) -> str:
    """A hint when ``module`` is a file of the current directory that is not importable.

    The ``mpc-balancer`` console script, unlike ``python -m``, does not put the current directory
    on ``sys.path``: a user's ``mywl.py`` beside them is "No module named 'mywl'"."""
    import os
    import sys
    from pathlib import Path

    rel = Path(*module.split("."))
    here = any(p in ("", ".") or (os.path.isdir(p) and os.path.samefile(p, ".")) for p in sys.path)
    found = rel.with_suffix(".py") if rel.with_suffix(".py").is_file() else rel if (rel / "__init__.py").is_file() else None
    if here or found is None:
        return ""
    return f"; {found} is in the current directory, which is not on the import path: run with PYTHONPATH=. (or install it)"


def resolve_workload(text: str, stage: str | None = None, variants: tuple[int, ...] | None = None) -> Workload:
    """``builtin:retrieval|prerank|ranking`` or ``module:attribute`` (a callable or a Workload)."""
    from .builtin import BUILTINS

    kind, sep, name = text.partition(":")
    if not sep or not name:
        raise ValueError(f"--workload must be builtin:NAME or module:function, got {text!r}")
    if kind == "builtin":
        if name not in BUILTINS:
            raise ValueError(f"unknown builtin workload {name!r}; available: {', '.join(sorted(BUILTINS))}")
        wl = BUILTINS[name]()
        if stage not in (None, wl.stage):
            raise ValueError(f"builtin:{name} is a {wl.stage} workload, not {stage}")
        if variants is not None:
            bad = sorted(set(variants) - set(wl.variants))
            if bad:
                raise ValueError(f"builtin:{name} has variants {list(wl.variants)}, not {bad}")
            wl.variant_names = tuple(wl.variant_names[wl.variants.index(v)] for v in variants)
            wl.variants = tuple(variants)
        return wl
    try:
        module = importlib.import_module(kind)
    except ImportError as e:
        raise ValueError(f"workload {text!r}: cannot import module {kind!r} ({e}){_path_hint(kind)}") from None
    try:
        obj = getattr(module, name)
    except AttributeError:
        raise ValueError(f"workload {text!r}: module {kind!r} has no attribute {name!r}") from None
    if isinstance(obj, Workload):
        return obj
    return CallableWorkload(obj, stage=stage or "rank", variants=variants or (0,), name=text)


def check_output(out, queue: int) -> np.ndarray:
    """The workload's result as an array of exactly ``queue`` finite-or-integer entries, else ValueError."""
    try:
        arr = np.asarray(out)
    except Exception as e:  # noqa: BLE001 - any conversion failure is the workload's fault
        raise ValueError(f"returned {type(out).__name__} that is not array-like ({e})") from None
    if arr.shape != (queue,):
        raise ValueError(f"returned shape {arr.shape}, expected ({queue},) (one entry per queued item)")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError("returned non-finite values")
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"returned dtype {arr.dtype}, expected numbers")
    return arr
