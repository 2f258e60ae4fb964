"""`mpc-balancer serve` as a real uvicorn subprocess over loopback: decisions, restarts, leases,
overrides, auth, validation and metrics."""
from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

import mpc_balancer as mb
from mpc_balancer.client import BalancerClient

from .conftest import CLUSTERS, READ, WRITE, call, write_config

T0 = pd.Timestamp("1995-08-28 13:32:00")  # just after the bundled nasa trace


def node_reports(k: int, rng: np.random.Generator) -> list[dict]:
    """Two nodes' reports for tick k: different qps, loads and the same lambda."""
    t = (T0 + pd.Timedelta(minutes=k)).isoformat()
    out = []
    for node in ("node-b", "node-a"):  # out of name order on purpose
        q = float(rng.uniform(500, 3000))
        load = {c: float(rng.uniform(0.6, 1.1)) for c in CLUSTERS}
        out.append({"node": node, "time": t, "qps": q, "load": load, "lam": {c: 0.01 for c in CLUSTERS}})
    return out


def expected_telemetry(reports: list[dict], lam: dict) -> mb.Telemetry:
    """The aggregate, computed here independently: qps summed, load weighted by qps."""
    q = np.array([r["qps"] for r in reports])
    load = {c: float(np.dot(q, [r["load"][c] for r in reports]) / q.sum()) for c in CLUSTERS}
    return mb.Telemetry(time=pd.Timestamp(reports[0]["time"]), qps=float(q.sum()), load=load, lam=lam)


def pid_balancer() -> mb.Balancer:
    return mb.Balancer.create("pid", clusters={c: mb.Cluster(capacity=v, target=0.9) for c, v in CLUSTERS.items()},
                              policy=None, history=None, period_s=60)


def test_node_reports_step_like_the_in_process_balancer_and_survive_kill9(tmp_path, server_factory):
    cfg = write_config(tmp_path / "serve.toml")
    srv = server_factory(cfg).start()
    ref = pid_balancer()
    rng = np.random.default_rng(0)
    lam = {c: 0.01 for c in CLUSTERS}
    for k in range(8):
        reports = node_reports(k, rng)
        for r in reports:
            r["lam"] = lam
        if k == 5:  # one report accepted, then the process dies with the tick open
            assert call(srv.url + "/v1/telemetry", "POST", reports[0])[0] == 202
            srv.kill9()
            srv = server_factory(cfg).start()
            status, body, _ = call(srv.url + "/v1/decision", token=READ)
            assert status == 200 and body["time"] == (T0 + pd.Timedelta(minutes=4)).isoformat()
            reports_to_send = reports[1:]
        else:
            reports_to_send = reports
        for r in reports_to_send:
            status, out, _ = call(srv.url + "/v1/telemetry", "POST", r)
            assert status == 202, out
        assert out["closed"] and out["nodes"] == 2  # the second node's report closed the tick
        status, got, _ = call(srv.url + "/v1/decision", token=READ)
        d = ref.step(expected_telemetry(reports, lam))
        assert got["time"] == reports[0]["time"] and got["reports"] == 2 and got["status"] == d.status
        np.testing.assert_allclose([got["lam"][c] for c in CLUSTERS], d.lam_vector, rtol=1e-12)
        lam = got["lam"]
    # a late report for a closed tick is refused, never stepped twice
    status, out, _ = call(srv.url + "/v1/telemetry", "POST", {**reports[0], "lam": lam})
    assert status == 409 and "closed" in out["detail"]
    # the scheduler path: one whole tick in, the decision out, equal to the in-process step
    tick = {"time": (T0 + pd.Timedelta(minutes=8)).isoformat(), "qps": 2100.0,
            "load": {"retrieval": 0.95, "prerank": 0.7, "rank": 0.99}, "lam": lam}
    status, got, _ = call(srv.url + "/v1/step", "POST", tick)
    d = ref.step(mb.Telemetry(time=pd.Timestamp(tick["time"]), qps=2100.0, load=tick["load"], lam=lam))
    assert status == 200
    np.testing.assert_allclose([got["lam"][c] for c in CLUSTERS], d.lam_vector, rtol=1e-12)
    hist = call(srv.url + "/v1/decisions?after=0&limit=100", token=READ)[1]
    assert [h["version"] for h in hist] == list(range(1, len(hist) + 1))
    assert sum(h["reports"] for h in hist if h["time"] is not None and h["controller"] == "pid") == 2 * 8 + 1


