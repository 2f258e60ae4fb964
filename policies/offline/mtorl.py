"""MTORL: multi-task offline RL for channel recommendation (Liu et al., KDD 2025).

Token t = (previous channel, previous penalised reward ``r - s * cost``, current state) ->
dilated causal temporal convolutions (the causal state encoder) -> causal self-attention (mask
applied last) -> two heads: the next channel (softmax over channels) and the reward of each
channel at this step. The loss is ``action_weight * CE(channel) + reward_weight * BCE(reward at
the logged channel)``, with the cross-entropy over the channel axis. Training stops early on the
validation loss. Inference is numpy (:mod:`policies.offline.numpy_net`).
"""
from __future__ import annotations

import numpy as np

from . import numpy_net
from .base import SequenceModel
from .journeys import Journeys


class MTORL(SequenceModel):
    """The MTORL sequence model (see the module docstring); scikit-learn-like.

    Parameters are those of :class:`~policies.offline.base.SequenceModel` plus the loss weights
    ``action_weight`` and ``reward_weight``.
    """

    uses_conv = True
    uses_attention = True

    def __init__(self, action_weight=1.0, reward_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        self.action_weight = action_weight
        self.reward_weight = reward_weight

    def _prepare(self, train: Journeys) -> None:
        r = train.rewards[train.mask.astype(bool)]
        self.reward_kind_ = "bce" if (r.min() >= 0 and r.max() <= 1) else "mse"

    def _make_loss(self, net):
        from ._torch_nets import multitask_loss

        def loss_fn(net, b):
            a_logits, r_out = net(b["x"])
            return multitask_loss(a_logits, r_out, b["actions"], b["rewards"], b["mask"],
                                  self.action_weight, self.reward_weight, self.reward_kind_)

        return loss_fn, None

    def predict_reward(self, journeys: Journeys) -> np.ndarray:
        """Predicted reward of every channel at every step, ``[N, T, A]`` (numpy)."""
        _, r_out = self.outputs(journeys)
        return numpy_net.sigmoid(r_out) if self.reward_kind_ == "bce" else r_out
