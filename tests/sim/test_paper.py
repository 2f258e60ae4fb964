"""The paper tables (``mpc-balancer paper ab|table3``): the arms end to end on a tiny window, the
JSON schema, conservation of the outcome metrics, the Static arm's hourly rule."""
import json

import numpy as np
import pandas as pd
import pytest

from mpc_balancer.cli import main
from mpc_balancer.controllers import Observation, StaticController
from mpc_balancer.controllers.static import hourly_qps
from mpc_balancer.response import Response
from mpc_balancer.sim.outcomes import AdOutcomes
from mpc_balancer.sim.paper import ARMS, METRICS, PaperConfig, aggregate, parse_seeds
from mpc_balancer.sim.plant import TickOutcome
from mpc_balancer.sim.simulator import Simulator
from mpc_balancer.traces import load_trace
from mpc_balancer.traffic import Traffic
from policies.cascade import Cascade
from policies.rules import UniformRulePolicy
from policies.runtime import PolicyRuntime

CAS = Cascade()
PCT = [f"{k}_pct" for k in METRICS]


@pytest.fixture(scope="module")
def ab(tmp_path_factory):
    """``paper ab`` on 0.1 days of elb, two seeds, 150 requests a tick: (its --json, its --out results.json)."""
    d = tmp_path_factory.mktemp("ab")
    rc = main(["paper", "ab", "--traces", "elb", "--seeds", "0-1", "--days", "0.1", "--requests", "150", "--jobs", "1",
               "--json", str(d / "ab.json"), "--out", str(d / "out")])
    assert rc == 0
    assert (d / "out" / "bars.png").stat().st_size > 0 and "| MaRCA-MPC |" in (d / "out" / "table.md").read_text()
    return json.loads((d / "ab.json").read_text()), json.loads((d / "out" / "results.json").read_text()), d / "out" / "results.json"


def test_ab_json_schema_is_the_issues(ab):
    doc = ab[0]
    assert set(doc) == {"table", "traces", "seeds", "days", "arms"}
    assert doc["table"] == "ab" and doc["traces"] == ["elb"] and doc["seeds"] == [0, 1] and doc["days"] == 0.1
    assert list(doc["arms"]) == ["static", "dcaf", "rl_mpca", "marca_feedback", "marca_mpc"]
    for row in doc["arms"].values():
        assert set(row) == set(PCT) | {"mu", "nu"}
        for v in row.values():
            assert set(v) == {"mean", "std"} and all(isinstance(x, float) and np.isfinite(x) for x in v.values())
    # relative to Static: Static's own figures are exactly 0
    assert all(doc["arms"]["static"][k] == {"mean": 0.0, "std": 0.0} for k in PCT)


def test_ab_runs_every_arm_and_the_metrics_are_consistent(ab):
    full = ab[1]
    assert len(full["pairs"]) == 2
    for pair in full["pairs"]:
        arms = pair["arms"]
        assert set(arms) == set(ARMS)
        for name, m in arms.items():
            assert 0 < m["clicks"] <= m["impressions"], name
            assert m["ctr"] == pytest.approx(m["clicks"] / m["impressions"], rel=1e-12)
            assert m["revenue"] > 0 and m["gmv"] > 0
            assert 0 < m["mu"] <= 1 and m["nu"] >= 0
        # the arms differ (different policies and controllers on the same traffic)
        assert len({round(m["revenue"], 3) for m in arms.values()}) == len(arms)
    # the summary's *_pct are recomputed from the pairs' totals
    for arm in ARMS:
        pct = [100 * (p["arms"][arm]["revenue"] / p["arms"]["static"]["revenue"] - 1) for p in full["pairs"]]
        assert full["arms"][arm]["revenue_pct"]["mean"] == pytest.approx(np.mean(pct), rel=1e-12, abs=1e-12)
        assert full["arms"][arm]["revenue_pct"]["std"] == pytest.approx(np.std(pct), rel=1e-9, abs=1e-12)


