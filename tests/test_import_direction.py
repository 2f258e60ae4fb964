"""Imports go one way, for every module of every package (read on the syntax tree, lazy imports too).

::

    mpc_balancer.cli  ->  mpc_balancer.sim  ->  mpc_balancer (the engine)  ->  forecasting, policies

``forecasting`` and ``policies`` import neither ``mpc_balancer`` nor each other; the engine never
imports the simulated world nor the command line; nothing but the command line imports it.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mpc_balancer", "forecasting", "policies")

# layer of a module -> the module prefixes it must not import
FORBIDDEN = {
    "forecasting": ("mpc_balancer", "policies", "tests", "benchmarks", "examples"),
    "policies": ("mpc_balancer", "forecasting", "tests", "benchmarks", "examples"),
    "engine": ("mpc_balancer.sim", "mpc_balancer.cli", "tests", "benchmarks", "examples"),
    "sim": ("mpc_balancer.cli", "tests", "benchmarks", "examples"),
    "cli": ("tests", "benchmarks", "examples"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    top = module.split(".")[0]
    if top != "mpc_balancer":
        return top
    second = module.split(".")[1] if "." in module else ""
    if second == "__main__":  # `python -m mpc_balancer`: the command line's entry point, imported by nothing
        return "cli"
    return second if second in ("sim", "cli") else "engine"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (absolute names; relative imports resolved), with its line."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            # `from pkg import sub` may import the submodule pkg.sub
            out += [(node.lineno, mod)] + [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return out


def source_files():
    for pkg in PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))


def test_every_package_is_covered():
    files = list(source_files())
    assert {module_name(f).split(".")[0] for f in files} == set(PACKAGES)
    assert {layer(module_name(f)) for f in files} == set(FORBIDDEN)
    assert len(files) > 100  # the whole tree is read, not a corner of it


@pytest.mark.parametrize("pkg", PACKAGES)
def test_imports_go_one_way(pkg):
    offenders = []
    for path in sorted((ROOT / pkg).rglob("*.py")):
        own = layer(module_name(path))
        for line, mod in imported_modules(path):
            for bad in FORBIDDEN[own]:
                if mod == bad or mod.startswith(bad + "."):
                    offenders.append(f"{path.relative_to(ROOT)}:{line}: {own} imports {mod}")
    assert not offenders, "\n".join(offenders)


def test_the_checker_sees_relative_and_lazy_imports(tmp_path, monkeypatch):
    """The rule above can fail: a relative, function-level import of the simulator from the engine
    resolves to mpc_balancer.sim.simulator."""
    fake = ROOT / "mpc_balancer" / "controllers" / "_probe.py"
    tree = "def f():\n    from ..sim.simulator import Simulator\n    from .. import sim\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: tree)
    mods = [m for _, m in imported_modules(fake)]
    assert "mpc_balancer.sim.simulator" in mods and "mpc_balancer.sim" in mods
    assert layer(module_name(fake)) == "engine"