@pytest.mark.slow
def test_mpc_with_the_shipped_bundle_restarts_to_the_uninterrupted_decision(tmp_path, server_factory):
    """The MPC, the shipped policy bundle and the nasa history; kill -9 after 3 ticks, restart, 3
    more: every decision equals an uninterrupted in-process Balancer's on the same telemetry."""
    from policies.cascade import Cascade
    from policies.runtime import PolicyRuntime

    cfg = write_config(tmp_path / "serve.toml", controller="mpc", service={"expected_nodes": 1},
                       history='trace = "nasa"', extra='[policy]\nbundle = "pretrained"\n[balancer]\ntime_budget_s = 60\n'
                       '[controller.options]\nhorizon = 20\n')
    srv = server_factory(cfg).start()
    from mpc_balancer.traces import load_trace
    from mpc_balancer.traffic import Traffic

    traffic = Traffic(load_trace("nasa"), period_s=60, peak_qps=20000)
    ref = mb.Balancer.create("mpc", clusters={c: mb.Cluster(capacity=v, target=0.9) for c, v in CLUSTERS.items()},
                             policy=PolicyRuntime.load("pretrained"), history=pd.Series(traffic.rate_qps, index=traffic.times),
                             period_s=60, time_budget_s=60, horizon=20)
    cas, rng = Cascade(), np.random.default_rng(3)
    lam = {c: 0.01 for c in CLUSTERS}
    load = np.array([0.85, 0.9, 0.95])
    for k in range(6):
        if k == 3:
            srv.kill9()
            srv = server_factory(cfg).start()
        t = T0 + pd.Timedelta(minutes=k)
        x = cas.sample_features(200, t.hour + t.minute / 60, rng)
        qps = float(traffic.rate_qps[-1] * (1 + 0.05 * k))
        body = {"node": "n1", "time": t.isoformat(), "qps": qps, "load": dict(zip(CLUSTERS, load.tolist())),
                "lam": lam, "features": x.tolist()}
        status, out, _ = call(srv.url + "/v1/telemetry", "POST", body)
        assert status == 202 and out["closed"], out
        got = call(srv.url + "/v1/decision", token=READ)[1]
        d = ref.step(mb.Telemetry(time=t, qps=qps, load=body["load"], lam=lam, features=x))
        assert got["status"] == d.status == "ok", (got["reason"], d.reason)
        np.testing.assert_allclose([got["lam"][c] for c in CLUSTERS], d.lam_vector, rtol=1e-9)
        assert got["plan"] is not None and len(got["plan"]["lam"]) == 20
        lam = got["lam"]
        load = np.clip(load * (1 + 0.3 * (np.log(0.01) - np.log(d.lam_vector)) / 10), 0.5, 1.2)


def test_stale_telemetry_holds_then_the_client_sees_the_lease_expire(tmp_path, server_factory):
    cfg = write_config(tmp_path / "serve.toml", service={"expected_nodes": 1, "lease_s": 3, "stale_after_s": 1,
                                                         "safe": "fixed", "safe_lam": {c: 2.0 for c in CLUSTERS}})
    srv = server_factory(cfg).start()
    client = BalancerClient(srv.url, WRITE, node="n1", safe_lam={c: 5.0 for c in CLUSTERS})
    client.report(T0, 1000.0, {c: 0.8 for c in CLUSTERS}, {c: 0.01 for c in CLUSTERS})
    first = client.decision()
    assert first.status == "ok" and first.source == "service" and first.version == 2
    deadline = time.monotonic() + 30
    d = first
    while d.status != "hold" and time.monotonic() < deadline:  # telemetry stopped: the service holds
        time.sleep(0.2)
        d = client.decision()
    assert d.status == "hold" and d.lam == first.lam and "no telemetry" in d.reason
    assert d.valid_until == first.valid_until  # a hold does not renew the lease
    srv.kill9()  # the service is gone as well: the client keeps the cached decision until the lease ends
    d = client.decision()
    assert d.source == "cache" and d.lam == first.lam
    while datetime.now(timezone.utc) <= first.valid_until:
        time.sleep(0.2)
    d = client.decision()
    assert d.status == "expired" and d.source == "safe" and d.lam == {c: 2.0 for c in CLUSTERS}
    # a node that never heard from the service applies its own safe lambda
    fresh = BalancerClient(srv.url, READ, safe_lam={c: 5.0 for c in CLUSTERS}).decision()
    assert fresh.status == "no-decision" and fresh.lam == {c: 5.0 for c in CLUSTERS}


