"""torch modules for the sequence models (training only).

This module imports torch at import time; the rest of the package imports it lazily, inside
training / model-construction functions, so that ``import policies.offline`` and serving (numpy,
see :mod:`policies.offline.numpy_net`) never load torch.

:class:`SequenceNet` is one network with switchable parts, so that MTORL and the baselines share
code and the numpy forward pass:

    token -> Linear -> [dilated causal conv blocks] -> [causal self-attention] -> MLP -> heads

MTORL uses all parts and both heads; the Decision Transformer drops the convolutions; behaviour
cloning and CQL drop both (a per-step MLP of the same token).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class CausalConv(nn.Module):
    """Dilated causal temporal convolution with a residual ReLU block: output t sees inputs <= t."""

    def __init__(self, d_model: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.pad = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(d_model, d_model, kernel_size, dilation=dilation)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # h [B, T, d]
        x = F.pad(h.transpose(1, 2), (self.pad, 0))
        y = self.conv(x).transpose(1, 2)
        return h + self.drop(F.relu(y))


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention whose causal mask is applied last.

    Scores of future keys are set to -inf before the softmax; dropout is applied to the weights;
    then the weights are multiplied by the causal mask, so no dropout rescaling (or anything
    else) can give weight to a future step.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def weights(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention weights ``[B, H, T, T]`` and values ``[B, H, T, dh]``."""
        b, t, d = h.shape
        dh = d // self.n_heads
        q, k, v = self.qkv(h).split(d, dim=-1)
        q, k, v = (x.reshape(b, t, self.n_heads, dh).transpose(1, 2) for x in (q, k, v))
        causal = torch.ones(t, t, dtype=torch.bool, device=h.device).tril()
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
        scores = scores.masked_fill(~causal, float("-inf"))
        w = self.drop(torch.softmax(scores, dim=-1))
        w = w * causal.to(w.dtype)  # the mask, last
        return w, v

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        w, v = self.weights(h)
        out = (w @ v).transpose(1, 2).reshape(b, t, d)
        return h + self.proj(out)


class SequenceNet(nn.Module):
    """Token encoder with an action head (channel logits) and a per-channel reward head."""

    def __init__(self, in_dim: int, n_channels: int, d_model: int = 32, n_conv: int = 2,
                 kernel_size: int = 3, attention: bool = True, n_heads: int = 2,
                 dropout: float = 0.1):
        super().__init__()
        self.inp = nn.Linear(in_dim, d_model)
        self.convs = nn.ModuleList(
            [CausalConv(d_model, kernel_size, 2 ** i, dropout) for i in range(n_conv)])
        self.attn = CausalSelfAttention(d_model, n_heads, dropout) if attention else None
        self.mlp = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)
        self.action_head = nn.Linear(d_model, n_channels)
        self.reward_head = nn.Linear(d_model, n_channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.inp(x))
        for conv in self.convs:
            h = conv(h)
        if self.attn is not None:
            h = self.attn(h)
        return h + self.drop(F.relu(self.mlp(h)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encode(x)
        return self.action_head(h), self.reward_head(h)


def channel_cross_entropy(logits: torch.Tensor, actions: torch.Tensor,
                          mask: torch.Tensor) -> torch.Tensor:
    """Masked mean cross-entropy with the softmax over the CHANNEL axis (the last one).

    ``logits [B, T, A]``, ``actions [B, T]`` (any value on padding), ``mask [B, T]``.
    """
    a = logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, a), actions.clamp(min=0).reshape(-1), reduction="none")
    m = mask.reshape(-1)
    return (ce * m).sum() / m.sum().clamp(min=1.0)


def taken_reward_loss(reward_out: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                      mask: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """Masked loss of the reward head at the logged channel (BCE on logits, or MSE)."""
    out = reward_out.gather(-1, actions.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    if kind == "bce":
        loss = F.binary_cross_entropy_with_logits(out, rewards, reduction="none")
    else:
        loss = (out - rewards) ** 2
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


def multitask_loss(action_logits, reward_out, actions, rewards, mask, action_weight=1.0,
                   reward_weight=1.0, reward_kind="bce"):
    """MTORL's weighted multi-task loss: channel cross-entropy plus reward loss."""
    return (action_weight * channel_cross_entropy(action_logits, actions, mask)
            + reward_weight * taken_reward_loss(reward_out, actions, rewards, mask, reward_kind))


def params_to_numpy(net: nn.Module) -> dict[str, np.ndarray]:
    """The network's parameters as float32 numpy arrays keyed by their state-dict names."""
    return {k: v.detach().cpu().numpy().astype("float32") for k, v in net.state_dict().items()}


def numpy_to_net(net: nn.Module, params: dict) -> nn.Module:
    """Load numpy parameters (as produced by :func:`params_to_numpy`) into ``net``."""
    net.load_state_dict({k: torch.as_tensor(v) for k, v in params.items()})
    return net
