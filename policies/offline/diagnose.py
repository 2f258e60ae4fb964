"""Is there anything to learn in a journey data set? Channel statistics and a probe.

Before comparing channel policies on logged journeys, check that the logged channel depends on
something a policy can see. :func:`diagnose` reports

- ``channel_shares``: share of each channel among all exposures;
- ``transition``: ``P(channel_t = j | channel_{t-1} = i)`` (rows ``i``), and ``p_same``, the
  probability that an exposure repeats the previous channel of its journey. Under a channel
  drawn at random with the global shares ``p``, ``p_same = sum(p ** 2)`` (``p_same_random``);
- ``user_chi2``: the mean over users of Pearson's chi-square statistic of the user's channel
  counts against the global shares (users with at least ``min_user_len`` exposures). Under
  random channels its expectation is ``A - 1`` (``user_chi2_expected``); users who stick to
  their own channels push it far above;
- ``probe_auc``: macro one-vs-rest channel AUC, on held-out users (split by user, never by
  window), of a gradient-boosting probe (:class:`~policies.offline.gbm.GradientBoostingClassifier`
  one-vs-rest) given the pre-exposure state only (``state``), the state and the journey's
  history (``state_history``: previous channel and reward, shares of each channel so far, step
  index; see :func:`~policies.offline.reward_model.history_features`), or the history only.
  0.5 is chance: a probe at 0.5 means no method can beat chance on channel agreement;
- optionally (``window_check``) the leakage created by evaluating on random windows split by
  window rather than by user (:func:`window_split_overlap`).

On the KuaiRand sample the channel is random: shares near 1/3, ``p_same`` at its random value,
``user_chi2`` at 2 and every probe at 0.5, so every method at chance there is a finding about the
data, not a bug of the models.
"""
from __future__ import annotations

import numpy as np

from .gbm import GradientBoostingClassifier
from .journeys import Journeys
from .metrics import channel_auc
from .reward_model import decision_features


def channel_statistics(j: Journeys, min_user_len: int = 2) -> dict:
    """Shares, transition matrix, ``p_same`` and the per-user chi-square (see the module doc)."""
    valid = j.mask.astype(bool)
    a_n = j.n_channels
    counts = np.bincount(j.actions[valid], minlength=a_n).astype(float)
    shares = counts / counts.sum()
    pair = valid[:, 1:] & valid[:, :-1]
    prev, cur = j.actions[:, :-1][pair], j.actions[:, 1:][pair]
    trans = np.zeros((a_n, a_n))
    np.add.at(trans, (prev, cur), 1.0)
    row = trans.sum(axis=1, keepdims=True)
    trans = np.divide(trans, row, out=np.full_like(trans, np.nan), where=row > 0)
    p_same = float(np.mean(prev == cur)) if len(prev) else float("nan")
    per_user = np.stack([((j.actions == a) & valid).sum(axis=1) for a in range(a_n)], axis=1)
    lengths = per_user.sum(axis=1)
    keep = lengths >= min_user_len
    expected = lengths[keep, None] * shares[None, :]
    seen = shares > 0
    chi2 = (((per_user[keep] - expected) ** 2)[:, seen] / expected[:, seen]).sum(axis=1)
    return {
        "n_users": int(j.n_users), "n_exposures": int(valid.sum()), "n_channels": a_n,
        "channel_shares": shares.tolist(),
        "transition": trans.tolist(),
        "p_same": p_same, "p_same_random": float(np.sum(shares ** 2)),
        "user_chi2": float(chi2.mean()) if keep.any() else float("nan"),
        "user_chi2_expected": float(seen.sum() - 1), "user_chi2_users": int(keep.sum()),
    }


def _probe(train_x, train_a, test_x, test_a, a_n, seed, **gbm) -> float:
    probs = np.zeros((len(test_x), a_n))
    for a in range(a_n):
        y = (train_a == a).astype(float)
        if 0 < y.mean() < 1:
            m = GradientBoostingClassifier(seed=seed, **gbm).fit(train_x, y)
            probs[:, a] = m.predict_proba(test_x)
    return channel_auc(probs, test_a)


def probe_auc(j: Journeys, seed: int = 0, test_fraction: float = 0.3, n_trees: int = 60,
              learning_rate: float = 0.15, max_depth: int = 3) -> dict:
    """Channel AUC of a gradient-boosting probe on held-out users, for three feature sets.

    Returns ``{"state": auc, "state_history": auc, "history": auc}``.
    """
    train, test = j.split((1 - test_fraction, test_fraction), seed)
    d = j.state_dim
    x_tr, x_te = decision_features(train), decision_features(test)
    a_tr, a_te = train.actions[train.mask.astype(bool)], test.actions[test.mask.astype(bool)]
    gbm = {"n_trees": n_trees, "learning_rate": learning_rate, "max_depth": max_depth}
    sets = {"state": slice(0, d), "state_history": slice(0, None), "history": slice(d, None)}
    return {name: _probe(x_tr[:, s], a_tr, x_te[:, s], a_te, j.n_channels, seed, **gbm)
            for name, s in sets.items()}


