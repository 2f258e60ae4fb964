"""Decision throughput and latency of the policy runtime, beside eager torch and plain numpy.

Usage: ``python benchmarks/bench_policy.py [--bundle pretrained] [--batch 4096] [--seconds 2]``

All three compute the same decision ``argmax_a Rev(x, a) - lambda . cost(a)`` with the same trained
AWRQ-Mixer, on one core (torch and BLAS limited to one thread):

* ``runtime``: :class:`policies.runtime.PolicyRuntime` (action side precomputed at load, dominance-
  pruned candidates, pruned again per chunk of similar requests), float64 and float32;
* ``numpy plain``: the same network in numpy, action side precomputed but no pruning: the full
  (N, 960) score matrix and its argmax;
* ``torch eager``: the torch module's forward (request and action side) and the full argmax;
* ``onnx``: the bundle exported by ``mpc-balancer policies export`` (float64 and float32 inside the
  model), run by onnxruntime on one thread (rows skipped when the export extra is not installed).

It also checks that all of them choose the same actions.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def _rate(fn, batch: int, seconds: float) -> tuple[float, float]:
    """(decisions per wall-clock second, decisions per CPU second of this process)."""
    fn()
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - t0), n * batch / max(time.process_time() - c0, 1e-9)


def _latency(fn, X: np.ndarray, n: int) -> tuple[float, float]:
    times = np.empty(n)
    for i in range(n):
        x = X[i % len(X): i % len(X) + 1]
        t0 = time.perf_counter()
        fn(x)
        times[i] = time.perf_counter() - t0
    return float(np.percentile(times, 50) * 1e6), float(np.percentile(times, 99) * 1e6)


def _onnx_rows(bundle: str, X: np.ndarray, lam: np.ndarray) -> list:
    """(name, features -> actions) for the ONNX export in float64 and float32, on one onnxruntime thread."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed (pip install -e '.[export]'): no ONNX rows")
        return []
    import tempfile
    from pathlib import Path

    from policies.export_onnx import export_onnx

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    rows, lam32 = [], lam.astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        for dt in ("float64", "float32"):
            path = Path(d) / f"policy-{dt}.onnx"
            export_onnx(bundle, path, dtype=dt)
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            rows.append((f"onnxruntime ({dt} model)",
                         lambda x, sess=sess: sess.run(["action"], {"features": x.astype(np.float32, copy=False), "lam": lam32})[0]))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="pretrained")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--single", type=int, default=3000, help="single-request calls for the latency percentiles")
    args = ap.parse_args(argv)

    import torch

    from policies.cascade import Cascade
    from policies.runtime import PolicyRuntime
    from policies.training.export import load_torch_network

    torch.set_num_threads(1)
    cas = Cascade()
    rt64 = PolicyRuntime.load(args.bundle)
    rt32 = PolicyRuntime.load(args.bundle, dtype=np.float32)
    net, arrays = load_torch_network(args.bundle)
    rng = np.random.default_rng(0)
    X = cas.sample_features(args.batch, rng.uniform(0, 24, args.batch), rng)
    X = X.astype(np.float32).astype(np.float64)  # values every implementation (the float32 ONNX input too) reads alike
    lam = np.array([0.02, 0.05, 0.03])
    cost = rt64.cost
    mean, scale = arrays["feature_mean"], arrays["feature_scale"]

    def numpy_plain(x):
        z, b = rt64.request_profiles(x)
        return np.argmax(z @ rt64.psi.T - lam @ cost, axis=1)  # bias is constant per request

    cost_t = torch.as_tensor(cost, dtype=torch.float32)
    lam_t = torch.as_tensor(lam, dtype=torch.float32)

    def torch_eager(x):
        with torch.no_grad():
            xt = torch.as_tensor(x, dtype=torch.float32)
            q = net.q_all((xt - torch.as_tensor(mean, dtype=torch.float32)) / torch.as_tensor(scale, dtype=torch.float32))
            return torch.argmax(q * torch.exp(xt[:, 0:1]) - lam_t @ cost_t, dim=1).numpy()

    ref = numpy_plain(X)
    agree = {"runtime f64": float((rt64.act(X, lam) == ref).mean()), "runtime f32": float((rt32.act(X, lam) == ref).mean()),
             "torch eager": float((torch_eager(X) == ref).mean())}
    onnx_rows = _onnx_rows(args.bundle, X, lam)
    for name, fn in onnx_rows:
        agree[name] = float((fn(X) == ref).mean())
    print(f"bundle {args.bundle}: {rt64.n_actions} joint actions, {len(rt64._cand)} after static dominance "
          f"(then pruned per chunk of requests), lambda={lam.tolist()}")
    print("agreement with the full argmax: " + ", ".join(f"{k} {v:.4f}" for k, v in agree.items()))
    rows = [("runtime (float64)", lambda: rt64.act(X, lam), rt64.act),
            ("runtime (float32)", lambda: rt32.act(X, lam), rt32.act),
            ("numpy plain (full argmax)", lambda: numpy_plain(X), numpy_plain),
            ("torch eager (full argmax)", lambda: torch_eager(X), torch_eager)]
    rows += [(name, lambda fn=fn: fn(X), fn) for name, fn in onnx_rows]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall-clock rates suffer when the machine is shared)")
    print(f"{'implementation':<28}{'decisions/s @' + str(args.batch):>20}{'per CPU-s':>14}{'p50 us (1 req)':>16}{'p99 us (1 req)':>16}")
    for name, batch_fn, single_fn in rows:
        rate, cpu_rate = _rate(batch_fn, args.batch, args.seconds)
        p50, p99 = _latency(lambda x, fn=single_fn: fn(x, lam) if fn in (rt64.act, rt32.act) else fn(x), X, args.single)
        print(f"{name:<28}{rate:>20,.0f}{cpu_rate:>14,.0f}{p50:>16.1f}{p99:>16.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
