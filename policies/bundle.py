"""Policy bundles on disk: ``<stem>.npz`` (arrays) + ``<stem>.json`` (metadata), never pickle.

The JSON records the format version, the network kind and its architecture, the feature order and
normalisation, the action semantics (each stage's sub-actions, the joint-action order, the
clusters), the lambda range the policy was built for, the training configuration, and the sha256
of the npz. :func:`read_bundle` checks all of it and rejects a corrupted or tampered file with an
error that names the file and the mismatch.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
REQUEST_KINDS = ("separate", "shared")  # AWRQ-Mixer request side: separate MLPs or one shared trunk
KIND = "awrq-mixer"
KINDS = (KIND, "joint-q")  # AWRQ-Mixer (PolicyRuntime) and one agent over the joint action, DQN/REM (JointQRuntime)
REQUIRED_META = ("format_version", "kind", "npz_file", "npz_sha256", "features", "normalisation", "actions",
                 "lambda_range", "architecture", "training")
DATA_DIR = Path(__file__).resolve().parent / "data"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (bundles record it for each array file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shipped_bundles() -> tuple[str, ...]:
    """Names of the bundles shipped in ``policies/data`` (``pretrained``, ...)."""
    return tuple(sorted(q.stem for q in DATA_DIR.glob("*.npz")))


def resolve(name_or_path: str | Path) -> Path:
    """Path of a bundle's JSON: a name in ``policies/data`` (``"pretrained"``), a ``.json``/``.npz``
    path or its stem, or a directory holding exactly one bundle."""
    p = Path(name_or_path)
    if isinstance(name_or_path, str) and "/" not in name_or_path and not p.suffix and (DATA_DIR / f"{name_or_path}.json").exists():
        return DATA_DIR / f"{name_or_path}.json"
    if p.is_dir():
        found = sorted(p.glob("*.json"))
        if len(found) != 1:
            raise FileNotFoundError(f"{p}: expected exactly one bundle .json in the directory, found {len(found)}")
        return found[0]
    if p.suffix in (".json", ".npz"):
        p = p.with_suffix(".json")
    else:
        p = p.with_name(p.name + ".json")
    if not p.exists():
        raise FileNotFoundError(f"policy bundle {str(name_or_path)!r} not found (looked for {p}; "
                                f"shipped bundles: {', '.join(shipped_bundles()) or 'none'})")
    return p


def write_bundle(stem: str | Path, arrays: dict[str, np.ndarray], meta: dict, kind: str = KIND) -> Path:
    """Write ``stem.npz`` and ``stem.json`` for a network of ``kind`` (one of ``KINDS``); returns the JSON path."""
    if kind not in KINDS:
        raise ValueError(f"bundle kind must be one of {KINDS}, got {kind!r}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    npz = stem.with_name(stem.name + ".npz")
    np.savez(npz, **{k: np.asarray(v) for k, v in arrays.items()})
    meta = {"format_version": FORMAT_VERSION, "kind": kind, **meta, "npz_file": npz.name, "npz_sha256": sha256_file(npz)}
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"bundle metadata is missing {missing}")
    path = stem.with_name(stem.name + ".json")
    path.write_text(json.dumps(meta, indent=1))
    return path


def read_bundle(name_or_path: str | Path) -> tuple[dict[str, np.ndarray], dict, Path]:
    """(arrays, metadata, json path), after checking the metadata and the npz's sha256."""
    path = resolve(name_or_path)
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"policy bundle {path}: cannot read metadata ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"policy bundle {path}: metadata must be a JSON object")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"policy bundle {path}: metadata is missing {missing}")
    if meta["format_version"] != FORMAT_VERSION or meta["kind"] not in KINDS:
        raise ValueError(f"policy bundle {path}: unsupported format {meta['kind']!r} v{meta['format_version']} "
                         f"(this runtime reads {' and '.join(map(repr, KINDS))} v{FORMAT_VERSION})")
    for key in ("npz_file", "npz_sha256"):
        if not isinstance(meta[key], str):
            raise ValueError(f"policy bundle {path}: metadata {key} must be a string, got {meta[key]!r}")
    feats = meta["features"]
    if not (isinstance(feats, list) and feats and all(isinstance(f, str) for f in feats) and len(set(feats)) == len(feats)):
        raise ValueError(f"policy bundle {path}: metadata features must be a list of distinct names, got {feats!r}")
    lr = meta["lambda_range"]
    if not (isinstance(lr, list) and len(lr) == 2 and all(isinstance(v, (int, float)) and np.isfinite(v) for v in lr)
            and 0 <= lr[0] < lr[1]):
        raise ValueError(f"policy bundle {path}: metadata lambda_range must be [low, high] with 0 <= low < high, got {lr!r}")
    npz = path.with_name(meta["npz_file"])
    if Path(meta["npz_file"]).name != meta["npz_file"]:
        raise ValueError(f"policy bundle {path}: npz_file must be a file name next to the metadata, got {meta['npz_file']!r}")
    if not npz.exists():
        raise FileNotFoundError(f"policy bundle {path}: array file {npz} is missing")
    got = sha256_file(npz)
    if got != meta["npz_sha256"]:
        raise ValueError(f"policy bundle {npz}: sha256 {got[:16]}... does not match {meta['npz_sha256'][:16]}... "
                         f"recorded in {path.name} (corrupted or tampered)")
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"policy bundle {npz}: cannot read arrays ({type(e).__name__}: {e})") from None
    for k, a in arrays.items():
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            raise ValueError(f"policy bundle {npz}: array {k!r} has non-finite values (a corrupted or diverged model)")
    return arrays, meta, path
