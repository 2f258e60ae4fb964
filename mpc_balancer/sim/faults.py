"""Fault matrix in the closed loop: each fault injected for a stretch of a day, against a no-fault run.

A fault is what a flaky serving fleet does to the Balancer (:data:`FAULTS`): reports that stop
(dropout), repeat (stale), carry a wrong time (jumps forward or back), carry garbage (NaN,
negative or absurd values), a stuck or zeroed load sensor, nodes that do not apply the new
lambda, a solver that fails or times out, and a process killed and restarted from its last
checkpoint every hour. :class:`Injector` applies one to :meth:`Simulator.run` through three hooks
(the report the Balancer receives, the lambda the nodes apply, the Balancer itself);
:func:`run_fault_matrix` runs every fault for every controller on the same day of traffic and the
same request samples as the no-fault run and measures, per fault:

* crashes (an exception out of ``Balancer.step``: must be 0) and the ticks decided by the fallback
  PID or held;
* the largest lambda step (ratio between consecutive applied lambdas, worst cluster) from the
  fault's start to the end of the recovery window, beside the no-fault run's;
* nu (worst cluster) and revenue during the fault and over the two hours starting 30 minutes after
  it ends, beside the no-fault run's over the same ticks;
* recovered: over those two hours, revenue within 1% of the no-fault run's and nu within 0.01
  (1% of C_m) of it. For the hourly restart the whole day is compared.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import pandas as pd

from ..balancer import Balancer
from ..controllers import make_controller
from ..controllers.base import Controller, Plan
from ..telemetry import Telemetry

FAULTS = ("dropout", "stale", "time_forward", "time_backward", "garbage", "stuck_load", "zero_load",
          "lambda_not_applied", "solver_fails", "solver_timeout", "restart_hourly")
STRETCH_MIN = 10  # minutes a fault lasts (lambda_not_applied: 5 ticks; restart_hourly: the whole day)
RECOVERY_DELAY_MIN, RECOVERY_SPAN_MIN = 30, 120


class Faulty(Controller):
    """A controller whose ``make_step`` fails (raises) or overruns the Balancer's time budget while
    ``mode`` is set; otherwise the wrapped controller, unchanged."""

    def __init__(self, inner: Controller, overrun_s: float):
        self.inner, self.overrun_s, self.mode = inner, overrun_s, None
        self.name, self.needs_forecast, self.needs_policy = inner.name, inner.needs_forecast, inner.needs_policy
        self.clairvoyant, self.horizon, self.reads_response = inner.clairvoyant, inner.horizon, inner.reads_response

    def setup(self, context):
        self.inner.setup(context)
        self.ctx_ = context
        return self

    def make_step(self, obs, forecast=None, response=None) -> Plan:
        if self.mode == "fail":
            raise RuntimeError("injected solver failure")
        plan = self.inner.make_step(obs, forecast=forecast, response=response)
        if self.mode == "timeout":
            time.sleep(self.overrun_s)
        return plan

    def notify_applied(self, lam):
        self.inner.notify_applied(lam)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, d):
        self.inner.load_state_dict(d)

    def foresee(self, clairvoyance):
        self.inner.foresee(clairvoyance)


class Injector:
    """One fault over ticks ``[start, stop)`` of a run (see the module doc for each fault)."""

    def __init__(self, fault: str, start: int, stop: int, make_balancer, context, period_s: float):
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {fault!r}")
        self.fault, self.start, self.stop = fault, start, stop
        self.make_balancer, self.context, self.period = make_balancer, context, pd.Timedelta(seconds=period_s)
        self.frozen: Telemetry | None = None
        self.restarts, self.restore_s = 0, []

    def active(self, k: int) -> bool:
        return self.start <= k < self.stop

    def telemetry(self, k: int, tel: Telemetry) -> Telemetry | None:
        f = self.fault
        if f == "stale" and k == self.start - 1:
            self.frozen = tel
        if not self.active(k):
            return tel
        if f == "dropout":
            return None
        if f == "stale":
            return self.frozen
        if f == "time_forward":
            return dataclasses.replace(tel, time=tel.time + pd.Timedelta(hours=2))
        if f == "time_backward":
            return dataclasses.replace(tel, time=tel.time - pd.Timedelta(hours=2))
        if f == "garbage":
            load, j = np.array(tel.load, dtype=float), (k - self.start) % 5
            if j == 0:
                load[0] = np.nan
            elif j == 1:
                load[1] = -0.5
            elif j == 2:
                load[2] = 1e300
            qps = {3: 1e12, 4: float("nan")}.get(j, tel.qps)
            return dataclasses.replace(tel, load=load, qps=qps)
        if f == "stuck_load":
            if self.frozen is None:
                self.frozen = tel
            return dataclasses.replace(tel, load=np.array(self.frozen.load, dtype=float))
        if f == "zero_load":
            load = np.array(tel.load, dtype=float)
            load[0] = 0.0
            return dataclasses.replace(tel, load=load)
        return tel

    def applied(self, k: int, decided: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """The lambda the nodes apply: the previous one while they ignore updates."""
        return previous if self.fault == "lambda_not_applied" and self.active(k) else decided

    def restart(self, k: int, balancer: Balancer) -> Balancer:
        c = balancer.controller
        if isinstance(c, Faulty):
            c.mode = ({"solver_fails": "fail", "solver_timeout": "timeout"}.get(self.fault) if self.active(k) else None)
        if self.fault != "restart_hourly" or k == 0 or k % int(pd.Timedelta(hours=1) / self.period):
            return balancer
        state = json.loads(json.dumps(balancer.state_dict()))  # what survives the process
        fresh = self.make_balancer().setup(self.context)
        t0 = time.perf_counter()
        fresh.load_state_dict(state)
        self.restore_s.append(time.perf_counter() - t0)
        self.restarts += 1
        return fresh


def _window_metrics(log: pd.DataFrame, clusters, target, sl: slice) -> dict:
    part = log.iloc[sl]
    nus = [float(np.mean(np.maximum(part[f"true_load_{c}"].to_numpy() - target[g], 0)) / target[g]) for g, c in enumerate(clusters)]
    return {"revenue": float(part["revenue"].sum()), "nu": max(nus)}


def _lambda_step(log: pd.DataFrame, clusters, sl: slice) -> float:
    lam = np.column_stack([log[f"lambda_{c}"].to_numpy()[sl] for c in clusters])
    return float(np.exp(np.max(np.abs(np.diff(np.log(lam), axis=0))))) if len(lam) > 1 else 1.0


def run_fault_matrix(controllers, trace: str = "nasa", days: float = 1.0, seed: int = 0, n_requests: int = 1000,
                     faults=FAULTS, fault_start: float = 0.4, policy: str = "pretrained", progress=None) -> dict:
    """Every fault for every controller over the last ``days`` of ``trace`` (see the module doc);
    each fault starts ``fault_start`` of the way into the window. Returns a JSON-able dict."""
    from ..forecast import TickForecaster
    from ..traces import load_trace
    from ..traffic import Traffic
    from .experiment import make_policy
    from .simulator import Simulator

    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}; available: {', '.join(FAULTS)}")
    for name in controllers:
        make_controller(name)  # fail fast on a bad name
    # the fault (from fault_start of the way in, STRETCH_MIN long) and the 'after' window that says whether the
    # controller recovered (RECOVERY_DELAY_MIN later, RECOVERY_SPAN_MIN long) must fit in the run: a shorter run
    # reports "nu after" as NaN and every fault as not recovered
    need_min = (STRETCH_MIN + RECOVERY_DELAY_MIN + RECOVERY_SPAN_MIN) / (1.0 - fault_start)
    if days * 1440.0 < need_min:
        raise ValueError(f"--days {days:g} is {days * 1440:.0f} minutes; the fault matrix needs at least "
                         f"{math.ceil(need_min)} minutes (--days {math.ceil(need_min / 1.44) / 1000:.3f}): the fault starts "
                         f"{fault_start:g} of the way in, lasts {STRETCH_MIN} min and recovery is judged over "
                         f"{RECOVERY_SPAN_MIN} min starting {RECOVERY_DELAY_MIN} min after it")
    traffic = Traffic(load_trace(trace), period_s=60)
    sim = Simulator(traffic, n_requests=n_requests, seed=seed, days=days)
    pol = make_policy(policy, sim.cascade)
    T = len(sim.times)
    start = int(fault_start * T)
    out = {"trace": trace, "days": days, "seed": seed, "window": [str(sim.times[0]), str(sim.times[-1])],
           "fault_start": str(sim.times[start]), "stretch_min": STRETCH_MIN, "controllers": {}}
    for name in controllers:
        def make_balancer(name=name):
            c = Faulty(make_controller(name), overrun_s=0.0)
            b = Balancer(c, forecaster=TickForecaster() if c.needs_forecast else None, response_requests=sim.response_requests)
            c.overrun_s = b.time_budget_s * 1.2
            return b

        ctx = sim.context(pol)
        base = sim.run(make_balancer(), pol)
        rows = {"none": _summary(base, base, sim, slice(start, start + STRETCH_MIN), None, 0)}
        logs = out.setdefault("_logs", {})
        logs[(name, "none")] = base.log
        for fault in faults:
            if progress:
                progress(f"{name}: {fault}")
            stop = start + (5 if fault == "lambda_not_applied" else STRETCH_MIN)
            if fault == "restart_hourly":
                stop = T
            inj = Injector(fault, start if fault != "restart_hourly" else 0, stop, make_balancer, ctx, sim.traffic.period_s)
            crashes, res, error = 0, None, ""
            try:
                res = sim.run(make_balancer(), pol, faults=inj)
            except Exception as e:  # noqa: BLE001 -- a crash is what this matrix counts
                crashes, error = 1, f"{type(e).__name__}: {e}"
            if res is None:
                rows[fault] = {"crashes": crashes, "error": error}
                continue
            logs[(name, fault)] = res.log
            during = slice(inj.start, inj.stop)
            rows[fault] = _summary(res, base, sim, during, inj, crashes)
            if fault == "restart_hourly":
                rows[fault]["restore_ms_median"] = 1e3 * float(np.median(inj.restore_s))
                rows[fault]["restore_ms_max"] = 1e3 * float(np.max(inj.restore_s))
                rows[fault]["restarts"] = inj.restarts
        out["controllers"][name] = rows
    return out


def _summary(res, base, sim, during: slice, inj, crashes: int) -> dict:
    clusters, target, T = sim.cascade.clusters, res.target, len(sim.times)
    whole = inj is not None and inj.fault == "restart_hourly"
    after = slice(0, T) if whole else slice(min(during.stop + RECOVERY_DELAY_MIN, T),
                                            min(during.stop + RECOVERY_DELAY_MIN + RECOVERY_SPAN_MIN, T))
    acted = res.log["acted"].to_numpy()
    d, db = _window_metrics(res.log, clusters, target, during), _window_metrics(base.log, clusters, target, during)
    a, ab = _window_metrics(res.log, clusters, target, after), _window_metrics(base.log, clusters, target, after)
    rev_gap = a["revenue"] / ab["revenue"] - 1 if ab["revenue"] else 0.0
    return {"crashes": crashes, "fallback_ticks": int(np.sum(acted == "pid (fallback)")),
            "hold_ticks": int(np.sum(acted == "hold")), "no_report_ticks": int(np.sum(acted == "no report")),
            "max_lambda_step": _lambda_step(res.log, clusters, slice(during.start, after.stop)),
            "max_lambda_step_no_fault": _lambda_step(base.log, clusters, slice(during.start, after.stop)),
            "during": {"nu": d["nu"], "nu_no_fault": db["nu"], "revenue": d["revenue"], "revenue_no_fault": db["revenue"]},
            "after": {"nu": a["nu"], "nu_no_fault": ab["nu"], "revenue": a["revenue"], "revenue_no_fault": ab["revenue"],
                      "revenue_gap_pct": 100 * rev_gap},
            "recovered": bool(abs(rev_gap) <= 0.01 and abs(a["nu"] - ab["nu"]) <= 0.01),
            "decisions": res.extra.get("decisions", {})}


def format_fault_matrix(result: dict) -> str:
    lines = [f"fault matrix: {result['trace']}, {result['window'][0]} .. {result['window'][1]}, faults from "
             f"{result['fault_start']} for {result['stretch_min']} min; 'after' = {RECOVERY_SPAN_MIN} min starting "
             f"{RECOVERY_DELAY_MIN} min after the fault",
             f"{'controller':<10}{'fault':<20}{'crash':>6}{'fb':>5}{'hold':>6}{'max dlam (no fault)':>20}{'nu during (no fault)':>22}"
             f"{'nu after (no fault)':>21}{'rev after %':>12}{'recovered':>10}"]
    for name, rows in result["controllers"].items():
        for fault, r in rows.items():
            if "during" not in r:
                lines.append(f"{name:<10}{fault:<20}{r['crashes']:>6}  {r.get('error', '')}")
                continue
            lines.append(f"{name:<10}{fault:<20}{r['crashes']:>6}{r['fallback_ticks']:>5}{r['hold_ticks']:>6}"
                         f"{r['max_lambda_step']:>12.2f} ({r['max_lambda_step_no_fault']:.2f}){r['during']['nu']:>12.4f} "
                         f"({r['during']['nu_no_fault']:.4f})"
                         f"{r['after']['nu']:>11.4f} ({r['after']['nu_no_fault']:.4f}){r['after']['revenue_gap_pct']:>+12.2f}"
                         f"{'yes' if r['recovered'] else 'NO':>10}")
    return "\n".join(lines)
