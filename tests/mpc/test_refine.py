"""The MPC's refinement (``MpcController._refine``): a cluster whose plan takes its whole curve is only
ever raised, never sunk below the plan's lambda."""
import numpy as np

from mpc_balancer.controllers.mpc import MpcController, MpcSettings
from mpc_balancer.frontier import default_grid


def refiner(cost):
    """An MpcController with only what ``_refine`` reads: the grid, the settings and the sample's cost."""
    c = MpcController.__new__(MpcController)
    c.settings, c.grid_ = MpcSettings(), default_grid(1e-5, 10.0, 12)
    c._sample_cost = cost
    return c


def saturating(lam):
    """Cluster 0's cost stops growing below lambda 0.01 (the top of its curve); a lower lambda on it
    still raises cluster 1's cost (joint actions)."""
    lam = np.asarray(lam, dtype=float)
    c0 = 1.0 / np.maximum(lam[0], 0.01)
    c1 = 1.0 / lam[1] + 50.0 / np.maximum(lam[0], 1e-4)
    return np.array([c0, c1])


def test_a_cluster_at_the_top_of_its_curve_keeps_the_plans_lambda_while_within_its_bound():
    lam = np.array([0.01, 0.1])
    bound = np.array([500.0, saturating(lam)[1]])  # cluster 0: its load cap, far above the 100 it can cost
    c = refiner(saturating)
    sunk = c._refine(lam, bound)
    assert sunk[0] < lam[0]  # searched downward too, it sinks where its own cost is flat
    kept = c._refine(lam, bound, np.array([True, False]))
    assert kept[0] == lam[0]
    assert saturating(kept)[1] <= bound[1] * (1 + 1e-9)


def test_a_cluster_at_the_top_of_its_curve_is_raised_when_over_its_bound():
    lam = np.array([0.01, 0.1])
    bound = np.array([60.0, 1e9])  # cluster 0 costs 100 at the plan's lambda: over its bound
    out = refiner(saturating)._refine(lam, bound, np.array([True, False]))
    assert out[0] > lam[0] and saturating(out)[0] <= 60.0
