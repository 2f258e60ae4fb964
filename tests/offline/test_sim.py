"""Simulated advertising environment sanity."""
import numpy as np

from policies.offline import AdEnvironment, BudgetAllocator


def test_probabilities_and_determinism(small_env, small_journeys):
    p = small_env.click_probs(small_journeys)
    assert p.shape == small_journeys.actions.shape + (3,)
    assert np.all((p > 0) & (p < 1))
    b = small_env.behaviour_probs(np.zeros((5, 4)), np.zeros(5))
    np.testing.assert_allclose(b.sum(axis=1), 1.0)
    assert b.min() >= small_env.behaviour_floor / 3 - 1e-12
    again = AdEnvironment(n_users=240, horizon=10, seed=3).generate()
    np.testing.assert_array_equal(again.actions, small_journeys.actions)
    other = AdEnvironment(n_users=240, horizon=10, seed=4).generate()
    assert not np.array_equal(other.actions, small_journeys.actions)


def test_logged_clicks_follow_the_click_model():
    env = AdEnvironment(n_users=3000, horizon=8, seed=0)
    j = env.generate()
    p = np.take_along_axis(env.click_probs(j), j.actions[..., None], 2)[..., 0]
    assert abs(j.rewards.mean() - p.mean()) < 0.01
    # channels differ in click rate and cost; every channel is logged
    assert np.all(np.bincount(j.actions.ravel(), minlength=3) > 0.15 * j.actions.size)
    np.testing.assert_allclose(j.channel_costs(), env.channel_costs)


def test_history_matters(small_env):
    users = np.zeros((1, 4))
    hours = np.zeros(1)
    after_click = small_env.click_logits(users, hours, np.array([0]), np.array([1.0]))
    no_click = small_env.click_logits(users, hours, np.array([0]), np.array([0.0]))
    assert np.all(after_click > no_click)
    # fatigue: repeating the previous channel lowers its click logit
    repeat = small_env.click_logits(users, hours, np.array([0]), np.array([0.0]))[0, 0]
    switch = small_env.click_logits(users, hours, np.array([1]), np.array([0.0]))[0, 0]
    assert repeat < switch


def test_oracle_allocation_beats_logged_policy_at_same_budget(small_env, small_journeys):
    j = small_journeys
    budget = 0.4 * float(j.costs.sum())
    costs = np.asarray(small_env.channel_costs)
    truth = small_env.click_probs(j).reshape(-1, 3)
    oracle = BudgetAllocator(budget).allocate(truth, costs).channels.reshape(j.actions.shape)
    rng = np.random.default_rng(0)
    logged = BudgetAllocator(budget).allocate_fixed(j.actions.ravel(), rng.random(j.actions.size), costs)
    logged = logged.channels.reshape(j.actions.shape)
    assert small_env.spend(j, oracle) <= budget and small_env.spend(j, logged) <= budget
    assert small_env.value(j, oracle) > 1.2 * small_env.value(j, logged)
