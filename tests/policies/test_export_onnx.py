"""The ONNX export chooses the same action as PolicyRuntime on >= 100k requests, edge lambdas included."""
from __future__ import annotations

import json

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from policies.cascade import Cascade  # noqa: E402
from policies.export_onnx import IR_VERSION, OPSET, cost_table_sha256, export_onnx  # noqa: E402
from policies.runtime import PolicyRuntime  # noqa: E402

ROWS = 120_000


def lambdas(rt: PolicyRuntime, rng) -> list[np.ndarray]:
    lo, hi = rt.lambda_range
    G = rt.cost.shape[0]
    edges = [np.full(G, lo), np.full(G, hi), np.array([lo, hi, lo])[:G], np.array([hi, lo, hi])[:G],
             np.full(G, 0.0), np.array([0.02, 0.05, 0.03])[:G]]
    rand = [np.exp(rng.uniform(np.log(lo), np.log(hi), G)) for _ in range(6)]
    return edges + rand


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    return {dt: export_onnx("pretrained", d / f"policy-{dt}.onnx", dtype=dt) for dt in ("float64", "float32")}


def test_onnx_agrees_with_the_runtime_on_every_row(exported):
    rt = PolicyRuntime.load("pretrained")
    rng = np.random.default_rng(7)
    # the features as the serving path sends them (float32), the runtime reads the same values
    X = Cascade().sample_features(ROWS, rng.uniform(0, 24, ROWS), rng).astype(np.float32)
    X[:50, 0] = [-6.0, 6.0] * 25  # extreme request values (softplus and exp ranges)
    sess64 = ort.InferenceSession(exported["float64"]["out"], providers=["CPUExecutionProvider"])
    sess32 = ort.InferenceSession(exported["float32"]["out"], providers=["CPUExecutionProvider"])
    lams = lambdas(rt, rng)
    chunks = np.array_split(np.arange(ROWS), len(lams))
    agree32 = []
    for lam, idx in zip(lams, chunks):
        x, lam32 = X[idx], lam.astype(np.float32)
        a, rev, cost = sess64.run(None, {"features": x, "lam": lam32})
        x64, l64 = x.astype(np.float64), lam32.astype(np.float64)
        ref = rt.act(x64, l64)
        diff = np.flatnonzero(a != ref)
        if diff.size:  # only exact ties (within float64 rounding of the scores) may resolve differently
            scores = rt.predict_revenue(x64[diff]) - l64 @ rt.cost
            gap = scores[np.arange(diff.size), ref[diff]] - scores[np.arange(diff.size), a[diff]]
            assert np.all(np.abs(gap) <= 1e-9 * np.abs(scores).max(axis=1)), (lam, diff[:5], gap[:5])
        assert diff.size <= 2, (lam, diff.size)
        rc, rr = rt.respond(x64, l64)
        same = a == ref
        np.testing.assert_allclose(rev[same], rr[same], rtol=1e-5, atol=1e-6 * np.abs(rr).max())
        np.testing.assert_allclose(cost[same], rc[same], rtol=1e-6)
        agree32.append(float((sess32.run(None, {"features": x, "lam": lam32})[0] == ref).mean()))
    assert min(agree32) >= 0.999, agree32  # float32 inside the model: near-ties may differ, nothing more


def test_onnx_metadata_and_versions(exported):
    import onnx

    info = exported["float64"]
    model = onnx.load(info["out"])
    assert model.ir_version == IR_VERSION and model.opset_import[0].version == OPSET
    rt = PolicyRuntime.load("pretrained")
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["features"]) == list(rt.features)
    assert json.loads(props["clusters"]) == list(rt.clusters)
    assert props["bundle_npz_sha256"] == rt.meta["npz_sha256"]
    assert props["cost_table_sha256"] == cost_table_sha256(rt.cost)
    assert json.loads(props["lambda_range"]) == list(rt.lambda_range)
    assert [i.name for i in model.graph.input] == ["features", "lam"]
    assert [o.name for o in model.graph.output] == ["action", "revenue", "cost"]
