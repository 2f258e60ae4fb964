"""A tick without traffic (an outage) holds the last lambda and moves no controller state, so the
traffic's return meets the allocation of before the outage instead of the cheapest one."""
import numpy as np
import pandas as pd
import pytest

import mpc_balancer as mb
from policies.cascade import Cascade, CascadeSpec
from policies.oracle import OraclePolicy

CAP = {"retrieval": 4000.0, "prerank": 2000.0, "rank": 25000.0}


def history(days=3):
    idx = pd.date_range("2024-03-01", periods=days * 1440, freq="min")
    h = (idx.hour + idx.minute / 60.0).to_numpy()
    return pd.Series(3000.0 * (1 + 0.5 * np.sin(2 * np.pi * (h - 9) / 24)), index=idx)


def state(bal):
    d = bal.state_dict()
    return {k: d[k] for k in ("controller_state", "pid", "forecaster", "last_qps", "ticks")}


@pytest.mark.parametrize("controller", ["pid", "dcaf", "mpc"])
def test_an_outage_holds_the_last_lambda_and_moves_no_state(controller):
    cascade = Cascade(CascadeSpec())
    policy = OraclePolicy(cascade)
    clusters = {c: mb.Cluster(capacity=CAP[c], target=0.9) for c in cascade.clusters}
    bal = mb.Balancer.create(controller, clusters=clusters, policy=policy, history=history(), period_s=60,
                             time_budget_s=float("inf"))
    rng = np.random.default_rng(0)
    t = bal.ctx_.history_times[-1]
    lam = bal.last_good_.copy()
    load = np.full(3, 0.8)

    def tick(qps, load):
        nonlocal t
        t += pd.Timedelta(minutes=1)
        x = cascade.sample_features(200, float(t.hour), rng)
        return bal.step(mb.Telemetry(time=t, qps=qps, load=dict(zip(cascade.clusters, load)),
                                     lam=dict(zip(cascade.clusters, lam)), features=x))

    for _ in range(30):  # traffic: a load over C_m on every cluster, so every controller raises lambda
        lam = tick(3000.0, load * 1.1).lam_vector
    before, held = state(bal), lam.copy()
    outage = [tick(0.0, load * 0.5 ** k) for k in range(1, 21)]  # 20 minutes without a request; the load drains
    for d in outage:
        assert d.status == "hold" and "no traffic" in d.reason
        np.testing.assert_array_equal(d.lam_vector, held)
    assert state(bal) == before  # no controller, PID or forecaster state moved
    assert bal.last_time_ == t  # the time moved on: the return is no forward jump held for confirmation
    back = tick(3000.0, load * 0.3)
    assert back.status == "ok"


def test_the_outage_hold_keeps_the_return_under_the_cheapest_allocation(tmp_path):
    """Closed loop on a trace with a 30-minute outage recorded as zeros: the PID's first sub-ticks back
    ran the cheapest allocation (lambda wound down to lam_min on a load of 0) at several times C_m."""
    from mpc_balancer.controllers import make_controller
    from mpc_balancer.sim.experiment import ExperimentConfig, build_simulator, make_policy

    idx = pd.date_range("2024-01-01", periods=3 * 1440, freq="min")
    h = (idx.hour + idx.minute / 60.0).to_numpy()
    counts = np.round(20000 * (1 + 0.4 * np.sin(2 * np.pi * (h - 9) / 24))).astype(int)
    day3 = (idx >= "2024-01-03 13:00") & (idx < "2024-01-03 13:30")
    counts[day3] = 0
    path = tmp_path / "outage.csv"
    pd.DataFrame({"timestamp": idx.strftime("%Y-%m-%d %H:%M:%S"), "value": counts}).to_csv(path, index=False)
    cfg = ExperimentConfig(trace=str(path), days=0.25, start="2024-01-03 10:00")
    sim = build_simulator(cfg)
    run = sim.run(make_controller("pid"), make_policy(cfg.policy, sim.cascade))
    log = run.log
    out = (log.index >= "2024-01-03 13:01") & (log.index < "2024-01-03 13:30")
    assert (log.loc[out, "qps"] == 0).all() and (log.loc[out, "acted"] == "hold").all()
    lam_cols = [c for c in log.columns if c.startswith("lambda_")]
    held = log.loc[out, lam_cols].to_numpy()
    np.testing.assert_array_equal(held, np.tile(held[0], (len(held), 1)))  # one lambda through the outage
    peak = log.loc["2024-01-03 13:30":"2024-01-03 13:40", [f"true_load_{c}" for c in run.clusters]].to_numpy().max()
    assert peak < 1.5  # 0.92; with lambda wound down to lam_min during the outage it was 4.50
