"""The node client's fallback against a real HTTP server on loopback that misbehaves the way a
half-dead service or a proxy in front of it does (the service itself: tests/service)."""
from __future__ import annotations

import json
import math
import socket
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mpc_balancer.client import BadResponse, BalancerClient

VALID = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
BODY = {"version": 3, "time": "2024-01-01T00:00:00", "lam": {"a": 0.1}, "status": "ok", "reason": "", "controller": "pid",
        "issued_at": VALID, "valid_until": VALID, "safe_lam": {"a": 1.0}, "plan": None, "reports": 1}


def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, length: int | None = None) -> None:
    h.send_response(status)
    h.send_header("Content-Length", str(len(body) if length is None else length))
    h.end_headers()
    h.wfile.write(body)


ANSWERS = {
    "ok": lambda h: _send(h, 200, json.dumps(BODY).encode()),
    "503": lambda h: _send(h, 503, b'{"detail": "restoring"}'),
    "html": lambda h: _send(h, 200, b"<html>502 Bad Gateway</html>"),  # a proxy's error page, status 200
    "not-http": lambda h: h.wfile.write(b"garbage\r\n\r\n"),
    "cut": lambda h: (_send(h, 200, b'{"version": 4,', length=500), h.connection.shutdown(socket.SHUT_RDWR)),
    "not-a-decision": lambda h: _send(h, 200, b'{"version": 4, "lam": [0.2]}'),
    "bad-lam": lambda h: _send(h, 200, json.dumps({**BODY, "version": 4, "lam": {"a": "0.2"}}).encode()),
    "close": lambda h: setattr(h, "close_connection", True),  # accepted, closed without an answer (restarting)
}


@pytest.fixture
def server():
    mode = {"now": "ok"}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            ANSWERS[mode["now"]](self)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, mode
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("answer", ["503", "html", "not-http", "cut", "not-a-decision", "bad-lam", "close"])
def test_an_unreadable_answer_serves_the_cached_decision_and_never_replaces_it(server, answer):
    srv, mode = server
    c = BalancerClient(f"http://127.0.0.1:{srv.server_port}", token="t", node="n1", timeout_s=2.0)
    assert c.decision().source == "service"
    mode["now"] = answer
    for _ in range(2):  # the cache survives the bad answer: the second call still has it
        d = c.decision()
        assert (d.source, d.lam, d.version) == ("cache", {"a": 0.1}, 3)
        assert c.last_error
    if answer not in ("503", "close"):
        with pytest.raises(BadResponse):
            c.fetch()
    if answer == "close":  # closed without an answer: unreachable (an OSError), as refused is
        with pytest.raises(OSError):
            c.fetch()
    mode["now"] = "ok"
    assert c.decision().source == "service" and c.last_error is None


def test_before_any_decision_a_bad_answer_gives_the_safe_lambda(server):
    srv, mode = server
    mode["now"] = "html"
    c = BalancerClient(f"http://127.0.0.1:{srv.server_port}", token="t", safe_lam={"a": 2.0})
    d = c.decision()
    assert (d.lam, d.status, d.source) == ({"a": 2.0}, "no-decision", "safe")


def test_client_inputs_are_named(server):
    srv, _ = server
    c = BalancerClient(f"http://127.0.0.1:{srv.server_port}", token="t", node="n1")
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        c.decision(now=datetime.now())
    assert c.decision(now=datetime.now(timezone.utc)).source == "service"
    good = {"time": datetime(2024, 1, 1), "qps": 10.0, "load": {"a": 0.5}, "lam": {"a": 0.1}}
    for field, value, needle in (("qps", math.nan, "qps must be a finite number, got nan"),
                                 ("qps", None, "qps must be a finite number, got None"),
                                 ("load", {"a": math.inf}, r"load\[a\] must be a finite number, got inf"),
                                 ("lam", {"a": True}, r"lam\[a\] must be a finite number, got True"),
                                 ("over", {"a": "0.1"}, r"over\[a\] must be a finite number, got '0.1'")):
        with pytest.raises(ValueError, match=needle):
            c.report(**{**good, field: value})


def test_wait_ready_retries_a_service_that_is_still_starting(server):
    srv, mode = server
    c = BalancerClient(f"http://127.0.0.1:{srv.server_port}", token="t", timeout_s=1.0)
    for answer in ("close", "not-http", "503"):
        mode["now"] = answer
        with pytest.raises(TimeoutError, match="not ready within 0.5 s"):
            c.wait_ready(timeout_s=0.5)
    mode["now"] = "ok"
    c.wait_ready(timeout_s=5.0)


def test_report_takes_what_a_node_has_at_hand(server):
    """A pandas Series (e.g. of NodeGuard.take_over()), numpy scalars and Decimals are numbers."""
    import decimal

    import numpy as np
    import pandas as pd

    srv, _ = server
    c = BalancerClient(f"http://127.0.0.1:{srv.server_port}", token="t", node="n1")
    tick = c._tick(datetime(2024, 1, 1), np.float32(10.0), pd.Series({"a": 0.5}), {"a": decimal.Decimal("0.1")}, None,
                   pd.Series({"a": np.float64(0.0)}))
    assert tick["qps"] == 10.0 and tick["load"] == {"a": 0.5} and tick["lam"] == {"a": 0.1} and tick["over"] == {"a": 0.0}


def test_wait_ready_names_the_last_problem_and_never_waits_past_its_deadline(monkeypatch):
    """``fleet --wait 10`` against a host that takes connections and never answers waited the
    client's 60 s per attempt; against a closed port the error said only "not ready"."""
    with socket.socket() as s:  # a port nobody listens on: refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = BalancerClient(f"http://127.0.0.1:{port}", token="t", timeout_s=60.0)
    from mpc_balancer.client import NotReady

    with pytest.raises(NotReady, match=r"not ready within 0.3 s \(last attempt: .*refused"):
        c.wait_ready(timeout_s=0.3)
    asked = []

    def silent(method, path, body=None, headers=None, timeout_s=None):
        asked.append(timeout_s)
        raise TimeoutError("timed out")
    monkeypatch.setattr(c, "request", silent)
    with pytest.raises(TimeoutError, match="not ready within 0.5 s"):
        c.wait_ready(timeout_s=0.5)
    assert asked and all(t is not None and t <= 1.0 for t in asked)  # each attempt cut to the time left (>= 1 s)
