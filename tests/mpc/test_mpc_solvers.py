import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc_balancer.frontier import ResponseCurve, concave_hull
from mpc_balancer.mpc import CvxpyMpcSolver, MpcData, MpcProblem, OsqpMpcSolver, QuadraticMpcProblem, frontier_data


def random_data(rng, G=3, H=12, J=6, tight=1.0):
    qps = rng.uniform(4000, 15000) * np.exp(np.cumsum(rng.normal(0, 0.05, H)))
    W, B, umin = np.zeros((G, J)), np.zeros((G, J)), np.zeros(G)
    for g in range(G):
        c = np.sort(rng.uniform(0.2, 8, 14))
        r = np.log1p(c) * rng.uniform(0.5, 2) + rng.normal(0, 0.05, 14)
        umin[g], W[g], B[g] = frontier_data(*concave_hull(c, r), J)
    umax = umin + W.sum(axis=1)
    cap = qps.mean() * umax * rng.uniform(0.3, 0.9, G) / tight
    return MpcData(qps=qps, qps_hi=qps * rng.uniform(1.0, 1.1), capacity=cap, target=np.full(G, 0.9),
                   offset=rng.normal(0, 0.02, G), u_prev=rng.uniform(umin, umax), u_min=umin, widths=W, slopes=B,
                   qps_ref=float(qps.max()))


def make_problem(kind, H, objective="revenue", u_scale=None):
    if kind == "pwl":
        return MpcProblem(3, H, 6, objective, u_scale=u_scale)
    return QuadraticMpcProblem(3, H, objective, u_scale=u_scale)


@pytest.mark.parametrize("kind", ["pwl", "quadratic"])
@pytest.mark.parametrize("objective", ["revenue", "tracking"])
@pytest.mark.parametrize("seed", range(6))
def test_osqp_matches_cvxpy_on_random_instances(kind, objective, seed):
    rng = np.random.default_rng(seed)
    data = random_data(rng)
    prob = make_problem(kind, 12, objective, u_scale=data.u_max)
    a = OsqpMpcSolver(prob, time_limit_s=0).solve(data)
    b = CvxpyMpcSolver(prob).solve(data)
    assert a.ok and b.ok
    fa, fb = prob.objective_value(a.x, data), prob.objective_value(b.x, data)
    assert fa == pytest.approx(fb, rel=1e-4, abs=1e-5)
    if objective == "revenue":
        # the first planned cost (the one applied) agrees
        np.testing.assert_allclose(a.u[:, 0], b.u[:, 0], rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("kind", ["pwl", "quadratic"])
def test_warm_started_ticks_match_fresh_solves(kind):
    rng = np.random.default_rng(11)
    prob = make_problem(kind, 20)
    warm = OsqpMpcSolver(prob, time_limit_s=0)
    for _ in range(5):
        data = random_data(rng, H=20)
        a = warm.solve(data)
        b = OsqpMpcSolver(prob, time_limit_s=0).solve(data)
        assert a.ok and b.ok
        assert prob.objective_value(a.x, data) == pytest.approx(prob.objective_value(b.x, data), rel=1e-4, abs=1e-5)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), kind=st.sampled_from(["pwl", "quadratic"]))
def test_planned_cost_never_rises_when_capacity_shrinks(seed, kind):
    rng = np.random.default_rng(seed)
    data = random_data(rng, H=8)
    prob = make_problem(kind, 8)
    prev = None
    for shrink in (1.0, 0.8, 0.6, 0.4):
        d = MpcData(**{**data.__dict__, "capacity": data.capacity * shrink})
        sol = OsqpMpcSolver(prob, time_limit_s=0).solve(d)
        assert sol.ok
        if prev is not None:
            assert np.all(sol.u[:, 0] <= prev + 1e-3)
        prev = sol.u[:, 0]


