import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc_balancer.cli import main
from mpc_balancer.forecast import TickForecaster, column_quantiles
from mpc_balancer.sim.scenarios import spike_events, spike_metrics, spike_trace


def history(days=3, level=1000.0):
    t = pd.date_range("2024-01-01", periods=days * 1440, freq="1min")
    h = t.hour + t.minute / 60
    return level * (1 + 0.3 * np.sin(2 * np.pi * (h - 8) / 24)), t


def test_forecast_shapes_nowcast_and_bands():
    q, t = history()
    fc = TickForecaster(model="seasonal_naive").fit(q, t, 60.0)
    nxt = t[-1] + pd.Timedelta("1min")
    fc.observe(nxt, q[-1440] * 1.2)  # 20% above yesterday's same minute
    f = fc.predict(30)
    assert f["mean"].shape == f["hi"].shape == (30,)
    assert np.all(f["hi"] >= f["mean"]) and np.all(f["mean"] >= 0)
    # the nowcast carries the 20% surprise into the first steps and decays it over the horizon
    base = q[-1440 + 1: -1440 + 31]
    ratio = f["mean"] / base
    assert ratio[0] == pytest.approx(1.2, rel=0.03)
    assert ratio[-1] < ratio[0]


def test_announced_event_multiplies_the_forecast(tmp_path):
    q, t = history()
    start = t[-1] + pd.Timedelta("3min")
    ev = tmp_path / "ev.csv"
    ev.write_text(f"start,end,name,expected_multiplier\n{start},{start + pd.Timedelta('10min')},promo,8\n")
    plain = TickForecaster(model="seasonal_naive").fit(q, t, 60.0)
    told = TickForecaster(model="seasonal_naive", events=str(ev)).fit(q, t, 60.0)
    a, b = plain.predict(20)["mean"], told.predict(20)["mean"]
    # steps 3..12 after the last observation are inside the event
    np.testing.assert_allclose(b[2:12] / a[2:12], 8.0, rtol=1e-6)
    np.testing.assert_allclose(b[:2], a[:2]) and np.testing.assert_allclose(b[12:], a[12:])


def test_forecaster_rejects_bad_input():
    q, t = history()
    fc = TickForecaster(model="seasonal_naive").fit(q, t, 60.0)
    with pytest.raises(ValueError, match="observation qps must be finite and >= 0"):
        fc.observe(t[-1] + pd.Timedelta("1min"), float("nan"))
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        fc.predict(0)
    with pytest.raises(ValueError, match="forecast model must be one of"):
        TickForecaster(model="prophet")


def test_spike_trace_and_metrics():
    tr = spike_trace(factor=8, duration_min=30)
    s = tr.series
    before, during = s["2024-01-04 13:59"], s["2024-01-04 14:00"]
    assert during / before == pytest.approx(8.0, rel=1e-4)  # the daily cycle moves one minute a little
    idx = pd.date_range("2024-01-04 13:58", periods=6, freq="1min")
    log = pd.DataFrame({"true_load_a": [0.8, 0.8, 3.0, 1.2, 0.85, 0.8]}, index=idx)
    m = spike_metrics(log, ["a"], np.array([0.9]))
    assert m["peak_load"] == 3.0 and m["ticks_over_cm"] == 2 and m["ticks_to_recover"] == 2


def test_spike_calendar_is_the_announced_event():
    from forecasting import parse_events

    cal = spike_events(8.0, 30)
    as_csv = parse_events("start,end,name,expected_multiplier\n2024-01-04 14:00,2024-01-04 14:30,spike,8\n")
    assert cal.events == as_csv.events
    t = pd.date_range("2024-01-04 13:59", periods=33, freq="1min").asi8
    np.testing.assert_array_equal(cal.multiplier(t), np.r_[1.0, np.full(30, 8.0), 1.0, 1.0])


def test_spike_test_cli_runs_pid(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["spike-test", "--controllers", "pid", "--duration", "10", "--json", str(out)]) == 0
    import json

    d = json.loads(out.read_text())
    assert set(d["controllers"]["pid"]) >= {"peak_load", "ticks_over_cm", "ticks_to_recover"}
    assert "ticks to recover" in capsys.readouterr().out


@pytest.mark.parametrize("horizons,needle", [("5,x", "--horizons must be comma-separated integers"),
                                              ("0,5", "--horizons must be integers >= 1")])
