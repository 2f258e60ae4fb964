"""``mpc-balancer serve`` (the HTTP service) and ``mpc-balancer fleet`` (a simulated fleet against it)."""
from __future__ import annotations

import os

from . import UsageError
from .args import nonnegative, positive
from .outputs import declare_outputs
from .simulate import seed


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the balancer as an HTTP service (FastAPI + uvicorn; the serve extra)",
                       description="Serve decisions over HTTP: node telemetry in, lambda with a lease out, state in "
                                   "SQLite, Prometheus metrics. See README 'Run it next to your serving system'.")
    p.add_argument("--config", required=True, help="TOML config (see examples/serve.toml)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--state-db", default=None, help="SQLite file (overrides [service] state_db)")
    p.add_argument("--refit", action="store_true", help="discard the stored checkpoint and start the controller afresh")
    p.add_argument("--ssl-certfile", default=None, help="TLS certificate (PEM): serve HTTPS")
    p.add_argument("--ssl-keyfile", default=None, help="TLS private key (PEM)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access-log", action="store_true", help="log every request (off: one line per request is costly)")
    p.set_defaults(func=_serve)

    f = sub.add_parser("fleet", help="play the simulator's plant as N serving nodes against a running service",
                       description="Replay a trace through the simulator's plant, with the control decisions taken "
                                   "by a running `mpc-balancer serve` over HTTP: each tick every node posts its "
                                   "share of the telemetry and applies the decision. Prints the simulate table.")
    f.add_argument("--url", required=True, help="service URL, e.g. http://127.0.0.1:8080")
    f.add_argument("--token-env", default="MPC_BALANCER_WRITE_TOKEN", help="environment variable holding a write token")
    f.add_argument("--nodes", type=positive(int), default=8)
    f.add_argument("--trace", default="nasa")
    f.add_argument("--days", type=positive(float, 3650.0), default=1.0)
    f.add_argument("--seed", type=seed, default=0)
    f.add_argument("--requests", type=positive(int), default=1000, help="sampled requests per tick (default 1000)")
    f.add_argument("--peak-qps", type=positive(float), default=20000.0)
    f.add_argument("--policy", default="pretrained", help="the nodes' per-request policy (pretrained, oracle or a bundle)")
    f.add_argument("--wait", type=nonnegative(float, 3600.0), default=10.0, metavar="SECONDS",
                   help="wait up to SECONDS for the service to be ready (GET /readyz answers 200), e.g. while it "
                        "starts or restores its state; then fail (default 10; 0: one attempt)")
    f.add_argument("--json", default=None, help="write the results JSON here")
    declare_outputs(f, files=("--json",))  # checked before the replay: an existing file is kept without --force
    f.set_defaults(func=_fleet)


def _serve(args) -> int:
    try:
        import uvicorn

        from ..service.app import create_app
    except ImportError as e:
        raise UsageError(f"the service needs the serve extra ({e.name} is missing): pip install -e \".[serve]\"") from None
    from ..service.config import load_config

    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        raise UsageError("--ssl-certfile and --ssl-keyfile go together")
    import logging

    # the engine logs holds, fallbacks and failed ticks to the "mpc_balancer" logger (a NullHandler by
    # default): the service shows them at --log-level, beside uvicorn's own lines
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mpc_balancer").setLevel(args.log_level.upper())
    config = load_config(args.config, state_db=args.state_db)
    app = create_app(config, refit=args.refit)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                           access_log=args.access_log, ssl_certfile=args.ssl_certfile,
                                           ssl_keyfile=args.ssl_keyfile))
    app.state.on_failure = lambda: setattr(server, "should_exit", True)  # restore failed: stop; reported below
    server.run()
    failure = app.state.service.failure
    if failure:
        raise UsageError(f"could not restore the service state: {failure}")
    return 0


def _fleet(args) -> int:
    from urllib.error import URLError
    from urllib.parse import urlsplit

    from ..client import BadResponse, NotReady, ServiceError
    from ..jsonio import write_json
    from ..sim.experiment import ExperimentConfig, format_table
    from ..sim.fleet import run_fleet

    token = os.environ.get(args.token_env, "")
    if not token:
        raise UsageError(f"--token-env {args.token_env}: the environment variable is empty (a write token is needed)")
    url = urlsplit(args.url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise UsageError(f"--url {args.url!r}: expected the service's http:// or https:// URL, e.g. http://127.0.0.1:8080")
    if args.days * 1440 < 2:  # the simulated window is in 60 s ticks (the service's period_s is checked against it)
        raise UsageError(f"--days {args.days:g} is {args.days * 1440:.3g} ticks of 60 s; need at least 2")
    cfg = ExperimentConfig(trace=args.trace, days=args.days, seed=args.seed, n_requests=args.requests,
                           peak_qps=args.peak_qps, policy=args.policy)
    try:
        summary = run_fleet(args.url, token, cfg, nodes=args.nodes, wait_s=args.wait)
    except ServiceError as e:  # the service refused a report or a read: one line, with what to do about a 409
        hint = ("; a replay starts at the window's first tick, which this service has already stepped past (a "
                "previous replay, or other traffic): restart it with a fresh state_db or --refit"
                if e.status == 409 else "")
        raise UsageError(f"--url {args.url}: the service answered {e}{hint}") from None
    except NotReady as e:  # unreachable, or not ready within --wait
        raise UsageError(f"--url {args.url}: {e}; is `mpc-balancer serve` running there? (--wait {args.wait:g}: "
                         "raise it to wait longer for a service that is starting)") from None
    except (TimeoutError, ConnectionError, URLError, BadResponse) as e:  # unreachable, not ready, or not this service
        raise UsageError(f"--url {args.url}: {getattr(e, 'reason', None) or e}") from None
    print(format_table(summary))
    if args.json:
        write_json(args.json, summary)
    return 0
