"""Disturbance and spike settings at the edge of their ranges: named, never an overflow."""
import warnings

import numpy as np
import pytest

from mpc_balancer.sim.disturbances import MAX_FACTOR, BurstSpec, Disturbances
from mpc_balancer.sim.scenarios import spike_trace


@pytest.mark.parametrize("spec", ["1440,1000,1440", "100,50-100,600"])
def test_overlapping_bursts_multiply_up_to_the_cap_not_to_infinity(spec):
    """Many long bursts a day overlap: their factors multiplied past the float range and the run
    failed with numpy's 'lam value too large' (and an overflow RuntimeWarning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = Disturbances(BurstSpec.parse(spec), None, seed=0).multiplier(144, 60.0, 12)
    assert np.all(np.isfinite(m)) and m.max() == MAX_FACTOR and m.min() >= 1.0


def test_a_few_bursts_are_not_capped():
    d = Disturbances(BurstSpec.parse("10,3-6,1-5"), None, seed=3)
    m = d.multiplier(1440, 60.0, 12)
    peak = max(f for kind, _, _, f in d.events(1440 * 60.0))
    assert 3.0 <= m.max() <= peak * peak < MAX_FACTOR


@pytest.mark.parametrize("factor", [0.5, 1e300, 1001.0])
def test_spike_factor_outside_one_to_the_cap_is_named(factor):
    """0.5 ran as a 'spike' whose metrics read 0 ticks to recover while the load peaked at 6.5 x C_m
    when the traffic came back; 1e300 ran into the traffic's overflow, named as a row of a trace."""
    with pytest.raises(ValueError, match=r"--factor must be in \[1, 1000\] .*for a drop or an outage, use --outages"):
        spike_trace(factor)
    assert spike_trace(1000.0).series.max() == pytest.approx(1e6 * 0.11 * 1000 * 1.1, rel=0.01)
