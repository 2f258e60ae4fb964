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
    from mpc_balancer.sim.plant import PlantConfig

    assert PlantConfig.from_dict({"capacity": [1.0, 2, 3], "cost_drift": 0.99, "lag_s": 0}).capacity == (1.0, 2, 3)
    assert PlantConfig().capacity is None


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
    assert not list((tmp_path / "b").iterdir())


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
