"""A serving node's client of ``mpc-balancer serve`` (stdlib only: urllib + json).

::

    from mpc_balancer.client import BalancerClient
    c = BalancerClient("http://127.0.0.1:8080", token=WRITE_TOKEN, node="node-7",
                       safe_lam={"retrieval": 1.0, "prerank": 1.0, "rank": 1.0})
    c.report(time=ts, qps=812.0, load={...}, lam=current_lam,        # once per tick, off the request path
             over=dict(zip(clusters, guard.take_over())))             # the node guard's count (optional)
    d = c.decision()                                                  # e.g. every few seconds
    d.lam                                                             # apply this

The serving path never calls the service per request: it applies the last ``decision()``.
:meth:`BalancerClient.decision` keeps the last decision it received (conditional GETs with its
ETag) and falls back by itself:

* the service answers: its decision (``source="service"``), whatever its status (``ok``,
  ``fallback``, ``hold``, ``override``);
* the service does not answer (refused, timed out, 5xx), or its answer cannot be read (not
  HTTP, cut short, not JSON, not a decision: :class:`BadResponse`, never cached): the cached
  decision while its lease lasts (``source="cache"``);
* the lease is over (``now > valid_until``): the decision's ``safe_lam`` (``status="expired"``,
  ``source="safe"``);
* nothing received yet: the client's own ``safe_lam`` (``status="no-decision"``), or
  :class:`ServiceUnavailable` if none was given.

Leases compare ``valid_until`` with this host's clock: keep the nodes' clocks synchronised (NTP);
a skew of ``s`` seconds moves the expiry by ``s``.
"""
from __future__ import annotations

import decimal
import http.client
import json
import math
import numbers
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone


class ServiceError(Exception):
    """The service answered with an error status (``status``, ``detail`` as it sent them)."""

    def __init__(self, status: int, detail):
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class BadResponse(Exception):
    """The service's answer could not be read: not HTTP, cut short, not JSON, or not a decision."""


class ServiceUnavailable(Exception):
    """No decision can be given: the service is unreachable and no fallback is known."""


class NotReady(TimeoutError):
    """:meth:`BalancerClient.wait_ready` gave up: the service did not answer ``/readyz`` with 200 in time."""


@dataclass(frozen=True)
class LeasedDecision:
    """What a node applies now: ``lam`` per cluster; ``status`` (the service's, or ``expired`` /
    ``no-decision``), ``source`` (``service`` | ``cache`` | ``safe``), ``version`` (0 if none),
    ``valid_until`` (None if none) and ``reason``."""

    lam: dict
    status: str
    source: str
    version: int
    valid_until: datetime | None
    reason: str


def _parse_time(s: str) -> datetime:
    t = datetime.fromisoformat(s)
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def _check_decision(body) -> None:
    """A decision body as :meth:`BalancerClient.decision` reads it, or :class:`BadResponse`."""
    need = ("lam", "safe_lam", "status", "version", "valid_until", "reason")
    if not (isinstance(body, dict) and all(k in body for k in need)):
        raise BadResponse(f"GET /v1/decision: not a decision (need {', '.join(need)}), got {str(body)[:80]!r}")
    try:
        _parse_time(body["valid_until"])
        ok = all(isinstance(body[k], dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in body[k].values())
                 for k in ("lam", "safe_lam"))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise BadResponse(f"GET /v1/decision: a decision with unreadable lam, safe_lam or valid_until: {str(body)[:80]!r}")


