"""Gradient-boosting probe, shared reward model features and the data diagnosis."""
import numpy as np
import pytest

from policies.offline.diagnose import channel_statistics, diagnose, probe_auc, window_split_overlap
from policies.offline.gbm import GradientBoostingClassifier
from policies.offline.journeys import Journeys
from policies.offline.metrics import binary_auc
from policies.offline.reward_model import RewardModel, history_features


def _journeys(actions, states=None, rewards=None, n_channels=3):
    actions = np.asarray(actions)
    n, t = actions.shape
    mask = (actions >= 0).astype(np.float32)
    states = np.zeros((n, t, 1), np.float32) if states is None else states
    rewards = np.zeros((n, t), np.float32) if rewards is None else rewards
    return Journeys(states, actions, rewards, np.ones((n, t), np.float32), mask, n_channels, ["x"])


def test_gbm_learns_interaction_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 3))
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(float)  # XOR: needs depth >= 2
    m = GradientBoostingClassifier(n_trees=40, max_depth=2).fit(x[:2000], y[:2000])
    assert binary_auc(m.predict_proba(x[2000:]), y[2000:]) > 0.95
    m2 = GradientBoostingClassifier(n_trees=40, max_depth=2).fit(x[:2000], y[:2000])
    np.testing.assert_array_equal(m.predict_proba(x), m2.predict_proba(x))
    stump = GradientBoostingClassifier(n_trees=40, max_depth=1).fit(x[:2000], y[:2000])
    assert binary_auc(stump.predict_proba(x[2000:]), y[2000:]) < 0.7  # additive model cannot


def test_gbm_errors():
    with pytest.raises(ValueError, match="0/1"):
        GradientBoostingClassifier().fit(np.zeros((4, 1)), [0, 1, 2, 0])
    with pytest.raises(ValueError, match="row 1, feature 0"):
        GradientBoostingClassifier().fit(np.array([[0.0], [np.nan]]), [0, 1])
    m = GradientBoostingClassifier(n_trees=2, min_leaf=1).fit(np.arange(8.0)[:, None], [0, 1] * 4)
    with pytest.raises(ValueError, match="2 features, the model was fitted on 1"):
        m.predict_proba(np.zeros((2, 2)))


def test_history_features_exact():
    j = _journeys([[0, 2, 2, -1]], rewards=np.array([[1, 0, 1, 0]], np.float32))
    h = history_features(j)[0]  # [T, prev onehot (4), prev r, shares (3), step]
    np.testing.assert_array_equal(h[:3, :4], [[0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(h[:3, 4], [0, 1, 0])
    np.testing.assert_allclose(h[:3, 5:8], [[0, 0, 0], [1, 0, 0], [0.5, 0, 0.5]])
    np.testing.assert_array_equal(h[:3, 8], [0, 1, 2])


def test_channel_statistics_exact():
    j = _journeys([[0, 0, 1, 2], [1, 1, 1, -1]])
    d = channel_statistics(j)
    np.testing.assert_allclose(d["channel_shares"], [2 / 7, 4 / 7, 1 / 7])
    assert d["p_same"] == pytest.approx(3 / 5)  # pairs: 00 01 12 11 11
    assert d["p_same_random"] == pytest.approx((4 + 16 + 1) / 49)
    np.testing.assert_allclose(d["transition"][0], [0.5, 0.5, 0.0])
    p = np.array([2, 4, 1]) / 7
    chi = [((np.array(c) - n * p) ** 2 / (n * p)).sum() for c, n in (([2, 1, 1], 4), ([0, 3, 0], 3))]
    assert d["user_chi2"] == pytest.approx(np.mean(chi)) and d["user_chi2_expected"] == 2


def test_probe_separates_random_from_state_driven_channels():
    rng = np.random.default_rng(1)
    n, t = 400, 8
    states = rng.normal(size=(n, t, 2)).astype(np.float32)
    random_j = _journeys(rng.integers(0, 3, (n, t)), states)
    driven_j = _journeys(np.digitize(states[..., 0], [-0.5, 0.5]), states)
    random_auc = probe_auc(random_j, n_trees=15)
    driven_auc = probe_auc(driven_j, n_trees=15)
    assert abs(random_auc["state"] - 0.5) < 0.05 and abs(random_auc["state_history"] - 0.5) < 0.05
    assert driven_auc["state"] > 0.95 and driven_auc["history"] < driven_auc["state"]
    d = diagnose(random_j, probe=False)
    assert "probe_auc" not in d and abs(d["user_chi2"] - 2) < 0.5


def test_window_split_leaks_and_user_split_does_not():
    rng = np.random.default_rng(2)
    j = _journeys(rng.integers(0, 3, (60, 30)))  # random channels: nothing to learn
    w = window_split_overlap(j, n_windows=400, window=10, seed=0)
    assert w["test_user_in_train"] > 0.9 and w["test_step_in_train"] > 0.5
    assert w["memoriser_auc_window_split"] > 0.7
    assert w["memoriser_auc_user_split"] == 0.5  # unseen users: global shares, constant scores
    with pytest.raises(ValueError, match="no journey has 40 exposures"):
        window_split_overlap(j, window=40)


def test_reward_model_recovers_channel_rates():
    rng = np.random.default_rng(3)
    n, t = 300, 10
    actions = rng.integers(0, 3, (n, t))
    states = rng.normal(size=(n, t, 1)).astype(np.float32)
    p = np.array([0.1, 0.5, 0.9])[actions] * (states[..., 0] > 0) + 0.05
    j = _journeys(actions, states, (rng.random((n, t)) < p).astype(np.float32))
    pred = RewardModel(n_trees=30).fit(j).predict(j)
    x = states[..., 0][j.mask > 0]
    hi = pred[x > 0.5].mean(axis=0)
    assert np.all(np.diff(hi) > 0.2) and np.all(pred[x < -0.5].mean(axis=0) < 0.15)
    with pytest.raises(ValueError, match="0/1"):
        RewardModel().fit(_journeys(actions, states, np.full((n, t), 2.0, np.float32)))
