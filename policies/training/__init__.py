"""Offline training of the per-request value models (torch, imported lazily inside ``fit``).

``ValueModel(algo).fit(logs)`` trains AWRQ-Mixer or a baseline (QMIX, VDN, REM, DQN) on logged
data; :func:`~policies.training.export.export_bundle` writes an AWRQ-Mixer as a runtime bundle.
Importing this package does not import torch.
"""
from .value_model import ABLATIONS, ALGOS, ValueModel

__all__ = ["ABLATIONS", "ALGOS", "ValueModel"]
