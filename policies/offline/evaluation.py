"""Side-by-side evaluation of MTORL and the baselines on one data set.

For every seed: split the journeys by user (70% train, 10% validation, 20% test), fit every
method on the same training users (early stopping on the validation users: up to
``max_epochs`` epochs, patience ``patience``), and measure on the test users

- ``channel_auc`` (macro one-vs-rest) and ``macro_f1`` of the channel policy against the logged
  channels, at every valid step given the logged history;
- what the method's budget allocation would earn. All test decisions (a user at a step) share
  one budget, ``budget_fraction`` of what the logs spent on them. ``value_per_budget_*`` is the
  expected reward of the served decisions per unit of budget, ``budget_used_pct_*`` the spend as
  a percentage of the budget, each under two allocators:

  ``same``: one allocator for every method. The method's channel policy picks the channel of
  each decision (the logged channel for ``behaviour``, the most likely channel of the others:
  for CQL the argmax of Q, for MTORL its action head); decisions are then selected by
  :meth:`BudgetAllocator.allocate_valued` with the *shared reward model*
  (:class:`~policies.offline.reward_model.RewardModel`, gradient boosting fitted on the same
  training users). Only the channel policy differs between methods.

  ``own``: each method's own allocator. CQL allocates with its Q values, MTORL with its reward
  head (channel and selection, :meth:`BudgetAllocator.allocate`, its action head as the prior);
  the methods without a value estimate (behaviour, behaviour cloning, Decision Transformer) have
  no allocator of their own and use the ``same`` one.

What an allocation earns and spends (``value_estimator`` in the result):

- ``sim``: the environment's true click probabilities and channel costs (exact);
- real data (``criteo``, ``kuairand``, a CSV with 0/1 rewards): the *direct method*. A second
  :class:`RewardModel` is fitted on the test users' own logs (never seen by any method nor by
  the shared model) and its predicted click of the served channel is summed; a channel costs its
  mean logged cost on the training users. Assumptions: the features capture everything that
  drove the logged channel (no unobserved confounding), the reward model extrapolates correctly
  to channels rarely logged for such decisions, and a channel's cost does not depend on the user.
  A CSV with non-binary rewards gets ``None``.
"""
from __future__ import annotations

import os
import time

import numpy as np

from .allocation import BudgetAllocator
from .baselines import BehaviourCloning, BehaviourPolicy, DecisionTransformer, DiscreteCQL
from .criteo import load_criteo
from .journeys import Journeys, read_journeys
from .kuairand import load_kuairand
from .metrics import channel_auc, macro_f1
from .mtorl import MTORL
from .reward_model import RewardModel
from .sim import AdEnvironment

METHODS = ("behaviour", "behaviour_cloning", "decision_transformer", "cql", "mtorl")
SPLIT = (0.7, 0.1, 0.2)


def load_data(spec: str, seed: int = 0, sim_users: int = 2000, split: bool = True) -> tuple[Journeys, AdEnvironment | None]:
    """``kuairand``, ``criteo`` (packaged samples), ``sim`` (environment with this seed) or the path
    of a journey CSV in the format of :mod:`policies.offline.journeys`. With ``split`` (training and
    evaluation), a CSV too small for :data:`SPLIT` is an error (:func:`check_split`)."""
    if spec == "kuairand":
        return load_kuairand(), None
    if spec == "criteo":
        return load_criteo(), None
    if spec == "sim":
        env = AdEnvironment(n_users=sim_users, seed=seed)
        return env.generate(), env
    if not os.path.exists(spec):
        raise FileNotFoundError(
            f"--data: no such file {spec!r} (expected kuairand, criteo, sim or a journey CSV path)")
    journeys = read_journeys(spec)
    if split:
        check_split(journeys, spec)
    return journeys, None


def check_split(journeys: Journeys, source: str, fractions=SPLIT) -> None:
    """Raise ``ValueError`` unless the split by user (train/validation/test, ``fractions``) gives
    every part at least one user.

    Parameters
    ----------
    journeys : Journeys
        The data set.
    source : str
        Where it came from (the ``--data`` path), named in the error.
    fractions : tuple of float
        The split (:data:`SPLIT`).

    Notes
    -----
    The parts' sizes depend on the number of users only (not on the seed). An empty test part has
    no agreement to score (the AUC is undefined, a budget of 0 divides by zero) and an empty
    training part has nothing to fit, so a file of a handful of users is refused up front.
    """
    n = journeys.n_users
    bounds = np.round(np.cumsum(fractions) / np.sum(fractions) * n).astype(int)
    sizes = np.diff(np.concatenate([[0], bounds]))
    if (sizes < 1).any():
        parts = ", ".join(f"{name} {k}" for name, k in zip(("train", "validation", "test"), sizes))
        raise ValueError(f"--data {source}: {n} user(s) split by user into {parts}; every part needs at least "
                         f"one user (give more users)")


