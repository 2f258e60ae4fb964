"""Two solvers for the same :class:`MpcProblem`: direct OSQP (fast path) and cvxpy (reference).

The OSQP path is set up once; each tick it updates only the vectors ``q``, ``l``, ``u`` (and the
values of ``P`` for the tracking objective) and solves warm from the previous solution shifted by
one step. A time limit bounds every solve; a solve that does not reach ``solved`` is reported in
the status (the Balancer then falls back) and OSQP errors become a status too: nothing raises to
the caller.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .problem import MpcData, MpcProblem, QuadraticMpcProblem, frontier_quadratic

OK_STATUSES = ("solved",)


@dataclass
class MpcSolution:
    """One solve's result.

    Attributes
    ----------
    u : ndarray, shape (G, H)
        Planned cost per request.
    slack : ndarray, shape (G, H)
        Load slack, in cost-per-request units.
    status : str
        The solver's status (``ok`` statuses in ``OK_STATUSES``).
    solve_time_s : float
        Wall time of the solve.
    """

    u: np.ndarray  # (G, H) planned cost per request
    slack: np.ndarray  # (G, H) load slack (cost-per-request units)
    status: str
    solve_time_s: float
    iterations: int = 0
    x: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        """Whether the status is one of the solver's success statuses."""
        return self.status in OK_STATUSES


def _failed(p: MpcProblem, status: str, elapsed: float, iterations: int = 0) -> MpcSolution:
    nan = np.full((p.G, p.H), np.nan)
    return MpcSolution(nan, nan.copy(), status, elapsed, iterations)


class OsqpMpcSolver:
    """Direct OSQP with warm start. ``time_limit_s`` bounds each solve (0 = none)."""

    def __init__(self, problem: MpcProblem, time_limit_s: float = 0.05, eps: float = 1e-5, max_iter: int = 10000,
                 polish: bool = True):
        self.problem, self.time_limit_s, self.eps, self.max_iter, self.polish = problem, time_limit_s, eps, max_iter, polish
        self.reset()

    def reset(self) -> None:
        """Forget the OSQP workspace and the warm start (the next solve sets up again)."""
        self._solver, self._x, self._y = None, None, None

    def warm_state(self) -> dict | None:
        """The last solution (primal, dual): what the next solve warm-starts from (for checkpoints)."""
        return None if self._x is None else {"x": self._x.tolist(), "y": self._y.tolist()}

    def load_warm_state(self, state: dict) -> None:
        """Warm-start the next solve from :meth:`warm_state`'s output.

        Raises
        ------
        ValueError
            ``x`` or ``y`` has the wrong shape for this problem.
        """
        x, y = np.asarray(state["x"], dtype=float), np.asarray(state["y"], dtype=float)
        if x.shape != (self.problem.n,) or y.shape != (self.problem.m,):
            raise ValueError(f"warm start must have x of shape ({self.problem.n},) and y of shape ({self.problem.m},), "
                             f"got {x.shape} and {y.shape}")
        self._x, self._y = x, y

    def solve(self, data: MpcData) -> MpcSolution:
        """Update the workspace with this tick's data and solve warm; a failure is a status, never an exception."""
        p = self.problem
        p.validate(data)
        t0 = time.perf_counter()
        try:
            return self._solve(data, t0)
        except Exception as e:  # noqa: BLE001 -- OSQP setup/update errors become a status, never an exception
            self.reset()
            return _failed(p, f"osqp error: {type(e).__name__}: {e}", time.perf_counter() - t0)

    def _solve(self, data: MpcData, t0: float) -> MpcSolution:
        import osqp

        p = self.problem
        l, u = p.bounds(data)
        q = p.q_vector(data)
        if self._solver is None:
            self._solver = osqp.OSQP()
            self._solver.setup(p.P_matrix(data), q, p.A, l, u, verbose=False, warm_starting=True, eps_abs=self.eps,
                               eps_rel=self.eps, max_iter=self.max_iter,
                               # the fitted-quadratic QP is strictly convex: polishing only prints "not needed"
                               polishing=self.polish and not isinstance(p, QuadraticMpcProblem),
                               time_limit=self.time_limit_s if self.time_limit_s > 0 else 1e10)
            if self._x is not None:  # restored from a checkpoint
                self._solver.warm_start(x=p.shift(self._x), y=self._y)
        else:
            kw = {"q": q, "l": l, "u": u}
            if p.objective == "tracking" or isinstance(p, QuadraticMpcProblem):
                kw["Px"] = p.P_values(data)
            self._solver.update(**kw)
            if self._x is not None:
                self._solver.warm_start(x=p.shift(self._x), y=self._y)
        res = self._solver.solve(raise_error=False)
        elapsed = time.perf_counter() - t0
        status = str(res.info.status)
        x = res.x
        if x is None or not np.all(np.isfinite(x)) or status not in OK_STATUSES:
            return _failed(p, status, elapsed, int(res.info.iter))
        self._x, self._y = x.copy(), res.y.copy()
        return MpcSolution(p.planned_cost(x, data), p.slack(x, data), status, elapsed, int(res.info.iter), x)


