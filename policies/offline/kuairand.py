"""Loader for the KuaiRand sample shipped with the MTORL paper.

One row per exposure (``user_id`` ordered by ``time_ms`` inside a user); the ``short``/``mid``/
``long`` one-hot is the channel (the action) and ``is_click`` the gain. The state is what is known
before the exposure: the time features and the static user features (activity one-hots and
``onehot_feat*``). ``long_view`` and ``play_time_ms`` are outcomes of the exposure and are not
state. KuaiRand has no costs; every exposure costs 1.

In this sample the channel is random, so no method can do better than chance on channel
agreement (``mpc-balancer mtorl diagnose --data kuairand``, :mod:`policies.offline.diagnose`):
channel shares 33.2/34.1/32.8%, P(same channel as the previous exposure) 0.332 against 0.333 for
random channels, a per-user chi-square of 1.97 against 2 expected under randomness, and a
gradient-boosting probe on the pre-exposure state, with or without the journey's channel
history, at AUC 0.50 on held-out users. The MTORL paper's AUC of 0.82 on KuaiRand does not come
from outcomes leaking into the state (its notebook shifts labels by one row, so the outcomes in
a state belong to the previous exposure); it comes from the evaluation split: random windows
drawn with replacement and split by window, not by user, put most test windows' users, and most
test exposures, in training, where a lookup memoriser scores far above chance
(:func:`policies.offline.diagnose.window_split_overlap`). Split by user, everything is at 0.50.
"""
from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from .errors import JourneyFormatError
from .journeys import Journeys, from_frame

CHANNEL_COLUMNS = ("short", "mid", "long")
OUTCOME_COLUMNS = ("is_click", "long_view", "play_time_ms")
TIME_COLUMNS = ("hourmin", "time_ms")


def default_path():
    """Path of the sample packaged with :mod:`policies.offline`."""
    return resources.files("policies.offline") / "data" / "kuairand_sequence.csv.gz"


def kuairand_to_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Map the KuaiRand sample's columns to the journey format."""
    for col in ("user_id", "is_click", *CHANNEL_COLUMNS, *TIME_COLUMNS):
        if col not in raw.columns:
            raise JourneyFormatError(f"KuaiRand sample: missing column {col!r}", col)
    onehot = raw[list(CHANNEL_COLUMNS)]
    for col in CHANNEL_COLUMNS:
        bad = onehot[col].isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise JourneyFormatError(f"column {col!r}, row {row}: missing value", col, row)
    sums = onehot.to_numpy(dtype=float).sum(axis=1)
    bad = sums != 1
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise JourneyFormatError(
            f"columns short/mid/long, row {row}: channel one-hot sums to {sums[row]}, not 1",
            "short", row)
    skip = {"user_id", *CHANNEL_COLUMNS, *OUTCOME_COLUMNS}
    state_cols = [c for c in raw.columns if c not in skip and not str(c).startswith("Unnamed")]
    out = pd.DataFrame({
        "user_id": raw["user_id"],
        "step": raw["time_ms"],
        "channel": onehot.to_numpy(dtype=float).argmax(axis=1),
        "reward": raw["is_click"],
    })
    for c in state_cols:
        out[f"s_{c}"] = raw[c]
    return out


def load_kuairand(path=None, max_len: int | None = 50) -> Journeys:
    """Load the KuaiRand sample (the packaged copy unless ``path`` is given)."""
    if path is None:
        with default_path().open("rb") as f:
            raw = pd.read_csv(f, compression="gzip")
    else:
        raw = pd.read_csv(path)
    return from_frame(kuairand_to_frame(raw), n_channels=len(CHANNEL_COLUMNS), max_len=max_len)

