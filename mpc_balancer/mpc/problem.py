"""The receding-horizon problem, as numbers: one QP for all clusters over H steps.

The efficient frontier ``R_g(u)`` is concave and piecewise linear with breakpoints
``u_min = c_0 < c_1 < ... < c_J`` and decreasing slopes ``b_1 >= ... >= b_J >= 0``. Its epigraph
is written in *segment-filling* form: the planned cost per request is
``u[g,k] = u_min_g + sum_j delta[g,k,j]`` with ``0 <= delta[g,k,j] <= c_j - c_{j-1}``, and the
revenue per request is ``R_g(u_min) + sum_j b[g,j] delta[g,k,j]``. Because the slopes decrease,
any optimum fills the steepest segments first, so this equals ``R_g(u)`` exactly (the hypograph
of a concave piecewise-linear function). Unlike ``z <= a_j + b_j u`` rows it leaves only box
constraints and one load row per step, which ADMM solves in few iterations.

Revenue objective (default)::

    max  sum_gk w_k (qps_k / qps_ref) sum_j b[g,j] delta[g,k,j]                     revenue
         - rho * sum_gk ((u[g,k] - u[g,k-1]) / u_scale_g)^2                           rate penalty
         - M * sum_gk (qps_hi_k / capacity_g) s[g,k]                                   load excess
    s.t. sum_j delta[g,k,j] - s[g,k] <= (C_m_g - d_g) capacity_g / qps_hi_k - u_min_g   load
         0 <= delta[g,k,j] <= width[g,j],   s >= 0

Tracking objective (MaRCA's): the revenue term is replaced by
``sum_gk alpha^k ((qps_hi_k u[g,k] / capacity_g + d_g - C_m_g) / C_m_g)^2`` and the rate weight
by ``beta``; same constraints. ``u[g,-1]`` is the cost per request applied last tick.

With the revenue objective the forecast, the offset ``d``, ``u[g,-1]`` and the frontier all enter
only the vectors ``q``, ``l``, ``u``: the matrices are fixed at setup (``u_scale`` is fixed per
cluster). The tracking objective also updates the values of ``P`` (its weights carry
``qps_hi^2``), never its sparsity.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

OBJECTIVES = ("revenue", "tracking")


@dataclass(frozen=True)
class MpcWeights:
    """Weights of the MPC's objective (all finite and >= 0).

    Attributes
    ----------
    rho : float
        Rate penalty of the revenue objective, per ``(change / u_scale)^2``.
    slack : float
        Penalty per unit of load over ``C_m`` per step (far above any frontier slope).
    alpha : float
        Discount of the tracking objective, in ``(0, 1]``.
    beta : float
        Rate penalty of the tracking objective.
    discount : float
        Revenue discount ``w_k = discount^k``, in ``(0, 1]``.
    """

    rho: float = 0.05  # rate penalty (revenue objective), per (change / u_scale)^2
    slack: float = 50.0  # penalty per unit of load over C_m per step (>> any frontier slope)
    alpha: float = 0.97  # tracking discount
    beta: float = 0.05  # tracking rate penalty
    discount: float = 1.0  # revenue discount w_k = discount^k

    def __post_init__(self):
        for k, v in self.__dict__.items():
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"mpc weight {k} must be finite and >= 0, got {v!r}")
        if not 0 < self.alpha <= 1 or not 0 < self.discount <= 1:
            raise ValueError("mpc weights alpha and discount must be in (0, 1]")


@dataclass
class MpcData:
    """One tick's numbers. ``qps``/``qps_hi`` (H,), per cluster (G,), frontier (G, J)."""

    qps: np.ndarray
    qps_hi: np.ndarray
    capacity: np.ndarray
    target: np.ndarray
    offset: np.ndarray
    u_prev: np.ndarray
    u_min: np.ndarray  # frontier's first breakpoint
    widths: np.ndarray  # (G, J) segment widths c_j - c_{j-1} (0 for padding)
    slopes: np.ndarray  # (G, J) segment slopes, non-increasing
    qps_ref: float

    @property
    def u_max(self) -> np.ndarray:
        """The frontier's last breakpoint per cluster (the most cost per request the plan may use)."""
        return self.u_min + self.widths.sum(axis=1)

    def validate(self, G: int, H: int, J: int) -> None:
        """``ValueError`` naming the field unless every array has the shape for ``G`` clusters, ``H`` steps, ``J`` segments."""
        shapes = (("qps", (H,)), ("qps_hi", (H,)), ("capacity", (G,)), ("target", (G,)), ("offset", (G,)),
                  ("u_prev", (G,)), ("u_min", (G,)), ("widths", (G, J)), ("slopes", (G, J)))
        for name, shape in shapes:
            v = getattr(self, name)
            if np.shape(v) != shape:
                raise ValueError(f"mpc data {name} must have shape {shape}, got {np.shape(v)}")
        flat = np.concatenate([np.ravel(getattr(self, n)) for n, _ in shapes])
        if not np.isfinite(flat).all():
            bad = next(n for n, _ in shapes if not np.isfinite(getattr(self, n)).all())
            raise ValueError(f"mpc data {bad} has non-finite values: {np.ravel(getattr(self, bad))[:6].tolist()}")
        if min(self.qps.min(), self.qps_hi.min(), self.widths.min(), self.slopes.min(), self.u_min.min()) < 0:
            bad = next(n for n in ("qps", "qps_hi", "widths", "slopes", "u_min") if np.min(getattr(self, n)) < 0)
            raise ValueError(f"mpc data {bad} must be >= 0")
        if self.capacity.min() <= 0:
            raise ValueError(f"mpc data capacity must be > 0, got {self.capacity.tolist()}")
        if J > 1 and (np.diff(self.slopes, axis=1) > 1e-9).any():
            raise ValueError("mpc data slopes must be non-increasing along segments (a concave frontier)")
        if not self.qps_ref > 0:
            raise ValueError(f"mpc data qps_ref must be > 0, got {self.qps_ref!r}")


