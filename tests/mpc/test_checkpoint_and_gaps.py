"""Bounded, validated checkpoints and the telemetry gap policy (issue 15, items 1, 2 and 6)."""
import json
import logging

import numpy as np
import pandas as pd
import pytest

import mpc_balancer as mb
from mpc_balancer.forecast import TickForecaster

PERIOD = pd.Timedelta(minutes=5)
CLUSTERS = ("c0", "c1")


def history(days=3.0):
    idx = pd.date_range("2024-05-01", periods=int(days * 288), freq="5min")
    h = (idx.hour + idx.minute / 60.0).to_numpy()
    noise = 1 + 0.03 * np.random.default_rng(0).standard_normal(len(idx))  # a pure sine leaves the ARMA fit nothing to fit
    return pd.Series(1000.0 * (1 + 0.5 * np.sin(2 * np.pi * h / 24)) * noise, index=idx)


def make(**fc):
    """A telemetry-only MPC on a 5-minute period, with a forecaster whose windows fill in a day or
    two (so that boundedness shows in a short test)."""
    opts = dict(history_days=2.5, calib_window=60, refit_every=96, warm_calib=60, calib_horizon=12) | fc
    return mb.Balancer.create("mpc", clusters={c: mb.Cluster(capacity=1500.0) for c in CLUSTERS}, policy=None,
                              history=history(), period_s=300, horizon=8, telemetry_window=100,
                              forecaster=TickForecaster(**opts))


class Plant:
    """load = qps x cost(lambda) / capacity with a daily cycle; the same for every Balancer fed."""

    def __init__(self, start):
        self.t, self.load, self.lam = start, np.full(2, 0.6), np.full(2, 0.05)

    def telemetry(self, t=None):
        t = self.t if t is None else t
        h = t.hour + t.minute / 60.0
        self.qps = 1000.0 * (1 + 0.5 * np.sin(2 * np.pi * h / 24)) * (1 + 0.03 * np.sin(t.value / 7.3e11))
        return mb.Telemetry(time=t, qps=self.qps, load=dict(zip(CLUSTERS, self.load)), lam=dict(zip(CLUSTERS, self.lam)))

    def apply(self, lam, dt=PERIOD):
        self.lam = np.asarray(lam, float)
        self.load = self.qps * np.array([1.1, 0.9]) * (0.4 + 0.1 / (1.0 + 20.0 * self.lam)) / 1500.0 * 3.0
        self.t = self.t + dt


def skeleton(v):
    """The checkpoint's structure: packed arrays by shape, lists by length, numbers as 0, flags as
    "bool"."""
    if isinstance(v, dict):
        if set(v) == {"dtype", "shape", "data"}:
            return ("array", v["dtype"], tuple(v["shape"]))
        return {k: skeleton(x) for k, x in v.items()}
    if isinstance(v, list):
        return [skeleton(x) for x in v]
    if isinstance(v, bool):
        return "bool"
    return 0 if isinstance(v, (int, float)) else v


def test_checkpoint_size_does_not_grow_with_the_ticks():
    bal = make()
    plant = Plant(bal.ctx_.history_times[-1] + PERIOD)
    shapes = {}
    for k in range(401):
        plant.apply(bal.step(plant.telemetry()).lam_vector)
        if k in (200, 400):  # windows (2.5 days of history, 60 scored ticks, 100 telemetry points) full
            state = bal.state_dict()
            shapes[k] = skeleton(json.loads(json.dumps(state)))
            assert "observed" not in state  # no replay log
    assert shapes[200] == shapes[400]


def test_restore_every_few_ticks_gives_the_same_decisions_bit_for_bit_through_gaps_and_refits():
    """A kill and restore every 37 ticks, through refits (every 96 buckets), a 40-minute gap (filled)
    and a two-day gap (skipped): every decision equals the uninterrupted Balancer's."""
    a = make()
    b = make()
    plant = Plant(a.ctx_.history_times[-1] + PERIOD)
    statuses = []
    for k in range(330):
        if k % 37 == 5:
            b = make()
            b.load_state_dict(json.loads(json.dumps(a.state_dict())))
        tel = plant.telemetry()
        da, db = a.step(tel), b.step(tel)
        np.testing.assert_array_equal(da.lam_vector, db.lam_vector, err_msg=f"tick {k}")
        assert (da.status, da.reason) == (db.status, db.reason)
        statuses.append(da.status)
        gap = {120: pd.Timedelta(minutes=40), 200: pd.Timedelta(days=2)}.get(k, PERIOD)
        plant.apply(da.lam_vector, gap)
    assert statuses.count("hold") == 1  # the first report after the two-day gap, until the next confirms it
    assert statuses[-100:].count("ok") == 100


