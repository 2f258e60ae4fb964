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
