"""Metrics against hand-computed values."""
import numpy as np
import pytest

from forecasting import coverage, mase, mase_scale, pinball, smape
from forecasting.metrics import band_quantiles


def test_mase_scale_and_mase():
    hist = np.array([1.0, 2, 3, 2, 4, 6])  # season 3: |2-1|,|4-2|,|6-3| -> mean 2
    assert mase_scale(hist, 3) == pytest.approx(2.0)
    assert mase([1, 2, 3], [2, 2, 1], scale=2.0) == pytest.approx((1 + 0 + 2) / 3 / 2)
    assert mase([1, np.nan, 3], [2, 9, 3], scale=1.0) == pytest.approx(0.5)  # NaN actual ignored


def test_smape():
    # 2|100-50|/150 = 2/3, 2|0-0|/0 := 0, 2|10-30|/40 = 1
    assert smape([100, 0, 10], [50, 0, 30]) == pytest.approx(100 * (2 / 3 + 0 + 1) / 3)


def test_pinball():
    y = np.array([10.0, 20.0])
    # q=0.9, f=15: d=-5 -> (0.9-1)(-5)=0.5 ; d=5 -> 0.9*5=4.5 ; mean 2.5
    # q=0.1, f=15: d=-5 -> 0.9*5=4.5 ; d=5 -> 0.5 ; mean 2.5
    assert pinball(y, {0.9: np.array([15.0, 15.0])}) == pytest.approx(2.5)
    assert pinball(y, {0.9: np.array([15.0, 15]), 0.1: np.array([15.0, 15])}) == pytest.approx(2.5)
    assert pinball(y, {0.5: y}) == 0.0


def test_coverage_and_band_quantiles():
    assert coverage([1, 5, 10, 3], [0, 0, 0, 4], [2, 6, 9, 5]) == pytest.approx(0.5)
    assert band_quantiles((80, 95)) == {0.1: "lo-80", 0.9: "hi-80", 0.025: "lo-95", 0.975: "hi-95"}
