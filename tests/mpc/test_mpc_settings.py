"""The MPC's settings: one dataclass, validated in one place, the options every front end names."""
import dataclasses
import re

import pytest

from mpc_balancer.config import controller_defaults
from mpc_balancer.controllers import MpcController, make_controller
from mpc_balancer.controllers.mpc import MpcSettings
from mpc_balancer.sim.config import check_section


def test_the_controller_takes_exactly_the_settings_fields():
    c = MpcController(horizon=12, backoff_target=0.01, max_fall=None)
    assert c.settings == MpcSettings(horizon=12, backoff_target=0.01, max_fall=None)
    assert c.horizon == 12 and c.settings.max_fall is None
    defaults = {f.name: f.default for f in dataclasses.fields(MpcSettings)}
    assert controller_defaults("mpc") == defaults  # what [mpc] tables and --set accept
    assert MpcController().settings == MpcSettings(**defaults)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.settings.horizon = 3  # settings change by making new ones, validated again


@pytest.mark.parametrize("field,value,needle", [
    ("horizon", 0, "horizon must be an integer >= 1, got 0"),
    ("grid_points", 2.5, "grid_points must be an integer >= 1"),
    ("solver", "gurobi", "solver must be 'osqp' or 'cvxpy'"),
    ("frontier", "spline", "frontier must be 'quadratic'"),
    ("offset_gain", 0.0, "offset_gain must be in (0, 1]"),
    ("backoff_target", 1.5, "backoff_target out of range: 1.5"),
    ("backoff_initial", 0.5, "backoff_initial out of range: 0.5"),
    ("max_fall", 1.0, "max_fall must be > 1"),
    ("backoff_burst_ratio", 1.0, "backoff_burst_ratio must be a finite number > 1, got 1.0"),
    ("backoff_burst_ratio", float("nan"), "backoff_burst_ratio must be a finite number > 1"),
    ("refine_above", 0.5, "refine_above must be >= 1"),
    ("local_points", -1, "local_points must be an integer >= 0, got -1"),
    ("local_points", 1.5, "local_points must be an integer >= 0, got 1.5"),
    ("objective", "profit", "objective"),
    ("rho", -1.0, "mpc weight rho must be finite and >= 0"),
    ("response", "guess", "response must be one of"),
    ("dither", 2.0, "dither must be in [0, 1]"),
    ("telemetry_min_ticks", 0, "min_ticks"),
])
def test_each_bad_setting_is_named(field, value, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        MpcSettings(**{field: value})
    with pytest.raises(ValueError, match=field):  # the same check behind every front end
        check_section("mpc", {field: value}, "test.toml")


def test_unknown_settings_are_rejected_by_name():
    with pytest.raises(ValueError, match="bogus"):
        make_controller("mpc", bogus=1)


def test_integer_settings_are_normalised_once():
    import numpy as np

    s = MpcSettings(horizon=np.int64(7), backoff_gain=np.float32(0.25))
    assert type(s.horizon) is int and s.horizon == 7 and type(s.backoff_gain) is float
