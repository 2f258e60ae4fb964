"""A demanding user's scheduler around the public API (Balancer, Telemetry, its own Policy, NodeGuard,
checkpoints), never the simulator: joint actions over five clusters, a cluster the policy never loads,
costs in other units, a QPS reported near zero, a restart under narrower lambda bounds, the
hindsight limit, the guard on its own and a learned-dynamics controller with a bad weights file."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

import mpc_balancer as mb
from mpc_balancer.telemetry_response import TelemetryResponse


class JointPolicy:
    """A few joint actions (one per request for every cluster at once, as a cascade's depth is),
    each with known costs per cluster and a revenue estimate: ``argmax v gain_a - cx lam . cost_a``.
    Features: (log value, complexity). ``scale`` multiplies every cost (the user's own units);
    ``idle`` clusters cost nothing whatever the action."""

    def __init__(self, G, seed=0, K=6, scale=1.0, idle=()):
        self.clusters = tuple(f"stage {g}" for g in range(G))
        rng = np.random.default_rng(seed)
        self.cost = np.sort(rng.uniform(0.1, 2.0, (K, G)), axis=0)
        self.cost[0] = 0.05
        self.cost[:, list(idle)] = 0.0
        self.cost *= scale
        self.gain = np.sort(rng.uniform(0.0, 1.0, K))
        self.gain[0] = 0.0

    def respond(self, features, lam):
        x = np.asarray(features, dtype=float)
        revenue = np.exp(x[:, :1]) * self.gain[None, :]
        cost = x[:, 1, None, None] * self.cost[None]  # (n, K, G)
        a = np.argmax(revenue - cost @ np.asarray(lam, dtype=float), axis=1)
        rows = np.arange(len(a))
        return cost[rows, a], revenue[rows, a]


def requests(rng, n):
    return np.column_stack([rng.normal(0.0, 0.8, n), rng.gamma(4.0, 0.25, n)])


def qps_at(times, level=1000.0):
    h = (times.hour + times.minute / 60.0).to_numpy()
    return level * (1 + 0.6 * np.sin(2 * np.pi * (h - 9) / 24))


def history(days=3):
    idx = pd.date_range("2024-03-01", periods=days * 1440, freq="min")
    return pd.Series(qps_at(idx), index=idx)


def make(controller, policy, capacity, telemetry_only=False, **options):
    clusters = {c: mb.Cluster(capacity=cap, target=0.9) for c, cap in zip(policy.clusters, capacity)}
    return mb.Balancer.create(controller, clusters=clusters, policy=None if telemetry_only else policy, history=history(),
                              period_s=60, time_budget_s=float("inf"), **options)


def drive(bal, policy, ticks, telemetry_only=False, qps=None, seed=1, rows=200):
    """The user's fleet: load = QPS x the policy's mean cost at the applied lambda x 1.05 / capacity,
    following demand with a lag, 1% meter noise. Returns the true loads and the decisions."""
    rng = np.random.default_rng(seed)
    names, cap = bal.ctx_.clusters, bal.ctx_.capacity
    start = (bal.last_time_ or bal.ctx_.history_times[-1]) + pd.Timedelta(minutes=1)
    times = pd.date_range(start, periods=ticks, freq="min")
    q = qps_at(times) if qps is None else qps(times)
    lam, true = bal.last_good_.copy(), np.full(len(names), 0.5)
    meas, x = true.copy(), requests(rng, rows)
    loads, decisions = [], []
    for k, t in enumerate(times):
        d = bal.step(mb.Telemetry(time=t, qps=q[k], load=dict(zip(names, meas)), lam=dict(zip(names, lam)),
                                  features=None if telemetry_only else x))
        assert np.all(np.isfinite(d.lam_vector)) and np.all(d.lam_vector >= bal.ctx_.lam_min)
        assert np.all(d.lam_vector <= bal.ctx_.lam_max)
        decisions.append(d)
        lam = d.lam_vector
        served = requests(rng, 500)
        true = 0.3 * true + 0.7 * qps_at(times[k:k + 1])[0] * 1.05 * policy.respond(served, lam)[0].mean(axis=0) / cap
        meas = true * (1 + 0.01 * rng.standard_normal(len(names)))
        x = served[:rows]
        loads.append(true)
    return np.array(loads), decisions


def mu_nu(loads, skip=40):
    tail = loads[skip:]
    return np.minimum(tail, 0.9).mean(axis=0) / 0.9, np.maximum(tail - 0.9, 0).mean(axis=0) / 0.9


# ------------------------------------------------------------------------------- joint actions
def test_joint_actions_over_five_clusters_keep_the_binding_one_at_its_target():
    """Five clusters sharing one joint action per request: one cluster binds, the others run far under
    C_m at the smallest lambda. Before, a plan that took a free cluster's whole curve (u0 at the
    frontier's u_max, measured with the others' lambdas held) was refined as if that were its cap:
    once the binding cluster's lambda fell, the free clusters cost more and were bisected 100-400x
    upward, every load collapsed (binding cluster at 9-17% of C_m over half a day, PID 94-98%) and
    the curves, each measured with the others high, went flat. Measured here (150 ticks): the
    binding cluster's mu 0.903 (the PID's 0.903), 0.036 before."""
    policy = JointPolicy(5, seed=5)
    bal = make("mpc", policy, [1000.0 * (1 + 0.3 * g) for g in range(5)], horizon=10)
    loads, decisions = drive(bal, policy, 150)
    mu, nu = mu_nu(loads)
    assert mu.max() > 0.85 and nu.max() < 0.02, (mu, nu)
    assert sum(d.status != "ok" for d in decisions) <= 1


# ------------------------------------------------------------------------ odd but legal policies
def test_a_cluster_the_policy_never_loads_neither_falls_back_nor_warns():
    """A policy whose costs on one cluster are all zero: the MPC re-based its disturbance theta by
    0 / 0 to 0, its effective capacity capacity / theta was infinite, the QP's data check raised
    (``mpc data capacity has non-finite values``) and the tick fell back, with a numpy
    RuntimeWarning on the host's stderr."""
    policy = JointPolicy(2, seed=1, idle=(1,))
    bal = make("mpc", policy, [1000.0, 1300.0], horizon=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loads, decisions = drive(bal, policy, 90)
    assert [d.reason for d in decisions if d.status != "ok"] == []
    assert np.all(np.isfinite(bal.controller.theta_)) and np.all(bal.controller.theta_ > 0)
    mu, nu = mu_nu(loads)
    assert mu[0] > 0.85 and nu[0] < 0.02, (mu, nu)


@pytest.mark.parametrize("units", [2.0 ** -30, 1e-6, 1e6, 2.0 ** 30])
def test_the_mpc_regulates_costs_in_any_units(units):
    """Costs per request in the user's own units (CPU-ns, cores, seconds), capacity and the lambda
    bounds in the same ones: the MPC holds the load as it does in CPU-ms. Before, costs of ~1e6 per
    request ran every cluster at 3% of C_m (the QP's absolute 1e-9 regularisation outweighed the
    revenue, so the plan took the least cost the curve allows); PID and DCAF were fine."""
    policy = JointPolicy(2, seed=1, scale=units)
    bal = make("mpc", policy, [1000.0 * units, 1300.0 * units], horizon=10, lam_min=1e-5 / units,
               lam_max=10.0 / units, initial_lam=0.01 / units)
    loads, decisions = drive(bal, policy, 120)
    mu, nu = mu_nu(loads)
    assert mu[0] > 0.85 and nu.max() < 0.02, (mu, nu)
    assert all(d.status == "ok" for d in decisions[1:])


def test_costs_in_cpu_ms_are_solved_in_their_own_units():
    """The QP is rescaled only outside costs of about 1e-3..1e3 per request: the bundled runs' costs
    (CPU-ms, u_scale 0.6-19) are solved as they were, bit for bit."""
    policy = JointPolicy(2, seed=1)
    bal = make("mpc", policy, [1000.0, 1300.0], horizon=10)
    drive(bal, policy, 3)
    assert np.all(bal.controller.units_ == 1.0)
    big = make("mpc", JointPolicy(2, seed=1, scale=1e6), [1e9, 1.3e9], horizon=10, lam_min=1e-11, lam_max=1e-5,
               initial_lam=1e-8)
    drive(big, JointPolicy(2, seed=1, scale=1e6), 3)
    units = big.controller.units_
    assert np.all(np.log2(units) == np.round(np.log2(units))) and np.all(units > 2.0 ** 10)  # powers of two: exact


# ------------------------------------------------------------------------------- bad telemetry
def test_a_qps_reported_near_zero_does_not_poison_the_telemetry_curves():
    """One tick's QPS reported as 1e-300 (a counter that reset) under a normal load: the telemetry
    model took a cost per request of ~1e302, its curves overflowed and the MPC fell back on 386 of
    the next 390 ticks, OSQP printing ``new KKT matrix is not quasidefinite`` on each."""
    policy = JointPolicy(2, seed=1)
    bal = make("mpc", policy, [1000.0, 1300.0], telemetry_only=True, horizon=10)

    def qps(times):
        q = qps_at(times)
        q[60] = 1e-300
        return q

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, decisions = drive(bal, policy, 120, telemetry_only=True, qps=qps)
    after = [d.reason for d in decisions[61:] if d.status != "ok"]
    assert after == []
    points = np.array([p[1] for p in bal.controller.telemetry_.points_])
    assert np.all(np.isfinite(points)) and points.max() < 10.0


def test_the_telemetry_curves_skip_ticks_whose_qps_jumped_and_checkpoint_the_last_qps():
    tr = TelemetryResponse(capacity=np.array([100.0]), halflife=1e9, min_ticks=1)
    tr.observe(100.0, np.array([0.5]), np.array([0.01]))
    tr.observe(110.0, np.array([0.55]), np.array([0.01]))  # a 10% move: a point
    tr.observe(1e-9, np.array([0.5]), np.array([0.01]))  # the meter still reads the tick before: not a point
    tr.observe(100.0, np.array([0.2]), np.array([0.01]))  # back from it: not a point either
    assert len(tr.points_) == 2 and tr.qps_prev_ == 100.0
    back = TelemetryResponse(capacity=np.array([100.0]), halflife=1e9, min_ticks=1)
    back.load_state_dict(json.loads(json.dumps(tr.state_dict())))
    assert back.qps_prev_ == 100.0
    old = tr.state_dict()
    del old["qps_prev"]  # a checkpoint written before it was kept
    back.load_state_dict(old)
    assert back.qps_prev_ is None and len(back.points_) == 2
    with pytest.raises(ValueError, match="qps_prev"):
        back.load_state_dict({"points": [], "qps_prev": "fast"})
    with pytest.raises(ValueError, match="steady_ratio"):
        TelemetryResponse(np.ones(1), steady_ratio=1.0)


# ------------------------------------------------------------------------- restarts and names
def test_a_restart_under_narrower_lambda_bounds_does_not_hold_forever():
    """A checkpoint whose last lambda is 5, restored after lowering lam_max to 1: the first report
    still carries 5 (what the nodes apply) and is held, but the held lambda must be in the new
    bounds. Before, it was 5 again: the nodes kept applying it and every report was held, for good."""
    clusters = {"recall": mb.Cluster(capacity=1000.0), "rank": mb.Cluster(capacity=800.0)}
    old = mb.Balancer.create("pid", clusters=clusters, initial_lam=5.0)
    state = json.loads(json.dumps(old.state_dict()))
    new = mb.Balancer.create("pid", clusters=clusters, lam_max=1.0)
    new.load_state_dict(state)
    assert np.all(new.last_good_ <= 1.0)
    t, lam = pd.Timestamp("2024-03-04"), {"recall": 5.0, "rank": 5.0}
    statuses = []
    for k in range(4):
        d = new.step(mb.Telemetry(time=t + pd.Timedelta(minutes=k), qps=500.0, load={"recall": 0.8 + 0.01 * k, "rank": 0.7},
                                  lam=lam))
        assert all(v <= 1.0 for v in d.lam.values()), d
        statuses.append(d.status)
        lam = d.lam
    assert statuses == ["hold", "ok", "ok", "ok"]


def test_the_hindsight_limit_is_refused_by_create():
    """It needs the simulator's view of the coming tick: embedded, it fell back to the PID on every
    tick (``hindsight needs the simulator's clairvoyance``) without a word at construction."""
    policy = JointPolicy(2)
    with pytest.raises(ValueError, match="'hindsight' is clairvoyant"):
        make("hindsight", policy, [1000.0, 1300.0])
    with pytest.raises(ValueError, match="clairvoyant"):
        make(mb.make_controller("hindsight"), policy, [1000.0, 1300.0])


@pytest.mark.parametrize("name", ["nmpc", "shooting"])
def test_an_unreadable_dynamics_file_is_named(name, tmp_path):
    """``weights=PATH`` that is missing raised FileNotFoundError, and one that is not a model
    numpy's own message about pickles, naming neither the option nor the file."""
    clusters = {"recall": mb.Cluster(capacity=1000.0)}
    with pytest.raises(ValueError, match=rf"{name}: weights='.*missing\.npz' is not a readable dynamics model \(FileNotFoundError"):
        mb.Balancer.create(name, clusters=clusters, history=history(), weights=str(tmp_path / "missing.npz"))
    bad = tmp_path / "garbage.npz"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match=rf"{name}: weights='.*garbage\.npz' is not a readable dynamics model"):
        mb.Balancer.create(name, clusters=clusters, history=history(), weights=str(bad))