def test_tune_rejects_bad_horizons(horizons, needle, tmp_path, capsys):
    from mpc_balancer.cli import main

    assert main(["tune", "--horizons", horizons, "--trace", "elb", "--days", "0.1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_band_is_calibrated_warm_on_the_held_out_end_of_history():
    """fit() holds out the last ``warm_calib`` ticks, fits on the rest and replays them as live
    operation would; the first live band is the 80% quantile of those replayed one-step errors."""
    q, t = history(days=3)
    q = q * np.exp(np.random.default_rng(0).normal(0, 0.05, len(q)))
    n = 240
    warm = TickForecaster(model="seasonal_naive", warm_calib=n, aci_gain=0.0).fit(q, t, 60.0)
    # the oracle: the same replay by hand on a forecaster fitted without the held-out ticks
    cold = TickForecaster(model="seasonal_naive", warm_calib=0, aci_gain=0.0).fit(q[:-n], t[:-n], 60.0)
    errs, prev = [], cold.predict(96)["mean"]
    for ti, qi in zip(t[-n:], q[-n:]):
        cold.observe(ti, qi)
        errs.append(qi / prev[0] - 1)
        prev = cold.predict(96)["mean"]
    assert warm.margin_[0] == pytest.approx(max(np.quantile(errs, 0.8), 0.0), rel=1e-9)
    f = warm.predict(30)
    np.testing.assert_allclose(f["hi"] / f["mean"] - 1, warm.margin_[:30], rtol=1e-9)
    assert 0.03 < warm.margin_[0] < 0.12  # 5% log-normal noise on today's and yesterday's minute
    # without the warm start there is nothing scored yet: the model's own band
    plain = TickForecaster(model="seasonal_naive", warm_calib=0).fit(q, t, 60.0)
    assert plain.margin_ is None
    # steps beyond the calibrated horizon fall back to the model's band, never to no band
    g, h = warm.predict(120), plain.predict(120)
    np.testing.assert_allclose((g["hi"] / g["mean"])[100:], (h["hi"] / h["mean"])[100:], rtol=1e-9)
    assert np.all(g["hi"] >= g["mean"])


def test_warm_calibration_needs_two_days_of_history_left():
    q, t = history(days=3)
    q, t = q[-2 * 1440:], t[-2 * 1440:]
    fc = TickForecaster(model="seasonal_naive", warm_calib=360).fit(q, t, 60.0)
    assert fc.margin_ is None  # too short to hold out: the model's band until live errors are scored
    with pytest.raises(ValueError, match="warm_calib must be an integer >= 0"):
        TickForecaster(warm_calib=-1)
    with pytest.raises(ValueError, match="calib_horizon must be an integer >= 1, got 0"):
        TickForecaster(calib_horizon=0)


def test_adaptive_band_miss_rate_telescopes_to_the_level_moved():
    """ACI's exact identity: over the scored ticks the one-step miss rate of the issued bands
    minus 20% equals (level_T - level_0) / (gain T) while the level stays inside its clip range;
    after a shift to 3x noisier traffic the adaptive band covers ~80% where the plain rolling
    quantile (same window) under-covers."""
    q, t = history(days=4)
    rng = np.random.default_rng(1)
    noise = np.where(np.arange(len(q)) < len(q) - 1440, 0.03, 0.09)  # the last day is 3x noisier
    q = q * np.exp(rng.normal(0, noise))
    split = len(q) - 1440
    cover = {}
    for gain in (0.0, 0.02):
        f = TickForecaster(model="seasonal_naive", warm_calib=240, aci_gain=gain).fit(q[:split], t[:split], 60.0)
        level0 = f.level_[0]
        hi = f.predict(30)["hi"][0]
        misses, levels = [], []
        for ti, qi in zip(t[split:], q[split:]):
            misses.append(qi > hi)
            f.observe(ti, qi)
            levels.append(f.level_[0])
            hi = f.predict(30)["hi"][0]
        levels = np.array(levels)
        cover[gain] = 1 - np.mean(misses)
        if gain > 0:
            inside = (levels > 0.5) & (levels < 1.0)
            assert inside.all(), "the identity holds while the level is not clipped"
            assert np.mean(misses) - 0.2 == pytest.approx((levels[-1] - level0) / (gain * len(misses)), abs=1e-12)
    assert cover[0.0] < 0.75  # the plain window quantile lags the shift
    assert abs(cover[0.02] - 0.8) < 0.03


@pytest.mark.parametrize("model", ["seasonal_naive", "given"])
def test_checkpoint_round_trip_of_a_seasonal_naive_slow_model(model):
    """A TickForecaster over SeasonalNaive (named, or a model instance) restores its checkpoint and
    forecasts as the original (SeasonalNaive had no next_timestamp, so this raised AttributeError)."""
    from forecasting import SeasonalNaive

    t = pd.date_range("2024-01-01", periods=4 * 1440, freq="1min")
    q = 1000 + 300 * np.sin(np.arange(len(t)) / 1440 * 2 * np.pi)
    make = (lambda: TickForecaster(model="seasonal_naive")) if model == "seasonal_naive" else \
        (lambda: TickForecaster(model=SeasonalNaive("daily")))
    f = make().fit(q, t, 60)
    for k in range(7):
        f.observe(t[-1] + pd.Timedelta(minutes=k + 1), 1000.0 + 10 * k)
        f.predict(10)
    g = make().fit(q, t, 60)
    g.load_state_dict(json.loads(json.dumps(f.state_dict())))
    a, b = f.predict(10), g.predict(10)
    np.testing.assert_array_equal(a["mean"], b["mean"])
    np.testing.assert_array_equal(a["hi"], b["hi"])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_band_quantiles_in_one_sort_are_numpys_quantile_per_step(data):
    """The calibrated margin's quantiles (all horizon steps in one sort) are np.quantile's, bit for
    bit: values with ties, NaNs (unscored ticks), levels at and between the ends."""
    m = data.draw(st.integers(1, 6))
    n = data.draw(st.integers(1, 40))
    vals = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.sampled_from([0.0, 0.5, -0.25]), st.just(np.nan))
    E = np.array(data.draw(st.lists(vals, min_size=n * m, max_size=n * m)), dtype=float).reshape(n, m)
    E[0, np.isnan(E).all(axis=0)] = 1.0  # every step has a value
    levels = np.array(data.draw(st.lists(st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.5, 0.8, 1.0])),
                                         min_size=m, max_size=m)))
    expect = [np.quantile(E[:, k][~np.isnan(E[:, k])], levels[k]) for k in range(m)]
    np.testing.assert_array_equal(column_quantiles(E, levels), expect)


