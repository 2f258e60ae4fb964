"""Import hygiene: no torch and no mpc_balancer when importing the policies packages."""
import subprocess
import sys


def _modules_after(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_policies_offline_does_not_import_torch_or_mpc_balancer():
    mods = _modules_after("import policies, policies.offline")
    assert "policies.offline" in mods
    assert "torch" not in mods
    assert not any(m == "mpc_balancer" or m.startswith("mpc_balancer.") for m in mods)


def test_serving_path_does_not_import_torch(tmp_path):
    code = """
import numpy as np
from policies.offline import AdEnvironment, BudgetAllocator, MTORL
env = AdEnvironment(n_users=20, horizon=5, seed=1)
j = env.generate()
import subprocess
"""
    # fit in a child process, then load and serve in a fresh one
    fit = f"""
from policies.offline import AdEnvironment, MTORL, save_model
j = AdEnvironment(n_users=40, horizon=5, seed=1).generate()
save_model(MTORL(d_model=8, max_epochs=1).fit(j), r"{tmp_path}")
"""
    subprocess.run([sys.executable, "-c", fit], check=True, capture_output=True)
    serve = f"""
import numpy as np
from policies.offline import AdEnvironment, BudgetAllocator, load_model
j = AdEnvironment(n_users=20, horizon=5, seed=2).generate()
m = load_model(r"{tmp_path}")
r = m.predict_reward(j)[j.mask > 0]
a = BudgetAllocator(10.0).allocate(r, m.channel_costs_, prior=m.action_proba(j)[j.mask > 0])
assert a.spend <= 10.0
"""
    mods = _modules_after(code + serve)
    assert "torch" not in mods
