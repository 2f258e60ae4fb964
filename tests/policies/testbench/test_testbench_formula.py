import numpy as np
import pytest

from policies.testbench.stats import cost_per_request, mad_keep, summarise


def test_paper_formula():
    # 50% of 2 machines x 8 cores busy at 1000 QPS -> 8 core-seconds per 1000 requests
    assert cost_per_request(0.5, 2, 8, 1000.0) == pytest.approx(0.008)
    assert cost_per_request(0.0, 1, 1, 10.0) == 0.0
    # doubling the rate at the same utilisation halves the cost per request
    assert cost_per_request(0.3, 1, 4, 200.0) == pytest.approx(cost_per_request(0.3, 1, 4, 100.0) / 2)


@pytest.mark.parametrize("args", [(0.5, 1, 1, 0.0), (0.5, 0, 1, 10.0), (0.5, 1, 0, 10.0), (-0.1, 1, 1, 10.0)])
def test_formula_rejects_bad_inputs(args):
    with pytest.raises(ValueError):
        cost_per_request(*args)


def test_mad_keep_drops_far_outliers_only():
    x = np.r_[np.linspace(0.9, 1.1, 50), 10.0]
    keep = mad_keep(x, 5.0)
    assert keep[:50].all() and not keep[50]
    assert mad_keep([1.0, 1.0, 1.0, 7.0], 5.0).all()  # MAD = 0: keep everything


def test_summarise():
    s = summarise([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and s["cv"] == pytest.approx(0.5)
