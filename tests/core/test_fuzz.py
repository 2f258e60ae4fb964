"""Fuzzing of the public entry points (issue 15, item 5): whatever comes in, a ValueError naming
the problem or a valid result, never another exception; lambda always finite in [lam_min, lam_max].

Bounded: each property has a small ``max_examples`` and no per-example deadline (the machines are
shared); the file runs in about 1.5 minutes (most of it the CLI's subprocesses).
"""
import contextlib
import json
import string
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import mpc_balancer as mb
from forecasting.events import parse_events
from mpc_balancer.traces import parse_trace
from policies.cost_table import CostTable, default_cost_table

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CLUSTERS = ("c0", "c1")
T0 = pd.Timestamp("2024-05-04")

floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-300, 1e300, -1.0]),
                   st.integers(-10, 10 ** 20))
junk = st.one_of(st.none(), st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=3), st.just(object()))
per_cluster = st.one_of(
    st.lists(floats, min_size=0, max_size=3),
    st.dictionaries(st.sampled_from(["c0", "c1", "c2", ""]), floats, max_size=3),
    st.fixed_dictionaries({"c0": floats, "c1": floats}),
    junk,
)
times = st.one_of(st.integers(-5, 100).map(lambda k: T0 + pd.Timedelta(minutes=k)),
                  st.integers(-10 ** 6, 10 ** 6).map(lambda k: T0 + pd.Timedelta(minutes=k)),
                  st.sampled_from(["2024-05-04 00:07", "yesterday", "", "2024-05-04T00:00+02:00"]),
                  st.integers(0, 2 ** 62), junk)
features = st.one_of(st.none(), st.just(np.zeros((0, 3))), st.just(np.full((4, 3), np.nan)),
                     st.lists(st.lists(floats, min_size=3, max_size=3), min_size=1, max_size=4).map(np.array), junk)


def history(days=3.0):
    idx = pd.date_range("2024-05-01", periods=int(days * 1440), freq="min")
    h = (idx.hour + idx.minute / 60.0).to_numpy()
    return pd.Series(1000.0 * (1 + 0.5 * np.sin(2 * np.pi * h / 24)), index=idx)


class TwoClusterPolicy:
    clusters = CLUSTERS

    def respond(self, features, lam):
        x = np.abs(np.asarray(features, float))
        c = x[:, 1:3] / (1.0 + 10.0 * np.asarray(lam, float))
        return c, x[:, 0]


@pytest.fixture(scope="module")
def balancers():
    pid = mb.Balancer.create("pid", clusters={c: mb.Cluster(capacity=1500.0) for c in CLUSTERS}, history=history(),
                             lam_min=1e-4, lam_max=3.0)
    mpc = mb.Balancer.create("mpc", clusters={c: mb.Cluster(capacity=1500.0) for c in CLUSTERS}, policy=TwoClusterPolicy(),
                             history=history(), horizon=6, lam_min=1e-4, lam_max=3.0)
    return {"pid": pid, "mpc": mpc}


