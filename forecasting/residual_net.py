"""``ResidualNet``: a small MLP that learns what the SARIMA part misses, numpy inference.

A component of :class:`~forecasting.hybrid.HybridForecaster`: ``fit(F, T)`` maps a feature
matrix (one row per forecast origin: lagged residuals, calendar, event flags) to the SARIMA
part's errors at steps 1..H (direct multi-horizon output). Training uses torch, imported lazily
inside :meth:`ResidualNet.fit` with ``torch.set_num_threads(1)``; the trained weights are
exported to numpy arrays and :meth:`predict` is pure numpy. :meth:`save` / :meth:`load` use a
plain ``.npz`` (no pickle), so a process that only predicts never imports torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ForecastInputError, NotFittedError

_ARRAYS = ("W1", "b1", "W2", "b2", "W3", "b3", "x_mu", "x_sd", "y_mu", "y_sd", "y_lo", "y_hi")
X_CLIP = 6.0  # standardised inputs are clipped to +-X_CLIP: no extrapolation far outside training


class ResidualNet:
    """Two-hidden-layer MLP (ReLU), inputs and outputs standardised.

    Parameters
    ----------
    hidden : width of both hidden layers.
    epochs : maximum training epochs (early stopping on the last ``val_frac`` of rows).
    lr, weight_decay, batch_size : AdamW settings.
    patience : epochs without validation improvement before stopping.
    seed : torch / numpy seed (training is deterministic on one thread).
    """

    def __init__(self, hidden=64, epochs=60, lr=2e-3, weight_decay=1e-3, batch_size=256,
                 val_frac=0.15, patience=8, seed=0):
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.val_frac = val_frac
        self.patience = patience
        self.seed = seed

    def fit(self, F: np.ndarray, T: np.ndarray):
        """Train on features ``F`` (n, d) and targets ``T`` (n, H). Returns self."""
        import torch  # training only

        torch.set_num_threads(1)
        F, T = np.asarray(F, np.float32), np.asarray(T, np.float32)
        if F.ndim != 2 or T.ndim != 2 or len(F) != len(T):
            raise ForecastInputError(f"F {F.shape} and T {T.shape} must be 2-D with the same number of rows")
        if len(F) < 20:
            raise ForecastInputError(f"ResidualNet needs at least 20 training rows, got {len(F)}")
        self.x_mu_, self.x_sd_ = F.mean(0), F.std(0) + 1e-6
        self.y_mu_, self.y_sd_ = T.mean(0), T.std(0) + 1e-6
        self.y_lo_, self.y_hi_ = T.min(0), T.max(0)
        Xs = torch.from_numpy(np.clip((F - self.x_mu_) / self.x_sd_, -X_CLIP, X_CLIP))
        Ys = torch.from_numpy((T - self.y_mu_) / self.y_sd_)
        n_val = max(1, int(len(F) * self.val_frac))
        Xtr, Ytr, Xva, Yva = Xs[:-n_val], Ys[:-n_val], Xs[-n_val:], Ys[-n_val:]

        torch.manual_seed(self.seed)
        d, H, k = F.shape[1], T.shape[1], int(self.hidden)
        net = torch.nn.Sequential(torch.nn.Linear(d, k), torch.nn.ReLU(), torch.nn.Linear(k, k),
                                  torch.nn.ReLU(), torch.nn.Linear(k, H))
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        best, best_state, bad = np.inf, None, 0
        self.epochs_run_ = 0
        for _ in range(int(self.epochs)):
            net.train()
            perm = torch.randperm(len(Xtr), generator=gen)
            for i in range(0, len(Xtr), self.batch_size):
                b = perm[i:i + self.batch_size]
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(net(Xtr[b]), Ytr[b])
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                v = float(torch.nn.functional.mse_loss(net(Xva), Yva))
            self.epochs_run_ += 1
            if v < best - 1e-4:
                best, bad = v, 0
                best_state = [p.detach().clone() for p in net.parameters()]
            else:
                bad += 1
                if bad >= self.patience:
                    break
        self.val_mse_ = best  # standardised units; 1.0 = no better than predicting the mean
        W1, b1, W2, b2, W3, b3 = [p.numpy().astype(np.float64) for p in best_state]
        self.W1_, self.b1_, self.W2_, self.b2_, self.W3_, self.b3_ = W1.T, b1, W2.T, b2, W3.T, b3
        return self

    def predict(self, F: np.ndarray) -> np.ndarray:
        """Numpy forward pass; ``F`` is (n, d) or (d,). Returns (n, H) or (H,).

        Inputs are clipped to +-6 training sds and outputs to the training targets' range, so an
        input unlike anything in training (an outage, a logging glitch) cannot blow up the forecast.
        """
        if not hasattr(self, "W1_"):
            raise NotFittedError("ResidualNet is not fitted; call fit(F, T) or ResidualNet.load(path)")
        F = np.asarray(F, float)
        one = F.ndim == 1
        x = np.clip((np.atleast_2d(F) - self.x_mu_) / self.x_sd_, -X_CLIP, X_CLIP)
        h = np.maximum(x @ self.W1_ + self.b1_, 0.0)
        h = np.maximum(h @ self.W2_ + self.b2_, 0.0)
        y = (h @ self.W3_ + self.b3_) * self.y_sd_ + self.y_mu_
        y = np.clip(y, self.y_lo_, self.y_hi_)  # never a correction larger than any seen in training
        return y[0] if one else y

    def save(self, path: str | Path) -> None:
        """Write the weights to an ``.npz`` (plain arrays, no pickle)."""
        if not hasattr(self, "W1_"):
            raise NotFittedError("ResidualNet is not fitted")
        np.savez(path, **{a: getattr(self, a + "_") for a in _ARRAYS})

    @classmethod
    def load(cls, path: str | Path) -> ResidualNet:
        """Load weights written by :meth:`save` (numpy only)."""
        with np.load(path, allow_pickle=False) as z:
            missing = [a for a in _ARRAYS if a not in z.files]
            if missing:
                raise ForecastInputError(f"{path}: not a ResidualNet file (missing arrays {missing})")
            net = cls()
            for a in _ARRAYS:
                setattr(net, a + "_", z[a])
        return net
