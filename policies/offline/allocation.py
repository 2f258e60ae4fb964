"""Budget allocation: channel-level re-weighting and user-level selection (numpy).

Given, for ``n`` candidate decisions (a user at a step), the predicted reward of every channel
``rewards [n, A]``, the channel costs and optionally a channel policy ``prior [n, A]``:

1. Each decision picks the channel maximising
   ``rewards[a] + prior_weight * log(prior[a] / max(prior)) - price[a] * cost[a]``, or nothing
   (score 0, cost 0). ``price[a] = s + mu[a]``: ``s`` is the budget's Lagrange multiplier, ``mu``
   the channel-level re-weighting that moves spend to channels with budget share left. For a
   fixed score, the chosen cost is non-increasing in the price, so demand is monotone and ``s``
   is found by bisection.
2. User-level selection: decisions are served in decreasing order of predicted penalised reward
   ``rewards[a] - s * cost[a]`` while they fit the remaining budget of their channel (its share
   of the budget; the whole budget when no shares are given). Spend therefore never exceeds the
   budget nor any channel's share.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..lagrangian import bisect


@dataclass
class Allocation:
    """Result of an allocation: ``channels [n]`` (-1 = not served) and the spend."""

    channels: np.ndarray
    multiplier: float
    channel_prices: np.ndarray
    spend: float
    spend_per_channel: np.ndarray
    budget: float


def _cost_matrix(costs, n, a_n) -> np.ndarray:
    c = np.asarray(costs, dtype=float)
    return np.broadcast_to(c if c.ndim == 2 else c[None, :], (n, a_n))


def choose_channels(rewards: np.ndarray, costs, prices, prior=None, prior_weight=0.0) -> np.ndarray:
    """Channel per decision at the given per-channel prices (``-1`` when nothing scores > 0)."""
    n, a_n = rewards.shape
    c = _cost_matrix(costs, n, a_n)
    score = rewards - np.asarray(prices, dtype=float)[None, :] * c
    if prior is not None and prior_weight > 0:
        p = np.clip(prior, 1e-12, None)
        score = score + prior_weight * np.log(p / p.max(axis=1, keepdims=True))
    best = score.argmax(axis=1)
    return np.where(score[np.arange(n), best] > 0, best, -1)


def demand(rewards, costs, prices, prior=None, prior_weight=0.0) -> np.ndarray:
    """Spend per channel ``[A]`` if every chosen decision were served."""
    n, a_n = rewards.shape
    ch = choose_channels(rewards, costs, prices, prior, prior_weight)
    c = _cost_matrix(costs, n, a_n)
    served = ch >= 0
    spend = c[np.arange(n), np.where(served, ch, 0)] * served
    return np.bincount(np.where(served, ch, 0), weights=spend, minlength=a_n)


def serve_in_order(channels: np.ndarray, priority: np.ndarray, costs, budget: float,
                   caps: np.ndarray | None = None) -> np.ndarray:
    """Serve decisions by decreasing ``priority`` while they fit the budget and their channel cap.

    A decision that does not fit is skipped and cheaper ones further down may still be served.
    """
    channels = np.asarray(channels)
    n = len(channels)
    a_n = int(np.max(channels, initial=0)) + 1 if caps is None else len(caps)
    c = np.asarray(costs, dtype=float)
    idx = np.where(channels >= 0, channels, 0)
    cost = c[np.arange(n), idx] if c.ndim == 2 else c[idx]
    left = np.full(a_n, np.inf) if caps is None else np.asarray(caps, dtype=float).copy()
    total = float(budget)
    out = np.full(n, -1)
    for i in np.argsort(-np.asarray(priority, dtype=float), kind="stable"):
        a = channels[i]
        if a >= 0 and cost[i] <= total + 1e-9 and cost[i] <= left[a] + 1e-9:
            out[i] = a
            left[a] -= cost[i]
            total -= cost[i]
    return out


class BudgetAllocator:
    """Allocate channels to decisions under a budget (see the module docstring).

    Parameters
    ----------
    budget : total spend allowed.
    shares : optional budget share per channel (sums to 1); spend per channel <= share * budget.
    prior_weight : weight of the channel policy's log-probability in the channel choice.
    n_bisect : bisection iterations for a price.
    n_rounds : rounds of channel-level re-weighting when shares are given.
    """

    def __init__(self, budget: float, shares=None, prior_weight: float = 0.0, n_bisect: int = 40,
                 n_rounds: int = 8):
        self.budget = budget
        self.shares = shares
        self.prior_weight = prior_weight
        self.n_bisect = n_bisect
        self.n_rounds = n_rounds

    def _caps(self, a_n: int) -> np.ndarray | None:
        if self.shares is None:
            return None
        sh = np.asarray(self.shares, dtype=float)
        if sh.shape != (a_n,) or np.any(sh < 0) or not np.isclose(sh.sum(), 1.0):
            raise ValueError(f"shares must be {a_n} non-negative numbers summing to 1, got {self.shares}")
        return sh * float(self.budget)

    def _bisect(self, spend_at, target: float, hi: float) -> tuple[float, float]:
        """Smallest price (within ``n_bisect`` halvings of ``[0, hi]``) whose spend is <= target: (lo, hi)."""
        if spend_at(0.0) <= target:
            return 0.0, 0.0
        return bisect(lambda p: spend_at(p) > target, 0.0, hi, iterations=self.n_bisect)

    def allocate(self, rewards: np.ndarray, costs, prior=None) -> Allocation:
        """Allocate; ``rewards [n, A]``, ``costs [A]`` or ``[n, A]``, ``prior [n, A]`` or None."""
        rewards = np.asarray(rewards, dtype=float)
        if rewards.ndim != 2:
            raise ValueError(f"rewards must be [n, channels], got shape {rewards.shape}")
        if self.budget < 0:
            raise ValueError(f"budget must be >= 0, got {self.budget}")
        n, a_n = rewards.shape
        c = _cost_matrix(costs, n, a_n)
        if np.any(c <= 0):
            raise ValueError("channel costs must be positive")
        hi = float(np.max(rewards.max(axis=1, initial=0.0)[:, None] / c, initial=0.0)) + 1.0
        caps = self._caps(a_n)
        kw = dict(prior=prior, prior_weight=self.prior_weight)
        prices = np.zeros(a_n)
        if caps is not None:  # channel-level re-weighting: a price per channel
            for _ in range(self.n_rounds):
                for a in range(a_n):
                    def spend_a(p, a=a):
                        pr = prices.copy()
                        pr[a] = p
                        return demand(rewards, c, pr, **kw)[a]
                    prices[a] = self._bisect(spend_a, caps[a], hi)[1]
        s_lo, s_hi = self._bisect(lambda s: demand(rewards, c, prices + s, **kw).sum(),
                                  float(self.budget), hi)
        s = s_lo  # demand at s_lo may exceed the budget by a little; selection trims it
        ch = choose_channels(rewards, c, prices + s, **kw)
        idx = np.where(ch >= 0, ch, 0)
        penalised = rewards[np.arange(n), idx] - s * c[np.arange(n), idx]
        out = serve_in_order(ch, penalised, c, self.budget, caps)
        return make_allocation(out, c, s, prices, self.budget)

    def allocate_valued(self, channels: np.ndarray, values: np.ndarray, costs) -> Allocation:
        """Serve already-chosen ``channels [n]`` (``-1``: none), selecting decisions by a value
        estimate ``values [n, A]`` with the same rule as :meth:`allocate`.

        Only the chosen channel of a decision is eligible (the others are given value ``-inf``),
        so the multiplier ``s`` is bisected and decisions are served by decreasing
        ``values[chosen] - s * cost[chosen]`` exactly as in :meth:`allocate`: this is how a channel
        policy without a value model of its own is given the same allocator as the others.
        """
        values = np.asarray(values, dtype=float)
        channels = np.asarray(channels)
        if values.ndim != 2 or channels.shape != (len(values),):
            raise ValueError(f"channels [n] and values [n, A] expected, got shapes {channels.shape} "
                             f"and {values.shape}")
        if np.any(channels >= values.shape[1]):
            raise ValueError(f"channels must be < {values.shape[1]}, got {int(channels.max())}")
        masked = np.full(values.shape, -np.inf)
        rows = np.flatnonzero(channels >= 0)
        masked[rows, channels[rows]] = values[rows, channels[rows]]
        return self.allocate(masked, costs)

    def allocate_fixed(self, channels: np.ndarray, priority: np.ndarray, costs) -> Allocation:
        """Serve already-chosen ``channels`` by decreasing ``priority`` under the same budget and
        shares (for policies without a reward model)."""
        channels = np.asarray(channels)
        n = len(channels)
        a_n = int(np.asarray(costs).shape[-1])
        c = _cost_matrix(costs, n, a_n)
        out = serve_in_order(channels, priority, c, self.budget, self._caps(a_n))
        return make_allocation(out, c, 0.0, np.zeros(a_n), self.budget)


def make_allocation(channels, c, s, prices, budget) -> Allocation:
    """Package served ``channels`` with their spend."""
    n, a_n = c.shape
    served = channels >= 0
    idx = np.where(served, channels, 0)
    spend = c[np.arange(n), idx] * served
    per = np.bincount(idx, weights=spend, minlength=a_n)
    return Allocation(channels, float(s), np.asarray(prices, dtype=float), float(spend.sum()), per,
                      float(budget))

