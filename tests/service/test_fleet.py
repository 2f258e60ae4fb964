"""Fleet replay: the simulator's plant as serving nodes against a real service gives `simulate`'s figures."""
from __future__ import annotations

import numpy as np
import pytest

from mpc_balancer.sim.experiment import ExperimentConfig, build_simulator, run_comparison
from mpc_balancer.sim.fleet import run_fleet

from .conftest import WRITE, write_config


def test_fleet_replay_matches_the_in_process_simulation(tmp_path, server_factory):
    cfg = ExperimentConfig(trace="nasa", days=0.05, seed=3, n_requests=200)  # 72 ticks
    start = build_simulator(cfg).times[0]
    conf = write_config(tmp_path / "serve.toml", controller="pid", service={"expected_nodes": 4},
                        history=f'trace = "nasa"\nend = "{start}"', extra='[policy]\nbundle = "pretrained"\n')
    srv = server_factory(conf).start()
    fleet = run_fleet(srv.url, WRITE, cfg, nodes=4)["results"][0]
    _, summary = run_comparison(cfg, ["pid"])
    local = summary["results"][0]
    for key in ("revenue", "mu", "nu", "degraded_pct", "arrivals"):
        assert fleet[key] == pytest.approx(local[key], rel=1e-12), key
    for c in local["clusters"]:
        assert fleet["clusters"][c] == pytest.approx(local["clusters"][c], rel=1e-12)
    assert fleet["decisions"] == {"ok": 72} and np.isfinite(fleet["revenue"])


def test_fleet_notes_go_to_stderr_not_into_the_table(tmp_path, server_factory, capsys):
    """A fleet smaller than the service expects, on a window that does not start where the service's
    history ends: both notes are printed, on stderr (they were on stdout, inside the table's output)."""
    cfg = ExperimentConfig(trace="nasa", days=0.01, seed=3, n_requests=100)
    conf = write_config(tmp_path / "serve.toml", controller="pid", service={"expected_nodes": 4, "tick_timeout_s": 0.2},
                        history='trace = "nasa"\nend = "1995-08-20 00:00"', extra='[policy]\nbundle = "pretrained"\n')
    srv = server_factory(conf).start()
    run_fleet(srv.url, WRITE, cfg, nodes=2)
    out, err = capsys.readouterr()
    assert "note:" not in out
    assert "the service expects 4 nodes per tick, this fleet has 2" in err and "the simulated window starts at" in err
