"""Configuration files: `config show` round trips, the command line overrides the file, bad files
get one-line errors naming the file and the key."""
import math
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mpc_balancer.cli import build_parser, main
from mpc_balancer.cli.config import parse_with_config
from mpc_balancer.cli.simulate import settings as run_settings
from mpc_balancer.config import ConfigError, controller_defaults, dumps, loads_toml, read_toml
from mpc_balancer.controllers import REGISTRY
from mpc_balancer.sim.config import plant_defaults

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _plain(d: dict) -> dict:
    """What a TOML file can say about ``d``: no None, tuples as lists."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items() if v is not None}


def _parse(argv, cfg=None, source="test.toml"):
    return parse_with_config(build_parser(), argv, cfg or {}, source)


@pytest.mark.parametrize("controller", sorted(REGISTRY))
def test_config_show_round_trips(controller, tmp_path):
    f = tmp_path / "c.toml"
    assert main(["config", "show", "--controller", controller, "--out", str(f)]) == 0
    tables = read_toml(f)
    assert tables[controller] == _plain(controller_defaults(controller))
    assert tables["plant"] == _plain(plant_defaults())
    assert tables["run"]["controller"] == controller
    # a run configured by the shown file is the run of the defaults
    with_file = _parse(["simulate", "--config", str(f)], tables, str(f))
    plain = _parse(["simulate", "--controller", controller])
    keep = set(vars(plain)) - {"config", "set", "config_set", "func"}
    assert {k: getattr(with_file, k) for k in keep} == {k: getattr(plain, k) for k in keep}
    cfg_a, ctrl_a, plant_a = run_settings(with_file, [controller])
    cfg_b, ctrl_b, plant_b = run_settings(plain, [controller])
    assert cfg_a == cfg_b
    assert ctrl_a == {controller: _plain(controller_defaults(controller))} and ctrl_b == {}
    assert plant_a == _plain(plant_defaults()) and plant_b == {}
    # and printing the shown file's tables again gives the same text
    again = tmp_path / "again.toml"
    assert main(["config", "show", "--controller", controller, "--out", str(again)]) == 0
    assert again.read_text() == f.read_text()


scalars = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=20))
values = st.one_of(scalars, st.lists(st.integers(-1000, 1000), max_size=4), st.lists(st.text(max_size=5), max_size=3))
tables = st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
                         st.dictionaries(st.text(min_size=1, max_size=10), values, max_size=5), max_size=4)


@given(tables)
@example({"a": {"0\n": False}})  # a key ending in a newline once passed for a bare key
@settings(max_examples=200, deadline=None)
def test_toml_writer_round_trips(t):
    assert tomllib.loads(dumps(t, header="a header\nwith two lines")) == t


def test_toml_writer_special_floats():
    back = tomllib.loads(dumps({"x": {"a": math.inf, "b": -math.inf, "c": math.nan, "d": 1e-300, "e": 0.1}}))["x"]
    assert back["a"] == math.inf and back["b"] == -math.inf and math.isnan(back["c"]) and back["d"] == 1e-300 and back["e"] == 0.1


def test_command_line_overrides_the_file():
    cfg = {"run": {"days": 0.5, "trace": "elb", "peak-qps": 9000}, "mpc": {"horizon": 40, "rho": 0.2}, "plant": {"target_load": 0.8}}
    a = _parse(["simulate", "--controller", "mpc", "--days", "0.25"], cfg)
    assert (a.days, a.trace, a.peak_qps) == (0.25, "elb", 9000.0)
    _, ctrl, plant = run_settings(a, ["mpc"])
    assert ctrl == {"mpc": {"horizon": 40, "rho": 0.2}} and plant == {"target_load": 0.8}
    b = _parse(["simulate", "--controller", "mpc", "--set", "mpc.horizon=20", "--set", "plant.target_load=0.85"], cfg)
    _, ctrl, plant = run_settings(b, ["mpc"])
    assert ctrl == {"mpc": {"horizon": 20, "rho": 0.2}} and plant == {"target_load": 0.85}
    c = _parse(["simulate", "--controller", "mpc", "--horizon", "25"], cfg)  # the shortcut beats the file ...
    assert run_settings(c, ["mpc"])[1]["mpc"]["horizon"] == 25
    d = _parse(["simulate", "--controller", "mpc", "--horizon", "25", "--set", "mpc.horizon=12"], cfg)  # ... --set beats both
    assert run_settings(d, ["mpc"])[1]["mpc"]["horizon"] == 12


def test_tables_of_controllers_not_in_the_run_are_checked_and_ignored():
    cfg = {"run": {"controller": "mpc"}, "mpc": {"horizon": 40}, "pid": {"kp": 0.3}}
    a = _parse(["compare", "--controllers", "pid,hindsight"], cfg)  # `controller` is simulate's: ignored by compare
    assert run_settings(a, ["pid", "hindsight"])[1] == {"pid": {"kp": 0.3}}
    s = _parse(["simulate"], cfg)
    assert s.controller == "mpc" and run_settings(s, ["mpc"])[1] == {"mpc": {"horizon": 40}}
    with pytest.raises(ConfigError, match=r"test.toml: unknown key pid.kpp"):
        _parse(["simulate"], {"pid": {"kpp": 1}})
    sp = _parse(["spike-test", "--controllers", "mpc"], {"run": {"factor": 4, "announced": True}, "mpc": {"max_fall": 2.0}})
    assert (sp.factor, sp.announced, sp.set) == (4.0, True, ["mpc.max_fall=2.0"])


def test_tune_reads_its_own_table_and_a_simulate_base():
    cfg = {"run": {"requests": 200}, "tune": {"traces": "elb,nasa", "trials": 7}, "mpc": {"horizon": 20}}
    a = _parse(["tune", "--horizons", "5,10"], cfg)
    assert (a.traces, a.trials) == ("elb,nasa", 7) and a.base_config is cfg
    with pytest.raises(ConfigError, match=r"unknown key tune.trails"):
        _parse(["tune"], {"tune": {"trails": 7}})
    with pytest.raises(ConfigError, match=r"unknown key run.factor"):  # the trials are simulate runs
        _parse(["tune"], {"run": {"factor": 7}})


@pytest.mark.parametrize("text,needle", [
    ("[mpc]\nhorizonn = 3\n", "unknown key mpc.horizonn"),
    ("[mpc]\nhorizon = 0\n", "bad value mpc.horizon = 0: horizon must be an integer >= 1"),
    ("[mpc]\nhorizon = 2.5\n", "bad value mpc.horizon = 2.5"),
    ("[plant]\ntarget_load = 3.0\n", "bad value plant.target_load = 3.0"),
    ("[plant]\ncapcity = [1, 2, 3]\n", "unknown key plant.capcity"),
    ("[run]\ndays = -1\n", "bad value run.days = -1: must be finite and > 0"),
    ("[run]\nsampling = \"lhs\"\n", "bad value run.sampling = 'lhs': choose from stratified, iid"),
    ("[run]\nno_progress = 1\n", "bad value run.no_progress = 1: expected true or false"),
    ("[run]\nbogus = 1\n", "unknown key run.bogus"),
    ("[pidd]\nkp = 1\n", "unknown table [pidd]"),
    ("mpc = 3\n", "mpc must be a table"),
    ("[mpc\nhorizon = 3\n", "not valid TOML"),
])
def test_bad_config_files_get_one_line_errors(text, needle, tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    assert main(["simulate", "--config", str(f), "--days", "0.01", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(f) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_config_file(capsys):
    assert main(["compare", "--config", "/nonexistent/x.toml"]) == 2
    assert "config file '/nonexistent/x.toml' not found" in capsys.readouterr().err


def test_loads_names_the_source():
    with pytest.raises(ConfigError, match="^where: not valid TOML"):
        loads_toml("a = ", "where")


def test_guard_table_sets_the_node_guard():
    a = _parse(["simulate", "--controller", "pid", "--set", "guard.gain=4"], {"guard": {"max_step": 8.0, "gain": 6.0}})
    cfg, ctrl, _ = run_settings(a, ["pid"])
    assert cfg.guard == {"rule": "proportional", "max_step": 8.0, "gain": 4} and ctrl == {}
    with pytest.raises(ConfigError, match=r"test.toml: bad value guard.step = 0.5: guard step out of range"):
        _parse(["simulate"], {"guard": {"step": 0.5}})
    with pytest.raises(ConfigError, match=r"unknown key guard.lam_max"):
        _parse(["simulate"], {"guard": {"lam_max": 5.0}})