MAX_EPOCHS = 100
PATIENCE = 5
MAX_SECONDS = 300.0
VALUE_KEYS = ("value_per_budget_same", "budget_used_pct_same", "value_per_budget_own",
              "budget_used_pct_own")
METRIC_KEYS = ("channel_auc", "macro_f1") + VALUE_KEYS


def make_models(seed: int = 0, max_epochs: int = MAX_EPOCHS, max_seconds: float | None = MAX_SECONDS,
                penalty: float = 0.1, patience: int = PATIENCE) -> dict:
    """The methods, trained until the validation loss stops improving for ``patience`` epochs
    (or ``max_epochs`` / ``max_seconds``)."""
    common = dict(seed=seed, max_epochs=max_epochs, max_seconds=max_seconds, penalty=penalty,
                  patience=patience)
    return {
        "behaviour": BehaviourPolicy(),
        "behaviour_cloning": BehaviourCloning(**common),
        "decision_transformer": DecisionTransformer(**common),
        "cql": DiscreteCQL(**common),
        "mtorl": MTORL(**common),
    }


def agreement(model, test: Journeys) -> dict:
    """Channel AUC and macro-F1 of ``model``'s channel policy on ``test``."""
    probs = model.action_proba(test)
    valid = test.mask.astype(bool)
    p, a = probs[valid], test.actions[valid]
    return {"channel_auc": channel_auc(p, a), "macro_f1": macro_f1(p.argmax(axis=1), a, test.n_channels)}


def policy_channels(name: str, model, test: Journeys) -> np.ndarray:
    """The channel each method's policy picks at the valid test decisions ``[n_valid]``."""
    valid = test.mask.astype(bool)
    if name == "behaviour":
        return test.actions[valid]
    return model.action_proba(test)[valid].argmax(axis=1)


def allocate(name: str, model, test: Journeys, costs: np.ndarray, budget: float, shares,
             shared_values: np.ndarray, allocator: str = "same", prior_weight: float = 0.0) -> np.ndarray:
    """Channels ``[N, T]`` (-1 = not served) that method ``name`` serves under ``budget``.

    ``shared_values [n_valid, A]`` is the shared reward model's prediction; ``allocator`` is
    ``"same"`` or ``"own"`` (see the module docstring).
    """
    if allocator not in ("same", "own"):
        raise ValueError(f"allocator must be 'same' or 'own', got {allocator!r}")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}")
    valid = test.mask.astype(bool)
    alloc = BudgetAllocator(budget, shares=shares, prior_weight=prior_weight)
    if allocator == "own" and name == "cql":
        res = alloc.allocate(model.q_values(test)[valid], costs)
    elif allocator == "own" and name == "mtorl":
        res = alloc.allocate(model.predict_reward(test)[valid], costs,
                             prior=model.action_proba(test)[valid])
    else:
        res = alloc.allocate_valued(policy_channels(name, model, test), shared_values, costs)
    out = np.full(test.actions.shape, -1)
    out[valid] = res.channels
    return out


class _DirectMethod:
    """Value and spend of an allocation on logged data (see the module docstring)."""

    def __init__(self, test: Journeys, costs: np.ndarray, seed: int):
        self.pred = RewardModel(seed=seed).fit(test).predict(test)
        self.costs = costs
        self.valid = test.mask.astype(bool)

    def value(self, test, channels) -> float:
        ch = channels[self.valid]
        served = ch >= 0
        return float(self.pred[np.flatnonzero(served), ch[served]].sum())

    def spend(self, test, channels) -> float:
        ch = channels[self.valid]
        return float(self.costs[ch[ch >= 0]].sum())


