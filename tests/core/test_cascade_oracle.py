import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import Bounds, LinearConstraint, milp

from policies.cascade import Cascade, CascadeSpec, StageSpec
from policies.oracle import OraclePolicy, batch_optimum, check_lambda

CAS = Cascade()
SMALL = Cascade(CascadeSpec(stages=(
    StageSpec("retrieval", "retrieval", {"channels": (1, 3), "queue": (50, 450), "switch": (0, 1)}),
    StageSpec("prerank", "prerank", {"queue": (25, 200), "model": (0, 1)}),
    StageSpec("rank", "rank", {"queue": (4, 40)}),
)))


def test_default_spec_size_and_costs():
    assert CAS.n_actions == 960
    assert CAS.cost.shape == (3, 960) and (CAS.cost > 0).all()
    assert (CAS.phi >= 0).all()
    # ranking more candidates only pays when retrieval fetched enough: capped queues cost the same
    n_r, n_p, n_k = CAS.funnel
    assert (n_p <= n_r + 1e-9).all() and (n_k <= n_p + 1e-9).all()


def brute_force(cas, w, lam):
    return np.argmax(w @ cas.phi - lam @ cas.cost, axis=1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.lists(st.floats(0, 2), min_size=3, max_size=3))
def test_oracle_equals_brute_force_over_all_joint_actions(seed, lam):
    rng = np.random.default_rng(seed)
    w = CAS.weights(CAS.sample_features(64, rng.uniform(0, 24), rng))
    lam = np.array(lam)
    got = OraclePolicy(CAS).act_weights(w, lam)
    want = brute_force(CAS, w, lam)
    obj = lambda a: np.einsum("nk,kn->n", w, CAS.phi[:, a]) - lam @ CAS.cost[:, a]
    np.testing.assert_allclose(obj(got), obj(want), rtol=0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), g=st.integers(0, 2), base=st.lists(st.floats(0, 0.5), min_size=3, max_size=3))
def test_cluster_cost_never_rises_with_its_lambda(seed, g, base):
    rng = np.random.default_rng(seed)
    w = CAS.weights(CAS.sample_features(128, 12.0, rng))
    pol = OraclePolicy(CAS)
    prev = np.inf
    for v in np.geomspace(1e-5, 10, 25):
        lam = np.array(base)
        lam[g] = v
        c = CAS.cost[g, pol.act_weights(w, lam)].sum()
        assert c <= prev + 1e-9
        prev = c


def milp_optimum(cas, w, budget):
    N, A = w.shape[0], cas.n_actions
    rev = (w @ cas.phi).ravel()
    cons = [LinearConstraint(np.kron(np.eye(N), np.ones(A)), 1, 1), LinearConstraint(np.hstack([cas.cost] * N), -np.inf, budget)]
    res = milp(-rev, constraints=cons, integrality=np.ones(N * A), bounds=Bounds(0, 1))
    assert res.success
    return -res.fun


@pytest.mark.parametrize("seed,frac", [(0, 0.3), (1, 0.5), (2, 0.7)])
def test_batch_optimum_matches_milp(seed, frac):
    rng = np.random.default_rng(seed)
    w = SMALL.weights(SMALL.sample_features(20, rng.uniform(0, 24), rng))
    full = SMALL.cost[:, OraclePolicy(SMALL).act_weights(w, np.zeros(3))].sum(axis=1)
    cheap = SMALL.cost.min(axis=1) * 20
    budget = cheap + frac * (full - cheap)
    opt = batch_optimum(SMALL, w, budget)
    assert np.all(opt.cost <= budget + 1e-9)
    # exact: the Lagrangian allocation is optimal for the compute it uses
    assert opt.revenue == pytest.approx(milp_optimum(SMALL, w, opt.cost + 1e-9), rel=1e-9)
    # and within a small duality gap of the optimum at the budget itself
    best = milp_optimum(SMALL, w, budget)
    assert opt.revenue <= best + 1e-9
    assert opt.revenue >= 0.97 * best


