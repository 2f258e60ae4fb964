"""Paper-style offline evaluation of value models against the ground truth and the exact oracle.

For every seed: one log of ``n_logs`` requests (behaviour policy with exploration) that every
algorithm trains on with the same budget, and a separate evaluation batch of fresh requests from
another random stream (never used for training or for choosing hyperparameters) with the actions
and compute the behaviour policy logged for them. Each model predicts the revenue of every joint
action for the evaluation requests; then

* **Spearman r_s** between predicted and true expected revenue on the logged (request, action) pairs;
* **Return%** (the paper's protocol): quota-constrained greedy allocation at the logged compute,
  with one quota per cluster (each stage cluster is its own resource with its own multiplier, as
  in serving): the model's Lagrangian allocation under the logged per-cluster compute, scored by
  the ground truth, over the same protocol run with the ground truth -- which is the exact batch
  optimum (:func:`policies.oracle.batch_optimum`) at that budget -- x 100;
* **Return% vs oracle**: the same allocation over the exact optimum at the compute the allocation
  actually uses (equal compute); **regret%** = 100 - that;
* **pooled Return%**: a variant with one quota for the sum of CPU-ms over all clusters and one
  multiplier (treats the clusters' compute as interchangeable), over the same with the ground truth.

The exact optimum is a Lagrangian solution, exact for the compute it uses; on this discrete
problem it can leave a duality gap of a few hundredths of a percent against the budget, so a
near-perfect allocation can score slightly above 100.

Results are reported as mean +- std over seeds in the layout of MaRCA's Table 1 (and Table 2 for
the AW / SMC / VGCA ablations).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from .allocation import cluster_allocation, quota_allocation
from .cascade import Cascade
from .logs import generate_logs
from .oracle import batch_optimum

EVAL_STREAM = 1_000_003  # evaluation requests come from seed + EVAL_STREAM, logs from seed
NAMES = {"awrq": "AWRQ-Mixer", "qmix": "QMIX", "vdn": "VDN", "rem": "REM", "dqn": "DQN", "pretrained": "AWRQ-Mixer (shipped)",
         "awrq-no-aw": "w/o AW", "awrq-no-smc": "w/o SMC", "awrq-no-vgca": "w/o VGCA"}


@dataclass
class EvalInstance:
    """A held-out evaluation batch with its ground truth and reference allocations."""

    features: np.ndarray
    true: np.ndarray  # (N, A) true expected revenue of every joint action
    logged: np.ndarray  # (N,) logged joint actions
    quota: float  # total logged compute (all clusters)
    budget: np.ndarray  # (G,) logged compute per cluster
    quota_revenue: float  # ground-truth revenue of the pooled-quota allocation made with the ground truth
    optimum_revenue: float  # exact optimum under the per-cluster logged budget


def make_instance(cascade: Cascade, seed: int, n: int = 4096) -> EvalInstance:
    """An evaluation batch of ``n`` requests from the held-out stream ``seed``, with its quota and per-cluster budgets."""
    logs = generate_logs(cascade, n, seed=seed + EVAL_STREAM)
    true = cascade.weights(logs.features) @ cascade.phi
    quota = float(logs.cost.sum())
    a = quota_allocation(true, cascade.cost, quota)
    budget = logs.cost.sum(axis=0)
    return EvalInstance(features=logs.features, true=true, logged=logs.joint, quota=quota, budget=budget,
                        quota_revenue=float(true[np.arange(n), a].sum()),
                        optimum_revenue=batch_optimum(cascade, cascade.weights(logs.features), budget).revenue)


def score(cascade: Cascade, inst: EvalInstance, pred: np.ndarray) -> dict:
    """Metrics of a predicted revenue matrix ``pred`` (N, A) on ``inst``."""
    rows = np.arange(len(pred))
    rs = float(spearmanr(pred[rows, inst.logged], inst.true[rows, inst.logged])[0])
    a, _ = cluster_allocation(pred, cascade.cost, inst.budget)
    revenue = inst.true[rows, a].sum()
    used = cascade.cost[:, a].sum(axis=1)
    at_used = batch_optimum(cascade, cascade.weights(inst.features), used).revenue
    pooled = quota_allocation(pred, cascade.cost, inst.quota)
    return {"return_pct": float(100.0 * revenue / inst.optimum_revenue), "return_oracle_pct": float(100.0 * revenue / at_used),
            "regret_pct": float(100.0 - 100.0 * revenue / at_used), "spearman": rs,
            "return_pooled_pct": float(100.0 * inst.true[rows, pooled].sum() / inst.quota_revenue)}


def training_budget(quick: bool = False) -> dict:
    """Data and training budget shared by every algorithm (``quick`` for smoke runs and tests)."""
    return {"n_logs": 20_000, "steps": 60, "batch_size": 512} if quick else {"n_logs": 1_000_000, "steps": 2000, "batch_size": 2048}


def model_for(algo: str, seed: int, budget: dict):
    """An unfitted ValueModel for ``algo`` (or an AWRQ ablation) with the shared budget."""
    from .training import ABLATIONS, ALGOS, ValueModel

    if algo in ABLATIONS:
        return ValueModel("awrq", steps=budget["steps"], batch_size=budget["batch_size"], seed=seed, **ABLATIONS[algo])
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; available: {', '.join(ALGOS + tuple(ABLATIONS))}, pretrained")
    return ValueModel(algo, steps=budget["steps"], batch_size=budget["batch_size"], seed=seed)


def evaluate(algos: list[str], seeds: int = 3, quick: bool = False, bundle: str = "pretrained", log=None) -> dict:
    """Train (or load) and score every algorithm on ``seeds`` seeds; returns the JSON-ready results."""
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    log = log or (lambda msg: print(msg, flush=True))
    cascade = Cascade()
    budget = training_budget(quick)
    trained = [a for a in algos if a != "pretrained"]
    for a in trained:
        model_for(a, 0, budget)  # fail fast on unknown names
    if trained:
        import torch

        torch.set_num_threads(1)
    per: dict[str, list[dict]] = {a: [] for a in algos}
    t_start = time.perf_counter()
    for seed in range(seeds):
        inst = make_instance(cascade, seed)
        logs = generate_logs(cascade, budget["n_logs"], seed=seed) if trained else None
        for algo in algos:
            t0 = time.perf_counter()
            if algo == "pretrained":
                from .runtime import load_runtime

                pred = load_runtime(bundle).predict_revenue(inst.features)
            else:
                pred = model_for(algo, seed, budget).fit(logs, cascade).predict_revenue(inst.features)
            m = score(cascade, inst, pred)
            m["seconds"] = time.perf_counter() - t0
            per[algo].append(m)
            log(f"seed {seed} {algo:<13} Return% {m['return_pct']:7.2f}  vs oracle {m['return_oracle_pct']:7.2f}  "
                f"pooled {m['return_pooled_pct']:7.2f}  r_s {m['spearman']:.4f}  ({m['seconds']:.0f}s, "
                f"total {time.perf_counter() - t_start:.0f}s)")
    out = {}
    for algo, ms in per.items():
        col = lambda k, ms=ms: np.array([m[k] for m in ms])
        out[algo] = {"return_pct_mean": float(col("return_pct").mean()), "return_pct_std": float(col("return_pct").std(ddof=0)),
                     "spearman_mean": float(col("spearman").mean()), "regret_pct_mean": float(col("regret_pct").mean()),
                     "return_oracle_pct_mean": float(col("return_oracle_pct").mean()),
                     "return_oracle_pct_std": float(col("return_oracle_pct").std(ddof=0)),
                     "return_pooled_pct_mean": float(col("return_pooled_pct").mean()), "seeds": len(ms),
                     "seconds_mean": float(col("seconds").mean())}
    return {"algos": out, "budget": budget, "eval_requests": 4096, "bundle": bundle, "wall_s": time.perf_counter() - t_start}


def format_tables(results: dict) -> str:
    """Table 1 (methods) and, if ablations were run, Table 2, in the paper's layout."""
    algos = results["algos"]
    head = f"{'Method':<22}{'Return%':>16}{'Return% vs oracle':>20}{'regret%':>9}{'pooled%':>9}{'r_s':>8}{'seeds':>6}"

    def row(a):
        m = algos[a]
        own_bundle = a == "pretrained" and results.get("bundle", "pretrained") != "pretrained"
        name = f"bundle {results['bundle']}" if own_bundle else NAMES.get(a, a)
        return (f"{name:<22}{m['return_pct_mean']:>8.2f} +- {m['return_pct_std']:<4.2f}"
                f"{m['return_oracle_pct_mean']:>12.2f} +- {m['return_oracle_pct_std']:<4.2f}{m['regret_pct_mean']:>9.2f}"
                f"{m['return_pooled_pct_mean']:>9.2f}"
                f"{m['spearman_mean']:>8.4f}{m['seeds']:>6d}")

    main = [a for a in algos if not a.startswith("awrq-")]
    abl = [a for a in algos if a.startswith("awrq-")]
    lines = ["Table 1: value models (Return% = ground-truth revenue of the allocation / optimal revenue x 100, "
             "per-cluster quotas at the logged compute)", head]
    lines += [row(a) for a in sorted(main, key=lambda a: -algos[a]["return_pct_mean"])]
    if abl:
        lines += ["", "Table 2: AWRQ-Mixer ablations", head]
        lines += [row(a) for a in (["awrq"] if "awrq" in algos else []) + abl]
    return "\n".join(lines)
