"""Strict, atomic JSON output of the CLI (an all-zero trace wrote ``NaN``, which is not JSON)."""
import json

import numpy as np
import pytest

from mpc_balancer.jsonio import write_json


def test_non_finite_values_become_null_and_numpy_values_plain(tmp_path):
    p = write_json(tmp_path / "r.json", {"mu": float("nan"), "nu": np.float64(np.inf), "n": np.int64(3),
                                         "per": [np.nan, 1.5], "arr": np.array([0.5, np.nan])})
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"mu": None, "nu": None, "n": 3, "per": [None, 1.5], "arr": [0.5, None]}


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path):
    p = tmp_path / "results.json"
    write_json(p, {"run": 1})
    with pytest.raises(TypeError):
        write_json(p, {"run": 2, "bad": object()})  # not serialisable: nothing is replaced
    assert json.loads(p.read_text()) == {"run": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind
