"""A hostile user's pass over the less-trodden commands (forecast, testbench, mtorl, policies,
spike-test, fault-test, config show, tune): every bad input is a one-line error naming the option
and the value (argparse's exit 2 or ``main``'s), never a traceback from numpy/pandas/Optuna, and
nothing is silently ignored, overwritten or left half-written.

Each test stops at the check (before any long run), except the few that run a study or a training
of a few seconds to show the outputs.
"""
import argparse
import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import pytest

from mpc_balancer.cli import build_parser, main


def _err(capsys) -> str:
    """The command's stderr, which must be one error line (argparse may add its usage above it)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def _parse_error(capsys, argv) -> str:
    """The error line of a command line argparse refuses (exit 2, before the command runs)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return _err(capsys)


def _strict_json(text: str):
    """``json.loads`` that refuses the non-JSON ``NaN``/``Infinity`` Python writes by default."""
    def refuse(name):
        raise ValueError(f"non-JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


# -- config show -------------------------------------------------------------------------------------------------
def test_config_show_errors_name_the_config_command_not_its_command_option(capsys):
    """``config show --command`` had dest ``command``, the top-level subcommand's: errors read
    ``mpc-balancer simulate: error`` for a ``config`` command."""
    assert main(["config", "show", "--controller", "nope"]) == 2
    err = _err(capsys)
    assert err.startswith("mpc-balancer config: error:") and "nope" in err


def test_config_show_out_is_a_checked_output(tmp_path, capsys):
    """``--out`` overwrote an existing file silently and a directory was an IsADirectoryError traceback."""
    f = tmp_path / "mine.toml"
    f.write_text("precious = 1\n")
    assert main(["config", "show", "--out", str(f)]) == 2
    assert "--out" in _err(capsys) and f.read_text() == "precious = 1\n"
    assert main(["config", "show", "--out", str(tmp_path)]) == 2
    assert "is a directory" in _err(capsys)
    assert main(["config", "show", "--out", str(f), "--force"]) == 0
    assert "[mpc]" in f.read_text()


@pytest.mark.parametrize("command,controller", [("spike-test", "mpc"), ("spike-test", "pid"), ("compare", "mpc"),
                                                ("compare", "nmpc")])
def test_config_show_file_runs_under_its_command(tmp_path, command, controller):
    """The shown file must run as it is under ``COMMAND --config``: spike-test rejected its
    ``[plant]`` table, and compare's controllers list lacked the shown controller, whose table
    was then checked and ignored."""
    from mpc_balancer.cli.config import reparse
    from mpc_balancer.sim.experiment import parse_overrides

    f = tmp_path / "c.toml"
    assert main(["config", "show", "--command", command, "--controller", controller, "--out", str(f)]) == 0
    parser = build_parser()
    argv = [command, "--config", str(f)]
    args = reparse(parser, argv, parser.parse_args(argv))
    assert controller in args.controllers.split(",")
    ctrl, plant = parse_overrides(args.set)
    assert controller in ctrl  # the shown controller's table reaches the run
    if command == "spike-test":
        assert plant == {}


def test_config_file_with_a_byte_order_mark_is_read(tmp_path, capsys):
    """A UTF-8 file saved by a Windows editor starts with a BOM: ``not valid TOML: Invalid statement
    (at line 1, column 1)``. UTF-16 is an error that says the file is not UTF-8."""
    from mpc_balancer.cli.config import reparse

    f = tmp_path / "bom.toml"
    f.write_bytes(b"\xef\xbb\xbf[run]\nfactor = 4.0\n")
    parser = build_parser()
    argv = ["spike-test", "--config", str(f)]
    assert reparse(parser, argv, parser.parse_args(argv)).factor == 4.0
    f.write_text("[run]\nfactor = 4.0\n", encoding="utf-16")
    assert main(argv) == 2
    assert "not UTF-8" in _err(capsys)


# -- forecast backtest -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opt,value", [("--test-days", "inf"), ("--test-days", "nan"), ("--train-days", "-1"),
                                       ("--horizon", "0"), ("--refit-every", "0"), ("--refit-every", "-2")])
