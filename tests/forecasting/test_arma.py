"""The ARMA errors of the SARIMA forecaster: the conditional-ML fit against statsmodels' exact ML
and against the true parameters, the transform that keeps every candidate stationary and
invertible, and the vectorised filter against the scalar recursion it replaces."""
import math
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import lfilter

from forecasting.arma import ArmaState, constrain_stationary, fit_arma, unconstrain_stationary


def simulate(phi, theta, n, seed, scale=0.05, burn=500):
    e = np.random.default_rng(seed).normal(size=n + burn) * scale
    return lfilter(np.r_[1.0, theta], np.r_[1.0, -np.asarray(phi, float)], e)[burn:]


CASES = [((0.8,), (0.3,)), ((0.95,), (-0.4,)), ((0.5, 0.3), ()), ((1.25, -0.27), ())]


@pytest.mark.parametrize("phi,theta", CASES)
def test_fit_recovers_the_true_parameters(phi, theta):
    r = simulate(phi, theta, 8000, seed=1)
    order, phi_hat, theta_hat, sigma2, _ = fit_arma(r)
    assert order == (len(phi), 0, len(theta))
    np.testing.assert_allclose(phi_hat, phi, atol=0.04)
    np.testing.assert_allclose(theta_hat, theta, atol=0.04)
    assert sigma2 == pytest.approx(0.05 ** 2, rel=0.05)


@pytest.mark.parametrize("phi,theta", CASES)
def test_fit_agrees_with_statsmodels_exact_likelihood(phi, theta):
    """Conditional ML on thousands of points is exact ML up to the first values' conditioning."""
    SARIMAX = pytest.importorskip("statsmodels.tsa.statespace.sarimax").SARIMAX
    r = simulate(phi, theta, 4000, seed=2)
    order, phi_hat, theta_hat, sigma2, _ = fit_arma(r, orders=[(len(phi), 0, len(theta))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SARIMAX(r, order=order, trend="n", concentrate_scale=True).fit(disp=False, maxiter=200)
    np.testing.assert_allclose(phi_hat, ref.arparams, atol=5e-3)
    if theta:
        np.testing.assert_allclose(theta_hat, ref.maparams, atol=5e-3)
    assert sigma2 == pytest.approx(ref.scale, rel=5e-3)


def test_fit_picks_the_order_by_aic_and_rejects_bad_input():
    r = simulate((0.5, 0.3), (), 6000, seed=3)
    both = fit_arma(r, orders=[(1, 0, 1), (2, 0, 0)])
    ar2 = fit_arma(r, orders=[(2, 0, 0)])
    arma11 = fit_arma(r, orders=[(1, 0, 1)])
    assert both[0] == (2, 0, 0) and both[4] == ar2[4] < arma11[4]
    with pytest.raises(ValueError, match="finite"):
        fit_arma(np.r_[r[:10], np.nan])
    with pytest.raises(ValueError, match=r"\(p, 0, q\)"):
        fit_arma(r, orders=[(1, 1, 0)])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-7.9, 7.9), min_size=1, max_size=4))
def test_transform_is_stationary(u):
    phi = constrain_stationary(np.array(u))
    companion = np.eye(len(phi), k=-1)
    companion[0] = phi  # its eigenvalues are the inverse roots of 1 - phi_1 z - ... - phi_p z^p
    assert np.all(np.abs(np.linalg.eigvals(companion)) < 1.0 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-3.0, 3.0), min_size=1, max_size=4))
def test_transform_round_trips(u):
    """(Partial autocorrelations near +-1 are ill-conditioned: the inverse divides by 1 - a^2.)"""
    np.testing.assert_allclose(unconstrain_stationary(constrain_stationary(np.array(u))), u, atol=1e-6)


def scalar_filter(phi, theta, r):
    """The recursion one value at a time (the filter's definition)."""
    p, q = len(phi), len(theta)
    rl, el = np.zeros(p), np.zeros(q)
    filled, innov = np.empty(len(r)), np.empty(len(r))
    for i, x in enumerate(r):
        pred = float(np.dot(phi, rl) + np.dot(theta, el))
        e = x - pred
        if math.isnan(e):
            e, x = 0.0, pred
        filled[i], innov[i] = x, e
        rl = np.r_[x, rl][:p]
        el = np.r_[e, el][:q]
    return filled, innov, rl, el


@pytest.mark.parametrize("phi,theta", [((0.9,), (0.4,)), ((1.2, -0.3), ()), ((), (0.5,)), ((), ()), ((0.5, 0.2), (0.3, -0.1))])
def test_filter_equals_the_scalar_recursion_with_missing_values_and_in_pieces(phi, theta):
    rng = np.random.default_rng(4)
    r = simulate(phi, theta, 400, seed=5)
    r[rng.choice(400, 30, replace=False)] = np.nan
    r[100:110] = np.nan  # a run of missing values
    r[0] = np.nan  # the first value missing too
    want = scalar_filter(np.array(phi), np.array(theta), r)
    whole = ArmaState(phi, theta, 1.0)
    got = whole.filter(r)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-15)
    pieces = ArmaState(phi, theta, 1.0)
    parts = [pieces.filter(r[a:b]) for a, b in ((0, 1), (1, 57), (57, 105), (105, 106), (106, 400))]
    np.testing.assert_allclose(np.concatenate([p[0] for p in parts]), want[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.concatenate([p[1] for p in parts]), want[1], rtol=1e-12, atol=1e-15)
    for state in (whole, pieces):
        np.testing.assert_allclose(state.r_lags, want[2], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(state.e_lags, want[3], rtol=1e-12, atol=1e-15)


def test_fit_does_not_depend_on_the_blas_thread_count():
    """A service, a tuning worker and a test process may run with different OPENBLAS_NUM_THREADS:
    they must fit the same model on the same history, bit for bit."""
    code = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        from conftest import synth_traffic
        from forecasting import SarimaForecaster
        m = SarimaForecaster().fit(synth_traffic(days=28, freq="5min", seed=7))
        print(m.beta_.tobytes().hex(), m.arma_.phi.tobytes().hex(), m.arma_.theta.tobytes().hex(), m.arma_.sigma2.hex())
    """)
    here = str(Path(__file__).parent)
    outs = set()
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        r = subprocess.run([sys.executable, "-c", code, here], capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr
        outs.add(r.stdout.strip())
    assert len(outs) == 1
