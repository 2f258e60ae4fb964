"""The Balancer: one control tick, end to end, with validation, fallbacks and checkpoints.

``Balancer.step(observation) -> Decision``:

1. validate the observation (shapes are a caller bug and raise ``ValueError``; non-finite or
   negative telemetry is a fault of the plant's sensors: the tick holds the last good lambda and
   the Decision's ``reason`` names the field and the value -- the documented safe fallback);
2. feed the forecaster and ask it for the horizon (controllers that plan ahead);
3. run the controller; if it raises, returns a non-``ok`` status or non-finite lambdas, or runs
   past ``time_budget_s``, fall back to the PID (which runs in the shadow every tick and is kept
   aligned with the applied lambda, so the switch is bumpless), and if that fails too, to the last
   good lambda; the reason is recorded;
4. clamp lambda to ``[lam_min, lam_max]`` and rate-limit it to a factor ``max_ratio`` per tick;
5. return a :class:`Decision`.

``state_dict()`` / ``load_state_dict()`` are JSON. A checkpoint holds what happened since
``setup``: restore into a Balancer set up with the same context, and the next decision is the
same. The decision path imports numpy, scipy and osqp only.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np

from .controllers.base import ControlContext, Controller, Observation, Plan
from .controllers.pid import PidController
from .response import Response

N_FEATURES = 5


@dataclass
class Decision:
    lam: np.ndarray
    controller: str  # who acted: the controller's name, "pid (fallback)" or "hold"
    status: str
    reason: str = ""
    solve_time_s: float = 0.0
    fixed_action: int | None = None
    lam_plan: np.ndarray | None = None
    load_plan: np.ndarray | None = None
    info: dict = field(default_factory=dict)


class Balancer:
    def __init__(self, controller: Controller, forecaster=None, fallback: bool = True, max_ratio: float = 1000.0,
                 time_budget_s: float = 0.5, response_requests: int = 256, horizon: int | None = None):
        if not max_ratio > 1:
            raise ValueError(f"max_ratio must be > 1, got {max_ratio!r}")
        if not time_budget_s > 0:
            raise ValueError(f"time_budget_s must be > 0, got {time_budget_s!r}")
        self.controller, self.forecaster, self.fallback, self.max_ratio = controller, forecaster, fallback, max_ratio
        self.time_budget_s, self.response_requests, self.horizon = time_budget_s, response_requests, horizon

    def setup(self, context: ControlContext, initial_lam: float = 0.01) -> "Balancer":
        self.ctx_ = context
        self.controller.setup(context)
        self.pid_ = PidController().setup(context) if self.fallback else None
        if getattr(self.controller, "needs_forecast", False):
            if self.forecaster is None:
                from .forecast import TickForecaster

                self.forecaster = TickForecaster()
            self.forecaster.fit(context.history_qps, context.history_times, context.period_s)
            self.horizon = self.horizon or getattr(self.controller, "horizon", 30)
        self.last_good_ = np.full(context.n_clusters, float(initial_lam))
        self.observed_: list = []  # (time, qps) fed to the forecaster since setup, for checkpoints
        self.counts_ = {"ok": 0, "fallback": 0, "hold": 0}
        return self

    # --------------------------------------------------------------------------------------
    def _validate(self, obs: Observation) -> str:
        G = self.ctx_.n_clusters
        load, lam = np.asarray(obs.load, dtype=float), np.asarray(obs.lam, dtype=float)
        if load.shape != (G,):
            raise ValueError(f"observation load must have shape ({G},), got {load.shape}")
        if lam.shape != (G,):
            raise ValueError(f"observation lam must have shape ({G},), got {lam.shape}")
        x = np.asarray(obs.features)
        if x.ndim != 2 or x.shape[1] != N_FEATURES or len(x) == 0:
            raise ValueError(f"observation features must have shape (n >= 1, {N_FEATURES}), got {x.shape}")
        if not (np.isfinite(obs.qps) and obs.qps >= 0):
            return f"invalid observation: qps={obs.qps!r}"
        for name, v in (("load", load), ("lam", lam)):
            bad = ~np.isfinite(v) | (v < 0)
            if bad.any():
                g = int(np.flatnonzero(bad)[0])
                return f"invalid observation: {name}[{self.ctx_.cascade.clusters[g]}]={float(v[g])!r}"
        if not np.all(np.isfinite(x)):
            return f"invalid observation: features row {int(np.argwhere(~np.isfinite(x))[0, 0])} is not finite"
        return ""

    def step(self, obs: Observation, future=None) -> Decision:
        problem = self._validate(obs)
        if problem:
            self.counts_["hold"] += 1
            return Decision(lam=self.last_good_.copy(), controller="hold", status="hold", reason=problem)
        forecast = None
        if self.forecaster is not None:
            self.forecaster.observe(obs.time, obs.qps)
            self.observed_.append((str(obs.time), float(obs.qps)))
            forecast = self.forecaster.predict(self.horizon)
        if getattr(self.controller, "clairvoyant", False):
            forecast = future
        response = Response(self.ctx_.cascade, self.ctx_.policy, obs.features, max_requests=self.response_requests)
        shadow = self.pid_.make_step(obs) if self.pid_ is not None else None
        t0 = time.perf_counter()
        reason = ""
        try:
            plan: Plan | None = self.controller.make_step(obs, forecast=forecast, response=response)
        except Exception as e:  # noqa: BLE001 -- any controller failure falls back, with the reason recorded
            plan, reason = None, f"{self.controller.name} raised {type(e).__name__}: {e}"
        elapsed = time.perf_counter() - t0
        if plan is not None and not reason:
            if plan.status != "ok":
                reason = f"{self.controller.name}: {plan.status}"
            elif plan.fixed_action is None and not np.all(np.isfinite(plan.lam)):
                reason = f"{self.controller.name}: non-finite lambda {np.asarray(plan.lam).tolist()}"
            elif elapsed > self.time_budget_s:
                reason = f"{self.controller.name}: took {elapsed * 1e3:.1f} ms > budget {self.time_budget_s * 1e3:.0f} ms"
        if not reason:
            decision = Decision(lam=np.asarray(plan.lam, dtype=float), controller=plan.controller, status="ok",
                                solve_time_s=plan.solve_time_s or elapsed, fixed_action=plan.fixed_action,
                                lam_plan=plan.lam_plan, load_plan=plan.load_plan, info=plan.info)
            self.counts_["ok"] += 1
        elif shadow is not None and np.all(np.isfinite(shadow.lam)):
            decision = Decision(lam=shadow.lam, controller="pid (fallback)", status="fallback", reason=reason, solve_time_s=elapsed)
            self.counts_["fallback"] += 1
        else:
            decision = Decision(lam=self.last_good_.copy(), controller="hold", status="hold", reason=reason, solve_time_s=elapsed)
            self.counts_["hold"] += 1
        if decision.fixed_action is None:
            decision.lam = self._limit(decision.lam, np.asarray(obs.lam, dtype=float))
            self.last_good_ = decision.lam.copy()
            if hasattr(self.controller, "notify_applied"):
                self.controller.notify_applied(decision.lam)
            if self.pid_ is not None and decision.controller != "pid (fallback)":
                self.pid_.align(decision.lam, obs)
        return decision

    def _limit(self, lam: np.ndarray, prev: np.ndarray) -> np.ndarray:
        c = self.ctx_
        lam = np.clip(lam, c.lam_min, c.lam_max)
        prev = np.clip(prev, c.lam_min, c.lam_max)
        return np.clip(lam, prev / self.max_ratio, prev * self.max_ratio)

    # ------------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        d = {"version": 1, "controller": self.controller.name, "last_good": self.last_good_.tolist(),
             "counts": dict(self.counts_), "observed": list(self.observed_)}
        if hasattr(self.controller, "state_dict"):
            d["controller_state"] = self.controller.state_dict()
        if self.pid_ is not None:
            d["pid"] = self.pid_.state_dict()
        json.dumps(d)  # must be JSON
        return d

    def load_state_dict(self, d: dict) -> None:
        import pandas as pd

        if d.get("version") != 1:
            raise ValueError(f"checkpoint version must be 1, got {d.get('version')!r}")
        if d.get("controller") != self.controller.name:
            raise ValueError(f"checkpoint is for controller {d.get('controller')!r}, this Balancer runs {self.controller.name!r}")
        if self.observed_:
            raise ValueError("load_state_dict needs a freshly set-up Balancer (this one has already stepped)")
        if self.forecaster is not None:
            for t, q in d["observed"]:
                self.forecaster.observe(pd.Timestamp(t), q)
                self.forecaster.predict(self.horizon)  # keeps the online band calibration identical
            self.observed_ = [tuple(x) for x in d["observed"]]
        self.last_good_ = np.asarray(d["last_good"], dtype=float)
        self.counts_ = dict(d["counts"])
        if "controller_state" in d:
            self.controller.load_state_dict(d["controller_state"])
        if self.pid_ is not None and "pid" in d:
            self.pid_.load_state_dict(d["pid"])
