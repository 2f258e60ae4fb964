"""Robust statistics for load tests and the paper's cost formula."""
from __future__ import annotations

import numpy as np

MAD_SCALE = 1.4826  # MAD -> standard deviation for normal data


def cost_per_request(utilisation: float, machines: int, cores: int, qps: float) -> float:
    """MaRCA's AutoBucket formula: ``p% x machines x cores / QPS`` (CPU-seconds per request when
    ``utilisation`` is the busy share of ``machines x cores`` cores and ``qps`` the request rate)."""
    if not qps > 0:
        raise ValueError(f"qps must be > 0, got {qps!r}")
    if machines < 1 or cores < 1:
        raise ValueError(f"machines and cores must be >= 1, got machines={machines!r}, cores={cores!r}")
    if not 0 <= utilisation:
        raise ValueError(f"utilisation must be >= 0, got {utilisation!r}")
    return utilisation * machines * cores / qps


def mad_keep(x, n_mads: float) -> np.ndarray:
    """Boolean mask of the values within ``n_mads`` scaled MADs of the median (all kept if MAD = 0)."""
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return np.zeros(0, dtype=bool)
    med = np.median(x)
    mad = MAD_SCALE * np.median(np.abs(x - med))
    if mad == 0:
        return np.ones(x.size, dtype=bool)
    return np.abs(x - med) <= n_mads * mad


def summarise(values) -> dict:
    """Mean, standard deviation (ddof=1 when possible) and coefficient of variation."""
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": mean, "std": std, "cv": std / mean if mean > 0 else 0.0}
