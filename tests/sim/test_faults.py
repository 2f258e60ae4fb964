"""The fault matrix (issue 15, item 4): every fault through the closed loop, no crash, recovery."""
import numpy as np
import pytest

from mpc_balancer.sim.faults import FAULTS, format_fault_matrix, run_fault_matrix


def test_fault_matrix_pid_no_crash_and_recovery():
    res = run_fault_matrix(["pid"], trace="elb", days=0.2, n_requests=50, policy="oracle",
                           faults=tuple(f for f in FAULTS if not f.startswith("solver")))
    rows = res["controllers"]["pid"]
    assert set(rows) == {"none", *[f for f in FAULTS if not f.startswith("solver")]}
    for fault, r in rows.items():
        assert r["crashes"] == 0, (fault, r)
    assert rows["none"]["hold_ticks"] == 0 and rows["none"]["after"]["revenue_gap_pct"] == 0.0
    assert rows["dropout"]["no_report_ticks"] == 10
    assert rows["stale"]["hold_ticks"] == 10  # the same report repeated: its time does not move
    assert rows["garbage"]["hold_ticks"] == 10
    assert rows["time_forward"]["hold_ticks"] == 2 and rows["time_backward"]["hold_ticks"] == 10
    assert rows["restart_hourly"]["restarts"] >= 3
    # the PID keeps no state a checkpoint loses: restarts change nothing
    assert rows["restart_hourly"]["after"]["revenue"] == rows["restart_hourly"]["after"]["revenue_no_fault"]
    for fault in ("dropout", "stale", "garbage", "time_forward", "time_backward", "lambda_not_applied", "restart_hourly"):
        assert rows[fault]["recovered"], (fault, rows[fault])
    assert np.isfinite(rows["garbage"]["max_lambda_step"])
    assert "restart_hourly" in format_fault_matrix(res)


def test_unknown_fault_is_named():
    with pytest.raises(ValueError, match=r"unknown fault\(s\) \['flood'\]"):
        run_fault_matrix(["pid"], faults=("flood",))
