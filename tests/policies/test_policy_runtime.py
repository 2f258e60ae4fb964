"""Runtime: parity with the torch forward, exact argmax, bundle round trip and integrity checks."""
import json
import shutil

import numpy as np
import pytest
import torch

from policies.bundle import read_bundle
from policies.runtime import PolicyRuntime


@pytest.mark.parametrize("bundle", ["tiny_bundle", "tiny_shared_bundle"])
def test_parity_with_torch_forward(bundle, requests, request):
    path, model = request.getfixturevalue(bundle)
    rt = PolicyRuntime.load(path)
    net = model.net_.double()
    try:
        xn = torch.as_tensor((requests - model.feature_mean_) / model.feature_scale_)
        with torch.no_grad():
            want = net.q_all(xn).numpy() * np.exp(requests[:, 0])[:, None]
    finally:
        model.net_.float()
    got = rt.predict_revenue(requests)
    assert got.shape == (len(requests), 960)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, model.predict_revenue(requests), rtol=1e-4, atol=1e-5)  # float32 torch path


@pytest.mark.parametrize("bundle", ["tiny_bundle", "tiny_shared_bundle"])
@pytest.mark.parametrize("n", [7, 300, 2048])
def test_act_is_the_exact_penalised_argmax(bundle, cascade, n, request):
    rt = PolicyRuntime.load(request.getfixturevalue(bundle)[0])
    rng = np.random.default_rng(n)
    x = cascade.sample_features(n, rng.uniform(0, 24, n), rng)
    for lam in ([1e-3, 1e-3, 1e-3], [0.05, 0.2, 0.01], [1.0, 0.01, 0.3], [0.0, 0.0, 0.0]):
        lam = np.array(lam)
        full = rt.predict_revenue(x) - lam @ rt.cost
        a = rt.act(x, lam)
        assert a.dtype == np.int64 and a.shape == (n,)
        np.testing.assert_allclose(full[np.arange(n), a], full.max(axis=1), rtol=0, atol=1e-9)
        np.testing.assert_array_equal(rt.bind(x)(lam), a)


@pytest.mark.parametrize("bundle", ["tiny_bundle", "tiny_shared_bundle"])
def test_every_chunk_pruning_path_is_exact(bundle, cascade, request):
    """Chunks scored one by one, in padded groups, and with one survivor: all the exact argmax."""
    rt = PolicyRuntime.load(request.getfixturevalue(bundle)[0])
    rng = np.random.default_rng(9)
    n = 3000
    x = cascade.sample_features(n, rng.uniform(0, 24, n), rng)
    for lam in ([1e-3, 1e-3, 1e-3], [0.05, 0.2, 0.01], [2.0, 0.5, 1.0]):
        lam = np.array(lam)
        full = rt.predict_revenue(x) - lam @ rt.cost
        got = []
        for chunk, loop in ((PolicyRuntime.CHUNK, PolicyRuntime.LOOP_CHUNKS), (64, 0), (64, 10_000), (4096, 0)):
            rt.CHUNK, rt.LOOP_CHUNKS = chunk, loop
            a = rt.act(x, lam)
            np.testing.assert_allclose(full[np.arange(n), a], full.max(axis=1), rtol=0, atol=1e-9)
            got.append(a)
        for a in got[1:]:  # ties resolve the same way on every path
            np.testing.assert_array_equal(a, got[0])