def test_table3_has_the_two_marca_arms_with_per_cluster_mu_nu(ab, tmp_path):
    """table3 run on its own (two processes) gives the A/B's MaRCA runs bit for bit, and --from
    summarises them from the A/B's results.json to the same document."""
    rc = main(["paper", "table3", "--traces", "elb", "--seeds", "0-1", "--days", "0.1", "--requests", "150",
               "--jobs", "2", "--json", str(tmp_path / "t3.json"), "--out", str(tmp_path / "t3")])
    assert rc == 0
    doc = json.loads((tmp_path / "t3.json").read_text())
    ab_full = ab[1]
    mine = json.loads((tmp_path / "t3" / "results.json").read_text())
    for p, q in zip(mine["pairs"], ab_full["pairs"]):
        for arm in ("marca_feedback", "marca_mpc"):
            for k in ("revenue", "gmv", "impressions", "clicks", "mu", "nu", "clusters"):
                assert p["arms"][arm][k] == q["arms"][arm][k], (arm, k)
    rc = main(["paper", "table3", "--from", str(ab[2]), "--json", str(tmp_path / "from.json")])
    assert rc == 0
    assert json.loads((tmp_path / "from.json").read_text()) == doc
    assert doc["table"] == "table3" and list(doc["arms"]) == ["marca_feedback", "marca_mpc"]
    for row in doc["arms"].values():
        assert set(row) == set(PCT) | {"mu", "nu"}
        for k in ("mu", "nu"):
            assert set(row[k]["clusters"]) == set(CAS.clusters)
            per = [row[k]["clusters"][c]["mean"] for c in CAS.clusters]
            assert row[k]["mean"] == pytest.approx(np.mean(per), rel=1e-12)  # mu, nu: the clusters' mean
    assert all(doc["arms"]["marca_feedback"][k]["mean"] == 0.0 for k in PCT)


def test_aggregate_is_mean_and_std_over_pairs():
    def pair(rev, mu):
        clusters = {c: {"mu": mu, "nu": 0.01} for c in CAS.clusters}
        m = {k: rev for k in METRICS} | {"mu": mu, "nu": 0.01, "clusters": clusters}
        return m
    pairs = [{"arms": {"static": pair(100.0, 0.5), "marca_mpc": pair(110.0, 0.9)}},
             {"arms": {"static": pair(200.0, 0.6), "marca_mpc": pair(260.0, 0.95)}}]
    out = aggregate(pairs, ("static", "marca_mpc"))
    assert out["marca_mpc"]["revenue_pct"]["mean"] == pytest.approx(20.0)
    assert out["marca_mpc"]["revenue_pct"]["std"] == pytest.approx(10.0)
    assert out["marca_mpc"]["mu"]["mean"] == pytest.approx(0.925)
    assert out["static"]["gmv_pct"] == {"mean": 0.0, "std": 0.0}


