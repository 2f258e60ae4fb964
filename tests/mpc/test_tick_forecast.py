import numpy as np
import pandas as pd
import pytest

from mpc_balancer.cli import main
from mpc_balancer.forecast import TickForecaster
from mpc_balancer.scenarios import spike_metrics, spike_trace


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


def test_spike_test_cli_runs_pid(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["spike-test", "--controllers", "pid", "--duration", "10", "--json", str(out)]) == 0
    import json

    d = json.loads(out.read_text())
    assert set(d["controllers"]["pid"]) >= {"peak_load", "ticks_over_cm", "ticks_to_recover"}
    assert "ticks to recover" in capsys.readouterr().out


def test_tune_rejects_bad_horizons():
    with pytest.raises(ValueError, match="--horizons must be"):
        from mpc_balancer.cli.scenarios import tune
        from argparse import Namespace

        tune(Namespace(horizons="5,x", trace="elb", days=0.1, seed=0, objective="revenue", jobs=1, json=None))
