import json

import numpy as np
import pytest

from policies.cascade import Cascade, CascadeSpec, CostParams, StageSpec
from policies.cost_table import default_cost_table

STAGES = (
    StageSpec("retrieval", "retrieval", {"channels": (1, 2), "queue": (10, 50), "switch": (0, 1)}),
    StageSpec("prerank", "prerank", {"queue": (20,), "model": (0, 1)}),
    StageSpec("rank", "rank", {"queue": (5,)}),
)


def test_cascade_costs_from_a_table_equal_hand_computed_values(tiny_table):
    cas = Cascade(CascadeSpec(stages=STAGES, cost_table=tiny_table(), revenue=CascadeSpec().revenue))
    ov = cas.spec.revenue.channel_overlap
    for a, (ret, pre, _rnk) in enumerate(cas.actions):
        ch, q, sw = ret["channels"], ret["queue"], ret["switch"]
        n_r = q * (1 - ov ** (ch + sw)) / (1 - ov)
        n_p = min(20, n_r)
        n_k = min(5, n_p)
        chan = 0.1 + (q - 10) * 0.9 / 90  # channel table 10:0.1 .. 100:1.0
        switch = 0.5 + (q - 10) * 1.8 / 90  # switch table 10:0.5 .. 100:2.3
        model_tab = [(0.02, 0.2), (0.1, 1.0)][pre["model"]]
        pre_cost = model_tab[0] + (n_p - 10) * (model_tab[1] - model_tab[0]) / 90
        rank_cost = 0.05 + (n_k - 2) * 0.4 / 8  # rank table 2:0.05, 10:0.45
        np.testing.assert_allclose(cas.cost[:, a], [ch * chan + sw * switch, pre_cost, rank_cost], rtol=1e-12)
    # spot check one action by hand: 2 channels x queue 50 + switch -> 2 * 0.5 + 1.3 = 2.3
    a = next(i for i, (r, p, k) in enumerate(cas.actions) if (r["channels"], r["queue"], r["switch"], p["model"]) == (2, 50, 1, 1))
    assert cas.cost[0, a] == pytest.approx(2.3)
    assert cas.cost[1, a] == pytest.approx(0.1 + 10 * 0.9 / 90)
    assert cas.cost[2, a] == pytest.approx(0.2)


def test_default_spec_uses_the_shipped_table_and_explicit_costs_fall_back(tiny_table):
    spec = CascadeSpec()
    assert spec.cost_table is default_cost_table() and spec.costs is None
    linear = Cascade(CascadeSpec(costs=CostParams()))
    assert linear.cost.shape == (3, 960)
    assert linear.cost[2].max() == pytest.approx(0.05 + 100 * 0.08)
    with pytest.raises(ValueError, match="not both"):
        CascadeSpec(costs=CostParams(), cost_table=tiny_table())


def test_spec_round_trips_and_from_cost_table(tmp_path, tiny_table):
    spec = CascadeSpec(stages=STAGES, cost_table=tiny_table())
    back = CascadeSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    np.testing.assert_array_equal(Cascade(back).cost, Cascade(spec).cost)
    path = tmp_path / "t.json"
    tiny_table().save(path)
    from_file = CascadeSpec.from_cost_table(path, stages=STAGES)
    np.testing.assert_array_equal(Cascade(from_file).cost, Cascade(spec).cost)
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({"cost_params": {"rank_per_item": 0.5}}))
    assert CascadeSpec.from_cost_table(legacy).costs.rank_per_item == 0.5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(tiny_table().to_dict(), version=9)))
    with pytest.raises(ValueError, match=r"bad.json'.*version 9"):
        CascadeSpec.from_cost_table(bad)


def test_table_needs_a_model_table_per_prerank_model(tiny_table):
    one_model = tiny_table()
    one_model = type(one_model)(**{**one_model.__dict__, "prerank_models": one_model.prerank_models[:1]})
    with pytest.raises(ValueError, match="need a cost table per model"):
        Cascade(CascadeSpec(stages=STAGES, cost_table=one_model))


def test_default_cascade_cost_ratios_leave_room_for_the_scenario():
    cas = Cascade()
    ratio = cas.cost.max(axis=1) / cas.cost.min(axis=1)
    assert (cas.cost > 0).all()
    assert np.all(ratio >= 10), ratio
