"""The one Lagrangian bisection (policies.lagrangian) against exact oracles: brute force over every
joint assignment of a small batch, and thresholds known in closed form."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.lagrangian import bisect, bracket, cluster_multipliers, smallest_multiplier


def test_bisect_halves_exactly_and_stops_at_the_tolerance():
    t = 0.3
    over = lambda x: x < t
    lo, hi = bisect(over, 0.0, 1.0, iterations=20)
    assert hi - lo == 2.0 ** -20 and lo < t <= hi  # dyadic halvings are exact in floating point
    lo, hi = bisect(over, 0.0, 1.0, rtol=1e-6)
    assert lo < t <= hi and hi - lo <= 1e-6 * hi and hi - lo > 0.5e-6 * hi  # one halving more would overshoot
    lo, hi = bisect(over, 0.0, 1.0, atol=1e-3, rtol=1e-9)
    assert lo < t <= hi and 0.5e-3 < hi - lo <= 1e-3
    with pytest.raises(ValueError, match="atol or rtol"):
        bisect(over, 0.0, 1.0)


@pytest.mark.parametrize("t,start", [(5.0, 0.0), (5.0, 4.0), (5.0, 100.0), (2e3, 0.0), (1e-9, 0.0)])
def test_bracket_contains_the_threshold_or_stops_at_the_cap(t, start):
    calls = []
    over = lambda x: calls.append(x) or x < t
    lo, hi = bracket(over, start, 1e3)
    tried = list(calls)
    if t <= 1e3:
        assert lo < t <= hi and not over(hi)
    else:
        assert hi == 1e3 and over(hi)  # the cap: the multiplier is the largest one tried
    assert tried[0] == max(start, 1e-6) and all(b == a * 4 for a, b in zip(tried, tried[1:]))
    assert smallest_multiplier(over, start, 1e3, rtol=1e-9) == pytest.approx(min(t, 1e3), rel=1e-8)


def _brute_force(scores, cost, cap):
    """The best total score of any assignment of one action per row with cost_g <= cap_g."""
    N, A = scores.shape
    assign = np.array(list(itertools.product(range(A), repeat=N)))  # (A^N, N)
    revenue = scores[np.arange(N), assign].sum(axis=1)
    spend = cost[:, assign].sum(axis=2)  # (G, A^N)
    ok = np.all(spend <= cap[:, None] + 1e-9, axis=0)
    return revenue[ok].max()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), G=st.integers(1, 3), fraction=st.floats(0.05, 1.2))
def test_cluster_multipliers_are_exactly_optimal_for_the_budget_they_spend(seed, G, fraction):
    rng = np.random.default_rng(seed)
    N, A = 5, 3
    scores = rng.gamma(2.0, 1.0, size=(N, A))
    cost = np.sort(rng.uniform(0.1, 2.0, size=(G, A)), axis=1)  # action 0 is the cheapest everywhere
    floor = cost[:, 0] * N
    top = cost.max(axis=1) * N
    B = floor + fraction * (top - floor)

    def allocate(lam):
        a = np.argmax(scores - lam @ cost, axis=1)
        return a, cost[:, a].sum(axis=1)

    lam, a, c = cluster_multipliers(allocate, B)
    assert np.all(c <= B + 1e-9)  # feasible
    assert np.all(lam >= 0) and np.array_equal(c, cost[:, a].sum(axis=1))
    revenue = scores[np.arange(N), a].sum()
    # weak duality: nothing that spends no more per cluster earns more (exact, by enumeration)
    assert revenue == pytest.approx(_brute_force(scores, cost, c), rel=1e-12)
    # and no multiplier is larger than it must be: 6% lower (more than the bisection's tolerance
    # and the final tightening step), the allocation overspends
    for g in np.flatnonzero(lam > 1e-6):
        lower = lam.copy()
        lower[g] *= 0.94
        assert np.any(allocate(lower)[1] > B + 1e-9), (g, lam)


def test_cluster_multipliers_leave_unbudgeted_clusters_free_and_reject_bad_budgets():
    scores = np.array([[1.0, 3.0], [2.0, 5.0]])
    cost = np.array([[1.0, 2.0], [1.0, 4.0]])
    allocate = lambda lam: ((a := np.argmax(scores - lam @ cost, axis=1)), cost[:, a].sum(axis=1))
    lam, a, c = cluster_multipliers(allocate, [np.inf, np.inf])
    assert np.array_equal(lam, [0.0, 0.0]) and np.array_equal(a, [1, 1])
    with pytest.raises(ValueError, match="budget must be >= 0"):
        cluster_multipliers(allocate, [np.nan, 1.0])
    with pytest.raises(ValueError, match="budget must be >= 0"):
        cluster_multipliers(allocate, [-1.0, 1.0])
