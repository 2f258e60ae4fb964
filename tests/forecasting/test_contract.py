"""The common contract: fit/predict/update shapes, band order, config-only constructors."""
import numpy as np
import pandas as pd
import pytest

from forecasting import Forecast, HybridForecaster, SarimaForecaster, SeasonalNaive

SMALL_NET = dict(hidden=8, epochs=5, lags=6)


def models():
    return [SeasonalNaive("daily"), SeasonalNaive("weekly"), SarimaForecaster(),
            HybridForecaster(horizon=12, **SMALL_NET)]


@pytest.mark.parametrize("model", models(), ids=lambda m: type(m).__name__ + str(getattr(m, "season", "")))
def test_fit_predict_update_shapes_and_band_order(model, traffic):
    assert model.fit(traffic) is model
    for h in (1, 12):
        f = model.predict(h)
        assert isinstance(f, Forecast)
        assert set(f.keys()) == {"mean", "lo-80", "hi-80", "lo-95", "hi-95"}
        for k in f.keys():  # noqa: SIM118 -- a Forecast has keys() and no __iter__
            assert f[k].shape == (h,) and np.isfinite(f[k]).all()
        assert np.all(f["lo-95"] <= f["lo-80"] + 1e-9)
        assert np.all(f["lo-80"] <= f["mean"] + 1e-9)
        assert np.all(f["mean"] <= f["hi-80"] + 1e-9)
        assert np.all(f["hi-80"] <= f["hi-95"] + 1e-9)
        assert np.all(f["lo-95"] >= 0)
    assert f.index[0] == traffic.index[-1] + pd.Timedelta("1h")
    assert model.update(150.0) is model
    f2 = model.predict(12)
    assert f2.index[0] == traffic.index[-1] + pd.Timedelta("2h")
    model.update(np.array([120.0, 130.0, np.nan]))
    assert model.predict(3, level=(50,))["hi-50"].shape == (3,)
    assert list(model.predict(2).to_frame().columns) == ["mean", "lo-80", "hi-80", "lo-95", "hi-95"]


def test_constructors_store_config_only_and_reject_unknown_kwargs():
    m = SarimaForecaster(daily_harmonics=5)
    assert m.daily_harmonics == 5 and not any(k.endswith("_") for k in vars(m))
    for cls in (SeasonalNaive, SarimaForecaster, HybridForecaster):
        with pytest.raises(TypeError):
            cls(not_an_option=1)


def test_seasonal_naive_update_equals_refit(traffic):
    a = SeasonalNaive("daily").fit(traffic.iloc[:-30]).update(traffic.iloc[-30:].to_numpy())
    b = SeasonalNaive("daily").fit(traffic)
    fa, fb = a.predict(30), b.predict(30)
    for k in fa.keys():  # noqa: SIM118 -- a Forecast has keys() and no __iter__
        np.testing.assert_allclose(fa[k], fb[k])
    # the point forecast is literally yesterday
    np.testing.assert_allclose(fb["mean"][:24], traffic.to_numpy()[-24:])


def test_sarima_update_matches_refit_within_tolerance(make_traffic):
    y = make_traffic(days=28, seed=1)
    kw = dict(daily_harmonics=4, weekly_harmonics=2)
    a = SarimaForecaster(**kw).fit(y.iloc[:-12]).update(y.iloc[-12:])
    b = SarimaForecaster(**kw).fit(y)
    np.testing.assert_allclose(a.predict(24)["mean"], b.predict(24)["mean"], rtol=0.03)
    np.testing.assert_allclose(a.predict(24)["hi-95"], b.predict(24)["hi-95"], rtol=0.05)


def test_sarima_update_is_exact_state_filtering(make_traffic):
    """update() on new points == fit-time filtering of the same points with the same parameters."""
    y = make_traffic(days=21, seed=2)
    a = SarimaForecaster(daily_harmonics=4).fit(y.iloc[:-10])
    a.update(y.iloc[-10:])
    b = SarimaForecaster(daily_harmonics=4).fit(y.iloc[:-10])
    for v in y.iloc[-10:]:
        b.update(float(v))
    np.testing.assert_allclose(a.predict(24)["mean"], b.predict(24)["mean"], rtol=1e-12)


