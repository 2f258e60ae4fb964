"""Lambda sweeps in one call (issue 20): every fast path against the one-decision-at-a-time reference,
bit for bit (pure numpy on the same inputs), and the MPC's closed loop unchanged by them."""
import numpy as np
import pytest

from mpc_balancer.controllers import make_controller
from mpc_balancer.frontier import ResponseCurve, default_grid, measure_response
from mpc_balancer.policy import BatchPolicy, CostPolicy, checked_cost, checked_response_many
from mpc_balancer.response import Response
from mpc_balancer.sim.simulator import Simulator
from mpc_balancer.traces import load_trace
from mpc_balancer.traffic import Traffic
from policies.cascade import Cascade
from policies.oracle import OraclePolicy
from policies.runtime import PolicyRuntime
from policies.sweep import sweep_argmax

CAS = Cascade()
POLICIES = {"pretrained": lambda: PolicyRuntime.load("pretrained", cost=CAS.cost),
            "oracle32": lambda: OraclePolicy(CAS, dtype=np.float32), "oracle64": lambda: OraclePolicy(CAS)}


class OneAtATime:
    """The reference: each lambda decided on its own, as the policies did before the sweeps (the
    runtime's ``_decide`` on freshly computed request profiles; the oracle's ``act_weights``)."""

    def __init__(self, inner):
        self.inner, self.clusters = inner, inner.clusters

    def act(self, x, lam):
        p = self.inner
        if isinstance(p, PolicyRuntime):
            return p._decide(p.request_profiles(x)[0], lam)
        return p.act_weights(CAS.weights(x), lam)

    def respond(self, x, lam):
        p = self.inner
        if isinstance(p, PolicyRuntime):
            z, b = p.request_profiles(x)
            a = p._decide(z, lam)
            return p.cost[:, a].T, (np.einsum("np,np->n", z, p.psi[a]) + b).astype(np.float64)
        a = p.act_weights(CAS.weights(x), lam)
        return CAS.cost[:, a].T, CAS.expected_revenue_w(CAS.weights(x), a)


def random_lams(rng, K):
    lams = np.exp(rng.uniform(np.log(1e-5), np.log(10.0), (K, 3)))
    lams[0] = 0.0  # the unpenalised argmax
    lams[1] = [10.0, 1e-5, 0.3]
    return lams


def float32_sweep(name, n, K) -> bool:
    """Whether ``respond_many`` takes the runtime's float32 sweep: a small batch, several lambdas."""
    return name == "pretrained" and n < PolicyRuntime.PRUNE_MIN_BATCH and K > 1


def assert_same_or_near_tie(cost, revenue, expect, lams, rel=1e-6):
    """(cost, revenue) at every lambda equal to the float64 reference's ``expect`` except for
    requests at a near-tie: there the chosen action's score ``revenue - lambda . cost`` (revenue
    the network's estimate, the score up to a per-request constant) is within ``rel`` of the
    largest term of the best; and such requests are rare."""
    ref_cost, ref_rev = np.stack([c for c, _ in expect]), np.stack([r for _, r in expect])
    differ = (cost != ref_cost).any(axis=2) | (revenue != ref_rev)
    ours = revenue - np.einsum("kng,kg->kn", cost, lams)
    best = ref_rev - np.einsum("kng,kg->kn", ref_cost, lams)
    scale = np.abs(ref_rev) + np.einsum("kng,kg->kn", ref_cost, lams) + 1.0
    assert np.all(ours[differ] >= best[differ] - rel * scale[differ])
    assert differ.mean() <= 0.01