def window_split_overlap(j: Journeys, n_windows: int = 4000, window: int = 20,
                         test_fraction: float = 0.2, seed: int = 0) -> dict:
    """What a random-window evaluation leaks, against a split by user.

    Draws ``n_windows`` windows of ``window`` consecutive exposures with replacement (a user at
    random, a start at random inside the journey), splits them at random into train and test
    windows, and reports the share of test windows whose user has a training window
    (``test_user_in_train``), the share identical to a training window (same user and start,
    ``test_window_in_train``), the share of test exposures that also lie inside a training
    window (windows of one user overlap: ``test_step_in_train``), and the channel AUC of a pure
    lookup memoriser that predicts, for each test exposure, the channel it had in a training
    window when it lies in one, else the channel shares of the user's training windows, else the
    global shares: ``memoriser_auc_window_split``. The same memoriser on a split by user
    (``memoriser_auc_user_split``) has no users to look up and sits at 0.5.
    """
    valid = j.mask.astype(bool)
    lengths = valid.sum(axis=1)
    ok = np.flatnonzero(lengths >= window)
    if len(ok) == 0:
        raise ValueError(f"window_split_overlap: no journey has {window} exposures")
    rng = np.random.default_rng(seed)
    users = ok[rng.integers(0, len(ok), n_windows)]
    starts = (rng.random(n_windows) * (lengths[users] - window + 1)).astype(int)
    is_test = np.zeros(n_windows, bool)
    is_test[rng.permutation(n_windows)[: round(test_fraction * n_windows)]] = True

    steps = starts[:, None] + np.arange(window)[None, :]
    acts = j.actions[users[:, None], steps]

    def memoriser_auc(train_mask, test_mask):
        a_n = j.n_channels
        glob = np.bincount(acts[train_mask].ravel(), minlength=a_n) + 1.0
        glob = glob / glob.sum()
        seen = {}  # (user, step) -> channel: the exposures inside training windows
        per_user = {}
        for u, st, row in zip(users[train_mask], starts[train_mask], acts[train_mask]):
            seen.update({(u, st + k): a for k, a in enumerate(row)})
            per_user[u] = per_user.get(u, 0) + np.bincount(row, minlength=a_n)
        eye = np.eye(a_n)
        probs = []
        for u, st in zip(users[test_mask], starts[test_mask]):
            for k in range(window):
                if (u, st + k) in seen:
                    probs.append(eye[seen[(u, st + k)]])
                elif u in per_user:
                    probs.append(per_user[u] / per_user[u].sum())
                else:
                    probs.append(glob)
        return channel_auc(np.array(probs), acts[test_mask].ravel())

    train_keys = set(zip(users[~is_test].tolist(), starts[~is_test].tolist()))
    train_users = set(users[~is_test].tolist())
    test_keys = list(zip(users[is_test].tolist(), starts[is_test].tolist()))
    in_train_user = np.mean([u in train_users for u, _ in test_keys])
    in_train_window = np.mean([k in train_keys for k in test_keys])
    train_steps = {(u, st + k) for u, st in zip(users[~is_test].tolist(), starts[~is_test].tolist())
                   for k in range(window)}
    in_train_step = np.mean([(u, st + k) in train_steps for u, st in test_keys for k in range(window)])
    uniq = np.unique(users)
    test_users = set(rng.permutation(uniq)[: round(test_fraction * len(uniq))].tolist())
    by_user = np.array([u in test_users for u in users])
    return {
        "n_windows": n_windows, "window": window,
        "test_user_in_train": float(in_train_user), "test_window_in_train": float(in_train_window),
        "test_step_in_train": float(in_train_step),
        "memoriser_auc_window_split": memoriser_auc(~is_test, is_test),
        "memoriser_auc_user_split": memoriser_auc(~by_user, by_user),
    }


def diagnose(j: Journeys, seed: int = 0, probe: bool = True, window_check: bool = False,
             **window_kwargs) -> dict:
    """Channel statistics, the probe AUCs and optionally the window-split check (module doc)."""
    out = channel_statistics(j)
    if probe:
        out["probe_auc"] = probe_auc(j, seed=seed)
    if window_check:
        out["window_split"] = window_split_overlap(j, seed=seed, **window_kwargs)
    return out


def format_report(name: str, d: dict) -> str:
    """Human-readable text of :func:`diagnose`'s result."""
    shares = " ".join(f"{100 * s:.1f}%" for s in d["channel_shares"])
    lines = [(f"data {name}: {d['n_users']} users, {d['n_exposures']} exposures, "
              f"{d['n_channels']} channels"),
             f"channel shares: {shares}",
             (f"P(same channel as previous): {d['p_same']:.3f} (random channels: "
              f"{d['p_same_random']:.3f})"),
             (f"per-user chi-square of channel counts: {d['user_chi2']:.2f} (random channels: "
              f"{d['user_chi2_expected']:.0f}; {d['user_chi2_users']} users)"),
             "transition P(next | previous), rows = previous:"]
    for i, row in enumerate(d["transition"]):
        lines.append(f"  {i:>2}: " + " ".join(f"{v:.3f}" for v in row))
    if "probe_auc" in d:
        p = d["probe_auc"]
        lines.append(f"gradient-boosting probe channel AUC (held-out users): state {p['state']:.3f}, "
                     f"state+history {p['state_history']:.3f}, history {p['history']:.3f}")
    if "window_split" in d:
        w = d["window_split"]
        lines.append(
            f"random windows ({w['n_windows']} x {w['window']}), split by window: "
            f"{100 * w['test_user_in_train']:.1f}% of test windows from training users, "
            f"{100 * w['test_window_in_train']:.1f}% identical to a training window, "
            f"{100 * w['test_step_in_train']:.1f}% of test exposures inside a training window; "
            f"lookup memoriser AUC {w['memoriser_auc_window_split']:.3f} "
            f"(split by user: {w['memoriser_auc_user_split']:.3f})")
    return "\n".join(lines)
