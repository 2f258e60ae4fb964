"""A small histogram gradient-boosting classifier (numpy only).

Used where the offline package needs a strong model that is not one of the compared methods:
the probe of :mod:`policies.offline.diagnose` (can the channel be predicted from the state at
all?) and the shared reward model of :mod:`policies.offline.evaluation` (ranks decisions for the
methods that have no value estimate of their own, and scores counterfactual channels on logged
data).

The algorithm is the usual second-order boosting of the logistic loss (as in XGBoost / LightGBM,
without their refinements): features are cut into at most ``n_bins`` quantile bins; each tree is
grown depth-first to ``max_depth``; a split maximises
``G_L^2 / (H_L + l2) + G_R^2 / (H_R + l2) - G^2 / (H + l2)`` over all features and bin
boundaries, with at least ``min_leaf`` rows on each side; a leaf's value is
``-learning_rate * G / (H + l2)``, ``G``/``H`` the sums of the gradient ``p - y`` and the hessian
``p (1 - p)`` of its rows.
"""
from __future__ import annotations

import numpy as np


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))


class GradientBoostingClassifier:
    """Binary gradient-boosted trees on the logistic loss (see the module docstring).

    Parameters
    ----------
    n_trees : int
        Boosting rounds.
    learning_rate : float
        Shrinkage of every leaf value.
    max_depth : int
        Depth of every tree (``2 ** max_depth`` leaves at most).
    n_bins : int
        Quantile bins per feature (at most 255).
    min_leaf : int
        Fewest training rows in a leaf.
    l2 : float
        L2 regularisation of the leaf values.
    seed : int
        Seed of the row subsampling.
    subsample : float
        Fraction of the rows each tree is grown on (1.0: all).
    """

    def __init__(self, n_trees: int = 100, learning_rate: float = 0.1, max_depth: int = 3,
                 n_bins: int = 32, min_leaf: int = 20, l2: float = 1.0, seed: int = 0,
                 subsample: float = 1.0):
        if not 2 <= n_bins <= 255:
            raise ValueError(f"n_bins must be in 2..255, got {n_bins}")
        if not 0 < subsample <= 1:
            raise ValueError(f"subsample must be in (0, 1], got {subsample}")
        self.n_trees = n_trees
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.n_bins = n_bins
        self.min_leaf = min_leaf
        self.l2 = l2
        self.seed = seed
        self.subsample = subsample

    # ----- binning ------------------------------------------------------------------------
    def _bin(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape, dtype=np.int64)
        for f, edges in enumerate(self.edges_):
            out[:, f] = np.searchsorted(edges, x[:, f], side="right")
        return out

    @staticmethod
    def _check_x(x, n_features=None) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if x.ndim != 2:
            raise ValueError(f"X must be [rows, features], got shape {x.shape}")
        if n_features is not None and x.shape[1] != n_features:
            raise ValueError(f"X has {x.shape[1]} features, the model was fitted on {n_features}")
        if not np.isfinite(x).all():
            r, f = np.argwhere(~np.isfinite(x))[0]
            raise ValueError(f"X: non-finite value at row {r}, feature {f}")
        return x

    # ----- fitting ------------------------------------------------------------------------
    def fit(self, x, y):
        """Fit on features ``x [n, F]`` and binary labels ``y [n]`` (0/1); returns ``self``."""
        x = self._check_x(x)
        y = np.asarray(y, dtype=float)
        if y.shape != (len(x),):
            raise ValueError(f"y must have shape ({len(x)},), got {y.shape}")
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("y must be 0/1")
        n, n_feat = x.shape
        qs = np.linspace(0, 1, self.n_bins + 1)[1:-1]
        self.edges_ = [np.unique(np.quantile(x[:, f], qs)) for f in range(n_feat)]
        self.n_features_ = n_feat
        xb = self._bin(x)
        rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6)) if n else 0.5
        self.base_score_ = float(np.log(rate / (1 - rate)))
        score = np.full(n, self.base_score_)
        rng = np.random.default_rng(self.seed)
        self.trees_ = []
        for _ in range(self.n_trees):
            p = _sigmoid(score)
            g, h = p - y, p * (1 - p)
            rows = np.arange(n)
            if self.subsample < 1:
                rows = np.sort(rng.choice(n, size=max(1, int(self.subsample * n)), replace=False))
            tree = self._grow(xb, g, h, rows)
            self.trees_.append(tree)
            score += self._apply(tree, xb)
        return self

    def _grow(self, xb, g, h, rows) -> dict:
        nodes = {"feature": [], "bin": [], "left": [], "right": [], "value": []}

        def add(feature, b, value):
            for k, v in zip(nodes, (feature, b, -1, -1, value)):
                nodes[k].append(v)
            return len(nodes["value"]) - 1

        def leaf_value(idx):
            return -self.learning_rate * g[idx].sum() / (h[idx].sum() + self.l2)

        def build(idx, depth):
            if depth == self.max_depth or len(idx) < 2 * self.min_leaf:
                return add(-1, -1, leaf_value(idx))
            split = self._best_split(xb[idx], g[idx], h[idx])
            if split is None:
                return add(-1, -1, leaf_value(idx))
            f, b = split
            node = add(f, b, 0.0)
            go_left = xb[idx, f] <= b
            nodes["left"][node] = build(idx[go_left], depth + 1)
            nodes["right"][node] = build(idx[~go_left], depth + 1)
            return node

        build(rows, 0)
        return {k: np.asarray(v) for k, v in nodes.items()}

    def _best_split(self, xb, g, h):
        n, n_feat = xb.shape
        nb = self.n_bins
        codes = (xb + np.arange(n_feat) * nb).ravel()
        gh = np.bincount(codes, weights=np.repeat(g, n_feat), minlength=n_feat * nb).reshape(n_feat, nb)
        hh = np.bincount(codes, weights=np.repeat(h, n_feat), minlength=n_feat * nb).reshape(n_feat, nb)
        ch = np.bincount(codes, minlength=n_feat * nb).reshape(n_feat, nb)
        gl, hl, cl = gh.cumsum(1)[:, :-1], hh.cumsum(1)[:, :-1], ch.cumsum(1)[:, :-1]
        gt, ht = g.sum(), h.sum()
        gr, hr, cr = gt - gl, ht - hl, n - cl
        gain = gl ** 2 / (hl + self.l2) + gr ** 2 / (hr + self.l2) - gt ** 2 / (ht + self.l2)
        gain[(cl < self.min_leaf) | (cr < self.min_leaf)] = -np.inf
        f, b = np.unravel_index(np.argmax(gain), gain.shape)
        if not gain[f, b] > 1e-12:
            return None
        return int(f), int(b)

    # ----- prediction ---------------------------------------------------------------------
    def _apply(self, tree, xb) -> np.ndarray:
        node = np.zeros(len(xb), dtype=np.int64)
        for _ in range(self.max_depth + 1):
            f = tree["feature"][node]
            inner = f >= 0
            if not inner.any():
                break
            go_left = xb[np.arange(len(xb)), np.where(inner, f, 0)] <= tree["bin"][node]
            nxt = np.where(go_left, tree["left"][node], tree["right"][node])
            node = np.where(inner, nxt, node)
        return tree["value"][node]

    def decision_function(self, x) -> np.ndarray:
        """Log-odds of class 1 for ``x [n, F]``."""
        if not hasattr(self, "trees_"):
            raise RuntimeError("GradientBoostingClassifier is not fitted; call fit() first")
        xb = self._bin(self._check_x(x, self.n_features_))
        score = np.full(len(xb), self.base_score_)
        for tree in self.trees_:
            score += self._apply(tree, xb)
        return score

    def predict_proba(self, x) -> np.ndarray:
        """Probability of class 1 for ``x [n, F]`` (a 1-d array)."""
        return _sigmoid(self.decision_function(x))
