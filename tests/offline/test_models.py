"""MTORL and baselines: estimator contract, numpy inference, save/load, learning signal."""
import json

import numpy as np
import pytest

from policies.offline import MTORL, BehaviourCloning, BehaviourPolicy, DecisionTransformer, DiscreteCQL, load_model, save_model
from policies.offline.metrics import binary_auc, channel_auc, macro_f1

TINY = dict(d_model=8, max_epochs=2, batch_size=64, seed=0)


def test_constructor_stores_config_only():
    m = MTORL(action_weight=0.5, reward_weight=2.0, d_model=16)
    assert m.get_params()["action_weight"] == 0.5 and m.get_params()["d_model"] == 16
    assert not [k for k in vars(m) if k.endswith("_")]
    with pytest.raises(RuntimeError, match="not fitted"):
        m.action_proba(None)


@pytest.mark.parametrize("cls", [MTORL, BehaviourCloning, DecisionTransformer, DiscreteCQL])
def test_fit_returns_self_and_predicts(cls, small_journeys):
    m = cls(**TINY)
    assert m.fit(small_journeys) is m
    p = m.action_proba(small_journeys)
    assert p.shape == small_journeys.actions.shape + (3,)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=1e-5)
    assert "best_epoch" in m.history_ and len(m.history_["val"]) >= 1


def test_save_load_roundtrip_without_pickle(small_journeys, tmp_path):
    m = MTORL(**TINY).fit(small_journeys)
    save_model(m, tmp_path / "b")
    meta = json.loads((tmp_path / "b" / "model.json").read_text())
    assert meta["class"] == "MTORL" and meta["params"]["d_model"] == 8
    with np.load(tmp_path / "b" / "model.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    m2 = load_model(tmp_path / "b")
    np.testing.assert_array_equal(m.predict_reward(small_journeys), m2.predict_reward(small_journeys))
    np.testing.assert_array_equal(m.action_proba(small_journeys), m2.action_proba(small_journeys))
    (tmp_path / "b" / "model.npz").write_bytes(b"corrupt")
    with pytest.raises(ValueError, match="sha256"):
        load_model(tmp_path / "b")


def test_mtorl_learns_the_simulated_click_model(small_env):
    """The reward head ranks channel click probabilities better than chance on held-out users."""
    train = small_env.generate(n_users=600)
    test = small_env.generate(n_users=150, seed_offset=9)
    m = MTORL(d_model=16, max_epochs=6, seed=0).fit(train)
    pred = m.predict_reward(test)
    truth = small_env.click_probs(test)
    corr = np.corrcoef(pred.ravel(), truth.ravel())[0, 1]
    assert corr > 0.5


def test_behaviour_policy_frequencies(small_journeys):
    b = BehaviourPolicy().fit(small_journeys)
    np.testing.assert_allclose(b.channel_freq_.sum(), 1.0)
    assert b.action_proba(small_journeys).shape == small_journeys.actions.shape + (3,)


def test_metrics():
    assert binary_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    probs = np.eye(3)[[0, 1, 2, 0]]
    assert channel_auc(probs, np.array([0, 1, 2, 0])) == 1.0
    assert macro_f1(np.array([0, 1, 2, 0]), np.array([0, 1, 2, 0]), 3) == 1.0
    assert macro_f1(np.array([0, 0, 0, 0]), np.array([0, 1, 2, 0]), 3) == pytest.approx((2 / 3) / 3)
