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
        # the grid points from `points` below lambda's slot (lambda on a point counts as above it),
        # shifted inward at the grid's ends
        first = min(max(int(np.searchsorted(GRID, lam[g])) - points, 0), len(GRID) - 2 * points)
        np.testing.assert_array_equal(rows[:, g], GRID[first:first + 2 * points])
        inside = GRID[0] < lam[g] < GRID[-1]
        assert not inside or (rows[points - 1, g] < lam[g] <= rows[points, g])
    np.testing.assert_array_equal(new.cost, old.cost)  # the same sample: the same curve


def test_far_points_keep_their_shape_and_meet_the_near_points_as_the_old_curve_did():
    lam = LAMS[0]
    old_eval = Response(POLICY, sample(4), max_requests=None).evaluate_many
    new_eval = Response(POLICY, sample(5), max_requests=None).evaluate_many
    old = measure_response(old_eval, lam, GRID)
    near = measure_response_near(new_eval, lam, old, 2)
    fresh = measure_response(new_eval, lam, GRID)
    for curve_near, curve_old, curve_fresh in ((near.cost, old.cost, fresh.cost), (near.revenue, old.revenue, fresh.revenue)):
        for g in range(3):
            first = int(np.searchsorted(GRID, lam[g])) - 2
            j = np.arange(first, first + 4)
            np.testing.assert_array_equal(curve_near[g, j], curve_fresh[g, j])  # the new sample's, bit for bit
            for side, edge in ((np.arange(first), j[0]), (np.arange(j[-1] + 1, len(GRID)), j[-1])):
                # one factor per side, the edge's: the far points keep the old curve's shape and its step to the window
                np.testing.assert_allclose(curve_near[g, side] / curve_old[g, side],
                                           curve_fresh[g, edge] / curve_old[g, edge], rtol=1e-12)


def test_a_sample_too_far_from_the_last_asks_for_a_full_measurement():
    """A refresh that would scale a curve by a ratio outside [1/2, 2], or by 0 (a window that
    costs nothing), is refused: None, and the MPC measures the whole curve instead."""
    lam = LAMS[0]
    evaluate = Response(POLICY, sample(6), max_requests=None).evaluate_many
    old = measure_response(evaluate, lam, GRID)
    for factor in (0.0, 0.3, 3.0, np.nan):
        def moved(lams, f=factor):
            c, r = evaluate(lams)
            return f * c, r
        assert measure_response_near(moved, lam, old, 2) is None
    assert measure_response_near(lambda lams: (1.9 * evaluate(lams)[0], evaluate(lams)[1]), lam, old, 2) is not None


@pytest.mark.parametrize("curve_every, local_points", [(3, 2), (3, 0), (1, 2)])
def test_the_mpc_measures_the_whole_curve_every_curve_every_ticks_and_near_it_in_between(monkeypatch, curve_every,
                                                                                       local_points):
    calls = []
    full, near = mpc_module.measure_response, mpc_module.measure_response_near
    monkeypatch.setattr(mpc_module, "measure_response", lambda *a: calls.append("full") or full(*a))
    def recording_near(*a):
        out = near(*a)
        calls.append("near" if out is not None else "refused")  # refused: a full measurement follows
        return out

    monkeypatch.setattr(mpc_module, "measure_response_near", recording_near)
    sim = Simulator(Traffic(load_trace("nasa"), period_s=60), cascade=CAS, n_requests=300, days=0.02, seed=3)
    ctrl = make_controller("mpc", curve_every=curve_every, local_points=local_points)
    run = sim.run(ctrl, POLICY)
    assert ctrl.ticks_ == len(run.log) > 20 and (run.log["acted"] == "mpc").all()
    per_tick, k = [], 0
    while k < len(calls):  # one entry per tick: "full", "near", or "refused" then "full"
        n = 2 if calls[k] == "refused" else 1
        per_tick.append(tuple(calls[k:k + n]))
        k += n
    if local_points == 0:
        assert per_tick == [("full",)] * len(range(0, ctrl.ticks_, curve_every))
    else:
        assert len(per_tick) == ctrl.ticks_
        for k, call in enumerate(per_tick):
            assert call == ("full",) if k % curve_every == 0 else call in (("near",), ("refused", "full"))
        assert per_tick.count(("near",)) >= 0.8 * sum(k % curve_every != 0 for k in range(ctrl.ticks_))


def test_a_telemetry_curve_is_refitted_whole_on_every_refresh_tick(monkeypatch):
    from mpc_balancer.telemetry_response import TelemetryResponse

    fits = []
    curve = TelemetryResponse.curve
    monkeypatch.setattr(TelemetryResponse, "curve", lambda self, grid: fits.append(1) or curve(self, grid))
    sim = Simulator(Traffic(load_trace("nasa"), period_s=60), cascade=CAS, n_requests=300, days=0.05, seed=3)
    ctrl = make_controller("mpc", response="telemetry", curve_every=3, local_points=2)
    sim.run(ctrl, POLICY)
    assert ctrl.ticks_ > 20 and len(fits) == ctrl.ticks_  # every tick, though curve_every is 3
