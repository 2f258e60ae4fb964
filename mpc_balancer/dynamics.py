"""MaRCA's learned load dynamics ``L' = g(L, s, lambda)``: one small MLP per cluster.

For cluster ``g`` the network reads ``[L_g, s, log lambda_1..G]`` -- its own measured load, the
traffic state ``s = [log(qps / qps_ref), sin(2 pi h / 24), cos(2 pi h / 24)]`` (``h`` the hour of
the tick being predicted) and the log of every cluster's lambda (a request's joint action depends
on all lambdas, so every cluster's cost does) -- and predicts the cluster's measured load after the
tick. Inputs and output are standardised with statistics of the training set; hidden layers are
``tanh`` (smooth, so IPOPT gets exact, well-behaved second derivatives).

Training (:func:`fit_dynamics`) uses torch, imported lazily; the fitted weights are plain numpy
arrays, so inference (:meth:`MlpDynamics.predict`, batched) and the symbolic CasADi expression
(:meth:`MlpDynamics.casadi`) need neither torch nor a GPU. ``save``/``load`` use ``.npz`` without
pickle.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

N_STATE = 3  # log(qps / qps_ref), sin(hour), cos(hour)


def traffic_state(qps: float, hour: float, qps_ref: float) -> np.ndarray:
    """The traffic state ``s``; QPS is floored at ``1e-3 qps_ref`` so an idle tick has a finite log."""
    q = max(float(qps), 1e-3 * qps_ref)
    a = 2 * np.pi * float(hour) / 24.0
    return np.array([np.log(q / qps_ref), np.sin(a), np.cos(a)])


def hour_of_day(t) -> float | np.ndarray:
    """Fractional hour of a timestamp (or of every entry of a DatetimeIndex)."""
    return t.hour + t.minute / 60.0 + t.second / 3600.0


def transitions_from_log(log, clusters: list[str], qps_ref: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(load, state, log lambda, next load) from a simulator log (one row per tick).

    Row ``k`` holds the lambda applied during tick ``k``, that tick's QPS and the load measured at
    its end; so the transition is ``load[k-1], state[k], log lambda[k] -> load[k]``.
    """
    L = np.column_stack([log[f"load_{c}"].to_numpy(float) for c in clusters])
    lam = np.column_stack([log[f"lambda_{c}"].to_numpy(float) for c in clusters])
    t = log.index
    hours = np.asarray(hour_of_day(t), dtype=float)
    S = np.array([traffic_state(q, h, qps_ref) for q, h in zip(log["qps"].to_numpy(float), hours)])
    ok = np.all(np.isfinite(L), axis=1) & np.all(lam > 0, axis=1)
    keep = ok[1:] & ok[:-1]
    return L[:-1][keep], S[1:][keep], np.log(lam[1:][keep]), L[1:][keep]


def stack_inputs(load: np.ndarray, state: np.ndarray, log_lam: np.ndarray) -> np.ndarray:
    """``(..., G)``, ``(..., S)``, ``(..., G)`` -> per-cluster network inputs ``(..., G, 1 + S + G)``."""
    load, state, log_lam = np.asarray(load, float), np.asarray(state, float), np.asarray(log_lam, float)
    G = load.shape[-1]
    batch = np.broadcast_shapes(load.shape[:-1], state.shape[:-1], log_lam.shape[:-1])
    load = np.broadcast_to(load, batch + (G,))
    state = np.broadcast_to(state[..., None, :], batch + (G, state.shape[-1]))
    log_lam = np.broadcast_to(log_lam[..., None, :], batch + (G, G))
    return np.concatenate([load[..., None], state, log_lam], axis=-1)