def test_forecast_backtest_rejects_bad_numbers_by_name(opt, value, capsys):
    """``--test-days inf`` was an OverflowError traceback; ``--refit-every 0`` was taken as the default."""
    err = _parse_error(capsys, ["forecast", "backtest", "--trace", "nasa", "--models", "seasonal_naive", opt, value])
    assert opt in err and value in err


def test_forecast_backtest_test_window_shorter_than_horizon_is_explained(capsys):
    """A test window shorter than the horizon had no origin: ``need at least one array to stack``."""
    assert main(["forecast", "backtest", "--trace", "nasa", "--models", "seasonal_naive", "--test-days", "0.05"]) == 2
    err = _err(capsys)
    assert "horizon" in err and "test_days=0.05" in err and "stack" not in err


@pytest.mark.parametrize("models,train_days", [("seasonal_naive", "0.5"), ("sarima", "1.5")])
def test_forecast_backtest_short_training_window_names_train_days(models, train_days, capsys):
    """A short ``--train-days`` was reported in the models' terms (``MASE scale needs more than
    season=288 history points``, ``y has 432 non-missing points``) without naming the option."""
    assert main(["forecast", "backtest", "--trace", "elb", "--models", models, "--test-days", "0.2",
                 "--train-days", train_days]) == 2
    assert f"train_days={train_days}" in _err(capsys)


def test_two_outputs_on_one_path_are_an_error(tmp_path, capsys):
    """``--json F --plot F``: the plot silently replaced the JSON."""
    f = tmp_path / "same.out"
    assert main(["forecast", "backtest", "--trace", "nasa", "--models", "seasonal_naive", "--json", str(f),
                 "--plot", str(tmp_path / "." / "same.out")]) == 2
    err = _err(capsys)
    assert "--json and --plot" in err and not f.exists()
    assert main(["fault-test", "--controllers", "pid", "--json", str(f), "--out", str(f)]) == 2
    assert "--json and --out" in _err(capsys) and not f.exists()


def test_backtest_library_refit_every_zero_is_an_error():
    import numpy as np
    import pandas as pd

    from forecasting import ForecastInputError, SeasonalNaive, backtest

    idx = pd.date_range("2024-01-01", periods=288 * 4, freq="5min")
    y = pd.Series(np.arange(len(idx), dtype=float) % 288 + 1.0, index=idx)
    with pytest.raises(ForecastInputError, match="refit_every"):
        backtest(y, lambda: SeasonalNaive(), horizon=4, test_days=1.0, refit_every=0)
    with pytest.raises(ForecastInputError, match="finite"):
        backtest(y, lambda: SeasonalNaive(), horizon=4, test_days=math.inf)


# -- testbench ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opt,value", [("--qps", "inf"), ("--duration", "inf"), ("--warmup", "nan"),
                                       ("--repeats", "0"), ("--cores", "-1")])
def test_testbench_run_rejects_bad_numbers_by_name(opt, value, capsys):
    """``--qps inf``/``--duration inf`` were OverflowError tracebacks and ``--warmup nan`` ran."""
    err = _parse_error(capsys, ["testbench", "run", "--workload", "builtin:ranking", opt, value])
    assert opt in err and value in err


def test_testbench_huge_rate_is_refused_before_allocating(capsys):
    """``--qps 1e12`` allocated 149 GiB for one window's request times (MemoryError traceback)."""
    assert main(["testbench", "run", "--workload", "builtin:ranking", "--queues", "25", "--qps", "1e12"]) == 2
    err = _err(capsys)
    assert "qps" in err and "requests per repeat window" in err


def test_testbench_empty_variants_is_an_error(capsys):
    """``--variants ''`` silently meant every variant, while ``--queues ''`` was an error."""
    assert main(["testbench", "run", "--workload", "builtin:ranking", "--variants", ""]) == 2
    assert "--variants" in _err(capsys)


