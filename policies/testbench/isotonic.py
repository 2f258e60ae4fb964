"""Isotonic (monotone non-decreasing) regression by pool-adjacent-violators."""
from __future__ import annotations

import numpy as np


def isotonic_fit(y, w=None) -> np.ndarray:
    """Weighted least-squares non-decreasing fit to ``y`` (already ordered by x).

    Pool-adjacent-violators: scan left to right keeping blocks of pooled means; whenever a block's
    mean falls below the previous block's, merge them (repeatedly). O(n).
    """
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=float)
    if y.ndim != 1 or w.shape != y.shape:
        raise ValueError(f"y and w must be 1-D of the same length, got {y.shape} and {w.shape}")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(w)) and np.all(w > 0)):
        raise ValueError("isotonic_fit needs finite values and positive finite weights")
    means, weights, sizes = [], [], []
    for yi, wi in zip(y, w):
        means.append(yi), weights.append(wi), sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            m2, w2, s2 = means.pop(), weights.pop(), sizes.pop()
            wt = weights[-1] + w2
            means[-1] = (means[-1] * weights[-1] + m2 * w2) / wt
            weights[-1], sizes[-1] = wt, sizes[-1] + s2
    return np.repeat(means, sizes)


def isotonic_by_x(x, y, w=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit at the distinct ``x``: pool repeated x (weighted mean), sort, PAV. Returns
    ``(x_unique, fitted, pooled_weight)``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=float)
    if x.shape != y.shape or w.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"x, y, w must be non-empty 1-D arrays of one length, got {x.shape}, {y.shape}, {w.shape}")
    ux, inv = np.unique(x, return_inverse=True)
    wsum = np.bincount(inv, weights=w)
    ymean = np.bincount(inv, weights=w * y) / wsum
    return ux, isotonic_fit(ymean, wsum), wsum
