"""Token construction shared by training (torch) and serving (numpy).

Token t of a journey = (one-hot of the previous channel, with an extra "start" slot at t = 0;
the previous penalised reward ``r_{t-1} - s * cost_{t-1}``; the standardised current state).
Decision Transformer tokens additionally start with the scaled return-to-go.
"""
from __future__ import annotations

import numpy as np

from .journeys import Journeys


def state_stats(j: Journeys) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the state features over valid steps (std floored at 1e-6)."""
    valid = j.mask.astype(bool)
    s = j.states[valid]
    return s.mean(axis=0).astype(np.float32), np.maximum(s.std(axis=0), 1e-6).astype(np.float32)


def shifted(x: np.ndarray, fill) -> np.ndarray:
    """``x`` shifted one step later along time, ``fill`` at t = 0."""
    out = np.empty_like(x)
    out[:, 0] = fill
    out[:, 1:] = x[:, :-1]
    return out


def build_tokens(j: Journeys, mean: np.ndarray, std: np.ndarray, penalty: float = 0.0,
                 rtg: np.ndarray | None = None) -> np.ndarray:
    """Tokens ``[N, T, F]`` with ``F = (rtg?) + (A + 1) + 1 + D``."""
    a_n = j.n_channels
    prev_a = shifted(j.actions, a_n)  # a_n = start slot
    prev_a = np.where(prev_a < 0, a_n, prev_a)
    onehot = np.eye(a_n + 1, dtype=np.float32)[prev_a]
    prev_r = shifted((j.rewards - penalty * j.costs) * j.mask, 0.0)[..., None]
    states = ((j.states - mean) / std) * j.mask[..., None]
    parts = [onehot, prev_r.astype(np.float32), states.astype(np.float32)]
    if rtg is not None:
        parts.insert(0, rtg[..., None].astype(np.float32))
    return np.concatenate(parts, axis=2)
