"""The FastAPI app: endpoints, bearer-token scopes, readiness, metrics.

``create_app(config)`` sets up the :class:`ControlService` (its database; the last stored
decision is served at once) and returns an app whose lifespan restores the Balancer in a background thread
(``/readyz`` turns 200 when done) and runs the service's clock (tick time-outs, stale holds,
override expiry) in another.

Endpoints (JSON):

=========================  ======  ==========================================================
``POST /v1/telemetry``     write   one node's report for one tick (202)
``POST /v1/step``          write   one whole tick; returns the decision
``GET /v1/decision``       read    the decision in force (ETag; 304 on If-None-Match)
``GET /v1/decisions``      read    decision history (``after`` version, ``limit``)
``PUT /v1/override``       write   pin lambda until a time (audited)
``DELETE /v1/override``    write   end the override (``?by=...&reason=...``; audited)
``GET /v1/override/audit`` read    the audit log, newest first
``GET /v1/info``           read    clusters, controller, lease, policy and history in use
``GET /healthz``           none    the process answers
``GET /readyz``            none    200 once the state is restored and the forecaster fitted
``GET /metrics``           none    Prometheus text format
=========================  ======  ==========================================================

A write token also reads. No token or an unknown one: 401; a read token on a write endpoint:
403. A body over ``[service] max_body_bytes``: 413, before it is read (:mod:`.limits`). Bad
bodies: 422 with each bad field's location (a wrongly typed value is quoted in the message:
``Input should be a valid number, got the string "12.5"``); a closed tick: 409; not ready: 503.
"""
from __future__ import annotations

import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager

import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..telemetry import Telemetry
from .aggregate import NodeReport
from .config import ServeConfig
from .control import Conflict, ControlService, NotReady
from .limits import BodyLimit
from .metrics import CONTENT_TYPE_LATEST
from .models import OverrideIn, ReportIn, TickIn, check_tick, check_time, json_value

log = logging.getLogger("mpc_balancer.service")


def _bearer(scope: str, config: ServeConfig):
    read, write = config.read_tokens, config.write_tokens

    def known(token: str, tokens) -> bool:
        return any(hmac.compare_digest(token.encode(), t.encode()) for t in tokens)

    def check(request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "missing bearer token (Authorization: Bearer TOKEN)", headers={"WWW-Authenticate": "Bearer"})
        if known(token, write):
            return "write"
        if known(token, read):
            if scope == "write":
                raise HTTPException(403, "this token has the read scope; this endpoint needs the write scope")
            return "read"
        raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})

    return Depends(check)


def _etag(body: dict) -> str:
    return f'"v{body["version"]}"'


def _detail(error: dict) -> dict:
    """One 422 entry: ``type``, ``loc`` and ``msg``; pydantic's messages do not quote the value
    (``Input should be a valid number``), so a scalar input is appended to them. Our own
    ``value_error`` messages already name theirs; containers are not echoed."""
    out = {k: error[k] for k in ("type", "loc", "msg") if k in error}
    if "input" in error and error.get("type") not in ("value_error", "missing", "json_invalid"):
        value = error["input"]
        if value is None or isinstance(value, (str, bool, int, float)):
            out["msg"] = f"{out['msg']}, got {json_value(value)}"
    return out