class Unmemoised(TickForecaster):
    """The reference: the slow model asked afresh on every tick."""

    def _model_forecast(self, steps: int) -> dict:
        return self.model_.predict(steps)


def test_the_slow_models_forecast_reused_between_buckets_is_the_fresh_one():
    """Between two buckets the slow model's forecast is reused; every tick's forecast equals the
    fresh one bit for bit across fed buckets, a telemetry gap (skipped buckets), background refits
    swapped in, a changing horizon and a checkpoint restored into a forecaster holding another state."""
    q, t = history(days=3)
    kw = dict(history_days=2.5, refit_every=24, warm_calib=60, calib_horizon=12)
    fast, ref = TickForecaster(**kw).fit(q, t, 60.0), Unmemoised(**kw).fit(q, t, 60.0)
    rng = np.random.default_rng(4)
    times = [t[-1] + pd.Timedelta(minutes=k + 1) for k in range(400)]
    times = times[:200] + times[260:]  # an hour without telemetry: buckets skipped
    for k, now in enumerate(times):
        qps = 1000.0 * (1 + 0.3 * np.sin(2 * np.pi * (now.hour + now.minute / 60 - 8) / 24)) * rng.uniform(0.95, 1.05)
        fast.observe(now, qps)
        ref.observe(now, qps)
        h = 30 if k % 7 else 45
        a, b = fast.predict(h), ref.predict(h)
        np.testing.assert_array_equal(a["mean"], b["mean"])
        np.testing.assert_array_equal(a["hi"], b["hi"])
        if k == 150:
            state = json.loads(json.dumps(fast.state_dict()))
    restored = TickForecaster(**kw).fit(q, t, 60.0)
    restored.predict(30)  # its forecast of the fitted state, to be forgotten on restore
    restored.load_state_dict(state)
    again = Unmemoised(**kw).fit(q, t, 60.0)
    again.load_state_dict(state)
    for h in (30, 30, 12):
        np.testing.assert_array_equal(restored.predict(h)["hi"], again.predict(h)["hi"])
