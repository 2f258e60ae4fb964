"""A rule-based allocation: one joint action for every request, the Static arm's serving side.

A static system does not decide per request: an allocation rule (how many recall channels, how
long each stage's queue, which pre-ranking model) applies to all requests alike and changes only
when the operator's schedule or a downgrade switches to another rule. :class:`UniformRulePolicy`
models that behind the policy slot: for multipliers ``lam`` it takes the rule

    a(lam) = argmax_a  V(a) - lam . cost(a)

for every request, where ``V(a)`` is the mean revenue per request a rule is expected to bring,
read once from a value model's own estimates over a day of requests (what an operator's offline
evaluation of the rules gives), and ``cost`` the cascade's cost table. The lambda only selects the
rule (a stress test bisects it; a downgrade raises it), so a higher lambda never selects a rule
that costs more on that cluster, and the static controller's bisection and ladder apply unchanged.
"""
from __future__ import annotations

import numpy as np

from .oracle import check_lambda
from .sweep import check_lambdas


class UniformRulePolicy:
    """The same joint action for every request; ``value`` (A,) the rules' expected revenue per request."""

    def __init__(self, value: np.ndarray, cost: np.ndarray, clusters: tuple[str, ...]):
        value, cost = np.asarray(value, dtype=float), np.asarray(cost, dtype=float)
        if value.ndim != 1 or cost.ndim != 2 or cost.shape[1] != len(value):
            raise ValueError(f"value must be (A,) and cost (G, A), got {value.shape} and {cost.shape}")
        if not (np.isfinite(value).all() and np.isfinite(cost).all() and cost.min() >= 0):
            raise ValueError("value and cost must be finite, cost >= 0")
        if len(clusters) != cost.shape[0]:
            raise ValueError(f"{len(clusters)} cluster names for a cost table of {cost.shape[0]} clusters")
        self.value, self.cost, self.clusters = value, cost, tuple(clusters)

    @classmethod
    def from_policy(cls, policy, features: np.ndarray) -> UniformRulePolicy:
        """Rules valued by ``policy.predict_revenue`` (a learned runtime's own estimate) averaged
        over ``features``, with the policy's cost table."""
        return cls(policy.predict_revenue(features).mean(axis=0), policy.cost, policy.clusters)

    def rule(self, lam) -> int:
        """The joint action of every request at multipliers ``lam``."""
        lam = check_lambda(lam, self.cost.shape[0])
        return int(np.argmax(self.value - lam @ self.cost))

    def act(self, features, lam) -> np.ndarray:
        return np.full(len(features), self.rule(lam), dtype=np.int64)

    def respond(self, features, lam) -> tuple[np.ndarray, np.ndarray]:
        a = self.rule(lam)
        n = len(features)
        return np.broadcast_to(self.cost[:, a], (n, len(self.clusters))).copy(), np.full(n, self.value[a])

    def respond_many(self, features, lams) -> tuple[np.ndarray, np.ndarray]:
        lams = check_lambdas(lams, self.cost.shape[0])
        a = np.argmax(self.value[None, :] - lams @ self.cost, axis=1)
        n = len(features)
        return np.repeat(self.cost[:, a].T[:, None, :], n, axis=1), np.repeat(self.value[a][:, None], n, axis=1)
