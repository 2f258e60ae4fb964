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