class BalancerClient:
    """HTTP client of one node (or scheduler). ``token``: a write token to report, a read token
    suffices for :meth:`decision`."""

    def __init__(self, url: str, token: str, node: str | None = None, timeout_s: float = 2.0,
                 safe_lam: dict | None = None):
        self.url, self.token, self.node, self.timeout_s = url.rstrip("/"), token, node, float(timeout_s)
        self.safe_lam = None if safe_lam is None else dict(safe_lam)
        self._cached: dict | None = None
        self._etag: str | None = None
        self.last_error: str | None = None

    # -- transport ------------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, headers: dict | None = None,
                timeout_s: float | None = None) -> tuple[int, dict, object]:
        """(status, headers, decoded JSON or None); raises ServiceError for 4xx/5xx, OSError when unreachable,
        BadResponse when the answer cannot be read. ``timeout_s``: this request's (default the client's)."""
        data = None if body is None else json.dumps(body, allow_nan=False).encode()
        h = {"Authorization": f"Bearer {self.token}", "Accept": "application/json", **(headers or {})}
        if data is not None:
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s if timeout_s is None else timeout_s) as resp:
                raw = resp.read()
                try:
                    return resp.status, dict(resp.headers), json.loads(raw) if raw else None
                except ValueError:  # JSONDecodeError, UnicodeDecodeError
                    raise BadResponse(f"{method} {path}: HTTP {resp.status} with a body that is not JSON: {raw[:80]!r}") from None
        except http.client.HTTPException as e:  # not HTTP, or a body cut short (IncompleteRead)
            if isinstance(e, OSError):  # RemoteDisconnected: closed without an answer, i.e. unreachable
                raise
            raise BadResponse(f"{method} {path}: {type(e).__name__}: {e}") from None
        except urllib.error.HTTPError as e:
            if e.code == 304:
                return 304, dict(e.headers), None
            raw = e.read()
            try:
                detail = json.loads(raw).get("detail", raw.decode(errors="replace"))
            except (ValueError, AttributeError):
                detail = raw.decode(errors="replace")
            raise ServiceError(e.code, detail) from None

    @staticmethod
    def _tick(time, qps, load, lam, features, over) -> dict:
        t = time.isoformat() if hasattr(time, "isoformat") else str(time)
        for name, v in (("qps", {"": qps}), ("load", load), ("lam", lam), ("over", {} if over is None else over)):
            for k, x in dict(v).items():
                if isinstance(x, (bool, str, bytes)) or not isinstance(x, (numbers.Real, decimal.Decimal)) or not math.isfinite(x):
                    raise ValueError(f"{name}{f'[{k}]' if k else ''} must be a finite number, got {x!r}")
        x = None
        if features is not None:
            x = features.tolist() if hasattr(features, "tolist") else [list(map(float, r)) for r in features]
        return {"time": t, "qps": float(qps), "load": {k: float(v) for k, v in dict(load).items()},
                "lam": {k: float(v) for k, v in dict(lam).items()}, "features": x,
                "over": None if over is None else {k: float(v) for k, v in dict(over).items()}}

    # -- telemetry ------------------------------------------------------------------------------
    def report(self, time, qps: float, load: dict, lam: dict, features=None, over: dict | None = None) -> dict:
        """Post this node's report for the tick ending at ``time`` (``POST /v1/telemetry``);
        ``over``: the over-utilisation the node saw (e.g. its
        :meth:`~mpc_balancer.guard.NodeGuard.take_over`), see :class:`~mpc_balancer.telemetry.Telemetry`.
        Raises ServiceError (422: the body names the bad field; 409: tick already closed)."""
        if self.node is None:
            raise ValueError("report needs the client's node name (BalancerClient(..., node=...))")
        return self.request("POST", "/v1/telemetry", {"node": self.node, **self._tick(time, qps, load, lam, features, over)})[2]

    def step(self, time, qps: float, load: dict, lam: dict, features=None, over: dict | None = None) -> dict:
        """A whole tick for a scheduler that owns the clock (``POST /v1/step``): the decision body."""
        body = self.request("POST", "/v1/step", self._tick(time, qps, load, lam, features, over))[2]
        _check_decision(body)
        self._cached, self._etag = body, f'"v{body["version"]}"'
        return body

    # -- decisions ------------------------------------------------------------------------------
    def fetch(self) -> dict:
        """The service's decision body (conditional GET; the cached body on 304). Raises when unreachable."""
        status, headers, body = self.request("GET", "/v1/decision", headers={"If-None-Match": self._etag} if self._etag else None)
        if status != 304:
            _check_decision(body)  # a malformed answer never replaces the cached decision
            self._cached, self._etag = body, headers.get("ETag") or headers.get("etag")
        return self._cached

    def decision(self, now: datetime | None = None) -> LeasedDecision:
        """The lambda to apply now, with the lease and the safe fallback handled (see the module doc)."""
        source = "service"
        try:
            self.fetch()
            self.last_error = None
        except (OSError, ServiceError, BadResponse) as e:  # OSError covers refused, reset and timed-out connections
            if isinstance(e, ServiceError) and e.status < 500 and e.status != 404:
                raise  # 401/403/...: a configuration error, not an outage
            self.last_error, source = str(e), "cache"
        d = self._cached
        if d is None:
            if self.safe_lam is None:
                raise ServiceUnavailable(f"no decision received and no safe_lam given ({self.last_error})")
            return LeasedDecision(dict(self.safe_lam), "no-decision", "safe", 0, None,
                                  f"no decision received yet ({self.last_error})")
        valid = _parse_time(d["valid_until"])
        if now is not None and (not isinstance(now, datetime) or now.tzinfo is None):
            raise ValueError(f"now must be a timezone-aware datetime (e.g. datetime.now(timezone.utc)), got {now!r}")
        now = now or datetime.now(timezone.utc)
        if now > valid:
            return LeasedDecision(dict(d["safe_lam"]), "expired", "safe", d["version"], valid,
                                  f"lease of version {d['version']} ended at {d['valid_until']}")
        return LeasedDecision(dict(d["lam"]), d["status"], source, d["version"], valid, d["reason"])

    # -- operators ------------------------------------------------------------------------------
    def override(self, lam: dict, until: datetime, by: str, reason: str = "") -> dict:
        """Set a manual override: ``lam`` per cluster until ``until``, recorded in the audit log as ``by`` with ``reason``."""
        return self.request("PUT", "/v1/override", {"lam": lam, "until": until.isoformat(), "by": by, "reason": reason})[2]

    def clear_override(self, by: str, reason: str = "") -> dict:
        """End the active override early (recorded in the audit log as ``by`` with ``reason``)."""
        from urllib.parse import urlencode

        return self.request("DELETE", "/v1/override?" + urlencode({"by": by, "reason": reason}))[2]

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until ``/readyz`` answers 200 (the state restored), or raise :class:`NotReady` (a
        TimeoutError) naming the last problem (refused, timed out, 503, ...). Tried at least once;
        each attempt is cut to the time left (but given at least 1 s), so an address that takes
        connections and never answers is not waited on for the client's ``timeout_s`` past the deadline."""
        import time

        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            try:
                status = self.request("GET", "/readyz", timeout_s=min(self.timeout_s, max(deadline - time.monotonic(), 1.0)))[0]
                if status == 200:
                    return
                last = f"HTTP {status}"
            except (OSError, ServiceError, BadResponse) as e:  # still starting: refused, closed, half an answer
                last = str(getattr(e, "reason", None) or e) or type(e).__name__
            if time.monotonic() > deadline:
                raise NotReady(f"{self.url} not ready within {timeout_s:g} s (last attempt: {last})")
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))

    def info(self) -> dict:
        """The service's configuration summary (``GET /v1/info``)."""
        return self.request("GET", "/v1/info")[2]
