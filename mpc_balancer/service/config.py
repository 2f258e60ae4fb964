"""The service's TOML configuration, typed and validated.

The file is read, and the controller's options are checked, by :mod:`mpc_balancer.config`, as
``simulate --config`` reads its ``[mpc]`` table. Every error names the file, the key and the
value (``serve.toml: [service] lease_s must be a number > 0, got -1``); unknown keys are rejected.
Relative paths (state database, token files, a trace CSV, a policy bundle path) are relative to
the config file's directory.

Layout (see ``examples/serve.toml``)::

    [service]      period_s, lease_s, tick_timeout_s, tick_tolerance_s, stale_after_s, expected_nodes,
                   safe, safe_lam, max_feature_rows, max_report_rows, max_qps, max_body_bytes, state_db
    [clusters.NAME] capacity, target
    [controller]   name, [controller.options] (the controller's own keywords)
    [balancer]     Balancer.create keywords: lam_min, lam_max, initial_lam, max_ratio,
                   time_budget_s, response_requests, max_load, max_gap_s, max_qps_ratio,
                   max_flat_ticks
    [policy]       bundle (a bundle name or path; omit the section for telemetry-only)
    [history]      trace (name or CSV) + peak_qps [+ end], or source = "store"
    [auth]         read_token_file / read_token_env, write_token_file / write_token_env
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, check_options, controller_names, read_toml
from ..telemetry import Cluster

SAFE_MODES = ("hold_last", "lam_max", "fixed")

#: ``[service] max_body_bytes`` by default (4 MiB). The largest legitimate request of the default
#: configuration is a node report of ``max_report_rows`` = 4096 feature rows: with the shipped
#: bundle's 5 features it is 0.44 MB of compact JSON and 0.60 MB pretty-printed (``indent=2``), and
#: :func:`~mpc_balancer.service.models.largest_body_bytes` bounds it at 0.72 MB, so the default
#: leaves more than 5 times that. A service whose own limits need more refuses to start (see
#: :meth:`~mpc_balancer.service.control.ControlService.restore`).
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
#: The smallest ``max_body_bytes`` accepted: an override with a 1000-character reason, every
#: character JSON-escaped, fits in it.
MIN_MAX_BODY_BYTES = 16 * 1024


def balancer_keys() -> dict:
    """``[balancer]``'s keys: the numeric keyword options of ``Balancer.create``, each with whether
    it is an integer (read from its signature, so a new option is configurable without a copy here)."""
    import inspect

    from ..balancer import Balancer

    params = inspect.signature(Balancer.create).parameters.values()
    return {p.name: isinstance(p.default, int) for p in params if p.kind is p.KEYWORD_ONLY
            and isinstance(p.default, (int, float)) and not isinstance(p.default, bool)}


@dataclass(frozen=True)
class HistorySpec:
    """Where the forecaster's history comes from: a trace (name or CSV path) scaled to ``peak_qps``
    and cut before ``end``, or ``"store"``: the service's own stored telemetry."""

    source: str  # "trace" | "store"
    trace: str | None = None
    peak_qps: float = 20000.0
    end: str | None = None


@dataclass(frozen=True)
class ServeConfig:
    """The service's configuration, read and checked from TOML by :func:`load_config`."""

    path: Path
    clusters: dict
    controller: str
    controller_options: dict
    balancer_options: dict
    policy_bundle: str | None
    history: HistorySpec
    read_tokens: tuple
    write_tokens: tuple
    state_db: Path
    period_s: float = 60.0
    lease_s: float = 180.0
    tick_timeout_s: float = 60.0
    tick_tolerance_s: float = 6.0  # a report within this of an open tick's time joins it (default period_s / 10)
    stale_after_s: float = 120.0
    expected_nodes: int = 0
    safe: str = "hold_last"
    safe_lam: dict = field(default_factory=dict)
    max_feature_rows: int = 1024
    max_report_rows: int = 4096
    max_qps: float = 1e8
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # a larger request body gets 413, unread

    @property
    def cluster_names(self) -> tuple:
        """Cluster names in configuration order (the order of every array)."""
        return tuple(self.clusters)

    @property
    def lam_min(self) -> float:
        """Lower bound of lambda (``[balancer] lam_min``, default 1e-5)."""
        return float(self.balancer_options.get("lam_min", 1e-5))

    @property
    def lam_max(self) -> float:
        """Upper bound of lambda (``[balancer] lam_max``, default 10)."""
        return float(self.balancer_options.get("lam_max", 10.0))

    @property
    def max_load(self) -> float:
        """Largest plausible load fraction (``[balancer] max_load``, default 10)."""
        return float(self.balancer_options.get("max_load", 10.0))

    def fingerprint(self) -> dict:
        """What a stored checkpoint depends on: a restart with a different one refuses the database."""
        return {"clusters": {k: [c.capacity, c.target] for k, c in self.clusters.items()}, "controller": self.controller,
                "controller_options": self.controller_options, "balancer": self.balancer_options,
                "policy": self.policy_bundle, "history": [self.history.source, self.history.trace, self.history.peak_qps,
                                                          self.history.end], "period_s": self.period_s}