def test_a_stamp_a_year_ahead_is_held_and_changes_nothing():
    """It raised after 6.4 s and left the forecaster 26 days ahead, lambda up to 5.5x off."""
    a, ref = make(), make()
    plant = Plant(a.ctx_.history_times[-1] + PERIOD)
    for k in range(60):
        tel = plant.telemetry()
        if k == 30:
            typo = a.step(plant.telemetry(plant.t + pd.Timedelta(days=365)))
            assert typo.status == "hold" and "jumps 365 days" in typo.reason
        da, dr = a.step(tel), ref.step(tel)
        np.testing.assert_array_equal(da.lam_vector, dr.lam_vector)
        assert (da.status, da.reason) == (dr.status, dr.reason) and da.status != "hold"
        plant.apply(dr.lam_vector)


def test_a_thirty_day_outage_resumes_without_raising(caplog):
    """A real 30-day outage and then normal resume: 60 of 60 steps raised and never fell back."""
    bal = make()
    plant = Plant(bal.ctx_.history_times[-1] + PERIOD)
    for _ in range(40):  # past the telemetry MPC's 30-tick warm-up
        plant.apply(bal.step(plant.telemetry()).lam_vector)
    plant.t += pd.Timedelta(days=30)
    with caplog.at_level(logging.INFO, logger="mpc_balancer"):
        decs = []
        for _ in range(62):
            d = bal.step(plant.telemetry())
            decs.append(d)
            plant.apply(d.lam_vector)
    assert decs[0].status == "hold" and [d.status for d in decs[1:]] == ["ok"] * 61, [d.reason for d in decs]
    assert any("telemetry resumed after a gap" in r.message for r in caplog.records)
    assert any("skipped" in r.message for r in caplog.records)
    fc = bal.forecaster
    assert len(fc.model_.y_) <= fc.model_.max_len_  # the gap is not materialised beyond the window
    f = fc.predict(8)
    assert np.all(np.isfinite(f["mean"])) and np.all(f["mean"] > 0)


def test_a_refit_without_data_keeps_the_model_and_logs(caplog):
    fc = TickForecaster(history_days=2.0, refit_every=4, warm_calib=0)
    h = history()
    fc.fit(h.to_numpy(), h.index, 300.0)
    beta = fc.model_.beta_.copy()
    with caplog.at_level(logging.WARNING, logger="mpc_balancer"):
        t = h.index[-1] + pd.Timedelta(days=10)  # the retained two days are now all missing
        for k in range(12):
            fc.observe(t + k * PERIOD, 900.0)
            fc.predict(8)
    assert any("refit failed" in r.message for r in caplog.records)
    np.testing.assert_array_equal(fc.model_.beta_, beta)


def test_background_refits_give_the_same_forecasts_as_inline_ones():
    h = history(4.0)
    out = []
    for background in (True, False):
        fc = TickForecaster(history_days=2.5, refit_every=40, warm_calib=60, calib_horizon=12, refit_in_background=background)
        fc.fit(h.to_numpy()[:-100], h.index[:-100], 300.0)
        out.append(np.array([fc.predict(8)["hi"] for t, q in zip(h.index[-100:], h.to_numpy()[-100:])
                             if fc.observe(t, q * 1.03) is None]))
    np.testing.assert_array_equal(out[0], out[1])


# ------------------------------------------------------------------------------ validation
def _corrupt(state, path, value):
    d = json.loads(json.dumps(state))
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value(node[path[-1]]) if callable(value) else value
    return d


