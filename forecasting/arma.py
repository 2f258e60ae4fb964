"""Low-order ARMA errors: fitted with statsmodels, filtered and forecast in numpy.

The SARIMA forecaster removes deterministic seasonality by regression and models what is left,
``r_t``, as a zero-mean ARMA(p, q)::

    r_t = phi_1 r_{t-1} + ... + phi_p r_{t-p} + e_t + theta_1 e_{t-1} + ... + theta_q e_{t-q}

Parameters come from ``statsmodels`` ``SARIMAX`` (exact Gaussian likelihood, missing values
handled by its Kalman filter). Per tick, the state (last p values, last q innovations) is updated
in numpy in microseconds. A missing observation is replaced by its one-step prediction (innovation
0), which is what the Kalman filter does with the state mean. Forecast variances come from the
psi-weights of the MA(infinity) representation.
"""
from __future__ import annotations

import math
import warnings

import numpy as np


def fit_arma(r: np.ndarray, orders=((1, 0, 1), (2, 0, 0)), maxiter: int = 50):
    """Fit each order by ML and keep the lowest-AIC one. Returns ``(order, phi, theta, sigma2, aic)``."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX  # heavy import, fit time only

    best = None
    for order in orders:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # concentrating the scale out of the likelihood leaves 1-2 parameters to optimise
            res = SARIMAX(r, order=order, trend="n", concentrate_scale=True).fit(disp=False, maxiter=maxiter)
        if best is None or res.aic < best[4]:
            p, _, q = order
            best = (tuple(order), np.asarray(res.arparams if p else [], float),
                    np.asarray(res.maparams if q else [], float), float(res.scale), float(res.aic))
    return best


class ArmaState:
    """Numpy filter / forecaster for a fitted ARMA(p, q)."""

    def __init__(self, phi: np.ndarray, theta: np.ndarray, sigma2: float):
        self.phi = np.asarray(phi, float)
        self.theta = np.asarray(theta, float)
        self.sigma2 = float(sigma2)
        self.p, self.q = len(self.phi), len(self.theta)
        self.r_lags = np.zeros(self.p)  # r_{t}, r_{t-1}, ... (most recent first)
        self.e_lags = np.zeros(self.q)
        self._psi_cache = np.ones(1)

    def one_step(self) -> float:
        return float(self.phi @ self.r_lags + self.theta @ self.e_lags)

    def filter(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ingest observations (``NaN`` = missing) and advance the state.

        Returns ``(r_filled, e)``: the values with missing ones replaced by their one-step
        prediction, and the innovations (0 where missing).
        """
        r = np.asarray(r, float)
        filled, innov = np.empty(len(r)), np.empty(len(r))
        phi, theta, rl, el = self.phi, self.theta, self.r_lags, self.e_lags
        p, q = self.p, self.q
        for i, x in enumerate(r):
            pred = (phi @ rl if p else 0.0) + (theta @ el if q else 0.0)
            e = x - pred
            if math.isnan(e):  # missing: propagate the prediction
                e, x = 0.0, pred
            filled[i], innov[i] = x, e
            if p:
                rl[1:] = rl[:-1]
                rl[0] = x
            if q:
                el[1:] = el[:-1]
                el[0] = e
        return filled, innov

    def psi(self, h: int) -> np.ndarray:
        if len(self._psi_cache) < h:
            psi = np.zeros(h)
            psi[0] = 1.0
            for j in range(1, h):
                acc = self.theta[j - 1] if j <= self.q else 0.0
                for i in range(1, min(j, self.p) + 1):
                    acc += self.phi[i - 1] * psi[j - i]
                psi[j] = acc
            self._psi_cache = psi
        return self._psi_cache[:h]

    def forecast(self, h: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of ``r_{t+1..t+h}``."""
        rl, el = self.r_lags.copy(), self.e_lags.copy()
        mu = np.empty(h)
        for k in range(h):
            m = self.phi @ rl + self.theta @ el
            mu[k] = m
            if self.p:
                rl[1:] = rl[:-1]
                rl[0] = m
            if self.q:
                el[1:] = el[:-1]
                el[0] = 0.0
        sd = np.sqrt(self.sigma2 * np.cumsum(self.psi(h) ** 2))
        return mu, sd

    def forecast_all_origins(self, r: np.ndarray, e: np.ndarray, h: int) -> np.ndarray:
        """Forecasts from every origin of an already filtered series.

        ``r`` and ``e`` are the (missing-filled) values and innovations of the same series, as
        :meth:`filter` saw them; row ``t`` holds the forecasts of ``r_{t+1..t+h}`` made at ``t``.
        """
        n = len(r)
        R = np.zeros((n, self.p))
        E = np.zeros((n, self.q))
        for i in range(self.p):
            R[i:, i] = r[: n - i]
        for j in range(self.q):
            E[j:, j] = e[: n - j]
        out = np.empty((n, h))
        for k in range(h):
            m = R @ self.phi + E @ self.theta
            out[:, k] = m
            if self.p:
                R[:, 1:] = R[:, :-1].copy()
                R[:, 0] = m
            if self.q:
                E[:, 1:] = E[:, :-1].copy()
                E[:, 0] = 0.0
        return out
