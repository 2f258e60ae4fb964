"""The service against a hostile or sloppy client, over a real `mpc-balancer serve` on loopback: bodies
over the size limit (declared or chunked), numbers sent as strings, epoch numbers for times, and
the node stamps of one tick that differ by a microsecond."""
from __future__ import annotations

import json
import socket

import numpy as np
import pandas as pd
import pytest

from mpc_balancer.client import BalancerClient, ServiceError
from mpc_balancer.service.aggregate import NodeReport
from mpc_balancer.service.config import load_config

from .conftest import CLUSTERS, READ, WRITE, call, write_config
from .test_serve import GOOD, T0, expected_telemetry, pid_balancer

US = pd.Timedelta(microseconds=1)
LIMIT = 4 * 1024 * 1024  # the documented default of [service] max_body_bytes


def raw_exchange(port: int, head: bytes, chunks=(), timeout_s: float = 10.0) -> tuple[int, dict, bytes, int]:
    """Send a request head and body chunks over a plain socket; (status, headers, body, bytes of body sent).

    The response is read as soon as it comes, even while body bytes are still unsent: a server
    that waits for the whole body before answering makes this raise after ``timeout_s``."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    sent = 0
    try:
        s.sendall(head)
        for chunk in chunks:
            s.sendall(chunk)
            sent += len(chunk)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                more = s.recv(65536)
                if not more:
                    break
                data += more
            top, _, rest = data.partition(b"\r\n\r\n")
            lines = top.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
            while len(rest) < int(headers.get("content-length", 0)):
                more = s.recv(65536)
                if not more:
                    break
                rest += more
        except TimeoutError:
            raise AssertionError(f"no answer within {timeout_s:g} s after {sent} body bytes: the server is still "
                                 "reading the body") from None
        return int(lines[0].split()[1]), headers, rest, sent
    finally:
        s.close()


def _head(path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {WRITE}\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()


def _reports_total(url: str, outcome: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = call(url + "/metrics", token=None)[1]
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "mpc_balancer_reports_total" and s.labels == {"outcome": outcome})


def test_bodies_over_the_limit_get_413_unread_and_the_largest_report_passes(tmp_path, server_factory):
    """The default limit (4 MiB): a 63 MB Content-Length is refused before one body byte is sent, a
    chunked body as soon as it passes the limit, a too-large report from the stdlib client reaches
    it as a 413 (not a reset connection); the largest legitimate report (4096 rows of the shipped
    bundle's 5 features, worst-case float text, pretty-printed) is accepted."""
    cfg = write_config(tmp_path / "serve.toml", service={"expected_nodes": 1}, extra='[policy]\nbundle = "pretrained"\n')
    srv = server_factory(cfg).start()
    status, headers, body, sent = raw_exchange(srv.port, _head("/v1/telemetry", "Content-Length: 63000000\r\n"))
    err = json.loads(body)
    assert status == 413 and sent == 0 and headers["content-type"] == "application/json", (status, body)
    assert headers["connection"] == "close"  # the refused body is never read as the connection's next request
    assert err["max_body_bytes"] == LIMIT and err["size"] == 63_000_000
    assert "63000000 bytes" in err["detail"] and f"max_body_bytes = {LIMIT}" in err["detail"]

    # chunked, no Content-Length: counted as it comes; no last chunk is ever sent
    piece = b" " * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * (LIMIT // len(piece) + 4)
    status, headers, body, sent = raw_exchange(srv.port, _head("/v1/step", "Transfer-Encoding: chunked\r\n"), chunks)
    err = json.loads(body)
    # counted per message the HTTP server hands over (up to its 64 KiB buffer and one more read)
    assert status == 413 and LIMIT < err["size"] <= LIMIT + 4 * len(piece), err
    assert headers["connection"] == "close"
    assert f"at least {err['size']} bytes" in err["detail"] and "without a Content-Length" in err["detail"]

    client = BalancerClient(srv.url, WRITE, node="n1", timeout_s=30)
    load, lam = {c: 0.8 for c in CLUSTERS}, {c: 0.01 for c in CLUSTERS}
    with pytest.raises(ServiceError) as e:  # urllib sends all of it, with Connection: close, then reads
        client.report(T0, 1000.0, load, lam, features=np.full((250_000, 5), 0.5))
    assert e.value.status == 413 and f"over max_body_bytes = {LIMIT}" in e.value.detail
    assert call(srv.url + "/v1/info", token=READ)[1]["max_body_bytes"] == LIMIT

    from mpc_balancer.service.models import largest_body_bytes

    worst = np.random.default_rng(0).uniform(-1, 1, (4096, 5)) * 1e-300 - 2.2250738585072014e-308  # 24-character floats
    text = json.dumps({"node": "n" * 128, "time": T0.isoformat(), "qps": 1000.0, "load": load, "lam": lam,
                       "features": worst.tolist(), "over": {c: 0.0 for c in CLUSTERS}}, indent=2).encode()
    assert 0.6e6 < len(text) <= largest_body_bytes(4096, 5, tuple(CLUSTERS)) < LIMIT / 5
    status, out, _ = call(srv.url + "/v1/telemetry", "POST", text)
    assert status == 202 and out["closed"], out
    assert _reports_total(srv.url, "rejected") == 2  # the two refused reports (the chunked body was a step)
    assert call(srv.url + "/v1/decision", token=READ)[1]["reports"] == 1


def test_a_configured_limit_and_one_too_small_for_the_largest_report(tmp_path, server_factory):
    """``max_body_bytes`` is the limit in force (just over it: 413; at it: read); a limit below the
    largest report the service accepts refuses to start, naming the key and what it needs."""
    cfg = write_config(tmp_path / "serve.toml", service={"expected_nodes": 1, "max_body_bytes": 20000})
    srv = server_factory(cfg).start()
    body = json.dumps({**GOOD, "node": "n1"}).encode()
    pad = 20000 - len(body)
    status, _, _ = call(srv.url + "/v1/telemetry", "POST", body[:-1] + b" " * (pad + 1) + b"}")
    assert status == 413
    status, out, _ = call(srv.url + "/v1/telemetry", "POST", body[:-1] + b" " * pad + b"}")
    assert status == 202 and out["closed"], out

    from mpc_balancer.service.control import ControlService
    from mpc_balancer.service.models import largest_body_bytes

    (tmp_path / "tight").mkdir()
    tight = load_config(write_config(tmp_path / "tight" / "serve.toml", service={"max_report_rows": 50000},
                                     extra='[policy]\nbundle = "pretrained"\n'))
    need = largest_body_bytes(50000, 5, tuple(CLUSTERS))
    with pytest.raises(ValueError, match=rf"max_body_bytes = {LIMIT} is below the largest request .* "
                                         rf"up to {need} bytes .* raise max_body_bytes to at least {need}"):
        ControlService(tight).setup().restore()


STRINGS = [  # (change, loc, the value the message must quote)
    ({"qps": "12.5"}, ["body", "qps"], '"12.5"'),
    ({"qps": True}, ["body", "qps"], "true"),
    ({"load": {**GOOD["load"], "rank": "0.8"}}, ["body", "load", "rank"], '"0.8"'),
    ({"lam": {**GOOD["lam"], "prerank": "0.01"}}, ["body", "lam", "prerank"], '"0.01"'),
    ({"over": {c: "0" for c in CLUSTERS}}, ["body", "over", "retrieval"], '"0"'),
    ({"features": [["0.5"]]}, ["body", "features", 0, 0], '"0.5"'),
    ({"time": 809617500}, ["body", "time"], "809617500"),  # lax mode read it as 1995-08-28 13:45 UTC
    ({"time": "809617500"}, ["body", "time"], '"809617500"'),
    ({"time": 809617500000}, ["body", "time"], "809617500000"),  # ... and this one as milliseconds
]


def test_numbers_as_strings_and_epoch_times_get_422_naming_field_and_value(tmp_path, server_factory):
    """Strict request models: a number must be a JSON number (an integer is one), a time an ISO-8601
    string (every form the README documents still is); the 422 names the field and quotes the value."""
    cfg = write_config(tmp_path / "serve.toml", service={"expected_nodes": 1})
    srv = server_factory(cfg).start()
    version = call(srv.url + "/v1/decision", token=READ)[1]["version"]
    for change, loc, quoted in STRINGS:
        for path, body in (("/v1/telemetry", {**GOOD, **change}),
                           ("/v1/step", {k: v for k, v in {**GOOD, **change}.items() if k != "node"})):
            status, err, _ = call(srv.url + path, "POST", body)
            assert status == 422, (path, change, err)
            hit = [e for e in err["detail"] if e["loc"] == loc]
            assert hit and quoted in hit[0]["msg"], (path, change, err)
    until = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=1)).isoformat()
    for change, loc in (({"lam": {"rank": "0.5"}}, ["body", "lam", "rank"]), ({"until": 4102444800}, ["body", "until"])):
        status, err, _ = call(srv.url + "/v1/override", "PUT", {"lam": {"rank": 0.5}, "until": until, "by": "a", **change})
        assert status == 422 and err["detail"][0]["loc"] == loc, err
    assert call(srv.url + "/v1/decision", token=READ)[1]["version"] == version  # none of them was stepped

    # JSON integers are numbers, and every documented time form is read (naive = UTC)
    ref, lam = pid_balancer(), {c: 0.01 for c in CLUSTERS}
    forms = [("1995-08-28T23:32:00", "1995-08-28T23:32:00"), ("1995-08-28T23:33:00Z", "1995-08-28T23:33:00"),
             ("1995-08-29T01:34:00+02:00", "1995-08-28T23:34:00"), ("1995-08-28 23:35:00", "1995-08-28T23:35:00"),
             ("1995-08-28T23:36:00.250000", "1995-08-28T23:36:00.250000"), ("1995-08-29", "1995-08-29T00:00:00")]
    for k, (sent, stored) in enumerate(forms):
        body = {"node": "n1", "time": sent, "qps": 1000 + k, "load": {"retrieval": 1, "prerank": 0.75, "rank": 1},
                "lam": lam}
        status, out, _ = call(srv.url + "/v1/telemetry", "POST", body)
        assert status == 202 and out["closed"] and out["time"] == stored, out
        got = call(srv.url + "/v1/decision", token=READ)[1]
        d = ref.step(expected_telemetry([{**body, "time": stored, "qps": float(body["qps"])}], lam))
        assert got["time"] == stored and got["status"] == d.status
        np.testing.assert_allclose([got["lam"][c] for c in CLUSTERS], d.lam_vector, rtol=1e-12)
        lam = got["lam"]


