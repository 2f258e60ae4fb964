"""Baselines trained on the same journeys as MTORL.

- :class:`BehaviourPolicy`: the logging policy. For agreement metrics it is estimated by the
  channel frequencies of the training logs; for what it earns, it is the logged channels.
- :class:`BehaviourCloning`: a per-step network of the same token (previous channel, previous
  penalised reward, state), channel cross-entropy only.
- :class:`DecisionTransformer`: return-conditioned causal transformer; the token starts with the
  return-to-go; at decision time it is conditioned on a high target return (the 90th percentile
  of per-step return in training) minus the rewards already collected.
- :class:`DiscreteCQL`: conservative Q-learning (Kumar et al., 2020) for discrete channels with a
  Polyak-averaged target network; its channel policy is ``softmax(Q / temperature)``.
"""
from __future__ import annotations

import numpy as np

from . import numpy_net
from .base import SequenceModel
from .journeys import Journeys
from .tokens import build_tokens


def _cloning_loss(self, net):
    """The channel cross-entropy of the logged channels: the loss of every model that clones them
    (behaviour cloning, and the Decision Transformer, which conditions the same loss on the return)."""
    from ._torch_nets import channel_cross_entropy

    def loss_fn(net, b):
        logits, _ = net(b["x"])
        return channel_cross_entropy(logits, b["actions"], b["mask"])

    return loss_fn, None


class BehaviourPolicy:
    """The logging policy (see the module docstring)."""

    def __init__(self, smoothing: float = 1.0):
        self.smoothing = smoothing

    def get_params(self) -> dict:
        return {"smoothing": self.smoothing}

    def fit(self, journeys: Journeys):
        valid = journeys.mask.astype(bool)
        counts = np.bincount(journeys.actions[valid], minlength=journeys.n_channels) + self.smoothing
        self.n_channels_ = journeys.n_channels
        self.channel_freq_ = counts / counts.sum()
        return self

    def action_proba(self, journeys: Journeys) -> np.ndarray:
        """The training channel frequencies at every step ``[N, T, A]``."""
        return np.broadcast_to(self.channel_freq_, journeys.actions.shape + (self.n_channels_,)).copy()


class BehaviourCloning(SequenceModel):
    """Behaviour cloning: a per-step network trained with channel cross-entropy."""

    _make_loss = _cloning_loss


class DecisionTransformer(SequenceModel):
    """Return-conditioned Decision Transformer (causal attention, no convolutions)."""

    uses_attention = True

    def __init__(self, target_quantile=0.9, **kwargs):
        super().__init__(**kwargs)
        self.target_quantile = target_quantile

    def _prepare(self, train: Journeys) -> None:
        lengths = np.maximum(train.mask.sum(axis=1), 1)
        per_step = (train.rewards * train.mask).sum(axis=1) / lengths
        self.target_rate_ = float(np.quantile(per_step, self.target_quantile))
        self.rtg_scale_ = float(max(train.horizon, 1))

    def _rtg(self, j: Journeys, training: bool) -> np.ndarray:
        r = j.rewards * j.mask
        if training:  # realised return-to-go
            rtg = np.flip(np.cumsum(np.flip(r, axis=1), axis=1), axis=1)
        else:  # target return minus what has been collected so far
            past = np.cumsum(r, axis=1) - r
            rtg = self.target_rate_ * j.mask.sum(axis=1, keepdims=True) - past
        return (rtg * j.mask / self.rtg_scale_).astype(np.float32)

    def _tokens(self, j: Journeys, training: bool) -> np.ndarray:
        return build_tokens(j, self.state_mean_, self.state_std_, self.penalty,
                            rtg=self._rtg(j, training))

    _make_loss = _cloning_loss


class DiscreteCQL(SequenceModel):
    """Discrete conservative Q-learning on the per-step token.

    Q is trained on the penalised reward ``r - penalty * cost`` with discount ``gamma``; the CQL
    term ``alpha * (logsumexp_a Q - Q(logged a))`` keeps Q low on channels the logs rarely used.
    """

    def __init__(self, alpha=1.0, gamma=0.5, tau=0.05, temperature=0.1, **kwargs):
        super().__init__(**kwargs)
        self.alpha = alpha
        self.gamma = gamma
        self.tau = tau
        self.temperature = temperature

    def _make_loss(self, net):
        import copy

        import torch

        target = copy.deepcopy(net)
        for p in target.parameters():
            p.requires_grad_(False)

        def loss_fn(net, b):
            _, q = net(b["x"])
            with torch.no_grad():
                target.eval()
                _, q_t = target(b["x"])
                next_v = torch.zeros_like(b["rewards"])
                next_v[:, :-1] = q_t[:, 1:].max(dim=-1).values * b["mask"][:, 1:]
                y = b["rewards"] - self.penalty * b["costs"] + self.gamma * next_v
            a = b["actions"].clamp(min=0).unsqueeze(-1)
            q_a = q.gather(-1, a).squeeze(-1)
            m = b["mask"]
            td = ((q_a - y) ** 2 * m).sum() / m.sum().clamp(min=1)
            cql = ((torch.logsumexp(q, dim=-1) - q_a) * m).sum() / m.sum().clamp(min=1)
            return td + self.alpha * cql

        def after_step(net):
            with torch.no_grad():
                for pt, p in zip(target.parameters(), net.parameters()):
                    pt.mul_(1 - self.tau).add_(self.tau * p)

        return loss_fn, after_step

    def q_values(self, journeys: Journeys) -> np.ndarray:
        """Q of every channel at every step ``[N, T, A]`` (numpy)."""
        return self.outputs(journeys)[1]

    def action_proba(self, journeys: Journeys) -> np.ndarray:
        return numpy_net.softmax(self.q_values(journeys) / self.temperature)