def frontier_data(cost_breaks: np.ndarray, revenue_breaks: np.ndarray, n_segments: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(u_min, widths, slopes) of a concave frontier given by its breakpoints, padded/thinned to J."""
    c, r = np.asarray(cost_breaks, dtype=float), np.asarray(revenue_breaks, dtype=float)
    if len(c) < 2:
        return float(c[0]), np.zeros(n_segments), np.zeros(n_segments)
    if len(c) - 1 > n_segments:  # keep the end points, thin interior breakpoints evenly
        keep = np.unique(np.round(np.linspace(0, len(c) - 1, n_segments + 1)).astype(int))
        c, r = c[keep], r[keep]
    w = np.diff(c)
    b = np.maximum(np.diff(r) / np.maximum(w, 1e-12), 0.0)
    b = np.minimum.accumulate(b)  # thinning keeps concavity; guard against round-off
    pad = n_segments - len(w)
    return float(c[0]), np.concatenate([w, np.zeros(pad)]), np.concatenate([b, np.zeros(pad)])


class MpcProblem:
    """Sparsity structure and per-tick vectors of the QP (shared by the OSQP and cvxpy paths).

    Variables ``x = [delta (G*H*J), u (G*H), s (G*H)]`` with the equality rows
    ``u - sum_j delta = u_min``: the rate penalty and the tracking weights then act on ``u`` alone
    (tridiagonal ``P``), which keeps the KKT factor sparse.
    """

    def __init__(self, n_clusters: int, horizon: int, n_segments: int = 8, objective: str = "revenue",
                 weights: MpcWeights | None = None, u_scale: np.ndarray | None = None):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon!r}")
        if n_clusters < 1 or n_segments < 1:
            raise ValueError("n_clusters and n_segments must be >= 1")
        self.G, self.H, self.J = n_clusters, horizon, n_segments
        self.objective, self.weights = objective, weights or MpcWeights()
        self.u_scale = np.ones(n_clusters) if u_scale is None else np.asarray(u_scale, dtype=float)
        if self.u_scale.shape != (n_clusters,) or np.any(self.u_scale <= 0):
            raise ValueError(f"u_scale must be {n_clusters} positive values, got {self.u_scale!r}")
        G, H, J = self.G, self.H, self.J
        self.nd = G * H * J
        self.n = self.nd + 2 * G * H
        self.idelta = np.arange(self.nd).reshape(G, H, J)
        self.iu = self.nd + np.arange(G * H).reshape(G, H)
        self.is_ = self.nd + G * H + np.arange(G * H).reshape(G, H)
        gh = np.arange(G * H)
        eye_u = sp.csc_matrix((np.ones(G * H), (gh, self.iu.ravel())), shape=(G * H, self.n))
        eye_s = sp.csc_matrix((np.ones(G * H), (gh, self.is_.ravel())), shape=(G * H, self.n))
        sum_d = sp.csc_matrix((np.ones(self.nd), (np.repeat(gh, J), self.idelta.ravel())), shape=(G * H, self.n))
        # rows: u - sum(delta) = u_min | u - s <= cap | identity (boxes)
        self.A = sp.vstack([eye_u - sum_d, eye_u - eye_s, sp.identity(self.n, format="csc")], format="csc")
        self.A.sort_indices()
        self.m = self.A.shape[0]
        # rate-penalty operator on u: per cluster first differences (u_{-1} is a constant)
        Dk = sp.diags([np.ones(H), -np.ones(H - 1)], [0, -1], shape=(H, H), format="csc")
        self.D = sp.block_diag([Dk] * G, format="csc") @ eye_u  # (G*H, n)
        self.Eu = eye_u
        self._P_nnz = None

    # -- objective ------------------------------------------------------------------------------
    def P_matrix(self, data: MpcData | None = None) -> sp.csc_matrix:
        """Upper triangle of P. Constant for the revenue objective; tracking weights change values only."""
        G, H = self.G, self.H
        w = self.weights.rho if self.objective == "revenue" else self.weights.beta
        rate = np.repeat(2.0 * w / self.u_scale ** 2, H)
        P = self.D.T @ sp.diags(rate) @ self.D
        if self.objective == "tracking":
            if data is None:
                diag = np.ones((G, H))
            else:
                disc = self.weights.alpha ** np.arange(H)
                coef = (data.qps_hi[None, :] / data.capacity[:, None]) / data.target[:, None]
                diag = disc[None, :] * coef ** 2
            P = P + self.Eu.T @ sp.diags(2.0 * diag.ravel()) @ self.Eu
        reg = np.zeros(self.n)
        reg[self.is_.ravel()] = 1e-9
        reg[self.idelta.ravel()] = 1e-9
        P = sp.triu((P + sp.diags(reg)).tocsc(), format="csc")
        P.sort_indices()
        if self._P_nnz is None:
            self._P_nnz = P.nnz
        elif P.nnz != self._P_nnz:  # the structure is fixed (no entry cancels to an exact zero)
            raise RuntimeError("internal: P sparsity changed")
        return P

    def P_values(self, data: MpcData) -> np.ndarray:
        """The values of :meth:`P_matrix` in its (fixed) sparsity order: OSQP's ``Px`` update."""
        return self.P_matrix(data).data

    def q_vector(self, data: MpcData) -> np.ndarray:
        """The QP's linear term for this tick's data (OSQP ``q``)."""
        H, w = self.H, self.weights
        q = np.zeros(self.n)
        rate = w.rho if self.objective == "revenue" else w.beta
        # rate penalty's linear term from the constant u_{-1}
        q[self.iu[:, 0]] += -2.0 * rate / self.u_scale ** 2 * data.u_prev
        q[self.is_] = w.slack * data.qps_hi[None, :] / data.capacity[:, None]
        if self.objective == "revenue":
            disc = w.discount ** np.arange(H)
            q[self.idelta] = q[self.idelta] - (disc * data.qps / data.qps_ref)[None, :, None] * data.slopes[:, None, :]
        else:
            disc = w.alpha ** np.arange(H)
            coef = (data.qps_hi[None, :] / data.capacity[:, None]) / data.target[:, None]  # (G, H)
            resid = ((data.offset - data.target) / data.target)[:, None]
            q[self.iu] += 2.0 * disc[None, :] * coef * resid
        return q

    def bounds(self, data: MpcData) -> tuple[np.ndarray, np.ndarray]:
        """The QP's constraint bounds ``(l, u)`` for this tick's data (OSQP ``l <= A x <= u``)."""
        G, H = self.G, self.H
        l = np.full(self.m, -np.inf)
        u = np.full(self.m, np.inf)
        link = np.repeat(data.u_min, H)
        l[: G * H], u[: G * H] = link, link
        cap_u = (data.target - data.offset)[:, None] * data.capacity[:, None] / np.maximum(data.qps_hi[None, :], 1e-9)
        u[G * H: 2 * G * H] = cap_u.ravel()
        box = 2 * G * H
        lb, ub = np.zeros(self.n), np.full(self.n, np.inf)
        ub[self.idelta] = np.broadcast_to(data.widths[:, None, :], (G, H, self.J))
        lb[self.iu] = data.u_min[:, None]
        ub[self.iu] = data.u_max[:, None]
        l[box:], u[box:] = lb, ub
        return l, u

    # -- solutions ------------------------------------------------------------------------------
    def planned_cost(self, x: np.ndarray, data: MpcData) -> np.ndarray:
        """(G, H) planned cost per request ``u``."""
        return x[self.iu]

    def planned_revenue(self, x: np.ndarray, data: MpcData, r_min: np.ndarray) -> np.ndarray:
        """``(G, H)`` planned revenue per request of solution ``x``, from the frontier's ``r_min`` and segments."""
        return r_min[:, None] + (x[self.idelta] * data.slopes[:, None, :]).sum(axis=2)

    def slack(self, x: np.ndarray, data: MpcData | None = None) -> np.ndarray:
        """``(G, H)`` load slack of solution ``x`` (cost-per-request units)."""
        return x[self.is_]

    def validate(self, data: MpcData) -> None:
        """Check ``data``'s shapes against the problem's (see :meth:`MpcData.validate`)."""
        data.validate(self.G, self.H, self.J)

    def shift(self, x: np.ndarray) -> np.ndarray:
        """The plan one step later (last step repeated): the warm start."""
        out = x.copy()
        d = x[self.idelta]
        out[self.idelta] = np.concatenate([d[:, 1:], d[:, -1:]], axis=1)
        for idx in (self.iu, self.is_):
            v = x[idx]
            out[idx] = np.concatenate([v[:, 1:], v[:, -1:]], axis=1)
        return out

    def objective_value(self, x: np.ndarray, data: MpcData) -> float:
        """The QP's objective ``x' P x / 2 + q' x`` at ``x`` (for cross-checks between solvers)."""
        P = self.P_matrix(data)
        Pfull = P + sp.triu(P, k=1).T
        return float(0.5 * x @ (Pfull @ x) + self.q_vector(data) @ x)


def frontier_quadratic(u_min: np.ndarray, widths: np.ndarray, slopes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster, the concave quadratic ``R(u) ~ R(u_min) + a1 (u - u_min) - a2/2 (u - u_min)^2``
    closest (least squares over the frontier's breakpoints) to the piecewise-linear frontier, with
    ``a1, a2 >= 0`` and a non-negative slope up to ``u_max`` (more compute never earns less)."""
    G = len(u_min)
    a1, a2 = np.zeros(G), np.zeros(G)
    for g in range(G):
        w = widths[g][widths[g] > 0]
        b = slopes[g][widths[g] > 0]
        if w.size == 0:
            continue
        x = np.concatenate([[0.0], np.cumsum(w)])
        r = np.concatenate([[0.0], np.cumsum(w * b)])
        # min ||a1 x - a2 x^2/2 - r||: the 2x2 normal equations (Cramer), then project onto the constraints
        y = -0.5 * x * x
        sxx, sxy, syy, sxr, syr = x @ x, x @ y, y @ y, x @ r, y @ r
        det = sxx * syy - sxy * sxy
        if det <= 1e-12 * max(sxx * syy, 1e-300):
            c1, c2 = float(sxr / max(sxx, 1e-12)), 0.0
        else:
            c1, c2 = float((sxr * syy - syr * sxy) / det), float((syr * sxx - sxr * sxy) / det)
        if c2 < 0:  # convex fit: fall back to the best line
            c1, c2 = float(x @ r / max(x @ x, 1e-12)), 0.0
        c1 = max(c1, 0.0)
        if c1 - c2 * x[-1] < 0:  # slope would turn negative before u_max: flatten at u_max
            c2 = c1 / x[-1]
        a1[g], a2[g] = c1, c2
    return a1, a2


class QuadraticMpcProblem:
    """The fast formulation: the frontier as a fitted concave quadratic, variables ``u`` only.

    ``max sum_gk w_k (qps_k/qps_ref) (a1_g (u - u_min_g) - a2_g/2 (u - u_min_g)^2) - rate penalty``
    subject to ``u_min_g <= u[g,k] <= min(u_max_g, max(u_min_g, (C_m - d) capacity / qps_hi_k))``.
    The load row is a bound: where even ``u_min`` cannot fit (an infeasible spike) the bound
    becomes ``u_min`` and the unavoidable excess ``u_min - cap`` is reported as the slack -- the
    same plan as an infinitely heavy slack penalty, without the LP-like slack variables that slow
    ADMM down. The tracking objective is the same as :class:`MpcProblem`'s.
    """

    def __init__(self, n_clusters: int, horizon: int, objective: str = "revenue", weights: MpcWeights | None = None,
                 u_scale: np.ndarray | None = None):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if horizon < 1 or n_clusters < 1:
            raise ValueError(f"horizon and n_clusters must be >= 1, got {horizon!r}, {n_clusters!r}")
        self.G, self.H, self.J = n_clusters, horizon, None
        self.objective, self.weights = objective, weights or MpcWeights()
        self.u_scale = np.ones(n_clusters) if u_scale is None else np.asarray(u_scale, dtype=float)
        G, H = self.G, self.H
        self.n = G * H
        self.iu = np.arange(self.n).reshape(G, H)
        self.A = sp.identity(self.n, format="csc")
        self.m = self.n
        Dk = sp.diags([np.ones(H), -np.ones(H - 1)], [0, -1], shape=(H, H), format="csc")
        self.D = sp.block_diag([Dk] * G, format="csc")
        self._p0 = None

    def validate(self, data: MpcData) -> None:
        """Check ``data``'s shapes against the problem's (any number of segments)."""
        data.validate(self.G, self.H, data.widths.shape[1])

    def _curvature(self, data: MpcData) -> np.ndarray:
        H = self.H
        if self.objective == "tracking":
            disc = self.weights.alpha ** np.arange(H)
            coef = (data.qps_hi[None, :] / data.capacity[:, None]) / data.target[:, None]
            return 2.0 * disc[None, :] * coef ** 2
        a1, a2 = self._quad(data)
        disc = self.weights.discount ** np.arange(H)
        return (disc * data.qps / data.qps_ref)[None, :] * a2[:, None]

    def _quad(self, data: MpcData) -> tuple[np.ndarray, np.ndarray]:
        key = (id(data.widths), id(data.slopes), id(data.u_min))
        if getattr(self, "_quad_key", None) != key:
            self._quad_key, self._quad_val = key, frontier_quadratic(data.u_min, data.widths, data.slopes)
        return self._quad_val

    def P_matrix(self, data: MpcData) -> sp.csc_matrix:
        """Upper triangle of P: the constant rate-penalty band plus the per-tick curvature diagonal."""
        P0 = self._P0()
        return sp.csc_matrix((self.P_values(data), P0.indices.copy(), P0.indptr.copy()), shape=P0.shape)

    def P_values(self, data: MpcData) -> np.ndarray:
        """The values of :meth:`P_matrix` in its (fixed) sparsity order: OSQP's ``Px`` update."""
        P0 = self._P0()
        values = P0.data.copy()
        values[self._diag_pos] += self._curvature(data).ravel()
        return values

    def _P0(self) -> sp.csc_matrix:
        """The constant part of P's upper triangle (the rate-penalty band), built once."""
        if self._p0 is None:
            w = self.weights.rho if self.objective == "revenue" else self.weights.beta
            rate = np.repeat(2.0 * w / self.u_scale ** 2, self.H)
            P0 = sp.triu((self.D.T @ sp.diags(rate) @ self.D + sp.diags(np.full(self.n, 1e-9))).tocsc(), format="csc")
            P0.sort_indices()
            # position of each diagonal entry in P0.data (the last entry of each column of an upper triangle)
            self._p0, self._diag_pos = P0, P0.indptr[1:] - 1
        return self._p0

    def q_vector(self, data: MpcData) -> np.ndarray:
        """The QP's linear term for this tick's data (OSQP ``q``)."""
        G, H, w = self.G, self.H, self.weights
        rate = w.rho if self.objective == "revenue" else w.beta
        q = np.zeros((G, H))
        q[:, 0] += -2.0 * rate / self.u_scale ** 2 * data.u_prev
        if self.objective == "revenue":
            a1, a2 = self._quad(data)
            disc = w.discount ** np.arange(H)
            wq = (disc * data.qps / data.qps_ref)[None, :]
            q += -wq * (a1 + a2 * data.u_min)[:, None]
        else:
            disc = w.alpha ** np.arange(H)
            coef = (data.qps_hi[None, :] / data.capacity[:, None]) / data.target[:, None]
            q += 2.0 * disc[None, :] * coef * ((data.offset - data.target) / data.target)[:, None]
        return q.ravel()

    def load_cap(self, data: MpcData) -> np.ndarray:
        """``(G, H)`` cost per request at which the planned load reaches ``C_m`` minus the offset."""
        return (data.target - data.offset)[:, None] * data.capacity[:, None] / np.maximum(data.qps_hi[None, :], 1e-9)

    def bounds(self, data: MpcData) -> tuple[np.ndarray, np.ndarray]:
        """Box bounds ``(lo, hi)`` on ``u``: the frontier's range, capped at the load cap."""
        cap = self.load_cap(data)
        lo = np.repeat(data.u_min[:, None], self.H, axis=1)
        hi = np.minimum(data.u_max[:, None], np.maximum(cap, lo))
        return lo.ravel(), hi.ravel()

    def planned_cost(self, x: np.ndarray, data: MpcData) -> np.ndarray:
        """``(G, H)`` planned cost per request ``u`` of solution ``x``."""
        return x.reshape(self.G, self.H)

    def slack(self, x: np.ndarray, data: MpcData) -> np.ndarray:
        """``(G, H)`` planned cost per request above the load cap."""
        return np.maximum(x.reshape(self.G, self.H) - self.load_cap(data), 0.0)

    def shift(self, x: np.ndarray) -> np.ndarray:
        """The plan one step later (last step repeated): the warm start."""
        v = x.reshape(self.G, self.H)
        return np.concatenate([v[:, 1:], v[:, -1:]], axis=1).ravel()

    def objective_value(self, x: np.ndarray, data: MpcData) -> float:
        """The QP's objective ``x' P x / 2 + q' x`` at ``x`` (for cross-checks between solvers)."""
        P = self.P_matrix(data)
        Pfull = P + sp.triu(P, k=1).T
        return float(0.5 * x @ (Pfull @ x) + self.q_vector(data) @ x)
