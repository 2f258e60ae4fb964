"""The cascade model: stages, sub-actions, per-cluster costs and the ground-truth revenue model.

A request passes retrieval -> pre-ranking -> ranking. Each stage is an agent with discrete
sub-actions (MaRCA's released code: retrieval = recall channels x queue length plus a switch,
pre-ranking = queue length x model switch, ranking = queue length); a joint action is one choice
per stage. Each stage runs on its own cluster; ``cost[g, a]`` is the estimated compute (CPU-ms) a
request with joint action ``a`` spends on cluster ``g``.

Ground truth. Expected revenue is linear in a few request weights and non-linear in the action::

    E[revenue | x, a] = sum_k W_k(x) * Phi_k(a)            W >= 0, Phi >= 0

with ``W(x) = v * (1, u, d)`` -- ``v`` the request value (bid x base CTR), ``u`` how much a
high-value user gains from heavier models, ``d`` how much the user gains from channel diversity --
and three action profiles:

* ``Phi_0`` funnel quality: retrieval recall with diminishing returns in the deduplicated candidate
  count, pre-ranking and ranking retention (a heavier pre-ranking model keeps good items better),
  auction depth. Stage queues are capped by what the previous stage delivered, so ranking more
  candidates only pays when retrieval fetched enough.
* ``Phi_1`` heavy pre-ranking model and the extended-retrieval switch (pays for high-``u`` users).
* ``Phi_2`` channel diversity.

Realised revenue for logs is ``bid * click`` with ``click ~ Bernoulli(E[revenue] / bid)``.
Request features ``x = (log v, u, d, sin(hour), cos(hour))`` are sampled with a daily pattern of
request value. Costs depend on the action only; the simulator's plant perturbs them (the
controller's estimate is never exactly the truth).
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .cost_table import CostTable, default_cost_table

DEFAULT_CLUSTERS = ("retrieval", "prerank", "rank")  # the simulated cascade's stage clusters
FEATURES = ("log_value", "user_depth", "diversity_need", "hour_sin", "hour_cos")
N_WEIGHTS = 3


@dataclass(frozen=True)
class StageSpec:
    """One stage (agent): its cluster, its sub-actions and their value grids."""

    name: str
    cluster: str
    sub_actions: dict[str, tuple]

    def actions(self) -> list[dict]:
        """Every combination of the stage's sub-action values, as dicts."""
        keys = list(self.sub_actions)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.sub_actions[k] for k in keys))]

    @property
    def n_actions(self) -> int:
        """Number of the stage's actions."""
        return int(np.prod([len(v) for v in self.sub_actions.values()]))


@dataclass(frozen=True)
class CostParams:
    """Hand-set linear cost model, CPU-ms per request by stage: the fallback used when a spec is built
    with explicit ``costs`` (the default spec uses the measured :class:`CostTable` instead)."""

    retrieval_per_channel: float = 0.15  # fixed cost of querying one recall channel
    retrieval_per_item: float = 0.002  # per candidate fetched per channel
    retrieval_switch: float = 0.80  # extended (ANN) retrieval channel, fixed part
    prerank_base: float = 0.05
    prerank_per_item: tuple = (0.004, 0.012)  # light, heavy model
    rank_base: float = 0.05
    rank_per_item: float = 0.08


@dataclass(frozen=True)
class RevenueParams:
    """Parameters of the simulated ground-truth revenue (recall, channel overlap, pre-ranking sharpness)."""

    recall_scale: float = 120.0  # candidates at which recall reaches 1 - 1/e
    channel_overlap: float = 0.7  # each extra channel adds overlap**k new items
    prerank_sharpness: tuple = (3.0, 6.0)  # light, heavy: how well pre-ranking keeps good items
    rank_sharpness: float = 15.0
    auction_scale: float = 8.0
    auction_depth: float = 0.3  # share of revenue that depends on auction depth
    heavy_gain: float = 0.30
    switch_gain: float = 0.15
    diversity_gain: float = 0.25
    base_ctr: float = 0.05  # E[revenue] / bid at full quality
    value_sigma: float = 0.8  # spread of log request value
    value_daily_amp: float = 0.35  # daily swing of mean log value (evening peak)
    value_peak_hour: float = 20.0