class _Section:
    """Reads one TOML table, remembering which keys were used so that the rest can be rejected."""

    def __init__(self, path: Path, name: str, table):
        self.path, self.name = path, name
        if not isinstance(table, dict):
            self.fail(f"must be a table, got {table!r}")
        self.table, self.used = table, set()

    def fail(self, msg: str):
        raise ConfigError(f"{self.path}: [{self.name}] {msg}")

    def get(self, key, default=None):
        self.used.add(key)
        return self.table.get(key, default)

    def number(self, key, default, *, low=0.0, low_open=True, integer=False):
        v = self.get(key, default)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > low if low_open else v >= low) and (not integer or float(v).is_integer())
        if not ok:
            kind = "an integer" if integer else "a number"
            self.fail(f"{key} must be {kind} {'>' if low_open else '>='} {low:g}, got {v!r}")
        return int(v) if integer else float(v)

    def string(self, key, default=None, choices=None):
        v = self.get(key, default)
        if v is None and default is None:
            return None
        if not isinstance(v, str) or not v or (choices and v not in choices):
            extra = f" (one of {', '.join(choices)})" if choices else ""
            self.fail(f"{key} must be a non-empty string{extra}, got {v!r}")
        return v

    def done(self):
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            self.fail(f"unknown keys {unknown}")


def _path(base: Path, p: str) -> Path:
    q = Path(os.path.expanduser(p))
    return q if q.is_absolute() else (base / q)


def _tokens(sec: _Section, scope: str, base: Path) -> tuple:
    file_key, env_key = f"{scope}_token_file", f"{scope}_token_env"
    f, env = sec.string(file_key), sec.string(env_key)
    if (f is None) == (env is None):
        sec.fail(f"give exactly one of {file_key} (a file of tokens, one a line) or {env_key} (an environment variable)")
    if f is not None:
        p = _path(base, f)
        try:
            text = p.read_text()
        except OSError as e:
            sec.fail(f"{file_key} = {f!r}: cannot read {p} ({e.strerror})")
        where = f"{file_key} = {f!r}"
    else:
        text = os.environ.get(env, "")
        where = f"{env_key} = {env!r}: environment variable {env}"
    toks = tuple(t.strip() for t in text.splitlines() if t.strip() and not t.strip().startswith("#"))
    if not toks:
        sec.fail(f"{where} holds no token")
    short = [t for t in toks if len(t) < 16]
    if short:
        sec.fail(f"{where}: tokens must be at least 16 characters (got one of {len(short[0])})")
    return toks