class Float32Sweep(OneAtATime):
    """The float32 sweep's reference: each lambda decided on its own over the float32 scores."""

    def respond(self, x, lam):
        p = self.inner
        z, b = p.request_profiles(x)
        scores = (z @ p._psi_t).astype(p.SWEEP_DTYPE)
        a = p._cand[np.argmax(scores - (lam @ p._cost_c).astype(p.SWEEP_DTYPE), axis=1)]
        return p.cost[:, a].T, (np.einsum("np,np->n", z, p.psi[a]) + b).astype(np.float64)


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("n", [1, 9, 256, 700])  # 700: the runtime's pruned large-batch path
def test_respond_many_is_respond_at_every_lambda_bit_for_bit(name, n):
    """Every lambda of a sweep as decided on its own: bit for bit, over the same scores (the
    runtime's small batches sweep in float32: against the float32 reference bit for bit, and
    against the float64 decisions up to near-ties)."""
    rng = np.random.default_rng(n)
    policy, ref = POLICIES[name](), OneAtATime(POLICIES[name]())
    assert isinstance(policy, BatchPolicy)
    x = CAS.sample_features(n, rng.uniform(0, 24, n), rng)
    lams = random_lams(rng, 40)
    expect = [ref.respond(x, lam) for lam in lams]
    sweep = [Float32Sweep(policy).respond(x, lam) for lam in lams] if float32_sweep(name, n, len(lams)) else expect
    ro = x.copy()
    ro.setflags(write=False)
    for sample in (x.copy(), ro, ro):  # a writeable array, then a read-only one (cached), then from the cache
        cost, revenue = policy.respond_many(sample, lams)
        np.testing.assert_array_equal(cost, np.stack([c for c, _ in sweep]))
        np.testing.assert_array_equal(revenue, np.stack([r for _, r in sweep]))
        assert_same_or_near_tie(cost, revenue, expect, lams)
    for lam, (c, r) in zip(lams[:5], expect[:5]):  # one lambda at a time: the float64 decision, cached or not
        got = policy.respond(ro, lam)
        np.testing.assert_array_equal(got[0], c)
        np.testing.assert_array_equal(got[1], r)
        np.testing.assert_array_equal(policy.act(ro, lam), ref.act(x, lam))


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_the_cached_last_decision_is_the_decision_and_cannot_be_corrupted(name):
    rng = np.random.default_rng(5)
    policy, ref = POLICIES[name](), OneAtATime(POLICIES[name]())
    x = CAS.sample_features(600, rng.uniform(0, 24, 600), rng)
    x.setflags(write=False)
    lam = np.array([0.02, 0.3, 0.05])
    a = policy.act(x, lam)  # the plant's decision ...
    expect = ref.respond(x, lam)
    a[:] = 0  # ... which the caller may overwrite
    got = policy.respond(x, lam)  # answered from the cache
    np.testing.assert_array_equal(got[0], expect[0])
    np.testing.assert_array_equal(got[1], expect[1])
    other = lam * np.array([2.0, 0.5, 1.0])
    np.testing.assert_array_equal(policy.respond(x, other)[0], ref.respond(x, other)[0])
    np.testing.assert_array_equal(policy.act(x, lam), ref.act(x, lam))


def test_sweep_argmax_is_the_first_maximum_per_lambda_even_with_ties():
    rng = np.random.default_rng(2)
    for dtype in (np.float64, np.float32):
        scores = rng.integers(0, 6, (300, 40)).astype(dtype)  # many exact ties
        cost = rng.integers(0, 3, (3, 40)).astype(float)
        lams = np.vstack([np.zeros(3), rng.integers(0, 3, (30, 3)).astype(float), rng.random((30, 3))])
        got = sweep_argmax(scores, cost, lams)
        for k, lam in enumerate(lams):
            np.testing.assert_array_equal(got[k], np.argmax(scores - (lam @ cost).astype(dtype), axis=1))


def measure_one_at_a_time(evaluate, lam_current, grid):
    """The response curve as measured before the sweep: one policy call per lambda."""
    G, L = len(lam_current), len(grid)
    cost, revenue = np.zeros((G, L)), np.zeros((G, L))
    for g in range(G):
        for j, v in enumerate(grid):
            lam = np.array(lam_current, dtype=float)
            lam[g] = v
            c, r = evaluate(lam)
            cost[g, j], revenue[g, j] = c[g], r
    return ResponseCurve(np.asarray(grid, dtype=float), cost, revenue)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_response_curve_in_one_call_equals_the_curve_one_lambda_at_a_time(name):
    rng = np.random.default_rng(4)
    x = CAS.sample_features(256, rng.uniform(0, 24, 256), rng)
    grid = default_grid(1e-5, 10.0, 12)
    lam = np.array([0.003, 0.04, 0.2])
    fast = measure_response(Response(POLICIES[name](), x, max_requests=None).evaluate_many, lam, grid)
    reference = Float32Sweep if float32_sweep(name, len(x), 3 * len(grid)) else OneAtATime
    slow = measure_one_at_a_time(Response(reference(POLICIES[name]()), x, max_requests=None).evaluate, lam, grid)
    np.testing.assert_array_equal(fast.cost, slow.cost)
    np.testing.assert_array_equal(fast.revenue, slow.revenue)
    # a policy without respond_many is looped over: the same curve
    loop = measure_response(Response(OneAtATime(POLICIES[name]()), x, max_requests=None).evaluate_many, lam, grid)
    np.testing.assert_array_equal(loop.cost, slow.cost)
    np.testing.assert_array_equal(loop.revenue, slow.revenue)


