"""The ``mtorl`` command group: train writes a bundle, evaluate writes the documented JSON."""
import argparse
import json

import numpy as np
import pytest

from mpc_balancer.cli import mtorl as cli
from policies.offline import AdEnvironment


def _run(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def journey_csv(tmp_path_factory):
    j = AdEnvironment(n_users=120, horizon=6, seed=5).generate()
    rows = []
    for u in range(j.n_users):
        for t in range(j.horizon):
            rows.append(f"{u},{t},{j.actions[u, t]},{j.rewards[u, t]},{j.costs[u, t]},"
                        + ",".join(f"{v:.5f}" for v in j.states[u, t]))
    p = tmp_path_factory.mktemp("d") / "journeys.csv"
    header = "user_id,step,channel,reward,cost," + ",".join(j.state_columns)
    p.write_text(header + "\n" + "\n".join(rows) + "\n")
    return p


def test_train_writes_bundle(journey_csv, tmp_path, capsys):
    assert _run(["mtorl", "train", "--data", str(journey_csv), "--out", str(tmp_path / "m"),
                 "--max-epochs", "1"]) == 0
    assert (tmp_path / "m" / "model.npz").exists() and (tmp_path / "m" / "model.json").exists()
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert 0 <= metrics["channel_auc"] <= 1


def test_evaluate_json_schema(journey_csv, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert _run(["mtorl", "evaluate", "--data", str(journey_csv), "--seeds", "1",
                 "--max-epochs", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["data"] == str(journey_csv)
    assert set(r["methods"]) == {"behaviour", "behaviour_cloning", "decision_transformer", "cql", "mtorl"}
    assert r["value_estimator"] == "direct_method"
    for row in r["methods"].values():
        assert set(row) == {"channel_auc", "macro_f1", "value_per_budget_same", "budget_used_pct_same",
                            "value_per_budget_own", "budget_used_pct_own"}
        assert isinstance(row["channel_auc"], float)
        for k in ("budget_used_pct_same", "budget_used_pct_own"):
            assert 0 < row[k] <= 100 + 1e-6
    # methods without a value model of their own use the shared allocator in both tables
    for m in ("behaviour", "behaviour_cloning", "decision_transformer"):
        assert r["methods"][m]["value_per_budget_same"] == r["methods"][m]["value_per_budget_own"]
    assert set(r["mtorl_wins"]["value_per_budget_own"]) == {
        "behaviour", "behaviour_cloning", "decision_transformer", "cql"}


def test_evaluate_sim_uses_true_model(tmp_path):
    out = tmp_path / "s.json"
    assert _run(["mtorl", "evaluate", "--data", "sim", "--seeds", "1", "--max-epochs", "1",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["value_estimator"] == "sim"
    oracle = r["reference"]["oracle_value_per_budget"]
    for row in r["methods"].values():
        assert 0 < row["value_per_budget_same"] <= oracle + 1e-9


def test_diagnose_prints_and_writes(journey_csv, tmp_path, capsys):
    out = tmp_path / "d.json"
    assert _run(["mtorl", "diagnose", "--data", str(journey_csv), "--no-probe", "--window", "4",
                 "--windows", "200", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "channel shares" in text and "per-user chi-square" in text and "memoriser" in text
    d = json.loads(out.read_text())
    assert d["n_users"] == 120 and np.isclose(sum(d["channel_shares"]), 1.0)
    assert d["window_split"]["window"] == 4
    assert _run(["mtorl", "diagnose", "--data", str(journey_csv), "--no-probe", "--window", "7"]) == 0
    assert "skipped: the longest journey has 6 exposures" in capsys.readouterr().out


def test_user_errors_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="--seeds"):
        _run(["mtorl", "evaluate", "--seeds", "0"])
    with pytest.raises(FileNotFoundError, match="no such file"):
        _run(["mtorl", "evaluate", "--data", str(tmp_path / "nope.csv"), "--seeds", "1"])
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,channel,x\n1,0,0.5\n")
    with pytest.raises(ValueError, match="missing column 'reward'"):
        _run(["mtorl", "train", "--data", str(bad), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="missing column 'reward'"):
        _run(["mtorl", "diagnose", "--data", str(bad)])
    with pytest.raises(ValueError, match="--patience"):
        _run(["mtorl", "evaluate", "--patience", "0"])


def test_standalone_main_reports_one_line(tmp_path, capsys):
    assert cli.main(["evaluate", "--seeds", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seeds" in err[0]
