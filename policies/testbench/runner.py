"""The load-test runner: drive one workload bucket at a fixed request rate and measure its cost.

A bucket is (value bucket, variant, queue length). For each bucket the runner

1. warms the workload up (back-to-back calls for ``warmup_s``; the mean service time of the first
   warm-up sets the rate when ``qps`` is automatic: ``target_utilisation / service time``, capped
   at ``max_qps``);
2. per repeat, warms up again, then issues requests on a fixed schedule (request ``i`` at ``t0 + i / qps``; sleeping
   when ahead, never busy-waiting, so the process's CPU time is the workload's) for ``duration_s``,
   recording each request's process CPU time and wall time;
3. rejects per-request outliers (beyond ``outlier_mads`` scaled MADs of the median), takes the
   mean of the rest as the repeat's CPU-ms per request, and also computes the paper's
   ``p% x machines x cores / QPS`` from the utilisation measured over the whole repeat window;
4. rejects outlying repeats the same way and reports the mean, spread and coefficient of
   variation over the kept repeats; the bucket's cost is the ``estimator`` (median by default,
   or mean) of the kept repeat values.

Repeats are interleaved: round ``r`` runs repeat ``r`` of every bucket before round ``r + 1``, so
slow phases of a shared machine (other tenants, frequency changes) spread over all buckets
instead of biasing the ones measured while they lasted.

Every output is checked (one entry per queued item); a workload that raises or returns a wrong
shape stops the run with a :class:`BucketError` naming the bucket.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from .stats import cost_per_request, mad_keep, summarise
from .workloads import Workload, check_output


class BucketError(ValueError):
    """A workload failed (raised or returned a bad result) in a given bucket."""


@dataclass(frozen=True)
class Bucket:
    value_bucket: int
    variant: int
    queue: int

    def label(self) -> str:
        return f"(value_bucket={self.value_bucket}, variant={self.variant}, queue={self.queue})"


MAX_WINDOW_REQUESTS = 1_000_000  # requests in one repeat window (qps x duration_s): the per-request arrays' size


@dataclass(frozen=True)
class LoadTestConfig:
    """How to load-test each bucket (configuration only)."""

    queues: tuple[int, ...] = (25, 50, 100, 200, 400)
    qps: float | None = None  # fixed request rate; None = automatic (target_utilisation)
    duration_s: float = 0.3
    warmup_s: float = 0.05
    repeats: int = 9
    value_buckets: tuple[int, ...] = (0,)
    machines: int = 1
    cores: int = 1  # cores the load test's utilisation is measured against (the runner is one thread)
    target_utilisation: float = 0.5
    max_qps: float = 5000.0
    outlier_mads: float = 5.0
    estimator: str = "median"  # of the kept repeat values: median or mean

    def __post_init__(self):
        if not self.queues or any((not isinstance(q, (int, np.integer))) or q < 1 for q in self.queues):
            raise ValueError(f"queues must be positive integers, got {list(self.queues)}")
        # finite as well as positive: inf slips through "> 0" and overflows int(round(qps * duration_s))
        if self.qps is not None and not 0 < self.qps < np.inf:
            raise ValueError(f"qps must be finite and > 0, got {self.qps!r}")
        for name in ("duration_s", "max_qps", "target_utilisation", "outlier_mads"):
            if not 0 < getattr(self, name) < np.inf:
                raise ValueError(f"{name} must be finite and > 0, got {getattr(self, name)!r}")
        rate = self.qps if self.qps is not None else self.max_qps
        if rate * self.duration_s > MAX_WINDOW_REQUESTS:
            # each window records every request's times: a huge rate x duration runs out of memory (or for hours)
            what = "qps" if self.qps is not None else "max_qps (the automatic rate's cap)"
            raise ValueError(f"{what} x duration_s is {rate:g} x {self.duration_s:g} s = {rate * self.duration_s:,.0f} requests "
                             f"per repeat window; at most {MAX_WINDOW_REQUESTS:,} (lower qps or duration_s)")
        if self.estimator not in ("median", "mean"):
            raise ValueError(f"estimator must be 'median' or 'mean', got {self.estimator!r}")
        if not 0 <= self.warmup_s < np.inf:  # NaN fails too
            raise ValueError(f"warmup_s must be finite and >= 0, got {self.warmup_s!r}")
        if self.repeats < 1 or self.machines < 1 or self.cores < 1:
            raise ValueError(f"repeats, machines and cores must be >= 1, got {self.repeats}, {self.machines}, {self.cores}")

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def buckets(workload: Workload, config: LoadTestConfig) -> list[Bucket]:
    return [Bucket(int(v), int(m), int(q)) for v in config.value_buckets for m in workload.variants for q in config.queues]


def _call(workload: Workload, bucket: Bucket):
    try:
        out = workload(bucket.queue, bucket.variant, bucket.value_bucket)
    except Exception as e:  # noqa: BLE001 - report any workload failure with its bucket
        raise BucketError(f"workload {_name(workload)} raised in bucket {bucket.label()}: {type(e).__name__}: {e}") from e
    return out


def _check(workload: Workload, bucket: Bucket, out) -> None:
    try:
        check_output(out, bucket.queue)
    except ValueError as e:
        raise BucketError(f"workload {_name(workload)} in bucket {bucket.label()}: {e}") from None


def _name(workload) -> str:
    return getattr(workload, "name", None) or type(workload).__name__


def warm_up(workload: Workload, bucket: Bucket, seconds: float) -> float:
    """Call back-to-back for ``seconds`` (at least 3 calls); return the mean CPU seconds per call."""
    n, cpu, t_end = 0, 0.0, time.perf_counter() + seconds
    while n < 3 or time.perf_counter() < t_end:
        c0 = time.process_time()
        out = _call(workload, bucket)
        cpu += time.process_time() - c0
        _check(workload, bucket, out)
        n += 1
    return cpu / n


def run_repeat(workload: Workload, bucket: Bucket, qps: float, config: LoadTestConfig) -> dict:
    """One paced window of ``duration_s`` at ``qps``; per-request and whole-window measurements."""
    n_target = max(1, int(round(qps * config.duration_s)))
    cpu = np.empty(n_target)
    wall = np.empty(n_target)
    interval = 1.0 / qps
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(n_target):
        ahead = w0 + i * interval - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        tc, tw = time.process_time(), time.perf_counter()
        out = _call(workload, bucket)
        cpu[i], wall[i] = time.process_time() - tc, time.perf_counter() - tw
        _check(workload, bucket, out)
    # the window ends when the next request would start, so a full window is n / qps long
    ahead = w0 + n_target * interval - time.perf_counter()
    if ahead > 0:
        time.sleep(ahead)
    window_wall, window_cpu = time.perf_counter() - w0, time.process_time() - c0
    keep = mad_keep(cpu, config.outlier_mads)
    achieved = n_target / window_wall
    util = window_cpu / (window_wall * config.machines * config.cores)
    return {"n": n_target, "rejected": int((~keep).sum()), "cpu_ms": 1e3 * float(cpu[keep].mean()),
            "cpu_ms_all": 1e3 * float(cpu.mean()), "wall_ms": 1e3 * float(np.median(wall)),
            "achieved_qps": achieved, "utilisation": util,
            "formula_ms": 1e3 * cost_per_request(util, config.machines, config.cores, achieved),
            "saturated": bool(achieved < 0.95 * qps)}


def bucket_rate(workload: Workload, bucket: Bucket, config: LoadTestConfig) -> float:
    """The bucket's request rate: ``config.qps`` or automatic from a warm-up's service time."""
    service = warm_up(workload, bucket, config.warmup_s)
    return config.qps or min(config.max_qps, config.target_utilisation / max(service, 1e-6))


def summarise_bucket(bucket: Bucket, qps: float, reps: list[dict], config: LoadTestConfig) -> dict:
    """Reject outlying repeats; the bucket's cost (``config.estimator``), spread and CV, with every repeat."""
    means = np.array([r["cpu_ms"] for r in reps])
    keep = mad_keep(means, 3.5) if len(reps) >= 3 else np.ones(len(reps), dtype=bool)
    s = summarise(means[keep])
    kept = [r for r, k in zip(reps, keep) if k]
    pick = np.median if config.estimator == "median" else np.mean
    return {**asdict(bucket), "qps": qps, "cpu_ms": float(pick(means[keep])), "cpu_ms_mean": s["mean"],
            "cpu_ms_std": s["std"], "cv": s["cv"],
            "wall_ms": float(np.mean([r["wall_ms"] for r in kept])),
            "formula_ms": float(pick([r["formula_ms"] for r in kept])),
            "utilisation": float(np.mean([r["utilisation"] for r in kept])),
            "achieved_qps": float(np.mean([r["achieved_qps"] for r in kept])),
            "kept_repeats": int(keep.sum()), "repeats": reps}