def default_stages() -> tuple[StageSpec, ...]:
    """The three stages of the default cascade: retrieval, pre-ranking, ranking."""
    return (
        StageSpec("retrieval", "retrieval", {"channels": (1, 2, 3, 4), "queue": (50, 150, 450), "switch": (0, 1)}),
        StageSpec("prerank", "prerank", {"queue": (25, 75, 200, 500), "model": (0, 1)}),
        StageSpec("rank", "rank", {"queue": (4, 8, 16, 40, 100)}),
    )


@dataclass(frozen=True)
class CascadeSpec:
    """Configurable cascade. ``CascadeSpec()`` is the default (24 x 8 x 5 = 960 joint actions).

    Costs come from ``cost_table`` (a TestBench-measured :class:`CostTable`; default: the shipped
    ``policies/data/cost_table.json``) or, when ``costs`` is given explicitly, from the linear
    :class:`CostParams` model. Giving both is an error.
    """

    stages: tuple[StageSpec, ...] = field(default_factory=default_stages)
    costs: CostParams | None = None
    revenue: RevenueParams = field(default_factory=RevenueParams)
    cost_table: CostTable | None = None

    def __post_init__(self):
        if self.costs is not None and self.cost_table is not None:
            raise ValueError("give either costs (linear CostParams) or cost_table (measured), not both")
        if self.costs is None and self.cost_table is None:
            object.__setattr__(self, "cost_table", default_cost_table())
        names = [s.name for s in self.stages]
        if names != ["retrieval", "prerank", "rank"]:
            raise ValueError(f"stages must be retrieval, prerank, rank in that order, got {names}")
        need = {"retrieval": {"channels", "queue", "switch"}, "prerank": {"queue", "model"}, "rank": {"queue"}}
        for s in self.stages:
            if set(s.sub_actions) != need[s.name]:
                raise ValueError(f"stage {s.name!r}: sub_actions must be {sorted(need[s.name])}, got {sorted(s.sub_actions)}")
            for k, vals in s.sub_actions.items():
                if len(vals) == 0:
                    raise ValueError(f"stage {s.name!r}: sub-action {k!r} has no values")
                if any((not np.isfinite(v)) or v < 0 for v in vals):
                    raise ValueError(f"stage {s.name!r}: sub-action {k!r} has a negative or non-finite value in {vals}")
                if any(b <= a for a, b in zip(vals, vals[1:])):
                    raise ValueError(f"stage {s.name!r}: sub-action {k!r} values must be strictly increasing, got {vals}")

    @property
    def clusters(self) -> tuple[str, ...]:
        """Cluster names, one per stage, in stage order."""
        return tuple(s.cluster for s in self.stages)

    @classmethod
    def from_dict(cls, d: dict) -> CascadeSpec:
        """The inverse of :meth:`to_dict`."""
        unknown = set(d) - {"stages", "costs", "revenue", "cost_table"}
        if unknown:
            raise ValueError(f"unknown cascade spec keys: {sorted(unknown)}")
        stages = default_stages()
        if "stages" in d:
            stages = tuple(StageSpec(s["name"], s.get("cluster", s["name"]), {k: tuple(v) for k, v in s["sub_actions"].items()})
                           for s in d["stages"])
        costs = _dc_from(CostParams, d["costs"], "costs") if "costs" in d else None
        table = CostTable.from_dict(d["cost_table"]) if "cost_table" in d else None
        return cls(stages=stages, costs=costs, cost_table=table, revenue=_dc_from(RevenueParams, d.get("revenue", {}), "revenue"))

    def to_dict(self) -> dict:
        """The spec as JSON-able values."""
        d = {"stages": [{"name": s.name, "cluster": s.cluster, "sub_actions": {k: list(v) for k, v in s.sub_actions.items()}}
                        for s in self.stages],
             "revenue": _jsonable(asdict(self.revenue))}
        if self.costs is not None:
            d["costs"] = _jsonable(asdict(self.costs))
        else:
            d["cost_table"] = self.cost_table.to_dict()
        return d

    @classmethod
    def from_cost_table(cls, path: str | Path, **kw) -> CascadeSpec:
        """A spec whose costs come from a TestBench cost table file (``testbench fit`` output; a legacy
        file holding only linear ``"cost_params"`` is still accepted)."""
        try:
            table = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:  # ValueError: not UTF-8 or not JSON
            raise ValueError(f"cost table {str(path)!r}: cannot read ({e})") from None
        if isinstance(table, dict) and "cost_params" in table:
            return cls(costs=_dc_from(CostParams, table["cost_params"], "cost_params"), **kw)
        try:
            return cls(cost_table=CostTable.from_dict(table), **kw)
        except ValueError as e:
            raise ValueError(f"{str(path)!r}: {e}") from None


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _dc_from(klass, d: dict, where: str):
    fields = set(klass.__dataclass_fields__)
    unknown = set(d) - fields
    if unknown:
        raise ValueError(f"unknown {where} keys: {sorted(unknown)} (known: {sorted(fields)})")
    vals = {}
    for k, v in d.items():
        v = tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else v
        arr = np.atleast_1d(np.asarray(v, dtype=float))
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"{where}.{k} must be finite and non-negative, got {v!r}")
        vals[k] = v
    return klass(**vals)


