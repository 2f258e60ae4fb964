import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.testbench.isotonic import isotonic_by_x, isotonic_fit

floats = st.floats(-1e3, 1e3, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(y=st.lists(floats, min_size=1, max_size=40), data=st.data())
def test_fit_is_monotone_and_preserves_weighted_mean(y, data):
    w = data.draw(st.lists(st.floats(0.1, 10), min_size=len(y), max_size=len(y)))
    fit = isotonic_fit(y, w)
    assert fit.shape == (len(y),)
    assert np.all(np.diff(fit) >= -1e-9 * (1 + np.abs(fit[1:])))
    np.testing.assert_allclose(np.dot(w, fit), np.dot(w, y), rtol=1e-9, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(y=st.lists(floats, min_size=1, max_size=30))
def test_fit_leaves_monotone_data_alone_and_is_idempotent(y):
    s = np.sort(y)
    np.testing.assert_allclose(isotonic_fit(s), s)
    once = isotonic_fit(y)
    np.testing.assert_allclose(isotonic_fit(once), once)


@settings(max_examples=60, deadline=None)
@given(y=st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=8))
def test_fit_is_the_least_squares_monotone_fit(y):
    # no monotone sequence on a grid around the solution does better (checks optimality, not just shape)
    y = np.asarray(y)
    fit = isotonic_fit(y)
    best = np.sum((fit - y) ** 2)
    rng = np.random.default_rng(0)
    for _ in range(200):
        cand = np.sort(fit + rng.normal(0, 1, len(y)))
        assert np.sum((cand - y) ** 2) >= best - 1e-9


def test_known_example_pools_violators():
    np.testing.assert_allclose(isotonic_fit([1, 3, 2, 4]), [1, 2.5, 2.5, 4])
    np.testing.assert_allclose(isotonic_fit([3, 2, 1]), [2, 2, 2])
    np.testing.assert_allclose(isotonic_fit([1, 3, 2], [1, 3, 1]), [1, 2.75, 2.75])


def test_by_x_pools_repeated_queue_lengths():
    x, fit, w = isotonic_by_x([50, 25, 50, 100], [2.0, 1.0, 4.0, 2.5])
    np.testing.assert_allclose(x, [25, 50, 100])
    np.testing.assert_allclose(w, [1, 2, 1])
    np.testing.assert_allclose(fit, [1.0, (3.0 * 2 + 2.5) / 3, (3.0 * 2 + 2.5) / 3])


@pytest.mark.parametrize("y,w", [([1.0, np.nan], None), ([1.0, 2.0], [1.0, 0.0]), ([[1.0]], None)])
def test_bad_inputs_are_rejected(y, w):
    with pytest.raises(ValueError):
        isotonic_fit(y, w)