def test_stamps_a_microsecond_apart_are_one_tick_even_across_a_restart(tmp_path, server_factory):
    """Three nodes stamp each tick's end with their own clocks. Reports within tick_tolerance_s (here
    the default, period_s / 10 = 6 s) of an open tick join it: each tick steps once, on the whole
    fleet, as the in-process Balancer steps the aggregate (the stamps split a tick in two before)."""
    cfg = write_config(tmp_path / "serve.toml", service={"expected_nodes": 3})
    srv = server_factory(cfg).start()
    ref, lam, rng = pid_balancer(), {c: 0.01 for c in CLUSTERS}, np.random.default_rng(1)

    def reports(base: pd.Timestamp, offsets) -> list[dict]:
        return [{"node": f"node-{n}", "time": (base + off).isoformat(), "qps": float(rng.uniform(500, 3000)),
                 "load": {c: float(rng.uniform(0.6, 1.1)) for c in CLUSTERS}, "lam": lam}
                for n, off in zip("cab", offsets)]

    def post(r: dict, status: int = 202) -> dict:
        code, out, _ = call(srv.url + "/v1/telemetry", "POST", r)
        assert code == status, (r["node"], r["time"], out)
        return out

    def check(rs: list[dict], tick: pd.Timestamp) -> None:
        nonlocal lam
        got = call(srv.url + "/v1/decision", token=READ)[1]
        d = ref.step(expected_telemetry([{**r, "time": tick.isoformat()} for r in rs], lam))
        assert got["time"] == tick.isoformat() and got["reports"] == 3 and got["status"] == d.status, got
        np.testing.assert_allclose([got["lam"][c] for c in CLUSTERS], d.lam_vector, rtol=1e-12)
        lam = got["lam"]

    # tick 0: stamps T0, T0 + 1 us, T0 - 1 us
    rs = reports(T0, (pd.Timedelta(0), US, -US))
    outs = [post(r) for r in rs]
    assert [(o["time"], o["nodes"], o["closed"]) for o in outs] == [(T0.isoformat(), n, n == 3) for n in (1, 2, 3)]
    check(rs, T0)
    # a straggler stamped 0.5 s after the closed tick belongs to it: refused, never a tick of its own
    late = post({**rs[1], "node": "node-d", "time": (T0 + pd.Timedelta(seconds=0.5)).isoformat()}, status=409)
    assert "tick_tolerance_s 6 s: that tick is closed" in late["detail"]
    # tick 1: a tick takes the time of its first report
    t1 = T0 + pd.Timedelta(minutes=1, seconds=0.9)
    rs = reports(t1, (pd.Timedelta(0), pd.Timedelta(seconds=-0.9), pd.Timedelta(seconds=-0.8)))
    assert [post(r)["time"] for r in rs] == [t1.isoformat()] * 3
    check(rs, t1)
    # tick 2: two reports (one joined under the tick's time), kill -9, the third joins the restored tick
    t2 = T0 + pd.Timedelta(minutes=2)
    rs = reports(t2, (pd.Timedelta(0), 3 * US, -2 * US))
    assert post(rs[0])["nodes"] == 1 and post(rs[1])["nodes"] == 2
    srv.kill9()
    srv.start()
    out = post(rs[2])
    assert out["nodes"] == 3 and out["closed"] and out["time"] == t2.isoformat()
    check(rs, t2)
    hist = call(srv.url + "/v1/decisions?after=0", token=READ)[1]
    assert [h["time"] for h in hist if h["time"] is not None] == [T0.isoformat(), t1.isoformat(), t2.isoformat()]
    # a scheduler's whole tick within the tolerance of a closed tick, or of an open one: 409
    tick = {k: v for k, v in GOOD.items() if k != "node"}
    status, err, _ = call(srv.url + "/v1/step", "POST", {**tick, "time": (t2 + pd.Timedelta(seconds=1)).isoformat()})
    assert status == 409 and "that tick is closed" in err["detail"]
    t3 = T0 + pd.Timedelta(minutes=3)
    post(reports(t3, (pd.Timedelta(0),))[0])
    status, err, _ = call(srv.url + "/v1/step", "POST", {**tick, "time": (t3 - pd.Timedelta(seconds=2)).isoformat()})
    assert status == 409 and f"tick {t3} has 1 node report(s) open" in err["detail"], err
    assert call(srv.url + "/v1/info", token=READ)[1]["tick_tolerance_s"] == 6.0


