import pytest

from policies.cost_table import CostTable, QueueCostTable


def _tiny_table() -> CostTable:
    t = lambda q, c: QueueCostTable(tuple(map(float, q)), tuple(map(float, c)))
    return CostTable(
        retrieval_channel=t([10, 100], [0.1, 1.0]), retrieval_switch=t([10, 100], [0.5, 2.3]),
        prerank_models=(t([10, 100], [0.02, 0.2]), t([10, 100], [0.1, 1.0])),
        rank=t([2, 10, 20], [0.05, 0.45, 0.95]), degraded_cost_ms=(0.1, 0.02, 0.05),
        provenance={"tool": "test", "created": "2025-01-01T00:00:00+00:00", "machine": {"hostname": "h"},
                    "measurements": [{"workload": "builtin:ranking", "stage": "rank", "date": "2025-01-01",
                                      "duration_s": 0.3, "warmup_s": 0.05, "repeats": 9}]})


@pytest.fixture
def tiny_table():
    """A small hand-written cost table (a factory: call it for a fresh copy)."""
    return _tiny_table