# ------------------------------------------------------------------------------ the node guard
def test_the_guard_names_what_is_not_a_reading_and_takes_an_absurd_one_quietly():
    g = mb.NodeGuard(target=[0.9, 0.9])
    with pytest.raises(ValueError, match="lam_central must be numbers, one per cluster, got 'x'"):
        g.apply("x")
    g.apply([0.01, 0.01])
    for bad in ("ab", None, ["0.5", 0.5]):
        with pytest.raises(ValueError, match="load must be numbers"):
            g.observe(bad)
    with pytest.raises(ValueError, match="loads must be numbers"):
        g.observe_many([["a", "b"]])
    g.observe([None, 0.5])  # one cluster's meter missing: a broken reading, not counted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g.observe([1e300, 0.5])  # the step is max_step: no overflow warning on the node's stderr
    assert g.floor[0] == pytest.approx(0.04) and g.floor[1] == 0.0


def test_a_checkpoint_of_another_horizon_is_refused_naming_the_settings():
    """Upgrading ``horizon`` between a checkpoint and its restore: the refusal named only OSQP's
    array shapes (``warm start must have x of shape (24,)``), not the setting that changed."""
    from forecasting.state import StateError

    policy = JointPolicy(2, seed=1)
    a = make("mpc", policy, [1000.0, 1300.0], horizon=10)
    drive(a, policy, 5)
    b = make("mpc", policy, [1000.0, 1300.0], horizon=12)
    with pytest.raises(StateError, match=r"another horizon.*horizon=12, frontier='quadratic'"):
        b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    c = make("mpc", policy, [1000.0, 1300.0], horizon=10)
    c.load_state_dict(json.loads(json.dumps(a.state_dict())))  # the same settings restore


