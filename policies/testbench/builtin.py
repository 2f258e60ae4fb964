"""Built-in reference workloads: real numpy work shaped like the three stages of a recommender.

Each workload serves one request of its stage given an action (a queue length and a variant) and
returns one value per queue item, so its CPU cost grows with the queue the way a real stage's does:

* :class:`RetrievalWorkload` -- one recall channel: IVF-style approximate nearest-neighbour search
  over an item embedding table. The user query is projected per channel, the coarse centroids are
  scored, the ``ceil(probe_factor * queue / list size)`` nearest inverted lists are scanned and the
  top ``queue`` items are returned. Variant 1 is the extended ANN channel behind the retrieval
  switch: twice the probes, then an exact re-score of the shortlist with a wider embedding.
* :class:`PrerankWorkload` -- a small MLP scoring every queued candidate from its item embedding
  and the user embedding; variant 1 is the heavier MLP behind the pre-ranking model switch.
* :class:`RankingWorkload` -- a DIN-style ranking model: per candidate, target attention over the
  user's behaviour sequence and attention pooling of the candidate's own item-side sequence (the
  recent engagers of the item, gathered per candidate), then a larger MLP over the concatenated
  features.

Weights and tables are built once, in :meth:`setup` (lazily, on the first call), from a fixed seed;
constructors store configuration only. Requests differ by value bucket only in their content (the
user vector), not in their size.
"""
from __future__ import annotations

import numpy as np

from .workloads import Workload


def _mlp(rng: np.random.Generator, dims: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), np.zeros(b, np.float32))
            for a, b in zip(dims[:-1], dims[1:])]


def _forward(layers, x: np.ndarray) -> np.ndarray:
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
            np.maximum(x, 0.0, out=x)
    return x[:, 0]