@dataclass
class MlpDynamics:
    """``G`` independent tanh MLPs stored as stacked arrays: ``weights[i]`` is ``(G, n_in, n_out)``."""

    weights: list
    biases: list
    x_mean: np.ndarray  # (G, d)
    x_scale: np.ndarray  # (G, d)
    y_mean: np.ndarray  # (G,)
    y_scale: np.ndarray  # (G,)
    # the range of log lambda per cluster seen in training (G, 2): where the model may be trusted
    z_range: np.ndarray | None = None

    @property
    def n_clusters(self) -> int:
        """Clusters ``G`` the model predicts the load of."""
        return self.weights[0].shape[0]

    @property
    def n_inputs(self) -> int:
        """Width of the model's input vector."""
        return self.weights[0].shape[1]

    def predict(self, load, state, log_lam) -> np.ndarray:
        """Next load per cluster, batched over any leading axes (numpy only)."""
        x = (stack_inputs(load, state, log_lam) - self.x_mean) / self.x_scale  # (..., G, d)
        batch, (G, d) = x.shape[:-2], x.shape[-2:]
        h = x.reshape(-1, G, d).transpose(1, 0, 2)  # (G, B, d): one matmul per layer
        last = len(self.weights) - 1
        for i, (W, b) in enumerate(zip(self.weights, self.biases)):
            h = np.matmul(h, W) + b[:, None, :]
            if i < last:
                h = np.tanh(h)
        return (h[..., 0].T * self.y_scale + self.y_mean).reshape(batch + (G,))

    def casadi(self, load, state, log_lam):
        """The same map as a CasADi expression: column vectors ``(G,)``, ``(S,)``, ``(G,)`` -> ``(G,)``."""
        import casadi as ca

        out, last = [], len(self.weights) - 1
        for g in range(self.n_clusters):
            x = ca.vertcat(load[g], state, log_lam)
            h = (x - ca.DM(self.x_mean[g])) / ca.DM(self.x_scale[g])
            for i, (W, b) in enumerate(zip(self.weights, self.biases)):
                h = ca.mtimes(ca.DM(W[g].T), h) + ca.DM(b[g])
                if i < last:
                    h = ca.tanh(h)
            out.append(h[0] * float(self.y_scale[g]) + float(self.y_mean[g]))
        return ca.vertcat(*out)

    # ------------------------------------------------------------------------------- export
    def save(self, path) -> None:
        """Write the weights to an ``.npz`` file (arrays and JSON metadata; no pickle)."""
        arrays = {f"W{i}": W for i, W in enumerate(self.weights)} | {f"b{i}": b for i, b in enumerate(self.biases)}
        meta = json.dumps({"format": "mlp-dynamics", "version": 1, "layers": len(self.weights)})
        if self.z_range is not None:
            arrays["z_range"] = np.asarray(self.z_range, dtype=float)
        np.savez(path, x_mean=self.x_mean, x_scale=self.x_scale, y_mean=self.y_mean, y_scale=self.y_scale,
                 meta=np.array(meta), **arrays)

    @classmethod
    def load(cls, path) -> MlpDynamics:
        """Read a model written by :meth:`save`.

        Raises
        ------
        ValueError
            The file is not an ``mlp-dynamics`` version 1 file.
        """
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != "mlp-dynamics" or meta.get("version") != 1:
                raise ValueError(f"{path}: not an mlp-dynamics v1 file (meta {meta})")
            n = int(meta["layers"])
            return cls([z[f"W{i}"] for i in range(n)], [z[f"b{i}"] for i in range(n)], z["x_mean"], z["x_scale"],
                       z["y_mean"], z["y_scale"], z["z_range"] if "z_range" in z.files else None)


def fit_dynamics(load: np.ndarray, state: np.ndarray, log_lam: np.ndarray, next_load: np.ndarray,
                 hidden: tuple = (32, 32), max_iter: int = 400, weight_decay: float = 1e-6,
                 val_fraction: float = 0.15, seed: int = 0) -> tuple[MlpDynamics, dict]:
    """Fit one MLP per cluster (jointly, as stacked weights) by full-batch L-BFGS on the squared error
    of the standardised next load (plus a small L2 penalty on the weights). Returns the model and a
    report (train/validation RMSE in load units, per cluster, on a random hold-out of ``val_fraction``)."""
    import torch  # training only

    if len(load) < 10:
        raise ValueError(f"need at least 10 transitions to fit the dynamics, got {len(load)}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    X = stack_inputs(load, state, log_lam)  # (n, G, d)
    Y = np.asarray(next_load, float)
    n = len(X)
    perm = rng.permutation(n)
    n_val = int(round(val_fraction * n))
    val, tr = perm[:n_val], perm[n_val:]
    x_mean, x_scale = X[tr].mean(0), X[tr].std(0)
    x_scale = np.where(x_scale > 1e-8, x_scale, 1.0)
    y_mean, y_scale = Y[tr].mean(0), Y[tr].std(0)
    y_scale = np.where(y_scale > 1e-8, y_scale, 1.0)
    host_threads = torch.get_num_threads()  # the host process's setting: restored after training
    torch.set_num_threads(1)
    try:
        G, d = X.shape[1], X.shape[2]
        # cluster-major layout (G, n, d) so every layer is one batched matmul
        Xt = torch.tensor(((X - x_mean) / x_scale)[tr].transpose(1, 0, 2), dtype=torch.float64)
        Yt = torch.tensor(((Y - y_mean) / y_scale)[tr].T, dtype=torch.float64)
        sizes = [d, *hidden, 1]
        params = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            W = torch.empty(G, a, b, dtype=torch.float64)
            for g in range(G):
                torch.nn.init.xavier_uniform_(W[g], gain=5 / 3 if b != 1 else 1.0)
            params += [W.requires_grad_(), torch.zeros(G, 1, b, dtype=torch.float64, requires_grad=True)]

        def loss_fn():
            h = Xt
            for i in range(0, len(params), 2):
                h = torch.baddbmm(params[i + 1], h, params[i])
                if i < len(params) - 2:
                    h = torch.tanh(h)
            mse = torch.mean((h[..., 0] - Yt) ** 2)
            return mse + weight_decay * sum(torch.sum(p ** 2) for p in params[::2])

        # full batch, smooth, small: L-BFGS with a strong-Wolfe line search converges in a few hundred steps
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-9,
                                tolerance_change=1e-12, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        opt.step(closure)
    finally:
        torch.set_num_threads(host_threads)
    model = MlpDynamics([params[i].detach().numpy().copy() for i in range(0, len(params), 2)],
                        [params[i].detach().numpy()[:, 0, :].copy() for i in range(1, len(params), 2)],
                        x_mean, x_scale, y_mean, y_scale, np.column_stack([log_lam.min(0), log_lam.max(0)]))
    pred = model.predict(load, state, log_lam)
    rmse = lambda idx: np.sqrt(np.mean((pred[idx] - Y[idx]) ** 2, axis=0)).tolist() if len(idx) else []  # noqa: E731
    return model, {"n_train": int(len(tr)), "n_val": int(n_val), "rmse_train": rmse(tr), "rmse_val": rmse(val),
                   "load_std": Y.std(0).tolist()}