def test_testbench_workload_in_the_current_directory_gets_a_hint(tmp_path, monkeypatch):
    """The console script does not import from the current directory: ``--workload mywl:fn`` with
    mywl.py beside the user said only ``No module named 'mywl'``."""
    import os as _os

    from policies.testbench.workloads import resolve_workload

    (tmp_path / "mywl_hostile.py").write_text("def fn(queue, variant, value_bucket):\n    return [0] * queue\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".") and not (
        _os.path.isdir(p) and _os.path.samefile(p, tmp_path))])
    with pytest.raises(ValueError, match="PYTHONPATH=."):
        resolve_workload("mywl_hostile:fn")


def test_cost_table_save_interrupted_keeps_the_old_table(tmp_path, monkeypatch):
    """``testbench fit --out T --force`` over a table that runs read: Ctrl-C during the write left
    T truncated (a plain ``write_text``), and every later ``--cost-table T`` failed."""
    from pathlib import Path

    from policies.cost_table import default_cost_table, load_cost_table

    table = default_cost_table()
    target = tmp_path / "table.json"
    table.save(target)
    before = target.read_text()
    real = Path.write_text

    def half_then_interrupt(self, data, *a, **k):
        real(self, data[: len(data) // 2], *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        table.save(target)
    monkeypatch.undo()
    assert target.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]
    load_cost_table(target)


def test_testbench_check_tolerance_must_be_finite(capsys):
    """``--tolerance nan`` reported every table as BEYOND nan% (exit 1), ``-1`` as BEYOND -100%."""
    for value in ("nan", "-1"):
        with pytest.raises(SystemExit):
            main(["testbench", "check", "--cost-table", "x.json", "--measurements", "m.json", "--tolerance", value])
        assert "--tolerance" in _err(capsys)


def test_testbench_measurements_in_another_encoding_name_the_file(tmp_path, capsys):
    """A UTF-16 BOM made json.loads raise UnicodeDecodeError, reported without the file's name."""
    bad = tmp_path / "m.json"
    bad.write_bytes(b"\xff\xfe{")
    assert main(["testbench", "fit", "--measurements", str(bad), "--out", str(tmp_path / "t.json")]) == 2
    assert "m.json" in _err(capsys)


# -- mtorl -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,needle", [
    (["train", "--max-epochs", "0"], "--max-epochs"),
    (["train", "--max-epochs", "-1"], "--max-epochs"),
    (["train", "--penalty", "nan"], "--penalty"),
    (["train", "--penalty", "inf"], "--penalty"),
    (["train", "--seed", "-1"], "--seed"),
    (["evaluate", "--prior-weight", "nan"], "--prior-weight"),
    (["evaluate", "--max-epochs", "0"], "--max-epochs"),
    (["diagnose", "--seed", "-1"], "--seed"),
    (["diagnose", "--windows", "100000000"], "--windows"),
])
def test_mtorl_rejects_bad_numbers_by_name(tmp_path, argv, needle, capsys):
    """``--max-epochs 0`` saved an untrained model, ``--penalty nan`` a model of NaNs (whose
    metrics.json held the non-JSON ``NaN``), ``--seed -1`` failed in numpy without the option's name."""
    if argv[0] == "train":
        argv = [*argv, "--out", str(tmp_path / "m")]
    assert main(["mtorl", *argv]) == 2
    assert needle in _err(capsys)
    assert not (tmp_path / "m" / "model.npz").exists()


