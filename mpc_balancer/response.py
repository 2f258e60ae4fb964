"""The policy's response to lambda on a recent request sample.

``Response`` runs the policy in use (oracle or learned) over a request sample and reports the mean
*estimated* cost per request on each cluster and the mean expected revenue per request, as a
function of the lambda vector. Controllers read it instead of the plant: it is their model of how
the serving nodes will react to a lambda.
"""
from __future__ import annotations

import numpy as np

from policies.cascade import Cascade


class Response:
    """Mean cost per request (G,) and revenue per request at a lambda, on a fixed request sample."""

    def __init__(self, cascade: Cascade, policy, features: np.ndarray, max_requests: int | None = 256,
                 rng: np.random.Generator | None = None):
        x = np.asarray(features, dtype=float)
        if max_requests is not None and len(x) > max_requests:
            rng = rng or np.random.default_rng(0)
            x = x[rng.choice(len(x), max_requests, replace=False)]
        self.cascade, self.policy, self.features = cascade, policy, x
        self.weights = cascade.weights(x)
        self._act = policy.bind(x)  # per-request preprocessing done once, lambda varies
        self.n_evals = 0

    def actions(self, lam) -> np.ndarray:
        self.n_evals += 1
        return self._act(lam)

    def evaluate(self, lam) -> tuple[np.ndarray, float]:
        """(mean estimated cost per request per cluster, mean expected revenue per request)."""
        a = self.actions(lam)
        return self.cascade.cost[:, a].mean(axis=1), float(self.cascade.expected_revenue_w(self.weights, a).mean())

    def cost(self, lam) -> np.ndarray:
        return self.evaluate(lam)[0]
