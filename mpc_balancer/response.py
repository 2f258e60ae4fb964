"""The policy's response to lambda on a recent request sample.

``Response`` runs the policy in use over a request sample and reports the mean *estimated* cost per
request on each cluster and the mean revenue per request *as the policy estimates it*, as a
function of the lambda vector. Controllers read it instead of the plant: it is their model of how
the serving nodes will react to a lambda, and it sees only what :class:`~mpc_balancer.policy.Policy`
exposes.
"""
from __future__ import annotations

import numpy as np

from .policy import checked_cost, checked_response, checked_response_many, take_rows


def check_sample_size(value, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= 1 or None (the whole sample)."""
    if value is not None and not (isinstance(value, (int, np.integer)) and value >= 1):
        raise ValueError(f"{name} must be an integer >= 1 (or None: the whole sample), got {value!r}")


class Response:
    """Mean cost per request (G,) and revenue per request at a lambda, on a fixed request sample.

    Parameters
    ----------
    policy : Policy
    features : (n, d) array
        The request sample (the last tick's requests).
    max_requests : int or None
        Larger samples are cut to this many rows, systematically over the requests ordered by
        the policy's revenue estimate at ``lam`` (request value drives both revenue and cost:
        every value stratum keeps its share, as in the tick's own stratified sample; a random
        subset would add the noise of independent draws).
    lam : (G,) array, optional
        The lambda in force, used to order the requests when the sample is cut.
    """

    def __init__(self, policy, features: np.ndarray, max_requests: int | None = 256, lam: np.ndarray | None = None,
                 rng: np.random.Generator | None = None):
        check_sample_size(max_requests, "max_requests")
        x = np.asarray(features)
        if not (x.dtype == np.float64 and not x.flags.writeable and x.flags.owndata):
            x = np.array(features, dtype=float)  # a private copy: made read-only below
        # else already read-only (the simulator's samples): shared, so the policy's cache of the
        # plant's decision on it answers the first respond
        if max_requests is not None and len(x) > max_requests:
            G = len(policy.clusters)
            _, revenue = checked_response(policy, x, np.full(G, 1e-2) if lam is None else np.asarray(lam, dtype=float))
            rng = rng or np.random.default_rng(0)
            order = np.argsort(revenue, kind="stable")
            x = take_rows(policy, x, order[((np.arange(max_requests) + rng.random()) * (len(x) / max_requests)).astype(np.int64)])
        x.setflags(write=False)  # policies may cache per-request work on a read-only sample
        self.policy, self.features = policy, x
        self.n_evals = 0

    def evaluate(self, lam) -> tuple[np.ndarray, float]:
        """(mean estimated cost per request per cluster, mean estimated revenue per request); a scalar
        ``lam`` applies to every cluster."""
        self.n_evals += 1
        cost, revenue = checked_response(self.policy, self.features, self._lam(lam))
        return cost.mean(axis=0), float(revenue.mean())

    def evaluate_many(self, lams) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`evaluate` at every row of ``lams`` (K, G): mean cost (K, G) and mean revenue (K,),
        the same numbers as K calls, in one call of the policy (see
        :func:`~mpc_balancer.policy.checked_response_many`)."""
        lams = np.asarray(lams, dtype=float)
        self.n_evals += len(lams)
        cost, revenue = checked_response_many(self.policy, self.features, lams)
        return cost.mean(axis=1), revenue.mean(axis=1)

    def cost(self, lam) -> np.ndarray:
        """Mean estimated cost per request of each cluster at ``lam`` (``(G,)``): :meth:`evaluate`'s
        cost, without the revenue estimate where the policy can skip it
        (:func:`~mpc_balancer.policy.checked_cost`)."""
        self.n_evals += 1
        return checked_cost(self.policy, self.features, self._lam(lam)).mean(axis=0)

    def _lam(self, lam) -> np.ndarray:
        """``lam`` as a private ``(G,)`` float array (a scalar applies to every cluster)."""
        lam = np.array(lam, dtype=float)
        G = len(self.policy.clusters)
        return lam if lam.shape == (G,) else np.broadcast_to(lam, (G,)).copy()
