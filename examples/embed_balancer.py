"""Embed the balancer in your own scheduler loop: no Simulator, no bundled cascade.

A made-up two-stage service ("recall" then "rank") with its own per-request policy class and a toy
model of its serving nodes. Every minute the scheduler sends the Balancer what a real deployment
has -- QPS, each cluster's load, the lambda in force and (optionally) a sample of the minute's
requests -- and applies the lambda it returns. The same day is then run telemetry-only: the
scheduler sends aggregates and the MPC learns the clusters' cost curves from them.

Run: python examples/embed_balancer.py [--hours 24]
"""
import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrix products: one BLAS thread is fastest

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import mpc_balancer as mb  # noqa: E402

SERVED = 5000  # requests simulated per minute; the Balancer is sent 200 of them
DEPTHS = np.arange(6)  # each stage's depth: 0 (cheapest) .. 5
R, K = np.meshgrid(DEPTHS, DEPTHS, indexing="ij")
R, K = R.ravel(), K.ravel()  # 36 joint actions (recall depth, rank depth)


class ToyPolicy:
    """The service's own policy: per request, argmax over 36 joint actions of its revenue estimate
    minus lambda times its cost estimate. Features: (log value, complexity)."""

    clusters = ("recall", "rank")

    def _tables(self, features):
        v = np.exp(features[:, :1])  # request value
        cx = features[:, 1:2]  # request complexity
        revenue = v * (1 - np.exp(-0.6 * R)) * (1 - np.exp(-0.5 * K))  # (n, 36)
        cost = np.stack([cx * (0.2 + 0.5 * R), (0.1 + 0.3 * K) * (1 + 0.25 * R) * np.ones_like(cx)], axis=-1)
        return revenue, cost  # cost (n, 36, 2) CPU-ms

    def act(self, features, lam):
        revenue, cost = self._tables(np.asarray(features, dtype=float))
        return np.argmax(revenue - cost @ np.asarray(lam, dtype=float), axis=1)

    def respond(self, features, lam):
        revenue, cost = self._tables(np.asarray(features, dtype=float))
        a = np.argmax(revenue - cost @ np.asarray(lam, dtype=float), axis=1)
        rows = np.arange(len(a))
        return cost[rows, a], revenue[rows, a]


class ToyNodes:
    """The serving fleet: true costs 10% above the policy's estimates on rank, load that follows
    demand with a lag, 1% sensor noise."""

    capacity = {"recall": 2.0e3, "rank": 1.6e3}  # CPU-ms per second

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.load = np.array([0.5, 0.5])

    def requests(self, n: int) -> np.ndarray:
        return np.column_stack([self.rng.normal(0.0, 0.8, n), self.rng.gamma(4.0, 0.25, n)])

    def serve(self, qps: float, cost: np.ndarray) -> tuple[np.ndarray, float]:
        demand = qps * cost.mean(axis=0) * np.array([1.0, 1.1]) / np.array(list(self.capacity.values()))
        self.load = 0.3 * self.load + 0.7 * demand
        return self.load * (1 + 0.01 * self.rng.standard_normal(2)), float(qps)


def traffic(times: pd.DatetimeIndex) -> np.ndarray:
    """Requests per second: a daily cycle between ~600 and ~3000 with a lunchtime bump."""
    h = (times.hour + times.minute / 60.0).to_numpy()
    return 1800 + 1200 * np.sin(2 * np.pi * (h - 9) / 24) + 400 * np.exp(-((h - 12.5) ** 2) / 0.5)


def run_day(hours: float, telemetry_only: bool) -> dict:
    policy, nodes = ToyPolicy(), ToyNodes(seed=1)
    history_index = pd.date_range("2024-03-01", periods=3 * 1440, freq="min")
    history = pd.Series(traffic(history_index), index=history_index)
    clusters = {name: mb.Cluster(capacity=cap, target=0.9) for name, cap in ToyNodes.capacity.items()}
    bal = mb.Balancer.create(controller="mpc", clusters=clusters, policy=None if telemetry_only else policy,
                             history=history, period_s=60, horizon=20)
    times = pd.date_range(history_index[-1] + pd.Timedelta(minutes=1), periods=int(hours * 60), freq="min")
    qps_now = traffic(times)
    lam = {"recall": 0.01, "rank": 0.01}
    load = nodes.load.copy()
    x = nodes.requests(SERVED)[:200]
    revenue, loads = 0.0, []
    print(f"{'telemetry only' if telemetry_only else 'policy + request sample'}")
    print("  time   qps    lambda recall  lambda rank  load recall  load rank")
    for k, t in enumerate(times):
        tel = mb.Telemetry(time=t - pd.Timedelta(minutes=1), qps=qps_now[max(k - 1, 0)],
                           load=dict(zip(clusters, load)), lam=lam, features=None if telemetry_only else x)
        d = bal.step(tel)
        lam = d.lam
        served = nodes.requests(SERVED)  # this minute's requests (a stand-in for all of them), served at the new lambda
        cost, rev = policy.respond(served, d.lam_vector)
        x = served[:200]  # the sample the scheduler reports with the next telemetry
        load, _ = nodes.serve(qps_now[k], cost)
        revenue += qps_now[k] * 60 * rev.mean()
        loads.append(nodes.load.copy())
        if t.minute == 0:
            print(f"  {t:%H:%M} {qps_now[k]:6.0f}   {lam['recall']:12.4g} {lam['rank']:12.4g} "
                  f"{nodes.load[0]:12.3f} {nodes.load[1]:10.3f}   {d.status} {d.reason[:90]}")
    loads = np.array(loads)
    # MaRCA's utilisation mu and over-utilisation nu per cluster, on the nodes' true load
    summary = {"revenue": revenue, "mu": (np.minimum(loads, 0.9).mean(axis=0) / 0.9).round(4).tolist(),
               "nu": (np.maximum(loads - 0.9, 0).mean(axis=0) / 0.9).round(4).tolist(),
               "max_load": loads.max(axis=0).round(3).tolist(), "decisions": dict(bal.counts_)}
    print(f"  revenue {revenue:.4g}, mu {summary['mu']}, nu {summary['nu']}, max load {summary['max_load']}, "
          f"decisions {summary['decisions']}")
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    args = p.parse_args(argv)
    full = run_day(args.hours, telemetry_only=False)
    agg = run_day(args.hours, telemetry_only=True)
    print(f"telemetry-only revenue / sampled: {100 * agg['revenue'] / full['revenue']:.2f}%")


if __name__ == "__main__":
    main()
