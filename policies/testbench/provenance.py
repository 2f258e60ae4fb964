"""Where and when a measurement was taken: machine description and timestamps."""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import socket


def machine_info() -> dict:
    """A description of this machine and the numeric stack (for the cost table's provenance)."""
    import numpy as np

    info = {"hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
            "processor": _cpu_model() or platform.processor(), "logical_cpus": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "blas_threads_env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    with contextlib.suppress(OSError):  # no load average on this platform
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return info


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None
