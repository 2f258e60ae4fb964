"""The backtest report (forecasting.report), called as a library."""
import numpy as np
import pytest

from forecasting import SeasonalNaive, backtest
from forecasting.report import MODELS, compare_models, format_report, make_forecaster


def test_report_holds_each_models_own_backtest(make_traffic):
    y = make_traffic(days=12, seed=3)
    report, results = compare_models(y, ["seasonal_naive", "seasonal_naive_weekly"], horizon=4, test_days=2,
                                     train_days=9, label="synthetic", freq="1h")
    assert report["trace"] == "synthetic" and report["freq"] == "1h" and report["horizon"] == 4
    assert report["season_length"] == 24 and report["refit_every"] == 48
    direct = backtest(y, lambda: SeasonalNaive("daily"), horizon=4, test_days=2, train_days=9)
    for k, v in direct.metrics.items():  # deterministic numpy on the same inputs: the same figures
        if k not in ("fit_s", "predict_ms_median"):
            assert report["models"]["seasonal_naive"][k] == v, k
    np.testing.assert_array_equal(results["seasonal_naive"].forecasts["mean"], direct.forecasts["mean"])
    # the weekly model looks back 7 days, the daily one 1: different forecasts, same actuals
    np.testing.assert_array_equal(results["seasonal_naive_weekly"].actual, direct.actual)
    assert not np.array_equal(results["seasonal_naive_weekly"].forecasts["mean"], direct.forecasts["mean"])
    table = format_report(report).splitlines()
    assert len(table) == 4 and table[2].startswith("seasonal_naive ") and table[3].startswith("seasonal_naive_weekly")


@pytest.mark.parametrize("kw,needle", [({"models": ["prophet"]}, "models: unknown model 'prophet'"),
                                       ({"models": []}, "models is empty"),
                                       ({"horizon": 0}, "must be >= 1"),
                                       ({"test_days": 0}, "test_days and train_days must be > 0")])
def test_bad_settings_are_named_before_any_model_runs(make_traffic, kw, needle):
    y = make_traffic(days=4)
    with pytest.raises(ValueError, match=needle):
        compare_models(y, **({"models": ["seasonal_naive"]} | kw))


def test_every_named_model_is_built_fresh():
    for name in MODELS:
        make = make_forecaster(name, horizon=6)
        assert make() is not make()
