"""Agreement metrics between a channel policy and the logged channels (numpy only)."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney statistic (ties get half credit); NaN if one class is absent."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def channel_auc(probs: np.ndarray, actions: np.ndarray) -> float:
    """Macro one-vs-rest AUC of channel probabilities ``[n, A]`` against logged channels ``[n]``."""
    aucs = [binary_auc(probs[:, a], actions == a) for a in range(probs.shape[1])]
    aucs = [x for x in aucs if np.isfinite(x)]
    return float(np.mean(aucs)) if aucs else float("nan")


def macro_f1(pred: np.ndarray, actions: np.ndarray, n_channels: int) -> float:
    """Macro F1 of predicted channels against logged channels over ``n_channels`` classes."""
    f1s = []
    for a in range(n_channels):
        tp = np.sum((pred == a) & (actions == a))
        fp = np.sum((pred == a) & (actions != a))
        fn = np.sum((pred != a) & (actions == a))
        denom = 2 * tp + fp + fn
        f1s.append(0.0 if denom == 0 else 2 * tp / denom)
    return float(np.mean(f1s))
