"""Offline RL for advertising journeys: MTORL, its baselines, budget allocation, evaluation.

Importing this package does not import torch; training functions import it lazily and serving
(:meth:`MTORL.action_proba`, :meth:`MTORL.predict_reward`, :class:`BudgetAllocator`) is numpy.

Modules: :mod:`.journeys` (data format), :mod:`.kuairand` and :mod:`.criteo` (the samples
shipped in ``data/``), :mod:`.sim` (simulated advertising environment), :mod:`.mtorl` (the
model), :mod:`.baselines`, :mod:`.allocation` (budget allocation), :mod:`.gbm` and
:mod:`.reward_model` (gradient boosting: the shared reward model and probe), :mod:`.diagnose`
(is there anything to learn in a data set?), :mod:`.metrics`, :mod:`.evaluation`,
:mod:`.bundle` (npz + JSON save/load).
"""
from .allocation import Allocation, BudgetAllocator
from .baselines import BehaviourCloning, BehaviourPolicy, DecisionTransformer, DiscreteCQL
from .bundle import load_model, save_model
from .criteo import load_criteo
from .errors import JourneyFormatError
from .journeys import Journeys, from_frame, read_journeys
from .kuairand import load_kuairand
from .mtorl import MTORL
from .sim import AdEnvironment

__all__ = [
    "AdEnvironment", "Allocation", "BehaviourCloning", "BehaviourPolicy", "BudgetAllocator",
    "DecisionTransformer", "DiscreteCQL", "JourneyFormatError", "Journeys", "MTORL",
    "from_frame", "load_criteo", "load_kuairand", "load_model", "read_journeys", "save_model",
]