def test_override_is_applied_audited_and_cleared(tmp_path, server_factory):
    cfg = write_config(tmp_path / "serve.toml", service={"expected_nodes": 1})
    srv = server_factory(cfg).start()
    client = BalancerClient(srv.url, WRITE, node="n1")
    client.report(T0, 1000.0, {c: 0.95 for c in CLUSTERS}, {c: 0.01 for c in CLUSTERS})
    base = client.fetch()
    until = datetime.now(timezone.utc) + timedelta(hours=1)
    body = {"lam": {"rank": 0.5}, "until": until.isoformat(), "by": "alice", "reason": "incident 42"}
    assert call(srv.url + "/v1/override", "PUT", body, token=READ)[0] == 403
    status, got, _ = call(srv.url + "/v1/override", "PUT", body)
    assert status == 200 and got["status"] == "override" and got["lam"]["rank"] == 0.5
    assert got["lam"]["retrieval"] == base["lam"]["retrieval"] and "alice" in got["reason"]
    # the controller keeps stepping underneath; the pin stays on top
    client.report(T0 + pd.Timedelta(minutes=1), 1000.0, {c: 0.95 for c in CLUSTERS}, got["lam"])
    d = client.fetch()
    assert d["status"] == "override" and d["lam"]["rank"] == 0.5 and d["time"] == (T0 + pd.Timedelta(minutes=1)).isoformat()
    for bad, loc in (({"lam": {"nope": 1.0}}, ["body", "lam", "nope"]), ({"lam": {"rank": 1e9}}, ["body", "lam", "rank"]),
                     ({"until": "2000-01-01T00:00:00Z"}, ["body", "until"])):
        status, err, _ = call(srv.url + "/v1/override", "PUT", {**body, **bad})
        assert status == 422 and err["detail"][0]["loc"] == loc, err
    status, cleared, _ = call(srv.url + "/v1/override?by=bob&reason=resolved", "DELETE")
    assert status == 200 and cleared["status"] == "ok" and cleared["lam"]["rank"] != 0.5
    assert call(srv.url + "/v1/override?by=bob", "DELETE")[0] == 404
    audit = call(srv.url + "/v1/override/audit", token=READ)[1]
    assert [(a["action"], a["by"]) for a in audit] == [("clear", "bob"), ("set", "alice")]
    assert audit[1]["lam"] == {"rank": 0.5} and audit[1]["reason"] == "incident 42" and audit[0]["reason"] == "resolved"
    # an override that runs out is ended by the service's clock and audited as such
    soon = datetime.now(timezone.utc) + timedelta(seconds=1)
    assert call(srv.url + "/v1/override", "PUT", {**body, "until": soon.isoformat()})[0] == 200
    deadline = time.monotonic() + 20
    while client.fetch()["status"] == "override" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.fetch()["status"] == "ok"
    assert call(srv.url + "/v1/override/audit", token=READ)[1][0]["action"] == "expire"


GOOD = {"node": "n1", "time": T0.isoformat(), "qps": 1000.0, "load": {c: 0.8 for c in CLUSTERS},
        "lam": {c: 0.01 for c in CLUSTERS}, "features": None}
