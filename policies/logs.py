"""Logged data: what a production cascade records while a behaviour policy with exploration serves.

Each logged request carries its state (the request features), the lambda the serving nodes were
given, every agent's observation (request features, lambda, and what the upstream stages produced:
the candidate counts of the funnel), the joint action and each stage's own action, the realised
revenue ``click x bid`` (and its two factors), and the estimated compute spent on each cluster.

The behaviour policy is a previous-generation allocator with exploration: with probability
``1 - epsilon`` it takes the per-request argmax of a *noisy* revenue model (every request weight is
off by a log-normal factor, as an older, cruder value model would be) minus ``lambda . cost`` at a
lambda drawn log-uniformly over the controllers' operating range; with probability ``epsilon`` a
uniformly random joint action. The ground truth is used only to sample rewards, never stored
beyond the realised revenue.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .cascade import Cascade
from .oracle import OraclePolicy


@dataclass(frozen=True)
class BehaviourPolicy:
    """epsilon-greedy around a noisy previous-generation value model, lambda log-uniform."""

    epsilon: float = 0.3
    model_noise: float = 0.5  # sigma of the log-normal error on each revenue weight
    lam_low: float = 1e-3
    lam_high: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if self.model_noise < 0:
            raise ValueError(f"model_noise must be >= 0, got {self.model_noise}")
        if not 0 < self.lam_low <= self.lam_high:
            raise ValueError(f"need 0 < lam_low <= lam_high, got {self.lam_low}, {self.lam_high}")

    def sample(self, cascade: Cascade, features: np.ndarray, rng: np.random.Generator,
               chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        """(joint actions (N,), lambda per request (N, G))."""
        n, G = len(features), len(cascade.clusters)
        lam = np.exp(rng.uniform(np.log(self.lam_low), np.log(self.lam_high), size=(n, G)))
        w = cascade.weights(features) * np.exp(self.model_noise * rng.standard_normal((n, cascade.phi.shape[0])))
        oracle = OraclePolicy(cascade)
        actions = np.empty(n, dtype=np.int64)
        phi, cost, idx = oracle._phi, oracle._cost, oracle._idx
        for s in range(0, n, chunk):
            e = slice(s, s + chunk)
            scores = w[e] @ phi - lam[e] @ cost
            actions[e] = idx[np.argmax(scores, axis=1)]
        explore = rng.random(n) < self.epsilon
        actions[explore] = rng.integers(0, cascade.n_actions, int(explore.sum()))
        return actions, lam


@dataclass
class LoggedData:
    """Arrays of one log, one row per request (see the module docstring)."""

    features: np.ndarray  # (N, F) request state
    lam: np.ndarray  # (N, G) lambda the serving nodes used
    stage_actions: np.ndarray  # (N, 3) each agent's own action index
    joint: np.ndarray  # (N,) joint action index
    funnel: np.ndarray  # (N, 3) candidates produced by retrieval, pre-ranking, ranking
    bid: np.ndarray  # (N,)
    click: np.ndarray  # (N,) 0/1
    revenue: np.ndarray  # (N,) realised revenue = click x bid
    cost: np.ndarray  # (N, G) estimated CPU-ms per cluster

    def __len__(self) -> int:
        return len(self.joint)

    def observations(self, agent: int) -> np.ndarray:
        """Agent ``agent``'s observation: request features, lambda, and upstream stages' output counts."""
        return np.column_stack([self.features, self.lam, self.funnel[:, :agent]])

    def subset(self, index) -> LoggedData:
        """The rows ``index`` of every field."""
        return LoggedData(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def split(self, valid_fraction: float, rng: np.random.Generator) -> tuple[LoggedData, LoggedData]:
        """``(train, valid)``: a random ``valid_fraction`` of the rows held out."""
        perm = rng.permutation(len(self))
        k = int(round(len(self) * valid_fraction))
        return self.subset(perm[k:]), self.subset(perm[:k])


def generate_logs(cascade: Cascade, n: int, seed: int, behaviour: BehaviourPolicy | None = None) -> LoggedData:
    """``n`` logged requests spread over the day, served by ``behaviour`` (default settings)."""
    if n <= 0:
        raise ValueError(f"number of logged requests must be positive, got {n}")
    rng = np.random.default_rng(seed)
    behaviour = behaviour or BehaviourPolicy()
    hours = rng.uniform(0.0, 24.0, n)
    x = cascade.sample_features(n, hours, rng)
    joint, lam = behaviour.sample(cascade, x, rng)
    bid = np.exp(x[:, 0]) / cascade.spec.revenue.base_ctr
    revenue = cascade.realised_revenue(x, joint, rng)
    return LoggedData(features=x, lam=lam, stage_actions=cascade.stage_index[joint], joint=joint,
                      funnel=cascade.funnel[:, joint].T.copy(), bid=bid, click=(revenue > 0).astype(np.float64),
                      revenue=revenue, cost=cascade.cost[:, joint].T.copy())
