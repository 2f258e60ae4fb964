"""Prometheus metrics of one service (its own registry, so several apps can live in one process)."""
from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]

STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServiceMetrics:
    """The service's gauges, counters and step-time histogram. ``telemetry_age`` and
    ``checkpoint_age`` are computed at scrape time from the wall-clock times the service records."""

    def __init__(self, clusters: tuple):
        r = self.registry = CollectorRegistry()
        self.lam = Gauge("mpc_balancer_lambda", "lambda in force per cluster (the published decision)", ["cluster"], registry=r)
        self.decisions = Counter("mpc_balancer_decisions", "published decisions by status", ["status"], registry=r)
        self.fallbacks = Counter("mpc_balancer_fallbacks", "ticks the controller did not decide (PID fallback or hold)",
                                 ["kind"], registry=r)
        self.step_seconds = Histogram("mpc_balancer_step_seconds", "Balancer.step wall time per tick",
                                      buckets=STEP_BUCKETS, registry=r)
        self.reports = Counter("mpc_balancer_reports", "node telemetry reports by outcome", ["outcome"], registry=r)
        self.nodes = Gauge("mpc_balancer_nodes_reporting", "nodes aggregated into the last stepped tick", registry=r)
        self.peak_load = Gauge("mpc_balancer_planned_peak_load", "largest planned load over the horizon per cluster",
                               ["cluster"], registry=r)
        self.ready = Gauge("mpc_balancer_ready", "1 once the state is restored and the forecaster fitted", registry=r)
        self.override = Gauge("mpc_balancer_override_active", "1 while an operator override is in force", registry=r)
        self.last_telemetry = self.last_checkpoint = None  # wall-clock seconds
        Gauge("mpc_balancer_telemetry_age_seconds", "seconds since the last accepted telemetry (NaN before any)",
              registry=r).set_function(lambda: self._age(self.last_telemetry))
        Gauge("mpc_balancer_checkpoint_age_seconds", "seconds since the last checkpoint (NaN before any)",
              registry=r).set_function(lambda: self._age(self.last_checkpoint))
        for c in clusters:  # every labelled series exists from the start
            self.lam.labels(c)
            self.peak_load.labels(c)

    @staticmethod
    def _age(t):
        return float("nan") if t is None else time.time() - t

    def on_decision(self, body: dict, count: bool = True) -> None:
        """Record a decision's lambdas (and count it by status unless ``count`` is false)."""
        for c, v in body["lam"].items():
            self.lam.labels(c).set(v)
        if count:
            self.decisions.labels(body["status"]).inc()
        plan = body.get("plan")
        if plan and plan.get("load"):
            for g, c in enumerate(body["lam"]):
                self.peak_load.labels(c).set(max(row[g] for row in plan["load"]))

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
