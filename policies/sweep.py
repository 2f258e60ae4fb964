"""One request batch, many lambdas: the lambda-free part of the per-request argmax computed once.

A Lagrangian policy decides ``a* = argmax_a s(x, a) - lambda . cost(a)``: the score ``s`` of every
request and action does not depend on lambda. A controller that sweeps lambda over one request
sample (the MPC's response curve, a bisection) can therefore compute the score matrix ``S`` once
and, per lambda, only subtract the penalty row and take the argmax. Both steps are the very
floating-point operations of a single decision (``S - pen`` element by element, then the first
maximum of each row), so the actions are identical to deciding each lambda on its own, bit for bit.
"""
from __future__ import annotations

import numpy as np


def check_lambdas(lams, n_clusters: int) -> np.ndarray:
    """Validate a stack of lambda vectors ``(K, G)`` (finite, >= 0)."""
    arr = np.asarray(lams, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != n_clusters:
        raise ValueError(f"lambdas must have shape (K, {n_clusters}) (one row per lambda vector), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        bad = int(np.flatnonzero(~(np.isfinite(arr) & (arr >= 0)).all(axis=1))[0])
        raise ValueError(f"lambda must be finite and >= 0, got row {bad}: {arr[bad].tolist()}")
    return arr


def check_rows(rows, n: int) -> np.ndarray:
    """``rows`` as a 1-D ``intp`` array of row indices into a batch of ``n`` (negative ones count from
    the end), or a ``ValueError`` naming it: a boolean mask, fractional indices and indices out of
    range are refused (numpy would take a mask, truncate, or raise an ``IndexError``)."""
    arr = np.asarray(rows)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"rows must be a 1-D array of integer row indices, got dtype {arr.dtype} and shape {arr.shape}")
    if arr.size and (arr.min() < -n or arr.max() >= n):
        raise ValueError(f"rows must index a batch of {n} rows, got indices from {int(arr.min())} to {int(arr.max())}")
    return arr.astype(np.intp)


def penalty(lam: np.ndarray, cost: np.ndarray, dtype) -> np.ndarray:
    """``lambda . cost(a)`` of every action ``(A,)`` in the scores' ``dtype``."""
    return (lam @ cost).astype(dtype)


def repeat_rows(x: np.ndarray, K: int) -> np.ndarray:
    """``x`` (n, d) stacked K times (Kn, d), in ``x``'s own memory order: a row-wise reduction
    (``einsum``) then sums each row in the same order as on ``x`` itself."""
    if K == 1:
        return x
    out = np.tile(x, (K, 1))
    return np.asfortranarray(out) if x.flags.f_contiguous and not x.flags.c_contiguous else out


def sweep_argmax(scores: np.ndarray, cost: np.ndarray, lams: np.ndarray) -> np.ndarray:
    """Column index ``(K, n)`` of ``argmax_a scores[n, a] - lams[k] . cost[:, a]`` for every lambda row.

    ``scores`` (n, A) is the lambda-free part (in the policy's dtype), ``cost`` (G, A) the actions'
    costs. One scratch matrix is reused across lambdas (it stays in cache)."""
    n = scores.shape[0]
    out = np.empty((len(lams), n), dtype=np.int64)
    buf = np.empty_like(scores)
    for k, lam in enumerate(lams):
        np.subtract(scores, penalty(lam, cost, scores.dtype), out=buf)
        np.argmax(buf, axis=1, out=out[k])
    return out