BAD_FIELDS = [
    ("qps", {"qps": "NaN"}, ["body", "qps"]),
    ("qps", {"qps": -1.0}, ["body", "qps"]),
    ("qps", {"qps": 1e12}, ["body", "qps"]),
    ("qps", {"qps": "many"}, ["body", "qps"]),
    ("time", {"time": "yesterday"}, ["body", "time"]),
    ("time", {"time": "3000-01-01T00:00:00"}, ["body", "time"]),  # a checkpoint could not hold it (it broke restores)
    ("time", {"time": "1000-01-01T00:00:00"}, ["body", "time"]),
    ("time", {"time": "9999-12-31T23:59:59-05:00"}, ["body", "time"]),  # past the calendar in UTC: was a 500
    ("node", {"node": ""}, ["body", "node"]),
    ("node", {"node": None}, ["body", "node"]),
    ("load", {"load": {**GOOD["load"], "retrieval": -0.1}}, ["body", "load", "retrieval"]),
    ("load", {"load": {**GOOD["load"], "prerank": 1e6}}, ["body", "load", "prerank"]),
    ("load", {"load": {**GOOD["load"], "rank": "Infinity"}}, ["body", "load", "rank"]),
    ("load", {"load": {**GOOD["load"], "ranking": 0.5}}, ["body", "load", "ranking"]),
    ("load", {"load": {"retrieval": 0.8, "prerank": 0.8}}, ["body", "load", "rank"]),
    ("lam", {"lam": {**GOOD["lam"], "rank": "NaN"}}, ["body", "lam", "rank"]),
    ("lam", {"lam": {**GOOD["lam"], "rank": 1e9}}, ["body", "lam", "rank"]),
    ("lam", {"lam": {**GOOD["lam"], "rank": -1}}, ["body", "lam", "rank"]),
    ("features", {"features": [[1.0, 2.0]]}, ["body", "features"]),  # telemetry-only service
    ("over", {"over": {c: 0.0 for c in ("retrieval", "prerank")}}, ["body", "over", "rank"]),
    ("over", {"over": {"retrieval": 0.0, "prerank": 0.0, "rank": -0.01}}, ["body", "over", "rank"]),
    ("over", {"over": {"retrieval": 0.0, "prerank": 0.0, "rank": 0.0, "ranking": 0.0}}, ["body", "over", "ranking"]),
    ("extra", {"colour": "blue"}, ["body", "colour"]),
]


def test_bad_fields_get_422_naming_the_field_and_never_reach_the_controller(tmp_path, server_factory):
    cfg = write_config(tmp_path / "serve.toml", service={"expected_nodes": 1, "max_qps": 1e9})
    srv = server_factory(cfg).start()
    version = call(srv.url + "/v1/decision", token=READ)[1]["version"]
    for name, change, loc in BAD_FIELDS:
        status, err, _ = call(srv.url + "/v1/telemetry", "POST", {**GOOD, **change})
        assert status == 422, (name, change, err)
        assert loc in [e["loc"] for e in err["detail"]], (name, change, err)
        assert name in err["detail"][0]["loc"] or name == "extra"
        if name != "node":  # the scheduler's whole-tick body has no node
            status, err, _ = call(srv.url + "/v1/step", "POST", {k: v for k, v in {**GOOD, **change}.items() if k != "node"})
            assert status == 422 and loc in [e["loc"] for e in err["detail"]], (name, err)
    assert call(srv.url + "/v1/telemetry", "POST", b"{not json")[0] == 422
    assert call(srv.url + "/v1/decision", token=READ)[1]["version"] == version  # nothing was stepped
    assert call(srv.url + "/v1/telemetry", "POST", GOOD)[0] == 202
    assert call(srv.url + "/v1/decision", token=READ)[1]["version"] == version + 1
    # an over-utilisation no node can have counted (its range depends on C_m) reaches the Balancer,
    # which holds the tick naming it
    late = (T0 + pd.Timedelta(minutes=1)).isoformat()
    body = {**{k: v for k, v in GOOD.items() if k != "node"}, "time": late, "over": {c: 50.0 for c in CLUSTERS}}
    status, got, _ = call(srv.url + "/v1/step", "POST", body)
    assert status == 200 and got["status"] == "hold" and "over[retrieval]=50.0" in got["reason"], got