@pytest.mark.parametrize("which", ["pid", "mpc"])
@given(data=st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_any_telemetry_gives_a_valid_lambda_or_a_value_error(balancers, which, data):
    bal = balancers[which]
    for _ in range(3):
        tel = mb.Telemetry(time=data.draw(times), qps=data.draw(st.one_of(floats, junk)), load=data.draw(per_cluster),
                           lam=data.draw(per_cluster), features=data.draw(features))
        try:
            d = bal.step(tel)
        except ValueError:
            continue
        lam = d.lam_vector
        assert lam.shape == (2,) and np.all(np.isfinite(lam)) and np.all((1e-4 <= lam) & (lam <= 3.0)), d
        assert d.status in ("ok", "fallback", "hold")


csv_cell = st.one_of(st.text(alphabet=string.printable, max_size=12), floats.map(str),
                     st.sampled_from(["2024-01-01 00:00", "2024-01-01T00:05+01:00", "nan", "inf", "-1", "1e300", ""]))


@given(rows=st.lists(st.lists(csv_cell, min_size=0, max_size=3), max_size=8),
       header=st.sampled_from(["timestamp,v", "timestamp", "time,v", "", "timestamp,v,w"]))
@FAST
def test_any_trace_csv_parses_or_raises_value_error(rows, header):
    text = header + "\n" + "\n".join(",".join(r) for r in rows)
    try:
        tr = parse_trace(text)
    except ValueError:
        return
    v = tr.series.to_numpy()
    assert np.all(np.isfinite(v)) and np.all(v >= 0) and tr.series.index.is_monotonic_increasing


@given(rows=st.lists(st.lists(csv_cell, min_size=0, max_size=5), max_size=6),
       header=st.sampled_from(["start,end,name", "start,end,name,expected_multiplier", "start,end", "x,y,z"]))
@example(rows=[["\r0"]], header="start,end,name")  # a bare carriage return raised csv.Error
@FAST
def test_any_events_csv_parses_or_raises_value_error(rows, header):
    try:
        cal = parse_events(header + "\n" + "\n".join(",".join(r) for r in rows))
    except ValueError:
        return
    for e in cal.events:
        assert e.end > e.start and (e.expected_multiplier is None or e.expected_multiplier > 0)


json_values = st.recursive(st.one_of(st.none(), st.booleans(), floats, st.text(max_size=6)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                           max_leaves=12)


def _paths(d, prefix=()):
    yield prefix
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d[:3]):
            yield from _paths(v, prefix + (i,))


def _replace(d, path, value):
    if not path:
        return value
    d = json.loads(json.dumps(d))
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return d


COST_TABLE = default_cost_table().to_dict()
COST_PATHS = list(_paths(COST_TABLE))


@given(path=st.sampled_from(COST_PATHS), value=json_values)
@FAST
def test_any_cost_table_loads_or_raises_value_error(path, value):
    with contextlib.suppress(ValueError):
        CostTable.from_dict(_replace(COST_TABLE, path, value))


@pytest.fixture(scope="module")
def checkpoint(balancers):
    bal = mb.Balancer.create("mpc", clusters={c: mb.Cluster(capacity=1500.0) for c in CLUSTERS}, policy=TwoClusterPolicy(),
                             history=history(), horizon=6, lam_min=1e-4, lam_max=3.0)
    for k in range(5):
        bal.step(mb.Telemetry(time=T0 + pd.Timedelta(minutes=k), qps=900.0, load={"c0": 0.8, "c1": 0.7},
                              lam={"c0": 0.05, "c1": 0.05}, features=np.abs(np.random.default_rng(k).normal(1, 0.3, (50, 3)))))
    return bal, json.loads(json.dumps(bal.state_dict()))


@given(data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_any_checkpoint_restores_or_is_refused_unchanged(checkpoint, data):
    bal, state = checkpoint
    paths = list(_paths(state))
    path = data.draw(st.sampled_from(paths))
    broken = _replace(state, path, data.draw(json_values))
    before = json.dumps(bal.state_dict())
    try:
        bal.load_state_dict(broken)
    except ValueError:
        assert json.dumps(bal.state_dict()) == before, path  # all or nothing
        return
    try:  # accepted (a value the checks admit): the next tick still gives a valid lambda
        d = bal.step(mb.Telemetry(time=T0 + pd.Timedelta(minutes=30), qps=900.0, load={"c0": 0.8, "c1": 0.7},
                                  lam={"c0": 0.05, "c1": 0.05}, features=np.ones((20, 3))))
        assert np.all(np.isfinite(d.lam_vector)) and np.all((1e-4 <= d.lam_vector) & (d.lam_vector <= 3.0)), (path, d)
    finally:
        bal.load_state_dict(state)


@given(opts=st.lists(st.tuples(st.sampled_from(["--days", "--period", "--seed", "--peak-qps", "--horizon", "--requests",
                                                "--set", "--trace", "--policy", "--start"]),
                               st.one_of(st.sampled_from(["-5", "0", "nan", "1e300", "0.0001", "x", "100000", "pid.kp",
                                                          "/", "mpc.horizon=0", "2099-01-01"]),
                                         st.text(alphabet=string.printable, max_size=6))),
                     min_size=1, max_size=2))
@settings(max_examples=5, deadline=None)
def test_any_bad_cli_option_is_one_line(opts):
    args = [a for pair in opts for a in pair]
    if ("--days" not in args) or any(v in ("0.0001",) for v in args):
        args += ["--days", "0.0001"]  # fails fast when everything else is fine
    p = subprocess.run([sys.executable, "-m", "mpc_balancer.cli", "simulate", "--trace", "elb", "--no-progress", *args],
                       capture_output=True, text=True, timeout=300)
    assert "Traceback" not in p.stderr, (args, p.stderr[-2000:])
    assert p.returncode in (0, 2), (args, p.stderr)
