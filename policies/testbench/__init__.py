"""AutoBucket TestBench: measure the CPU cost per request of stage workloads by load tests, fit
monotone queue->cost tables and write the cost table the cascade loads.

Modules: :mod:`.workloads` (the workload contract, ``--workload`` resolution), :mod:`.builtin`
(reference retrieval / pre-ranking / ranking workloads), :mod:`.runner` (paced load tests),
:mod:`.stats` (robust statistics, the cost formula), :mod:`.isotonic` (PAV), :mod:`.fit`
(measurements -> :class:`policies.cost_table.CostTable`), :mod:`.measurements` (measurement files),
:mod:`.provenance` (machine and date).
"""
from .fit import fit_cost_table, fit_queue_table
from .isotonic import isotonic_fit
from .runner import Bucket, BucketError, LoadTestConfig, run_bucket, run_load_test
from .stats import cost_per_request
from .workloads import CallableWorkload, Workload, resolve_workload

__all__ = ["Bucket", "BucketError", "CallableWorkload", "LoadTestConfig", "Workload", "cost_per_request",
           "fit_cost_table", "fit_queue_table", "isotonic_fit", "resolve_workload", "run_bucket", "run_load_test"]
