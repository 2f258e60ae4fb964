"""MaRCA's own balancer: learned load dynamics plus a tracking objective, two solvers.

Both controllers plan ``z_k = log lambda_k`` (per cluster, ``k = 0..N-1``) to minimise::

    J = sum_{k=1..N} alpha^k sum_g ((L_k,g - C_m,g) / C_m,g)^2  +  beta sum_{k=0..N-1} sum_g (z_k,g - z_{k-1},g)^2

subject to ``L_{k+1} = g(L_k, s, lambda_k)`` (the learned model of :mod:`mpc_balancer.dynamics`),
``L_0`` the measured load, ``z_{-1}`` the lambda applied in the last tick, and
``lambda_min <= lambda_k <= lambda_max``. Two deliberate choices, documented here:

* the load error is relative to ``C_m`` and the rate penalty acts on ``log lambda`` (the load
  responds to lambda multiplicatively; a step from 0.01 to 0.02 is as large as from 1 to 2);
* the traffic state ``s`` (QPS, hour of day) is held at its current value over the horizon: MaRCA's
  balancer does not forecast, which is exactly what this arm is compared on;
* with ``trust_region=True`` (default) each cluster's lambda is further bounded to the range of
  lambdas seen in the training logs: outside it the MLP extrapolates arbitrarily, and both solvers
  would otherwise exploit that (e.g. plan the lowest lambda because the model, never having seen
  it, predicts a low load there).

``nmpc``: the NLP (multiple shooting, loads as variables with equality constraints) is built once
with CasADi, parameterised by ``(L_0, s, z_{-1})``, and solved every tick by IPOPT (exact Hessian,
``print_level 0``, a ``max_cpu_time``), warm-started from the previous plan shifted by one tick.
``shooting``: MaRCA's released solver: sample ``n_samples`` lambda sequences around the shifted
previous plan, roll the learned model forward for all of them at once (numpy), keep the best.

IPOPT is a local solver and the learned model is not convex: ``nmpc`` solves from the warm start
and from the centre of the trust region (``multistart=True``) and keeps the better plan; from the
warm start alone it was seen to stall at a trust-region bound where the model's slope in lambda
has the wrong sign, while the load ran away.

Model monitor. A model that fits its held-out transitions can still steer the plant far off
target (its errors in closed loop are not those of the training logs). Every tick both controllers
score the model on the transition just observed (last load, this tick's traffic, the lambda in
force -> the load measured now), relative to ``C_m``, and keep an exponentially weighted mean of
that error per cluster (half-life ``monitor_halflife`` ticks). When its magnitude exceeds
``model_tol`` on any cluster the model is declared invalid: ``make_step`` returns a non-``ok``
status naming the cluster and the error, and the Balancer's PID fallback steers. The model is
trusted again after at least ``monitor_halflife`` ticks in that state once every error is below
``model_tol / 2``. ``monitor_`` counts the ticks and episodes for the run report.

Set-up collects training logs by running a PID whose lambda is multiplied by a random
piecewise-constant dither (so the logs excite the dynamics well beyond the PID's own operating
line) in closed loop over the last ``train_days`` of the history, then fits the MLPs with torch.
``weights=PATH`` loads a pre-exported model instead (no simulation, no torch). Each controller's
:meth:`solve` solves one tick standalone (used by the benchmarks); failures come back as a status,
never as an exception.
"""
from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..config import is_number
from ..dynamics import MlpDynamics, fit_dynamics, hour_of_day, traffic_state, transitions_from_log
from .base import ControlContext, Controller, Observation, Plan
from .pid import PidController


class DitheredPid(PidController):
    """PID whose output is multiplied by ``exp(d)``, ``d ~ N(0, sigma^2)`` per cluster, redrawn every
    ``hold`` ticks: the exciting controller that produces training logs for the learned dynamics."""

    name = "pid-dither"

    def __init__(self, sigma: float = 1.0, hold: int = 5, seed: int = 0, **pid_kwargs):
        super().__init__(**pid_kwargs)
        if not (is_number(sigma) and np.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}")
        if not (isinstance(hold, (int, np.integer)) and hold >= 1):
            raise ValueError(f"hold must be an integer >= 1, got {hold!r}")
        self.sigma, self.hold, self.seed = float(sigma), int(hold), int(seed)

    def setup(self, context: ControlContext) -> DitheredPid:
        """Bind the context and seed the dither; returns ``self``."""
        super().setup(context)
        self.rng_ = np.random.default_rng(self.seed)
        self.dither_, self.ticks_ = np.zeros(context.n_clusters), 0
        return self

    def make_step(self, obs: Observation, forecast=None, response=None) -> Plan:
        """The PID's lambda times ``exp(dither)``; a new dither every ``hold`` ticks."""
        plan = super().make_step(obs)
        if self.ticks_ % self.hold == 0:
            self.dither_ = self.rng_.normal(0.0, self.sigma, self.ctx_.n_clusters)
        self.ticks_ += 1
        plan.lam = self.clip(plan.lam * np.exp(self.dither_))
        plan.controller = self.name
        return plan