@pytest.mark.parametrize("text, seeds", [("0-4", (0, 1, 2, 3, 4)), ("3", (3,)), ("0,2-3, 7", (0, 2, 3, 7))])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("argv, msg", [
    (["--seeds", "4-1"], "--seeds must be integers or ranges"),
    (["--seeds", "1,1"], "--seeds must name distinct"),
    (["--traces", "nope"], "nope"),
])
def test_bad_options_are_one_line_errors(argv, msg, capsys):
    assert main(["paper", "ab", "--days", "0.05", *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
    with pytest.raises(ValueError, match="table must be one of"):
        PaperConfig(table="table4")


def test_outcomes_conserve_and_match_the_click_model():
    """clicks <= impressions <= kept requests; impressions at rate Phi_0, clicks at E[rev] / bid (the
    cascade's click model) over many requests; dropped requests produce nothing; same tick, same draws."""
    rng = np.random.default_rng(5)
    n = 20000
    x = CAS.sample_features(n, 20.0, rng)
    w = CAS.weights(x)
    a = rng.integers(0, CAS.n_actions, n)
    shed = rng.random(n) < 0.1
    model = AdOutcomes(CAS, seed=3)
    rec = model.recorder(2)
    out = TickOutcome(load=None, true_load=None, demand=None, revenue=0.0, served=0, degraded=0, dropped=0, actions=a, shed=shed)
    rec.observe(0, x, w, out, n)
    rec.observe(1, x, w, out, 2 * n)  # twice the arrivals: the sample stands for twice the requests
    imp, clk, gmv = (rec.columns()[k] for k in ("impressions", "clicks", "gmv"))
    kept = ~shed
    assert 0 < clk[0] <= imp[0] <= kept.sum()
    fill = CAS.phi[0, a][kept]
    p_click = CAS.expected_revenue_w(w, a)[kept] * CAS.spec.revenue.base_ctr / np.exp(x[kept, 0])
    assert imp[0] == pytest.approx(fill.sum(), rel=0.02)
    assert clk[0] == pytest.approx(p_click.sum(), rel=0.05)
    # GMV: revenue times a ratio of median 8 (log-normal, sigma 0.5: mean 8 e^(1/8))
    assert gmv[0] == pytest.approx(8 * np.exp(0.125) * CAS.expected_revenue_w(w, a)[kept].sum(), rel=0.05)
    # common random numbers: the draws depend on (seed, tick) only
    np.testing.assert_array_equal(model.draws(0, n)[0], AdOutcomes(CAS, seed=3).draws(0, n)[0])
    assert not np.array_equal(model.draws(0, n)[0], model.draws(1, n)[0])
    # the second sub-tick had the same requests and twice the arrivals
    ratio = [imp[1] / imp[0], clk[1] / clk[0], gmv[1] / gmv[0]]
    assert all(r > 1.5 for r in ratio)


def test_uniform_rules_are_one_action_per_tick_and_monotone_in_lambda():
    pol = PolicyRuntime.load("pretrained", cost=CAS.cost)
    rng = np.random.default_rng(0)
    rules = UniformRulePolicy.from_policy(pol, CAS.sample_features(512, rng.uniform(0, 24, 512), rng))
    x = CAS.sample_features(50, 12.0, rng)
    prev = None
    for lam in np.geomspace(1e-5, 10, 40):
        a = rules.act(x, np.full(3, lam))
        assert (a == a[0]).all()
        cost, _ = rules.respond(x, np.full(3, lam))
        np.testing.assert_array_equal(cost, np.tile(CAS.cost[:, a[0]], (50, 1)))
        if prev is not None:  # a higher lambda never selects a rule that costs more on any cluster... in total
            assert CAS.cost[:, a[0]].sum() <= prev + 1e-12
        prev = CAS.cost[:, a[0]].sum()
    lams = np.geomspace(1e-4, 1, 6)[:, None] * np.ones(3)
    cm, rm = rules.respond_many(x, lams)
    for i, lam in enumerate(lams):
        c1, r1 = rules.respond(x, lam)
        np.testing.assert_array_equal(cm[i], c1)
        np.testing.assert_array_equal(rm[i], r1)


def test_static_hourly_rule_reads_the_history_per_hour_and_fits_c_m_there():
    """One stress-tested lambda per hour of day at (1 + margin) x the history's hourly quantile; the
    lambda fits C_m at that QPS on the policy's own estimate and 10% less does not."""
    sim = Simulator(Traffic(load_trace("nasa"), period_s=60), cascade=CAS, n_requests=200, days=1.0, seed=1)
    pol = PolicyRuntime.load("pretrained", cost=CAS.cost)
    ctx = sim.context(pol)
    st = StaticController(rule="hourly", quantile=0.9, margin=0.2).setup(ctx)
    q = hourly_qps(ctx.history_qps, ctx.history_times, 0.9)
    s = pd.Series(ctx.history_qps, index=ctx.history_times)
    h = s[s > 0].resample("1h").mean().dropna()
    assert q[14] == pytest.approx(h[h.index.hour == 14].quantile(0.9))
    np.testing.assert_allclose(st.stress_qps_, 1.2 * q)
    assert st.stress_qps_.max() > 1.5 * st.stress_qps_.min()  # a daily cycle: the rules differ by hour
    env = sim.environment()
    for k, (_, x, _, _) in enumerate(env):
        if k in (0, 60):
            resp = Response(pol, x, max_requests=None)
            t = sim.times[k]
            plan = st.make_step(Observation(t=k, time=t, qps=1.0, load=ctx.target * 0.5, lam=np.full(3, 0.01), features=x),
                                response=resp)
            qps = st.stress_qps_[t.hour]
            assert np.all(qps * resp.cost(plan.lam) / ctx.capacity <= ctx.target * (1 + 1e-9))
            assert np.any(qps * resp.cost(plan.lam / 1.1) / ctx.capacity > ctx.target)
        if k == 60:
            break
    assert sorted(st.base_lam_) == sorted({sim.times[0].hour, sim.times[60].hour})
    st2 = StaticController(rule="hourly").setup(ctx)
    st2.load_state_dict(json.loads(json.dumps(st.state_dict())))
    assert {k: v.tolist() for k, v in st2.base_lam_.items()} == {k: v.tolist() for k, v in st.base_lam_.items()}
    with pytest.raises(ValueError, match="rule must be one of"):
        StaticController(rule="weekly")
