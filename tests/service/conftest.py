"""A real `mpc-balancer serve` subprocess on 127.0.0.1 (a free port) for the service tests."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi")  # the serve extra; the test extra installs it

READ = "read-token-0123456789abcdef"
WRITE = "write-token-0123456789abcdef"
CLUSTERS = {"retrieval": 4078.250246736065, "prerank": 1892.7132862324524, "rank": 31520.37499999819}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, controller: str = "pid", service: dict | None = None, extra: str = "",
                 history: str = 'source = "store"') -> Path:
    svc = {"period_s": 60, "lease_s": 600, "tick_timeout_s": 600, "stale_after_s": 600, "expected_nodes": 2,
           "state_db": "state.sqlite", **(service or {})}
    lines = ["[service]"] + [f"{k} = {_toml(v)}" for k, v in svc.items()]
    for name, cap in CLUSTERS.items():
        lines += [f"[clusters.{name}]", f"capacity = {cap!r}", "target = 0.9"]
    lines += ["[controller]", f'name = "{controller}"', "[history]", history,
              "[auth]", 'read_token_file = "read.token"', 'write_token_file = "write.token"']
    path.write_text("\n".join(lines) + "\n" + extra)
    (path.parent / "read.token").write_text(READ + "\n")
    (path.parent / "write.token").write_text(WRITE + "\n")
    return path


def _toml(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)


class Server:
    """One service process; ``start`` waits for /readyz, ``kill9`` ends it with SIGKILL."""

    def __init__(self, config: Path):
        self.config, self.port, self.proc = config, free_port(), None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> Server:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.log = open(self.config.with_suffix(f".{self.port}.log"), "ab")  # noqa: SIM115 -- the server's log while it runs; closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "mpc_balancer.cli", "serve", "--config", str(self.config),
                                      "--port", str(self.port), "--log-level", "warning"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: "
                                   f"{self.config.with_suffix(f'.{self.port}.log').read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError("server not ready in time")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.log.close()


def call(url: str, method: str = "GET", body=None, token: str | None = WRITE, headers: dict | None = None):
    """(status, decoded JSON or text, headers) of one request."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    h = {"Content-Type": "application/json", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw, status, hdrs = r.read(), r.status, r.headers
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, e.headers
    try:
        return status, json.loads(raw) if raw else None, hdrs
    except ValueError:
        return status, raw.decode(), hdrs


@pytest.fixture
def server_factory():
    servers = []

    def make(config: Path) -> Server:
        s = Server(config)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()