def test_a_joined_report_keeps_the_nodes_own_stamp_in_the_store():
    """The store's round trip of a report that joined a tick under the tick's time (``sent_time``:
    the node's stamp), and of one stored before ``sent_time`` existed."""
    r = NodeReport("n", T0, 10.0, {"a": 0.5}, {"a": 0.1}, None, 0.0, sent_time=T0 + 3 * US)
    assert NodeReport.from_json(json.loads(json.dumps(r.to_json()))) == r
    old = {k: v for k, v in r.to_json().items() if k != "sent_time"}
    assert NodeReport.from_json(old).sent_time is None


def test_tick_tolerance_zero_compares_times_exactly_and_a_report_joins_the_nearest_tick(tmp_path):
    """In process: ``tick_tolerance_s = 0`` keeps exact stamps as the tick key (the opt-out); with a
    tolerance a report between two open ticks joins the nearer one."""
    from mpc_balancer.service.control import ControlService

    def report(svc, node, t):
        return svc.report(NodeReport(node, t, 100.0, {c: 0.8 for c in CLUSTERS}, {c: 0.01 for c in CLUSTERS}, None, 0.0))

    exact = ControlService(load_config(write_config(tmp_path / "serve.toml", service={"tick_tolerance_s": 0}))).setup().restore()
    assert report(exact, "a", T0)["nodes"] == 1 and report(exact, "b", T0 + US)["nodes"] == 1
    assert sorted(exact._pending) == [T0, T0 + US]
    exact.close()
    (tmp_path / "tol").mkdir()
    svc = ControlService(load_config(write_config(tmp_path / "tol" / "serve.toml", service={"expected_nodes": 3}))).setup().restore()
    later = T0 + pd.Timedelta(seconds=10)  # more than the 6 s tolerance apart: two open ticks
    assert report(svc, "a", T0)["time"] == T0.isoformat() and report(svc, "b", later)["time"] == later.isoformat()
    out = report(svc, "c", T0 + pd.Timedelta(seconds=4))  # 4 s from the first, 6 s from the second
    assert out["time"] == T0.isoformat() and out["nodes"] == 2
    assert svc._pending[T0]["c"].sent_time == T0 + pd.Timedelta(seconds=4)
    svc.close()


