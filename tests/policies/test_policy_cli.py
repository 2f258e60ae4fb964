"""CLI: train writes a loadable bundle; evaluate --algos pretrained writes the JSON layout."""
import json

import numpy as np
import pytest

from mpc_balancer.cli import main
from policies.runtime import PolicyRuntime


def test_train_writes_a_loadable_bundle(tmp_path, capsys):
    assert main(["train", "--algo", "awrq", "--seed", "0", "--out", str(tmp_path), "--logs", "5000",
                 "--steps", "5", "--batch-size", "128", "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    rt = PolicyRuntime.load(tmp_path / "pretrained.json")
    assert rt.act(np.array([[0.0, 0.5, 0.5, 0.0, 1.0]]), [0.1, 0.1, 0.1]).shape == (1,)
    # the recorded command rebuilds this bundle: every option that differs from its default
    assert rt.meta["training"]["command"] == ("mpc-balancer train --algo awrq --seed 0 --out DIR --logs 5000 "
                                              "--steps 5 --batch-size 128")


def test_evaluate_pretrained_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["policies", "evaluate", "--algos", "pretrained", "--seeds", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Table 1" in text
    r = json.loads(out.read_text())["algos"]["pretrained"]
    for k in ("return_pct_mean", "return_pct_std", "spearman_mean", "regret_pct_mean"):
        assert isinstance(r[k], float)
    assert r["seeds"] == 1 and r["return_pct_mean"] > 90


def test_user_errors_are_one_line(capsys):
    assert main(["policies", "evaluate", "--algos", "ppo", "--seeds", "1"]) == 2
    assert "unknown algorithm" in capsys.readouterr().err
    assert main(["policies", "evaluate", "--algos", "pretrained", "--bundle", "/nonexistent/x"]) == 2
    with pytest.raises(SystemExit) as e:  # argparse names the option and the value
        main(["train", "--out", "/tmp/never-written", "--channels", "0"])
    assert e.value.code == 2 and "argument --channels: must be finite and > 0, got '0'" in capsys.readouterr().err
