"""Agents' ordered sub-decisions as token sequences (numpy; shared by training and the runtime).

Agent ``i`` (stage ``i``: retrieval, pre-ranking, ranking) observes what the upstream stages
decided and then makes its own sub-decisions in a fixed order (retrieval: channels, queue,
switch; pre-ranking: queue, model; ranking: queue). Its recurrent Q network reads that ordered
sequence of sub-decision tokens. A token is a sub-decision value: an id into an embedding table
and its numeric value scaled to [0, 1] by ``log1p(value) / log1p(max value)``.

Every agent's sequence is determined by the *prefix* of the joint action up to that agent, so the
agent's action-side encoding is computed once per prefix (24, 192 and 960 prefixes for the default
cascade) and gathered per request.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cascade import Cascade


@dataclass(frozen=True)
class AgentSequences:
    """Token sequences of one agent, one row per prefix of the joint action."""

    ids: np.ndarray  # (n_prefixes, L) int64 token ids
    values: np.ndarray  # (n_prefixes, L) float64 scaled sub-decision values
    prefix_of_joint: np.ndarray  # (A,) the prefix index of every joint action


def token_vocabulary(cascade: Cascade) -> list[tuple[str, str, float]]:
    """(stage, sub-decision, value) of every token id, in order."""
    return [(s.name, k, float(v)) for s in cascade.spec.stages for k, vals in s.sub_actions.items() for v in vals]


def agent_sequences(cascade: Cascade) -> list[AgentSequences]:
    """Sequences for each agent (stage), in stage order."""
    offsets, scale = {}, {}
    nxt = 0
    for s in cascade.spec.stages:
        for k, vals in s.sub_actions.items():
            offsets[(s.name, k)] = nxt
            scale[(s.name, k)] = np.log1p(max(vals)) if max(vals) > 0 else 1.0
            nxt += len(vals)
    stage_tokens = []  # per stage: (n_stage_actions, n_sub) ids and values
    for s, acts in zip(cascade.spec.stages, cascade.stage_actions):
        ids = np.array([[offsets[(s.name, k)] + s.sub_actions[k].index(a[k]) for k in s.sub_actions] for a in acts], dtype=np.int64)
        vals = np.array([[np.log1p(a[k]) / scale[(s.name, k)] for k in s.sub_actions] for a in acts], dtype=np.float64)
        stage_tokens.append((ids, vals))
    out = []
    sizes = cascade.stage_sizes
    for i in range(len(sizes)):
        grids = np.array(np.meshgrid(*[np.arange(n) for n in sizes[: i + 1]], indexing="ij")).reshape(i + 1, -1).T
        ids = np.concatenate([stage_tokens[g][0][grids[:, g]] for g in range(i + 1)], axis=1)
        vals = np.concatenate([stage_tokens[g][1][grids[:, g]] for g in range(i + 1)], axis=1)
        prefix = np.zeros(cascade.n_actions, dtype=np.int64)
        for g in range(i + 1):
            prefix = prefix * sizes[g] + cascade.stage_index[:, g]
        out.append(AgentSequences(ids=ids, values=vals, prefix_of_joint=prefix))
    return out