def test_refit_every_triggers_refit(traffic):
    m = SarimaForecaster(refit_every=5).fit(traffic.iloc[:-6])
    beta0 = m.beta_.copy()
    m.update(traffic.iloc[-6:-2].to_numpy())
    assert np.array_equal(m.beta_, beta0)
    m.update(traffic.iloc[-2:].to_numpy())
    assert not np.array_equal(m.beta_, beta0) and m.since_refit_ == 0


def test_array_input_with_freq_and_start(traffic):
    a = SarimaForecaster(freq="1h", start=traffic.index[0]).fit(traffic.to_numpy())
    b = SarimaForecaster().fit(traffic)
    np.testing.assert_allclose(a.predict(6)["mean"], b.predict(6)["mean"])


def test_sarima_forecast_tracks_the_daily_cycle(make_traffic):
    y = make_traffic(days=28, seed=3)
    m = SarimaForecaster().fit(y.iloc[:-24])
    err = np.abs(m.predict(24)["mean"] - y.iloc[-24:].to_numpy()).mean()
    naive = np.abs(y.iloc[-48:-24].to_numpy() - y.iloc[-24:].to_numpy()).mean()
    assert err < naive


def test_missing_values_are_skipped(traffic):
    y = traffic.copy()
    y.iloc[100:110] = np.nan
    y = y.drop(y.index[200:205])  # a hole in the index: missing timestamps
    m = SarimaForecaster().fit(y)
    assert np.isfinite(m.predict(24)["mean"]).all()
    assert (~m.observed_).sum() >= 15


def test_hybrid_refit_schedule_and_update_without_refit(traffic):
    m = HybridForecaster(horizon=6, refit_every=4, **SMALL_NET).fit(traffic.iloc[:-5])
    net0 = m.net_
    m.update(traffic.iloc[-5:-2].to_numpy())
    assert m.net_ is net0 and m.since_refit_ == 3  # update alone never retrains
    before = m.predict(6)["mean"]
    m.update(traffic.iloc[-2:].to_numpy())
    assert m.net_ is not net0 and m.since_refit_ == 0
    assert m.sarima_.n_ == len(traffic) and not np.allclose(before, m.predict(6)["mean"])


def test_online_calibration_widens_bands_after_a_level_drop(make_traffic):
    y = make_traffic(days=24, seed=9)
    hist, after = y.iloc[:-48], y.iloc[-48:].to_numpy() * 0.4  # traffic suddenly drops by 60%
    on = HybridForecaster(horizon=6, **SMALL_NET).fit(hist)
    off = HybridForecaster(horizon=6, online_calibration=False, **SMALL_NET).fit(hist)
    lo_before = on._band_offsets(80)[0].copy()
    inside_on = inside_off = 0
    for v in after:
        f_on, f_off = on.predict(1), off.predict(1)
        inside_on += f_on["lo-80"][0] <= v <= f_on["hi-80"][0]
        inside_off += f_off["lo-80"][0] <= v <= f_off["hi-80"][0]
        on.update(v)
        off.update(v)
    assert np.all(on._band_offsets(80)[0] < lo_before)  # lower band edges moved down
    assert inside_on >= inside_off


def test_gaussian_bands_use_the_normal_quantile_of_each_level():
    """The bands' quantile (``ndtri``, the per-tick fast path) is scipy's ``norm.ppf`` bit for bit,
    and the upper edge is the Gaussian's quantile on the log1p scale."""
    from scipy.stats import norm

    from forecasting.result import gaussian_log_forecast

    rng = np.random.default_rng(0)
    mu, sd = rng.uniform(0, 8, 50), rng.uniform(0.01, 1.0, 50)
    levels = (50, 80, 95, 99.5)
    f = gaussian_log_forecast(mu, sd, levels)
    for L in levels:
        z = norm.ppf(0.5 + L / 200.0)
        np.testing.assert_array_equal(f.bands[f"hi-{L:g}"], np.expm1(mu + z * sd))
        np.testing.assert_array_equal(f.bands[f"lo-{L:g}"], np.maximum(np.expm1(mu - z * sd), 0.0))
        below_hi = norm.cdf((np.log1p(f.bands[f"hi-{L:g}"]) - mu) / sd)  # the upper edge's quantile
        np.testing.assert_allclose(below_hi, 0.5 + L / 200.0, rtol=1e-9)
