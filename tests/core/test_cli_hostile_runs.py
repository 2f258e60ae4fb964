"""A hostile user's pass over ``train``, ``fleet`` and the ``simulate``/``compare`` options others
had not covered (``--bursts``, ``--outages``, ``--guard``/``--set guard.*``, ``--set plant.*``,
``--events``, ``--policy PATH``): each bad input is a one-line error naming the option and the
value (exit 2), never a traceback, an option without effect, or an output written past its check.

Every test stops at the check, before a closed-loop run or a training.
"""
from __future__ import annotations

import shutil

import pytest

from mpc_balancer.cli import main


def _err(capsys) -> str:
    """The command's one error line (argparse may print its usage above it)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


# -- --bursts / --outages ------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag,value,named,piece", [
    ("--outages", "1,20-30", "--outages MINUTES", "'20-30'"),      # a range was read as 20, the rest dropped
    ("--outages", "1,100000", "--outages MINUTES", "'100000'"),    # longer than a day
    ("--bursts", "10,1e308,1-5", "--bursts FACTOR", "'1e308'"),    # overflowed the rate: "lam value too large"
    ("--bursts", "1440,3-6,1e9", "--bursts MINUTES", "'1e9'"),     # bursts multiplied into a load of 1e12
])
def test_disturbance_specs_out_of_range_are_named(flag, value, named, piece, capsys):
    assert main(["simulate", "--days", "0.01", "--no-progress", flag, value]) == 2
    err = _err(capsys)
    assert named in err and piece in err


def test_disturbance_specs_in_range_still_parse():
    from mpc_balancer.sim.disturbances import BurstSpec, OutageSpec

    assert OutageSpec.parse("1,20") == OutageSpec(1.0, 20.0)
    assert OutageSpec.parse("1,1440").minutes == 1440.0
    assert BurstSpec.parse("10,1000,1-1440").factor == (1000.0, 1000.0)


# -- --set plant.* ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("item,named,piece", [
    ("plant.lag_s=[1,2,3]", "plant.lag_s", "(1, 2, 3)"),           # TypeError traceback from a comparison
    ("plant.lag_s=null", "plant.lag_s", "None"),                   # TypeError traceback
    ("plant.capacity=abc", "plant.capacity", "'abc'"),             # numpy's "could not convert string to float"
    ("plant.target_load=true", "plant.target_load", "True"),       # "guard target (C_m per cluster) must be numbers"
    ("plant.cost_drift=5", "plant.cost_drift", "5"),               # ran, with negative true costs and loads
])
def test_plant_settings_of_the_wrong_type_or_range_are_named(item, named, piece, capsys):
    assert main(["simulate", "--days", "0.01", "--no-progress", "--set", item]) == 2
    err = _err(capsys)
    assert named in err and piece in err


def test_plant_config_keeps_accepting_good_values():
    from mpc_balancer.sim.config import plant_defaults
    from mpc_balancer.sim.plant import PlantConfig

    assert PlantConfig.from_dict({"capacity": [1.0, 2, 3], "cost_drift": 0.99, "lag_s": 0}).capacity == (1.0, 2, 3)
    assert PlantConfig().capacity is None
    # `config show` lists scarcity and peak_fit at their defaults: a capacity added to that file is no conflict
    shown = {k: v for k, v in plant_defaults().items() if v is not None}
    assert PlantConfig.from_dict({**shown, "capacity": [1.0, 2, 3]}).capacity == (1.0, 2, 3)
    for edge in ({"scarcity": 1}, {"scarcity": 100}, {"peak_fit": 0.01}, {"peak_fit": 100}, {"load_noise": 0},
                 {"load_noise": 0.2}):
        PlantConfig.from_dict(edge)


@pytest.mark.parametrize("item,piece,allowed", [
    ("plant.load_noise=50", "50", "[0, 0.2]"),            # half the readings negative: the Balancer held 287 of 288 ticks
    ("plant.load_noise=0.3", "0.3", "[0, 0.2]"),          # negative readings (and holds) every day
    ("plant.scarcity=1e9", "1000000000.0", "[1, 100]"),   # ran as scarcity 18 (peak_fit binds), without a word
    ("plant.scarcity=1e-9", "1e-09", "[1, 100]"),         # a capacity 1e9 x the demand: loads of 1e-10, nothing to balance
    ("plant.peak_fit=0", "0", "[0.01, 100]"),             # an infinite capacity
])
def test_plant_settings_outside_their_physical_range_are_named(item, piece, allowed, capsys):
    assert main(["simulate", "--days", "0.01", "--no-progress", "--set", item]) == 2
    err = _err(capsys)
    assert f"{item.split('=')[0]} must be in {allowed}" in err and f"got {piece}" in err


@pytest.mark.parametrize("other", ["plant.scarcity=30", "plant.peak_fit=0.5"])
def test_plant_capacity_beside_scarcity_or_peak_fit_is_an_error(other, tmp_path, capsys):
    """An explicit capacity replaced the sizing from scarcity and peak_fit: the other key was ignored."""
    capacity = "plant.capacity=[4000,2000,25000]"
    assert main(["simulate", "--days", "0.01", "--no-progress", "--set", capacity, "--set", other]) == 2
    err = _err(capsys)
    key, value = other.split("=")
    assert f"plant.capacity = (4000, 2000, 25000) is given with {key} = {value}" in err and "give one or the other" in err
    f = tmp_path / "c.toml"
    f.write_text(f"[plant]\ncapacity = [4000, 2000, 25000]\n{key.split('.')[1]} = {value}\n")
    assert main(["simulate", "--config", str(f), "--days", "0.01", "--no-progress"]) == 2
    err = _err(capsys)
    assert str(f) in err and "plant.capacity" in err and key in err


# -- --guard and --set guard.* ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,key", [
    (["--guard", "none", "--set", "guard.max_step=8"], "guard.max_step"),
    (["--guard", "maxpower", "--set", "guard.gain=3"], "guard.gain"),
    (["--set", "guard.step=3"], "guard.step"),  # proportional reads gain and max_step, not step
])
def test_guard_settings_the_rule_does_not_read_are_an_error(argv, key, capsys):
    assert main(["simulate", "--days", "0.01", "--no-progress", *argv]) == 2
    err = _err(capsys)
    assert key in err and "no effect" in err


def test_guard_settings_from_a_config_file_are_checked_too(tmp_path, capsys):
    f = tmp_path / "c.toml"
    f.write_text('[run]\ndays = 0.01\nguard = "none"\n[guard]\nmax_step = 8\n')
    assert main(["simulate", "--config", str(f), "--no-progress"]) == 2
    assert "guard.max_step" in _err(capsys)
    assert main(["spike-test", "--guard", "none", "--set", "guard.gain=3"]) == 2
    assert "guard.gain" in _err(capsys)


def test_guard_settings_the_rule_reads_pass():
    from mpc_balancer.guard import unused_guard_settings

    assert unused_guard_settings({"rule": "maxpower", "step": 3, "release": 0.1}) == []
    assert unused_guard_settings({"rule": "proportional", "gain": 4, "max_step": 8}) == []
    assert unused_guard_settings({"rule": "none"}) == []


# -- --events --------------------------------------------------------------------------------------------------
def test_events_without_a_forecasting_controller_are_an_error(tmp_path, capsys):
    """pid, static, dcaf and hindsight never read the calendar: the file was checked and ignored."""
    ev = tmp_path / "ev.csv"
    ev.write_text("start,end,name\n1995-08-28 13:20,1995-08-28 13:25,promo\n")
    assert main(["compare", "--controllers", "pid,hindsight", "--days", "0.01", "--no-progress", "--events", str(ev)]) == 2
    err = _err(capsys)
    assert "--events" in err and "pid, hindsight" in err and "no effect" in err


def test_events_all_outside_the_window_are_warned_about(tmp_path, capsys, monkeypatch):
    """An events file none of whose events the run reads (a wrong year) was accepted without a word.
    A calendar covering more than the run is fine as long as one event falls in the window, the
    history the forecaster fits on (28 days) or the day its forecasts reach."""
    import mpc_balancer.sim.experiment as experiment

    monkeypatch.setattr(experiment, "_NOTED", set())

    def stop(*a, **k):  # the note comes before the policy is made and the controllers run
        raise ValueError("stopped before the run")
    monkeypatch.setattr(experiment, "make_policy", stop)
    ev = tmp_path / "ev.csv"
    argv = ["simulate", "--controller", "mpc", "--days", "0.01", "--no-progress", "--events", str(ev)]
    ev.write_text("start,end,name,expected_multiplier\n2020-01-01 00:00,2020-01-02 00:00,promo,2\n"
                  "2021-01-01,2021-01-02,sale,2\n")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"warning: --events {ev}: none of its 2 events" in err and "simulated window 1995-08-28 13:18:00" in err
    for inside in ("1995-08-21 10:00,1995-08-21 12:00",   # in the history the forecaster fits on
                   "1995-08-28 20:00,1995-08-28 22:00"):  # after the window, within the forecasts' reach
        ev.write_text(f"start,end,name\n{inside},promo\n2020-01-01,2020-01-02,x\n")
        assert main(argv) == 2
        assert "warning" not in capsys.readouterr().err


# -- interrupted runs ------------------------------------------------------------------------------------------
def test_interrupted_compare_leaves_no_empty_out_directory(tmp_path, capsys, monkeypatch):
    """Ctrl-C during ``compare --out DIR`` left the empty DIR the output check had created."""
    import mpc_balancer.cli.simulate as simulate

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(simulate, "run_comparison", interrupted)
    out, kept = tmp_path / "a" / "b" / "out", tmp_path / "mine"
    kept.mkdir()  # an empty directory the user made is theirs
    assert main(["compare", "--days", "0.01", "--no-progress", "--out", str(out), "--json", str(kept / "r.json")]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and kept.is_dir()

    def half_written(*a, **k):  # a directory that holds something is kept
        (out / "partial.csv").write_text("x")
        raise KeyboardInterrupt
    monkeypatch.setattr(simulate, "run_comparison", half_written)
    assert main(["compare", "--days", "0.01", "--no-progress", "--out", str(out)]) == 130
    assert (out / "partial.csv").exists()


# -- --policy PATH ---------------------------------------------------------------------------------------------
def test_policy_directory_without_a_slash_is_a_bundle_path(tmp_path, monkeypatch):
    """``train --out mybundle`` then ``--policy mybundle``: "unknown policy 'mybundle'" before."""
    from mpc_balancer.sim.experiment import make_policy
    from policies.bundle import DATA_DIR
    from policies.cascade import Cascade

    d = tmp_path / "mybundle"
    d.mkdir()
    for suffix in (".json", ".npz"):
        shutil.copy(DATA_DIR / f"pretrained{suffix}", d / f"pretrained{suffix}")
    monkeypatch.chdir(tmp_path)
    assert make_policy("mybundle", Cascade()).features
    with pytest.raises(ValueError, match="unknown policy 'nothere'"):
        make_policy("nothere", Cascade())


# -- train -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,option", [
    (["--name", ""], "--name"),             # wrote OUT.json beside --out
    (["--name", "../escape"], "--name"),    # wrote past --out's overwrite check
    (["--name", "x.json"], "--name"),       # wrote x.json.json, which --policy OUT/x.json does not find
    (["--seed", "-1"], "--seed"),           # numpy's "expected non-negative integer"
    (["--batch-size", "100000000"], "--batch-size"),  # killed for memory
    (["--logs", "100"], "--logs"),          # one message for four options, without the value
    (["--steps", "0"], "--steps"),
])
def test_train_options_are_checked_and_named(tmp_path, argv, option, capsys, monkeypatch):
    import policies.logs

    monkeypatch.setattr(policies.logs, "generate_logs", lambda *a, **k: pytest.fail("the training must not start"))
    with pytest.raises(SystemExit) as e:
        main(["train", "--out", str(tmp_path / "b"), *argv])
    assert e.value.code == 2
    err = _err(capsys)
    assert f"argument {option}" in err and repr(argv[1]) in err
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("argv", [["--channels", "3"], ["--no-aw"], ["--request", "separate"]])
def test_train_awrq_options_under_a_joint_network_are_an_error(tmp_path, argv, capsys, monkeypatch):
    """``--algo rem --channels 3`` trained the plain rem network but recorded the option."""
    import policies.logs

    monkeypatch.setattr(policies.logs, "generate_logs", lambda *a, **k: pytest.fail("the training must not start"))
    assert main(["train", "--algo", "rem", "--out", str(tmp_path / "b"), *argv]) == 2
    err = _err(capsys)
    assert argv[0] in err and "--algo rem" in err
    assert not (tmp_path / "b").exists()  # nothing written, and the --out the check made is not left behind


# -- fleet -----------------------------------------------------------------------------------------------------
@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("MPC_BALANCER_WRITE_TOKEN", "write-token-0123456789abcdef")


def test_fleet_json_is_a_checked_output(tmp_path, token, capsys, monkeypatch):
    """``--json`` was not declared: an existing file was overwritten and an unwritable path failed
    after the whole replay."""
    import mpc_balancer.sim.fleet as fleet

    monkeypatch.setattr(fleet, "run_fleet", lambda *a, **k: pytest.fail("the replay must not start"))
    f = tmp_path / "mine.json"
    f.write_text("precious")
    assert main(["fleet", "--url", "http://127.0.0.1:9", "--json", str(f)]) == 2
    assert "--json" in _err(capsys) and f.read_text() == "precious"


@pytest.mark.parametrize("argv,named", [
    (["--url", "notaurl"], "--url 'notaurl'"),   # "unknown url type: 'notaurl/readyz'"
    (["--days", "0.0001"], "--days 0.0001"),     # IndexError traceback
    (["--seed", "-1"], "--seed"),                # numpy's error, after contacting the service
])
def test_fleet_options_are_checked_before_the_service_is_contacted(argv, named, token, capsys, monkeypatch):
    import mpc_balancer.sim.fleet as fleet

    monkeypatch.setattr(fleet, "run_fleet", lambda *a, **k: pytest.fail("the replay must not start"))
    argv = ["fleet", *(["--url", "http://127.0.0.1:9"] if argv[0] != "--url" else []), *argv]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own error
        code = e.code
    assert code == 2 and named in _err(capsys)


def test_fleet_service_errors_are_one_line(token, capsys, monkeypatch):
    """A re-run against a service that stepped past the window was a ServiceError traceback (HTTP
    409), an unreachable one a TimeoutError traceback."""
    import mpc_balancer.sim.fleet as fleet
    from mpc_balancer.client import ServiceError

    def closed(*a, **k):
        raise ServiceError(409, "time 1995-08-28 13:17:00 is not after the last stepped tick")
    monkeypatch.setattr(fleet, "run_fleet", closed)
    assert main(["fleet", "--url", "http://127.0.0.1:9", "--days", "0.01"]) == 2
    err = _err(capsys)
    assert "HTTP 409" in err and "--refit" in err

    def unreachable(*a, **k):
        raise TimeoutError("http://127.0.0.1:9 not ready within 120 s")
    monkeypatch.setattr(fleet, "run_fleet", unreachable)
    assert main(["fleet", "--url", "http://127.0.0.1:9", "--days", "0.01"]) == 2
    assert "not ready" in _err(capsys)


def test_fleet_against_nothing_fails_within_wait(token, capsys):
    """An unreachable --url waited the client's 120 s before failing; ``--wait`` (default 10 s)
    bounds it, and the error names the last problem and the option."""
    import socket

    from mpc_balancer.cli import build_parser

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    assert main(["fleet", "--url", url, "--days", "0.01", "--wait", "0.2"]) == 2
    err = _err(capsys)
    assert f"--url {url}" in err and "not ready within 0.2 s" in err and "refused" in err and "--wait" in err
    fleet = build_parser().commands["fleet"]
    assert fleet.parse_args(["--url", url]).wait == 10.0 and "--wait" in fleet.format_help()


# -- tune worker -----------------------------------------------------------------------------------------------
def test_tune_worker_on_a_missing_study_names_it_and_creates_no_file(tmp_path, capsys):
    """``tune worker --storage sqlite:///x.db --study NAME`` created an empty x.db, then failed."""
    optuna = pytest.importorskip("optuna")
    db = tmp_path / "x.db"
    assert main(["tune", "worker", "--storage", f"sqlite:///{db}", "--study", "nosuch"]) == 2
    err = _err(capsys)
    assert "no study 'nosuch'" in err and f"sqlite:///{db}" in err and "does not exist" in err
    assert not db.exists()
    other = tmp_path / "other.db"  # a SQLite file of something else: read, not written
    optuna.create_study(study_name="there", storage=f"sqlite:///{other}")
    before = other.read_bytes()
    assert main(["tune", "worker", "--storage", f"sqlite:///{other}", "--study", "nosuch"]) == 2
    assert "no study 'nosuch'" in _err(capsys) and other.read_bytes() == before

    from mpc_balancer.sim.tuning import check_existing_study

    check_existing_study(f"sqlite:///{other}", "there")  # the study exists: the worker goes on