def create_app(config: ServeConfig, refit: bool = False, poll_s: float = 0.1) -> FastAPI:
    """The service's app for ``config`` (see the module doc)."""
    service = ControlService(config, refit=refit).setup()  # the database now: its errors stop the start at once
    stop = threading.Event()

    def restore():
        try:
            service.restore()
        except Exception:  # noqa: BLE001 -- recorded in service.failure; the CLI stops the server
            if callable(getattr(app.state, "on_failure", None)):
                app.state.on_failure()

    def clock():
        while not stop.wait(poll_s):
            try:
                service.poll()
            except Exception:  # noqa: BLE001 -- the clock must keep running; the failure is logged
                log.exception("clock tick failed")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threads = [threading.Thread(target=restore, name="restore", daemon=True),
                   threading.Thread(target=clock, name="clock", daemon=True)]
        for t in threads:
            t.start()
        yield
        stop.set()
        threads[1].join(timeout=5)
        service.close()

    app = FastAPI(title="mpc-balancer", version="1", lifespan=lifespan)
    app.state.service = service

    def rejected(path: str) -> None:  # a refused body (413) or an invalid one (422): a node report counts
        if path == "/v1/telemetry":
            service.metrics.reports.labels("rejected").inc()

    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes, on_reject=rejected)
    read, write = _bearer("read", config), _bearer("write", config)
    clusters = config.cluster_names

    def validate(tick: TickIn) -> pd.Timestamp:
        naive, errors = check_time(tick.time)
        errors += check_tick(tick, clusters, max_load=config.max_load, lam_max=config.lam_max, max_qps=config.max_qps,
                             n_features=service.n_features if config.policy_bundle else None,
                             max_rows=config.max_report_rows)
        if errors:
            raise RequestValidationError(errors)
        return pd.Timestamp(naive)

    def guarded(fn, *args):
        try:
            return fn(*args)
        except NotReady as e:
            raise HTTPException(503, f"not ready: {e}", headers={"Retry-After": "1"}) from None
        except Conflict as e:
            raise HTTPException(409, str(e)) from None

    @app.exception_handler(RequestValidationError)
    async def _unprocessable(request: Request, exc: RequestValidationError):
        rejected(request.url.path)
        detail = [_detail(e) for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.post("/v1/telemetry", status_code=202, dependencies=[write])
    def post_telemetry(body: ReportIn):
        t = validate(body)
        report = NodeReport(node=body.node, time=t, qps=body.qps, load=body.load, lam=body.lam,
                            features=body.features, received=time.time(), over=body.over)
        return guarded(service.report, report)

    @app.post("/v1/step", dependencies=[write])
    def post_step(body: TickIn):
        t = validate(body)
        tel = Telemetry(time=t, qps=body.qps, load=body.load, lam=body.lam, features=body.features, over=body.over)
        return guarded(service.step, t, tel)

    @app.get("/v1/decision", dependencies=[read])
    async def get_decision(request: Request):
        try:
            body = service.decision()
        except NotReady as e:
            raise HTTPException(503, f"not ready: {e}", headers={"Retry-After": "1"}) from None
        tag = _etag(body)
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers={"ETag": tag})
        return JSONResponse(body, headers={"ETag": tag, "Cache-Control": "no-cache"})

    @app.get("/v1/decisions", dependencies=[read])
    def get_decisions(after: int = Query(0, ge=0, le=2 ** 62), limit: int = Query(100, ge=1, le=10000)):
        return service.decisions(after, limit)

    @app.put("/v1/override", dependencies=[write])
    def put_override(body: OverrideIn):
        unknown = [c for c in body.lam if c not in clusters]
        errors = [{"type": "value_error", "loc": ("body", "lam", c), "msg": f"unknown cluster {c!r}; the clusters are "
                   f"{list(clusters)}", "input": c} for c in unknown]
        errors += [{"type": "value_error", "loc": ("body", "lam", c), "msg": f"lam[{c}] = {v!r} is outside [lam_min, "
                    f"lam_max] = [{config.lam_min:g}, {config.lam_max:g}]", "input": v}
                   for c, v in body.lam.items() if c in clusters and not config.lam_min <= v <= config.lam_max]
        if errors:
            raise RequestValidationError(errors)
        try:
            return guarded(service.set_override, body.lam, body.until, body.by, body.reason)
        except ValueError as e:
            raise RequestValidationError([{"type": "value_error", "loc": ("body", "until"), "msg": str(e)}]) from None

    @app.delete("/v1/override", dependencies=[write])
    def delete_override(by: str = Query(min_length=1, max_length=128), reason: str = Query("", max_length=1000)):
        try:
            return service.clear_override(by, reason)
        except LookupError as e:
            raise HTTPException(404, str(e)) from None

    @app.get("/v1/override/audit", dependencies=[read])
    def get_audit(limit: int = Query(100, ge=1, le=10000)):
        return service.audit_log(limit)

    @app.get("/v1/info", dependencies=[read])
    def get_info():
        h = config.history
        policy = None
        if service.policy is not None:
            policy = {"bundle": config.policy_bundle, "features": list(service.policy.features),
                      "npz_sha256": service.policy.meta["npz_sha256"], "lambda_range": list(service.policy.lambda_range)}
        return {"clusters": {k: {"capacity": c.capacity, "target": c.target} for k, c in config.clusters.items()},
                "controller": config.controller, "controller_options": config.controller_options,
                "balancer": config.balancer_options, "period_s": config.period_s, "lease_s": config.lease_s,
                "tick_timeout_s": config.tick_timeout_s, "tick_tolerance_s": config.tick_tolerance_s,
                "max_body_bytes": config.max_body_bytes, "stale_after_s": config.stale_after_s,
                "expected_nodes": config.expected_nodes, "safe": config.safe, "policy": policy,
                "history": {"source": h.source, "trace": h.trace, "peak_qps": h.peak_qps, "end": h.end},
                "ready": service.ready}

    @app.get("/healthz")
    async def healthz():
        return {"ok": True}

    @app.get("/readyz")
    async def readyz():
        if service.ready:
            return {"ready": True}
        return JSONResponse({"ready": False, "reason": service.failure or "restoring state"}, status_code=503)

    @app.get("/metrics")
    async def metrics():
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