@dataclass
class TickSolution:
    """One tick's plan: ``lam`` and ``load`` are ``(N, G)``; ``ok`` iff ``status == "ok"``."""

    lam: np.ndarray
    load: np.ndarray
    status: str
    solve_time_s: float
    objective: float = float("nan")
    info: dict | None = None

    @property
    def ok(self) -> bool:
        """Whether the solver returned a usable plan."""
        return self.status == "ok"


class _LearnedDynamicsController(Controller):
    """Shared configuration, training and bookkeeping of the ``nmpc`` and ``shooting`` arms."""

    reads_response = False  # a learned load model: telemetry only

    def __init__(self, horizon: int = 30, alpha: float = 0.97, beta: float = 0.01, weights: str | None = None,
                 train_days: float = 2.0, hidden: tuple = (16, 16), train_iters: int = 400, dither: float = 1.0,
                 dither_hold: int = 5, trust_region: bool = True, model_tol: float = 0.02, monitor_halflife: float = 5.0,
                 seed: int = 0):
        if not (isinstance(horizon, (int, np.integer)) and horizon >= 1):
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        if not (is_number(alpha) and 0 < alpha <= 1):
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if not (is_number(beta) and np.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be finite and >= 0, got {beta!r}")
        if not (is_number(train_days) and np.isfinite(train_days) and train_days > 0):
            raise ValueError(f"train_days must be > 0, got {train_days!r}")
        hidden = tuple(hidden)
        if not hidden or not all(isinstance(h, (int, np.integer)) and h >= 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty sequence of integers >= 1, got {hidden!r}")
        if not (isinstance(train_iters, (int, np.integer)) and train_iters >= 1):
            raise ValueError(f"train_iters must be an integer >= 1, got {train_iters!r}")
        if not (is_number(dither) and np.isfinite(dither) and dither >= 0):
            raise ValueError(f"dither must be finite and >= 0, got {dither!r}")
        if not (isinstance(dither_hold, (int, np.integer)) and dither_hold >= 1):
            raise ValueError(f"dither_hold must be an integer >= 1, got {dither_hold!r}")
        if weights is not None and not isinstance(weights, str):
            raise ValueError(f"weights must be a path (str) or None, got {weights!r}")
        self.horizon, self.alpha, self.beta, self.weights = int(horizon), float(alpha), float(beta), weights
        self.train_days, self.hidden, self.train_iters = float(train_days), tuple(int(h) for h in hidden), int(train_iters)
        if not isinstance(trust_region, bool):
            raise ValueError(f"trust_region must be a bool, got {trust_region!r}")
        self.dither, self.dither_hold, self.trust_region, self.seed = float(dither), int(dither_hold), trust_region, int(seed)
        if not (is_number(model_tol) and np.isfinite(model_tol) and model_tol > 0):
            raise ValueError(f"model_tol must be finite and > 0, got {model_tol!r}")
        if not (is_number(monitor_halflife) and np.isfinite(monitor_halflife) and monitor_halflife > 0):
            raise ValueError(f"monitor_halflife must be finite and > 0, got {monitor_halflife!r}")
        self.model_tol, self.monitor_halflife = float(model_tol), float(monitor_halflife)

    # ------------------------------------------------------------------------------ set-up
    def setup(self, context: ControlContext, model: MlpDynamics | None = None) -> _LearnedDynamicsController:
        """Bind the context and obtain the dynamics: ``model`` if given, else ``weights`` if set,
        else train on dithered-PID logs from the history (the only step that imports torch)."""
        super().setup(context)
        hist = np.asarray(context.history_qps, dtype=float)
        hist = hist[np.isfinite(hist) & (hist > 0)]
        self.qps_ref_ = float(np.percentile(hist, 99)) if hist.size else 1.0
        self.fit_report_: dict = {}
        if model is None and self.weights is not None:
            try:
                model = MlpDynamics.load(self.weights)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # missing, unreadable, not a model
                raise ValueError(f"{self.name}: weights={self.weights!r} is not a readable dynamics model "
                                 f"({type(e).__name__}: {e})") from None
        if model is None:
            model = self._train(context)
        if model.n_clusters != context.n_clusters:
            raise ValueError(f"dynamics model has {model.n_clusters} clusters, the context {context.n_clusters}")
        self.model_ = model
        G = context.n_clusters
        self.z_lo_, self.z_hi_ = np.full(G, np.log(context.lam_min)), np.full(G, np.log(context.lam_max))
        if self.trust_region and model.z_range is not None:
            zr = np.asarray(model.z_range, dtype=float)
            self.z_lo_ = np.clip(zr[:, 0], self.z_lo_, self.z_hi_)
            self.z_hi_ = np.clip(zr[:, 1], self.z_lo_, self.z_hi_)
        self.prev_: TickSolution | None = None
        self.last_load_: np.ndarray | None = None
        self.model_error_ = np.zeros(G)  # EWMA of the one-step error / C_m
        self.invalid_ticks_ = 0  # ticks since the model was declared invalid (0: valid)
        self.monitor_ = {"scored": 0, "invalid_ticks": 0, "episodes": 0}
        return self

    def _train(self, context: ControlContext) -> MlpDynamics:
        if context.simulate_history is None:
            raise ValueError(f"{self.name}: the context cannot simulate the history; pass weights=PATH")
        t0 = time.perf_counter()
        exciter = DitheredPid(sigma=self.dither, hold=self.dither_hold, seed=self.seed)
        log = context.simulate_history(exciter, self.train_days)
        t1 = time.perf_counter()
        clusters = list(context.clusters)
        data = transitions_from_log(log, clusters, self.qps_ref_)
        model, report = fit_dynamics(*data, hidden=self.hidden, max_iter=self.train_iters, seed=self.seed)
        self.fit_report_ = report | {"simulate_s": t1 - t0, "fit_s": time.perf_counter() - t1}
        return model

    # ---------------------------------------------------------------------------- per tick
    def state_of(self, obs: Observation) -> np.ndarray:
        """Traffic state held over the horizon: last tick's QPS and the hour of the coming tick."""
        t = pd.Timestamp(obs.time) + pd.Timedelta(seconds=self.ctx_.period_s)
        return traffic_state(obs.qps, hour_of_day(t), self.qps_ref_)

    def objective(self, z: np.ndarray, load0: np.ndarray, state: np.ndarray, z_prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``J`` for a batch of plans ``z`` (``(..., N, G)`` log lambdas) and the rolled loads."""
        target = np.asarray(self.ctx_.target, dtype=float)
        N = z.shape[-2]
        L = np.broadcast_to(np.asarray(load0, dtype=float), z.shape[:-2] + z.shape[-1:])
        J = np.zeros(z.shape[:-2])
        loads = np.empty(z.shape)
        for k in range(N):
            L = self.model_.predict(L, state, z[..., k, :])
            loads[..., k, :] = L
            J = J + self.alpha ** (k + 1) * np.sum(((L - target) / target) ** 2, axis=-1)
        dz = np.diff(np.concatenate([np.broadcast_to(z_prev, z.shape[:-2] + (1, z.shape[-1])), z], axis=-2), axis=-2)
        return J + self.beta * np.sum(dz ** 2, axis=(-2, -1)), loads

    def _warm(self, z_prev: np.ndarray) -> np.ndarray:
        """The previous plan shifted one tick (its last step repeated), or ``z_prev`` held."""
        if self.prev_ is not None and self.prev_.ok and self.prev_.lam.shape[0] == self.horizon:
            z = np.log(self.prev_.lam)
            return np.vstack([z[1:], z[-1:]])
        return np.tile(z_prev, (self.horizon, 1))

    def solve(self, load0, state, lam_prev) -> TickSolution:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def _monitor(self, obs: Observation) -> str:
        """Score the model on the transition that just ended; ``""`` while it is trusted, else why not."""
        load = np.asarray(obs.load, dtype=float)
        lam = np.asarray(obs.lam, dtype=float)
        prev, self.last_load_ = self.last_load_, load.copy()
        if prev is not None and np.all(np.isfinite(load)) and np.all(lam > 0) and np.all(np.isfinite(lam)):
            t = pd.Timestamp(obs.time)
            s = traffic_state(obs.qps, hour_of_day(t), self.qps_ref_)
            err = (load - self.model_.predict(prev, s, np.log(self.clip(lam)))) / self.ctx_.target
            if np.all(np.isfinite(err)):
                a = 1.0 - 0.5 ** (1.0 / self.monitor_halflife)
                self.model_error_ = (1 - a) * self.model_error_ + a * err
                self.monitor_["scored"] += 1
        worst = int(np.argmax(np.abs(self.model_error_)))
        e = float(self.model_error_[worst])
        if self.invalid_ticks_ == 0 and abs(e) > self.model_tol:
            self.monitor_["episodes"] += 1
            self.invalid_ticks_ = 1
        elif self.invalid_ticks_ > 0:
            calm = np.all(np.abs(self.model_error_) < self.model_tol / 2)
            self.invalid_ticks_ = 0 if (calm and self.invalid_ticks_ >= self.monitor_halflife) else self.invalid_ticks_ + 1
        if self.invalid_ticks_ == 0:
            return ""
        self.monitor_["invalid_ticks"] += 1
        name = self.ctx_.clusters[worst]
        return (f"error: model invalid: {name} one-step load error {e:+.1%} of C_m "
                f"(EWMA, half-life {self.monitor_halflife:g} ticks; tolerance {self.model_tol:.0%})")

    def make_step(self, obs: Observation, forecast=None, response=None) -> Plan:
        invalid = self._monitor(obs)
        if invalid:
            self.prev_ = None  # the plan was built on the model: do not warm-start from it
            return Plan(lam=self.clip(np.asarray(obs.lam, dtype=float)), controller=self.name, status=invalid,
                        info={"model_error": self.model_error_.tolist()})
        sol = self.solve(np.asarray(obs.load, dtype=float), self.state_of(obs), np.asarray(obs.lam, dtype=float))
        if not sol.ok:
            return Plan(lam=self.clip(np.asarray(obs.lam, dtype=float)), controller=self.name, status=sol.status,
                        solve_time_s=sol.solve_time_s)
        return Plan(lam=self.clip(sol.lam[0]), controller=self.name, status="ok", solve_time_s=sol.solve_time_s,
                    lam_plan=sol.lam, load_plan=sol.load,
                    info={"objective": sol.objective, "model_error": self.model_error_.tolist(), **(sol.info or {})})

    def _check(self, load0, state, lam_prev) -> str:
        G = self.ctx_.n_clusters
        for name, v, n in (("load0", load0, G), ("state", state, self.model_.n_inputs - 1 - G), ("lam_prev", lam_prev, G)):
            v = np.asarray(v, dtype=float)
            if v.shape != (n,):
                return f"error: {name} must have shape ({n},), got {v.shape}"
            if not np.all(np.isfinite(v)):
                return f"error: non-finite {name} {v.tolist()}"
        if np.any(np.asarray(lam_prev) <= 0):
            return f"error: lam_prev must be > 0, got {np.asarray(lam_prev).tolist()}"
        return ""

    def state_dict(self) -> dict:
        p = self.prev_
        return {"prev": None if p is None else {"lam": p.lam.tolist(), "load": p.load.tolist(), "status": p.status},
                "last_load": None if self.last_load_ is None else self.last_load_.tolist(),
                "model_error": self.model_error_.tolist(), "invalid_ticks": self.invalid_ticks_, "monitor": dict(self.monitor_)}

    def load_state_dict(self, d: dict) -> None:
        p = d.get("prev")
        self.prev_ = None if p is None else TickSolution(np.asarray(p["lam"], float), np.asarray(p["load"], float), p["status"], 0.0)
        self.last_load_ = None if d["last_load"] is None else np.asarray(d["last_load"], float)
        self.model_error_ = np.asarray(d["model_error"], float)
        self.invalid_ticks_, self.monitor_ = int(d["invalid_ticks"]), dict(d["monitor"])


class NmpcController(_LearnedDynamicsController):
    """MaRCA's NMPC: the learned-dynamics tracking problem solved by CasADi + IPOPT (see module doc)."""

    name = "nmpc"

    def __init__(self, horizon: int = 30, alpha: float = 0.97, beta: float = 0.01, max_cpu_time: float = 0.4,
                 max_iter: int = 200, tol: float = 1e-6, multistart: bool = True, **kwargs):
        super().__init__(horizon=horizon, alpha=alpha, beta=beta, **kwargs)
        if not (is_number(max_cpu_time) and np.isfinite(max_cpu_time) and max_cpu_time > 0):
            raise ValueError(f"max_cpu_time must be > 0, got {max_cpu_time!r}")
        if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        if not (is_number(tol) and np.isfinite(tol) and tol > 0):
            raise ValueError(f"tol must be > 0, got {tol!r}")
        if not isinstance(multistart, bool):
            raise ValueError(f"multistart must be a bool, got {multistart!r}")
        self.max_cpu_time, self.max_iter, self.tol, self.multistart = float(max_cpu_time), int(max_iter), float(tol), multistart

    def setup(self, context: ControlContext, model: MlpDynamics | None = None) -> NmpcController:
        """Bind the context, load or train the dynamics model and build the CasADi problem; returns ``self``."""
        super().setup(context, model)
        self._build()
        return self

    def _build(self) -> None:
        """The NLP in decision vector ``x = [vec(Z); vec(L)]`` (both ``(G, N)``, column k = step k),
        parameters ``p = [L_0; s; z_{-1}]``; built once, only ``p`` and the initial guess change."""
        import casadi as ca

        G, N, S = self.ctx_.n_clusters, self.horizon, self.model_.n_inputs - 1 - self.ctx_.n_clusters
        target = np.asarray(self.ctx_.target, dtype=float)
        l, s, z = ca.SX.sym("l", G), ca.SX.sym("s", S), ca.SX.sym("z", G)
        step = ca.Function("g", [l, s, z], [self.model_.casadi(l, s, z)])
        Z, L = ca.SX.sym("Z", G, N), ca.SX.sym("L", G, N)
        L0, s_p, z_m1 = ca.SX.sym("L0", G), ca.SX.sym("s", S), ca.SX.sym("z_m1", G)
        prev_L, prev_z, J, cons = L0, z_m1, 0, []
        for k in range(N):
            cons.append(L[:, k] - step(prev_L, s_p, Z[:, k]))
            J += self.alpha ** (k + 1) * ca.sumsqr((L[:, k] - target) / target) + self.beta * ca.sumsqr(Z[:, k] - prev_z)
            prev_L, prev_z = L[:, k], Z[:, k]
        nlp = {"x": ca.vertcat(ca.vec(Z), ca.vec(L)), "p": ca.vertcat(L0, s_p, z_m1), "f": J, "g": ca.vertcat(*cons)}
        opts = {"ipopt.print_level": 0, "print_time": False, "ipopt.sb": "yes", "ipopt.max_cpu_time": self.max_cpu_time,
                "ipopt.max_iter": self.max_iter, "ipopt.tol": self.tol, "error_on_fail": False}
        self.nlp_ = ca.nlpsol("marca_nmpc", "ipopt", nlp, opts)
        n = G * N
        self.lbx_ = np.concatenate([np.tile(self.z_lo_, N), np.full(n, -np.inf)])
        self.ubx_ = np.concatenate([np.tile(self.z_hi_, N), np.full(n, np.inf)])

    def solve(self, load0, state, lam_prev) -> TickSolution:
        """One tick: returns the planned ``(N, G)`` lambdas and loads, and IPOPT's verdict as status."""
        t0 = time.perf_counter()
        bad = self._check(load0, state, lam_prev)
        if bad:
            return TickSolution(np.empty((0, 0)), np.empty((0, 0)), bad, time.perf_counter() - t0)
        G, N = self.ctx_.n_clusters, self.horizon
        z_prev = np.log(np.clip(np.asarray(lam_prev, dtype=float), self.ctx_.lam_min, self.ctx_.lam_max))
        p = np.concatenate([load0, state, z_prev])
        starts = [np.clip(self._warm(z_prev), self.z_lo_, self.z_hi_)]
        if self.multistart:
            starts.append(np.tile((self.z_lo_ + self.z_hi_) / 2, (N, 1)))
        best, failure = None, ""
        for k, zw in enumerate(starts):
            _, Lw = self.objective(zw, load0, state, z_prev)  # loads consistent with the start
            x0 = np.concatenate([zw.ravel(), Lw.ravel()])  # (N, G) row-major == vec of (G, N)
            try:
                r = self.nlp_(x0=x0, p=p, lbx=self.lbx_, ubx=self.ubx_, lbg=0, ubg=0)
                stats = self.nlp_.stats()
            except Exception as e:  # noqa: BLE001 -- a solver crash is a status, the Balancer falls back
                failure = f"error: ipopt raised {type(e).__name__}: {e}"
                continue
            x = np.asarray(r["x"], dtype=float).ravel()
            if not (stats.get("success") and np.all(np.isfinite(x))):
                failure = f"error: ipopt {stats.get('return_status')}"
                continue
            f = float(r["f"])
            if best is None or f < best[0]:
                best = (f, x, {"iterations": int(stats.get("iter_count", -1)), "ipopt": stats.get("return_status"), "start": k})
        elapsed = time.perf_counter() - t0
        if best is None:
            return TickSolution(np.empty((0, 0)), np.empty((0, 0)), failure, elapsed)
        f, x, info = best
        sol = TickSolution(np.exp(x[:G * N].reshape(N, G)), x[G * N:].reshape(N, G), "ok", elapsed, f, info)
        self.prev_ = sol
        return sol


class ShootingController(_LearnedDynamicsController):
    """MaRCA's released solver: random shooting on the learned dynamics (see module doc).

    Candidates: the shifted previous plan, the last lambda held, and ``n_samples - 2`` perturbations
    ``z = warm + e_0 + cumsum(e_k)``, ``e_0 ~ N(0, sigma^2)`` (a level shift) and
    ``e_k ~ N(0, sigma_step^2)`` (a random walk), clipped to the bounds.
    """

    name = "shooting"

    def __init__(self, horizon: int = 30, alpha: float = 0.97, beta: float = 0.01, n_samples: int = 1000,
                 sigma: float = 0.5, sigma_step: float = 0.05, **kwargs):
        super().__init__(horizon=horizon, alpha=alpha, beta=beta, **kwargs)
        if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 2):
            raise ValueError(f"n_samples must be an integer >= 2, got {n_samples!r}")
        for k, v in {"sigma": sigma, "sigma_step": sigma_step}.items():
            if not (is_number(v) and np.isfinite(v) and v >= 0):
                raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")
        self.n_samples, self.sigma, self.sigma_step = int(n_samples), float(sigma), float(sigma_step)

    def setup(self, context: ControlContext, model: MlpDynamics | None = None) -> ShootingController:
        """Bind the context, load or train the dynamics model and seed the sampler; returns ``self``."""
        super().setup(context, model)
        self.rng_ = np.random.default_rng(self.seed + 1)
        return self

    def solve(self, load0, state, lam_prev) -> TickSolution:
        """The best of the sampled lambda sequences under the learned dynamics.

        Parameters
        ----------
        load0 : ndarray
            Measured load per cluster.
        state : ndarray
            The traffic state the dynamics take (:func:`~mpc_balancer.dynamics.traffic_state`).
        lam_prev : ndarray
            The lambda applied last tick.

        Returns
        -------
        TickSolution
            Planned lambdas and loads, status and solve time.
        """
        t0 = time.perf_counter()
        bad = self._check(load0, state, lam_prev)
        if bad:
            return TickSolution(np.empty((0, 0)), np.empty((0, 0)), bad, time.perf_counter() - t0)
        G, N, M = self.ctx_.n_clusters, self.horizon, self.n_samples
        z_prev = np.log(np.clip(np.asarray(lam_prev, dtype=float), self.ctx_.lam_min, self.ctx_.lam_max))
        warm = self._warm(z_prev)
        noise = (self.rng_.normal(0.0, self.sigma, (M - 2, 1, G))
                 + np.cumsum(self.rng_.normal(0.0, self.sigma_step, (M - 2, N, G)), axis=1))
        Z = np.clip(np.concatenate([warm[None], np.tile(z_prev, (1, N, 1)), warm[None] + noise]), self.z_lo_, self.z_hi_)
        J, loads = self.objective(Z, load0, state, z_prev)
        J = np.where(np.isfinite(J), J, np.inf)
        best = int(np.argmin(J))
        status = "ok" if np.isfinite(J[best]) else "error: no candidate with a finite objective"
        sol = TickSolution(np.exp(Z[best]), loads[best], status, time.perf_counter() - t0, float(J[best]),
                           {"best_index": best})
        if sol.ok:
            self.prev_ = sol
        return sol

    def state_dict(self) -> dict:
        """The base state and the sampler's generator state."""
        return super().state_dict() | {"rng": self.rng_.bit_generator.state}

    def load_state_dict(self, d: dict) -> None:
        """Restore :meth:`state_dict`."""
        super().load_state_dict(d)
        self.rng_.bit_generator.state = d["rng"]