def test_a_policy_that_changes_its_features_in_place_is_named():
    """The sample is read-only (shared by every lambda asked, cached on by the shipped policies): a
    user's policy that normalised it in place fell back on every tick with ``mpc raised ValueError:
    output array is read-only``, naming neither the policy nor what to do."""

    class Normalising(JointPolicy):
        def respond(self, features, lam):
            features[:, 1] /= 1.0
            return super().respond(features, lam)

    policy = Normalising(2, seed=1)
    bal = make("dcaf", policy, [1000.0, 1300.0])
    _, decisions = drive(bal, JointPolicy(2, seed=1), 3)
    assert decisions[-1].status == "fallback"
    assert "Normalising.respond changed its features in place" in decisions[-1].reason
    assert "copy it before changing it" in decisions[-1].reason


@pytest.mark.parametrize("stamp", [1_709_251_200.25, 1_709_251_200, np.int64(1_709_251_200)])
def test_an_epoch_number_for_the_time_is_refused_naming_it(stamp):
    """``time=time.time()``: pandas reads a number as nanoseconds, so every tick fell in the first two
    seconds of 1970, 60 ns apart: the PID ran on without a word and the MPC's forecaster refused each
    tick (the fallback's reason named the forecaster, not the caller's time)."""
    policy = JointPolicy(1)
    bal = make("pid", policy, [1000.0])
    tel = mb.Telemetry(time=stamp, qps=500.0, load={"stage 0": 0.5}, lam={"stage 0": 0.01})
    with pytest.raises(ValueError, match=r"telemetry time must be a timestamp, got the number .*1970-01-01 00:00:01\.7.*"
                                         r"pandas\.Timestamp\(t, unit='s'\)"):
        bal.step(tel)
    tel.time = pd.Timestamp(stamp, unit="s")
    assert bal.step(tel).status == "ok"


