"""The policy's response to lambda on a recent request sample.

``Response`` runs the policy in use (oracle or learned) over a request sample and reports the mean
*estimated* cost per request on each cluster and the mean expected revenue per request, as a
function of the lambda vector. Controllers read it instead of the plant: it is their model of how
the serving nodes will react to a lambda.
"""
from __future__ import annotations

import numpy as np

from policies.cascade import FEATURES, Cascade


class Response:
    """Mean cost per request (G,) and revenue per request at a lambda, on a fixed request sample."""

    def __init__(self, cascade: Cascade, policy, features: np.ndarray, max_requests: int | None = 256,
                 rng: np.random.Generator | None = None):
        x = np.asarray(features, dtype=float)
        if max_requests is not None and len(x) > max_requests:
            # a systematic sample over the requests sorted by value (the cost's main driver): every
            # value stratum keeps its share, as in the tick's stratified sample; a random subset
            # would bring back the noise of independent draws
            rng = rng or np.random.default_rng(0)
            order = np.argsort(x[:, FEATURES.index("log_value")], kind="stable")
            x = x[order[((np.arange(max_requests) + rng.random()) * (len(x) / max_requests)).astype(np.int64)]]
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
