"""The control loop behind the HTTP endpoints: ticks, steps, leases, holds and overrides.

:class:`ControlService` owns one :class:`~mpc_balancer.balancer.Balancer`. Set it up
(``setup``: open the database, serve the last stored decision at once), then ``restore`` (build
the Balancer from the config -- policy bundle, history, forecaster fit -- and load the stored
checkpoint; only then is it ready), then feed it:

* ``report(node report)``: node reports are aggregated per tick; a tick closes
  when ``expected_nodes`` distinct nodes have reported, or ``tick_timeout_s`` of wall clock after
  its first report (``poll``); closing steps the Balancer once on the aggregate;
* ``step(tick)``: a scheduler that owns the clock sends whole ticks and gets the decision back.

Which tick a report belongs to. The nodes of a fleet stamp a tick's end with their own clocks, so
the stamps of one tick can differ by clock skew and rounding (13:46:00 and 13:46:00.000001).
Grouping on equal stamps split such a tick into two, each stepped on part of the fleet (half the
QPS, the PID stepped twice). So times are compared at a resolution of ``tick_tolerance_s``
(default ``period_s / 10``, below ``period_s / 2`` so that reports one period apart never meet): a
report whose time lies within it of an open tick's time joins that tick (the nearest, if two),
under the tick's time, which is the time of the tick's first report (the node's own stamp is kept
as ``sent_time``); a report for no open tick opens one at its own time. Grouping on a fixed grid
(rounding times to ``period_s`` since the epoch) was not taken: it would move every tick of a
fleet whose ticks end off that grid, and split those whose stamps straddle a rounding boundary.

A report or tick whose time is not after the last stepped tick by more than ``tick_tolerance_s``
is refused (409): it belongs to that closed tick, so a retry never steps twice.

Every published decision gets a new ``version``. The lease
(``valid_until = issued_at + lease_s``) is renewed only by a step on fresh telemetry or by an
operator's override; when no telemetry arrives for ``stale_after_s`` the service publishes
status ``hold`` (same lambda, lease *not* renewed), so nodes see the hold and then, past
``valid_until``, apply ``safe_lam``: ``hold_last`` (the decision's own lambda), ``lam_max``, or
``fixed`` values from the config.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from ..balancer import Balancer
from .aggregate import NodeReport, aggregate
from .config import ServeConfig
from .metrics import ServiceMetrics
from .models import largest_body_bytes
from .store import StateStore

log = logging.getLogger("mpc_balancer.service")


class Conflict(ValueError):
    """A report or tick for a time that is already closed (HTTP 409)."""


class NotReady(RuntimeError):
    """The state is not restored yet (HTTP 503)."""


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def _parse_iso(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def build_history(config: ServeConfig, store: StateStore) -> pd.Series | None:
    """The forecaster's history: the configured trace (rate at the control period, scaled to
    ``peak_qps``, before ``end``), or the ticks this database stored before its Balancer's first set-up."""
    h = config.history
    if h.source == "trace":
        from ..traces import load_trace
        from ..traffic import Traffic

        traffic = Traffic(load_trace(h.trace), period_s=config.period_s, peak_qps=h.peak_qps)
        series = pd.Series(traffic.rate_qps, index=traffic.times)
        if h.end is not None:
            series = series[series.index < pd.Timestamp(h.end)]
        return series
    until = store.get_meta("history_until")
    if until is None:  # fixed at the first set-up, so that a restart rebuilds the same history
        last = store.ticks()
        until = last[-1][0] if last else ""
        store.set_meta("history_until", until)
    rows = store.ticks(until=until)
    if not rows:
        return None
    return pd.Series([q for _, q in rows], index=pd.DatetimeIndex([pd.Timestamp(t) for t, _ in rows]))


