"""Checkpoint state as JSON: arrays packed bit for bit, and a reader that validates every field.

A fitted model's state (its recent window, fitted parameters, filter state) goes into a
checkpoint as plain JSON. Arrays are packed as ``{"dtype", "shape", "data"}`` with ``data`` the
base64 of the zlib-compressed raw bytes (little-endian), so a restore reproduces every float
exactly and costs a decompression, not a replay. :class:`StateReader` reads such a dict back and
raises :class:`StateError` (a ``ValueError``) naming the field's full path and what is wrong
(missing, wrong type, wrong shape, non-finite, out of range) before the caller changes anything.
"""
from __future__ import annotations

import base64
import binascii
import math
import zlib

import numpy as np

DTYPES = {"f8": "<f8", "i8": "<i8", "b1": "|b1"}


class StateError(ValueError):
    """A checkpoint field that cannot be restored; the message names the field."""


def pack(a, dtype: str = "f8") -> dict:
    """JSON form of an array (bit for bit)."""
    a = np.ascontiguousarray(np.asarray(a, dtype=DTYPES[dtype]))
    return {"dtype": dtype, "shape": list(a.shape), "data": base64.b64encode(zlib.compress(a.tobytes(), 1)).decode("ascii")}


class StateReader:
    """Validated access to one level of a checkpoint dict; ``path`` prefixes every error."""

    def __init__(self, d, path: str = "checkpoint"):
        if not isinstance(d, dict):
            raise StateError(f"{path} must be a dict, got {type(d).__name__}")
        self.d, self.path = d, path

    def _get(self, key):
        if key not in self.d:
            raise StateError(f"{self.path}.{key} is missing")
        return self.d[key]

    def name(self, key) -> str:
        return f"{self.path}.{key}"

    def sub(self, key, optional: bool = False) -> StateReader | None:
        v = self._get(key)
        if v is None and optional:
            return None
        return StateReader(v, self.name(key))

    def has(self, key) -> bool:
        return key in self.d

    def raw(self, key):
        return self._get(key)

    def number(self, key, lo=None, hi=None, integer: bool = False, optional: bool = False):
        v = self._get(key)
        if v is None and optional:
            return None
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            raise StateError(f"{self.name(key)} must be {'an integer' if integer else 'a number'}, got {v!r}")
        if not np.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise StateError(f"{self.name(key)} must be finite and in [{lo}, {hi}], got {v!r}")
        return int(v) if integer else float(v)

    def string(self, key, choices=None) -> str:
        v = self._get(key)
        if not isinstance(v, str) or (choices is not None and v not in choices):
            want = f"one of {list(choices)}" if choices is not None else "a string"
            raise StateError(f"{self.name(key)} must be {want}, got {v!r}")
        return v

    def array(self, key, dtype: str = "f8", shape=None, finite: bool = True, lo=None, optional: bool = False):
        """An array packed by :func:`pack`. ``shape`` entries of None match any length;
        ``finite=False`` admits NaN (a missing value) but never an infinity."""
        v = self._get(key)
        if v is None and optional:
            return None
        name = self.name(key)
        if not (isinstance(v, dict) and set(v) == {"dtype", "shape", "data"}):
            raise StateError(f"{name} must be a packed array {{dtype, shape, data}}, got {type(v).__name__}")
        if v["dtype"] != dtype:
            raise StateError(f"{name} must have dtype {dtype!r}, got {v['dtype']!r}")
        shp = v["shape"]
        if not (isinstance(shp, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shp)):
            raise StateError(f"{name}.shape must be a list of sizes, got {shp!r}")
        if shape is not None and (len(shp) != len(shape) or any(w is not None and w != n for w, n in zip(shape, shp))):
            raise StateError(f"{name} must have shape {tuple(shape)}, got {tuple(shp)}")
        try:
            raw = zlib.decompress(base64.b64decode(v["data"], validate=True))
        except (TypeError, ValueError, binascii.Error, zlib.error) as e:
            raise StateError(f"{name}.data is not a packed array ({e})") from None
        a = np.frombuffer(raw, dtype=DTYPES[dtype])
        if a.size != math.prod(shp):
            raise StateError(f"{name} holds {a.size} values, its shape {tuple(shp)} needs {math.prod(shp)}")
        a = a.reshape(shp).copy()
        if dtype == "f8":
            bad = ~np.isfinite(a) if finite else np.isinf(a)
            if bad.any():
                raise StateError(f"{name} has a non-finite value {a.flat[int(np.flatnonzero(bad)[0])]!r}")
        if lo is not None and dtype != "b1":
            under = a < lo
            if under.any():
                raise StateError(f"{name} must be >= {lo}, got {a.flat[int(np.flatnonzero(under)[0])]!r}")
        return a
