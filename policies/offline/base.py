"""Common machinery of the sequence models: configuration, fitting, numpy inference.

Constructors store configuration only; :meth:`SequenceModel.fit` returns ``self`` and sets the
learned state (attributes ending in ``_``): ``params_`` (numpy arrays of the network),
``state_mean_``/``state_std_``, ``n_channels_``, ``channel_costs_``, ``history_``.
Inference (:meth:`SequenceModel.outputs`, :meth:`SequenceModel.action_proba`) is numpy only.
"""
from __future__ import annotations

import inspect

import numpy as np

from . import numpy_net
from .journeys import Journeys
from .tokens import build_tokens, state_stats


class SequenceModel:
    """Base class; subclasses choose the architecture, the tokens and the loss."""

    #: architecture switches of :class:`~policies.offline._torch_nets.SequenceNet`
    uses_conv = False
    uses_attention = False

    def __init__(self, d_model=32, n_conv=2, kernel_size=3, n_heads=2, dropout=0.1, penalty=0.0,
                 lr=3e-3, batch_size=64, max_epochs=30, patience=3, val_fraction=0.15,
                 weight_decay=0.0, max_seconds=None, seed=0):
        self.d_model = d_model
        self.n_conv = n_conv
        self.kernel_size = kernel_size
        self.n_heads = n_heads
        self.dropout = dropout
        self.penalty = penalty
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.val_fraction = val_fraction
        self.weight_decay = weight_decay
        self.max_seconds = max_seconds
        self.seed = seed

    # ----- configuration ----------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        names = []
        for klass in cls.__mro__:
            if "__init__" in vars(klass):
                for p in inspect.signature(klass.__init__).parameters.values():
                    if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) \
                            and p.name not in names:
                        names.append(p.name)
        return names

    def get_params(self) -> dict:
        """Constructor parameters (scikit-learn style)."""
        return {k: getattr(self, k) for k in self._param_names()}

    def _arch(self) -> dict:
        return dict(n_conv=self.n_conv if self.uses_conv else 0, attention=self.uses_attention,
                    n_heads=self.n_heads)

    # ----- hooks for subclasses ---------------------------------------------------------------
    def _prepare(self, train: Journeys) -> None:
        """Learn anything besides the network before training (default: nothing)."""

    def _tokens(self, j: Journeys, training: bool) -> np.ndarray:
        return build_tokens(j, self.state_mean_, self.state_std_, self.penalty)

    def _make_loss(self, net):
        """Return ``(loss_fn(net, batch), after_step or None)``."""
        raise NotImplementedError

    # ----- fitting ----------------------------------------------------------------------------
    def build_net(self, in_dim: int, n_channels: int):
        """A fresh torch network of this model's architecture (imports torch)."""
        import torch

        from ._torch_nets import SequenceNet

        torch.manual_seed(self.seed)
        arch = self._arch()
        return SequenceNet(in_dim, n_channels, d_model=self.d_model, n_conv=arch["n_conv"],
                           kernel_size=self.kernel_size, attention=arch["attention"],
                           n_heads=self.n_heads, dropout=self.dropout)

    def _arrays(self, j: Journeys, training: bool) -> dict:
        return {"x": self._tokens(j, training), "actions": j.actions, "rewards": j.rewards,
                "costs": j.costs, "mask": j.mask}

    def fit(self, journeys: Journeys, validation: Journeys | None = None):
        """Train on ``journeys``; early-stop on ``validation`` (default: a user split of it)."""
        from ._torch_nets import params_to_numpy
        from .training import fit_network

        if validation is None:
            train, validation = journeys.split((1 - self.val_fraction, self.val_fraction), self.seed)
        else:
            train = journeys
        self.n_channels_ = journeys.n_channels
        self.state_mean_, self.state_std_ = state_stats(train)
        self.channel_costs_ = train.channel_costs()
        self._prepare(train)
        tr, va = self._arrays(train, True), self._arrays(validation, True)
        net = self.build_net(tr["x"].shape[2], self.n_channels_)
        loss_fn, after_step = self._make_loss(net)
        net, self.history_ = fit_network(
            net, loss_fn, tr, va, lr=self.lr, batch_size=self.batch_size,
            max_epochs=self.max_epochs, patience=self.patience, seed=self.seed,
            weight_decay=self.weight_decay, max_seconds=self.max_seconds, after_step=after_step)
        self.params_ = params_to_numpy(net)
        return self

    # ----- inference (numpy) ------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "params_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")

    def outputs(self, journeys: Journeys) -> tuple[np.ndarray, np.ndarray]:
        """Action logits and reward-head outputs ``[N, T, A]``, numpy only."""
        self._check_fitted()
        if journeys.n_channels != self.n_channels_:
            raise ValueError(f"model has {self.n_channels_} channels, data has {journeys.n_channels}")
        x = self._tokens(journeys, False)
        arch = self._arch()
        return numpy_net.forward(self.params_, x, arch["n_conv"], arch["attention"], arch["n_heads"])

    def action_proba(self, journeys: Journeys) -> np.ndarray:
        """Channel probabilities ``[N, T, A]`` at every step given the logged history."""
        logits, _ = self.outputs(journeys)
        return numpy_net.softmax(logits)
