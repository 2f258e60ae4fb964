"""Value networks (torch): AWRQ-Mixer and the baselines DQN, REM, VDN, QMIX.

Every network predicts the *value-normalised* revenue ``q(x, a) = E[revenue | x, a] / v(x)``
(``v = exp(log_value)``, the request value the serving system knows); revenue estimates are
``v * q``. All share two methods:

* ``forward(xn, joint) -> (q_heads (B, K), aux)``: per-head estimates for the logged joint actions
  (``K = 1`` for single-head networks) and whatever the loss needs (per-agent utilities, mixing
  weights);
* ``q_all(xn) -> (B, A)``: the combined estimate for every joint action (evaluation and export).

``xn`` are standardised request features. Agents are the stages; in the multi-agent networks agent
``i`` observes the request and the upstream stages' decisions (never the downstream ones).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..bundle import REQUEST_KINDS
from ..cascade import Cascade
from ..subdecisions import agent_sequences


def _prefix_tree(ids) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Distinct prefixes of token sequences ``ids`` (n, L), depth by depth.

    Entry ``t`` is ``(rep, parent)``: a representative row of every distinct length-``t+1`` prefix
    and the index of its length-``t`` prefix in the previous entry. The GRU runs once per distinct
    prefix (1,288 cells for the ranking agent's 960 sequences instead of 5,760); the sequences'
    final states are ``h[rows]`` with ``rows`` the distinct-prefix index of every full sequence.
    """
    import numpy as np

    ids = np.asarray(ids)
    out, prev_inv = [], None
    for t in range(ids.shape[1]):
        _, rep, inv = np.unique(ids[:, : t + 1], axis=0, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
        parent = np.zeros(len(rep), dtype=np.int64) if prev_inv is None else prev_inv[rep]
        out.append((torch.as_tensor(rep), torch.as_tensor(parent)))
        prev_inv = inv
    out[-1] = out[-1] + (torch.as_tensor(prev_inv),)
    return out


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


class AWRQMixerNet(nn.Module):
    """AWRQ-Mixer: recurrent K-head agent utilities, softplus-monotone hypernetwork mixer.

    Agent ``i``'s utility under head ``k`` is ``Q_i^k(o_i, a_i) = rho_i(x) . u_i^k(a_<=i)``:
    ``rho_i(x) >= 0`` (softplus, ``n_channels`` values) is the agent's reading of the request, and
    ``u_i^k`` is head ``k`` of a GRU run over the agent's ordered sub-decision tokens (upstream
    decisions first, then its own). The mixer is a hypernetwork on the request:
    ``q^k = sum_i w_i(x) Q_i^k + b(x)`` with ``w = softplus(.)`` (SMC; ``abs`` when SMC is ablated,
    as in QMIX), so ``q`` is monotone in every agent's utility. ``head_weights`` (the AW weights,
    a buffer the trainer updates) combine the heads.

    ``request`` chooses the request side (``rho``, ``w``, ``b``): ``"separate"`` (one
    ``n_features -> hidden -> hidden`` MLP per agent reading and one per hypernetwork, five in all)
    or ``"shared"`` (parameter sharing across the agents and the mixer hypernetworks: one
    ``n_features -> hidden -> hidden`` trunk and one linear layer to every agent's ``rho`` channels,
    the mixing weights and the bias; about a fifth of the multiply-adds per request at equal width).
    """

    def __init__(self, cascade: Cascade, n_features: int, hidden: int = 64, embed: int = 16, gru: int = 32,
                 heads: int = 4, channels: int = 2, smc: bool = True, request: str = "separate"):
        super().__init__()
        if request not in REQUEST_KINDS:
            raise ValueError(f"request must be one of {REQUEST_KINDS}, got {request!r}")
        self.n_agents, self.heads, self.channels, self.smc = len(cascade.stage_sizes), heads, channels, smc
        self.request, self.hidden = request, hidden
        seqs = agent_sequences(cascade)
        n_tokens = int(max(s.ids.max() for s in seqs)) + 1
        self._trees = []
        for i, s in enumerate(seqs):
            self.register_buffer(f"ids_{i}", torch.as_tensor(s.ids))
            self.register_buffer(f"vals_{i}", torch.as_tensor(s.values, dtype=torch.float32))
            self.register_buffer(f"prefix_{i}", torch.as_tensor(s.prefix_of_joint))
            self._trees.append(_prefix_tree(s.ids))
        self.embed = nn.Embedding(n_tokens, embed)
        self.grus = nn.ModuleList(nn.GRUCell(embed + 1, gru) for _ in range(self.n_agents))
        self.agent_heads = nn.ModuleList(nn.Linear(gru, heads * channels) for _ in range(self.n_agents))
        if request == "shared":
            self.trunk = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
            self.request_head = nn.Linear(hidden, self.n_agents * channels + self.n_agents + 1)  # [rho_i..., w, b]
        else:
            self.obs = nn.ModuleList(mlp(n_features, hidden, channels) for _ in range(self.n_agents))
            self.hyper_w = mlp(n_features, hidden, self.n_agents)
            self.hyper_b = mlp(n_features, hidden, 1)
        self.register_buffer("head_weights", torch.full((heads,), 1.0 / heads))

    # -- parts ----------------------------------------------------------------------------------
    def agent_tables(self) -> list[torch.Tensor]:
        """Per agent, head outputs for every prefix: (n_prefixes_i, K, J)."""
        out = []
        for i in range(self.n_agents):
            ids, vals = getattr(self, f"ids_{i}"), getattr(self, f"vals_{i}")
            h = None
            for t, (rep, parent, *_) in enumerate(self._trees[i]):  # one GRU step per distinct sequence prefix
                tok = torch.cat([self.embed(ids[rep, t]), vals[rep, t].unsqueeze(-1).to(self.embed.weight.dtype)], dim=-1)
                h = self.grus[i](tok, None if h is None else h[parent])
            out.append(self.agent_heads[i](h[self._tree_rows(i)]).view(-1, self.heads, self.channels))
        return out

    def _tree_rows(self, i: int) -> torch.Tensor:
        return self._trees[i][-1][2]

    def readings(self, xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rho (B, n_agents, J) >= 0, mixing weights w (B, n_agents) >= 0, bias b (B,))."""
        if self.request == "shared":
            n, nJ = self.n_agents, self.n_agents * self.channels
            o = self.request_head(self.trunk(xn))
            rho, raw, b = F.softplus(o[:, :nJ]).view(len(xn), n, self.channels), o[:, nJ:nJ + n], o[:, nJ + n]
        else:
            rho = torch.stack([F.softplus(o(xn)) for o in self.obs], dim=1)
            raw, b = self.hyper_w(xn), self.hyper_b(xn).squeeze(-1)
        w = F.softplus(raw) if self.smc else raw.abs()
        return rho, w, b

    # -- interface ------------------------------------------------------------------------------
    def forward(self, xn: torch.Tensor, joint: torch.Tensor):
        tables = self.agent_tables()
        rho, w, b = self.readings(xn)
        utils = torch.stack([torch.einsum("bj,bkj->bk", rho[:, i], tables[i][getattr(self, f"prefix_{i}")[joint]])
                             for i in range(self.n_agents)], dim=1)  # (B, n_agents, K)
        q_heads = (w.unsqueeze(-1) * utils).sum(1) + b.unsqueeze(-1)
        return q_heads, {"utils": utils, "w": w}

    def action_profiles(self) -> torch.Tensor:
        """Head-combined action side for every joint action: (A, n_agents * J)."""
        tables = self.agent_tables()
        cols = [torch.einsum("k,nkj->nj", self.head_weights, t)[getattr(self, f"prefix_{i}")] for i, t in enumerate(tables)]
        return torch.cat(cols, dim=1)

    def request_profiles(self, xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z (B, n_agents * J) = w_i * rho_i >= 0, bias (B,)): ``q_all = z @ profiles.T + bias``."""
        rho, w, b = self.readings(xn)
        return (w.unsqueeze(-1) * rho).reshape(len(xn), -1), b

    def q_all(self, xn: torch.Tensor) -> torch.Tensor:
        z, b = self.request_profiles(xn)
        return z @ self.action_profiles().T + b.unsqueeze(-1)


class JointQNet(nn.Module):
    """DQN (``heads=1``) and REM (``heads>1``): one agent over the joint action, K heads."""

    def __init__(self, cascade: Cascade, n_features: int, hidden: int = 128, heads: int = 1):
        super().__init__()
        self.heads, self.n_actions = heads, cascade.n_actions
        self.net = mlp(n_features, hidden, heads * cascade.n_actions)

    def _all_heads(self, xn):
        return self.net(xn).view(len(xn), self.heads, self.n_actions)

    def forward(self, xn, joint):
        q = self._all_heads(xn)
        return q.gather(2, joint.view(-1, 1, 1).expand(-1, self.heads, 1)).squeeze(-1), {}

    def q_all(self, xn):
        return self._all_heads(xn).mean(1)


class FactoredQNet(nn.Module):
    """VDN (``mixer="sum"``) and QMIX (``mixer="qmix"``): per-agent Q over the agent's own actions.

    Agent ``i``'s network reads the request features and one-hot codes of the upstream stages'
    actions and outputs one value per own action. QMIX's mixer is the two-layer hypernetwork with
    ``abs`` weights and an ELU.
    """

    def __init__(self, cascade: Cascade, n_features: int, hidden: int = 64, mixer: str = "sum", embed: int = 16):
        super().__init__()
        if mixer not in ("sum", "qmix"):
            raise ValueError(f"mixer must be 'sum' or 'qmix', got {mixer!r}")
        self.sizes, self.mixer, self.embed = tuple(cascade.stage_sizes), mixer, embed
        self.register_buffer("stage_index", torch.as_tensor(cascade.stage_index))
        self.agents = nn.ModuleList(mlp(n_features + sum(self.sizes[:i]), hidden, n) for i, n in enumerate(self.sizes))
        if mixer == "qmix":
            n = len(self.sizes)
            self.hyper_w1 = mlp(n_features, hidden, n * embed)
            self.hyper_b1 = nn.Linear(n_features, embed)
            self.hyper_w2 = mlp(n_features, hidden, embed)
            self.hyper_b2 = mlp(n_features, hidden, 1)

    def _upstream(self, s: torch.Tensor, i: int) -> list[torch.Tensor]:
        return [F.one_hot(s[..., g], self.sizes[g]).to(torch.float32) for g in range(i)]

    def utilities(self, xn, s):
        """Per-agent utilities (B, n_agents) of stage actions ``s`` (B, n_agents)."""
        out = []
        for i, net in enumerate(self.agents):
            q = net(torch.cat([xn] + self._upstream(s, i), dim=-1))
            out.append(q.gather(-1, s[..., i:i + 1]).squeeze(-1))
        return torch.stack(out, dim=-1)

    def mix(self, xn, utils):
        """``utils`` (B, M, n_agents) -> q (B, M)."""
        if self.mixer == "sum":
            return utils.sum(-1)
        B, n = len(xn), len(self.sizes)
        w1 = self.hyper_w1(xn).abs().view(B, 1, n, self.embed)
        h = F.elu((utils.unsqueeze(-1) * w1).sum(2) + self.hyper_b1(xn).unsqueeze(1))
        return (h * self.hyper_w2(xn).abs().unsqueeze(1)).sum(-1) + self.hyper_b2(xn)

    def forward(self, xn, joint):
        s = self.stage_index[joint]
        utils = self.utilities(xn, s)
        return self.mix(xn, utils.unsqueeze(1)), {"utils": utils}

    def q_all(self, xn):
        """Each agent is run once per distinct upstream prefix (B x 1, B x 24, B x 192 rows), then mixed."""
        B, s = len(xn), self.stage_index
        cols = []
        for i, net in enumerate(self.agents):
            prefixes = torch.unique(s[:, :i], dim=0) if i else s[:1, :0]  # (n_prefix, i), lexicographic
            P = len(prefixes)
            up = [F.one_hot(prefixes[:, g], self.sizes[g]).to(xn.dtype) for g in range(i)]
            inp = torch.cat([xn.unsqueeze(1).expand(B, P, xn.shape[1])] + [u.unsqueeze(0).expand(B, P, -1) for u in up], -1)
            out = net(inp)  # (B, P, n_i)
            pid = torch.zeros(len(s), dtype=torch.int64)
            for g in range(i):
                pid = pid * self.sizes[g] + s[:, g]
            cols.append(out[:, pid, s[:, i]])  # (B, A)
        return self.mix(xn, torch.stack(cols, dim=-1))


def build_network(algo: str, cascade: Cascade, n_features: int, **kw) -> nn.Module:
    """The network of ``algo`` (``awrq``, ``dqn``, ``rem``, ``vdn``, ``qmix``)."""
    if algo == "awrq":
        return AWRQMixerNet(cascade, n_features, **kw)
    if algo in ("dqn", "rem"):
        return JointQNet(cascade, n_features, **kw)
    if algo in ("vdn", "qmix"):
        return FactoredQNet(cascade, n_features, mixer="sum" if algo == "vdn" else "qmix", **kw)
    raise ValueError(f"unknown algorithm {algo!r}")
