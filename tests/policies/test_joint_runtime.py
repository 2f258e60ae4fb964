"""The joint-q runtime (REM / DQN, one agent over the joint action): numpy against the torch network,
the policy protocol, the shipped bundles and their recorded commands."""
import numpy as np
import pytest

from policies.bundle import read_bundle, shipped_bundles
from policies.joint_runtime import JointQRuntime
from policies.runtime import PolicyRuntime, load_runtime


@pytest.fixture(scope="module", params=["rem", "dqn"])
def tiny_joint(request, cascade, tiny_logs, tmp_path_factory):
    """A briefly trained REM (4 heads) or DQN exported to a temporary bundle: (json path, fitted model)."""
    from policies.training import ValueModel
    from policies.training.export import export_bundle

    model = ValueModel(request.param, steps=30, batch_size=256, hidden=32, seed=2).fit(tiny_logs, cascade)
    return export_bundle(model, tmp_path_factory.mktemp("joint") / request.param), model


def test_runtime_agrees_with_the_torch_model(tiny_joint, cascade):
    path, model = tiny_joint
    rt = load_runtime(path)
    assert isinstance(rt, JointQRuntime) and rt.heads == (4 if model.algo == "rem" else 1)
    x = cascade.sample_features(300, np.linspace(0, 24, 300), np.random.default_rng(1))
    ref = model.predict_revenue(x)  # torch, float32
    got = rt.predict_revenue(x)
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=1e-6 * np.abs(ref).max())
    # decisions: the same argmax wherever the torch scores' best two are not within float32 noise
    for lam in (np.full(3, 1e-3), np.array([0.05, 0.01, 0.2])):
        s = ref - lam @ cascade.cost
        top2 = np.sort(s, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 1e-3 * np.abs(top2[:, 1])
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(rt.act(x, lam)[clear], s.argmax(axis=1)[clear])


def test_policy_protocol_respond_and_respond_many(tiny_joint, cascade):
    rt = load_runtime(tiny_joint[0])
    x = cascade.sample_features(200, 9.0, np.random.default_rng(4))
    x.setflags(write=False)
    lams = np.geomspace(1e-4, 1.0, 7)[:, None] * np.array([1.0, 0.5, 2.0])
    cm, rm = rt.respond_many(x, lams)
    prev = None
    for i, lam in enumerate(lams):
        c, r = rt.respond(x, lam)
        a = rt.act(x, lam)
        np.testing.assert_array_equal(cm[i], c)
        np.testing.assert_array_equal(rm[i], r)
        np.testing.assert_array_equal(c, cascade.cost[:, a].T)
        np.testing.assert_allclose(r, rt.predict_revenue(x)[np.arange(len(a)), a], rtol=1e-12)
        if prev is not None:  # a Lagrangian argmax: raising every lambda never raises any cluster's mean cost... in total
            assert (c @ lam).sum() <= (prev @ lam).sum() + 1e-9
        prev = c
    with pytest.raises(ValueError, match="features must have shape"):
        rt.act(x[:, :3], lams[0])


def test_shipped_rem_and_dqn_bundles_load_and_match_torch(cascade):
    import torch

    from policies.training.export import load_joint_network

    assert {"pretrained", "rem", "dqn"} <= set(shipped_bundles())
    for name, heads in (("rem", 4), ("dqn", 1)):
        arrays, meta, _ = read_bundle(name)
        assert meta["kind"] == "joint-q" and meta["architecture"]["heads"] == heads
        assert meta["training"]["command"] == f"mpc-balancer train --algo {name} --seed 0 --out DIR --name {name} --hidden 64"
        rt = load_runtime(name, cost=cascade.cost)
        net, arrays = load_joint_network(name)
        x = cascade.sample_features(256, np.linspace(0, 24, 256), np.random.default_rng(9))
        xn = torch.as_tensor((x - arrays["feature_mean"]) / arrays["feature_scale"], dtype=torch.float32)
        with torch.no_grad():
            ref = net.q_all(xn).double().numpy() * np.exp(x[:, :1])
        np.testing.assert_allclose(rt.predict_revenue(x), ref, rtol=2e-4, atol=1e-6 * np.abs(ref).max())
    with pytest.raises(ValueError, match="'joint-q' bundle: load it with"):
        PolicyRuntime.load("rem")


@pytest.mark.slow
def test_evaluate_scores_a_shipped_joint_bundle():
    """``policies evaluate --algos pretrained --bundle rem``: the REM bundle against the exact oracle
    (a worse allocation than the exact optimum, far better than none)."""
    from policies.evaluation import evaluate, format_tables

    res = evaluate(["pretrained"], seeds=1, quick=True, bundle="rem", log=lambda msg: None)
    assert 50 < res["algos"]["pretrained"]["return_pct_mean"] < 100.5
    assert "bundle rem" in format_tables(res)
