"""A simulated advertising environment with known ground truth.

Users carry static features; each step of a journey has a context (time of day); channels
differ in click rate and cost. The true click probability of showing channel ``a`` to user ``u``
at step ``t`` is

    sigmoid(base_a + x_u . W_a + g_a * sin(2 pi hour_t) + engage * r_{t-1} - fatigue * [a == a_{t-1}])

so the best channel depends on the user, the time and the journey so far. A logged behaviour
policy (a noisy, partly informed softmax with a uniform floor for coverage) generates the offline
journeys. Because the truth is known, any allocation of channels to (user, step) decisions can be
scored by what it would earn (expected clicks), not only by agreement with the logs.
"""
from __future__ import annotations

import numpy as np

from .journeys import Journeys


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class AdEnvironment:
    """Users, channels with different click rates and costs, and a logged behaviour policy.

    Parameters
    ----------
    n_users, horizon : journeys to log and their length.
    channel_costs : cost of one exposure per channel.
    channel_base : base click logit per channel (same length as ``channel_costs``).
    user_dim : number of static user features.
    engage, fatigue : effect of a click / of repeating the channel on the next click logit.
    behaviour_skill : how much of the true user-channel affinity the logging policy uses.
    behaviour_floor : probability mass spread uniformly (coverage of every channel).
    seed : fixes the environment (weights) and the logged journeys.
    """

    def __init__(self, n_users=2000, horizon=20, channel_costs=(1.0, 2.0, 3.0),
                 channel_base=(-2.2, -1.5, -1.0), user_dim=4, engage=0.8, fatigue=0.8,
                 behaviour_skill=0.4, behaviour_floor=0.3, seed=0):
        self.n_users = n_users
        self.horizon = horizon
        self.channel_costs = channel_costs
        self.channel_base = channel_base
        self.user_dim = user_dim
        self.engage = engage
        self.fatigue = fatigue
        self.behaviour_skill = behaviour_skill
        self.behaviour_floor = behaviour_floor
        self.seed = seed

    # ----- ground truth -------------------------------------------------------------------
    def _weights(self):
        rng = np.random.default_rng([self.seed, 1])
        a = len(self.channel_costs)
        w = rng.normal(0.0, 0.9, size=(a, self.user_dim))
        g = rng.normal(0.0, 0.6, size=a)
        v = rng.normal(0.0, 0.9, size=(a, self.user_dim))  # the behaviour policy's own (wrong) view
        return w, g, v

    @property
    def n_channels(self) -> int:
        return len(self.channel_costs)

    def click_logits(self, users, hours, prev_action, prev_reward):
        """True click logits ``[..., A]`` for users ``[..., D]`` and step context ``[...]``."""
        w, g, _ = self._weights()
        base = np.asarray(self.channel_base, dtype=float)
        z = base + users @ w.T + g * np.sin(2 * np.pi * hours)[..., None]
        z = z + self.engage * prev_reward[..., None]
        same = prev_action[..., None] == np.arange(self.n_channels)
        return z - self.fatigue * same

    def click_probs(self, journeys: Journeys) -> np.ndarray:
        """True click probability of every channel at every logged step, ``[N, T, A]``.

        The history (previous channel and click) is the logged one, which is what a policy
        deciding at that step would have seen.
        """
        users = journeys.states[..., : self.user_dim].astype(float)
        hours = journeys.states[..., self.user_dim + 2].astype(float)
        prev_a = np.concatenate([np.full((journeys.n_users, 1), -1), journeys.actions[:, :-1]], axis=1)
        prev_r = np.concatenate([np.zeros((journeys.n_users, 1)), journeys.rewards[:, :-1]], axis=1)
        return _sigmoid(self.click_logits(users, hours, prev_a, prev_r))

    def behaviour_probs(self, users, hours):
        """The logging policy's channel probabilities ``[..., A]``."""
        w, _, v = self._weights()
        skill = self.behaviour_skill
        pref = users @ (skill * w + (1 - skill) * v).T
        pref = pref - pref.max(axis=-1, keepdims=True)
        soft = np.exp(pref) / np.exp(pref).sum(axis=-1, keepdims=True)
        return self.behaviour_floor / self.n_channels + (1 - self.behaviour_floor) * soft

    # ----- logging --------------------------------------------------------------------------
    def generate(self, n_users: int | None = None, seed_offset: int = 0) -> Journeys:
        """Log journeys under the behaviour policy (state = user features, sin/cos and hour)."""
        n = self.n_users if n_users is None else n_users
        rng = np.random.default_rng([self.seed, 2, seed_offset])
        t_len, a_n = self.horizon, self.n_channels
        users = rng.normal(size=(n, self.user_dim))
        hours = np.sort(rng.uniform(0, 1, size=(n, t_len)), axis=1)
        actions = np.zeros((n, t_len), dtype=np.int64)
        rewards = np.zeros((n, t_len), dtype=np.float32)
        prev_a = np.full(n, -1)
        prev_r = np.zeros(n)
        behaviour = self.behaviour_probs(users, hours[:, 0])
        for t in range(t_len):
            p = np.clip(behaviour, 1e-12, None)
            a = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1).clip(0, a_n - 1)
            z = self.click_logits(users, hours[:, t], prev_a, prev_r)
            click = rng.random(n) < _sigmoid(z[np.arange(n), a])
            actions[:, t], rewards[:, t] = a, click
            prev_a, prev_r = a, click.astype(float)
        states = np.concatenate([
            np.repeat(users[:, None, :], t_len, axis=1),
            np.sin(2 * np.pi * hours)[..., None], np.cos(2 * np.pi * hours)[..., None],
            hours[..., None],
        ], axis=2).astype(np.float32)
        costs = np.asarray(self.channel_costs, dtype=np.float32)[actions]
        cols = [f"user_{i}" for i in range(self.user_dim)] + ["hour_sin", "hour_cos", "hour"]
        return Journeys(states, actions, rewards, costs, np.ones((n, t_len), np.float32),
                        a_n, cols, np.arange(n))

    # ----- counterfactual value ------------------------------------------------------------
    def value(self, journeys: Journeys, channels: np.ndarray) -> float:
        """Expected clicks of serving ``channels [N, T]`` (``-1`` = not served) on ``journeys``."""
        probs = self.click_probs(journeys)
        served = (channels >= 0) & journeys.mask.astype(bool)
        idx = np.where(served, channels, 0)
        p = np.take_along_axis(probs, idx[..., None], axis=2)[..., 0]
        return float((p * served).sum())

    def spend(self, journeys: Journeys, channels: np.ndarray) -> float:
        """Total cost of serving ``channels [N, T]`` (``-1`` = not served)."""
        served = (channels >= 0) & journeys.mask.astype(bool)
        costs = np.asarray(self.channel_costs)[np.where(served, channels, 0)]
        return float((costs * served).sum())