def load_config(path: str | Path, state_db: str | Path | None = None) -> ServeConfig:
    """Read and validate a service config; ``state_db`` overrides ``[service] state_db``."""
    path = Path(path)
    raw = read_toml(path)
    base = path.resolve().parent
    known = {"service", "clusters", "controller", "balancer", "policy", "history", "auth"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown sections {unknown} (known: {sorted(known)})")
    for need in ("clusters", "controller", "history", "auth"):
        if need not in raw:
            raise ConfigError(f"{path}: missing section [{need}]")

    cl = raw["clusters"]
    if not isinstance(cl, dict) or not cl:
        raise ConfigError(f"{path}: [clusters] must hold one table per cluster, e.g. [clusters.rank] capacity = 8e5")
    clusters = {}
    for name, table in cl.items():
        sec = _Section(path, f"clusters.{name}", table)
        cap = sec.number("capacity", None)
        target = sec.number("target", 0.9)
        if target > 1:
            sec.fail(f"target must be a load fraction in (0, 1], got {target!r}")
        sec.done()
        clusters[name] = Cluster(capacity=cap, target=target)

    sec = _Section(path, "controller", raw["controller"])
    controller = sec.string("name")
    if controller is None:
        sec.fail("name is required (static, dcaf, pid, mpc, ...)")
    from ..controllers import REGISTRY

    embeddable = [n for n in controller_names() if not REGISTRY[n].clairvoyant]  # hindsight needs the simulator
    if controller not in embeddable:
        why = " (the hindsight limit is shown the coming tick by the simulator; a service never has it)" \
            if controller in controller_names() else ""
        sec.fail(f"name must be one of {', '.join(embeddable)}, got {controller!r}{why}")
    options = sec.get("options", {})
    if not isinstance(options, dict):
        sec.fail(f"options must be a table, got {options!r}")
    sec.done()
    check_options(controller, options, f"{path}: [controller.options]")  # the same checks as `simulate --config`

    sec = _Section(path, "balancer", raw.get("balancer", {}))
    balancer = {}
    for key, integer in balancer_keys().items():
        if key in sec.table:
            balancer[key] = sec.number(key, None, integer=integer)
    sec.done()

    policy = None
    if "policy" in raw:
        sec = _Section(path, "policy", raw["policy"])
        policy = sec.string("bundle")
        if policy is None:
            sec.fail("bundle is required (\"pretrained\" or a bundle path); omit [policy] for telemetry-only")
        if policy != "pretrained" and ("/" in policy or policy.endswith((".json", ".npz"))):
            policy = str(_path(base, policy))
        sec.done()

    sec = _Section(path, "history", raw["history"])
    source = sec.string("source", "trace", choices=("trace", "store"))
    if source == "trace":
        trace = sec.string("trace")
        if trace is None:
            sec.fail("trace is required (a bundled name: nasa, elb, nyc-taxi, or a CSV path), or set source = \"store\"")
        from ..traces import BUNDLED

        if trace not in BUNDLED:
            trace = str(_path(base, trace))
        end = sec.string("end")
        if end is not None:
            import pandas as pd

            try:
                pd.Timestamp(end)
            except (TypeError, ValueError):
                sec.fail(f"end must be a timestamp, got {end!r}")
        history = HistorySpec("trace", trace=trace, peak_qps=sec.number("peak_qps", 20000.0), end=end)
    else:
        history = HistorySpec("store")
    sec.done()

    sec = _Section(path, "auth", raw["auth"])
    read_tokens, write_tokens = _tokens(sec, "read", base), _tokens(sec, "write", base)
    sec.done()

    sec = _Section(path, "service", raw.get("service", {}))
    period = sec.number("period_s", 60.0)
    svc = dict(period_s=period, lease_s=sec.number("lease_s", 3 * period), tick_timeout_s=sec.number("tick_timeout_s", period),
               tick_tolerance_s=sec.number("tick_tolerance_s", period / 10, low=0, low_open=False),
               stale_after_s=sec.number("stale_after_s", 2 * period),
               expected_nodes=sec.number("expected_nodes", 0, low=0, low_open=False, integer=True),
               safe=sec.string("safe", "hold_last", choices=SAFE_MODES),
               max_feature_rows=sec.number("max_feature_rows", 1024, low=1, low_open=False, integer=True),
               max_report_rows=sec.number("max_report_rows", 4096, low=1, low_open=False, integer=True),
               max_qps=sec.number("max_qps", 1e8),
               max_body_bytes=sec.number("max_body_bytes", DEFAULT_MAX_BODY_BYTES, low=MIN_MAX_BODY_BYTES, low_open=False,
                                         integer=True))
    if svc["tick_tolerance_s"] >= period / 2:  # reports one period apart must never be taken for one tick
        sec.fail(f"tick_tolerance_s must be below period_s / 2 = {period / 2:g} (reports one period apart are two "
                 f"ticks), got {sec.table['tick_tolerance_s']!r}")
    safe_lam = sec.get("safe_lam", {})
    lam_min, lam_max = balancer.get("lam_min", 1e-5), balancer.get("lam_max", 10.0)
    if svc["safe"] == "fixed":
        if not isinstance(safe_lam, dict) or set(safe_lam) != set(clusters):
            sec.fail(f"safe = \"fixed\" needs safe_lam with one value per cluster {list(clusters)}, got {safe_lam!r}")
        for k, v in safe_lam.items():
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and lam_min <= v <= lam_max):
                sec.fail(f"safe_lam.{k} must be a number in [lam_min, lam_max] = [{lam_min:g}, {lam_max:g}], got {v!r}")
        svc["safe_lam"] = {k: float(safe_lam[k]) for k in clusters}
    elif "safe_lam" in sec.table:
        sec.fail(f"safe_lam is only read with safe = \"fixed\" (safe is {svc['safe']!r})")
    db = sec.string("state_db", "mpc-balancer-state.sqlite")
    sec.done()
    db_path = Path(state_db) if state_db is not None else _path(base, db)
    return ServeConfig(path=path, clusters=clusters, controller=controller, controller_options=dict(options),
                       balancer_options=balancer, policy_bundle=policy, history=history, read_tokens=read_tokens,
                       write_tokens=write_tokens, state_db=db_path, **svc)
