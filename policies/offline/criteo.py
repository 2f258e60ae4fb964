"""Loader for the Criteo attribution sample shipped with the MTORL paper.

The sample (``data/criteo_sequence.csv.gz``, 110,547 impressions of 7,478 users, CC BY-NC-SA 4.0,
see ``data/CRITEO_LICENSE.txt``) has one row per ad impression, rows in journey order inside a
``uid``. The conversion to the journey format (:mod:`policies.offline.journeys`) is:

==========  =====================================================================================
journey     Criteo sample
==========  =====================================================================================
user_id     ``uid``
step        row order inside the ``uid`` (the file's unnamed first column, the original row id,
            increases with it)
channel     index of the true column of the campaign-type one-hot ``Type_*`` (11 columns, in
            file order), i.e. ``argmax`` of the one-hot; each row must have exactly one true
reward      ``click`` (0/1)
cost        ``cost`` (normalised to 0..1 in the sample)
state       ``cat1`` .. ``cat7`` and ``cat9`` (normalised context features), as ``s_cat1`` ...
==========  =====================================================================================

Excluded from the state, with the reason:

- ``cat8`` takes 11 values that map one-to-one onto the ``Type_*`` column: it *is* the action,
  and a model given it would "predict" the channel by reading it (AUC 1.0).
- ``campaign`` (the advertiser's campaign id) and ``cpo`` (cost per order) describe the ad that
  was shown and its economics: they are part of the decision, not of the user's state before it.
- ``conversion``, ``attribution``, ``click_nb`` and ``click`` are outcomes of the impression
  (``click`` is the reward; the previous step's reward enters the model through the token).
"""
from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from .errors import JourneyFormatError
from .journeys import Journeys, from_frame

STATE_COLUMNS = ("cat1", "cat2", "cat3", "cat4", "cat5", "cat6", "cat7", "cat9")
ACTION_PREFIX = "Type_"
EXCLUDED_COLUMNS = {
    "cat8": "identical to the action (one value per Type_* column)",
    "campaign": "part of the decision (the ad shown)",
    "cpo": "part of the decision (the ad's cost per order)",
    "conversion": "outcome of the impression",
    "attribution": "outcome of the impression",
    "click_nb": "outcome of the impression",
}


def default_path():
    """Path of the sample packaged with :mod:`policies.offline`."""
    return resources.files("policies.offline") / "data" / "criteo_sequence.csv.gz"


def action_columns(raw: pd.DataFrame) -> list[str]:
    """The ``Type_*`` one-hot columns of ``raw``, in file order (channel ``i`` is the i-th)."""
    return [c for c in raw.columns if str(c).startswith(ACTION_PREFIX)]


def criteo_to_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Map the Criteo sample's columns to the journey format (see the module docstring).

    Parameters
    ----------
    raw : pandas.DataFrame
        The sample as read from its CSV.

    Returns
    -------
    pandas.DataFrame
        Columns ``user_id, step, channel, reward, cost, s_cat1 .. s_cat9`` (no ``s_cat8``).

    Raises
    ------
    JourneyFormatError
        A required column is missing, the ``Type_*`` one-hot is absent, not 0/1 or does not sum
        to 1 on a row (the message names the column and the first bad row).
    """
    if not isinstance(raw, pd.DataFrame):
        raise JourneyFormatError(f"Criteo sample: expected a pandas DataFrame, got {type(raw).__name__}")
    for col in ("uid", "click", "cost", *STATE_COLUMNS):
        if col not in raw.columns:
            raise JourneyFormatError(f"Criteo sample: missing column {col!r}", col)
    types = action_columns(raw)
    if len(types) < 2:
        raise JourneyFormatError(
            f"Criteo sample: expected at least 2 one-hot action columns {ACTION_PREFIX}*, "
            f"found {types}", ACTION_PREFIX + "*")
    onehot = np.empty((len(raw), len(types)))
    for i, col in enumerate(types):
        col_values = raw[col]
        if col_values.dtype != bool:
            col_values = pd.to_numeric(col_values, errors="coerce")
        arr = col_values.to_numpy(dtype=float)
        bad = ~np.isin(arr, (0.0, 1.0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise JourneyFormatError(
                f"column {col!r}, row {row}: one-hot value must be 0/1 or True/False, "
                f"got {raw[col].iloc[row]!r}", col, row)
        onehot[:, i] = arr
    sums = onehot.sum(axis=1)
    bad = sums != 1
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise JourneyFormatError(
            f"columns {ACTION_PREFIX}*, row {row}: campaign-type one-hot sums to {sums[row]:g}, "
            "not 1", types[0], row)
    out = pd.DataFrame({
        "user_id": raw["uid"].to_numpy(),
        "step": np.arange(len(raw)),
        "channel": onehot.argmax(axis=1),
        "reward": raw["click"].to_numpy(),
        "cost": raw["cost"].to_numpy(),
    })
    for c in STATE_COLUMNS:
        out[f"s_{c}"] = raw[c].to_numpy()
    return out


def read_criteo_raw(path=None) -> pd.DataFrame:
    """The raw sample (the packaged copy unless ``path`` is given)."""
    if path is None:
        with default_path().open("rb") as f:
            return pd.read_csv(f, compression="gzip")
    return pd.read_csv(path)


def load_criteo(path=None, max_len: int | None = 50) -> Journeys:
    """Load the Criteo sample as :class:`~policies.offline.journeys.Journeys`.

    Parameters
    ----------
    path : path-like, optional
        A CSV with the sample's columns; default: the packaged sample.
    max_len : int or None
        Keep the first ``max_len`` impressions of each journey (the sample's longest has 50).

    Returns
    -------
    Journeys
        11 channels (the ``Type_*`` columns), reward = click, cost = the logged cost.
    """
    raw = read_criteo_raw(path)
    return from_frame(criteo_to_frame(raw), n_channels=len(action_columns(raw)), max_len=max_len)
