import numpy as np
import pandas as pd
import pytest

from mpc_balancer.controllers import DcafController, PidController, StaticController, make_controller
from mpc_balancer.sim.plant import Plant, PlantConfig
from mpc_balancer.sim.simulator import SimResult, Simulator
from mpc_balancer.traces import load_trace, parse_trace
from mpc_balancer.traffic import Traffic
from policies.cascade import Cascade
from policies.oracle import OraclePolicy

CAS = Cascade()
POLICY = OraclePolicy(CAS, dtype=np.float32)


def flat_trace(days=3, level=100.0, step="5min"):
    idx = pd.date_range("2021-01-01", periods=int(days * 86400 / pd.Timedelta(step).total_seconds()), freq=step)
    body = "\n".join(f"{t},{level}" for t in idx)
    return parse_trace("timestamp,value\n" + body, name="flat")


def small_sim(trace="elb", days=0.5, n=200, **kw):
    return Simulator(Traffic(load_trace(trace) if isinstance(trace, str) else trace, period_s=60), cascade=CAS,
                     n_requests=n, days=days, seed=7, **kw)


@pytest.mark.parametrize("name", ["static", "dcaf", "pid"])
def test_conservation_every_request_counted_once(name):
    sim = small_sim(plant=PlantConfig(scarcity=30.0))  # scarce: overload happens, requests degrade and drop
    res = sim.run(make_controller(name), POLICY)
    log = res.log
    assert (log["served"] + log["degraded"] + log["dropped"] == log["arrivals"]).all()
    assert (log[["served", "degraded", "dropped"]] >= 0).all().all()


def test_overload_degrades_then_drops():
    plant = Plant(CAS, PlantConfig(lag_s=0, load_noise=0), peak_qps=1000, period_s=60)
    x = CAS.sample_features(500, 12.0, np.random.default_rng(0))
    w = CAS.weights(x)
    u = np.random.default_rng(1).random(500)
    big = np.full(500, CAS.n_actions - 1)
    light = plant.step(10, 600, big, w, 0.0, u, np.zeros(3))
    assert light.degraded == light.dropped == 0 and light.served == 600
    heavy = plant.step(1e5, 6_000_000, big, w, 0.0, u, np.zeros(3))
    assert heavy.dropped > 0 and heavy.degraded > 0
    assert heavy.served + heavy.degraded + heavy.dropped == 6_000_000
    # degraded and dropped requests lose revenue
    assert heavy.revenue / 6_000_000 < light.revenue / 600


def test_all_runs_of_a_comparison_see_the_same_environment():
    sim = small_sim()
    a = list(sim.environment())
    b = list(sim.environment())
    assert len(a) == len(sim.times)
    for (n1, x1, u1, e1), (n2, x2, u2, e2) in zip(a, b):
        assert n1 == n2 and np.array_equal(x1, x2) and np.array_equal(u1, u2) and np.array_equal(e1, e2)
    r1 = sim.run(make_controller("pid"), POLICY)
    r2 = sim.run(make_controller("pid"), POLICY)
    pd.testing.assert_frame_equal(r1.log.drop(columns="solve_ms"), r2.log.drop(columns="solve_ms"))