def test_a_straggler_of_a_tick_held_as_a_forward_jump_is_refused_and_the_next_tick_confirms_it(tmp_path):
    """In process: the fleet's clocks step 2 h forward together; the tick at the new time closes on two
    reports and the Balancer holds its time as a suspect jump (no tick is recorded as stepped). A
    third node's report for that tick, stamped 1 us later or at the same time, is a 409: it used to
    open a tick of its own, which confirmed the jump at once on one node's QPS. The next period's
    tick confirms it."""
    from mpc_balancer.service.control import Conflict, ControlService

    svc = ControlService(load_config(write_config(tmp_path / "serve.toml", service={"expected_nodes": 2}))).setup().restore()

    def report(node, t):
        return svc.report(NodeReport(node, t, 1000.0, {c: 0.8 for c in CLUSTERS}, {c: 0.01 for c in CLUSTERS}, None, 0.0))

    for k in range(3):
        t = T0 + pd.Timedelta(minutes=k)
        report("a", t)
        assert report("b", t + US)["closed"]
    jump = T0 + pd.Timedelta(hours=2)
    report("a", jump)
    assert report("b", jump - US)["closed"]
    assert svc.current["status"] == "hold" and svc.balancer.suspect_time_ == jump
    for stamp in (jump + US, jump):
        with pytest.raises(Conflict, match=f"belongs to the tick {jump}, which is closed: its time is held as a forward jump"):
            report("c", stamp)
    assert svc._pending == {} and svc.balancer.last_time_ == T0 + pd.Timedelta(minutes=2)
    nxt = jump + pd.Timedelta(minutes=1)
    report("a", nxt)
    assert report("b", nxt)["closed"]
    assert svc.current["status"] == "ok" and svc.balancer.last_time_ == nxt and svc.balancer.suspect_time_ is None
    svc.close()