def test_a_bad_checkpoint_names_the_field_and_changes_nothing():
    a = make()
    plant = Plant(a.ctx_.history_times[-1] + PERIOD)
    for _ in range(30):
        plant.apply(a.step(plant.telemetry()).lam_vector)
    good = json.loads(json.dumps(a.state_dict()))
    b = make()
    for _ in range(3):
        plant_b = Plant(b.ctx_.history_times[-1] + PERIOD)
        plant_b.apply(b.step(plant_b.telemetry()).lam_vector)
    before = json.dumps(b.state_dict())
    beta = good["forecaster"]["model"]["beta"]
    cases = [
        (("version",), 1, "checkpoint version must be 2, got 1"),
        (("forecaster", "model", "beta"), beta | {"shape": [beta["shape"][0] + 1]}, r"checkpoint.forecaster.model.beta must have shape"),
        (("forecaster", "model", "beta"), beta | {"data": "not base64!"}, r"checkpoint.forecaster.model.beta.data is not a packed array"),
        (("forecaster", "model", "sigma2"), -1.0, r"checkpoint.forecaster.model.sigma2 must be finite and in \[0.0"),
        (("forecaster", "model", "kd"), "4", r"checkpoint.forecaster.model.kd must be an integer"),
        (("forecaster", "last_qps"), float("inf"), r"checkpoint.forecaster.last_qps must be finite"),
        (("forecaster", "errors"), lambda e: e | {"dtype": "i8"}, r"checkpoint.forecaster.errors must have dtype 'f8'"),
        (("forecaster", "model", "grid"), [0, 1], r"checkpoint.forecaster.model.grid is \[0, 1\]"),
        (("controller_state", "theta"), [float("inf"), 1.0], r"checkpoint.controller_state.theta\[0\] is inf"),
        (("controller_state",), lambda c: {k: v for k, v in c.items() if k != "rng"}, r"checkpoint.controller_state: KeyError"),
        (("pid", "integral"), [0.0], r"checkpoint.pid: pid integral must be 2 finite values"),
        (("counts",), {"ok": -1, "fallback": 0, "hold": 0}, r"checkpoint.counts.ok must be finite and in \[0"),
        (("last_good",), [0.1, float("nan")], "last_good must be 2 finite values > 0"),
    ]
    for path, value, needle in cases:
        with pytest.raises(ValueError, match=needle):
            b.load_state_dict(_corrupt(good, path, value))
        assert json.dumps(b.state_dict()) == before, path
    b.load_state_dict(good)
    tel = plant.telemetry()
    np.testing.assert_array_equal(a.step(tel).lam_vector, b.step(tel).lam_vector)


def test_a_clock_that_jumps_ahead_for_a_while_is_undone_when_it_comes_back():
    """Reports stamped 2 hours ahead for 5 ticks, then right again: the jump is accepted on the
    second report (it could be an outage) and undone on the second report back; 2 holds in all
    (it held for 2 hours without the undo)."""
    bal = make()
    plant = Plant(bal.ctx_.history_times[-1] + PERIOD)
    statuses = []
    for k in range(40):
        tel = plant.telemetry()
        if 10 <= k < 15:
            tel = mb.Telemetry(time=tel.time + pd.Timedelta(hours=2), qps=tel.qps, load=tel.load, lam=tel.lam)
        d = bal.step(tel)
        statuses.append(d.status)
        plant.apply(d.lam_vector)
    assert statuses.count("hold") == 2 and statuses[10] == statuses[15] == "hold"
    assert bal.forecaster.last_time_ == plant.t - PERIOD  # back on the real timeline
    assert bal.jump_ is None


def test_an_absurd_qps_is_a_sensor_fault():
    """qps=1e12 was taken as traffic (the forecast and lambda followed it)."""
    bal = make()
    plant = Plant(bal.ctx_.history_times[-1] + PERIOD)
    plant.apply(bal.step(plant.telemetry()).lam_vector)
    tel = plant.telemetry()
    d = bal.step(mb.Telemetry(time=tel.time, qps=1e12, load=tel.load, lam=tel.lam))
    assert d.status == "hold" and "qps=1000000000000.0 is more than max_qps_ratio=100" in d.reason
    plant.t += PERIOD
    assert bal.step(plant.telemetry()).status != "hold"
