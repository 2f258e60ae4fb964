"""The response curve refreshed near the operating point between full measurements (issue 20):
against the full measurement, exactly where the two must agree, and in the MPC's schedule."""
import numpy as np
import pytest

import mpc_balancer.controllers.mpc as mpc_module
from mpc_balancer.controllers import make_controller
from mpc_balancer.frontier import default_grid, measure_response, measure_response_near
from mpc_balancer.response import Response
from mpc_balancer.sim.simulator import Simulator
from mpc_balancer.traces import load_trace
from mpc_balancer.traffic import Traffic
from policies.cascade import Cascade
from policies.runtime import PolicyRuntime

CAS = Cascade()
POLICY = PolicyRuntime.load("pretrained", cost=CAS.cost)
GRID = default_grid(1e-5, 10.0, 12)


def sample(seed: int, n: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = CAS.sample_features(n, rng.uniform(0, 24, n), rng)
    x.setflags(write=False)
    return x


# lambdas inside the grid, on a grid point, and at both ends (the window shifts inward)
LAMS = [np.array([0.003, 0.04, 0.2]), np.array([GRID[4], 0.01, GRID[7]]), np.array([GRID[0], 0.5, GRID[-1]])]


@pytest.mark.parametrize("lam", LAMS)
@pytest.mark.parametrize("points", [1, 2, 6])
def test_near_refresh_on_the_curves_own_sample_is_the_full_curve_bit_for_bit(lam, points):
    evaluate = Response(POLICY, sample(1), max_requests=None).evaluate_many
    full = measure_response(evaluate, lam, GRID)
    near = measure_response_near(evaluate, lam, full, points)
    np.testing.assert_array_equal(near.cost, full.cost)
    np.testing.assert_array_equal(near.revenue, full.revenue)
    np.testing.assert_array_equal(near.lam_grid, full.lam_grid)


@pytest.mark.parametrize("lam", LAMS)
def test_near_refresh_of_a_uniformly_rescaled_sample_is_its_full_curve(lam):
    """A sample that costs twice as much and earns half at every lambda: scaling the far points by
    the near points' ratio recovers its whole curve (powers of two: exactly)."""
    evaluate = Response(POLICY, sample(2), max_requests=None).evaluate_many

    def rescaled(lams):
        c, r = evaluate(lams)
        return 2.0 * c, 0.5 * r

    old = measure_response(evaluate, lam, GRID)
    near = measure_response_near(rescaled, lam, old, 2)
    full = measure_response(rescaled, lam, GRID)
    np.testing.assert_array_equal(near.cost, full.cost)
    np.testing.assert_array_equal(near.revenue, full.revenue)


@pytest.mark.parametrize("lam", LAMS)
@pytest.mark.parametrize("points", [1, 2])
def test_near_refresh_measures_the_points_around_each_lambda_the_others_held(lam, points):
    asked = []
    evaluate = Response(POLICY, sample(3), max_requests=None).evaluate_many

    def recording(lams):
        asked.append(np.array(lams))
        return evaluate(lams)

    old = measure_response(evaluate, lam, GRID)
    new = measure_response_near(recording, lam, old, points)
    (lams,) = asked  # one policy call
    assert lams.shape == (3 * 2 * points, 3)
    for g in range(3):
        rows = lams[g * 2 * points:(g + 1) * 2 * points]
        others = np.delete(np.arange(3), g)
        np.testing.assert_array_equal(rows[:, others], np.broadcast_to(lam[others], (2 * points, 2)))
        j = np.searchsorted(GRID, rows[:, g])
        np.testing.assert_array_equal(GRID[j], rows[:, g])  # grid points ...
        np.testing.assert_array_equal(np.diff(j), 1)  # ... contiguous ...
        assert rows[0, g] <= max(lam[g], GRID[0]) and rows[-1, g] >= min(lam[g], GRID[-1])  # ... around lambda
    np.testing.assert_array_equal(new.cost, old.cost)  # the same sample: the same curve


def test_far_points_keep_their_shape_and_near_points_are_the_new_samples():
    lam = LAMS[0]
    old_eval = Response(POLICY, sample(4), max_requests=None).evaluate_many
    new_eval = Response(POLICY, sample(5), max_requests=None).evaluate_many
    old = measure_response(old_eval, lam, GRID)
    near = measure_response_near(new_eval, lam, old, 2)
    fresh = measure_response(new_eval, lam, GRID)
    for g in range(3):
        j = np.flatnonzero(near.cost[g] == fresh.cost[g])
        assert len(j) >= 4  # the re-measured points are the new sample's, bit for bit
        far = np.setdiff1d(np.arange(len(GRID)), j)
        ratio = near.cost[g, far] / old.cost[g, far]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)  # one factor: the old shape
        np.testing.assert_allclose(ratio[0], fresh.cost[g, j].sum() / old.cost[g, j].sum(), rtol=1e-12)


@pytest.mark.parametrize("curve_every, local_points", [(3, 2), (3, 0), (1, 2)])
def test_the_mpc_measures_the_whole_curve_every_curve_every_ticks_and_near_it_in_between(monkeypatch, curve_every,
                                                                                       local_points):
    calls = []
    full, near = mpc_module.measure_response, mpc_module.measure_response_near
    monkeypatch.setattr(mpc_module, "measure_response", lambda *a: calls.append("full") or full(*a))
    monkeypatch.setattr(mpc_module, "measure_response_near", lambda *a: calls.append("near") or near(*a))
    sim = Simulator(Traffic(load_trace("nasa"), period_s=60), cascade=CAS, n_requests=300, days=0.02, seed=3)
    ctrl = make_controller("mpc", curve_every=curve_every, local_points=local_points)
    run = sim.run(ctrl, POLICY)
    assert ctrl.ticks_ == len(run.log) > 20 and (run.log["acted"] == "mpc").all()
    expect = ["full" if k % curve_every == 0 else "near" for k in range(ctrl.ticks_)]
    if local_points == 0:
        expect = [c for c in expect if c == "full"]
    assert calls == expect