def evaluate_seed(data: str, seed: int, budget_fraction: float = 0.4, shares=None,
                  prior_weight: float = 0.0, max_epochs: int = MAX_EPOCHS,
                  max_seconds: float | None = MAX_SECONDS, patience: int = PATIENCE,
                  methods=METHODS, log=None) -> dict:
    """Metrics of every method for one seed: ``{method: {metric: value}}`` and ``_info``."""
    journeys, env = load_data(data, seed)
    train, val, test = journeys.split(SPLIT, seed)
    models = make_models(seed, max_epochs, max_seconds, patience=patience)
    out = {}
    budget = budget_fraction * float((test.costs * test.mask).sum())
    if not budget > 0:
        raise ValueError(f"--data {data}: the test users' logged cost is 0 (every cost is 0?): no budget to allocate "
                         f"(--budget-fraction is a fraction of it)")
    if shares == "logged":
        shares = _logged_shares(train)
    binary = bool(np.isin(journeys.rewards[journeys.mask.astype(bool)], (0.0, 1.0)).all())
    scorer, estimator, shared_values = env, None, None
    if env is not None:
        costs, estimator = np.asarray(env.channel_costs, dtype=float), "sim"
    else:
        costs = train.channel_costs()
        if binary:
            scorer, estimator = _DirectMethod(test, costs, seed), "direct_method"
    if scorer is not None:
        shared_values = RewardModel(seed=seed).fit(train).predict(test)
    for name in methods:
        model = models[name]
        t0 = time.perf_counter()
        model.fit(train) if name == "behaviour" else model.fit(train, val)
        row = agreement(model, test)
        for allocator in ("same", "own"):
            row[f"value_per_budget_{allocator}"] = row[f"budget_used_pct_{allocator}"] = None
            if scorer is None:
                continue
            ch = allocate(name, model, test, costs, budget, shares, shared_values, allocator,
                          prior_weight)
            row[f"value_per_budget_{allocator}"] = scorer.value(test, ch) / budget
            row[f"budget_used_pct_{allocator}"] = 100.0 * scorer.spend(test, ch) / budget
        if hasattr(model, "history_"):
            row["epochs"] = len(model.history_["val"])
            row["best_epoch"] = model.history_["best_epoch"]
        out[name] = row
        if log is not None:
            log(f"seed {seed} {name}: {row} ({time.perf_counter() - t0:.1f}s)")
    out["_info"] = {"value_estimator": estimator, "budget": budget}
    if env is not None:
        out["_info"]["oracle_value_per_budget"] = _oracle_value(env, test, budget, shares)
    return out


def _logged_shares(train: Journeys) -> np.ndarray:
    valid = train.mask.astype(bool)
    spend = np.bincount(train.actions[valid], weights=train.costs[valid], minlength=train.n_channels)
    return spend / spend.sum()


def _oracle_value(env: AdEnvironment, test: Journeys, budget: float, shares) -> float:
    """Value per budget of the allocator fed with the environment's true click probabilities."""
    valid = test.mask.astype(bool)
    res = BudgetAllocator(budget, shares=shares).allocate(
        env.click_probs(test)[valid], np.asarray(env.channel_costs, dtype=float))
    ch = np.full(test.actions.shape, -1)
    ch[valid] = res.channels
    return env.value(test, ch) / budget


def evaluate(data: str, seeds: int = 3, log=None, **kwargs) -> dict:
    """Mean over ``seeds`` seeds (0..seeds-1) of every metric, with the spread (std, min, max,
    per seed) and, for ``value_per_budget_*``, on how many seeds MTORL beats each method."""
    per_seed = [evaluate_seed(data, s, log=log, **kwargs) for s in range(seeds)]
    names = [m for m in per_seed[0] if not m.startswith("_")]
    methods, spread = {}, {}
    for m in names:
        methods[m], spread[m] = {}, {}
        for k in METRIC_KEYS:
            vals = [r[m][k] for r in per_seed]
            if vals[0] is None:
                methods[m][k] = None
                continue
            v = np.asarray(vals, dtype=float)
            methods[m][k] = float(v.mean())
            spread[m][k] = {"std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                            "min": float(v.min()), "max": float(v.max()), "per_seed": v.tolist()}
        if "epochs" in per_seed[0][m]:
            spread[m]["epochs"] = [r[m]["epochs"] for r in per_seed]
    info = [r["_info"] for r in per_seed]
    result = {"data": data, "methods": methods, "seeds": seeds, "spread": spread,
              "value_estimator": info[0]["value_estimator"]}
    if "mtorl" in names and info[0]["value_estimator"] is not None:
        result["mtorl_wins"] = {
            k: {m: int(sum(r["mtorl"][k] > r[m][k] for r in per_seed)) for m in names if m != "mtorl"}
            for k in ("value_per_budget_same", "value_per_budget_own")}
    if "oracle_value_per_budget" in info[0]:
        result["reference"] = {"oracle_value_per_budget": float(np.mean(
            [i["oracle_value_per_budget"] for i in info]))}
    return result
