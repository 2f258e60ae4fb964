"""The journey data format: one row per exposure, grouped into per-user journeys.

A journey table (CSV or DataFrame) has the columns

``user_id``   any hashable id; rows of one user form that user's journey,
``step``      integer order of the exposure inside the journey (optional: row order is used),
``channel``   integer action in ``0 .. n_channels-1``,
``reward``    numeric gain of the exposure (e.g. a click),
``cost``      numeric cost of the exposure (optional: 1.0),

and every other numeric column is a state feature observed *before* the channel is chosen.
Outcomes of the exposure itself (play time, long view, ...) must not be state columns, nor
anything that encodes the chosen channel (the Criteo sample's ``cat8``, see
:mod:`policies.offline.criteo`). This is the format of ``mpc-balancer mtorl ... --data PATH``:
a CSV (plain or ``.gz``) with a header line, for example::

    user_id,step,channel,reward,cost,age,hour
    u1,0,2,0,1.5,0.31,0.25
    u1,1,0,1,0.5,0.31,0.40
    u2,0,1,0,1.0,0.77,0.10

Rows of different users may be interleaved; inside a user they are ordered by ``step`` (or by
row order without it). Missing columns, NaN, non-numeric values, non-integer or out-of-range
channels raise :class:`~policies.offline.errors.JourneyFormatError` (a ``ValueError``) naming
the column and the first bad row (0-based, not counting the header).

:class:`Journeys` holds the padded arrays used by every model: ``states [N, T, D]``,
``actions [N, T]`` (``-1`` on padding), ``rewards [N, T]``, ``costs [N, T]``, ``mask [N, T]``.
Journeys are left-aligned and padded at the end, so causal models never see padding before a
valid step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import JourneyFormatError

REQUIRED_COLUMNS = ("user_id", "channel", "reward")
OPTIONAL_COLUMNS = ("step", "cost")


@dataclass
class Journeys:
    """Padded per-user journeys (see the module docstring for the shapes)."""

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray
    mask: np.ndarray
    n_channels: int
    state_columns: list[str] = field(default_factory=list)
    user_ids: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return int(self.states.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.states.shape[1])

    @property
    def state_dim(self) -> int:
        return int(self.states.shape[2])

    def subset(self, idx: np.ndarray) -> Journeys:
        """Journeys of the users at positions ``idx``."""
        idx = np.asarray(idx)
        return Journeys(
            self.states[idx], self.actions[idx], self.rewards[idx], self.costs[idx],
            self.mask[idx], self.n_channels, list(self.state_columns),
            None if self.user_ids is None else self.user_ids[idx],
        )

    def split(self, fractions=(0.7, 0.1, 0.2), seed: int = 0) -> tuple[Journeys, ...]:
        """Split by user (never inside a journey) into parts of the given fractions."""
        rng = np.random.default_rng(seed)
        perm = rng.permutation(self.n_users)
        bounds = np.round(np.cumsum(fractions) / np.sum(fractions) * self.n_users).astype(int)
        parts, start = [], 0
        for b in bounds:
            parts.append(self.subset(np.sort(perm[start:b])))
            start = b
        return tuple(parts)

    def channel_costs(self) -> np.ndarray:
        """Mean logged cost per channel (1.0 for a channel never logged)."""
        out = np.ones(self.n_channels)
        valid = self.mask.astype(bool)
        for a in range(self.n_channels):
            sel = valid & (self.actions == a)
            if sel.any():
                out[a] = float(self.costs[sel].mean())
        return out


def _check_numeric(df: pd.DataFrame, col: str) -> np.ndarray:
    values = pd.to_numeric(df[col], errors="coerce")
    bad = values.isna() & df[col].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise JourneyFormatError(
            f"column {col!r}, row {row}: non-numeric value {df[col].iloc[row]!r}", col, row)
    arr = values.to_numpy(dtype=float)
    nan = ~np.isfinite(arr)
    if nan.any():
        row = int(np.flatnonzero(nan)[0])
        raise JourneyFormatError(f"column {col!r}, row {row}: missing or non-finite value", col, row)
    return arr


def validate_frame(df: pd.DataFrame, n_channels: int | None = None) -> None:
    """Raise :class:`JourneyFormatError` if ``df`` is not a valid journey table."""
    if not isinstance(df, pd.DataFrame):
        raise JourneyFormatError(f"expected a pandas DataFrame, got {type(df).__name__}")
    for col in REQUIRED_COLUMNS:
        if col not in df.columns:
            raise JourneyFormatError(
                f"missing column {col!r} (required: {', '.join(REQUIRED_COLUMNS)})", col)
    if len(df) == 0:
        raise JourneyFormatError("the journey table has no rows")
    if df["user_id"].isna().any():
        row = int(np.flatnonzero(df["user_id"].isna().to_numpy())[0])
        raise JourneyFormatError(f"column 'user_id', row {row}: missing value", "user_id", row)
    channel = _check_numeric(df, "channel")
    frac = channel != np.round(channel)
    if frac.any():
        row = int(np.flatnonzero(frac)[0])
        raise JourneyFormatError(
            f"column 'channel', row {row}: channel must be an integer, got {channel[row]}", "channel", row)
    hi = n_channels if n_channels is not None else np.inf
    out = (channel < 0) | (channel >= hi)
    if out.any():
        row = int(np.flatnonzero(out)[0])
        raise JourneyFormatError(
            f"column 'channel', row {row}: channel {int(channel[row])} outside 0..{n_channels - 1}",
            "channel", row)
    for col in df.columns:
        if col in ("user_id", "channel"):
            continue
        values = _check_numeric(df, col)
        if col == "cost" and (values < 0).any():
            # a budget is spent by costs: a negative one would refund it, and the allocators rank by value per cost
            row = int(np.flatnonzero(values < 0)[0])
            raise JourneyFormatError(f"column 'cost', row {row}: cost must be >= 0, got {values[row]:g}", "cost", row)


def from_frame(df: pd.DataFrame, n_channels: int | None = None,
               max_len: int | None = None) -> Journeys:
    """Validate a journey table and pad it into :class:`Journeys`.

    ``n_channels`` defaults to ``max(channel) + 1``; ``max_len`` truncates long journeys (keeps
    the first ``max_len`` exposures).
    """
    validate_frame(df, n_channels)
    df = df.reset_index(drop=True)
    state_cols = [c for c in df.columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if not state_cols:
        raise JourneyFormatError("no state columns: every column besides "
                                 f"{', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)} is a state feature")
    channel = df["channel"].to_numpy(dtype=float).astype(int)
    if n_channels is None:
        n_channels = int(channel.max()) + 1
    order_key = df["step"].to_numpy(dtype=float) if "step" in df.columns else np.arange(len(df), dtype=float)
    codes, uniques = pd.factorize(df["user_id"], sort=False)
    order = np.lexsort((np.arange(len(df)), order_key, codes))
    codes_sorted = codes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(codes_sorted)) + 1]
    lengths = np.diff(np.r_[starts, len(order)])
    horizon = int(lengths.max()) if max_len is None else int(min(lengths.max(), max_len))
    n = len(starts)
    pos = np.arange(len(order)) - np.repeat(starts, lengths)
    keep = pos < horizon
    rows, users, pos = order[keep], codes_sorted[keep], pos[keep]
    states = np.zeros((n, horizon, len(state_cols)), dtype=np.float32)
    states[users, pos] = df[state_cols].to_numpy(dtype=np.float32)[rows]
    actions = np.full((n, horizon), -1, dtype=np.int64)
    actions[users, pos] = channel[rows]
    rewards = np.zeros((n, horizon), dtype=np.float32)
    rewards[users, pos] = df["reward"].to_numpy(dtype=np.float32)[rows]
    costs = np.zeros((n, horizon), dtype=np.float32)
    cost_col = df["cost"].to_numpy(dtype=np.float32) if "cost" in df.columns else np.ones(len(df), np.float32)
    costs[users, pos] = cost_col[rows]
    mask = np.zeros((n, horizon), dtype=np.float32)
    mask[users, pos] = 1.0
    user_ids = np.asarray(uniques)[codes_sorted[starts]]
    return Journeys(states, actions, rewards, costs, mask, n_channels, state_cols, user_ids)


def read_journeys(path, n_channels: int | None = None, max_len: int | None = None) -> Journeys:
    """Read a journey CSV (optionally gzip-compressed) in the documented format."""
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as e:
        raise JourneyFormatError(f"cannot read journey file {path}: {e}") from e
    return from_frame(df, n_channels=n_channels, max_len=max_len)
