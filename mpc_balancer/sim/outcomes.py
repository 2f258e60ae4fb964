"""What the served requests produced, beyond revenue: impressions, clicks and a GMV proxy.

The A/B test of MaRCA reports revenue, GMV, impressions (ads shown), clicks and CTR. The simulated
cascade's ground truth is expected revenue ``E[rev | x, a] = W(x) . Phi(a)``
(:mod:`policies.cascade`), with ``Phi_0(a)`` the funnel quality in (0, 1] (recall x retention x
auction depth) and realised revenue ``bid x click``, ``click ~ Bernoulli(E[rev] / bid)``. On top of
it, per sampled request of a tick:

* **impression** (an ad is shown) with probability ``Phi_0(a)``: a thin funnel (few candidates
  retrieved, short queues) fills the slot less often;
* **click**, given the impression, with probability ``E[rev] / (bid Phi_0(a))``, so that
  ``P(click) = E[rev] / bid`` as in the cascade (clicks <= impressions by construction: the
  conditional probability is ``base_ctr (1 + u Phi_1/Phi_0 + d Phi_2/Phi_0) <= 1``);
* **GMV proxy** = ``E[rev] x ratio``, a value-to-GMV ratio drawn with the request
  (log-normal, median ``gmv_ratio``, log-sd ``gmv_sigma``): the advertiser's sales per unit of ad
  spend differ between requests, so GMV need not move in step with revenue.

Dropped requests produce nothing. The uniforms behind impressions and clicks and the GMV ratio of
every sampled request come from a generator seeded by ``(seed, tick)`` only, so every arm of a
comparison sees the same draws for the same request (common random numbers): differences between
arms are their actions, not sampling noise. Each sub-tick's counts are scaled by its arrivals over
the sample size, as revenue is in the simulator.
"""
from __future__ import annotations

import numpy as np

from policies.cascade import Cascade

COLUMNS = ("impressions", "clicks", "gmv")
STREAM = 17  # a fixed sub-stream: the simulator's own generator is untouched


class AdOutcomes:
    """Configuration of the outcome model; :meth:`recorder` gives one run's per-tick counter."""

    def __init__(self, cascade: Cascade, seed: int = 0, gmv_ratio: float = 8.0, gmv_sigma: float = 0.5):
        if not (np.isfinite(gmv_ratio) and gmv_ratio > 0):
            raise ValueError(f"gmv_ratio must be > 0, got {gmv_ratio!r}")
        if not (np.isfinite(gmv_sigma) and gmv_sigma >= 0):
            raise ValueError(f"gmv_sigma must be >= 0, got {gmv_sigma!r}")
        self.cascade, self.seed, self.gmv_ratio, self.gmv_sigma = cascade, int(seed), float(gmv_ratio), float(gmv_sigma)

    def draws(self, tick: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(impression uniforms, click uniforms, GMV ratios) of the ``n`` sampled requests of ``tick``."""
        rng = np.random.default_rng([self.seed, STREAM, tick])
        u = rng.random((2, n))
        return u[0], u[1], self.gmv_ratio * np.exp(self.gmv_sigma * rng.standard_normal(n))

    def recorder(self, ticks: int) -> OutcomeRecorder:
        return OutcomeRecorder(self, ticks)


class OutcomeRecorder:
    """Per-tick sums of impressions, clicks and GMV over one run (:meth:`observe` per sub-tick)."""

    def __init__(self, model: AdOutcomes, ticks: int):
        self.model = model
        self.sums = {c: np.zeros(ticks) for c in COLUMNS}
        self._tick, self._draws = None, None

    def observe(self, tick: int, features: np.ndarray, weights: np.ndarray, outcome, arrivals: int) -> None:
        """Add a sub-tick: ``outcome`` (the plant's :class:`~mpc_balancer.sim.plant.TickOutcome`) carries the
        sampled requests' served actions and which were dropped; ``arrivals`` requests arrived in it."""
        n = len(features)
        if n == 0 or arrivals == 0:
            return
        if tick != self._tick:
            self._tick, self._draws = tick, self.model.draws(tick, n)
        u_imp, u_click, ratio = self._draws
        cas = self.model.cascade
        a = outcome.actions
        kept = ~outcome.shed
        rev = cas.expected_revenue_w(weights, a)
        fill = cas.phi[0, a]
        bid = np.exp(features[:, 0]) / cas.spec.revenue.base_ctr
        shown = kept & (u_imp < fill)
        clicked = shown & (u_click * fill * bid < rev)  # u < E[rev] / (bid Phi_0)
        scale = arrivals / n
        self.sums["impressions"][tick] += scale * np.count_nonzero(shown)
        self.sums["clicks"][tick] += scale * np.count_nonzero(clicked)
        self.sums["gmv"][tick] += scale * float(np.dot(rev[kept], ratio[kept]))

    def columns(self) -> dict[str, np.ndarray]:
        return self.sums