@pytest.mark.parametrize("bundle", ["tiny_bundle", "tiny_shared_bundle"])
def test_chunked_request_profiles_equal_one_pass(bundle, cascade, request):
    rt = PolicyRuntime.load(request.getfixturevalue(bundle)[0])
    rng = np.random.default_rng(5)
    n = 2 * rt.PROFILE_CHUNK + 17
    x = cascade.sample_features(n, rng.uniform(0, 24, n), rng)
    z, b = rt.request_profiles(x)
    z1, b1 = rt._profiles(x)
    assert z.shape == z1.shape and b.shape == (n,)
    np.testing.assert_allclose(z, z1, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(b, b1, rtol=1e-12, atol=1e-15)
    small = x[: rt.SMALL_BATCH]  # the small-batch path (stacked block products) gives the same numbers
    np.testing.assert_allclose(rt._profiles(small)[0], z[: rt.SMALL_BATCH], rtol=1e-12, atol=1e-15)


def test_bundle_without_request_architecture_loads_as_separate(tiny_bundle, tmp_path, requests):
    """Bundles written before the request-side option (no architecture 'request'/'hidden') still load."""
    p = _copy(tiny_bundle[0], tmp_path)
    meta = json.loads(p.read_text())
    assert meta["architecture"]["request"] == "separate"
    del meta["architecture"]["request"], meta["architecture"]["hidden"]
    p.write_text(json.dumps(meta))
    old, new = PolicyRuntime.load(p), PolicyRuntime.load(tiny_bundle[0])
    assert old.request == "separate"
    np.testing.assert_array_equal(old.predict_revenue(requests), new.predict_revenue(requests))
    from policies.training.export import load_torch_network
    assert load_torch_network(p)[0].request == "separate"


def test_round_trip_and_metadata(tiny_bundle, requests):
    path, _ = tiny_bundle
    arrays, meta, _ = read_bundle(path)
    assert meta["features"] == ["log_value", "user_depth", "diversity_need", "hour_sin", "hour_cos"]
    assert meta["lambda_range"] == [1e-5, 10.0]
    assert meta["actions"]["clusters"] == ["retrieval", "prerank", "rank"] and meta["actions"]["n_actions"] == 960
    assert len(meta["npz_sha256"]) == 64 and meta["training"]["params"]["algo"] == "awrq"
    np.testing.assert_allclose(meta["normalisation"]["mean"], arrays["feature_mean"])
    a, b = PolicyRuntime.load(path), PolicyRuntime.load(str(path.with_suffix(".npz")))
    lam = np.array([0.02, 0.05, 0.1])
    np.testing.assert_array_equal(a.act(requests, lam), b.act(requests, lam))
    assert a.name == "tiny"


def _copy(path, tmp_path):
    for suffix in (".json", ".npz"):
        shutil.copy(path.with_suffix(suffix), tmp_path / f"tiny{suffix}")
    return tmp_path / "tiny.json"


def test_corrupted_npz_is_rejected(tiny_bundle, tmp_path):
    p = _copy(tiny_bundle[0], tmp_path)
    npz = p.with_suffix(".npz")
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    npz.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"tiny\.npz.*sha256.*\(corrupted or tampered\)"):
        PolicyRuntime.load(p)


def test_tampered_metadata_is_rejected(tiny_bundle, tmp_path):
    p = _copy(tiny_bundle[0], tmp_path)
    meta = json.loads(p.read_text())
    meta["npz_sha256"] = "0" * 64
    p.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="sha256"):
        PolicyRuntime.load(p)
    p.write_text("{not json")
    with pytest.raises(ValueError, match=r"tiny\.json.*cannot read metadata"):
        PolicyRuntime.load(p)
    del meta["lambda_range"]
    p.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="missing.*lambda_range"):
        PolicyRuntime.load(p)


def test_missing_files(tiny_bundle, tmp_path):
    p = _copy(tiny_bundle[0], tmp_path)
    p.with_suffix(".npz").unlink()
    with pytest.raises(FileNotFoundError, match="tiny.npz"):
        PolicyRuntime.load(p)
    with pytest.raises(FileNotFoundError, match="not found"):
        PolicyRuntime.load(tmp_path / "nothing")


