"""Load test of `mpc-balancer serve` on loopback: N concurrent nodes posting telemetry and polling decisions.

Usage: ``python benchmarks/bench_serve.py [--clients 64] [--seconds 60] [--controller pid]``

Starts the service (a uvicorn subprocess on 127.0.0.1, a free port, a fresh SQLite state in a
temporary directory; telemetry-only ``pid`` by default, ``--controller mpc`` with the nasa history
and the shipped bundle) and runs ``--clients`` node threads, each on its own keep-alive
connection. Every node, tick after tick: ``POST /v1/telemetry`` (its report for tick k), then
``GET /v1/decision`` with ``If-None-Match`` every ``--poll-ms`` until the decision for tick k is
out (the tick closes when every node has reported). After ``--seconds`` the nodes stop; the last
tick closes on the service's timeout. Prints requests/s, p50/p99 latency per endpoint beside a baseline (``GET /healthz`` from
the same clients in the same run: the HTTP stack alone), errors,
ticks stepped, and the report check: every accepted report (202) must be counted in its tick's
decision (the decision history's ``reports``), none lost, none counted twice.

The clients and the server share the machine's cores: the figures are the pair's, on loopback.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

READ, WRITE = "bench-read-token-0123456789", "bench-write-token-0123456789"
CLUSTERS = {"retrieval": 4078.250246736065, "prerank": 1892.7132862324524, "rank": 31520.37499999819}
T0 = np.datetime64("1995-08-28T13:32:00")


def _config(d: Path, clients: int, controller: str) -> Path:
    lines = ["[service]", "period_s = 60", "lease_s = 600", "tick_timeout_s = 3", "stale_after_s = 600",
             f"expected_nodes = {clients}", 'state_db = "state.sqlite"']
    for name, cap in CLUSTERS.items():
        lines += [f"[clusters.{name}]", f"capacity = {cap!r}"]
    lines += ["[controller]", f'name = "{controller}"', "[history]",
              'trace = "nasa"' if controller == "mpc" else 'source = "store"',
              "[auth]", 'read_token_file = "read.token"', 'write_token_file = "write.token"']
    if controller == "mpc":
        lines += ["[policy]", 'bundle = "pretrained"']
    (d / "read.token").write_text(READ)
    (d / "write.token").write_text(WRITE)
    (d / "serve.toml").write_text("\n".join(lines) + "\n")
    return d / "serve.toml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node(threading.Thread):
    def __init__(self, i: int, port: int, stop_at: float, poll_s: float, features: bool):
        super().__init__(daemon=True)
        self.i, self.port, self.stop_at, self.poll_s, self.features = i, port, stop_at, poll_s, features
        self.lat = {"POST /v1/telemetry": [], "GET /v1/decision": []}
        self.errors, self.accepted, self.statuses = [], 0, {}
        self.rng = np.random.default_rng(i)

    def _req(self, conn, method, path, body=None, headers=None):
        h = {"Authorization": f"Bearer {WRITE}", **(headers or {})}
        if body is not None:
            h["Content-Type"] = "application/json"
        t0 = time.perf_counter()
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        self.lat[f"{method} {path}"].append(time.perf_counter() - t0)
        self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
        return r.status, r.getheader("ETag"), data

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        k, etag, decided = 0, None, None
        while time.monotonic() < self.stop_at:
            t = str(T0 + np.timedelta64(k, "m"))
            body = {"node": f"node-{self.i:03d}", "time": t, "qps": float(self.rng.uniform(100, 400)),
                    "load": {c: float(self.rng.uniform(0.7, 1.0)) for c in CLUSTERS}, "lam": {c: 0.01 for c in CLUSTERS},
                    "features": self.rng.normal(0, 0.5, (8, 5)).tolist() if self.features else None}
            try:
                status, _, data = self._req(conn, "POST", "/v1/telemetry", json.dumps(body))
                if status != 202:
                    self.errors.append((status, data[:200]))
                    break
                self.accepted += 1
                while time.monotonic() < self.stop_at + 10:
                    status, tag, data = self._req(conn, "GET", "/v1/decision", headers={"If-None-Match": etag} if etag else None)
                    if status == 200:
                        etag, decided = tag, json.loads(data)["time"]
                    elif status != 304:
                        self.errors.append((status, data[:200]))
                        return
                    if decided is not None and decided >= t:
                        break
                    time.sleep(self.poll_s)
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(("connection", repr(e)))
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            k += 1


def _baseline(port: int, clients: int, seconds: float) -> tuple[int, float, np.ndarray]:
    """The HTTP floor measured beside the run: ``clients`` threads calling ``GET /healthz`` (no auth,
    no state) on keep-alive connections for ``seconds``: (requests, wall s, latencies in ms)."""
    lat: list = []
    stop_at = time.monotonic() + seconds

    def loop():
        conn, mine = http.client.HTTPConnection("127.0.0.1", port, timeout=30), []
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            mine.append(time.perf_counter() - t0)
        lat.extend(mine)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(lat), time.perf_counter() - t0, np.asarray(lat) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--poll-ms", type=float, default=20.0, help="decision polling interval of a waiting node")
    ap.add_argument("--controller", default="pid", choices=["pid", "mpc"])
    ap.add_argument("--baseline-seconds", type=float, default=10.0, help="GET /healthz floor measured first (0: skip)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(Path(tmp), args.clients, args.controller)
        port = _free_port()
        log = open(Path(tmp) / "serve.log", "wb")  # noqa: SIM115 -- the server's log while it runs
        t_start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "mpc_balancer.cli", "serve", "--config", str(cfg), "--port", str(port),
                                 "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    c.request("GET", "/readyz")
                    if c.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() - t_start > 180:
                    print((Path(tmp) / "serve.log").read_text())
                    return 1
                time.sleep(0.1)
            ready_s = time.monotonic() - t_start
            base = _baseline(port, args.clients, args.baseline_seconds) if args.baseline_seconds > 0 else None
            stop_at = time.monotonic() + args.seconds
            nodes = [Node(i, port, stop_at, args.poll_ms / 1e3, features=args.controller == "mpc") for i in range(args.clients)]
            t0 = time.perf_counter()
            for n in nodes:
                n.start()
            for n in nodes:
                n.join()
            wall = time.perf_counter() - t0
            time.sleep(4)  # the last, partly reported tick closes on the service's 3 s timeout
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            decisions, after = [], 0
            while True:
                c.request("GET", f"/v1/decisions?after={after}&limit=10000", headers={"Authorization": f"Bearer {READ}"})
                page = json.loads(c.getresponse().read())
                if not page:
                    break
                decisions += page
                after = page[-1]["version"]
            c.request("GET", "/metrics")
            metrics = c.getresponse().read().decode()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()
    ticks = [d for d in decisions if d["time"] is not None and d["controller"] not in ("initial", "hold", "override")]
    counted = sum(d["reports"] for d in ticks)
    accepted = sum(n.accepted for n in nodes)
    errors = [e for n in nodes for e in n.errors]
    statuses: dict = {}
    for n in nodes:
        for k, v in n.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
    total = sum(len(v) for n in nodes for v in n.lat.values())
    step = [line for line in metrics.splitlines() if line.startswith("mpc_balancer_step_seconds_")]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (clients and server share them)")
    print(f"controller {args.controller}, {args.clients} clients, {wall:.1f} s, ready {ready_s:.1f} s after start")
    print(f"requests {total:,}  ({total / wall:,.0f}/s)  statuses {dict(sorted(statuses.items()))}  errors {len(errors)}")
    if base is not None:
        n_b, wall_b, lat_b = base
        print(f"  baseline GET /healthz {n_b:>8,} requests  ({n_b / wall_b:,.0f}/s)  p50 {np.percentile(lat_b, 50):7.2f} ms  "
              f"p99 {np.percentile(lat_b, 99):7.2f} ms  (the HTTP stack alone, same clients, same run)")
    for ep in ("POST /v1/telemetry", "GET /v1/decision"):
        lat = np.concatenate([np.asarray(n.lat[ep]) for n in nodes]) * 1e3
        print(f"  {ep:<20} {len(lat):>8,} requests  p50 {np.percentile(lat, 50):7.2f} ms  p99 {np.percentile(lat, 99):7.2f} ms")
    full = sum(1 for d in ticks if d["reports"] == args.clients)
    print(f"ticks stepped {len(ticks)} ({full} with all {args.clients} nodes); reports accepted {accepted:,}, counted in "
          f"their ticks {counted:,}: {'none lost' if counted == accepted else f'MISMATCH {accepted - counted:+,}'}")
    vals = {line.split()[0]: float(line.split()[1]) for line in step if line.split()[0].endswith(("_count", "_sum"))}
    n_steps, step_s = vals.get("mpc_balancer_step_seconds_count", 0.0), vals.get("mpc_balancer_step_seconds_sum", 0.0)
    print(f"  Balancer.step: {n_steps:.0f} steps, mean {1e3 * step_s / max(n_steps, 1):.2f} ms")
    if errors:
        print("first errors:", errors[:3])
    return 0 if not errors and counted == accepted else 1


if __name__ == "__main__":
    raise SystemExit(main())
