"""Fleet replay: the simulator's plant played as N serving nodes against a running service.

:func:`run_fleet` builds the same simulator as ``mpc-balancer simulate`` (trace, window, seed,
request samples, plant) and closes the loop through HTTP instead of an in-process Balancer: each
tick, every node posts its share of the telemetry (``qps / N``, the cluster loads and lambda it
measured, its slice of the request sample) to ``POST /v1/telemetry``, the service aggregates the
N reports and steps once, and the nodes apply the decision they read from ``GET /v1/decision``.
Configured like the simulation (same clusters, history up to the window's start, controller),
the service takes the same decisions as the in-process run, so the figures are the same.
"""
from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd

from ..balancer import Decision
from ..client import BalancerClient


class RemoteBalancer:
    """What :meth:`Simulator.run` asks of a Balancer, answered by a running service over HTTP."""

    def __init__(self, url: str, token: str, nodes: int, timeout_s: float = 60.0, wait_s: float = 120.0):
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes!r}")
        self.clients = [BalancerClient(url, token, node=f"node-{i:03d}", timeout_s=timeout_s) for i in range(nodes)]
        self.timeout_s = timeout_s
        self.clients[0].wait_ready(wait_s)  # a service still starting (or restoring its state) is waited for
        self.info_ = self.clients[0].info()
        self.controller = SimpleNamespace(name=self.info_["controller"], clairvoyant=False)
        self.counts_ = {}

    def setup(self, context, initial_lam: float = 0.01) -> RemoteBalancer:
        """Check that the service is configured for this simulation (clusters, capacity, period)."""
        info, names = self.info_, tuple(context.clusters)
        if tuple(info["clusters"]) != names:
            raise ValueError(f"the service's clusters {list(info['clusters'])} are not the simulation's {list(names)}")
        cap = np.array([info["clusters"][c]["capacity"] for c in names])
        if not np.allclose(cap, context.capacity, rtol=1e-9):
            raise ValueError(f"the service's capacities {cap.tolist()} are not the simulated plant's {context.capacity.tolist()}")
        if info["period_s"] != context.period_s:
            raise ValueError(f"the service's period_s {info['period_s']} is not the simulation's {context.period_s}")
        lam_max = info["balancer"].get("lam_max", context.lam_max)
        if lam_max != context.lam_max:
            raise ValueError(f"the service's lam_max {lam_max} is not the simulation's {context.lam_max}")
        self.ctx_, self.clusters_ = context, names  # the nodes' guard reads ctx_.lam_max
        return self

    def step(self, tel) -> Decision:
        n = len(self.clients)
        parts = [None] * n if tel.features is None else np.array_split(np.asarray(tel.features), n)
        load, lam = dict(zip(self.clusters_, map(float, tel.load))), dict(zip(self.clusters_, map(float, tel.lam)))
        t = pd.Timestamp(tel.time)
        for client, x in zip(self.clients, parts):
            client.report(t, float(tel.qps) / n, load, lam, None if x is None or len(x) == 0 else x)
        deadline = time.monotonic() + self.timeout_s
        while True:  # the last report closes the tick when the service expects n nodes; else its timeout does
            body = self.clients[0].fetch()
            if body["time"] is not None and pd.Timestamp(body["time"]) >= t:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no decision for tick {t} within {self.timeout_s:g} s")
            time.sleep(0.01)
        self.counts_[body["status"]] = self.counts_.get(body["status"], 0) + 1
        vec = np.array([body["lam"][c] for c in self.clusters_])
        return Decision(lam=dict(body["lam"]), lam_vector=vec, controller=body["controller"], status=body["status"],
                        reason=body["reason"])


def run_fleet(url: str, token: str, cfg, nodes: int = 8, wait_s: float = 120.0) -> dict:
    """Simulate ``cfg`` (an :class:`~mpc_balancer.sim.experiment.ExperimentConfig`) with the decisions
    of the service at ``url``; the summary has the shape of ``simulate --json``. ``wait_s``: how long
    to wait for the service to be ready (:class:`~mpc_balancer.client.NotReady` after it)."""
    from .experiment import build_simulator, make_policy, summarize

    sim = build_simulator(cfg)
    remote = RemoteBalancer(url, token, nodes, wait_s=wait_s)
    expected = remote.info_["expected_nodes"]
    if expected != nodes:
        print(f"note: the service expects {expected} nodes per tick, this fleet has {nodes}: ticks close on the "
              f"service's tick_timeout_s ({remote.info_['tick_timeout_s']:g} s)", file=sys.stderr)
    window_start = str(sim.times[0])
    end = remote.info_["history"]["end"]
    if end is None or pd.Timestamp(end) != sim.times[0]:
        print(f"note: the simulated window starts at {window_start}; the service's history ends at {end}: "
              "decisions match `simulate` only when the service's [history] end is the window's start", file=sys.stderr)
    result = sim.run(remote, make_policy(cfg.policy, sim.cascade))
    summary = summarize(cfg, sim, [result])
    summary["fleet"] = {"url": url, "nodes": nodes, "service": remote.info_}
    return summary
