"""Hindsight: the physical limit. Knows the next tick's real traffic, its requests and the true plant.

Each tick it finds, per cluster, the lambda at which the *true* load of the coming tick lands on
``C_m`` exactly (accounting for the plant's lag), by bisection on the actual requests of that tick
with the true costs. Since revenue grows with compute, no causal controller can beat it at the
same ``C_m`` without exceeding the load budget; comparisons report ``return_vs_hindsight_pct``.
The simulator hands it the future through :meth:`HindsightController.foresee` (a
:class:`Clairvoyance`) before every step; it is the only controller allowed to see the truth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..response import Response
from .base import Controller, Observation, Plan
from .bisection import bisect_budget


@dataclass
class Clairvoyance:
    """What the simulator tells the hindsight controller about the coming tick: the ground truth
    no deployment has (its traffic, requests, true costs and the plant's load and lag).

    Attributes
    ----------
    qps : float
        The coming tick's real QPS.
    features : numpy.ndarray
        Its request sample.
    cost_factor : numpy.ndarray
        True cost over estimated cost, per cluster.
    load : numpy.ndarray
        The plant's true load now, before the tick.
    lag_alpha : float
        The plant's lag over one tick: ``load <- alpha * load + (1 - alpha) * demand``.
    subtick_qps : numpy.ndarray or None
        The coming tick's QPS in each sub-tick of the plant (None: one step per tick).
    subtick_alpha : float or None
        The lag's alpha over one sub-tick.
    """

    qps: float  # the coming tick's real QPS
    features: np.ndarray  # its request sample
    cost_factor: np.ndarray  # true cost / estimated cost per cluster
    load: np.ndarray  # the plant's true load now (before the tick)
    lag_alpha: float  # load <- alpha * load + (1 - alpha) * demand
    subtick_qps: np.ndarray | None = None  # the coming tick's QPS in each sub-tick of the plant
    subtick_alpha: float | None = None  # the lag's alpha over one sub-tick

    def budget_load(self, target: np.ndarray) -> np.ndarray:
        """The largest demand load per cluster, at the tick's mean QPS, that keeps the true load
        at or under ``target`` at the end of every sub-tick (with one sub-tick, of the tick).

        The load after sub-tick j is ``a^(j+1) L0 + c (1 - a) sum_i<=j a^(j-i) q_i`` for a cost
        ``c`` per request held over the tick: linear in ``c``, so the binding sub-tick gives it."""
        if self.subtick_qps is None or len(self.subtick_qps) <= 1:
            a = self.lag_alpha
            return np.maximum((target - a * self.load) / max(1 - a, 1e-9), 0.0)
        a, q = float(self.subtick_alpha), np.asarray(self.subtick_qps, dtype=float)
        n = len(q)
        s = np.zeros(n)  # sum_i<=j a^(j-i) (1 - a) q_i / qps: the demand load's weight after sub-tick j
        acc = 0.0
        for j in range(n):
            acc = a * acc + (1 - a) * q[j] / self.qps
            s[j] = acc
        keep = a ** np.arange(1, n + 1)
        room = target[None, :] - keep[:, None] * self.load[None, :]
        ok = s > 1e-12
        if not ok.any():
            return np.full(len(target), np.inf)
        return np.maximum((room[ok] / s[ok, None]).min(axis=0), 0.0)


class HindsightController(Controller):
    """The physical limit: lambda per cluster at which the coming tick's true load lands on ``C_m``.

    Parameters
    ----------
    iterations : int
        Steps of the first bisection on log-lambda, all clusters at once.
    sweeps : int
        Gauss-Seidel passes over the clusters after it (a cluster's lambda changes what the
        others' requests cost): each finds the smallest lambda_g meeting budget_g given the others.
    refine_iterations : int
        Bisection steps of each cluster's search within a sweep (log-lambda within +-3).
    """

    name = "hindsight"
    clairvoyant = True
    needs_policy = True

    def __init__(self, iterations: int = 16, sweeps: int = 2, refine_iterations: int = 10):
        for k, v in {"iterations": iterations, "sweeps": sweeps, "refine_iterations": refine_iterations}.items():
            if not (isinstance(v, int) and v >= 0):
                raise ValueError(f"{k} must be an integer >= 0, got {v!r}")
        self.iterations, self.sweeps, self.refine_iterations = iterations, sweeps, refine_iterations

    def setup(self, context) -> HindsightController:
        super().setup(context)
        self.future_: Clairvoyance | None = None
        return self

    def foresee(self, future: Clairvoyance) -> None:
        """Take the coming tick's ground truth (called by the simulator before every step)."""
        self.future_ = future

    def make_step(self, obs: Observation, forecast=None, response=None) -> Plan:
        ctx = self.ctx_
        fut, self.future_ = self.future_, None
        if not isinstance(fut, Clairvoyance):
            return Plan(lam=self.clip(obs.lam), controller=self.name, status="error: hindsight needs the simulator's clairvoyance")
        if fut.qps <= 0:
            return Plan(lam=self.clip(obs.lam), controller=self.name)
        budget = fut.budget_load(ctx.target) * ctx.capacity / (fut.qps * fut.cost_factor)  # estimated CPU-ms per request
        cost = Response(ctx.policy, fut.features, max_requests=None).cost
        lo = np.full(ctx.n_clusters, np.log(ctx.lam_min))
        hi = np.full(ctx.n_clusters, np.log(ctx.lam_max))
        lam = self.clip(np.exp(bisect_budget(cost, budget, lo, hi, self.iterations)))
        # each cluster's cost also depends on the others' lambdas: refine cluster by cluster
        # (Gauss-Seidel sweeps, each the smallest lambda_g that meets budget_g given the others)
        lmin, lmax = np.log(ctx.lam_min), np.log(ctx.lam_max)
        for _ in range(self.sweeps):
            for g in range(ctx.n_clusters):
                trial = lam.copy()
                a, b = max(np.log(lam[g]) - 3.0, lmin), min(np.log(lam[g]) + 3.0, lmax)
                trial[g] = np.exp(a)
                if cost(trial)[g] <= budget[g]:
                    lam[g] = np.exp(a) if a > lmin else ctx.lam_min
                    continue
                for _ in range(self.refine_iterations):
                    m = 0.5 * (a + b)
                    trial[g] = np.exp(m)
                    a, b = (m, b) if cost(trial)[g] > budget[g] else (a, m)
                lam[g] = np.exp(b)
        # a last guard: raise any cluster still over budget in small steps
        for _ in range(60):
            over = cost(lam) > budget * (1 + 1e-9)
            if not over.any() or np.all(lam[over] >= ctx.lam_max):
                break
            lam = self.clip(np.where(over, lam * 1.05, lam))
        return Plan(lam=lam, controller=self.name)
