"""The shipped bundle: lambda monotonicity, oracle regret on a fixed instance, no torch on the runtime path."""
import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.allocation import cluster_allocation
from policies.cascade import Cascade
from policies.oracle import OraclePolicy, batch_optimum
from policies.runtime import PolicyRuntime

CAS = Cascade()
RT = PolicyRuntime.load("pretrained", cost=CAS.cost)
RT32 = PolicyRuntime.load("pretrained", cost=CAS.cost, dtype=np.float32)
_rng = np.random.default_rng(2024)
X = CAS.sample_features(1500, _rng.uniform(0, 24, 1500), _rng)

lam_value = st.floats(1e-5, 10.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(lam=st.lists(lam_value, min_size=3, max_size=3), g=st.integers(0, 2), factor=st.floats(1.0, 50.0),
       batch=st.sampled_from([40, 1500]))
def test_raising_a_cluster_lambda_never_raises_its_cost(lam, g, factor, batch):
    lam = np.array(lam)
    hi = lam.copy()
    hi[g] = min(lam[g] * factor, 10.0)
    x = X[:batch]
    c_lo = RT.cost[g, RT.act(x, lam)]
    c_hi = RT.cost[g, RT.act(x, hi)]
    assert np.all(c_hi <= c_lo + 1e-12)  # per request, hence in expectation


def test_float32_fast_path_agrees_with_float64():
    for lam in ([1e-3, 1e-3, 1e-3], [0.05, 0.3, 0.02], [2.0, 0.1, 1.0]):
        assert np.mean(RT32.act(X, lam) == RT.act(X, lam)) > 0.999


@settings(max_examples=40, deadline=None)
@given(lam=st.lists(lam_value, min_size=3, max_size=3), scale=st.floats(1.0, 100.0))
def test_scaling_all_lambdas_never_raises_the_priced_cost(lam, scale):
    lam = np.array(lam)
    a_lo, a_hi = RT.act(X, lam), RT.act(X, lam * scale)
    # per request, the lambda-priced cost of the chosen action never rises
    assert np.all(lam @ RT.cost[:, a_hi] <= lam @ RT.cost[:, a_lo] * (1 + 1e-12) + 1e-12)


def test_lambda_enters_every_decision():
    low, high = RT.act(X, np.full(3, 1e-4)), RT.act(X, np.full(3, 5.0))
    assert np.all(RT.cost[:, high].mean(axis=1) < RT.cost[:, low].mean(axis=1))
    for g in range(3):  # every cluster's multiplier changes decisions on its own
        lam = np.full(3, 0.02)
        hi = lam.copy()
        hi[g] = 2.0
        assert RT.cost[g, RT.act(X, hi)].mean() < RT.cost[g, RT.act(X, lam)].mean()


def test_oracle_regret_on_a_fixed_instance_is_small():
    """Per-cluster budgets at a mid-range load: the bundle's allocation within 2% of the exact optimum."""
    w = CAS.weights(X)
    budget = CAS.cost[:, OraclePolicy(CAS).act_weights(w, np.array([0.05, 0.05, 0.05]))].sum(axis=1)
    a, _ = cluster_allocation(RT.predict_revenue(X), CAS.cost, budget)
    used = CAS.cost[:, a].sum(axis=1)
    assert np.all(used <= budget + 1e-6)
    rev = CAS.expected_revenue_w(w, a).sum()
    opt = batch_optimum(CAS, w, used).revenue
    assert rev / opt >= 0.98, f"Return% vs oracle {100 * rev / opt:.2f}"
    # and at a fixed lambda the decisions are near the oracle's in the penalised objective
    lam = np.array([0.03, 0.08, 0.02])
    obj = lambda act: (CAS.expected_revenue_w(w, act) - lam @ CAS.cost[:, act]).sum()
    assert obj(RT.act(X, lam)) >= 0.98 * obj(OraclePolicy(CAS).act_weights(w, lam))


def test_runtime_path_does_not_import_torch():
    code = ("import sys, numpy as np\n"
            "import policies, policies.runtime, policies.logs, policies.evaluation, policies.training\n"
            "from policies.runtime import PolicyRuntime\n"
            "rt = PolicyRuntime.load('pretrained')\n"
            "x = np.array([[0.1, 0.5, 0.4, 0.0, 1.0]])\n"
            "rt.act(x, np.array([0.1, 0.1, 0.1])); rt.bind(x)(np.array([0.2, 0.1, 0.1]))\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
