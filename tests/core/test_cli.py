import json
import subprocess
import sys

import pytest

from mpc_balancer.cli import main


def test_compare_json_schema(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["compare", "--trace", "elb", "--days", "0.25", "--requests", "100", "--controllers", "static,dcaf,pid",
               "--json", str(out), "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["trace"] == "elb" and d["days"] == pytest.approx(0.25) and d["control_period_s"] == 60.0
    assert [r["controller"] for r in d["results"]] == ["static", "dcaf", "pid"]
    for r in d["results"]:
        assert set(r) >= {"controller", "revenue", "uplift_vs_static_pct", "mu", "nu", "clusters", "degraded_pct", "wall_s"}
        assert set(r["clusters"]) == {"retrieval", "prerank", "rank"}
        assert 0 <= r["mu"] <= 1 and r["nu"] >= 0
    assert d["results"][0]["uplift_vs_static_pct"] == 0.0
    assert (tmp_path / "run" / "comparison.png").stat().st_size > 1000
    assert (tmp_path / "run" / "pid.csv").exists()
    assert "controller" in capsys.readouterr().out


def test_compare_with_bursts_reports_sub_tick_figures_guard_and_backoff(tmp_path):
    """Injected bursts reach every controller alike; mu/nu per sub-tick sit beside the tick
    figures; the guard's cost is reported; the MPC's back-off is plotted."""
    out = tmp_path / "r.json"
    rc = main(["compare", "--trace", "elb", "--days", "0.2", "--requests", "100", "--controllers", "pid,mpc",
               "--bursts", "60,4-6,1-3", "--outages", "5,5", "--seed", "2", "--set", "mpc.horizon=10",
               "--json", str(out), "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["subticks"] == 12 and d["guard"] == "proportional" and d["bursts"] == "60,4-6,1-3"
    pid, mpc = d["results"]
    for r in (pid, mpc):
        assert set(r) >= {"tick_mu", "tick_nu", "tick_clusters", "guard_cost", "guard_cost_pct", "guard_subticks"}
        assert r["nu"] >= 0 and r["guard_cost"] >= 0
    assert pid["arrivals"] == mpc["arrivals"]  # the same injected traffic
    assert sum(pid["guard_subticks"].values()) > 0  # 60 bursts of 4-6x a day: the guard acted
    assert (tmp_path / "run" / "backoff.png").stat().st_size > 1000
    plain = tmp_path / "p.json"
    assert main(["simulate", "--trace", "elb", "--days", "0.2", "--requests", "100", "--controller", "pid", "--seed", "2",
                 "--json", str(plain), "--no-progress"]) == 0
    assert json.loads(plain.read_text())["results"][0]["arrivals"] != pid["arrivals"]


def test_simulate_has_same_shape_with_one_result(tmp_path):
    out = tmp_path / "r.json"
    assert main(["simulate", "--trace", "elb", "--days", "0.1", "--requests", "50", "--controller", "pid", "--json", str(out), "--no-progress"]) == 0
    d = json.loads(out.read_text())
    assert len(d["results"]) == 1 and d["results"][0]["uplift_vs_static_pct"] is None


@pytest.mark.parametrize("args,needle", [
    (["compare", "--trace", "nope"], "unknown trace 'nope'"),
    (["compare", "--trace", "elb", "--days", "99"], "longer than the trace"),
    (["compare", "--trace", "elb", "--controllers", "static,bogus"], "unknown controller 'bogus'"),
    (["compare", "--trace", "elb", "--set", "pid.kp"], "--set expects SECTION.KEY=VALUE"),
    (["compare", "--trace", "elb", "--bursts", "10,3-6"], "--bursts expects"),
    (["compare", "--trace", "elb", "--outages", "1,x"], "--outages MINUTES"),
    (["compare", "--trace", "elb", "--set", "plant.capcity=1"], "unknown plant config keys"),
])
def test_errors_are_one_line_without_traceback(args, needle):
    p = subprocess.run([sys.executable, "-m", "mpc_balancer.cli", *args, "--days" if "--days" not in args else "--seed", "0.1" if "--days" not in args else "0", "--no-progress"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert needle in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
