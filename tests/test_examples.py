"""Every example in examples/ runs, as a user would run it (a fresh interpreter), and prints its results."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# each example's arguments for a short run, and what its output must show
RUNS = {
    "closed_loop.py": (["--days", "0.1"], ["static", "dcaf", "pid", "uplift vs static"]),
    "embed_balancer.py": (["--hours", "24"], ["policy + request sample", "telemetry only", "telemetry-only revenue / sampled"]),
}


def test_every_example_has_a_run():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(RUNS)


def run(name: str) -> str:
    args, needles = RUNS[name]
    p = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, OPENBLAS_NUM_THREADS="1"), cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    for needle in needles:
        assert needle in p.stdout, (needle, p.stdout[-1000:])
    return p.stdout


def test_closed_loop_example():
    out = run("closed_loop.py")
    uplift = {m[1]: float(m[2]) for m in re.finditer(r"^(\w+)\s+uplift vs static ([+-][\d.]+)%", out, re.M)}
    assert uplift["static"] == 0.0 and set(uplift) == {"static", "dcaf", "pid"}
    nu = [float(x) for x in re.findall(r"nu (\d\.\d+)", out)]
    assert len(nu) == 3 and all(0.0 <= v < 0.05 for v in nu)  # every controller holds the load near C_m


@pytest.mark.slow
def test_embed_balancer_example():
    out = run("embed_balancer.py")
    share = float(out.strip().splitlines()[-1].split(":")[1].strip().rstrip("%"))
    assert 90.0 < share < 110.0, out[-500:]  # telemetry-only control earns about what the sampled policy does
