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
from functools import partial

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

    Per cluster ``g`` it finds the smallest ``lambda_g`` whose estimated cost per request on the
    coming tick's requests meets ``budget_g`` given the other clusters' lambdas: the joint root of
    ``log cost_g(lambda) = log budget_g`` in log-lambda, all clusters at once. Each iteration
    evaluates the policy once at the current lambda vector and moves every unsettled cluster by a
    secant step on its own coordinate (the slope ``d log cost_g / d log lambda_g`` measured between
    its last two points), kept inside the cluster's bracket (the largest log-lambda seen over budget
    and the smallest seen within it) and replaced by the bracket's midpoint where it would leave
    it; towards an open end it goes at most ``reach`` (1, doubled each time it goes there, so a
    plateau of the step-shaped cost is crossed in a few steps). A cluster's cost depends on the
    others' lambdas, so a bracket end is dropped when a new point contradicts it or when the
    bracket is narrow around a point more than 5% off the budget. The search starts from the
    previous tick's answer (traffic moves little in one tick): a tick takes about eight evaluations
    where the bisection from the whole lambda range takes ~84.

    A cluster is settled when its bracket is narrower than ``tolerance`` (in log-lambda), when it
    meets its budget at ``lambda_min`` or misses it at ``lambda_max``, or when its cost is within
    ``cost_tolerance`` (relative) under the budget. The answer is the last point, where a cluster
    over budget there takes its bracket's feasible end; a last check raises any cluster still over
    budget in steps from ``tolerance`` doubling up to 5%. A search that has not settled after
    ``max_evaluations`` (a cold start far from the answer) hands the tick to :meth:`bisect`.

    Parameters
    ----------
    max_evaluations : int
        Policy evaluations of the root search before it falls back to :meth:`bisect`.
    tolerance : float
        Bracket width in log-lambda at which a cluster is settled (0.006: a bisection's 10 steps
        over +-3, the resolution of the search this one replaced).
    cost_tolerance : float
        Relative distance under the budget at which a cluster is settled.
    iterations : int
        The fallback's joint bisection steps on log-lambda, all clusters at once.
    sweeps : int
        The fallback's Gauss-Seidel passes over the clusters after it.
    refine_iterations : int
        Bisection steps of each cluster's search within a sweep (log-lambda within +-3).
    """

    name = "hindsight"
    STALE = 0.05  # |log cost / budget| beyond which a narrow bracket is stale (one request moves the mean ~0.1%)
    clairvoyant = True
    needs_policy = True
    reads_response = False  # its own response, on the coming tick's sample (foresee)

    def __init__(self, max_evaluations: int = 20, tolerance: float = 0.006, cost_tolerance: float = 2e-3,
                 iterations: int = 16, sweeps: int = 2, refine_iterations: int = 10):
        for k, v in {"max_evaluations": max_evaluations, "iterations": iterations, "sweeps": sweeps,
                     "refine_iterations": refine_iterations}.items():
            if not (isinstance(v, int) and v >= (1 if k == "max_evaluations" else 0)):
                raise ValueError(f"{k} must be an integer >= {1 if k == 'max_evaluations' else 0}, got {v!r}")
        for k, v in {"tolerance": tolerance, "cost_tolerance": cost_tolerance}.items():
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"{k} must be a number > 0, got {v!r}")
        self.max_evaluations, self.tolerance, self.cost_tolerance = max_evaluations, float(tolerance), float(cost_tolerance)
        self.iterations, self.sweeps, self.refine_iterations = iterations, sweeps, refine_iterations

    def setup(self, context) -> HindsightController:
        super().setup(context)
        self.future_: Clairvoyance | None = None
        self.last_: np.ndarray | None = None  # the previous tick's answer: the next search starts there
        self.evaluations_ = 0  # policy evaluations so far (all ticks)
        self.fallbacks_ = 0  # ticks the root search did not settle and the bisection decided
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
        lam = self.solve(cost, budget, self.clip(obs.lam if self.last_ is None else self.last_))
        self.last_ = lam.copy()
        return Plan(lam=lam, controller=self.name)

    def solve(self, cost, budget: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Per cluster the smallest lambda (within ``tolerance``) whose ``cost(lambda)`` meets
        ``budget`` given the others, searched from ``start`` (see the class notes)."""
        ctx = self.ctx_
        lmin, lmax = float(np.log(ctx.lam_min)), float(np.log(ctx.lam_max))
        G = len(budget)
        log_b = np.log(np.maximum(budget, 1e-300))
        x = np.clip(np.log(start), lmin, lmax)
        lo = np.full(G, -np.inf)  # the largest log-lambda seen over budget
        hi = np.full(G, np.inf)  # the smallest seen within it
        prev_x = prev_f = None
        reach = np.ones(G)
        done = np.zeros(G, dtype=bool)
        for _ in range(self.max_evaluations):
            c = self._evaluate(cost, np.exp(x))
            over = c > budget
            f = np.log(np.maximum(c, 1e-300)) - log_b  # > 0: over budget
            # a point that contradicts the bracket (over budget at or above its feasible end, within
            # it at or below its over end), or a narrow bracket around a point far from the budget,
            # shows the bracket stale: the other clusters' lambdas moved since (a cluster's cost
            # depends on them); it starts again from this point
            hi = np.where(over & (x >= hi), np.inf, hi)
            lo = np.where(~over & (x <= lo), -np.inf, lo)
            lo = np.where(over, np.maximum(lo, x), lo)
            hi = np.where(~over, np.minimum(hi, x), hi)
            stale = (hi - lo <= self.tolerance) & (np.abs(f) > self.STALE)
            hi = np.where(stale & over, np.inf, hi)
            lo = np.where(stale & ~over, -np.inf, lo)
            done = ((hi - lo <= self.tolerance) | (~over & (x <= lmin)) | (over & (x >= lmax))
                    | (~over & (f >= np.log1p(-self.cost_tolerance))))
            if done.all():
                break
            slope = np.full(G, -1.0)  # d log cost_g / d log lambda_g; a guess until two points are known
            if prev_x is not None:
                dx = x - prev_x
                moved = np.abs(dx) > 1e-9
                est = np.divide(f - prev_f, dx, out=np.zeros(G), where=moved)
                # a flat cost (a plateau of the step function): no step to take from the slope
                slope = np.where(moved, np.where(est < -1e-3, est, np.nan), slope)
            step = x - f / slope
            # inside the bracket, else its midpoint; an open end reaches ``reach`` beyond the last
            # point, doubled every time the search goes there (a plateau is crossed in a few steps)
            closed = np.isfinite(lo) & np.isfinite(hi)
            a, b = np.maximum(lo, np.maximum(x - reach, lmin)), np.minimum(hi, np.minimum(x + reach, lmax))
            inside = np.isfinite(step) & (step > a) & (step < b)
            new = np.where(inside, step, np.where(closed, 0.5 * (lo + hi), np.where(over, b, a)))
            reach = np.where(inside | closed, reach, 2 * reach)
            prev_x, prev_f = x, f
            x = np.where(done, x, np.clip(new, lmin, lmax))
        if not done.all():  # not settled (a cold start far from the answer): the bisection
            self.fallbacks_ += 1
            return self.bisect(cost, budget)
        # the last point where it met the budget there, else the bracket's feasible end; then a last
        # check against the coupling
        lam = self.clip(np.exp(np.where(over & np.isfinite(hi), hi, x)))
        return self._raise_over(cost, budget, lam, self.tolerance)

    def bisect(self, cost, budget: np.ndarray) -> np.ndarray:
        """The search from the whole lambda range (the root search's fallback, and the search before
        issue 20): a joint bisection of log-lambda (``iterations`` steps), then ``sweeps``
        Gauss-Seidel passes over the clusters (each the smallest lambda_g meeting budget_g given the
        others, bisected within +-3 in ``refine_iterations`` steps), then the last check in 5% steps."""
        ctx = self.ctx_
        G = len(budget)
        lmin, lmax = np.log(ctx.lam_min), np.log(ctx.lam_max)
        counted = partial(self._evaluate, cost)
        lam = self.clip(np.exp(bisect_budget(counted, budget, np.full(G, lmin), np.full(G, lmax), self.iterations)))
        for _ in range(self.sweeps):
            for g in range(G):
                trial = lam.copy()
                a, b = max(np.log(lam[g]) - 3.0, lmin), min(np.log(lam[g]) + 3.0, lmax)
                trial[g] = np.exp(a)
                if counted(trial)[g] <= budget[g]:
                    lam[g] = np.exp(a) if a > lmin else ctx.lam_min
                    continue
                for _ in range(self.refine_iterations):
                    m = 0.5 * (a + b)
                    trial[g] = np.exp(m)
                    a, b = (m, b) if counted(trial)[g] > budget[g] else (a, m)
                lam[g] = np.exp(b)
        return self._raise_over(cost, budget, lam, 0.05)

    def _evaluate(self, cost, lam: np.ndarray) -> np.ndarray:
        """``cost(lam)``, counted in ``evaluations_``."""
        self.evaluations_ += 1
        return cost(lam)

    def _raise_over(self, cost, budget: np.ndarray, lam: np.ndarray, step: float) -> np.ndarray:
        """Raise every cluster still over budget (a cluster's cost also depends on the others'
        lambdas), in log-lambda steps from ``step`` doubling up to 0.05 (5%)."""
        for _ in range(60):
            over = self._evaluate(cost, lam) > budget * (1 + 1e-9)
            if not over.any() or np.all(lam[over] >= self.ctx_.lam_max):
                break
            lam = self.clip(np.where(over, lam * np.exp(step), lam))
            step = min(2 * step, 0.05)
        return lam