class _Builtin(Workload):
    """Common parts: lazy setup from a seed, per-value-bucket user vectors."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._state = None

    def setup(self) -> None:
        if self._state is None:
            self._state = self._build(np.random.default_rng(self.seed))

    def _user(self, value_bucket: int, dim: int) -> np.ndarray:
        """The user vector of a request in ``value_bucket`` (fetched once per bucket, like a user profile)."""
        key = ("user", value_bucket, dim)
        if key not in self._state:
            rng = np.random.default_rng((self.seed, 7919, int(value_bucket)))
            self._state[key] = rng.standard_normal(dim).astype(np.float32)
        return self._state[key]

    def _candidates(self, n_items: int, queue: int) -> np.ndarray:
        """``queue`` candidate item ids handed over by the previous stage (a rotating window of a
        fixed random permutation: no per-request random generator in the timed path)."""
        s = self._state
        if "perm" not in s:
            s["perm"] = np.random.default_rng((self.seed, 104729)).permutation(n_items)
            s["cursor"] = 0
        start = s["cursor"]
        s["cursor"] = (start + queue) % (n_items - queue) if n_items > queue else 0
        return s["perm"][start:start + queue]

    def __call__(self, queue: int, variant: int = 0, value_bucket: int = 0) -> np.ndarray:
        self.setup()
        return self._serve(self._state, int(queue), int(variant), int(value_bucket))


class RetrievalWorkload(_Builtin):
    """One recall channel (variant 0) or the extended ANN channel (variant 1); see module docstring."""

    stage = "retrieval"
    variants = (0, 1)
    variant_names = ("channel", "extended_ann")

    def __init__(self, n_items: int = 150_000, dim: int = 64, wide_dim: int = 96, n_lists: int = 1024,
                 probe_factor: float = 20.0, seed: int = 0):
        super().__init__(seed)
        self.n_items, self.dim, self.wide_dim, self.n_lists, self.probe_factor = n_items, dim, wide_dim, n_lists, probe_factor

    def _build(self, rng):
        centroids = rng.standard_normal((self.n_lists, self.dim)).astype(np.float32)
        assign = rng.integers(0, self.n_lists, self.n_items)
        order = np.argsort(assign, kind="stable")
        items = (centroids[assign[order]] + 0.5 * rng.standard_normal((self.n_items, self.dim))).astype(np.float32)
        wide = rng.standard_normal((self.n_items, self.wide_dim)).astype(np.float32)
        starts = np.searchsorted(assign[order], np.arange(self.n_lists + 1))
        proj = (rng.standard_normal((self.dim, self.dim)) / np.sqrt(self.dim)).astype(np.float32)
        wide_proj = (rng.standard_normal((self.dim, self.wide_dim)) / np.sqrt(self.dim)).astype(np.float32)
        return {"centroids": centroids, "items": items, "wide": wide, "starts": starts, "proj": proj,
                "wide_proj": wide_proj, "mean_list": self.n_items / self.n_lists}

    def _serve(self, s, queue, variant, value_bucket):
        query = self._user(value_bucket, self.dim) @ s["proj"]
        n_probe = int(np.ceil(self.probe_factor * (1 + variant) * queue / s["mean_list"]))
        n_probe = min(max(n_probe, 1), self.n_lists)
        lists = np.argpartition(-(s["centroids"] @ query), n_probe - 1)[:n_probe]
        idx = _list_members(s["starts"], lists)
        scores = s["items"][idx] @ query
        k = min(queue * (2 if variant else 1), len(idx))
        part = np.argpartition(-scores, k - 1)[:k]
        top = idx[part]
        if variant:  # extended channel: exact re-score of the shortlist with the wide embedding
            exact = s["wide"][top] @ (self._user(value_bucket, self.dim) @ s["wide_proj"])
            top = top[np.argsort(-exact)[:queue]]
        else:
            top = top[np.argsort(-scores[part])]
        return _pad(top, queue)


class PrerankWorkload(_Builtin):
    """Pre-ranking: light MLP (variant 0) or heavy MLP (variant 1) over the queued candidates."""

    stage = "prerank"
    variants = (0, 1)
    variant_names = ("light", "heavy")

    def __init__(self, n_items: int = 100_000, dim: int = 32, light_hidden: tuple = (64,),
                 heavy_hidden: tuple = (256, 128), seed: int = 1):
        super().__init__(seed)
        self.n_items, self.dim, self.light_hidden, self.heavy_hidden = n_items, dim, tuple(light_hidden), tuple(heavy_hidden)

    def _build(self, rng):
        emb = rng.standard_normal((self.n_items, self.dim)).astype(np.float32)
        return {"emb": emb, "models": [_mlp(rng, (2 * self.dim, *self.light_hidden, 1)),
                                       _mlp(rng, (2 * self.dim, *self.heavy_hidden, 1))]}

    def _serve(self, s, queue, variant, value_bucket):
        cand = self._candidates(self.n_items, queue)
        user = self._user(value_bucket, self.dim)
        x = np.concatenate([s["emb"][cand], np.broadcast_to(user, (queue, self.dim))], axis=1)
        return _forward(s["models"][variant], x)


class RankingWorkload(_Builtin):
    """Ranking: DIN-style target attention over the user's behaviour sequence plus a larger MLP."""

    stage = "rank"
    variants = (0,)
    variant_names = ("rank",)

    def __init__(self, n_items: int = 100_000, dim: int = 64, history: int = 256, item_sequence: int = 512,
                 hidden: tuple = (128, 64), seed: int = 2):
        super().__init__(seed)
        self.n_items, self.dim, self.history, self.item_sequence, self.hidden = n_items, dim, history, item_sequence, tuple(hidden)

    def _build(self, rng):
        emb = rng.standard_normal((self.n_items, self.dim)).astype(np.float32)
        item_seq = rng.integers(0, self.n_items, (self.n_items, self.item_sequence)).astype(np.int32)
        return {"emb": emb, "item_seq": item_seq, "mlp": _mlp(rng, (4 * self.dim, *self.hidden, 1))}

    def _history(self, value_bucket: int) -> np.ndarray:
        """The user's behaviour sequence (item embeddings), fetched once per value bucket."""
        key = ("history", value_bucket)
        if key not in self._state:
            rng = np.random.default_rng((self.seed, 15485863, int(value_bucket)))
            self._state[key] = self._state["emb"][rng.integers(0, self.n_items, self.history)]
        return self._state[key]

    def _serve(self, s, queue, variant, value_bucket):
        ids = self._candidates(self.n_items, queue)
        cand = s["emb"][ids]
        hist = self._history(value_bucket)
        interest = _softmax(cand @ hist.T / np.sqrt(self.dim)) @ hist
        engagers = s["emb"][s["item_seq"][ids]]  # (queue, item_sequence, dim), gathered per candidate
        user = self._user(value_bucket, self.dim)
        pooled = np.einsum("qs,qsd->qd", _softmax(engagers @ user / np.sqrt(self.dim)), engagers)
        x = np.concatenate([cand, interest, cand * interest, pooled], axis=1)
        return _forward(s["mlp"], x)


def _softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax over the last axis (in place)."""
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def _list_members(starts: np.ndarray, lists: np.ndarray) -> np.ndarray:
    """Row indices of the items in inverted ``lists`` (items are stored sorted by list)."""
    lo, hi = starts[lists], starts[lists + 1]
    lens = hi - lo
    return np.repeat(lo - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())


def _pad(ids: np.ndarray, queue: int) -> np.ndarray:
    """Exactly ``queue`` ids (an index smaller than ``queue`` items pads with -1)."""
    if len(ids) >= queue:
        return ids[:queue]
    return np.concatenate([ids, np.full(queue - len(ids), -1, dtype=ids.dtype)])


BUILTINS = {"retrieval": RetrievalWorkload, "prerank": PrerankWorkload, "ranking": RankingWorkload}