def test_batch_optimum_rejects_infeasible_budget():
    w = CAS.weights(CAS.sample_features(10, 12.0, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="below the cheapest allocation"):
        batch_optimum(CAS, w, [0.1, 1e9, 1e9])


def test_realised_revenue_is_unbiased():
    rng = np.random.default_rng(3)
    x = CAS.sample_features(200_000, 12.0, rng)
    a = np.full(len(x), CAS.n_actions - 1)
    real = CAS.realised_revenue(x, a, rng)
    assert set(np.unique(real > 0)) <= {False, True}
    assert real.mean() == pytest.approx(CAS.expected_revenue(x, a).mean(), rel=0.03)


def test_request_value_has_a_daily_pattern():
    rng = np.random.default_rng(0)
    evening = CAS.sample_features(20000, 20.0, rng)[:, 0].mean()
    morning = CAS.sample_features(20000, 8.0, rng)[:, 0].mean()
    assert evening > morning + 0.3


def test_heavy_model_pays_more_for_high_value_users():
    heavy = [i for i, a in enumerate(CAS.actions) if a[1]["model"] == 1]
    light = [CAS.compose(np.r_[CAS.stage_index[i][:1], CAS.stage_index[i][1] - 1, CAS.stage_index[i][2:]]) for i in heavy]
    gain = CAS.phi[:, heavy] - CAS.phi[:, light]
    lo = np.array([1.0, 0.1, 0.5]) @ gain
    hi = np.array([3.0, 0.9 * 3.0, 1.5]) @ gain
    assert (hi >= lo - 1e-12).all() and hi.mean() > 3 * lo.mean()


@pytest.mark.parametrize("bad,needle", [
    ({"costs": {"rank_per_item": -1}}, "costs.rank_per_item must be finite and non-negative"),
    ({"costs": {"nope": 1}}, "unknown costs keys: \\['nope'\\]"),
    ({"extra": 1}, "unknown cascade spec keys"),
    ({"stages": [{"name": "retrieval", "sub_actions": {"channels": [2, 1], "queue": [1], "switch": [0]}},
                 {"name": "prerank", "sub_actions": {"queue": [1], "model": [0]}},
                 {"name": "rank", "sub_actions": {"queue": [1]}}]}, "strictly increasing"),
])
def test_spec_validation(bad, needle):
    with pytest.raises(ValueError, match=needle):
        CascadeSpec.from_dict(bad)


def test_spec_round_trip_and_bad_inputs():
    spec = CascadeSpec()
    assert CascadeSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="features must have shape"):
        CAS.weights(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="features row 1 is not finite"):
        CAS.weights(np.array([[0, 0.5, 0.5, 0, 1], [np.nan, 0.5, 0.5, 0, 1]]))
    with pytest.raises(ValueError, match="lambda must be finite and >= 0"):
        check_lambda([0.1, -1, 0], 3)
    with pytest.raises(ValueError, match="lambda must have shape"):
        check_lambda([0.1, 0.2], 3)


@given(st.integers(0, 2**32 - 1), st.integers(1, 2000))
@settings(max_examples=50, deadline=None)
def test_beta23_quantiles_do_not_depend_on_the_order_of_the_sample(seed, n):
    """The Beta(2, 3) quantile behind the stratified diversity feature: every value is its own
    quantile, whatever the other values or their order (the table is searched in sorted order), and
    inverts the CDF."""
    from policies.cascade import _beta23_cdf, _beta23_ppf

    rng = np.random.default_rng(seed)
    q = rng.random(n)
    q[: min(n, 3)] = [np.finfo(float).tiny, np.nextafter(1.0, 0.0), 0.5][: min(n, 3)]
    x = _beta23_ppf(q)
    perm = rng.permutation(n)
    np.testing.assert_array_equal(_beta23_ppf(q[perm]), x[perm])
    picked = rng.choice(n, min(n, 20), replace=False)
    np.testing.assert_array_equal([_beta23_ppf(q[i:i + 1])[0] for i in picked], x[picked])
    assert np.all((x >= 0) & (x <= 1))
    np.testing.assert_allclose(_beta23_cdf(x), q, atol=1e-12)
