"""Side-by-side evaluation of MTORL and the baselines on one data set.

For every seed: split the journeys by user (70% train, 10% validation, 20% test), fit every
method on the same training users, and measure on the test users

- ``channel_auc`` (macro one-vs-rest) and ``macro_f1`` of the channel policy against the logged
  channels, at every valid step given the logged history;
- on simulated data only, what the method's allocation would earn: all test decisions (a user at
  a step) share one budget, ``budget_fraction`` of what the logging policy spent on them;
  ``sim_value_per_budget`` is expected clicks (from the environment's true click model) per unit
  of budget and ``budget_used_pct`` the spend as a percentage of the budget.

How each method allocates: the behaviour policy serves its logged channels to decisions in random
order; behaviour cloning serves its most likely channel in random order (it has no value model);
the Decision Transformer serves its most likely channel under a high target return, most
confident decisions first; CQL and MTORL go through :class:`BudgetAllocator` with their value
estimates (Q, or the reward head with the action head as the channel prior).
"""
from __future__ import annotations

import os
import time

import numpy as np

from .allocation import BudgetAllocator
from .baselines import BehaviourCloning, BehaviourPolicy, DecisionTransformer, DiscreteCQL
from .journeys import Journeys, read_journeys
from .kuairand import load_kuairand
from .metrics import channel_auc, macro_f1
from .mtorl import MTORL
from .sim import AdEnvironment

METHODS = ("behaviour", "behaviour_cloning", "decision_transformer", "cql", "mtorl")
SPLIT = (0.7, 0.1, 0.2)


def load_data(spec: str, seed: int = 0, sim_users: int = 2000) -> tuple[Journeys, AdEnvironment | None]:
    """``kuairand`` (packaged sample), ``sim`` (environment with this seed) or a journey CSV path."""
    if spec == "kuairand":
        return load_kuairand(), None
    if spec == "sim":
        env = AdEnvironment(n_users=sim_users, seed=seed)
        return env.generate(), env
    if not os.path.exists(spec):
        raise FileNotFoundError(f"--data: no such file {spec!r} (expected kuairand, sim or a path)")
    return read_journeys(spec), None


def make_models(seed: int = 0, max_epochs: int = 20, max_seconds: float | None = 60.0,
                penalty: float = 0.1, prior_weight: float = 0.0) -> dict:
    """The methods with the settings used by the evaluation (small, CPU-friendly)."""
    common = dict(seed=seed, max_epochs=max_epochs, max_seconds=max_seconds, penalty=penalty)
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


def allocate(name: str, model, test: Journeys, costs: np.ndarray, budget: float, shares,
             prior_weight: float, seed: int) -> np.ndarray:
    """Channels ``[N, T]`` (-1 = not served) that method ``name`` serves under ``budget``."""
    valid = test.mask.astype(bool)
    n = int(valid.sum())
    rng = np.random.default_rng([seed, 7])
    alloc = BudgetAllocator(budget, shares=shares, prior_weight=prior_weight)
    if name == "behaviour":
        res = alloc.allocate_fixed(test.actions[valid], rng.random(n), costs)
    elif name in ("behaviour_cloning", "decision_transformer"):
        probs = model.action_proba(test)[valid]
        priority = rng.random(n) if name == "behaviour_cloning" else probs.max(axis=1)
        res = alloc.allocate_fixed(probs.argmax(axis=1), priority, costs)
    elif name == "cql":
        res = alloc.allocate(model.q_values(test)[valid], costs)
    elif name == "mtorl":
        res = alloc.allocate(model.predict_reward(test)[valid], costs,
                             prior=model.action_proba(test)[valid])
    else:
        raise ValueError(f"unknown method {name!r}")
    out = np.full(test.actions.shape, -1)
    out[valid] = res.channels
    return out


def evaluate_seed(data: str, seed: int, budget_fraction: float = 0.4, shares=None,
                  prior_weight: float = 0.0, max_epochs: int = 20, max_seconds: float | None = 60.0,
                  methods=METHODS, log=None) -> dict:
    """Metrics of every method for one seed: ``{method: {metric: value}}``."""
    journeys, env = load_data(data, seed)
    train, val, test = journeys.split(SPLIT, seed)
    models = make_models(seed, max_epochs, max_seconds)
    out = {}
    budget = budget_fraction * float((test.costs * test.mask).sum())
    if env is not None and shares == "logged":
        shares = _logged_shares(train, env)
    for name in methods:
        model = models[name]
        t0 = time.perf_counter()
        model.fit(train) if name == "behaviour" else model.fit(train, val)
        row = agreement(model, test)
        row["sim_value_per_budget"] = None
        row["budget_used_pct"] = None
        if env is not None:
            costs = np.asarray(env.channel_costs, dtype=float)
            ch = allocate(name, model, test, costs, budget, shares, prior_weight, seed)
            row["sim_value_per_budget"] = env.value(test, ch) / budget
            row["budget_used_pct"] = 100.0 * env.spend(test, ch) / budget
        out[name] = row
        if log is not None:
            log(f"seed {seed} {name}: {row} ({time.perf_counter() - t0:.1f}s)")
    if env is not None:
        out["_oracle"] = {"sim_value_per_budget": _oracle_value(env, test, budget, shares)}
    return out


def _logged_shares(train: Journeys, env: AdEnvironment) -> np.ndarray:
    valid = train.mask.astype(bool)
    spend = np.bincount(train.actions[valid], weights=train.costs[valid], minlength=env.n_channels)
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
    """Mean over ``seeds`` seeds (0..seeds-1) of every metric, with the spread (std, min, max)."""
    per_seed = [evaluate_seed(data, s, log=log, **kwargs) for s in range(seeds)]
    names = [m for m in per_seed[0] if not m.startswith("_")]
    methods, spread = {}, {}
    for m in names:
        methods[m], spread[m] = {}, {}
        for k in ("channel_auc", "macro_f1", "sim_value_per_budget", "budget_used_pct"):
            vals = [r[m][k] for r in per_seed]
            if vals[0] is None:
                methods[m][k] = None
                continue
            v = np.asarray(vals, dtype=float)
            methods[m][k] = float(v.mean())
            spread[m][k] = {"std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                            "min": float(v.min()), "max": float(v.max()), "per_seed": v.tolist()}
    result = {"data": data, "methods": methods, "seeds": seeds, "spread": spread}
    if "_oracle" in per_seed[0]:
        v = [r["_oracle"]["sim_value_per_budget"] for r in per_seed]
        result["reference"] = {"oracle_value_per_budget": float(np.mean(v))}
    return result