def test_respond_many_answers_are_validated_naming_the_method():
    class Bad:
        clusters = ("a", "b")

        def respond(self, x, lam):
            return np.ones((len(x), 2)), np.ones(len(x))

        def respond_many(self, x, lams):
            return np.ones((len(lams), len(x), 3)), np.ones((len(lams), len(x)))

    with pytest.raises(ValueError, match=r"Bad.respond_many: cost must have shape \(4, 5, 2\)"):
        checked_response_many(Bad(), np.zeros((5, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"lambdas must have shape \(K, 3\)"):
        PolicyRuntime.load("pretrained").respond_many(CAS.sample_features(4, 1.0, np.random.default_rng(0)), np.ones(3))
    with pytest.raises(ValueError, match="lambda must be finite and >= 0, got row 1"):
        OraclePolicy(CAS).respond_many(CAS.sample_features(4, 1.0, np.random.default_rng(0)), [[0.1] * 3, [-1.0, 0, 0]])


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("n", [1, 256, 700])  # 700: the runtime's pruned large-batch path
def test_respond_cost_is_respond_cost_part_bit_for_bit(name, n):
    """The cost-only path (what a bisection and the hindsight limit read) gives respond's cost, on a
    writeable sample, a read-only one and from its cache; Response.cost is evaluate's cost."""
    rng = np.random.default_rng(100 + n)
    policy, ref = POLICIES[name](), POLICIES[name]()
    assert isinstance(policy, CostPolicy)
    x = CAS.sample_features(n, rng.uniform(0, 24, n), rng)
    ro = x.copy()
    ro.setflags(write=False)
    for lam in random_lams(rng, 12):
        expect = ref.respond(x.copy(), lam)[0]
        for sample in (x.copy(), ro, ro):
            np.testing.assert_array_equal(policy.respond_cost(sample, lam), expect)
            np.testing.assert_array_equal(checked_cost(policy, sample, lam), expect)
        r = Response(policy, ro, max_requests=None)
        np.testing.assert_array_equal(r.cost(lam), r.evaluate(lam)[0])
        assert r.n_evals == 2


def test_checked_cost_loops_over_respond_without_respond_cost_and_validates_naming_the_method():
    class NoCost:
        clusters = ("a", "b")

        def respond(self, x, lam):
            return np.outer(np.arange(len(x)), 1.0 / (1.0 + np.asarray(lam))), np.zeros(len(x))

    x = np.zeros((5, 2))
    np.testing.assert_array_equal(checked_cost(NoCost(), x, np.array([1.0, 3.0])),
                                  NoCost().respond(x, np.array([1.0, 3.0]))[0])
    assert not isinstance(NoCost(), CostPolicy)

    class BadCost(NoCost):
        def __init__(self, out):
            self.out = out

        def respond_cost(self, x, lam):
            return self.out

    for out, match in ((np.ones((5, 3)), r"BadCost.respond_cost: cost must have shape \(5, 2\), got \(5, 3\)"),
                       (-np.ones((5, 2)), "BadCost.respond_cost: cost must be finite and >= 0"),
                       (np.full((5, 2), np.nan), "BadCost.respond_cost: cost must be finite and >= 0"),
                       ("x", "BadCost.respond_cost must return a numeric cost array")):
        with pytest.raises(ValueError, match=match):
            checked_cost(BadCost(out), x, np.ones(2))
        with pytest.raises(ValueError, match=match):
            Response(BadCost(out), x, max_requests=None).cost(np.ones(2))


def test_response_shares_a_read_only_sample_and_copies_a_writeable_one():
    rng = np.random.default_rng(6)
    x = CAS.sample_features(50, rng.uniform(0, 24, 50), rng)
    r = Response(OraclePolicy(CAS), x, max_requests=None)
    assert r.features is not x and not r.features.flags.writeable
    x.setflags(write=False)
    assert Response(OraclePolicy(CAS), x, max_requests=None).features is x


class OneAtATimeSweeps(OneAtATime):
    """The reference with the runtime's sweep arithmetic: single lambdas as :class:`OneAtATime`,
    a sweep (``respond_many``) one float32 decision per lambda, nothing cached."""

    def respond_many(self, x, lams):
        out = [(Float32Sweep(self.inner) if len(lams) > 1 and len(x) < PolicyRuntime.PRUNE_MIN_BATCH else self).respond(x, lam)
               for lam in lams]
        return np.stack([c for c, _ in out]), np.stack([r for _, r in out])


def test_mpc_closed_loop_decisions_are_those_of_one_lambda_at_a_time():
    """The MPC over the batched, cached policy decides exactly as over the reference policy (each
    lambda on its own, nothing cached, the sweep's float32 scores): the same lambdas every tick,
    the same revenue; and within rounding of the all-float64 reference."""
    # the whole tick's sample is the curve's (no cut): a cut sample's profiles are carried over from the
    # tick's batch, the same numbers only as far as the BLAS is batch-independent (test_take_rows_...)
    sim = Simulator(Traffic(load_trace("nasa"), period_s=60), cascade=CAS, n_requests=300, days=0.08, seed=3,
                    response_requests=300)
    fast = sim.run(make_controller("mpc"), PolicyRuntime.load("pretrained", cost=CAS.cost))
    slow = sim.run(make_controller("mpc"), OneAtATimeSweeps(PolicyRuntime.load("pretrained", cost=CAS.cost)))
    cols = [c for c in fast.log.columns if c.startswith("lambda_")]
    assert (fast.log["acted"] == "mpc").mean() > 0.9
    np.testing.assert_array_equal(fast.log[cols].to_numpy(), slow.log[cols].to_numpy())
    np.testing.assert_array_equal(fast.log["revenue"].to_numpy(), slow.log["revenue"].to_numpy())
    f64 = sim.run(make_controller("mpc"), OneAtATime(PolicyRuntime.load("pretrained", cost=CAS.cost)))
    np.testing.assert_allclose(fast.log[cols].to_numpy(), f64.log[cols].to_numpy(), rtol=1e-3)
    assert abs(fast.log["revenue"].sum() / f64.log["revenue"].sum() - 1) < 1e-4


def test_take_rows_carries_the_profiles_over_and_decides_as_the_rows_afresh(monkeypatch):
    """A cut of a cached sample (the Balancer's tick sample cut to ``response_requests``) is its rows,
    read-only; the request-side networks do not run again on it, and its decisions are those of the
    same rows profiled afresh (up to near-ties: a row's profile computed in another batch may differ
    in the last bit on a BLAS whose kernels depend on the batch); a sample not in the cache is
    plain indexing, profiled on first use."""
    rng = np.random.default_rng(21)
    policy, ref = POLICIES["pretrained"](), OneAtATime(POLICIES["pretrained"]())
    x = CAS.sample_features(1000, rng.uniform(0, 24, 1000), rng)
    x.setflags(write=False)
    lams = random_lams(rng, 6)
    policy.act(x, lams[2])  # the plant's decision: x's profiles are cached
    profiled = []
    original = policy.request_profiles
    monkeypatch.setattr(policy, "request_profiles", lambda f: profiled.append(f) or original(f))
    rows = rng.permutation(1000)[:256]
    cut = Response(policy, x, max_requests=256, lam=lams[2]).features
    assert not cut.flags.writeable and profiled == []
    taken = policy.take_rows(x, rows)
    np.testing.assert_array_equal(taken, x[rows])
    assert not taken.flags.writeable
    cost, revenue = policy.respond_many(taken, lams)
    assert profiled == []  # the carried-over profiles answered
    assert_same_or_near_tie(cost, revenue, [ref.respond(x[rows], lam) for lam in lams], lams, rel=1e-5)
    for lam in lams:
        c, r = policy.respond(cut, lam)
        assert_same_or_near_tie(c[None], r[None], [ref.respond(np.array(cut), lam)], lam[None], rel=1e-9)
    assert profiled == []
    fresh = CAS.sample_features(300, rng.uniform(0, 24, 300), rng)  # not cached: indexed, profiled when used
    part = policy.take_rows(fresh, np.arange(0, 300, 2))
    np.testing.assert_array_equal(part, fresh[::2])
    np.testing.assert_array_equal(policy.act(part, lams[3]), ref.act(fresh[::2], lams[3]))
    assert len(profiled) == 1


def test_take_rows_without_the_method_indexes_and_a_bad_answer_is_named():
    from mpc_balancer.policy import RowsPolicy, take_rows

    x = np.arange(20.0).reshape(10, 2)
    plain = OraclePolicy(CAS)
    assert not isinstance(plain, RowsPolicy) and isinstance(POLICIES["pretrained"](), RowsPolicy)
    out = take_rows(plain, x, [3, 1, 3])
    np.testing.assert_array_equal(out, x[[3, 1, 3]])
    assert not out.flags.writeable

    class Short:
        clusters = ("a", "b")

        def respond(self, f, lam):
            return np.zeros((len(f), 2)), np.zeros(len(f))

        def take_rows(self, f, rows):
            return f[:1]

    with pytest.raises(ValueError, match=r"Short.take_rows: must return shape \(3, 2\), got \(1, 2\)"):
        take_rows(Short(), x, [3, 1, 3])

    class Same(Short):
        def take_rows(self, f, rows):
            return f  # its input itself: the caller's array must not be frozen

    y = np.arange(6.0).reshape(3, 2)
    out = take_rows(Same(), y, [0, 1, 2])
    assert y.flags.writeable and not out.flags.writeable and out is not y
    np.testing.assert_array_equal(take_rows(plain, x, np.array([], dtype=int)), x[:0])
    for policy in (plain, POLICIES["pretrained"]()):
        np.testing.assert_array_equal(take_rows(policy, CAS.sample_features(4, 12.0, np.random.default_rng(0)), [-1, 0]).shape, (2, 5))
        z = CAS.sample_features(10, 12.0, np.random.default_rng(0))
        for rows, match in ((np.ones(10, dtype=bool), "rows must be a 1-D array of integer row indices, got dtype bool"),
                            ([0.0, 1.7], "got dtype float64"), ([[0, 1]], r"shape \(1, 2\)"),
                            ([0, 10], "rows must index a batch of 10 rows, got indices from 0 to 10"), ([-11], "from -11")):
            with pytest.raises(ValueError, match=match):
                take_rows(policy, z, rows)
            if isinstance(policy, PolicyRuntime):
                with pytest.raises(ValueError, match=match):
                    policy.take_rows(z, rows)


def test_cached_samples_and_decisions_interleaved_are_the_decisions(monkeypatch):
    """The runtime keeps the request-side work of its last ``CACHED_SAMPLES`` read-only samples and the
    last ``CACHED_DECISIONS`` single decisions of each: interleaved samples (a plant's large one, a
    controller's small ones) and revisited lambdas are answered as decided afresh, bit for bit, more
    samples and lambdas than it keeps included; a sample still in the cache is not profiled again."""
    rng = np.random.default_rng(11)
    policy = POLICIES["pretrained"]()
    ref = OneAtATime(POLICIES["pretrained"]())
    samples = []
    for n in (700, 256, 256, 700, 40, 256):
        x = CAS.sample_features(n, rng.uniform(0, 24, n), rng)
        x.setflags(write=False)
        samples.append(x)
    lams = random_lams(rng, PolicyRuntime.CACHED_DECISIONS + 3)
    profiled = []
    original = policy.request_profiles
    monkeypatch.setattr(policy, "request_profiles", lambda x: profiled.append(x) or original(x))
    for step in range(400):
        x = samples[int(rng.integers(len(samples)))]
        lam = lams[int(rng.integers(len(lams)))]
        cached = any(x is s for s, _ in policy._respond_cache)
        before = len(profiled)
        if step % 2:
            np.testing.assert_array_equal(policy.act(x, lam), ref.act(x, lam))
        else:
            cost, revenue = policy.respond(x, lam)
            expect = ref.respond(x, lam)
            np.testing.assert_array_equal(cost, expect[0])
            np.testing.assert_array_equal(revenue, expect[1])
        assert len(profiled) == before + (not cached)
        assert len(policy._respond_cache) <= PolicyRuntime.CACHED_SAMPLES
        assert policy._respond_cache[0][0] is x  # the most recent first
        assert all(len(entry[3]) <= PolicyRuntime.CACHED_DECISIONS for _, entry in policy._respond_cache)
    assert len(profiled) < 200  # most calls were served from the cache


@pytest.mark.parametrize("pool_ticks", [1, 3])
def test_mpc_curve_sample_is_the_pooled_ticks_shared_when_one(pool_ticks):
    """A pool of one tick is the curve's sample as it is (no copy: the policy's cached work on it
    serves the curve and the next tick's re-basing); a longer pool is the ticks' concatenation."""
    from mpc_balancer.balancer import Balancer
    from mpc_balancer.forecast import TickForecaster

    sim = Simulator(Traffic(load_trace("nasa"), period_s=60), cascade=CAS, n_requests=300, days=0.01, seed=3)
    ctrl = make_controller("mpc", pool_ticks=pool_ticks)
    sim.run(Balancer(ctrl, forecaster=TickForecaster(), response_requests=sim.response_requests, time_budget_s=float("inf")),
            PolicyRuntime.load("pretrained", cost=CAS.cost))
    assert len(ctrl.pool_) == pool_ticks and not ctrl.sample_.features.flags.writeable
    if pool_ticks == 1:
        assert ctrl.sample_.features is ctrl.pool_[0]
    else:
        np.testing.assert_array_equal(ctrl.sample_.features, np.concatenate(list(ctrl.pool_)))
