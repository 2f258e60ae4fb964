"""Journey format: padding, and errors that name the column and the row."""
import numpy as np
import pandas as pd
import pytest

from policies.offline import JourneyFormatError, from_frame, load_kuairand, read_journeys
from policies.offline.kuairand import kuairand_to_frame


def _frame():
    return pd.DataFrame({
        "user_id": ["a", "a", "b", "a", "b"],
        "step": [2, 1, 1, 3, 2],
        "channel": [1, 0, 2, 1, 0],
        "reward": [0.0, 1.0, 0.0, 1.0, 1.0],
        "cost": [2.0, 1.0, 3.0, 2.0, 1.0],
        "age": [0.1, 0.2, 0.3, 0.4, 0.5],
    })


def test_padding_and_order():
    j = from_frame(_frame())
    assert j.states.shape == (2, 3, 1) and j.n_channels == 3
    assert j.actions.tolist() == [[0, 1, 1], [2, 0, -1]]
    assert j.mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert j.rewards[0].tolist() == [1.0, 0.0, 1.0]
    np.testing.assert_allclose(j.states[0, :, 0], [0.2, 0.1, 0.4])
    np.testing.assert_allclose(j.channel_costs(), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("col", ["user_id", "channel", "reward"])
def test_missing_column_is_named(col):
    with pytest.raises(JourneyFormatError, match=f"missing column '{col}'") as e:
        from_frame(_frame().drop(columns=[col]))
    assert e.value.column == col and isinstance(e.value, ValueError)


@pytest.mark.parametrize("col", ["reward", "age", "cost", "channel"])
def test_nan_names_column_and_row(col):
    df = _frame().astype({col: float})
    df.loc[3, col] = np.nan
    with pytest.raises(JourneyFormatError, match=rf"column '{col}', row 3") as e:
        from_frame(df)
    assert (e.value.column, e.value.row) == (col, 3)


def test_wrong_type_names_column_and_row():
    df = _frame().astype({"age": object})
    df.loc[2, "age"] = "old"
    with pytest.raises(JourneyFormatError, match=r"column 'age', row 2: non-numeric value 'old'"):
        from_frame(df)


def test_channel_must_be_in_range_and_integer():
    df = _frame()
    df.loc[4, "channel"] = 7
    with pytest.raises(JourneyFormatError, match=r"column 'channel', row 4.*outside 0..2"):
        from_frame(df, n_channels=3)
    df = _frame().astype({"channel": float})
    df.loc[1, "channel"] = 0.5
    with pytest.raises(JourneyFormatError, match=r"column 'channel', row 1.*integer"):
        from_frame(df)


def test_read_journeys_from_csv(tmp_path):
    p = tmp_path / "j.csv"
    _frame().to_csv(p, index=False)
    assert read_journeys(p).n_users == 2
    df = _frame()
    df.loc[0, "reward"] = np.nan
    df.to_csv(p, index=False)
    with pytest.raises(JourneyFormatError, match=r"column 'reward', row 0"):
        read_journeys(p)


def test_kuairand_onehot_errors():
    raw = pd.DataFrame({"user_id": [1, 1], "hourmin": [0.1, 0.2], "time_ms": [0.1, 0.2],
                        "is_click": [0, 1], "short": [1, 1], "mid": [0, 1], "long": [0, 0]})
    with pytest.raises(JourneyFormatError, match=r"row 1: channel one-hot sums to 2"):
        kuairand_to_frame(raw)
    with pytest.raises(JourneyFormatError, match="missing column 'is_click'"):
        kuairand_to_frame(raw.drop(columns=["is_click"]))


def test_packaged_kuairand_sample_loads():
    j = load_kuairand()
    assert j.n_users == 6051 and j.n_channels == 3 and int(j.mask.sum()) == 126184
    # outcomes of the exposure are not state
    assert not any(c in ("s_is_click", "s_long_view", "s_play_time_ms") for c in j.state_columns)
    assert set(np.unique(j.rewards)) <= {0.0, 1.0}
