"""PID feedback on measured load (MaRCA-Feedback / CRAS arm).

Per cluster, on the relative load error ``e = (L - S) / C_m`` against the setpoint
``S = (1 - margin) C_m`` (margin 0 by default, as in the papers), in log-lambda (the load responds
to lambda multiplicatively, so gains in log space hold over a day whose traffic varies tenfold)::

    log lambda = log lambda_0 + Kp e + Ki sum(e) + Kd (e - e_prev)

Anti-windup: the integral only accumulates while lambda is inside its bounds (or the error drives
it back inside), so a long night at the lower bound does not build up a debt. When the nodes
applied another lambda than the one decided (a node-local guard raised it during a burst), the
integral takes the applied one over: the loop continues from what the plant actually saw.
"""
from __future__ import annotations

import numpy as np

from ..config import is_number
from .base import ControlContext, Controller, Observation, Plan


class PidController(Controller):
    """PID on the relative load error, in log lambda, with anti-windup (see the module doc).

    Parameters
    ----------
    kp, ki, kd : float
        Proportional, integral and derivative gains (>= 0) on ``e = (L - S) / C_m``.
    lam0 : float
        The lambda at zero error and zero integral (> 0).
    margin : float
        Setpoint ``S = (1 - margin) C_m``, in ``[0, 1)``.

    Attributes
    ----------
    integral_ : ndarray
        The accumulated error per cluster.
    prev_error_ : ndarray
        Last tick's error (for the derivative term).
    """

    name = "pid"
    reads_response = False  # telemetry only

    def __init__(self, kp: float = 0.5, ki: float = 1.0, kd: float = 0.0, lam0: float = 0.01, margin: float = 0.0):
        for k, v in {"kp": kp, "ki": ki, "kd": kd}.items():
            if not (is_number(v) and np.isfinite(v) and v >= 0):
                raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")
        if not (is_number(lam0) and np.isfinite(lam0) and lam0 > 0):
            raise ValueError(f"lam0 must be a finite number > 0, got {lam0!r}")
        if not 0 <= margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {margin!r}")
        self.kp, self.ki, self.kd, self.lam0, self.margin = kp, ki, kd, lam0, margin

    def setup(self, context: ControlContext) -> PidController:
        """Bind the context and zero the integral; returns ``self``."""
        super().setup(context)
        self.integral_ = np.zeros(context.n_clusters)
        self.prev_error_ = np.zeros(context.n_clusters)
        self.applied_: np.ndarray | None = None  # the lambda the Balancer applied last tick
        return self

    def notify_applied(self, lam: np.ndarray) -> None:
        """Remember the lambda the Balancer applied (the integral continues from what the nodes did)."""
        self.applied_ = np.asarray(lam, dtype=float).copy()

    def make_step(self, obs: Observation, forecast=None, response=None) -> Plan:
        """The PID's lambda from the measured load; ``info["error"]`` is the error per cluster."""
        ctx = self.ctx_
        if self.applied_ is not None and self.ki > 0:
            # what the nodes applied differs from what was decided (their guard): continue from it
            seen = np.clip(np.asarray(obs.lam, dtype=float), ctx.lam_min, ctx.lam_max)
            self.integral_ = self.integral_ + (np.log(seen) - np.log(np.clip(self.applied_, ctx.lam_min, ctx.lam_max))) / self.ki
        e = (np.asarray(obs.load, dtype=float) - (1 - self.margin) * ctx.target) / ctx.target
        lo, hi = np.log(ctx.lam_min), np.log(ctx.lam_max)
        base = np.log(self.lam0) + self.kp * e + self.kd * (e - self.prev_error_)
        trial = base + self.ki * (self.integral_ + e)
        # anti-windup: integrate only if that does not push further past a bound
        saturated = ((trial > hi) & (e > 0)) | ((trial < lo) & (e < 0))
        self.integral_ = np.where(saturated, self.integral_, self.integral_ + e)
        self.prev_error_ = e
        log_lam = np.clip(base + self.ki * self.integral_, lo, hi)
        return Plan(lam=np.exp(log_lam), controller=self.name, info={"error": e})

    def align(self, lam_applied: np.ndarray, obs: Observation) -> None:
        """Bumpless transfer: set the integral so this controller's output equals ``lam_applied``."""
        ctx = self.ctx_
        e = (np.asarray(obs.load, dtype=float) - (1 - self.margin) * ctx.target) / ctx.target
        if self.ki > 0:
            self.integral_ = (np.log(np.clip(lam_applied, ctx.lam_min, ctx.lam_max)) - np.log(self.lam0) - self.kp * e
                              - self.kd * (e - self.prev_error_)) / self.ki

    def state_dict(self) -> dict:
        """Integral, previous error and last applied lambda, as lists."""
        return {"integral": self.integral_.tolist(), "prev_error": self.prev_error_.tolist(),
                "applied": None if self.applied_ is None else self.applied_.tolist()}

    def load_state_dict(self, d: dict) -> None:
        """Restore :meth:`state_dict`: the arrays are checked (one finite value per cluster) first."""
        if not isinstance(d, dict):
            raise ValueError(f"pid state must be a dict, got {type(d).__name__}")
        new = {}
        for key in ("integral", "prev_error", "applied"):
            if key == "applied" and d.get(key) is None:
                new[key] = None
                continue
            try:
                a = np.asarray(d[key], dtype=float)
            except KeyError:
                raise ValueError(f"pid state is missing {key!r}") from None
            except (TypeError, ValueError):
                raise ValueError(f"pid {key} must be numbers, got {d[key]!r}") from None
            if a.shape != (self.ctx_.n_clusters,) or not np.all(np.isfinite(a)):
                raise ValueError(f"pid {key} must be {self.ctx_.n_clusters} finite values, got {d[key]!r}")
            new[key] = a
        self.integral_, self.prev_error_, self.applied_ = new["integral"], new["prev_error"], new["applied"]
