"""The service's config errors (file, section, key, value) and the per-tick aggregation."""
from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pandas as pd
import pytest

from mpc_balancer.service.aggregate import NodeReport, aggregate
from mpc_balancer.service.config import ConfigError, load_config

from .conftest import write_config


@pytest.mark.parametrize("service, extra, message", [
    ({"lease_s": -1}, "", "[service] lease_s must be a number > 0, got -1"),
    ({"expected_nodes": 1.5}, "", "[service] expected_nodes must be an integer >= 0, got 1.5"),
    ({"safe": "panic"}, "", "[service] safe must be a non-empty string (one of hold_last, lam_max, fixed), got 'panic'"),
    ({"safe": "fixed"}, "", "[service] safe = \"fixed\" needs safe_lam with one value per cluster"),
    ({"safe": "fixed", "safe_lam": {"retrieval": 1.0, "prerank": 1.0, "rank": 99.0}}, "",
     "[service] safe_lam.rank must be a number in [lam_min, lam_max] = [1e-05, 10], got 99.0"),
    ({"colour": "blue"}, "", "[service] unknown keys ['colour']"),
    ({}, "[balancer]\ntime_budget_s = 0\n", "[balancer] time_budget_s must be a number > 0, got 0"),
    ({}, "[extras]\nx = 1\n", "unknown sections ['extras']"),
    ({}, "[policy]\n", "[policy] bundle is required"),
    # the controller's options get the checks of `simulate --config` (mpc_balancer.config)
    ({}, "[controller.options]\ncolour = 1\n", "[controller.options]: unknown key pid.colour (known: kp, ki, kd"),
    ({}, "[controller.options]\nkp = \"high\"\n", "[controller.options]: bad value pid.kp = 'high'"),
    ({}, "[balancer]\nmax_flat_ticks = 2.5\n", "[balancer] max_flat_ticks must be an integer > 0, got 2.5"),
    ({"max_body_bytes": 1000}, "", "[service] max_body_bytes must be an integer >= 16384, got 1000"),
    ({"max_body_bytes": "4MB"}, "", "[service] max_body_bytes must be an integer >= 16384, got '4MB'"),
    ({"tick_tolerance_s": -0.5}, "", "[service] tick_tolerance_s must be a number >= 0, got -0.5"),
    ({"tick_tolerance_s": 30}, "", "[service] tick_tolerance_s must be below period_s / 2 = 30 (reports one period apart "
                                   "are two ticks), got 30"),
])
def test_config_errors_name_file_key_and_value(tmp_path, service, extra, message):
    cfg = write_config(tmp_path / "serve.toml", service=service, extra=extra)
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert str(e.value).startswith(str(cfg)) and message in str(e.value)


