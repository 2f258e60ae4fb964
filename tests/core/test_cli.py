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
    assert main(["simulate", "--trace", "elb", "--days", "0.1", "--requests", "50", "--controller", "pid", "--json", str(out),
                 "--no-progress"]) == 0
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
    p = subprocess.run([sys.executable, "-m", "mpc_balancer.cli", *args, "--days" if "--days" not in args else "--seed",
                        "0.1" if "--days" not in args else "0", "--no-progress"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert needle in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------- issue 15: hostile command lines
def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "mpc_balancer.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args,needle", [
    (["--days", "0.0001"], "--days 0.0001 is 0.144 control ticks of --period 60 s; need at least 2"),  # was an IndexError
    (["--period", "0.001"], "--period 0.001 s is below 1 s"),  # tried to allocate 1.9 GiB
    (["--period", "1", "--days", "30"], "--days 30 at --period 1 s is 2,592,000 ticks; at most 1,000,000"),
    (["--controller", "mpc", "--horizon", "100000"], "--horizon 100000 ticks of --period 60 s reaches beyond one day"),  # ran all on PID
    (["--seed", "-5"], "argument --seed: must be an integer in [0, 2**32), got '-5'"),
    (["--peak-qps", "1e300"], "argument --peak-qps: must be <= 1e+09, got '1e300'"),
    (["--peak-qps", "nan"], "argument --peak-qps: must be finite and > 0"),
])
def test_run_length_and_number_errors_name_the_option(args, needle):
    p = _cli("simulate", "--trace", "elb", "--days", "0.1", "--no-progress", *args)
    assert p.returncode == 2 and needle in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_unreadable_inputs_name_the_file(tmp_path):
    events = tmp_path / "events.csv"
    events.write_bytes(b"start,end,name\n2024-01-01,2024-01-02,\xff\xfe\n")
    table = tmp_path / "table.json"
    table.write_bytes(b'{"a": "\xff"}')
    for args, needle in ((["--events", str(tmp_path)], f"events file '{tmp_path}' is a directory"),  # was IsADirectoryError
                         (["--events", str(events)], f"events file '{events}' is not UTF-8 text"),
                         (["--cost-table", str(table)], f"cost table '{table}': cannot read")):
        p = _cli("simulate", "--trace", "elb", "--days", "0.1", "--no-progress", *args)
        assert p.returncode == 2 and needle in p.stderr, p.stderr
        assert "Traceback" not in p.stderr


def test_mixed_time_zone_offsets_in_a_trace_are_an_error(tmp_path):
    """They were converted silently (a daylight-saving change shifted the daily cycle)."""
    from mpc_balancer.traces import TraceError, parse_trace

    with pytest.raises(TraceError, match=r"row 4: time-zone offset \+02:00 differs from row 2's \+01:00"):
        parse_trace("timestamp,v\n2024-03-31T00:00+01:00,1\n2024-03-31T01:00+01:00,2\n2024-03-31T03:00+02:00,3\n")
    with pytest.raises(TraceError, match="row 3: timestamp '2024-03-31T01:00' mixes naive timestamps"):
        parse_trace("timestamp,v\n2024-03-31T00:00Z,1\n2024-03-31T01:00,2\n")
    one = parse_trace("timestamp,v\n2024-03-31T00:00+02:00,1\n2024-03-31T01:00+02:00,2\n")  # one offset: converted to UTC
    assert str(one.series.index[0]) == "2024-03-30 22:00:00"


def test_outputs_are_not_overwritten_without_force_and_checked_before_the_run(tmp_path):
    old = tmp_path / "r.json"
    old.write_text('{"previous": "results"}')
    p = _cli("simulate", "--trace", "elb", "--days", "0.1", "--no-progress", "--json", str(old))
    assert p.returncode == 2 and f"--json {old}: file exists; pass --force to overwrite it" in p.stderr
    assert old.read_text() == '{"previous": "results"}' and "controller" not in p.stdout  # refused before the run
    out = tmp_path / "run"
    out.mkdir()
    (out / "pid.csv").write_text("previous")
    p = _cli("simulate", "--trace", "elb", "--days", "0.1", "--no-progress", "--out", str(out))
    assert p.returncode == 2 and f"--out {out}: directory is not empty" in p.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    for args, needle in ((["--json", str(blocker / "r.json")], f"--json {blocker / 'r.json'}: cannot write in {blocker}"),
                         (["--json", str(tmp_path)], f"--json {tmp_path}: is a directory"),
                         (["--out", str(blocker)], f"--out {blocker}: is a file")):
        p = _cli("simulate", "--trace", "elb", "--days", "0.1", "--no-progress", *args)
        assert p.returncode == 2 and needle in p.stderr, p.stderr
    assert main(["simulate", "--trace", "elb", "--days", "0.1", "--requests", "50", "--no-progress", "--json", str(old),
                 "--force"]) == 0
    assert json.loads(old.read_text())["results"][0]["controller"] == "pid"


def test_building_the_command_line_imports_no_heavy_module():
    """`mpc-balancer --help` (every command's start) loads neither torch nor scipy.signal (which
    pulls in scipy.stats): the forecasting package imports its filter where it is used."""
    code = ("import sys; from mpc_balancer.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'scipy.signal', 'scipy.stats', 'statsmodels') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_subticks_shorter_than_50_ms_are_refused(capsys):
    """``--subticks 100000`` at a 60 s period ran for minutes and then ran out of memory."""
    assert main(["simulate", "--controller", "pid", "--days", "0.01", "--subticks", "100000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "subticks must leave sub-ticks of at least 0.05 s: at most 1200 at a 60 s period, got 100000" in err
    assert main(["spike-test", "--controllers", "pid", "--subticks", "1201"]) == 2
    assert "at most 1200" in capsys.readouterr().err


def test_backtest_events_no_model_reads_are_an_error(tmp_path, capsys):
    """``forecast backtest --events F --models seasonal_naive`` read the file and used it nowhere."""
    ev = tmp_path / "events.csv"
    ev.write_text("start,end,name\n1995-08-10 00:00,1995-08-10 02:00,x\n")
    assert main(["forecast", "backtest", "--trace", "nasa", "--models", "seasonal_naive,seasonal_naive_weekly",
                 "--events", str(ev)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--events: none of --models seasonal_naive,seasonal_naive_weekly reads announced events" in err


def test_python_dash_m_runs_the_command_line():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mpc_balancer", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "simulate" in out.stdout
