"""Export a fitted AWRQ-Mixer :class:`~policies.training.value_model.ValueModel` as a runtime bundle."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..bundle import write_bundle
from ..cascade import FEATURES

LAMBDA_RANGE = (1e-5, 10.0)  # the controllers clamp lambda to this range per cluster


def export_bundle(model, stem: str | Path, training: dict | None = None) -> Path:
    """Write ``stem.npz`` + ``stem.json`` for ``model`` (fitted, ``algo="awrq"``); returns the JSON path."""
    model._check_fitted()
    if model.algo != "awrq":
        raise ValueError(f"only AWRQ-Mixer models can be exported to the runtime, got {model.algo!r}")
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
        "architecture": {"n_agents": net.n_agents, "heads": net.heads, "channels": net.channels, "smc": net.smc,
                         "request": net.request, "hidden": net.hidden, "head_weights": net.head_weights.tolist()},
        "training": {"params": model.get_params(), "fit_seconds": round(model.fit_seconds_, 1),
                     "final_loss": model.history_[-1]["loss"], **(training or {})},
    }
    return write_bundle(stem, arrays, meta)


def load_torch_network(name_or_path="pretrained"):
    """The torch AWRQ-Mixer network of a bundle (parity tests and benchmarks), evaluation mode."""
    import torch

    from ..bundle import read_bundle
    from ..cascade import Cascade
    from .nets import AWRQMixerNet

    arrays, meta, _ = read_bundle(name_or_path)
    arch = meta["architecture"]
    state = {k: torch.as_tensor(v) for k, v in arrays.items() if k not in ("feature_mean", "feature_scale", "cost")}
    request = arch.get("request", "separate")  # bundles written before the option have separate MLPs
    hidden = state["trunk.0.weight" if request == "shared" else "hyper_b.0.weight"].shape[0]
    net = AWRQMixerNet(Cascade(), len(meta["features"]), hidden=hidden, embed=state["embed.weight"].shape[1],
                       gru=state["grus.0.weight_hh"].shape[1], heads=arch["heads"], channels=arch["channels"], smc=arch["smc"],
                       request=request)
    net.load_state_dict(state)
    return net.eval(), arrays
