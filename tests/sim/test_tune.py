"""`mpc-balancer tune` on Optuna: search spaces, the Pareto front, the grid against the horizon
sweep, a local study that resumes after it is killed, and workers sharing a PostgreSQL study."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import optuna  # in the test extra: the tuning tests run wherever the tests do
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc_balancer.cli import main
from mpc_balancer.config import ConfigError
from mpc_balancer.sim.tuning import Constraint, SearchSpace, StudySpec, best_rows, open_storage

PG_URL = os.environ.get("MPC_BALANCER_TEST_POSTGRES")
CLI = [sys.executable, "-m", "mpc_balancer.cli"]
# OSQP's wall-clock time limit makes a closed loop depend on the machine's load: the tests compare
# figures exactly, so every run lifts it, through a base configuration file
BASE = """
[mpc]
time_limit_s = 0.0
"""


@pytest.fixture
def exact(tmp_path):
    f = tmp_path / "base.toml"
    f.write_text(BASE)
    return ["--config", str(f)]

SPACE = """
[mpc.horizon]
type = "int"
low = 10
high = 60

[mpc.backoff_target]
type = "float"
low = 0.001
high = 0.006

[mpc.curve_every]
type = "categorical"
choices = [1, 3, 6]
"""


@pytest.mark.parametrize("text,needle", [
    ('[mpc.horizon]\ntype = "integer"\nlow = 1\nhigh = 3\n', "mpc.horizon.type must be one of int, float, categorical"),
    ('[mpc.horizon]\ntype = "int"\nlow = 5\nhigh = 5\n', "low must be < high"),
    ('[mpc.horizon]\ntype = "int"\nlow = 0\nhigh = 5\n', "bad value mpc.horizon = 0"),
    ('[mpc.horizon]\ntype = "int"\nlow = 1\nhigh = 5\nlogg = true\n', "unknown key mpc.horizon.logg"),
    ('[mpc.horizonn]\ntype = "int"\nlow = 1\nhigh = 5\n', "unknown key mpc.horizonn"),
    ('[pid.kp]\ntype = "float"\nlow = 0.1\nhigh = 1.0\n', "searches options of the tuned controller"),
    ('[mpc.rho]\ntype = "float"\nlow = 0.0\nhigh = 1.0\nlog = true\n', "a log range needs low > 0"),
    ('[mpc.curve_every]\ntype = "categorical"\nchoices = []\n', "non-empty choices"),
    ('[mpc]\nhorizon = 3\n', "one table per option"),
])
def test_bad_spaces_are_errors_naming_file_and_key(text, needle, tmp_path):
    f = tmp_path / "space.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=None) as e:
        SearchSpace.from_toml(f).check("mpc", str(f))
    assert needle in str(e.value) and str(f) in str(e.value)


def test_space_round_trip_defaults_and_grid(tmp_path):
    f = tmp_path / "space.toml"
    f.write_text(SPACE)
    s = SearchSpace.from_toml(f).check("mpc", str(f))
    assert SearchSpace.from_dict(s.to_dict()) == s
    assert s.defaults("mpc") == {"mpc.horizon": 30, "mpc.backoff_target": 0.001, "mpc.curve_every": 6}
    g = SearchSpace.from_dict({"mpc": {"horizon": {"type": "int", "low": 10, "high": 30, "step": 10},
                                       "rho": {"type": "float", "low": 0.1, "high": 0.3, "step": 0.1}}})
    assert g.grid()["mpc.horizon"] == [10, 20, 30] and g.grid()["mpc.rho"] == pytest.approx([0.1, 0.2, 0.3])
    spec = StudySpec(controller="mpc", space=g.to_dict(), traces=["elb"], seeds=[0], days=0.1, sampler="grid")
    assert spec.trials == 9 and len({json.dumps(p, sort_keys=True) for p in spec.grid_points()}) == 9
    with pytest.raises(ConfigError, match="needs a step"):
        SearchSpace.from_dict({"mpc": {"rho": {"type": "float", "low": 0.1, "high": 0.3}}}).grid()


def test_constraint():
    c = Constraint.parse("nu<=0.003")
    assert (c.metric, c.op, c.bound) == ("nu", "<=", 0.003) and str(c) == "nu<=0.003"
    assert c.violation({"nu": 0.002, "return_pct": 99}) < 0 < c.violation({"nu": 0.004, "return_pct": 99})
    assert Constraint.parse("return_pct >= 99.5").violation({"return_pct": 99.7, "nu": 1}) < 0
    for bad in ("nu<0.003", "mu<=1", "nu<=x", ""):
        with pytest.raises(ConfigError, match="--constraint"):
            Constraint.parse(bad)
    spec = StudySpec(controller="mpc", space={"mpc": {"horizon": {"type": "int", "low": 5, "high": 9}}}, traces=["elb"],
                     seeds=[0], days=0.1, constraint="nu<=0.003")
    assert spec.objective_names == ["return_pct"] and spec.directions == ["maximize"]


points = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=25)


@given(points)
@settings(max_examples=200, deadline=None)
def test_pareto_front_is_exactly_the_non_dominated_set(pts):
    rows = [{"number": i, "state": "COMPLETE", "params": {}, "values": {"return_pct": float(r), "nu": float(n)}}
            for i, (r, n) in enumerate(pts)]
    spec = StudySpec(controller="mpc", space={"mpc": {"horizon": {"type": "int", "low": 5, "high": 9}}}, traces=["elb"],
                     seeds=[0], days=0.1)
    front = best_rows(rows, spec)

    def dominated(p):
        return any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in pts)

    expect = {p for p in pts if not dominated(p)}
    got = [(int(r["values"]["return_pct"]), int(r["values"]["nu"])) for r in front]
    assert set(got) == expect and len(got) == len(expect)  # one entry per distinct optimal point
    assert got == sorted(got, key=lambda p: -p[0])


def test_grid_reproduces_the_horizon_sweep_exactly(tmp_path, exact):
    """`tune --horizons` (now a grid study) gives the figures the sweep computed, bit for bit: the
    closed loop of run_comparison(ExperimentConfig(trace, days, seed), ["mpc"], {"mpc": {horizon}})."""
    from mpc_balancer.sim.experiment import ExperimentConfig, run_comparison

    out = tmp_path / "r.json"
    assert main(["tune", "--trace", "elb", "--horizons", "5,40", "--days", "0.05", "--jobs", "1", *exact,
                 "--out", str(tmp_path / "o"), "--json", str(out), "--no-progress"]) == 0
    d = json.loads(out.read_text())
    assert d["sampler"] == "grid" and [t["params"] for t in d["trials"]] == [{"mpc.horizon": 5}, {"mpc.horizon": 40}]
    for t in d["trials"]:
        h = t["params"]["mpc.horizon"]
        _, s = run_comparison(ExperimentConfig(trace="elb", days=0.05, seed=0), ["mpc"],
                              {"mpc": {"horizon": h, "objective": "revenue", "time_limit_s": 0.0}})
        ref, pair = s["results"][0], t["pairs"][0]
        assert (pair["revenue"], pair["mu"], pair["nu"]) == (ref["revenue"], ref["mu"], ref["nu"])
        assert t["values"]["nu"] == ref["nu"]
    # rerunning the same command resumes the finished study: no new trial, the same figures
    assert main(["tune", "--trace", "elb", "--horizons", "5,40", "--days", "0.05", "--jobs", "1", *exact,
                 "--out", str(tmp_path / "o"), "--json", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["trials"] == d["trials"]


def _trials(storage_url, study):
    s = optuna.load_study(study_name=study, storage=open_storage(storage_url))
    return s.get_trials(deepcopy=False)


@pytest.mark.slow
def test_six_trial_study_finishes_and_resumes_after_it_is_killed(tmp_path, exact):
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    out, js = tmp_path / "out", tmp_path / "study.json"
    cmd = [*CLI, "tune", "--space", str(space), "--traces", "nasa", "--seeds", "0", "--days", "0.25", "--trials", "6",
           "--jobs", "1", *exact, "--study", "six", "--out", str(out), "--json", str(js), "--no-progress"]
    journal = str(out / "study.journal")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 900
        while True:  # kill it in the middle of a trial, two trials in
            assert p.poll() is None, f"tune ended before it was killed: {p.stderr.read()}"
            assert time.monotonic() < deadline, "no third trial started in 900 s"
            if os.path.exists(journal):
                try:
                    trials = _trials(journal, "six")
                except KeyError:  # the study is not written yet
                    trials = []
                states = [t.state.name for t in trials]
                # in the middle of the third trial: running, with all its parameters drawn (they are
                # recorded one by one: a kill between two draws leaves a retry that draws the rest
                # afresh; failed once that way at load 4)
                if states.count("COMPLETE") >= 2 and any(t.state.name == "RUNNING" and len(t.params) == 3 for t in trials):
                    break
            time.sleep(0.2)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    before = {t.number: (t.params, t.values) for t in _trials(journal, "six") if t.state.name == "COMPLETE"}
    killed = [t.number for t in _trials(journal, "six") if t.state.name == "RUNNING"]
    assert len(before) >= 2 and len(killed) == 1

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr
    assert "1 interrupted trial(s) queued again" in r.stderr
    d = json.loads(js.read_text())
    assert set(d) >= {"study", "storage", "objectives", "trials", "best"} and d["study"] == "six"
    assert d["objectives"] == [{"name": "return_pct", "direction": "maximize"}, {"name": "nu", "direction": "minimize"}]
    trials = {t["number"]: t for t in d["trials"]}
    complete = [t for t in d["trials"] if t["state"] == "COMPLETE"]
    assert len(complete) == 6 and len(d["trials"]) == 7  # six run once, plus the killed one
    for n, (params, values) in before.items():  # what finished before the kill is kept as it was
        assert trials[n]["params"] == params and [trials[n]["values"][m] for m in ("return_pct", "nu")] == values
    assert trials[killed[0]]["state"] == "FAIL"
    retry = [t for t in complete if t.get("retry_of") == killed[0]]
    assert len(retry) == 1 and retry[0]["params"] == trials[killed[0]]["params"]
    assert trials[0].get("baseline") and trials[0]["params"] == {"mpc.horizon": 30, "mpc.backoff_target": 0.001, "mpc.curve_every": 6}
    for t in complete:
        v, pair = t["values"], t["pairs"][0]
        assert v["return_pct"] == pytest.approx(100 * pair["revenue"] / pair["hindsight_revenue"], rel=1e-12)
        assert 90 < v["return_pct"] < 101 and 0 <= v["nu"] < 0.1
    # the best entries are the Pareto front of the complete trials
    front = {b["number"] for b in d["best"]}
    for t in complete:
        dominated = any(o["values"]["return_pct"] >= t["values"]["return_pct"] and o["values"]["nu"] <= t["values"]["nu"]
                        and o["values"] != t["values"] for o in complete)
        assert (t["number"] in front) == (not dominated) or any(trials[b]["values"] == t["values"] for b in front)
    assert (out / "pareto.png").stat().st_size > 1000
    assert len((out / "trials.csv").read_text().strip().splitlines()) == 1 + 7
    # a best setting, as TOML, runs under simulate --config with the trial's figures
    b = d["best"][0]
    sim = tmp_path / "sim.json"
    assert main(["simulate", "--config", b["config"], "--trace", "nasa", "--seed", "0", "--days", "0.25",
                 "--json", str(sim), "--no-progress"]) == 0
    m = json.loads(sim.read_text())["results"][0]
    pair = trials[b["number"]]["pairs"][0]
    assert m["controller"] == "mpc" and (m["revenue"], m["nu"]) == (pair["revenue"], pair["nu"])


@pytest.mark.slow
@pytest.mark.skipif(not PG_URL, reason="no PostgreSQL server: set MPC_BALANCER_TEST_POSTGRES=postgresql://user@127.0.0.1:PORT/db "
                                       "(.ci/run starts one with .ci/postgres.sh)")
def test_two_workers_share_a_postgresql_study_and_retry_the_killed_ones_trial(tmp_path, exact):
    study = f"t{uuid.uuid4().hex[:10]}"
    grid = ["--horizons", "5,10,20,40", "--traces", "elb", "--seeds", "0", "--days", "0.1", *exact]
    r = subprocess.run([*CLI, "tune", *grid, "--storage", PG_URL, "--study", study, "--heartbeat", "1", "--workers-only"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    worker = [*CLI, "tune", "worker", "--storage", PG_URL, "--study", study, "--heartbeat", "1", "--poll", "0.3", "--no-progress"]
    a = subprocess.Popen(worker, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen(worker, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, killed = time.monotonic() + 600, None
        while killed is None:  # kill worker a in the middle of one of its trials
            assert a.poll() is None, f"worker a ended before it was killed: {a.stderr.read()}"
            assert time.monotonic() < deadline, "worker a ran no trial in 600 s"
            for t in _trials(PG_URL, study):
                if t.state.name == "RUNNING" and t.user_attrs.get("worker", "").endswith(f":{a.pid}"):
                    killed = t.number
            if killed is None:
                time.sleep(0.1)
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=60)
        _, err = b.communicate(timeout=900)
        assert b.returncode == 0, err
    finally:
        for w in (a, b):
            if w.poll() is None:
                w.kill()
    trials = _trials(PG_URL, study)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(t.params["mpc.horizon"] for t in complete) == [5, 10, 20, 40]  # every trial run exactly once
    assert len(trials) == 5  # ... and the killed one
    dead = trials[killed]
    assert dead.state.name == "FAIL" and "error" not in dead.user_attrs
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == killed]
    assert len(retry) == 1 and retry[0].params == dead.params
    assert not retry[0].user_attrs["worker"].endswith(f":{a.pid}")
    # the same trials run locally (journal storage, one process) give the same figures
    local = tmp_path / "local.json"
    assert main(["tune", *grid, "--jobs", "1", "--out", str(tmp_path / "local"), "--json", str(local), "--no-progress"]) == 0
    here = {t["params"]["mpc.horizon"]: t["values"] for t in json.loads(local.read_text())["trials"]}
    there = {t.params["mpc.horizon"]: dict(zip(("return_pct", "nu"), t.values)) for t in complete}
    assert here == there