def test_metrics_follow_marca_definitions():
    idx = pd.date_range("2021-01-01", periods=4, freq="1min")
    log = pd.DataFrame({"arrivals": [10, 10, 10, 0], "revenue": [1.0, 2, 3, 0], "degraded": [0, 1, 0, 0], "dropped": [0, 0, 1, 0],
                        "true_load_a": [0.45, 0.9, 1.35, 0.0]}, index=idx)
    m = SimResult("x", log, ("a",), np.array([0.9]), 0.0).metrics()
    # ticks without traffic are excluded; mu = mean(min(L, Cm))/Cm, nu = mean(max(L - Cm, 0))/Cm
    assert m["clusters"]["a"]["mu"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["clusters"]["a"]["nu"] == pytest.approx((0 + 0 + 0.5) / 3)
    assert m["revenue"] == 6.0 and m["degraded_pct"] == pytest.approx(100 * 2 / 30) and m["dropped_pct"] == pytest.approx(100 / 30)


def test_pid_tracks_c_m_on_flat_traffic():
    sim = small_sim(flat_trace(), days=1.0, n=200, plant=PlantConfig(load_noise=0.0, cost_drift=0.0))
    res = sim.run(PidController(), POLICY)
    tail = res.log.iloc[-300:]
    for g in CAS.clusters:
        assert tail[f"load_{g}"].mean() == pytest.approx(0.9, abs=0.02)


def test_dcaf_meets_its_budget_when_costs_are_exact():
    cfg = PlantConfig(load_noise=0.0, cost_drift=0.0, cost_bias=(1.0, 1.0, 1.0), lag_s=0.0)
    sim = small_sim(flat_trace(), days=1.0, n=400, plant=cfg)
    res = sim.run(DcafController(), POLICY)
    tail = res.log.iloc[-300:]
    for g in CAS.clusters:
        # open loop: the previous tick's sample stands for this one, so the load is close to C_m, not exact
        assert tail[f"load_{g}"].mean() == pytest.approx(0.9, abs=0.03)


def test_static_fits_c_m_at_the_stress_tested_peak_hour():
    """The stress-tested lambda fits C_m at the peak-hour QPS on every cluster (by the policy's own
    response) and is not wastefully high (10% lower lambdas exceed C_m somewhere); the predefined
    downgrades climb while a cluster is over C_m and come back down to it, never below."""
    from mpc_balancer.controllers import Observation
    from mpc_balancer.response import Response

    sim = small_sim("nasa", days=2.0)
    ctx = sim.context(POLICY)
    st = StaticController(step=4.0).setup(ctx)
    x = list(sim.environment())[0][1]
    resp = Response(POLICY, x, max_requests=None)
    obs = Observation(t=0, time=sim.times[0], qps=1.0, load=ctx.target * 0.9, lam=np.full(3, 0.01), features=x)
    plan = st.make_step(obs, response=resp)
    base = st.base_lam_[0]  # the peak rule: one lambda, key 0
    np.testing.assert_array_equal(plan.lam, base)
    load = lambda lam: st.peak_qps_ * resp.cost(lam) / ctx.capacity  # noqa: E731
    assert np.all(load(base) <= ctx.target * (1 + 1e-9))
    assert np.any(load(base / 1.1) > ctx.target)
    over = Observation(t=1, time=sim.times[1], qps=1.0, load=ctx.target * 1.2, lam=base, features=x)
    lams = [st.make_step(over, response=resp).lam for _ in range(3)]
    np.testing.assert_allclose(lams, np.minimum([base * 4, base * 16, base * 64], ctx.lam_max))
    calm = Observation(t=2, time=sim.times[2], qps=1.0, load=ctx.target * 0.5, lam=base, features=x)
    lams = [st.make_step(calm, response=resp).lam for _ in range(5)]
    np.testing.assert_allclose(lams, np.minimum([base * 16, base * 4, base, base, base], ctx.lam_max))


def test_controller_options_are_validated():
    with pytest.raises(ValueError, match="unknown controller 'mpcx'"):
        make_controller("mpcx")
    with pytest.raises(ValueError, match="unexpected keyword argument 'kq'"):
        make_controller("pid", kq=1)
    with pytest.raises(ValueError, match="margin must be in"):
        PidController(margin=1.5)
    with pytest.raises(ValueError, match="unknown plant config keys"):
        PlantConfig.from_dict({"capcity": 3})
    with pytest.raises(ValueError, match="plant.target_load"):
        PlantConfig(target_load=0.0)
    with pytest.raises(ValueError, match="refine_steps must be an integer >= 0, got -1"):
        make_controller("mpc", refine_steps=-1)
    with pytest.raises(ValueError, match="refine_above must be >= 1, got 0.5"):
        make_controller("mpc", refine_above=0.5)


def test_window_selection_and_errors():
    tr = Traffic(load_trace("elb"), period_s=60)
    hist, win = tr.window(2.0)
    assert win.stop == len(tr) and win.stop - win.start == 2 * 1440 and hist.stop == win.start
    hist, win = tr.window(1.0, start="2014-04-15")
    assert tr.times[win.start] == pd.Timestamp("2014-04-15")
    with pytest.raises(ValueError, match="longer than the trace"):
        tr.window(100.0)
    with pytest.raises(ValueError, match="outside the trace"):
        tr.window(1.0, start="2030-01-01")
    with pytest.raises(ValueError, match="is not a timestamp"):
        tr.window(1.0, start="yesterday-ish")


def test_stratified_sample_has_the_request_distribution_with_each_variate_stratified():
    from scipy import stats

    cas, rng = Cascade(), np.random.default_rng(3)
    n = 4000
    xs = cas.sample_features(n, 14.0, rng, stratified=True)
    xi = cas.sample_features(n, 14.0, rng)
    for j in range(3):  # value, engagement, diversity: the same marginals as independent draws
        assert stats.ks_2samp(xs[:, j], xi[:, j]).pvalue > 1e-3
    # diversity ~ Beta(2, 3) exactly, and one draw in each of the n equal-probability strata
    q = stats.beta(2.0, 3.0).cdf(xs[:, 2])
    assert np.array_equal(np.sort(np.floor(q * n).astype(int)), np.arange(n))
    sigma = cas.spec.revenue.value_sigma
    mu = cas.spec.revenue.value_daily_amp * np.cos(2 * np.pi * (14.0 - cas.spec.revenue.value_peak_hour) / 24.0)
    qv = stats.norm.cdf((xs[:, 0] - mu) / sigma)
    assert np.array_equal(np.sort(np.floor(qv * n).astype(int)), np.arange(n))


def test_stratified_sample_mean_cost_varies_far_less_than_iid():
    cas = Cascade()
    pol = OraclePolicy(cas)
    lam = np.full(len(cas.clusters), 0.3)

    def spread(stratified):
        rng = np.random.default_rng(11)
        means = [cas.cost[:, pol.act(cas.sample_features(1000, 20.0, rng, stratified=stratified), lam)].mean(axis=1)
                 for _ in range(60)]
        return np.std(means, axis=0) / np.mean(means, axis=0)

    s_iid, s_lhs = spread(False), spread(True)
    assert np.all(s_iid > 0.004)  # iid: the sample mean alone moves the load by 1.9-2.9% here (lambda 0.3)
    assert np.all(s_lhs < 0.5 * s_iid)


def test_sampling_option_is_validated_and_reaches_the_simulator():
    from mpc_balancer.sim.experiment import ExperimentConfig, build_simulator

    with pytest.raises(ValueError, match="sampling"):
        small_sim(sampling="sobol")
    assert build_simulator(ExperimentConfig(trace="elb", days=0.1, sampling="iid")).sampling == "iid"
    assert build_simulator(ExperimentConfig(trace="elb", days=0.1)).sampling == "stratified"


def test_the_table_says_why_mu_and_nu_are_nan():
    from mpc_balancer.sim.experiment import format_table

    nan = float("nan")
    row = {"controller": "pid", "revenue": 0.0, "uplift_vs_static_pct": None, "mu": nan, "nu": nan, "degraded_pct": 0.0,
           "wall_s": 1.0, "clusters": {"rank": {"mu": nan, "nu": nan}}}
    summary = {"trace": "t", "days": 0.2, "window": ["a", "b"], "policy": "pretrained", "results": [row]}
    assert "undefined (nan) where the window has no tick with traffic" in format_table(summary)
    summary["results"] = [row | {"mu": 0.9, "nu": 0.001, "clusters": {"rank": {"mu": 0.9, "nu": 0.001}}}]
    assert "undefined" not in format_table(summary)


def test_compare_runs_forecasting_controllers_first_and_reports_in_the_given_order(monkeypatch, tmp_path):
    """A controller that cannot fit its forecaster fails before the others have run (it used to fail
    after them, tens of seconds later); the results keep the order asked for."""
    from mpc_balancer.sim.experiment import ExperimentConfig, run_comparison
    from mpc_balancer.sim.simulator import Simulator

    calls = []
    real = Simulator.run

    def spy(self, controller, *args, **kw):
        calls.append(controller.controller.name)
        return real(self, controller, *args, **kw)

    monkeypatch.setattr(Simulator, "run", spy)
    runs, summary = run_comparison(ExperimentConfig(trace="nasa", days=0.02), ["pid", "mpc", "static"])
    assert calls == ["mpc", "pid", "static"]
    assert [r.controller for r in runs] == [m["controller"] for m in summary["results"]] == ["pid", "mpc", "static"]
    idx = pd.date_range("2026-01-01", periods=3 * 1440, freq="min")
    path = tmp_path / "short.csv"
    path.write_text("timestamp,count\n" + "\n".join(f"{t},{100 + (i % 60)}" for i, t in enumerate(idx)))
    calls.clear()
    with pytest.raises(ValueError, match="history: controller 'mpc' forecasts traffic"):
        run_comparison(ExperimentConfig(trace=str(path), days=2.5), ["pid", "mpc"])
    assert calls == ["mpc"]


def test_guard_settings_the_rule_does_not_read_are_refused_by_the_simulator_itself():
    """The check serves every caller of the simulator (simulate, compare, spike-test, fault-test,
    fleet, tune, a library user), not only the commands that once checked it themselves."""
    traffic = Traffic(load_trace("nasa"), period_s=60)
    for guard, key in (({"rule": "none", "gain": 3}, "guard.gain"), ({"rule": "maxpower", "max_step": 8}, "guard.max_step"),
                       ({"rule": "proportional", "step": 3}, "guard.step")):
        with pytest.raises(ValueError, match=f"{key}=.* has no effect under the guard rule '{guard['rule']}'"):
            Simulator(traffic, days=0.01, guard=guard)
    Simulator(traffic, days=0.01, guard={"rule": "maxpower", "step": 3, "release": 0.1})  # what maxpower reads


def test_the_table_keeps_mu_and_nu_apart_when_nu_is_large():
    """An overload of 100 x C_m or more (many long bursts) filled nu's column: "0.9929208.1266"."""
    from mpc_balancer.sim.experiment import format_table

    row = {"controller": "pid", "revenue": 1.0, "uplift_vs_static_pct": None, "mu": 0.9929, "nu": 208.1266,
           "degraded_pct": 0.0, "wall_s": 1.0, "clusters": {"rank": {"mu": 0.9929, "nu": 208.1266}}}
    summary = {"trace": "t", "days": 0.2, "window": ["a", "b"], "policy": "pretrained", "results": [row]}
    line = format_table(summary).splitlines()[2].split()
    assert line[3:5] == ["0.9929", "208.1266"]
