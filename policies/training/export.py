"""Export a fitted :class:`~policies.training.value_model.ValueModel` as a runtime bundle: AWRQ-Mixer
(kind ``awrq-mixer``, served by :class:`policies.runtime.PolicyRuntime`) or one agent over the joint
action, REM or DQN (kind ``joint-q``, served by :class:`policies.joint_runtime.JointQRuntime`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..bundle import KIND, write_bundle
from ..cascade import FEATURES

LAMBDA_RANGE = (1e-5, 10.0)  # the controllers clamp lambda to this range per cluster


EXPORTABLE = ("awrq", "rem", "dqn")


def export_bundle(model, stem: str | Path, training: dict | None = None) -> Path:
    """Write ``stem.npz`` + ``stem.json`` for ``model`` (fitted, ``algo`` one of ``EXPORTABLE``); returns the JSON path."""
    model._check_fitted()
    if model.algo not in EXPORTABLE:
        raise ValueError(f"only {', '.join(EXPORTABLE)} models can be exported to a runtime, got {model.algo!r}")
    net, cas = model.net_, model.cascade_
    arrays = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    arrays.update(feature_mean=np.asarray(model.feature_mean_), feature_scale=np.asarray(model.feature_scale_), cost=cas.cost)
    meta = {
        "features": list(FEATURES),
        "normalisation": {"mean": model.feature_mean_.tolist(), "scale": model.feature_scale_.tolist(),
                          "revenue": "estimate = exp(log_value) * network output"},
        "actions": {"clusters": list(cas.clusters), "n_actions": cas.n_actions,
                    "joint_order": "row-major over stage action indices (retrieval, prerank, rank)",
                    "stages": [{"name": s.name, "cluster": s.cluster, "sub_actions": {k: list(v) for k, v in s.sub_actions.items()},
                                "actions": acts} for s, acts in zip(cas.spec.stages, cas.stage_actions)],
                    "cost_unit": "estimated CPU-ms per request per cluster (npz 'cost', G x A)",
                    "cascade_spec": cas.spec.to_dict()},
        "lambda_range": list(LAMBDA_RANGE),
        "training": {"params": model.get_params(), "fit_seconds": round(model.fit_seconds_, 1),
                     "final_loss": model.history_[-1]["loss"], **(training or {})},
    }
    if model.algo == "awrq":
        meta["architecture"] = {"n_agents": net.n_agents, "heads": net.heads, "channels": net.channels, "smc": net.smc,
                                "request": net.request, "hidden": net.hidden, "head_weights": net.head_weights.tolist()}
        return write_bundle(stem, arrays, meta)
    # one agent over the joint action: an MLP to heads x actions, the estimate the mean over heads
    meta["architecture"] = {"algo": model.algo, "heads": net.heads, "hidden": int(arrays["net.0.weight"].shape[0]),
                            "layers": "net.0, net.2, net.4: Linear, ReLU between; output (heads, n_actions) row-major",
                            "estimate": "mean over heads"}
    return write_bundle(stem, arrays, meta, kind="joint-q")


def load_torch_network(name_or_path="pretrained"):
    """The torch AWRQ-Mixer network of a bundle (parity tests and benchmarks), evaluation mode."""
    import torch

    from ..bundle import read_bundle
    from ..cascade import Cascade
    from .nets import AWRQMixerNet

    arrays, meta, _ = read_bundle(name_or_path)
    if meta["kind"] != KIND:
        raise ValueError(f"bundle {name_or_path!r} is a {meta['kind']!r} bundle, not AWRQ-Mixer")
    arch = meta["architecture"]
    state = {k: torch.as_tensor(v) for k, v in arrays.items() if k not in ("feature_mean", "feature_scale", "cost")}
    request = arch.get("request", "separate")  # bundles written before the option have separate MLPs
    hidden = state["trunk.0.weight" if request == "shared" else "hyper_b.0.weight"].shape[0]
    net = AWRQMixerNet(Cascade(), len(meta["features"]), hidden=hidden, embed=state["embed.weight"].shape[1],
                       gru=state["grus.0.weight_hh"].shape[1], heads=arch["heads"], channels=arch["channels"], smc=arch["smc"],
                       request=request)
    net.load_state_dict(state)
    return net.eval(), arrays


def load_joint_network(name_or_path):
    """The torch network of a ``joint-q`` bundle (REM/DQN; parity tests), evaluation mode."""
    import torch

    from ..bundle import read_bundle
    from ..cascade import Cascade
    from .nets import JointQNet

    arrays, meta, _ = read_bundle(name_or_path)
    if meta["kind"] != "joint-q":
        raise ValueError(f"bundle {name_or_path!r} is a {meta['kind']!r} bundle, not joint-q")
    state = {k: torch.as_tensor(v) for k, v in arrays.items() if k not in ("feature_mean", "feature_scale", "cost")}
    arch = meta["architecture"]
    net = JointQNet(Cascade(), len(meta["features"]), hidden=arch["hidden"], heads=arch["heads"])
    net.load_state_dict(state)
    return net.eval(), arrays
