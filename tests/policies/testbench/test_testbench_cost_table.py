import json

import numpy as np
import pytest

from policies.cost_table import CostTable, QueueCostTable, default_cost_table, load_cost_table


def test_round_trip(tmp_path, tiny_table):
    table = tiny_table()
    table.save(tmp_path / "t.json")
    back = load_cost_table(tmp_path / "t.json")
    assert back == table
    assert back.provenance == table.provenance
    assert CostTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table


def test_interpolation_and_extrapolation():
    t = QueueCostTable((10.0, 20.0, 40.0), (1.0, 2.0, 2.0))
    np.testing.assert_allclose(t([5, 10, 15, 30, 40, 60]), [1.0, 1.0, 1.5, 2.0, 2.0, 2.0])
    u = QueueCostTable((10.0, 20.0), (1.0, 3.0))
    np.testing.assert_allclose(u([30.0]), [5.0])  # last segment's slope continues


def test_degradation_term(tiny_table):
    table = tiny_table()
    np.testing.assert_allclose(table.degradation_equivalent("prerank", [0.0, 0.5, 1.0], 0.22), [0.0, 0.1, 0.2])
    assert table.degradation_equivalent("rank", 0.5, 0.01) == 0.0  # never negative
    with pytest.raises(ValueError, match=r"degradation level must be in \[0, 1\], got \[1.5\]"):
        table.degradation_equivalent("rank", [1.5], 1.0)
    with pytest.raises(ValueError, match="unknown cluster 'gpu'"):
        table.degradation_equivalent("gpu", 0.1, 1.0)


def edit(table, path, value):
    d = table.to_dict()
    *head, last = path
    node = d
    for k in head:
        node = node[k]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return d


@pytest.mark.parametrize("path,value,needle", [
    (["format"], "other", "format must be 'mpc-balancer.cost-table', got 'other'"),
    (["version"], 2, "version 2 is not supported"),
    (["unit"], "ms", "unit must be 'cpu_ms_per_request', got 'ms'"),
    (["stages", "rank", "queue", "cost_ms"], [0.5, 0.4, 0.9], r"stages.rank.queue.cost_ms must be non-decreasing .* got \[0.5, 0.4, 0.9\]"),
    (["stages", "rank", "queue", "queue"], [2, 2, 20], r"stages.rank.queue.queue must be strictly increasing, got \[2.0, 2.0, 20.0\]"),
    (["stages", "rank", "queue", "cost_ms"], [0.1, 0.2], "stages.rank.queue.cost_ms has 2 values for 3 queue lengths"),
    (["stages", "retrieval", "channel", "cost_ms"], [-1, 1], r"stages.retrieval.channel.cost_ms must be finite and >= 0, got -1.0"),
    (["stages", "retrieval", "switch", "queue"], "10,100", "stages.retrieval.switch.queue must be a list of numbers, got '10,100'"),
    (["stages", "retrieval", "switch"], KeyError, "stages.retrieval.switch must be an object"),
    (["stages", "prerank", "models"], [], "stages.prerank.models must be a non-empty list"),
    (["stages", "gpu"], {}, r"stages must be exactly \['retrieval', 'prerank', 'rank'\]"),
    (["degradation", "rank", "degraded_cost_ms"], -0.5, "degradation.rank.degraded_cost_ms must be a finite number >= 0, got -0.5"),
    (["provenance", "machine"], KeyError, "provenance.machine is missing"),
    (["provenance", "measurements"], [], "provenance.measurements must be a non-empty list"),
    (["provenance", "measurements", 0, "repeats"], 0, r"provenance.measurements\[0\].repeats must be an integer >= 1, got 0"),
    (["provenance", "measurements", 0, "duration_s"], KeyError, r"provenance.measurements\[0\].duration_s is missing"),
    (["extra"], 1, r"unknown top-level keys \['extra'\]"),
])
def test_validation_errors_name_field_and_value(path, value, needle, tiny_table):
    with pytest.raises(ValueError, match=needle):
        CostTable.from_dict(edit(tiny_table(), path, value))


def test_load_errors_name_the_file(tmp_path, tiny_table):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(edit(tiny_table(), ["version"], 3)))
    with pytest.raises(ValueError, match=r"bad.json'.*version 3"):
        load_cost_table(bad)
    with pytest.raises(ValueError, match="cannot read"):
        load_cost_table(tmp_path / "missing.json")


def test_cost_array_rejects_a_model_without_table(tiny_table):
    with pytest.raises(ValueError, match=r"model switch values \[0, 2\] need a cost table per model"):
        tiny_table().cost_array([1, 1], [10, 10], [0, 0], [10, 10], [0, 2], [2, 2])


def test_shipped_table_is_valid_and_measured_by_the_testbench():
    table = default_cost_table()
    p = table.provenance
    assert p["tool"].startswith("mpc-balancer testbench")
    assert {m["stage"] for m in p["measurements"]} == {"retrieval", "prerank", "rank"}
    assert all(m["repeats"] >= 1 and m["duration_s"] > 0 for m in p["measurements"])
    assert p["machine"]["hostname"] and p["created"]
    assert len(table.prerank_models) == 2
    # measured, not hand-set: costs grow with queue length
    assert table.rank.cost_ms[-1] > 5 * table.rank.cost_ms[0]