class Cascade:
    """Compiled cascade: joint-action tables and the ground-truth revenue model.

    Attributes
    ----------
    actions : list of per-stage action dicts for each joint action
    stage_index : (A, 3) int, the joint action's index within each stage's action list
    cost : (G, A) estimated CPU-ms per request on each cluster
    phi : (K, A) revenue profiles, ``E[rev] = weights(x) @ phi``
    efficient : indices of joint actions not dominated by another (same-or-better phi in every
        profile at same-or-lower cost on every cluster); argmaxes over them equal argmaxes over all
    """

    def __init__(self, spec: CascadeSpec | None = None):
        self.spec = spec or CascadeSpec()
        stage_actions = [s.actions() for s in self.spec.stages]
        self.stage_actions = stage_actions
        self.stage_sizes = tuple(len(a) for a in stage_actions)
        combos = list(itertools.product(*(range(n) for n in self.stage_sizes)))
        self.stage_index = np.array(combos, dtype=np.int64)
        self.actions = [tuple(stage_actions[g][i] for g, i in enumerate(c)) for c in combos]
        self.cost, self.phi, self.funnel = self._tables()
        self.efficient = _efficient_set(self.phi, self.cost)

    # -- structure ---------------------------------------------------------------------------
    @property
    def n_actions(self) -> int:
        """Number of joint actions."""
        return len(self.actions)

    @property
    def clusters(self) -> tuple[str, ...]:
        """Cluster names, in the order of every per-cluster array."""
        return self.spec.clusters

    def compose(self, stage_idx: np.ndarray) -> np.ndarray:
        """Joint action index from per-stage indices (..., 3)."""
        s = np.asarray(stage_idx)
        n1, n2 = self.stage_sizes[1], self.stage_sizes[2]
        return (s[..., 0] * n1 + s[..., 1]) * n2 + s[..., 2]

    def degrade(self, joint: np.ndarray, stage: int) -> np.ndarray:
        """Joint actions with ``stage``'s sub-action replaced by that stage's cheapest one (index 0:
        sub-action values are validated to be increasing, so the first value of each is the cheapest)."""
        s = self.stage_index[joint].copy()
        s[:, stage] = 0
        return self.compose(s)

    def _tables(self):
        c, r = self.spec.costs, self.spec.revenue
        ret = np.array([(a[0]["channels"], a[0]["queue"], a[0]["switch"]) for a in self.actions], dtype=float)
        pre = np.array([(a[1]["queue"], a[1]["model"]) for a in self.actions], dtype=float)
        rnk = np.array([a[2]["queue"] for a in self.actions], dtype=float)
        ch, q, sw = ret.T
        k = ch + sw
        ov = r.channel_overlap
        n_r = q * (1 - ov ** k) / (1 - ov) if ov != 1 else q * k
        model = pre[:, 1].astype(int)
        if model.max() > 1:
            raise ValueError(f"prerank model switch must be 0 or 1, got {sorted(set(model))}")
        n_p = np.minimum(pre[:, 0], n_r)
        n_k = np.minimum(rnk, n_p)
        if self.spec.cost_table is not None:
            cost = self.spec.cost_table.cost_array(ch, q, sw, n_p, model, n_k)
        else:
            cost = np.stack([
                ch * (c.retrieval_per_channel + c.retrieval_per_item * q) + sw * (c.retrieval_switch + c.retrieval_per_item * q),
                c.prerank_base + n_p * np.asarray(c.prerank_per_item)[model],
                c.rank_base + n_k * c.rank_per_item,
            ])
        recall = 1 - np.exp(-n_r / r.recall_scale)
        keep_p = 1 - (1 - n_p / np.maximum(n_r, 1e-9)) ** np.asarray(r.prerank_sharpness)[model]
        keep_k = 1 - (1 - n_k / np.maximum(n_p, 1e-9)) ** r.rank_sharpness
        auction = 1 - r.auction_depth * np.exp(-n_k / r.auction_scale)
        base = recall * keep_p * keep_k * auction
        phi = np.stack([base, base * (r.heavy_gain * model + r.switch_gain * sw), base * r.diversity_gain * (ch - 1) / 3.0])
        funnel = np.stack([n_r, n_p, n_k])
        return cost, phi, funnel

    # -- requests ----------------------------------------------------------------------------
    def sample_features(self, n: int, hour: float | np.ndarray, rng: np.random.Generator,
                        stratified: bool = False) -> np.ndarray:
        """``n`` request feature rows at ``hour`` of day (scalar or per-row array).

        ``stratified=True`` draws the three underlying variates (value, engagement, diversity) as a
        Latin hypercube: each variate's ``n`` values cover its ``n`` equal-probability strata once, in
        random order. The rows are still random requests of the same distribution, but the mean
        cost of a sample of ``n`` stands for the mean over all arrivals far better than ``n``
        independent draws (the value's spread, which drives the cost, no longer shifts it).
        """
        r = self.spec.revenue
        hour = np.broadcast_to(np.asarray(hour, dtype=float), (n,))
        mu = r.value_daily_amp * np.cos(2 * np.pi * (hour - r.value_peak_hour) / 24.0)
        if stratified:
            from scipy.special import ndtri

            # a Latin hypercube: stratum permutation + uniform jitter inside each stratum, per variate
            q = (rng.permuted(np.tile(np.arange(n), (3, 1)), axis=1).T + rng.random((n, 3))) / n
            q = np.clip(q, np.finfo(float).tiny, np.nextafter(1.0, 0.0))  # never exactly 0 or 1 (infinite normals)
            z1, z2, d = ndtri(q[:, 0]), ndtri(q[:, 1]), _beta23_ppf(q[:, 2])
        else:
            z1, z2, d = rng.standard_normal(n), rng.standard_normal(n), rng.beta(2.0, 3.0, n)
        logv = mu + r.value_sigma * z1
        u = 1.0 / (1.0 + np.exp(-(1.2 * logv + 0.6 * z2)))
        ang = 2 * np.pi * hour / 24.0
        return np.column_stack([logv, u, d, np.sin(ang), np.cos(ang)])

    def weights(self, features: np.ndarray) -> np.ndarray:
        """Ground-truth revenue weights ``W(x)`` (N, K), all >= 0."""
        x = _check_features(features)
        v = np.exp(x[:, 0])
        return np.column_stack([v, v * x[:, 1], v * x[:, 2]])

    def expected_revenue(self, features: np.ndarray, joint: np.ndarray) -> np.ndarray:
        """E[revenue] per request of ``features (N, d)`` at joint actions ``joint (N,)`` (the ground truth)."""
        return self.expected_revenue_w(self.weights(features), joint)

    def expected_revenue_w(self, weights: np.ndarray, joint: np.ndarray) -> np.ndarray:
        """E[revenue] per request from revenue weights ``(N, K)`` and joint actions ``(N,)``."""
        return np.einsum("nk,kn->n", weights, self.phi[:, joint])

    def realised_revenue(self, features: np.ndarray, joint: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """bid x click, click ~ Bernoulli(E[rev] / bid), bid = value / base_ctr."""
        bid = np.exp(_check_features(features)[:, 0]) / self.spec.revenue.base_ctr
        p = np.clip(self.expected_revenue(features, joint) / bid, 0.0, 1.0)
        return bid * (rng.random(len(p)) < p)


# Beta(2, 3)'s CDF is the polynomial F(x) = 6x^2 - 8x^3 + 3x^4 (density 12 x (1-x)^2): its inverse is
# read off a fine table, then polished by Newton steps (scipy's betaincinv is ~30x slower per tick)
def _beta23_cdf(x: np.ndarray) -> np.ndarray:
    return x * x * (6.0 - 8.0 * x + 3.0 * x * x)


_BETA23_X = np.linspace(0.0, 1.0, 4097)
_BETA23_F = _beta23_cdf(_BETA23_X)


def _beta23_ppf(q: np.ndarray) -> np.ndarray:
    # the table look-up in increasing q: np.interp's search then follows its last find (4x faster on
    # a shuffled sample); each value is the same interpolation whatever the order
    order = np.argsort(q)
    x = np.empty_like(q, dtype=float)
    x[order] = np.interp(q[order], _BETA23_F, _BETA23_X)
    # in the end intervals the table is too coarse: the tails' leading terms F ~ 6x^2, 1 - F ~ 4(1-x)^3
    x = np.where(q < _BETA23_F[1], np.sqrt(q / 6.0), x)
    x = np.where(q > _BETA23_F[-2], 1.0 - np.cbrt((1.0 - q) / 4.0), x)
    for _ in range(3):
        f = 12.0 * x * (1.0 - x) ** 2
        step = (_beta23_cdf(x) - q) / np.where(f > 1e-12, f, np.inf)
        x = np.clip(x - step, 0.0, 1.0)
    return x


def _check_features(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=float)
    if x.ndim != 2 or x.shape[1] != len(FEATURES):
        raise ValueError(f"features must have shape (n, {len(FEATURES)}) with columns {FEATURES}, got {x.shape}")
    if not np.all(np.isfinite(x)):
        i = int(np.argwhere(~np.isfinite(x))[0, 0])
        raise ValueError(f"features row {i} is not finite: {x[i].tolist()}")
    return x


def _efficient_set(phi: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Indices of joint actions not weakly dominated (ties keep the lowest index)."""
    A = phi.shape[1]
    keep = np.ones(A, dtype=bool)
    for a in range(A):
        ge = np.all(phi >= phi[:, [a]] - 1e-12, axis=0) & np.all(cost <= cost[:, [a]] + 1e-12, axis=0)
        strict = np.any(phi > phi[:, [a]] + 1e-12, axis=0) | np.any(cost < cost[:, [a]] - 1e-12, axis=0)
        dominated = ge & (strict | (np.arange(A) < a))
        dominated[a] = False
        if dominated.any():
            keep[a] = False
    return np.flatnonzero(keep)
