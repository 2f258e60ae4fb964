"""Per-decision features and a shared reward model that is none of the compared methods.

:func:`decision_features` is what is known when the channel of step ``t`` is chosen: the state
of step ``t`` and the journey's history before ``t`` (previous channel, previous reward, the
shares of each channel among the user's earlier exposures, the step index).

:class:`RewardModel` predicts the reward of every channel at every decision with one
:class:`~policies.offline.gbm.GradientBoostingClassifier` per channel, each fitted on the
decisions where that channel was logged (a "T-learner"). It is the value estimate that the fair
allocator of :mod:`policies.offline.evaluation` uses for every method, and, fitted on the test
users' own logs, the direct-method estimate of what an allocation would earn on real data.
Its counterfactual predictions assume no unobserved confounding (the logged channel depends on
nothing the features miss) and that every channel is logged in the regions it is scored on.
"""
from __future__ import annotations

import numpy as np

from .gbm import GradientBoostingClassifier
from .journeys import Journeys
from .tokens import shifted


def history_features(j: Journeys) -> np.ndarray:
    """History before each step ``[N, T, 2A + 3]``.

    Columns: one-hot of the previous channel with a "start" slot (``A + 1``), the previous
    reward, the share of each channel among the earlier exposures of the journey (``A``, zeros
    at ``t = 0``), and the step index ``t``.
    """
    a_n = j.n_channels
    valid = j.mask.astype(bool)
    prev_a = shifted(np.where(valid, j.actions, a_n), a_n)
    prev_onehot = np.eye(a_n + 1, dtype=np.float32)[prev_a]
    prev_r = shifted(j.rewards * j.mask, 0.0)[..., None]
    onehot = np.eye(a_n + 1, dtype=np.float32)[np.where(valid, j.actions, a_n)][..., :a_n]
    before = np.cumsum(onehot, axis=1) - onehot
    t = np.arange(j.horizon, dtype=np.float32)[None, :, None]
    shares = before / np.maximum(t, 1.0)
    steps = np.broadcast_to(t, prev_r.shape)
    return np.concatenate([prev_onehot, prev_r, shares, steps], axis=2).astype(np.float32)


def decision_features(j: Journeys, history: bool = True) -> np.ndarray:
    """Features of the valid decisions ``[n_valid, D (+ 2A + 3)]``, in ``mask`` order."""
    valid = j.mask.astype(bool)
    parts = [j.states[valid]]
    if history:
        parts.append(history_features(j)[valid])
    return np.concatenate(parts, axis=1).astype(float)


class RewardModel:
    """Reward of every channel at every decision, one gradient-boosting model per channel.

    Parameters
    ----------
    n_trees, learning_rate, max_depth, min_leaf : passed to
        :class:`~policies.offline.gbm.GradientBoostingClassifier`.
    seed : int
        Seed of the boosting.

    Notes
    -----
    Rewards must be 0/1 (clicks). A channel logged with a single reward value (or never) gets a
    constant prediction: its smoothed logged rate (prior 0.5 with weight 1).
    """

    def __init__(self, n_trees: int = 80, learning_rate: float = 0.1, max_depth: int = 3,
                 min_leaf: int = 20, seed: int = 0):
        self.n_trees = n_trees
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_leaf = min_leaf
        self.seed = seed

    def fit(self, j: Journeys) -> RewardModel:
        """Fit on the logged decisions of ``j``; returns ``self``."""
        valid = j.mask.astype(bool)
        r = j.rewards[valid].astype(float)
        if not np.isin(r, (0.0, 1.0)).all():
            raise ValueError("RewardModel: rewards must be 0/1 (clicks)")
        x, a = decision_features(j), j.actions[valid]
        self.n_channels_ = j.n_channels
        self.models_ = []
        for ch in range(j.n_channels):
            sel = a == ch
            if sel.sum() >= 2 * self.min_leaf and 0 < r[sel].mean() < 1:
                m = GradientBoostingClassifier(self.n_trees, self.learning_rate, self.max_depth,
                                               min_leaf=self.min_leaf, seed=self.seed)
                self.models_.append(m.fit(x[sel], r[sel]))
            else:
                self.models_.append(float((r[sel].sum() + 0.5) / (sel.sum() + 1.0)))
        return self

    def predict(self, j: Journeys) -> np.ndarray:
        """Predicted reward of every channel at the valid decisions ``[n_valid, A]``."""
        if not hasattr(self, "models_"):
            raise RuntimeError("RewardModel is not fitted; call fit() first")
        if j.n_channels != self.n_channels_:
            raise ValueError(f"RewardModel has {self.n_channels_} channels, data has {j.n_channels}")
        x = decision_features(j)
        return np.stack([m.predict_proba(x) if isinstance(m, GradientBoostingClassifier)
                         else np.full(len(x), m) for m in self.models_], axis=1)