def _journeys(path, users, channel=lambda u, s: (u + s) % 3, cost=1.0):
    rows = ["user_id,step,channel,reward,cost,age"]
    rows += [f"u{u},{s},{channel(u, s)},{u % 2},{cost},{u / 10}" for u in range(users) for s in range(2)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("users", [1, 3, 8])
def test_mtorl_too_few_users_for_the_split(tmp_path, users, capsys):
    """1-5 (or 8) users left the validation or test part empty: NaN AUC in the output or a
    ZeroDivisionError traceback in evaluate."""
    data = _journeys(tmp_path / "j.csv", users)
    for cmd in (["train", "--out", str(tmp_path / "m")], ["evaluate", "--seeds", "1"]):
        assert main(["mtorl", *cmd, "--data", str(data), "--max-epochs", "1"]) == 2
        err = _err(capsys)
        assert f"{users} user(s)" in err and "j.csv" in err


def test_mtorl_evaluate_zero_logged_cost_is_an_error(tmp_path, capsys):
    """Costs of 0 make a budget of 0: a ZeroDivisionError traceback."""
    data = _journeys(tmp_path / "j.csv", 10, cost=0.0)
    assert main(["mtorl", "evaluate", "--data", str(data), "--seeds", "1", "--max-epochs", "1"]) == 2
    assert "cost is 0" in _err(capsys)


def test_mtorl_negative_cost_and_empty_file_name_the_problem(tmp_path, capsys):
    neg = _journeys(tmp_path / "n.csv", 10, cost=-1.0)
    assert main(["mtorl", "train", "--data", str(neg), "--out", str(tmp_path / "m")]) == 2
    assert "column 'cost'" in _err(capsys)
    empty = tmp_path / "e.csv"
    empty.write_text("")
    assert main(["mtorl", "train", "--data", str(empty), "--out", str(tmp_path / "m")]) == 2
    assert "e.csv" in _err(capsys)  # was pandas' bare "No columns to parse from file"


def test_mtorl_train_metrics_are_strict_json(tmp_path, capsys):
    """A single-channel test set has no AUC: metrics.json and stdout held the non-JSON ``NaN``."""
    data = _journeys(tmp_path / "j.csv", 10, channel=lambda u, s: 0)
    assert main(["mtorl", "train", "--data", str(data), "--max-epochs", "1", "--out", str(tmp_path / "m")]) == 0
    metrics = _strict_json((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["channel_auc"] is None
    _strict_json(capsys.readouterr().out)


# -- policies ----------------------------------------------------------------------------------------------------
def test_policies_evaluate_bundle_without_pretrained_is_an_error(capsys):
    """``--bundle B`` without ``pretrained`` in ``--algos`` was ignored (and the run took minutes)."""
    assert main(["policies", "evaluate", "--quick", "--algos", "vdn", "--bundle", "mine"]) == 2
    err = _err(capsys)
    assert "--bundle" in err and "pretrained" in err


def test_policies_export_out_is_a_checked_output(tmp_path, capsys):
    """``export --out`` overwrote an existing file silently; a directory was a traceback."""
    f = tmp_path / "model.onnx"
    f.write_bytes(b"mine")
    assert main(["policies", "export", "--out", str(f)]) == 2
    assert "--out" in _err(capsys) and f.read_bytes() == b"mine"
    assert main(["policies", "export", "--out", str(tmp_path)]) == 2
    assert "is a directory" in _err(capsys)


# -- spike-test and fault-test -----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["spike-test", "fault-test"])
@pytest.mark.parametrize("value", ["", ",", "pid,pid"])
def test_scenario_controllers_empty_or_repeated(command, value, capsys):
    """An empty ``--controllers`` printed an empty table with exit 0 (spike-test) or ``error: _logs``
    (fault-test); a repeated one ran once."""
    assert main([command, "--controllers", value]) == 2
    assert "--controllers" in _err(capsys)


def test_fault_test_empty_faults_is_an_error(capsys):
    """``--faults ''`` ran only the no-fault baseline and reported success."""
    assert main(["fault-test", "--controllers", "pid", "--faults", ""]) == 2
    assert "--faults" in _err(capsys)


def test_fault_test_too_short_for_the_recovery_window(capsys):
    """``--days 0.01`` ran, with the fault and the 'after' window past the run's end: every
    fault reported 'nu after nan' and 'recovered NO'."""
    assert main(["fault-test", "--controllers", "pid", "--faults", "stale", "--days", "0.01"]) == 2
    err = _err(capsys)
    assert "--days 0.01" in err and "minutes" in err


def test_spike_test_duration_beyond_the_window_and_plant_options(capsys):
    with pytest.raises(SystemExit):
        main(["spike-test", "--duration", "100000"])
    assert "--duration" in _err(capsys)
    assert main(["spike-test", "--controllers", "pid", "--set", "plant.target_load=0.5"]) == 2
    assert "plant.target_load" in _err(capsys)


@pytest.mark.parametrize("item,needle", [("mpc.horizon=5", "mpc is not in --controllers"),
                                          ("pid.kq=1", "unknown key pid.kq"), ("guard.nope=1", "unknown key guard.nope")])
def test_spike_test_set_is_checked_before_the_run(item, needle, capsys):
    """``--set mpc.horizon=5`` with ``--controllers pid`` was silently ignored; a misspelt key was a
    constructor's TypeError (``guard.nope`` one from the simulator)."""
    assert main(["spike-test", "--controllers", "pid", "--set", item]) == 2
    assert needle in _err(capsys)


def test_spike_test_set_guard_rule_still_accepted(tmp_path):
    out = tmp_path / "s.json"
    assert main(["spike-test", "--controllers", "pid", "--requests", "20", "--duration", "1", "--subticks", "1",
                 "--set", "guard.rule=none", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["guard"]["rule"] == "none"


# -- tune --------------------------------------------------------------------------------------------------------
needs_optuna = pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="the tune extra (Optuna)")


def _tune(tmp_path, *extra):
    return ["tune", "--horizons", "5", "--days", "0.01", "--jobs", "1", "--no-progress",
            "--out", str(tmp_path / "t"), *extra]


@needs_optuna
def test_tune_grid_of_one_point_completes(tmp_path, capsys):
    """``--horizons 5`` (and a one-choice space under --grid) failed with ``error: grid_id``:
    Optuna's grid sampler reads a grid id that queued trials do not have."""
    out = tmp_path / "s.json"
    assert main(_tune(tmp_path, "--json", str(out))) == 0
    d = _strict_json(out.read_text())
    assert [t["state"] for t in d["trials"]] == ["COMPLETE"]


@needs_optuna
def test_tune_outputs_are_checked_before_the_study(tmp_path, capsys):
    """``--json DIR`` failed after the whole study (traceback); ``--out FILE`` was a FileExistsError
    traceback."""
    assert main(_tune(tmp_path, "--json", str(tmp_path))) == 2
    assert "--json" in _err(capsys)
    assert not (tmp_path / "t" / "study.journal").exists()
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["tune", "--horizons", "5", "--days", "0.01", "--out", str(f)]) == 2
    assert "--out" in _err(capsys)


@needs_optuna
@pytest.mark.parametrize("extra,needle", [
    (["--seeds", "-1"], "--seeds"),
    (["--seeds", "0,0"], "--seeds"),
    (["--traces", "elb,elb"], "--traces"),
    (["--sampler", "random"], "--sampler"),
    (["--workers-only"], "--workers-only"),
    (["--days", "0.0001"], "--days 0.0001"),
    (["--horizons", "2000"], "--horizons 2000"),
])
def test_tune_contradictions_and_bad_seeds(tmp_path, extra, needle, capsys):
    """``--seeds -1`` failed inside the first trial as ``mpc-balancer simulate: error: argument --seed``;
    a repeated seed weighed twice; ``--sampler`` was ignored under ``--horizons``; ``--workers-only``
    with a journal created the study before refusing; ``--days 0.0001`` failed after creating it;
    ``--horizons 2000`` (beyond the day that ``--horizon`` is limited to) ran, passed as --set."""
    assert main(_tune(tmp_path, *extra)) == 2
    assert needle in _err(capsys)
    assert not (tmp_path / "t" / "study.journal").exists()


@needs_optuna
def test_tune_days_beyond_simulate_limit_is_an_argparse_error(tmp_path, capsys):
    """``--days 1e9`` failed inside the first trial with simulate's usage and a study left behind."""
    with pytest.raises(SystemExit):
        main(_tune(tmp_path, "--days", "1e9"))
    err = _err(capsys)
    assert err.startswith("mpc-balancer tune: error: argument --days")
    assert not (tmp_path / "t").exists()


@needs_optuna
def test_tune_space_horizon_beyond_a_day_is_an_error(tmp_path, capsys):
    """A space whose mpc.horizon reaches past a day ran (its trials pass the horizon as --set,
    which skips the limit --horizon has)."""
    space = tmp_path / "space.toml"
    space.write_text('[mpc.horizon]\ntype = "int"\nlow = 10\nhigh = 5000\n')
    assert main(["tune", "--space", str(space), "--days", "0.01", "--out", str(tmp_path / "t")]) == 2
    err = _err(capsys)
    assert "space.toml" in err and "5000" in err
    assert not (tmp_path / "t").exists()


@needs_optuna
def test_tune_storage_directory_is_an_error(tmp_path, capsys):
    assert main(_tune(tmp_path, "--storage", str(tmp_path))) == 2
    assert "--storage" in _err(capsys)


def test_tune_best_dir_drops_settings_no_longer_best(tmp_path):
    """A resumed study, or another study in the same --out, left earlier best/trial-N.toml files
    beside the current ones, as if they were all best. Files not written by tune are kept."""
    from mpc_balancer.sim.tuning import BEST_HEADER, _remove_stale_best

    best = tmp_path / "best"
    best.mkdir()
    (best / "trial-0003.toml").write_text(BEST_HEADER + "s (trial 3)\n")
    (best / "trial-0007.toml").write_text(BEST_HEADER + "s (trial 7)\n")
    (best / "trial-0009.toml").write_text("# my own notes\n")
    _remove_stale_best(best, {7})
    assert sorted(p.name for p in best.iterdir()) == ["trial-0007.toml", "trial-0009.toml"]


def test_nonnegative_type_rejects_nan_and_inf():
    from mpc_balancer.cli.args import nonnegative

    parse = nonnegative(float)
    assert parse("0") == 0.0 and parse("2.5") == 2.5
    for bad in ("nan", "inf", "-1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)


def test_closed_stdout_pipe_is_not_a_traceback():
    """``mpc-balancer ... | head``: the reader leaving raised BrokenPipeError with a traceback."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mpc_balancer.cli", "config", "show", "--command", "compare"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # before the command has imported anything, so its first write finds no reader
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err


# -- --set values that are not numbers ---------------------------------------------------------------------------
@pytest.mark.parametrize("setting, message", [
    ("pid.kp=nan", "kp must be a finite number >= 0, got nan"),
    ("pid.kp=abc", "kp must be a finite number >= 0, got 'abc'"),
    ("pid.ki=true", "ki must be a finite number >= 0, got True"),
    ("nmpc.beta=abc", "beta must be finite and >= 0, got 'abc'"),
    ("nmpc.alpha=x", r"alpha must be in \(0, 1\], got 'x'"),
    ("shooting.sigma=-Infinity", "sigma must be a finite number >= 0, got -inf"),
])
def test_set_values_that_are_not_numbers_are_named(capsys, setting, message):
    """``--set pid.kp=nan`` kept ``nan`` as a string and the controller's check hit numpy's
    ``ufunc 'isfinite' not supported`` (named neither the key nor the value)."""
    controller = setting.split(".")[0]
    assert main(["simulate", "--controller", controller, "--days", "0.01", "--set", setting]) == 2
    err = _err(capsys)
    assert "ufunc" not in err
    assert re.search(message, err), err
