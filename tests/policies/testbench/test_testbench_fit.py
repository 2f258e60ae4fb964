import json

import numpy as np
import pytest

from mpc_balancer.cli import main
from policies.cost_table import load_cost_table
from policies.testbench.fit import fit_cost_table, fit_queue_table
from policies.testbench.measurements import FORMAT, VERSION, load_measurements


def bucket(variant, queue, cost, std=0.01, value_bucket=0):
    return {"value_bucket": value_bucket, "variant": variant, "queue": queue, "cpu_ms": cost, "cpu_ms_std": std,
            "cv": std / cost, "formula_ms": 1.1 * cost, "wall_ms": cost}


def doc(stage, buckets, workload=None):
    return {"format": FORMAT, "version": VERSION, "workload": workload or f"test:{stage}", "stage": stage,
            "variants": sorted({b["variant"] for b in buckets}), "variant_names": [],
            "config": {"duration_s": 0.3, "warmup_s": 0.05, "repeats": 9, "qps": None, "queues": [], "value_buckets": [0]},
            "provenance": {"machine": {"hostname": "testhost"}, "started": "2025-01-01T00:00:00+00:00",
                           "finished": "2025-01-01T00:01:00+00:00", "wall_s": 60.0, "cpu_s": 30.0},
            "buckets": buckets}


def linear_docs(rng=None, noise=0.0, queues=(10, 20, 40, 80, 160)):
    rng = rng or np.random.default_rng(0)
    f = lambda a, b, q: (a + b * q) * (1 + noise * rng.standard_normal())
    return [doc("retrieval", [bucket(v, q, f(0.05 * (1 + v), 0.001 * (1 + v), q)) for v in (0, 1) for q in queues]),
            doc("prerank", [bucket(v, q, f(0.03, 0.0005 * (1 + 3 * v), q)) for v in (0, 1) for q in queues]),
            doc("rank", [bucket(0, q, f(0.04, 0.02, q)) for q in queues])]


def test_fit_recovers_left_out_queue_lengths_of_a_linear_cost():
    table = fit_cost_table(linear_docs())
    for q in (15, 30, 60, 120):
        assert table.rank(q) == pytest.approx(0.04 + 0.02 * q)
        assert table.prerank_models[1](q) == pytest.approx(0.03 + 0.002 * q)
        assert table.retrieval_switch(q) == pytest.approx(0.1 + 0.002 * q)


def test_fit_is_monotone_on_noisy_data_and_records_provenance():
    table = fit_cost_table(linear_docs(np.random.default_rng(3), noise=0.3))
    for t in (table.retrieval_channel, table.retrieval_switch, *table.prerank_models, table.rank):
        assert np.all(np.diff(t.cost_ms) >= 0)
    p = table.provenance
    assert p["machine"]["hostname"] == "testhost" and len(p["measurements"]) == 3
    assert {m["stage"] for m in p["measurements"]} == {"retrieval", "prerank", "rank"}
    assert table.degraded_cost_ms[2] == table.rank.cost_ms[0]


def test_value_buckets_and_repeated_files_are_pooled():
    rows = [bucket(0, 10, 1.0, value_bucket=0), bucket(0, 10, 3.0, value_bucket=1), bucket(0, 20, 2.5)]
    t = fit_queue_table(rows)
    assert t.queue == (10.0, 20.0)
    assert t.cost_ms == (2.0, 2.5)


@pytest.mark.parametrize("docs,needle", [
    (lambda d: d[:2], r"no measurements for stage\(s\) \['rank'\]"),
    (lambda d: [doc("retrieval", [b for b in d[0]["buckets"] if b["variant"] == 0]), *d[1:]],
     r"retrieval measurements have no variant\(s\) \[1\]"),
    (lambda d: [d[0], doc("prerank", [dict(b, variant=b["variant"] + 1) for b in d[1]["buckets"]]), d[2]],
     r"prerank variants must be the models 0..M-1, got \[1, 2\]"),
])
def test_fit_errors(docs, needle):
    with pytest.raises(ValueError, match=needle):
        fit_cost_table(docs(linear_docs()))


def write_docs(directory, docs, prefix=""):
    """Each measurement document to ``<prefix><stage>.json``; their paths."""
    paths = []
    for d in docs:
        p = directory / f"{prefix}{d['stage']}.json"
        p.write_text(json.dumps(d))
        paths.append(str(p))
    return paths


def test_cli_fit_and_check(tmp_path, capsys):
    paths = write_docs(tmp_path, linear_docs())
    out = tmp_path / "table.json"
    assert main(["testbench", "fit", "--measurements", *paths, "--out", str(out)]) == 0
    table = load_cost_table(out)
    assert table.rank(80) == pytest.approx(0.04 + 0.02 * 80)
    assert load_measurements(paths[0])["sha256"] == table.provenance["measurements"][0]["sha256"]
    assert main(["testbench", "check", "--cost-table", str(out), "--measurements", *paths]) == 0
    assert "max |error| 0.00%" in capsys.readouterr().out


def test_cli_run_writes_measurements(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["testbench", "run", "--workload", "builtin:prerank", "--queues", "5,50", "--duration", "0.03",
                 "--warmup", "0", "--repeats", "2", "--qps", "500", "--json", str(out)]) == 0
    m = load_measurements(out)
    assert m["stage"] == "prerank" and len(m["buckets"]) == 4
    assert m["provenance"]["machine"]["logical_cpus"] >= 1
    assert "repeat agreement" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["run", "--workload", "builtin:nope"], "unknown builtin workload 'nope'"),
    (["run", "--workload", "builtin:prerank", "--queues", "a,b"], "--queues must be comma-separated integers"),
    (["run", "--workload", "math:sqrt", "--queues", "3", "--duration", "0.01", "--repeats", "1", "--warmup", "0"],
     r"bucket \(value_bucket=0, variant=0, queue=3\): returned shape \(\)"),
    (["fit", "--measurements", "/nonexistent.json", "--out", "/tmp/x.json"], "cannot read"),
])
def test_cli_errors_are_one_line(argv, needle, capsys):
    assert main(["testbench", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle.replace("\\", "") in err.replace("\\", "") or __import__("re").search(needle, err)
    assert len(err.splitlines()) == 1


def test_check_calibrate_removes_a_uniform_session_slowdown(tmp_path, capsys):
    paths = write_docs(tmp_path, linear_docs())
    out = tmp_path / "table.json"
    assert main(["testbench", "fit", "--measurements", *paths, "--out", str(out)]) == 0
    slow_docs = linear_docs(queues=(15, 30, 60))  # left-out lengths, measured on a machine 30% slower
    for d in slow_docs:
        for b in d["buckets"]:
            b["cpu_ms"] *= 1.3
    slow = write_docs(tmp_path, slow_docs, prefix="slow_")
    capsys.readouterr()
    assert main(["testbench", "check", "--cost-table", str(out), "--measurements", *slow]) == 1
    assert "max |error| 23.08%" in capsys.readouterr().out  # 1/1.3 - 1
    assert main(["testbench", "check", "--cost-table", str(out), "--measurements", *slow, "--calibrate"]) == 0
    text = capsys.readouterr().out
    assert "max |error| 0.00%" in text and "1.300" in text