def test_bad_inputs_are_rejected(tiny_bundle, requests):
    rt = PolicyRuntime.load(tiny_bundle[0])
    with pytest.raises(ValueError, match="shape"):
        rt.act(requests[:, :4], [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="lambda"):
        rt.act(requests, [0.1, -1.0, 0.1])
    bad = requests.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        rt.act(bad, [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="cost table"):
        PolicyRuntime.load(tiny_bundle[0], cost=np.ones((3, 10)))


@pytest.mark.filterwarnings("ignore:.*(overflow|invalid value).*:RuntimeWarning")
@pytest.mark.parametrize("bundle", ["tiny_bundle", "tiny_shared_bundle"])
def test_overflowing_request_does_not_change_the_others(bundle, cascade, request):
    """A request whose z overflows (absurd log_value) makes its chunk's bounds NaN: the chunk is then
    scored in full, and every finite request keeps its exact argmax (it used to get action 0)."""
    rt = PolicyRuntime.load(request.getfixturevalue(bundle)[0], dtype=np.float32)
    rng = np.random.default_rng(2)
    n = 2000
    x = cascade.sample_features(n, rng.uniform(0, 24, n), rng)
    lam = np.array([0.02, 0.05, 0.03])
    ref = rt.act(x, lam)
    x[7, rt.value_column] = 89.0  # exp(89) overflows float32
    got = rt.act(x, lam)
    ok = np.arange(n) != 7
    np.testing.assert_array_equal(got[ok], ref[ok])


def test_empty_batches_and_dtypes(tiny_bundle, tiny_shared_bundle):
    for path in (tiny_bundle[0], tiny_shared_bundle[0]):
        rt = PolicyRuntime.load(path)
        z, b = rt.request_profiles(np.zeros((0, len(rt.features))))
        assert z.shape == (0, rt.n_agents * rt.channels) and b.shape == (0,)
        assert rt.act(np.zeros((0, len(rt.features))), [0.1, 0.1, 0.1]).shape == (0,)
    with pytest.raises(ValueError, match="float32 or float64"):
        PolicyRuntime.load(tiny_bundle[0], dtype=np.float16)


def test_architecture_that_does_not_match_the_arrays_is_named(tiny_bundle, tmp_path):
    p = _copy(tiny_bundle[0], tmp_path)
    arrays, meta, _ = read_bundle(p)
    meta["architecture"]["request"] = "shared"  # the arrays are separate MLPs
    with pytest.raises(ValueError, match="arrays do not match its metadata"):
        PolicyRuntime(arrays, meta, name="x")
    meta["architecture"]["request"] = "bogus"
    with pytest.raises(ValueError, match="architecture.request must be"):
        PolicyRuntime(arrays, meta, name="x")


def _resign(p, arrays=None, **meta_changes):
    """Rewrite the bundle at ``p`` (arrays and/or metadata) and re-sign its npz, as a tamperer would."""
    from policies.bundle import sha256_file

    npz = p.with_suffix(".npz")
    if arrays is not None:
        np.savez(npz, **arrays)
    meta = json.loads(p.read_text()) | meta_changes
    meta["npz_sha256"] = sha256_file(npz)
    p.write_text(json.dumps(meta))


def test_re_signed_bundles_with_bad_content_are_rejected_naming_the_problem(tiny_bundle, tmp_path):
    """A NaN weight (re-signed) sent every request to action 0 with exit 0; a truncated npz gave a
    BadZipFile traceback; npz_sha256 as a number a TypeError; lambda_range was never checked."""
    p = _copy(tiny_bundle[0], tmp_path)
    arrays = dict(np.load(p.with_suffix(".npz")))
    name = next(k for k, a in arrays.items() if a.dtype.kind == "f" and a.size > 1)
    arrays[name] = arrays[name].copy()
    arrays[name].flat[0] = np.nan
    _resign(p, arrays)
    with pytest.raises(ValueError, match=rf"array '{name}' has non-finite values"):
        PolicyRuntime.load(p)
    p = _copy(tiny_bundle[0], tmp_path)
    npz = p.with_suffix(".npz")
    npz.write_bytes(npz.read_bytes()[:200])
    _resign(p)
    with pytest.raises(ValueError, match=r"tiny\.npz: cannot read arrays \(BadZipFile"):
        PolicyRuntime.load(p)
    p = _copy(tiny_bundle[0], tmp_path)
    for change, needle in (({"npz_sha256": 5}, "npz_sha256 must be a string"),
                           ({"lambda_range": [1.0, 0.1]}, r"lambda_range must be \[low, high\]"),
                           ({"features": ["a", "a"]}, "features must be a list of distinct names")):
        meta = json.loads(p.read_text()) | change
        p.write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=needle):
            PolicyRuntime.load(p)
        _copy(tiny_bundle[0], tmp_path)


def test_a_bundle_with_reordered_features_is_refused_by_the_simulator(tiny_bundle, tmp_path):
    """Swapping two feature names in the JSON changed 43% of decisions silently."""
    from mpc_balancer.sim.experiment import make_policy
    from policies.cascade import Cascade

    p = _copy(tiny_bundle[0], tmp_path)
    meta = json.loads(p.read_text())
    f = meta["features"]
    f[0], f[1] = f[1], f[0]
    p.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="reads features .* the simulated requests carry"):
        make_policy(str(p), Cascade())