def test_a_sample_of_one_request_a_tick_is_pooled_until_the_curve_has_enough():
    """One request a tick: the curve, measured on that one request, ran the clusters at 22-25% of C_m."""
    policy = JointPolicy(2, seed=1)
    bal = make("mpc", policy, [1000.0, 1300.0], horizon=20)
    loads, decisions = drive(bal, policy, 480, rows=1)
    assert all(d.status == "ok" for d in decisions[60:])
    mu, nu = mu_nu(loads, skip=60)
    assert mu.max() > 0.8 and nu.max() < 0.02
    pool = bal.controller.pool_
    assert sum(len(p) for p in pool) == bal.controller.settings.pool_min_rows == len(pool)


def test_the_pool_keeps_the_last_ticks_and_older_ones_only_while_short_of_rows():
    from mpc_balancer.controllers.mpc import MpcController, MpcSettings

    c = MpcController.__new__(MpcController)
    c.settings, c.pool_ = MpcSettings(pool_ticks=2, pool_min_rows=10), __import__("collections").deque()
    for n in (4, 4, 4, 256, 3):
        c._pool(np.zeros((n, 2)))
    assert [len(p) for p in c.pool_] == [256, 3]  # the last two ticks: 259 rows, no older one needed
    for _ in range(12):
        c._pool(np.zeros((1, 2)))
    assert [len(p) for p in c.pool_] == [1] * 10  # 10 rows: at most max(pool_ticks, pool_min_rows) ticks

