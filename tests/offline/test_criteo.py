"""The Criteo sample: conversion to journeys (channel, reward, cost, state) and its errors."""
import numpy as np
import pandas as pd
import pytest

from policies.offline import JourneyFormatError
from policies.offline.criteo import STATE_COLUMNS, criteo_to_frame, load_criteo, read_criteo_raw
from policies.offline.evaluation import load_data
from policies.offline.journeys import from_frame


def _raw():
    rng = np.random.default_rng(0)
    n = 6
    df = pd.DataFrame({"Unnamed: 0": np.arange(n), "uid": [7, 3, 7, 3, 7, 3],
                       "campaign": rng.random(n), "conversion": 0, "attribution": 0,
                       "click": [1, 0, 0, 1, 1, 0], "click_nb": -1,
                       "cost": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "cpo": rng.random(n)})
    for c in [f"cat{i}" for i in range(1, 10)]:
        df[c] = rng.random(n)
    channels = [2, 0, 1, 2, 0, 1]
    for k, name in enumerate(["Type_11", "Type_5", "Type_9"]):
        df[name] = [ch == k for ch in channels]
    return df, channels


def test_conversion_maps_columns():
    raw, channels = _raw()
    f = criteo_to_frame(raw)
    assert f["channel"].tolist() == channels
    assert f["reward"].tolist() == raw["click"].tolist()
    assert f["cost"].tolist() == raw["cost"].tolist()
    assert [c for c in f.columns if c.startswith("s_")] == [f"s_{c}" for c in STATE_COLUMNS]
    for excluded in ("s_cat8", "s_campaign", "s_cpo", "s_conversion", "s_click"):
        assert excluded not in f.columns
    j = from_frame(f)
    # journeys keep the file order inside a uid: uid 7 is rows 0, 2, 4
    assert j.user_ids.tolist() == [7, 3]
    assert j.actions.tolist() == [[2, 1, 0], [0, 2, 1]]
    np.testing.assert_allclose(j.costs[0], [0.1, 0.3, 0.5])


def test_conversion_errors_name_column_and_row():
    raw, _ = _raw()
    with pytest.raises(JourneyFormatError, match="missing column 'click'") as e:
        criteo_to_frame(raw.drop(columns=["click"]))
    assert e.value.column == "click"
    bad = raw.copy()
    bad.loc[3, "Type_5"] = True  # row 3 now has two true entries
    with pytest.raises(JourneyFormatError, match=r"row 3: campaign-type one-hot sums to 2"):
        criteo_to_frame(bad)
    bad = raw.astype({"Type_9": object})
    bad.loc[4, "Type_9"] = "yes"
    with pytest.raises(JourneyFormatError, match=r"column 'Type_9', row 4: .*'yes'") as e:
        criteo_to_frame(bad)
    assert (e.value.column, e.value.row) == ("Type_9", 4)
    with pytest.raises(JourneyFormatError, match=r"Type_\*"):
        criteo_to_frame(raw.drop(columns=["Type_5", "Type_9"]))
    bad = raw.copy()
    bad.loc[1, "cat3"] = np.nan
    with pytest.raises(JourneyFormatError, match=r"column 's_cat3', row 1"):
        from_frame(criteo_to_frame(bad))


def test_packaged_sample_round_trip():
    raw = read_criteo_raw()
    j = load_criteo()
    assert (j.n_users, j.n_channels, int(j.mask.sum())) == (7478, 11, 110547)
    assert "s_cat8" not in j.state_columns
    types = [c for c in raw.columns if c.startswith("Type_")]
    # every user's journey is its rows in file order: channel = argmax of Type_*, reward = click
    for pos in (0, 100, 7477):
        rows = raw[raw["uid"] == j.user_ids[pos]]
        n = len(rows)
        assert int(j.mask[pos].sum()) == n
        assert j.actions[pos, :n].tolist() == rows[types].to_numpy().argmax(axis=1).tolist()
        np.testing.assert_array_equal(j.rewards[pos, :n], rows["click"].to_numpy(np.float32))
        np.testing.assert_allclose(j.states[pos, :n, 0], rows["cat1"], rtol=1e-6)
    j2, env = load_data("criteo")
    assert env is None and j2.n_users == j.n_users