@pytest.mark.parametrize("kind", ["pwl", "quadratic"])
def test_infeasible_spike_is_absorbed_by_slack_not_an_error(kind):
    rng = np.random.default_rng(3)
    data = random_data(rng, H=10)
    data.qps_hi = data.qps_hi.copy()
    data.qps_hi[2] *= 50  # even the cheapest allocation cannot fit this step
    prob = make_problem(kind, 10)
    sol = OsqpMpcSolver(prob, time_limit_s=0).solve(data)
    assert sol.ok
    assert np.all(sol.slack[:, 2] > 0)
    np.testing.assert_allclose(sol.u[:, 2], data.u_min, atol=2e-3)  # as cheap as possible while over


def test_time_limit_is_reported_not_raised():
    data = random_data(np.random.default_rng(5), H=40)
    sol = OsqpMpcSolver(MpcProblem(3, 40, 6), time_limit_s=1e-7).solve(data)
    assert not sol.ok and "time limit" in sol.status


def test_bad_data_named():
    data = random_data(np.random.default_rng(0))
    data.qps = data.qps[:5]
    with pytest.raises(ValueError, match=r"mpc data qps must have shape \(12,\)"):
        OsqpMpcSolver(MpcProblem(3, 12, 6)).solve(data)
    with pytest.raises(ValueError, match="objective must be one of"):
        MpcProblem(3, 12, 6, objective="profit")


def test_concave_envelope_and_lambda_inversion():
    c = np.array([1.0, 2, 3, 4, 5])
    r = np.array([1.0, 1.8, 2.0, 2.9, 3.0])  # (3, 2.0) lies under the hull
    hc, hr = concave_hull(c, r)
    assert hc.tolist() == [1.0, 2.0, 4.0, 5.0]
    R = lambda u: np.interp(u, hc, hr)  # noqa: E731
    assert all(R(ci) >= ri - 1e-12 for ci, ri in zip(c, r))
    u0, w, b = frontier_data(hc, hr, 5)
    assert u0 == 1.0 and w.tolist() == [1.0, 2.0, 1.0, 0.0, 0.0]
    assert np.all(np.diff(b) <= 1e-12)  # slopes decrease: concave
    curve = ResponseCurve(np.array([1e-3, 1e-2, 1e-1]), np.array([[6.0, 3.0, 1.0]]), np.array([[2.0, 1.5, 0.5]]))
    for u in (5.0, 2.0, 1.5):
        assert curve.cost_at(0, curve.lam_for_cost(0, u)) == pytest.approx(u)
    assert curve.lam_for_cost(0, 10.0) == 1e-3 and curve.lam_for_cost(0, 0.1) == 1e-1


def test_segment_filling_equals_the_frontier():
    """With only revenue in the objective and a loose load row, u goes to the frontier's top and the
    planned revenue per request is the frontier's value there (exact epigraph)."""
    rng = np.random.default_rng(2)
    data = random_data(rng, H=4)
    data.capacity = data.capacity * 100
    data.u_prev = data.u_max.copy()  # no rate penalty pulling elsewhere
    prob = MpcProblem(3, 4, 6, u_scale=data.u_max)
    sol = OsqpMpcSolver(prob, time_limit_s=0).solve(data)
    r_min = np.zeros(3)
    planned = prob.planned_revenue(sol.x, data, r_min)
    top = (data.widths * data.slopes).sum(axis=1)  # the frontier's value at u_max (above R(u_min))
    np.testing.assert_allclose(planned, np.repeat(top[:, None], 4, axis=1), rtol=1e-3)
    # and the planned revenue is the frontier evaluated at the planned cost (the epigraph is exact)
    for g in range(3):
        c = data.u_min[g] + np.concatenate([[0], np.cumsum(data.widths[g])])
        r = np.concatenate([[0], np.cumsum(data.widths[g] * data.slopes[g])])
        np.testing.assert_allclose(planned[g], np.interp(sol.u[g], c, r), atol=1e-4)