def test_config_tokens_and_paths(tmp_path, monkeypatch):
    cfg = write_config(tmp_path / "serve.toml")
    c = load_config(cfg)
    assert c.state_db == tmp_path / "state.sqlite" and len(c.read_tokens) == 1 and c.expected_nodes == 2
    assert load_config(cfg, state_db=tmp_path / "other.db").state_db == tmp_path / "other.db"
    text = cfg.read_text().replace('read_token_file = "read.token"', 'read_token_env = "MB_TEST_TOKEN"')
    cfg.write_text(text)
    monkeypatch.delenv("MB_TEST_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="environment variable MB_TEST_TOKEN holds no token"):
        load_config(cfg)
    monkeypatch.setenv("MB_TEST_TOKEN", "short")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_config(cfg)
    monkeypatch.setenv("MB_TEST_TOKEN", "x" * 20)
    assert load_config(cfg).read_tokens == ("x" * 20,)
    cfg.write_text("[service\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(cfg)


def test_config_limit_and_tolerance_defaults(tmp_path):
    """``max_body_bytes`` defaults to 4 MiB; ``tick_tolerance_s`` to a tenth of the period (0 compares
    times exactly)."""
    c = load_config(write_config(tmp_path / "serve.toml"))
    assert c.max_body_bytes == 4 * 1024 * 1024 and c.tick_tolerance_s == 6.0
    c = load_config(write_config(tmp_path / "serve.toml", service={"period_s": 5, "tick_tolerance_s": 0,
                                                                   "max_body_bytes": 16384}))
    assert c.tick_tolerance_s == 0.0 and c.max_body_bytes == 16384
    assert load_config(write_config(tmp_path / "serve.toml", service={"period_s": 5})).tick_tolerance_s == 0.5


def _report(node, qps, load, rows=None):
    return NodeReport(node=node, time=pd.Timestamp("2024-01-01 00:01"), qps=qps, load={"a": load[0], "b": load[1]},
                      lam={"a": 0.1, "b": 0.2}, features=rows, received=0.0)


def test_aggregate_sums_weights_merges_and_ignores_arrival_order():
    rng = np.random.default_rng(0)
    reports = [_report(f"n{i}", float(rng.uniform(0, 100)), rng.uniform(0.5, 1.0, 2).tolist(),
                       rng.normal(size=(3, 2)).tolist()) for i in range(4)]
    tels = [aggregate(list(p), ("a", "b"), max_rows=100) for p in itertools.permutations(reports)]
    q = np.array([r.qps for r in reports])
    for t in tels:
        assert t.qps == pytest.approx(q.sum(), rel=1e-15)
        for c in "ab":
            assert t.load[c] == pytest.approx(np.dot(q, [r.load[c] for r in reports]) / q.sum(), rel=1e-14)
        assert t.lam == {"a": 0.1, "b": 0.2}  # equal values are taken as they are
        np.testing.assert_array_equal(t.features, tels[0].features)
    np.testing.assert_array_equal(tels[0].features, np.concatenate([r.features for r in reports]))  # node order
    thin = aggregate(reports, ("a", "b"), max_rows=5)
    assert thin.features.shape == (5, 2)
    np.testing.assert_array_equal(thin.features[[0, -1]], tels[0].features[[0, -1]])  # evenly spaced, ends kept
    idle = aggregate([_report("x", 0.0, [0.2, 0.4]), _report("y", 0.0, [0.4, 0.8])], ("a", "b"), 10)
    assert idle.load == {"a": pytest.approx(0.3), "b": pytest.approx(0.6)} and idle.features is None


def test_aggregate_weighs_over_by_qps_only_when_every_node_reports_it():
    reports = [dataclasses.replace(_report(f"n{i}", q, [0.9, 0.9]), over={"a": o, "b": 0.0})
               for i, (q, o) in enumerate(((10.0, 0.02), (30.0, 0.0), (60.0, 0.01)))]
    for p in itertools.permutations(reports):
        t = aggregate(list(p), ("a", "b"), max_rows=10)
        assert t.over == {"a": pytest.approx((10 * 0.02 + 60 * 0.01) / 100, rel=1e-14), "b": 0.0}
    assert aggregate(reports + [_report("n9", 5.0, [0.9, 0.9])], ("a", "b"), 10).over is None
    for r in reports + [_report("n9", 5.0, [0.9, 0.9])]:
        assert NodeReport.from_json(json.loads(json.dumps(r.to_json()))) == r  # the store's round trip
    old = {k: v for k, v in reports[0].to_json().items() if k != "over"}  # stored before over existed
    assert NodeReport.from_json(old).over is None


def test_service_decision_path_is_torch_free(tmp_path):
    """The app, the control loop with the MPC and the shipped bundle, one step: torch never imported."""
    import subprocess
    import sys

    cfg = write_config(tmp_path / "serve.toml", controller="mpc", service={"expected_nodes": 1}, history='trace = "nasa"',
                       extra='[policy]\nbundle = "pretrained"\n[controller.options]\nhorizon = 10\n')
    code = f"""
import sys
import pandas as pd
from mpc_balancer.service.app import create_app
from mpc_balancer.service.config import load_config
from mpc_balancer.service.control import ControlService
from mpc_balancer.service.aggregate import NodeReport
from mpc_balancer.telemetry import Telemetry
create_app(load_config({str(cfg)!r}))
svc = ControlService(load_config({str(cfg)!r})).setup().restore()
t = pd.Timestamp("1995-08-28 13:32")
out = svc.report(NodeReport("n", t, 9000.0, {{"retrieval": 0.8, "prerank": 0.9, "rank": 0.95}},
                 {{"retrieval": 0.01, "prerank": 0.01, "rank": 0.01}}, [[0.1, 0.5, 0.4, 0.0, 1.0]] * 50, 0.0))
assert out["closed"] and svc.decision()["status"] in ("ok", "fallback"), svc.decision()
print("TORCH" if any(m == "torch" or m.startswith("torch.") for m in sys.modules) else "ok")
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] == "ok", p.stderr[-2000:]


def test_until_restored_the_last_stored_decision_is_served_and_reports_wait(tmp_path):
    """Set up but not yet restored (a restarting service): the last stored decision is served with
    its lease, reports are refused as not ready (503), and restoring continues from the checkpoint."""
    from mpc_balancer.service.control import ControlService, NotReady

    config = load_config(write_config(tmp_path / "serve.toml", service={"expected_nodes": 1}))
    first = ControlService(config).setup().restore()
    rep = NodeReport("n", pd.Timestamp("2024-01-01 00:01"), 100.0, {"retrieval": 0.9, "prerank": 0.9, "rank": 0.9},
                     {"retrieval": 0.01, "prerank": 0.01, "rank": 0.01}, None, 0.0)
    first.report(rep)
    served = first.decision()
    first.close()
    again = ControlService(config).setup()
    assert not again.ready and again.decision() == served
    with pytest.raises(NotReady):
        again.report(NodeReport(**{**rep.__dict__, "time": pd.Timestamp("2024-01-01 00:02")}))
    again.restore()
    assert again.ready and again.balancer.ticks_ == 1 and again.decision() == served
    import time

    again.poll(now=time.time() + 1e6)  # telemetry stale after the restart: a hold, as the next version
    held = again.decision()
    assert held["version"] == served["version"] + 1 and held["status"] == "hold" and held["lam"] == served["lam"]
    assert held["valid_until"] == served["valid_until"]


def test_serve_cli_errors_are_one_line(tmp_path):
    """A bad config, a database of another configuration, a bundle that cannot load: exit 2, one line."""
    import subprocess
    import sys

    def serve(cfg):
        from .conftest import free_port

        p = subprocess.run([sys.executable, "-m", "mpc_balancer.cli", "serve", "--config", str(cfg), "--port",
                            str(free_port()), "--log-level", "critical"], capture_output=True, text=True, timeout=120)
        return p.returncode, p.stderr.strip().splitlines()

    code, err = serve(write_config(tmp_path / "a.toml", service={"lease_s": 0}))
    assert code == 2 and len(err) == 1 and "[service] lease_s must be a number > 0, got 0" in err[0]
    bad_bundle = write_config(tmp_path / "b.toml", extra='[policy]\nbundle = "nowhere/policy.json"\n')
    code, err = serve(bad_bundle)
    assert code == 2 and err[-1].startswith("mpc-balancer serve: error: could not restore") and "nowhere" in err[-1]
    cfg = tmp_path / "c.toml"
    cfg.write_text(bad_bundle.read_text().replace('name = "pid"', 'name = "dcaf"'))  # same state.sqlite, other controller
    code, err = serve(cfg)
    assert code == 2 and len(err) == 1 and "configured differently (controller changed)" in err[0]


def test_example_config_serves_telemetry_only_reports(tmp_path, monkeypatch):
    """examples/serve.toml: the bundled setup, tokens from the environment, telemetry with features null."""
    from pathlib import Path

    from mpc_balancer.service.control import ControlService

    monkeypatch.setenv("MPC_BALANCER_READ_TOKEN", "r" * 32)
    monkeypatch.setenv("MPC_BALANCER_WRITE_TOKEN", "w" * 32)
    example = Path(__file__).resolve().parents[2] / "examples" / "serve.toml"
    config = load_config(example, state_db=tmp_path / "state.sqlite")
    assert config.cluster_names == ("retrieval", "prerank", "rank") and config.controller == "mpc"
    assert config.policy_bundle == "pretrained" and config.history.trace == "nasa"
    svc = ControlService(config).setup().restore()
    out = svc.report(NodeReport("n1", pd.Timestamp("1995-08-28 13:32"), 9000.0,
                                {"retrieval": 0.8, "prerank": 0.9, "rank": 0.95},
                                {"retrieval": 0.01, "prerank": 0.01, "rank": 0.01}, None, 0.0))
    assert out["closed"] is False  # expected_nodes = 0: the tick closes on its time-out
    svc.poll(now=61.0)  # the clock, 61 s after the report: past tick_timeout_s (60), before stale_after_s (120)
    d = svc.decision()
    assert d["time"] == "1995-08-28T13:32:00" and d["status"] == "fallback" and "warming up" in d["reason"]
    svc.close()


def test_config_refuses_the_hindsight_limit_naming_why(tmp_path):
    """It was accepted, and the service then failed at start-up (the Balancer refuses a clairvoyant
    controller: nothing shows a service the coming tick)."""
    cfg = write_config(tmp_path / "serve.toml", controller="hindsight")
    with pytest.raises(ConfigError, match=r"\[controller\] name must be one of .*got 'hindsight' \(the hindsight limit"):
        load_config(cfg)
