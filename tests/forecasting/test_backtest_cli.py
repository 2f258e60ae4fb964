"""Rolling-origin backtest and the ``mpc-balancer forecast backtest`` command."""
import json

import numpy as np
import pytest

from forecasting import SeasonalNaive, backtest
from mpc_balancer.cli import main


def test_backtest_seasonal_naive_matches_hand_computation(make_traffic):
    y = make_traffic(days=10, seed=7)
    r = backtest(y, lambda: SeasonalNaive("daily"), horizon=3, test_days=1, train_days=5, origin_every=5)
    v = y.to_numpy()
    S, n = 24, len(v)
    origins = np.arange(n - S, n - 3 + 1, 5)
    err = [abs(v[o + k] - v[o + k - S]) for o in origins for k in range(3)]
    hist = v[n - S - 5 * S:n - S]
    scale = np.mean(np.abs(hist[S:] - hist[:-S]))
    assert r.metrics["mase"] == pytest.approx(np.mean(err) / scale)
    assert r.forecasts["mean"].shape == (len(origins), 3)
    assert 0 <= r.metrics["coverage_80"] <= r.metrics["coverage_95"] <= 1


def test_cli_backtest_writes_json(tmp_path, capsys, make_traffic):
    y = make_traffic(days=20, seed=8)
    csv = tmp_path / "trace.csv"
    y.rename("requests").to_frame().rename_axis("timestamp").to_csv(csv)
    out = tmp_path / "bt.json"
    rc = main(["forecast", "backtest", "--trace", str(csv), "--resample", "1h", "--horizon", "6",
               "--models", "sarima,seasonal_naive", "--test-days", "2", "--json", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["trace"] == str(csv) and rep["freq"] == "1h" and rep["horizon"] == 6 and rep["season_length"] == 24
    for m in ("sarima", "seasonal_naive"):
        for k in ("mase", "smape", "pinball", "coverage_80", "coverage_95", "fit_s", "predict_ms_median"):
            assert isinstance(rep["models"][m][k], float)
    assert "seasonal_naive" in capsys.readouterr().out


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    rc = main(["forecast", "backtest", "--trace", "nasa", "--models", "prophet"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "unknown model 'prophet'" in err and len(err.splitlines()) == 1
    bad = tmp_path / "ev.csv"
    bad.write_text("start,end,name\n2024-01-01,oops,a\n")
    assert main(["forecast", "backtest", "--trace", "nasa", "--events", str(bad)]) == 2
    assert "row 2: column 'end'" in capsys.readouterr().err


def test_cli_backtest_warns_when_no_event_falls_in_its_span(tmp_path, capsys, make_traffic, monkeypatch):
    """Events none of which falls in the test window or the training history before it were read
    and had no effect, without a word; a calendar reaching beyond the span is fine."""
    import forecasting.report

    def stop(*a, **k):  # the warning comes before the backtest runs
        raise ValueError("stopped before the backtest")
    monkeypatch.setattr(forecasting.report, "compare_models", stop)
    csv = tmp_path / "trace.csv"
    make_traffic(days=20, seed=8).rename("requests").to_frame().rename_axis("timestamp").to_csv(csv)  # 2024-01-01 .. 01-20
    ev = tmp_path / "ev.csv"
    argv = ["forecast", "backtest", "--trace", str(csv), "--resample", "1h", "--models", "sarima", "--test-days", "2",
            "--train-days", "5", "--events", str(ev)]
    for rows, warned in (("2020-01-01,2020-01-02,a\n", True),
                         ("2024-01-02,2024-01-03,a\n", True),    # before the 5 training days
                         ("2024-01-02,2024-01-03,a\n2024-01-17,2024-01-18,b\n2025-01-01,2025-01-02,c\n", False)):
        ev.write_text("start,end,name\n" + rows)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert ("warning: --events" in err) == warned, err
        if warned:
            n = rows.count("\n")
            assert f"none of its {n} event" in err and "2024-01-14 00:00:00 .. 2024-01-21 00:00:00" in err