class ControlService:
    """One Balancer behind the service's endpoints (see the module doc)."""

    def __init__(self, config: ServeConfig, refit: bool = False):
        self.config, self.refit = config, refit
        self.tolerance = pd.Timedelta(seconds=config.tick_tolerance_s)
        self._lock = threading.RLock()
        self.ready = False
        self.failure: str | None = None
        self.current: dict | None = None  # the published decision (a new dict per version; read without the lock)

    # -- life cycle -----------------------------------------------------------------------------
    def setup(self) -> ControlService:
        """Open the store, build or restore the Balancer, and mark the service ready; returns ``self``."""
        c = self.config
        self.store = StateStore(c.state_db).open()
        if self.refit:
            self.store.discard_checkpoint()
        self.store.check_fingerprint(c.fingerprint())
        self.metrics = ServiceMetrics(c.cluster_names)
        self.current = self.store.last_decision()
        self._base = self._override = None
        if self.current is not None:  # the controller's view under an override is stored beside it
            self._base = self.current.pop("_base", None) or {k: v for k, v in self.current.items()
                                                              if k not in ("version", "safe_lam")}
        self._version = 0 if self.current is None else self.current["version"]
        if self.current is not None:
            self.metrics.on_decision(self.current, count=False)
        self._pending: dict[pd.Timestamp, dict[str, NodeReport]] = {}
        self._opened: dict[pd.Timestamp, float] = {}  # tick -> wall time of its first report
        self._last_tick: pd.Timestamp | None = None
        self._last_telemetry = time.time()  # a restarted service is not stale at once
        self._stale = False
        self.policy = None
        self.n_features = None
        return self

    def restore(self) -> ControlService:
        """Build the Balancer, load the checkpoint and the open ticks' reports; then ready."""
        c = self.config
        try:
            if c.policy_bundle is not None:
                from policies.runtime import PolicyRuntime

                self.policy = PolicyRuntime.load(c.policy_bundle)
                self.n_features = len(self.policy.features)
            need = largest_body_bytes(c.max_report_rows, self.n_features or 0, c.cluster_names)
            if need > c.max_body_bytes:  # a legitimate report would get 413: refuse to start instead
                raise ValueError(f"{c.path}: [service] max_body_bytes = {c.max_body_bytes} is below the largest request "
                                 f"this service accepts, up to {need} bytes of JSON (a report of max_report_rows = "
                                 f"{c.max_report_rows} rows of {self.n_features or 0} features): raise max_body_bytes "
                                 f"to at least {need} or lower max_report_rows")
            history = build_history(c, self.store)
            bal = Balancer.create(controller=c.controller, clusters=dict(c.clusters), policy=self.policy, history=history,
                                  period_s=c.period_s, **c.balancer_options, **c.controller_options)
            ckpt = self.store.checkpoint()
            with self._lock:
                self.balancer = bal
                if ckpt is not None:
                    state, tick_time, written = ckpt
                    bal.load_state_dict(state)
                    self._last_tick = pd.Timestamp(tick_time)
                    if bal.suspect_time_ == self._last_tick:  # a held jump closes no tick (see _step)
                        self._last_tick = bal.last_time_
                    self.metrics.last_checkpoint = written
                self._override = self.store.get_meta("override")
                for d in self.store.pending_reports():
                    r = NodeReport.from_json(d)
                    self._pending.setdefault(r.time, {})[r.node] = r
                    self._opened.setdefault(r.time, r.received)
                if self.current is None:  # a fresh database: the initial lambda, until the first tick
                    lam = {k: float(v) for k, v in zip(c.cluster_names, bal.last_good_)}
                    self._publish({"time": None, "lam": lam, "status": "hold", "reason": "no telemetry yet",
                                   "controller": "initial", "plan": None, "reports": 0}, renew=True)
                self.ready = True
                self.metrics.ready.set(1)
                self.metrics.override.set(0 if self._override is None else 1)
            log.info("state restored (%s), ready", "checkpoint of tick " + str(self._last_tick) if ckpt else "fresh")
        except Exception as e:  # noqa: BLE001 -- reported by /readyz and the CLI
            self.failure = f"{type(e).__name__}: {e}"
            log.error("restore failed: %s", self.failure)
            raise
        return self

    def close(self) -> None:
        """Close the state store."""
        self.store.close()

    # -- decisions ------------------------------------------------------------------------------
    def safe_lam(self, lam: dict) -> dict:
        """The lambda the configured safe mode gives when the service cannot decide."""
        c = self.config
        if c.safe == "lam_max":
            return {k: c.lam_max for k in c.cluster_names}
        if c.safe == "fixed":
            return dict(c.safe_lam)
        return dict(lam)

    def _publish(self, base: dict, renew: bool, step_state: tuple | None = None, renew_override: bool = False) -> dict:
        """Publish a new version from ``base`` (the controller's view), with the override on top.

        ``renew``: a step on fresh telemetry (or the first decision) starts a new lease; otherwise
        the base keeps its ``valid_until``. An override's lease starts when it is set and is renewed
        by steps while it lasts."""
        now = time.time()
        self._version += 1
        valid = now + self.config.lease_s if renew or self._base is None else _parse_iso(self._base["valid_until"])
        base = {**base, "issued_at": _iso(now), "valid_until": _iso(valid)}
        body = {**base, "version": self._version}
        ov = self._override
        if ov is not None:
            prev = self.current["valid_until"] if self.current is not None else base["valid_until"]
            body.update(lam={**base["lam"], **ov["lam"]}, status="override", controller="override",
                        reason=f"override by {ov['by']} until {ov['until']}" + (f": {ov['reason']}" if ov["reason"] else ""),
                        valid_until=_iso(now + self.config.lease_s) if renew or renew_override else prev)
        body["safe_lam"] = self.safe_lam(body["lam"])
        body = {k: body[k] for k in ("version", "time", "lam", "status", "reason", "controller", "issued_at",
                                     "valid_until", "safe_lam", "plan", "reports")}
        stored = {**body, "_base": base} if ov is not None else body
        if step_state is not None:
            state, qps, n = step_state
            self.store.commit_step(stored, state, qps, n)
            self.metrics.last_checkpoint = time.time()
        else:
            self.store.add_decision(stored)
        self._base = base
        self.current = body
        self.metrics.on_decision(body)
        return body

    def decision(self) -> dict:
        """The current decision; ``NotReady`` before the first one."""
        if self.current is None:
            raise NotReady("no decision issued yet")
        return self.current

    def decisions(self, after: int, limit: int) -> list[dict]:
        """Stored decisions after version ``after``, at most ``limit``."""
        return [{k: v for k, v in d.items() if k != "_base"} for d in self.store.decisions(after, limit)]

    # -- telemetry ------------------------------------------------------------------------------
    def _check_open(self, t: pd.Timestamp) -> None:
        if not self.ready:
            raise NotReady(self.failure or "restoring state")
        if self._last_tick is not None and t <= self._last_tick + self.tolerance:
            self.metrics.reports.labels("late").inc()
            within = f" by more than tick_tolerance_s {self.config.tick_tolerance_s:g} s" if self.config.tick_tolerance_s > 0 else ""
            raise Conflict(f"time {t} is not after the last stepped tick {self._last_tick}{within}: that tick is closed")
        held = self.balancer.suspect_time_  # a closed tick the Balancer holds as a forward jump (it set no _last_tick)
        if held is not None and abs(t - held) <= self.tolerance:  # a straggler would confirm the jump on its own
            self.metrics.reports.labels("late").inc()
            raise Conflict(f"time {t} belongs to the tick {held}, which is closed: its time is held as a forward jump "
                           "until a later tick confirms it")

    def _open_tick(self, t: pd.Timestamp) -> pd.Timestamp | None:
        """The open tick a time belongs to: the nearest within ``tick_tolerance_s`` (the earlier of
        two as near), or None."""
        near = [k for k in self._pending if abs(k - t) <= self.tolerance]
        return min(near, key=lambda k: (abs(k - t), k)) if near else None

    def report(self, r: NodeReport) -> dict:
        """Accept one node's report for a tick; the tick closes and steps once ``expected_nodes`` reported (else on the service's clock)."""
        with self._lock:
            self._check_open(r.time)
            tick = self._open_tick(r.time)
            if tick is not None and tick != r.time:  # the node's stamp is the tick's, give or take the tolerance
                r = dataclasses.replace(r, time=tick, sent_time=r.time)
            self.store.add_report(r.time.isoformat(), r.node, r.to_json())
            self._pending.setdefault(r.time, {})[r.node] = r
            self._opened.setdefault(r.time, r.received)
            self._last_telemetry = r.received
            self.metrics.last_telemetry = r.received
            self.metrics.reports.labels("accepted").inc()
            n = len(self._pending[r.time])
            closed = bool(self.config.expected_nodes) and n >= self.config.expected_nodes
            if closed:
                self._close_through(r.time)
            return {"accepted": True, "time": r.time.isoformat(), "nodes": n, "closed": closed,
                    "version": self.current["version"]}

    def step(self, tel_time: pd.Timestamp, telemetry) -> dict:
        """A whole tick from a scheduler: close earlier open ticks, then step this one."""
        with self._lock:
            self._check_open(tel_time)
            tick = self._open_tick(tel_time)
            if tick is not None:  # one tick is stepped once: by its nodes' reports or by a scheduler
                raise Conflict(f"tick {tick} has {len(self._pending[tick])} node report(s) open: it closes "
                               "with them (POST /v1/telemetry), not by POST /v1/step")
            self._close_before(tel_time)
            self._last_telemetry = time.time()
            self.metrics.last_telemetry = self._last_telemetry
            return self._step(telemetry, n_reports=1)

    def _close_before(self, t: pd.Timestamp) -> None:
        for tick in sorted(k for k in self._pending if k < t):
            self._close(tick)

    def _close_through(self, t: pd.Timestamp) -> None:
        self._close_before(t)
        self._close(t)

    def _close(self, tick: pd.Timestamp) -> None:
        reports = list(self._pending.pop(tick).values())
        self._opened.pop(tick, None)
        tel = aggregate(reports, self.config.cluster_names, self.config.max_feature_rows)
        self._step(tel, n_reports=len(reports))

    def _step(self, tel, n_reports: int) -> dict:
        t0 = time.perf_counter()
        d = self.balancer.step(tel)
        self.metrics.step_seconds.observe(time.perf_counter() - t0)
        if d.status != "ok":
            self.metrics.fallbacks.labels(d.status).inc()
        plan = None
        if d.plan is not None and d.plan.lam_plan is not None:
            plan = {"lam": np.asarray(d.plan.lam_plan, dtype=float).tolist(),
                    "load": None if d.plan.load_plan is None else np.asarray(d.plan.load_plan, dtype=float).tolist()}
        t = pd.Timestamp(tel.time)
        if self.balancer.suspect_time_ != t:  # a forward jump held until a report confirms it closes no tick
            self._last_tick = t
        self._stale = False
        self.metrics.nodes.set(n_reports)
        base = {"time": t.isoformat(), "lam": dict(d.lam), "status": d.status, "reason": d.reason,
                "controller": d.controller, "plan": plan, "reports": n_reports}
        return self._publish(base, renew=True, step_state=(self.balancer.state_dict(), float(tel.qps), n_reports))

    # -- overrides ------------------------------------------------------------------------------
    def set_override(self, lam: dict, until: datetime, by: str, reason: str) -> dict:
        """Force ``lam`` until ``until`` (audited); ``NotReady`` while restoring."""
        with self._lock:
            if not self.ready:
                raise NotReady(self.failure or "restoring state")
            until_s = until.replace(tzinfo=timezone.utc).isoformat() if until.tzinfo is None else until.isoformat()
            if _parse_iso(until_s) <= time.time():
                raise ValueError(f"until {until_s} is not in the future")
            self._override = {"lam": lam, "until": until_s, "by": by, "reason": reason}
            self.store.audit(_iso(time.time()), "set", by, lam, until_s, reason, self._override)
            self.metrics.override.set(1)
            return self._publish(self._base, renew=False, renew_override=True)

    def clear_override(self, by: str, reason: str, action: str = "clear") -> dict:
        """End the active override (audited); ``LookupError`` if none is active."""
        with self._lock:
            if self._override is None:
                raise LookupError("no override is active")
            self.store.audit(_iso(time.time()), action, by, None, None, reason, None)
            self._override = None
            self.metrics.override.set(0)
            return self._publish(self._base, renew=False)

    def audit_log(self, limit: int) -> list[dict]:
        """The last ``limit`` audit entries (overrides set, cleared, expired)."""
        return self.store.audit_log(limit)

    # -- the service's own clock ------------------------------------------------------------------
    def poll(self, now: float | None = None) -> None:
        """Close timed-out ticks, publish a hold when telemetry went stale, end expired overrides."""
        now = time.time() if now is None else now
        c = self.config
        with self._lock:
            if not self.ready:
                return
            due = [t for t, opened in self._opened.items() if now - opened >= c.tick_timeout_s]
            if due:
                self._close_through(max(due))
            if self._override is not None and now >= _parse_iso(self._override["until"]):
                self.clear_override("service", "expired", action="expire")
            if not self._stale and self._last_tick is not None and now - self._last_telemetry >= c.stale_after_s:
                self._stale = True
                base = {**self._base, "status": "hold", "controller": "hold", "plan": None,
                        "reason": f"no telemetry for {now - self._last_telemetry:.0f} s (stale_after_s {c.stale_after_s:g}); "
                                  "lease not renewed"}
                self._publish(base, renew=False)
