"""The serving runtime (numpy only): a trained AWRQ-Mixer bundle behind the policy slot.

``PolicyRuntime.load("pretrained")`` reads the shipped bundle; ``act(features, lam)`` returns the
joint action of each request, ``bind(features)`` returns ``lam -> actions`` with the per-request
work done once, and ``respond(features, lam)`` is the controllers' view (the policy protocol of
:mod:`mpc_balancer.policy`): each request's estimated cost per cluster and the network's own
revenue estimate ``Rev(x, a*)`` of the chosen action.

The network's estimate of revenue factorises (see :class:`policies.training.nets.AWRQMixerNet`)::

    Rev(x, a) = v(x) * (z(x) . psi(a) + b(x)),     z(x) = concat_i w_i(x) * rho_i(x) >= 0

The action side ``psi(a)`` -- every agent's recurrent utility heads run over its ordered
sub-decisions, combined with the AW head weights -- depends on the action only, so it is computed
once when the bundle loads (numpy GRU). Per request the runtime evaluates the small request-side
networks (``v * z``, ``P = n_agents x channels`` numbers) and takes

    a* = argmax_a  v z(x) . psi(a) - lambda . cost(a)

with ``cost`` the cascade's cost table. This joint argmax is what the agents reach deciding in
stage order, each maximising its value-to-go given its own observation (request, lambda, upstream
decisions) under the learned utilities; the runtime computes it in one vectorised pass instead of
three separate argmaxes, because a greedy per-agent argmax that ignored the downstream agents would
not be exact here (upstream decisions cap downstream queues and costs). Lambda enters every
decision and, since the revenue estimate does not depend on lambda, raising ``lambda_g`` never
raises the chosen actions' cost on cluster ``g``.

Speed: because ``z >= 0`` and ``lambda >= 0``, an action whose ``psi`` is no larger in every
component and whose cost is no smaller on every cluster than another's can never be chosen; those
are dropped at load. For large batches the remaining candidates are further pruned per chunk of
similar requests by score bounds over the chunk's bounding box, alone and relative to one reference
action (see :meth:`PolicyRuntime._grouped_argmax`); nothing is precomputed per lambda, so a new
lambda costs no more than a repeated one, and the argmax stays exact. The request side -- five
separate MLPs or one shared trunk, as the bundle's ``architecture["request"]`` says (bundles without
the key have separate MLPs) -- runs as one fused chain of matrix products
(:meth:`PolicyRuntime._fuse_request_networks`).

Sweeps: ``respond_many(features, lams)`` answers many lambdas on one sample in one call (the MPC's
response curve is 36 of them on a full measurement, 12 on a refresh near the operating point). For a
read-only sample the request profiles, the
lambda-free scores ``z . psi`` of small batches (the chunks and their bounding boxes of large ones)
and the last single decision are cached, so a sweep costs one subtraction and one argmax per lambda
(:mod:`policies.sweep`), a large batch decided at several lambdas (the plant's sub-ticks under the
guard, a bisection) only the bounds and the survivors' scores per lambda, and the controller's
first ``respond`` on the sample the plant just served at the same lambda costs nothing; a cut of a
cached sample (:meth:`PolicyRuntime.take_rows`, the Balancer's tick sample cut to its response
requests) carries its rows' profiles over (the same numbers as profiling the rows afresh where the
BLAS does not depend on the batch's size). Every other path takes
the same floating-point steps as a single decision -- the actions are identical -- but one: a small
batch's sweep (``respond_many`` at several lambdas) scores in float32 (``SWEEP_DTYPE``; 2.7x faster
per lambda on 256 requests), so it may choose another action than the float64 single decision
where two actions' scores tie within float32 rounding (``tests/mpc/test_sweep.py`` bounds both).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import KIND, REQUEST_KINDS, read_bundle
from .cascade import DEFAULT_CLUSTERS
from .oracle import check_lambda
from .sweep import check_lambdas, check_rows, repeat_rows, sweep_argmax


def _softplus(x, out=None, abs_from=None):
    """``log(1 + exp(x))`` as torch computes it (``x`` itself above 20); ``log(1 + .)`` rather than
    ``log1p``: several times faster, and its absolute error is within one rounding of 1. With
    ``abs_from``, rows from that index on get ``|x|`` instead (the mixer without SMC)."""
    if abs_from is not None:
        out = np.array(x) if out is None else out
        np.abs(x[abs_from:], out=out[abs_from:])
        _softplus(x[:abs_from], out=out[:abs_from])
        return out
    big = None
    if x.size and x.max() > 20.0:  # rare: clamp, and keep x itself where it exceeds 20
        big = x > 20.0
        keep = x[big]  # before ``out`` (possibly ``x`` itself) is overwritten
        x = np.minimum(x, 20.0)
    t = np.exp(x, out=out)
    t += 1.0
    np.log(t, out=t)
    if big is not None:
        t[big] = keep
    return t


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _gru_last(p: dict, name: str, seq: np.ndarray) -> np.ndarray:
    """Final hidden state of a torch GRU cell (gates r, z, n) run over ``seq`` (N, L, I) from zero."""
    w_ih, w_hh, b_ih, b_hh = (p[f"{name}.{k}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    H = w_hh.shape[1]
    h = np.zeros((seq.shape[0], H))
    for t in range(seq.shape[1]):
        gi = seq[:, t] @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        r = _sigmoid(gi[:, :H] + gh[:, :H])
        z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        h = (1.0 - z) * n + z * h
    return h


def action_profiles(p: dict, n_agents: int, heads: int, channels: int) -> np.ndarray:
    """``psi`` (A, n_agents * channels): head-combined agent utilities of every joint action."""
    cols = []
    for i in range(n_agents):
        ids, vals = p[f"ids_{i}"].astype(np.int64), p[f"vals_{i}"]
        tok = np.concatenate([p["embed.weight"][ids], vals[..., None]], axis=-1)
        h = _gru_last(p, f"grus.{i}", tok)
        out = (h @ p[f"agent_heads.{i}.weight"].T + p[f"agent_heads.{i}.bias"]).reshape(len(h), heads, channels)
        cols.append(np.einsum("k,nkj->nj", p["head_weights"], out)[p[f"prefix_{i}"].astype(np.int64)])
    return np.concatenate(cols, axis=1)


def check_features(features, names: tuple[str, ...]) -> np.ndarray:
    """``features`` as a float64 (n, len(names)) array of finite values, or a ``ValueError`` naming
    the row and the column."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(f"features must have shape (n, {len(names)}) with columns {names}, got {x.shape}")
    if not np.isfinite(x).all():
        r, c = (int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise ValueError(f"features row {r} is not finite: column {names[c]!r} is {x[r, c]}")
    return x


def _dominance_free(psi: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Indices of actions no other action weakly dominates in (psi >=, cost <=); ties keep the lowest index."""
    A = len(psi)
    keep = np.ones(A, dtype=bool)
    for a in range(A):
        ge = np.all(psi >= psi[a], axis=1) & np.all(cost <= cost[:, [a]], axis=0)
        same = np.all(psi == psi[a], axis=1) & np.all(cost == cost[:, [a]], axis=0)
        ge &= ~same | (np.arange(A) < a)
        ge[a] = False
        keep[a] = not ge.any()
    return np.flatnonzero(keep)


@dataclass(frozen=True)
class _ChunkBoxes:
    """A large batch sorted by scale into chunks, with each chunk's bounding box and the box's score
    bounds without the penalty (see :meth:`PolicyRuntime._grouped_argmax`)."""

    order: np.ndarray  # (n,) the batch's order by scale
    zct: np.ndarray  # (P, C, CHUNK) the request profiles, chunk by chunk (the last padded)
    upper: np.ndarray  # (C, m) an upper bound of every action's score over the chunk
    lower: np.ndarray  # (C, m) a lower bound
    reach: np.ndarray  # (C,) the largest score term in the chunk
    mid: np.ndarray  # (C, P) the box's centre
    rad: np.ndarray  # (C, P) its half-widths
    mid_scores: np.ndarray  # (C, m) the centre's scores


class PolicyRuntime:
    """A trained value model serving ``act(features, lam)``; build with :meth:`load`.

    ``dtype`` is the precision of the per-request argmax (float64 by default; float32 is faster).
    """

    PRUNE_MIN_BATCH = 512  # per-chunk candidate pruning pays off from this batch size on (measured)
    CHUNK = 128  # requests per chunk; 2 x CHUNK from LARGE_BATCH requests on (measured, see :meth:`_chunk_size`)
    LARGE_BATCH = 8192
    GROUPS = 2
    LOOP_CHUNKS = 16  # up to this many chunks with several survivors are scored one by one
    PROFILE_ELEMENTS = 1024 * 325  # request-side chunks hold about this many activations in their widest layer
    SWEEP_DTYPE = np.float32  # a small batch's sweep (respond_many, several lambdas); single decisions in ``dtype``
    SMALL_BATCH = 16  # up to this many rows the block layers run as one stacked product
    CACHED_SAMPLES = 4  # read-only samples whose request-side work is kept (the plant's, the controller's, the last pool)
    CACHED_DECISIONS = 8  # single decisions kept per sample (a tick's central lambda and the node guards' raises)

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict, name: str = "policy", dtype=np.float64, cost=None):
        self.meta, self.name, self.dtype = meta, name, np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype.name}")
        arch = meta["architecture"]
        try:
            p = {k: np.asarray(v, dtype=np.float64) if v.dtype.kind == "f" else v for k, v in arrays.items()}
            self.n_agents, self.heads, self.channels = int(arch["n_agents"]), int(arch["heads"]), int(arch["channels"])
            self.smc = bool(arch["smc"])
            self.request = str(arch.get("request", "separate"))  # bundles before the option: separate MLPs
            if self.request not in REQUEST_KINDS:
                raise ValueError(f"policy bundle {name!r}: metadata architecture.request must be 'separate' or "
                                 f"'shared', got {self.request!r}")
            self.features = tuple(meta["features"])
            self.value_column = self.features.index("log_value")
            self.mean, self.scale = p["feature_mean"], p["feature_scale"]
            self.cost = p["cost"] if cost is None else np.asarray(cost, dtype=np.float64)
            self._p = p
            self.psi = action_profiles(p, self.n_agents, self.heads, self.channels)
            self._fuse_request_networks()
        except (KeyError, ValueError, IndexError) as e:
            if str(e).startswith(f"policy bundle {name!r}"):
                raise
            raise ValueError(f"policy bundle {name!r}: arrays do not match its metadata ({e!r})") from None
        if self.cost.shape != p["cost"].shape or not np.isfinite(self.cost).all() or self.cost.min() < 0:
            raise ValueError(f"policy bundle {name!r}: cost table must be finite, >= 0 and of shape {p['cost'].shape}, "
                             f"got shape {self.cost.shape}")
        if self.psi.shape[0] != self.cost.shape[1] or self.mean.shape != (len(self.features),):
            raise ValueError(f"policy bundle {name!r}: {self.psi.shape[0]} actions in the network but "
                             f"{self.cost.shape[1]} in the cost table, or feature normalisation of the wrong size")
        self.n_actions = self.psi.shape[0]
        self.clusters = tuple(meta.get("clusters", DEFAULT_CLUSTERS))
        if len(self.clusters) != self.cost.shape[0]:
            raise ValueError(f"policy bundle {name!r}: {len(self.clusters)} cluster names for a cost table of "
                             f"{self.cost.shape[0]} clusters")
        self.lambda_range = tuple(meta["lambda_range"])
        self._respond_cache: tuple = ()  # ((read-only features array, entry), ...), the most recent first
        self._cand = _dominance_free(self.psi, self.cost)
        self._set_dtype_tables()

    def _set_dtype_tables(self):
        self._psi_t = np.ascontiguousarray(self.psi[self._cand].T, dtype=self.dtype)
        self._cost_c = self.cost[:, self._cand]
        # for the chunk bounds: psi's positive and negative parts, and its largest magnitude per component
        self._psi_parts = (np.maximum(self._psi_t, 0), np.minimum(self._psi_t, 0), np.abs(self._psi_t).max(axis=1))

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str | Path = "pretrained", dtype=np.float64, cost=None) -> PolicyRuntime:
        """Load a bundle by name (``"pretrained"`` is the shipped one) or path; checks its sha256.

        ``cost`` (G, A) replaces the bundle's cost table (the one it was trained with) by the serving
        system's current estimate, e.g. a TestBench measurement; the value network is unchanged.
        """
        arrays, meta, path = read_bundle(name_or_path)
        if meta["kind"] != KIND:
            raise ValueError(f"policy bundle {str(name_or_path)!r} is a {meta['kind']!r} bundle: load it with "
                             "policies.runtime.load_runtime")
        name = path.stem if str(name_or_path) != "pretrained" else "pretrained"
        return cls(arrays, meta, name=name, dtype=dtype, cost=cost)

    # -- request side ----------------------------------------------------------------------------
    def _check_features(self, features) -> np.ndarray:
        return check_features(features, self.features)

    def _request_networks(self) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """The request-side MLPs as lists of torch-layout ``(weight (out, in), bias)`` layers, ReLU
        between layers; their last layers' outputs, concatenated, are the columns
        ``[rho_0 .. rho_{n-1} (channels each), w (n_agents), b (1)]``."""
        p, n, J = self._p, self.n_agents, self.channels
        if self.request == "shared":  # one trunk, one linear layer to every output
            layers = [(p["trunk.0.weight"], p["trunk.0.bias"]), (p["trunk.2.weight"], p["trunk.2.bias"]),
                      (p["request_head.weight"], p["request_head.bias"])]
            nets = [layers]
        else:  # each agent's reading and the two hypernetworks, separate MLPs
            names = [f"obs.{i}" for i in range(n)] + ["hyper_w", "hyper_b"]
            nets = [[(p[f"{k}.{l}.weight"], p[f"{k}.{l}.bias"]) for l in (0, 2, 4)] for k in names]
        outs = sum(net[-1][0].shape[0] for net in nets)
        if outs != n * J + n + 1 or len({len(net) for net in nets}) != 1:
            raise ValueError(f"request-side networks give {outs} outputs, expected {n * J + n + 1}")
        return nets

    def _fuse_request_networks(self):
        """Fuse the request-side MLPs, which all read the same normalised features, into one chain of
        matrix products over one activation matrix per layer.

        Layer 1 is one dense product (the networks' first layers side by side, the feature
        normalisation folded into its weights); later layers are block-diagonal, one block per
        network, each block one matrix product into its columns of a preallocated output. Biases
        ride in the products: the input carries a column of ones and every hidden block a unit
        that stays 1 (ReLU(1) = 1), so no separate bias pass is needed.
        """
        nets, dt = self._request_networks(), self.dtype
        F = len(self.features)
        inv = 1.0 / self.scale
        first = []
        for net in nets:
            w, b = net[0]
            wa = np.zeros((F + 1, w.shape[0] + 1))
            wa[:F, :-1] = (w * inv[None, :]).T
            wa[F, :-1] = b - w @ (self.mean * inv)
            wa[F, -1] = 1.0
            first.append(wa)
        layers = [[(slice(None), slice(None), np.concatenate(first, axis=1))]]
        n_layers = len(nets[0])
        widths = [wa.shape[1] for wa in first]
        layer_widths = [sum(widths)]
        for l in range(1, n_layers):
            last = l == n_layers - 1
            blocks, i0, o0, new_widths = [], 0, 0, []
            for net, width in zip(nets, widths):
                w, b = net[l]
                wa = np.zeros((width, w.shape[0] + (0 if last else 1)))
                wa[:-1, : w.shape[0]] = w.T
                wa[-1, : w.shape[0]] = b
                if not last:
                    wa[-1, -1] = 1.0
                blocks.append((slice(i0, i0 + width), slice(o0, o0 + wa.shape[1]), wa))
                i0, o0 = i0 + width, o0 + wa.shape[1]
                new_widths.append(wa.shape[1])
            layers.append(blocks)
            widths = new_widths
            layer_widths.append(o0)
        self._layers = [[(i, o, np.ascontiguousarray(w, dtype=dt)) for i, o, w in blocks] for blocks in layers]
        self._widths = layer_widths
        self.PROFILE_CHUNK = max(256, self.PROFILE_ELEMENTS // max(self._widths))
        self._zeros = [np.zeros(w, dtype=dt) for w in self._widths]
        # small batches run a block layer as one call instead of one per block: a hidden layer's alike
        # blocks stacked ((n, 65) @ (5, 65, 65)); the last layer as one block-diagonal matrix
        self._stacked = [np.stack([w for _, _, w in blocks]) if len(blocks) > 1 and len({w.shape for _, _, w in blocks}) == 1
                         else None for blocks in self._layers[:-1]]
        d = np.zeros((self._widths[-2], self._widths[-1]), dtype=dt)
        for i, o, w in self._layers[-1]:
            d[i, o] = w
        self._last_dense = d if len(self._layers[-1]) > 1 else None

    def request_profiles(self, features) -> tuple[np.ndarray, np.ndarray]:
        """(``v z(x)`` (N, P) >= 0, ``v b(x)`` (N,)): the per-request part of the revenue estimate,
        in the runtime's ``dtype``. ``z`` is the transpose of a contiguous (P, N) array: the narrow
        output side (softplus, mixing) runs on long contiguous rows. Large batches run in chunks of
        ``PROFILE_CHUNK`` rows so that the layers' activations stay in cache."""
        x = self._check_features(features)
        N, C = len(x), self.PROFILE_CHUNK
        if N == 0:
            return np.empty((0, self.n_agents * self.channels), dtype=self.dtype), np.empty(0, dtype=self.dtype)
        if N <= C:
            return self._profiles(x)
        zt = np.empty((self.n_agents * self.channels, N), dtype=self.dtype)
        b = np.empty(N, dtype=self.dtype)
        for i in range(0, N, C):
            self._profiles(x[i:i + C], zt[:, i:i + C], b[i:i + C])
        return zt.T, b

    def _profiles(self, x: np.ndarray, zt_out=None, b_out=None) -> tuple[np.ndarray, np.ndarray]:
        N, dt = len(x), self.dtype
        h = np.empty((N, len(self.features) + 1), dtype=dt)
        h[:, :-1] = x
        h[:, -1] = 1.0
        last = len(self._layers) - 1
        small = N <= self.SMALL_BATCH
        for l, blocks in enumerate(self._layers[:-1]):
            stacked = self._stacked[l]
            if small and stacked is not None:
                M, _, H = stacked.shape
                out = (h.reshape(N, M, -1).transpose(1, 0, 2) @ stacked).transpose(1, 0, 2).reshape(N, M * H)
            elif len(blocks) == 1:
                out = h @ blocks[0][2]
            else:
                out = np.empty((N, self._widths[l]), dtype=dt)
                for i, o, w in blocks:
                    np.matmul(h[:, i], w, out=out[:, o])
            np.maximum(out, self._zeros[l], out=out)  # ReLU (a zero row broadcasts faster than a scalar)
            h = out
        # last layer transposed: (outputs, N), each output a contiguous row
        if small and self._last_dense is not None:
            ot = np.ascontiguousarray((h @ self._last_dense).T)
        else:
            ot = np.empty((self._widths[last], N), dtype=dt)
            for i, o, w in self._layers[last]:
                np.matmul(w.T, h[:, i].T, out=ot[o])
        n, J = self.n_agents, self.channels
        nJ = n * J
        sp = ot[:nJ + n]
        _softplus(sp, out=sp, abs_from=None if self.smc else nJ)
        v = np.exp(x[:, self.value_column].astype(dt))
        wv = sp[nJ:]
        wv *= v  # (n, N) mixing weight times value
        zt = zt_out if zt_out is not None else np.empty((nJ, N), dtype=dt)
        np.multiply(sp[:nJ].reshape(n, J, N), wv[:, None, :], out=zt.reshape(n, J, N))
        b = np.multiply(v, ot[nJ + n], out=b_out)
        return zt.T, b

    def predict_revenue(self, features) -> np.ndarray:
        """Estimated revenue of every joint action (N, A)."""
        z, b = self.request_profiles(features)
        return z @ self.psi.T.astype(self.dtype) + b[:, None]

    # -- decisions -------------------------------------------------------------------------------
    def _decide(self, z: np.ndarray, lam, boxes: _ChunkBoxes | None = None) -> np.ndarray:
        lam = check_lambda(lam, self.cost.shape[0])
        pen = (lam @ self._cost_c).astype(self.dtype)
        if len(z) >= self.PRUNE_MIN_BATCH:
            return self._cand[self._grouped_argmax(z, pen, boxes)]
        scores = z @ self._psi_t
        scores -= pen
        return self._cand[np.argmax(scores, axis=1)]

    @staticmethod
    def _scale_order(key: np.ndarray) -> np.ndarray:
        """An ordering of ``key`` > 0 up to ties within 1/65535 of its log range: a radix sort of
        16-bit codes (any order is correct -- it only decides which requests share a chunk)."""
        lk = np.log(np.maximum(key, np.finfo(key.dtype).tiny))
        lo, hi = lk.min(), lk.max()
        lk -= lo
        lk *= 65535.0 / (hi - lo) if hi > lo else 0.0
        return np.argsort(lk.astype(np.uint16), kind="stable")

    def _chunk_size(self, n: int) -> int:
        """Requests per chunk for a batch of ``n``: smaller chunks have tighter boxes (fewer survivors
        to score) but more bounds to compute. One decision, pretrained bundle, CPU ms by chunk size
        128 / 256 / 512: 0.15 / 0.20 / 0.36 at 1000 requests, 0.25 / 0.24 / 0.84 at 4000, 1.67 / 1.22 /
        1.47 at 20000 (``benchmarks/bench_sim.py``'s machine, 2026-11-27)."""
        return self.CHUNK if n < self.LARGE_BATCH else 2 * self.CHUNK

    def _chunk_boxes(self, z: np.ndarray) -> _ChunkBoxes:
        """The lambda-free part of :meth:`_grouped_argmax` for the batch ``z``: its chunks and their
        bounding boxes, the bounds' products with ``psi``. Computed once per read-only sample."""
        n, P = z.shape
        CH = self._chunk_size(n)
        C = -(-n // CH)
        psi_t, (psi_pos, psi_neg, psi_abs_max) = self._psi_t, self._psi_parts
        zt = z.T  # (P, n); contiguous as request_profiles returns it
        order = self._scale_order(np.ones(P, dtype=z.dtype) @ zt)  # by scale (a matrix product sums fastest)
        if C * CH > n:  # pad the last chunk with repeats of the largest request
            order_p = np.concatenate([order, np.repeat(order[-1:], C * CH - n)])
        else:
            order_p = order
        zct = np.take(zt, order_p, axis=1).reshape(P, C, CH)  # each chunk's members a contiguous run
        lo, hi = zct.min(axis=2).T, zct.max(axis=2).T  # (C, P) bounding boxes
        upper = hi @ psi_pos
        upper += lo @ psi_neg
        lower = lo @ psi_pos
        lower += hi @ psi_neg
        mid, rad = (hi + lo) * 0.5, (hi - lo) * 0.5
        return _ChunkBoxes(order=order, zct=zct, upper=upper, lower=lower, reach=hi @ psi_abs_max,
                           mid=mid, rad=rad, mid_scores=mid @ psi_t)

    def _grouped_argmax(self, z: np.ndarray, pen: np.ndarray, boxes: _ChunkBoxes | None = None) -> np.ndarray:
        """Exact ``argmax(z @ psi_t - pen)`` (indices into the candidates) for a large batch, over far fewer candidates per request.

        Requests are sorted by the scale of ``z`` and cut into chunks (:meth:`_chunk_size`). Over a chunk's
        bounding box ``[lo, hi]`` of ``z``, an action's score lies between
        ``lo . psi+ + hi . psi- - pen`` and ``hi . psi+ + lo . psi- - pen`` (``psi+``/``psi-`` the
        positive/negative parts); an action whose upper bound is below the best lower bound in the
        chunk cannot be any member's argmax. Tighter, an action that scores below the best-lower-bound
        action ``r`` everywhere in the box (``max_z z . (psi_a - psi_r) < pen_a - pen_r``) cannot
        either; only the rest are scored. A chunk with one survivor takes it without scoring (the
        common case); up to ``LOOP_CHUNKS`` chunks with several are scored one by one over their own
        survivors, more in ``GROUPS`` groups of similar survivor counts, each padded to its largest
        count (padding repeats a survivor). Survivors stay in index order, so ties resolve as in the
        full argmax.
        """
        n = len(z)
        psi_t = self._psi_t
        bx = self._chunk_boxes(z) if boxes is None else boxes
        C, CH = bx.zct.shape[1:]
        order, zct, mid, rad = bx.order, bx.zct, bx.mid, bx.rad
        upper = bx.upper - pen
        lower = bx.lower - pen
        ref = lower.argmax(axis=1)  # per chunk, the action with the best worst case
        best_lower = lower.max(axis=1, keepdims=True)
        # slack for rounding (it never drops the argmax), relative to the largest term any score in the
        # chunk can hold; the test is written as "not below" so that a chunk whose bounds are NaN (a
        # request whose z overflowed to inf) keeps every action and is scored in full
        magnitude = bx.reach + np.abs(pen).max() + 1.0
        slack = (1e-9 if self.dtype == np.float64 else 1e-4) * magnitude[:, None]
        keep = ~(upper < best_lower - slack)
        # tighter, pairwise: drop a if it scores below ref everywhere in the box, i.e.
        # max_z z . (psi_a - psi_ref) < pen_a - pen_ref (the shared part of the two scores cancels)
        # with mid = (hi + lo) / 2, rad = (hi - lo) / 2: max_z z . d = mid . d + rad . |d|
        psi = psi_t.T
        psi_ref = psi[ref]
        d = psi[None, :, :] - psi_ref[:, None, :]  # (C, m, P)
        np.abs(d, out=d)
        gain = (d @ rad[:, :, None])[..., 0]
        gain += bx.mid_scores
        gain -= pen
        gain += (pen[ref] - (mid * psi_ref).sum(axis=1))[:, None]
        keep &= ~(gain < -slack)
        count = keep.sum(axis=1)
        best = np.empty((C, CH), dtype=np.int64)
        best[:] = keep.argmax(axis=1)[:, None]  # chunks with one survivor: it is every member's argmax
        rest = np.flatnonzero(count > 1)
        if len(rest) <= self.LOOP_CHUNKS:  # few chunks left: score each over its own survivors
            for c in rest:
                cols = keep[c].nonzero()[0]  # in index order: ties resolve as in the full argmax
                scores = zct[:, c].T @ psi_t[:, cols]  # (CH, K)
                scores -= pen[cols]
                best[c] = cols[scores.argmax(axis=1)]
        else:  # in groups of similar survivor counts, each padded to its largest count
            rest = rest[np.argsort(count[rest], kind="stable")]
            for g in np.array_split(rest, min(self.GROUPS, len(rest))):
                K = int(count[g[-1]])
                kg = keep[g]
                cols = np.argsort(~kg, axis=1, kind="stable")[:, :K]  # survivors first, in index order
                cols = np.where(np.take_along_axis(kg, cols, axis=1), cols, cols[:, :1])  # pad with a repeat
                zg = np.ascontiguousarray(zct[:, g].transpose(1, 2, 0))  # (chunks, CH, P)
                scores = zg @ psi[cols].transpose(0, 2, 1)  # (chunks, CH, K)
                scores -= pen[cols][:, None, :]
                best[g] = np.take_along_axis(cols, scores.argmax(axis=2), axis=1)
        out = np.empty(n, dtype=np.int64)
        out[order] = best.reshape(-1)[:n]
        return out

    def act(self, features, lam) -> np.ndarray:
        """Joint action index (N,) int64 of each request at multipliers ``lam`` (one per cluster); a
        read-only sample is cached as in :meth:`respond`."""
        lam = check_lambda(lam, self.cost.shape[0])
        return self._actions(self._cached_profiles(features), lam[None, :])[0].copy()

    def bind(self, features):
        """``lam -> actions`` for a fixed batch: the request-side networks run once."""
        z = self.request_profiles(features)[0]
        boxes = self._chunk_boxes(z) if len(z) >= self.PRUNE_MIN_BATCH else None
        return lambda lam: self._decide(z, lam, boxes)

    def _cached_profiles(self, features) -> list:
        """``[z, b, lambda-free part, decisions, sweep scores]`` of a request batch: its request
        profiles, the scores ``z @ psi`` of a small batch or the chunk boxes of a large one (filled in
        by :meth:`_lambda_free`), the last ``CACHED_DECISIONS`` single decisions ``((lambda bytes,
        actions), ...)`` and the small batch's scores in ``SWEEP_DTYPE``. A controller sweeps lambda
        over one request sample, the simulator's plant decides a tick's sample at its central lambda
        and at the node guards' raises, and the Balancer reads the same sample next tick: when
        ``features`` is one of the last ``CACHED_SAMPLES`` read-only arrays owning their data seen
        here, its entry is reused (anything else -- a writeable array, a view of another array -- is
        recomputed every call, since its values may have changed in place). The cache is replaced as
        a whole tuple, never mutated, so a thread reading it sees one consistent state."""
        cache = self._respond_cache
        for i, (cached, entry) in enumerate(cache):
            if features is cached:
                if i:
                    self._respond_cache = ((cached, entry), *cache[:i], *cache[i + 1:])
                return entry
        z, b = self.request_profiles(features)
        entry = [z, b, None, (), None]  # scores (small batches) or chunk boxes (large), sweep scores: filled in when needed
        if isinstance(features, np.ndarray) and not features.flags.writeable and features.flags.owndata:
            self._respond_cache = ((features, entry), *cache[:self.CACHED_SAMPLES - 1])
        return entry

    def take_rows(self, features, rows) -> np.ndarray:
        """``features[rows]`` as a new read-only sample. When ``features`` is a cached read-only
        sample (see :meth:`_cached_profiles`), the rows' request profiles are carried over
        instead of running the request-side networks again. A row's profile is its own chain of
        matrix products, the same numbers whatever batch it is computed in as far as the BLAS's
        kernels do not depend on the batch's size: on some they do, in the last bits (float32
        more often), and a carried-over row may then decide otherwise at a near-tie than the same
        row profiled afresh. ``rows``: 1-D integer indices (see :func:`policies.sweep.check_rows`)."""
        x = np.asarray(features)
        rows = check_rows(rows, len(x))
        out = x[rows]
        out.setflags(write=False)
        for cached, entry in self._respond_cache:
            if features is cached:
                # z keeps request_profiles' layout (the transpose of a contiguous (P, N) array)
                z = np.ascontiguousarray(entry[0].T[:, rows]).T
                self._respond_cache = ((out, [z, entry[1][rows], None, (), None]), *self._respond_cache[:self.CACHED_SAMPLES - 1])
                break
        return out

    def _lambda_free(self, entry: list):
        """The lambda-free part of a decision on the entry's batch: the scores ``z @ psi`` of a small
        batch (the same product :meth:`_decide` computes, so the actions are the same bits), the
        :class:`_ChunkBoxes` of a batch that takes the pruned path."""
        if entry[2] is None:
            entry[2] = self._chunk_boxes(entry[0]) if len(entry[0]) >= self.PRUNE_MIN_BATCH else entry[0] @ self._psi_t
        return entry[2]

    def _actions(self, entry: list, lams: np.ndarray) -> np.ndarray:
        """Actions ``(K, N)`` at every lambda row (a single lambda decided recently on this batch is
        answered from the entry)."""
        if len(lams) == 1:
            key = lams[0].tobytes()
            for k, actions in entry[3]:
                if k == key:
                    return actions[None, :]
        scores = self._lambda_free(entry)
        if isinstance(scores, _ChunkBoxes) and len(lams) == 1:  # one decision (the plant's): no stacking
            a = self._decide(entry[0], lams[0], scores)[None, :]
        elif isinstance(scores, _ChunkBoxes):
            a = (np.stack([self._decide(entry[0], lam, scores) for lam in lams]) if len(lams)
                 else np.empty((0, len(entry[0])), np.int64))
        elif len(lams) > 1 and scores.dtype != self.SWEEP_DTYPE:  # a sweep, on the scores in SWEEP_DTYPE
            if entry[4] is None:
                entry[4] = scores.astype(self.SWEEP_DTYPE)
            a = self._cand[sweep_argmax(entry[4], self._cost_c, lams)]
        else:
            a = self._cand[sweep_argmax(scores, self._cost_c, lams)]
        if len(lams) == 1:
            entry[3] = ((key, a[0]), *entry[3][:self.CACHED_DECISIONS - 1])
        return a

    def _revenue(self, z: np.ndarray, b: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``Rev(x, a)`` of each request's action; ``a`` (K, N) against ``z`` (N, P) repeated K times."""
        K = len(a)
        revenue = np.einsum("np,np->n", repeat_rows(z, K), self.psi[a.reshape(-1)].astype(self.dtype, copy=False)) + np.tile(b, K)
        return revenue.astype(np.float64).reshape(a.shape)

    def respond(self, features, lam) -> tuple[np.ndarray, np.ndarray]:
        """(estimated cost (N, G) of each request's chosen action on every cluster, the network's
        revenue estimate (N,) of that action) at multipliers ``lam``. A read-only sample is cached
        between calls (see :meth:`_cached_profiles`)."""
        entry = self._cached_profiles(features)
        lam = check_lambda(lam, self.cost.shape[0])
        a = self._actions(entry, lam[None, :])
        return self.cost[:, a[0]].T, self._revenue(entry[0], entry[1], a)[0]

    def respond_cost(self, features, lam) -> np.ndarray:
        """The cost part of :meth:`respond` (the same numbers), without the revenue estimate."""
        entry = self._cached_profiles(features)
        a = self._actions(entry, check_lambda(lam, self.cost.shape[0])[None, :])
        return self.cost[:, a[0]].T

    def respond_many(self, features, lams) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`respond` at every row of ``lams`` (K, G): cost (K, N, G) and revenue (K, N), the
        same numbers as K calls. The request side and, for small batches, the lambda-free scores
        are computed once (:mod:`policies.sweep`)."""
        entry = self._cached_profiles(features)
        a = self._actions(entry, check_lambdas(lams, self.cost.shape[0]))
        return self.cost[:, a].transpose(1, 2, 0), self._revenue(entry[0], entry[1], a)

    def __repr__(self) -> str:
        return f"PolicyRuntime({self.name!r}, actions={self.n_actions}, candidates={len(self._cand)}, dtype={self.dtype.name})"


def load_runtime(name_or_path: str | Path = "pretrained", cost=None):
    """The numpy runtime of any bundle kind: :class:`PolicyRuntime` for AWRQ-Mixer, or
    :class:`policies.joint_runtime.JointQRuntime` for one agent over the joint action (REM, DQN)."""
    from .joint_runtime import JointQRuntime

    arrays, meta, path = read_bundle(name_or_path)
    if meta["kind"] == KIND:
        return PolicyRuntime(arrays, meta, name=path.stem if str(name_or_path) != "pretrained" else "pretrained", cost=cost)
    return JointQRuntime(arrays, meta, name=path.stem, cost=cost)
