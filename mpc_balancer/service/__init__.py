"""``mpc-balancer serve``: the Balancer as an HTTP service for schedulers and serving nodes.

Modules, one role each: :mod:`.config` (the TOML file, typed and validated), :mod:`.models` (the
request and response bodies), :mod:`.aggregate` (one tick's node reports -> one Telemetry),
:mod:`.store` (SQLite: checkpoint + decision in one transaction, decision history, override audit),
:mod:`.metrics` (Prometheus), :mod:`.control` (the control loop: ticks, leases, holds, overrides),
:mod:`.limits` (the request-body size limit, pure ASGI) and :mod:`.app` (the FastAPI app
factory: endpoints and auth). FastAPI, uvicorn and
prometheus_client come with the ``serve`` extra; nothing here is imported by the engine.
"""
