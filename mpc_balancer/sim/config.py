"""Configuration files: TOML tables of controller and plant options, read, checked and written.

A configuration file holds one table per section, with the keys ``--set SECTION.KEY=VALUE``
accepts::

    [run]          # options of the command line run (trace, days, requests, ...): see mpc_balancer.cli.config
    controller = "mpc"

    [mpc]          # a controller's constructor options (any controller of controllers.REGISTRY)
    horizon = 40

    [plant]        # PlantConfig fields
    target_load = 0.9

This module knows the controller and plant sections; the ``[run]`` and ``[tune]`` tables belong to
the command line (their keys are its options) and are checked there. A key without a value
(``None``, e.g. ``mpc.max_fall``) cannot be written in TOML: it is left out, i.e. at its default,
and :func:`dumps` writes it as a comment.
"""
from __future__ import annotations

import inspect
import math
import re
import sys
from dataclasses import fields
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PLANT = "plant"
GUARD = "guard"  # the node-local guard's settings (its rule is the run option `guard`)


class ConfigError(ValueError):
    """A configuration file (or a table of one) that cannot be used; the message names file and key."""


def read_toml(path: str | Path) -> dict:
    """The tables of a TOML file; a missing file or a syntax error is a :class:`ConfigError` naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {e}") from None
    return loads_toml(text, str(p))


def loads_toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None


# ---------------------------------------------------------------------------------------------
# sections: controllers and the plant
def controller_names() -> list[str]:
    from ..controllers import REGISTRY

    return sorted(REGISTRY)


def controller_defaults(name: str) -> dict:
    """Every keyword option of controller ``name`` with its default, in signature order.

    Options passed on to a base class through ``**kwargs`` are collected along the MRO (the most
    derived class's default wins)."""
    from ..controllers import REGISTRY

    if name not in REGISTRY:
        raise ConfigError(f"unknown controller {name!r}; available: {', '.join(sorted(REGISTRY))}")
    out: dict = {}
    for cls in REGISTRY[name].__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        more = False
        for p in list(inspect.signature(init).parameters.values())[1:]:
            if p.kind is p.VAR_KEYWORD:
                more = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in out:
                out[p.name] = None if p.default is p.empty else p.default
        if not more:
            break
    return out


def plant_defaults() -> dict:
    from .plant import PlantConfig

    return {f.name: f.default for f in fields(PlantConfig)}


def guard_defaults() -> dict:
    from ..guard import GUARD_SETTINGS, NodeGuard

    params = inspect.signature(NodeGuard.__init__).parameters
    return {k: p.default for k, p in params.items() if k in GUARD_SETTINGS and k != "rule"}


def section_defaults(section: str) -> dict:
    if section == PLANT:
        return plant_defaults()
    return guard_defaults() if section == GUARD else controller_defaults(section)


def is_section(name: str) -> bool:
    """Whether ``name`` is a controller, the plant or the guard (the sections ``--set`` accepts)."""
    return name in (PLANT, GUARD) or name in controller_names()


def check_section(section: str, values: dict, source: str) -> dict:
    """``values`` if they are valid options of ``section`` (a controller or ``plant``).

    Each key is checked on its own first, so that the error names the key that is wrong; then all
    together (options may constrain each other). Raises :class:`ConfigError` naming ``source``."""
    if not is_section(section):
        raise ConfigError(f"{source}: unknown table [{section}]; tables are [run], [tune], [plant], [guard] and the "
                          f"controllers: {', '.join(controller_names())}")
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {section} must be a table, got {values!r}")
    known = section_defaults(section)
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key {section}.{key} (known: {', '.join(known)})")
        try:
            _build(section, {key: value})
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{source}: bad value {section}.{key} = {value!r}: {e}") from None
    try:
        _build(section, values)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source}: bad values in [{section}]: {e}") from None
    return values


def _build(section: str, values: dict) -> None:
    if section == PLANT:
        from .plant import PlantConfig

        PlantConfig.from_dict(values)
    elif section == GUARD:
        from ..guard import NodeGuard

        NodeGuard(**values)
    else:
        from ..controllers import make_controller

        make_controller(section, **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


# ---------------------------------------------------------------------------------------------
# writing TOML (the subset the configurations use: tables of scalars and flat arrays)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else _string(k)


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_value(v) -> str:
    """One TOML value: bool, int, float (``inf``/``nan`` spelled as TOML does), string or flat array."""
    import numpy as np

    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)  # shortest repr that reads back to the same float; always has '.' or 'e'
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write {v!r} ({type(v).__name__}) as a TOML value")


def dumps(tables: dict, header: str = "") -> str:
    """TOML text of ``{table: {key: value}}``; a ``None`` value becomes a comment (no value: the default)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for name, values in tables.items():
        if lines:
            lines.append("")
        lines.append(f"[{_key(name)}]")
        for k, v in values.items():
            if v is None:
                lines.append(f"# {_key(k)} is unset by default (None); TOML has no null")
            else:
                lines.append(f"{_key(k)} = {toml_value(v)}")
    return "\n".join(lines) + "\n"


def defaults_toml(controller: str, run_defaults: dict | None = None, header: str = "") -> str:
    """The defaults of ``controller`` and the plant (and of the run's options, when given) as TOML."""
    tables = {}
    if run_defaults:
        tables["run"] = run_defaults
    tables[controller] = controller_defaults(controller)
    tables[PLANT] = plant_defaults()
    return dumps(tables, header)