def test_auth_scopes_etag_and_metrics(tmp_path, server_factory):
    from prometheus_client.parser import text_string_to_metric_families

    cfg = write_config(tmp_path / "serve.toml", service={"expected_nodes": 1})
    srv = server_factory(cfg).start()
    u = srv.url
    assert call(u + "/v1/decision", token=None)[0] == 401
    assert call(u + "/v1/decision", token="not-a-known-token-at-all")[0] == 401
    assert call(u + "/v1/decision", token=READ)[0] == 200
    assert call(u + "/v1/decision", token=WRITE)[0] == 200  # write implies read
    for path, method in (("/v1/telemetry", "POST"), ("/v1/step", "POST"), ("/v1/override", "PUT"), ("/v1/override?by=x", "DELETE")):
        assert call(u + path, method, GOOD, token=None)[0] == 401, path
        assert call(u + path, method, GOOD, token=READ)[0] == 403, path
    assert call(u + "/healthz", token=None)[0] == 200 and call(u + "/readyz", token=None)[0] == 200
    # ETag: unchanged decision -> 304, a new one -> 200
    status, body, headers = call(u + "/v1/decision", token=READ)
    tag = headers["ETag"]
    assert call(u + "/v1/decision", token=READ, headers={"If-None-Match": tag})[0] == 304
    assert call(u + "/v1/telemetry", "POST", GOOD)[0] == 202
    status, body2, headers2 = call(u + "/v1/decision", token=READ, headers={"If-None-Match": tag})
    assert status == 200 and headers2["ETag"] != tag and body2["version"] == body["version"] + 1
    assert call(u + "/v1/telemetry", "POST", {**GOOD, "qps": -5})[0] == 422
    status, text, _ = call(u + "/metrics", token=None)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    for c in CLUSTERS:
        assert samples[("mpc_balancer_lambda", (("cluster", c),))] == pytest.approx(body2["lam"][c])
        assert ("mpc_balancer_planned_peak_load", (("cluster", c),)) in samples
    assert samples[("mpc_balancer_decisions_total", (("status", "ok"),))] == 1
    assert samples[("mpc_balancer_reports_total", (("outcome", "accepted"),))] == 1
    assert samples[("mpc_balancer_reports_total", (("outcome", "rejected"),))] == 1
    assert samples[("mpc_balancer_step_seconds_count", ())] == 1
    assert samples[("mpc_balancer_nodes_reporting", ())] == 1 and samples[("mpc_balancer_ready", ())] == 1
    assert 0 <= samples[("mpc_balancer_telemetry_age_seconds", ())] < 600
    assert 0 <= samples[("mpc_balancer_checkpoint_age_seconds", ())] < 600
    assert fams["mpc_balancer_step_seconds"].type == "histogram"
    assert not math.isnan(samples[("mpc_balancer_override_active", ())])


def test_a_mistyped_future_time_locks_no_one_out_and_a_tick_is_stepped_once(tmp_path, server_factory):
    """A report a year ahead (in range) is held by the Balancer until a report confirms the jump: it
    must not close the timeline for the fleet, before or after a kill -9. A tick with node reports
    open is not also stepped by POST /v1/step (it was stepped twice, one report lost)."""
    cfg = write_config(tmp_path / "serve.toml", service={"expected_nodes": 1})
    srv = server_factory(cfg).start()

    def report(k, **kw):
        return call(srv.url + "/v1/telemetry", "POST", {**GOOD, "time": (T0 + pd.Timedelta(minutes=k)).isoformat(), **kw})

    assert report(0)[0] == 202
    assert report(0, time=(T0 + pd.Timedelta(days=365)).isoformat())[0] == 202
    d = call(srv.url + "/v1/decision", token=READ)[1]
    assert d["status"] == "hold" and "held until the next report confirms it" in d["reason"]
    assert report(1)[0] == 202  # the fleet carries on
    assert call(srv.url + "/v1/decision", token=READ)[1]["status"] == "ok"
    assert report(2, time=(T0 + pd.Timedelta(days=365)).isoformat())[0] == 202
    srv.kill9()
    srv.start()
    assert report(3)[0] == 202 and call(srv.url + "/v1/decision", token=READ)[1]["status"] == "ok"
    assert call(srv.url + "/v1/decisions?after=99999999999999999999999", token=READ)[0] == 422  # was a 500
    (tmp_path / "two").mkdir()
    cfg2 = write_config(tmp_path / "two" / "serve.toml", service={"expected_nodes": 2})
    two = server_factory(cfg2).start()
    t1 = (T0 + pd.Timedelta(minutes=1)).isoformat()
    assert call(two.url + "/v1/telemetry", "POST", {**GOOD, "time": t1})[0] == 202  # 1 of 2 nodes: open
    status, err, _ = call(two.url + "/v1/step", "POST", {k: v for k, v in GOOD.items() if k != "node"} | {"time": t1})
    assert status == 409 and "node report(s) open" in err["detail"]