def run_bucket(workload: Workload, bucket: Bucket, config: LoadTestConfig) -> dict:
    """One bucket alone: warm up, then ``repeats`` paced windows."""
    return run_load_test_buckets(workload, [bucket], config)[0]


def run_load_test_buckets(workload: Workload, todo: list[Bucket], config: LoadTestConfig, progress=None) -> list[dict]:
    """Rates first (one warm-up per bucket), then interleaved rounds of one warmed-up window per bucket."""
    rates = [bucket_rate(workload, b, config) for b in todo]
    reps: list[list[dict]] = [[] for _ in todo]
    for _ in range(config.repeats):
        for i, b in enumerate(todo):
            warm_up(workload, b, config.warmup_s)
            reps[i].append(run_repeat(workload, b, rates[i], config))
    results = [summarise_bucket(b, q, r, config) for b, q, r in zip(todo, rates, reps)]
    for i, res in enumerate(results):
        if progress:
            progress(i + 1, len(results), res)
    return results


def run_load_test(workload: Workload, config: LoadTestConfig, progress=None) -> list[dict]:
    """Every bucket of ``workload`` under ``config``; ``progress(i, n, result)`` per bucket at the end."""
    try:
        workload.setup()
    except Exception as e:  # noqa: BLE001
        raise BucketError(f"workload {_name(workload)} failed in setup (before any bucket): {type(e).__name__}: {e}") from e
    return run_load_test_buckets(workload, buckets(workload, config), config, progress)