class CvxpyMpcSolver:
    """The same QP written from the math in cvxpy: the reference the OSQP path is tested against."""

    def __init__(self, problem: MpcProblem, solver: str | None = None):
        self.problem, self.solver = problem, solver

    def warm_state(self) -> None:
        """cvxpy re-solves from scratch: nothing to checkpoint (same interface as the OSQP solver)."""
        return None

    def load_warm_state(self, state: dict) -> None:
        """Nothing to restore (see :meth:`warm_state`)."""

    def solve(self, data: MpcData) -> MpcSolution:
        """Build and solve the same QP with cvxpy (a cross-check of the OSQP path)."""
        import cvxpy as cp

        p = self.problem
        p.validate(data)
        t0 = time.perf_counter()
        if isinstance(p, QuadraticMpcProblem):
            return self._solve_quadratic(data, t0)
        G, H, J, w = p.G, p.H, p.J, p.weights
        deltas = [cp.Variable((H, J), nonneg=True) for _ in range(G)]
        s = cp.Variable((G, H), nonneg=True)
        cons, terms = [], []
        for g in range(G):
            d = deltas[g]
            cons.append(d <= np.tile(data.widths[g], (H, 1)))
            u = data.u_min[g] + cp.sum(d, axis=1)  # (H,)
            cap_u = (data.target[g] - data.offset[g]) * data.capacity[g] / np.maximum(data.qps_hi, 1e-9)
            cons.append(u - s[g] <= cap_u)
            prev = cp.hstack([np.array([data.u_prev[g]]), u[:-1]]) if H > 1 else np.array([data.u_prev[g]])
            if p.objective == "revenue":
                disc = w.discount ** np.arange(H)
                terms.append(-cp.sum(cp.multiply(disc * data.qps / data.qps_ref, d @ data.slopes[g])))
                terms.append(w.rho / p.u_scale[g] ** 2 * cp.sum_squares(u - prev))
            else:
                terms += self._tracking_terms(u, prev, g, data)
            terms.append(w.slack * cp.sum(cp.multiply(data.qps_hi / data.capacity[g], s[g])))
        prob = cp.Problem(cp.Minimize(cp.sum(terms)), cons)
        status = self._run(prob)
        elapsed = time.perf_counter() - t0
        if status != "solved" or s.value is None:
            return _failed(p, status, elapsed)
        dv = np.stack([d.value for d in deltas])
        x = np.concatenate([dv.ravel(), (data.u_min[:, None] + dv.sum(axis=2)).ravel(), s.value.ravel()])
        return MpcSolution(p.planned_cost(x, data), np.asarray(s.value), status, elapsed, 0, x)

    def _run(self, prob) -> str:
        import cvxpy as cp

        try:
            prob.solve(solver=self.solver) if self.solver else prob.solve()
            return "solved" if prob.status == "optimal" else str(prob.status)
        except cp.error.SolverError as e:
            return f"solver error: {e}"

    def _tracking_terms(self, u, prev, g: int, data: MpcData) -> list:
        """MaRCA's tracking objective for cluster ``g``: discounted squared load error + rate penalty."""
        import cvxpy as cp

        p, w = self.problem, self.problem.weights
        disc = w.alpha ** np.arange(p.H)
        coef = data.qps_hi / data.capacity[g] / data.target[g]
        resid = (data.offset[g] - data.target[g]) / data.target[g]
        return [cp.sum(cp.multiply(disc, cp.square(cp.multiply(coef, u) + resid))),
                w.beta / p.u_scale[g] ** 2 * cp.sum_squares(u - prev)]

    def _solve_quadratic(self, data: MpcData, t0: float) -> MpcSolution:
        import cvxpy as cp

        p, w = self.problem, self.problem.weights
        G, H = p.G, p.H
        U = cp.Variable((G, H))
        lo, hi = (b.reshape(G, H) for b in p.bounds(data))
        terms = []
        a1, a2 = frontier_quadratic(data.u_min, data.widths, data.slopes)
        for g in range(G):
            u = U[g]
            prev = cp.hstack([np.array([data.u_prev[g]]), u[:-1]]) if H > 1 else np.array([data.u_prev[g]])
            if p.objective == "revenue":
                wq = w.discount ** np.arange(H) * data.qps / data.qps_ref
                x = u - data.u_min[g]
                terms.append(-(a1[g] * (wq @ x) - 0.5 * a2[g] * cp.sum(cp.multiply(wq, cp.square(x)))))
                terms.append(w.rho / p.u_scale[g] ** 2 * cp.sum_squares(u - prev))
            else:
                terms += self._tracking_terms(u, prev, g, data)
        prob = cp.Problem(cp.Minimize(cp.sum(terms)), [U >= lo, U <= hi])
        status = self._run(prob)
        elapsed = time.perf_counter() - t0
        if status != "solved" or U.value is None:
            return _failed(p, status, elapsed)
        x = np.asarray(U.value).ravel()
        return MpcSolution(p.planned_cost(x, data), p.slack(x, data), status, elapsed, 0, x)
