"""Budget-allocation invariants: spend within budget, monotone demand, shares respected."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.offline.allocation import BudgetAllocator, choose_channels, demand

COSTS = np.array([1.0, 2.0, 3.5])


def _problem(seed, n=300):
    rng = np.random.default_rng(seed)
    rewards = rng.uniform(0, 1, (n, 3)) * rng.uniform(0.2, 1.5, 3)
    prior = rng.dirichlet(np.ones(3), n)
    return rewards, prior


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), frac=st.floats(0.0, 1.2), pw=st.sampled_from([0.0, 0.05]))
def test_spend_never_exceeds_budget(seed, frac, pw):
    rewards, prior = _problem(seed)
    budget = frac * 300 * 2.0
    a = BudgetAllocator(budget, prior_weight=pw).allocate(rewards, COSTS, prior=prior)
    assert a.spend <= budget * 1.01 + 1e-9
    assert a.spend <= budget + 1e-6
    served = a.channels >= 0
    assert np.isclose(a.spend, COSTS[a.channels[served]].sum())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), pw=st.sampled_from([0.0, 0.1]))
def test_demand_is_monotone_in_the_multiplier(seed, pw):
    rewards, prior = _problem(seed)
    ss = np.linspace(0, 1.5, 31)
    d = [demand(rewards, COSTS, np.full(3, s), prior, pw).sum() for s in ss]
    assert np.all(np.diff(d) <= 1e-9)
    assert d[-1] == 0.0  # large enough s: nobody is worth serving


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), shares=st.lists(st.floats(0.05, 1.0), min_size=3, max_size=3),
       frac=st.floats(0.05, 0.8))
def test_channel_shares_are_respected(seed, shares, frac):
    rewards, prior = _problem(seed)
    sh = np.asarray(shares) / np.sum(shares)
    budget = frac * 300 * 2.0
    a = BudgetAllocator(budget, shares=sh).allocate(rewards, COSTS, prior=prior)
    assert np.all(a.spend_per_channel <= sh * budget * 1.01 + 1e-6)
    assert a.spend <= budget + 1e-6


def test_budget_is_used_when_demand_exceeds_it():
    rewards, _ = _problem(5, n=2000)
    budget = 500.0
    a = BudgetAllocator(budget).allocate(rewards, COSTS)
    assert 0.99 * budget <= a.spend <= budget
    assert a.multiplier > 0


def test_selection_prefers_high_penalised_reward():
    """Users served have higher predicted penalised reward than users not served."""
    rewards, _ = _problem(6, n=1000)
    a = BudgetAllocator(200.0).allocate(rewards[:, :1], COSTS[:1])
    served = a.channels >= 0
    assert served.any() and (~served).any()
    assert rewards[served, 0].min() >= rewards[~served, 0].max() - 1e-12


def test_prior_moves_choice_towards_likely_channel():
    rewards = np.array([[0.50, 0.52, 0.0]])
    prior = np.array([[0.9, 0.05, 0.05]])
    assert choose_channels(rewards, np.ones(3), np.zeros(3))[0] == 1
    assert choose_channels(rewards, np.ones(3), np.zeros(3), prior, prior_weight=0.1)[0] == 0


def test_fixed_allocation_serves_by_priority_within_budget():
    ch = np.array([0, 1, 2, 0, 1])
    pr = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    a = BudgetAllocator(4.0).allocate_fixed(ch, pr, COSTS)
    assert a.channels.tolist() == [0, 1, -1, 0, -1]
    assert a.spend == 4.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="shares"):
        BudgetAllocator(1.0, shares=[0.5, 0.6, 0.1]).allocate(np.ones((2, 3)), COSTS)
    with pytest.raises(ValueError, match="costs"):
        BudgetAllocator(1.0).allocate(np.ones((2, 3)), np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="budget"):
        BudgetAllocator(-1.0).allocate(np.ones((2, 3)), COSTS)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), frac=st.floats(0.05, 1.0))
def test_allocate_valued_serves_only_the_chosen_channel(seed, frac):
    rewards, _ = _problem(seed)
    rng = np.random.default_rng(seed)
    chosen = rng.integers(-1, 3, len(rewards))
    budget = frac * 300 * 2.0
    a = BudgetAllocator(budget).allocate_valued(chosen, rewards, COSTS)
    served = a.channels >= 0
    assert np.array_equal(a.channels[served], chosen[served]) and a.spend <= budget + 1e-6
    # the same as allocate() on the matrix where only the chosen channel is eligible
    masked = np.full(rewards.shape, -np.inf)
    ok = chosen >= 0
    masked[ok, chosen[ok]] = rewards[ok, chosen[ok]]
    assert np.array_equal(a.channels, BudgetAllocator(budget).allocate(masked, COSTS).channels)


def test_allocate_valued_value_grows_with_budget_and_prefers_value():
    rewards, _ = _problem(4)
    chosen = np.argmax(rewards, axis=1)
    got = [rewards[a.channels >= 0, a.channels[a.channels >= 0]].sum()
           for a in (BudgetAllocator(b).allocate_valued(chosen, rewards, COSTS) for b in (50, 100, 200, 400))]
    assert np.all(np.diff(got) > 0)
    # with one channel for all, the served decisions are the highest-valued ones
    one = np.zeros(len(rewards), int)
    a = BudgetAllocator(30.0).allocate_valued(one, rewards, COSTS)
    served = a.channels >= 0
    assert served.sum() == 30 and rewards[served, 0].min() >= rewards[~served, 0].max()
    with pytest.raises(ValueError, match="channels must be < 3"):
        BudgetAllocator(1.0).allocate_valued(np.array([0, 3]), np.ones((2, 3)), COSTS)
