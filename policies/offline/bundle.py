"""Saving and loading fitted sequence models without pickle.

A bundle is a directory with ``model.npz`` (the network's parameters under ``param/<name>`` and
array-valued learned state under ``state/<name>``) and ``model.json`` (class, constructor
parameters, scalar learned state, and the sha256 of the npz, checked on load).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .baselines import BehaviourCloning, DecisionTransformer, DiscreteCQL
from .mtorl import MTORL

MODEL_CLASSES = {c.__name__: c for c in (MTORL, BehaviourCloning, DecisionTransformer, DiscreteCQL)}
FORMAT_VERSION = 1


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_model(model, directory) -> Path:
    """Write ``model`` (fitted) to ``directory``; returns the directory."""
    model._check_fitted()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays, scalars = {}, {}
    for k, v in model.params_.items():
        arrays[f"param/{k}"] = np.asarray(v)
    for k, v in vars(model).items():
        if not k.endswith("_") or k == "params_":
            continue
        if isinstance(v, np.ndarray):
            arrays[f"state/{k}"] = v
        elif isinstance(v, (int, float, str, bool, dict, list)) or v is None:
            scalars[k] = v
    npz = d / "model.npz"
    np.savez(npz, **arrays)
    meta = {"format_version": FORMAT_VERSION, "class": type(model).__name__,
            "params": model.get_params(), "learned": scalars, "npz_sha256": _sha256(npz)}
    (d / "model.json").write_text(json.dumps(meta, indent=2, default=float))
    return d


def load_model(directory):
    """Load a model written by :func:`save_model` (checks the npz's sha256)."""
    d = Path(directory)
    meta_path, npz = d / "model.json", d / "model.npz"
    if not meta_path.exists() or not npz.exists():
        raise FileNotFoundError(f"{d}: expected model.json and model.npz")
    meta = json.loads(meta_path.read_text())
    if meta.get("npz_sha256") != _sha256(npz):
        raise ValueError(f"{npz}: sha256 does not match model.json (corrupted or replaced)")
    cls = MODEL_CLASSES.get(meta.get("class"))
    if cls is None:
        raise ValueError(f"{meta_path}: unknown model class {meta.get('class')!r}")
    model = cls(**meta["params"])
    for k, v in meta["learned"].items():
        setattr(model, k, v)
    params = {}
    with np.load(npz, allow_pickle=False) as z:
        for key in z.files:
            kind, name = key.split("/", 1)
            if kind == "param":
                params[name] = z[key]
            else:
                setattr(model, name, z[key])
    model.params_ = params
    return model
