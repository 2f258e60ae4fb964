"""The engine's settings as TOML: reading files, checking a controller's or the guard's options,
writing tables.

A controller's options are the keywords of its constructor (any controller of
``controllers.REGISTRY``), the guard's those of :class:`~mpc_balancer.guard.NodeGuard`::

    [mpc]
    horizon = 40
    [guard]
    gain = 8.0

Both the simulated runs (:mod:`mpc_balancer.sim.config` adds the plant and the run's tables) and
the service (:mod:`mpc_balancer.service.config`) check them here, so one option is checked one way
everywhere. A key without a value (``None``, e.g. ``mpc.max_fall``) cannot be written in TOML: it
is left out, i.e. at its default, and :func:`dumps` writes it as a comment.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import re
import sys
from collections.abc import Callable
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

GUARD = "guard"  # the node-local guard's settings (its rule is the run option `guard`)


def is_number(v) -> bool:
    """Whether ``v`` is a real number: an int, a float, a numpy number, a ``Fraction`` -- not a bool
    (``True`` is an int to Python), a numpy bool or a string. An option's type check before its range
    check, so that ``--set pid.kp=abc`` or ``max_load=True`` is named, not a numpy type error."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


class ConfigError(ValueError):
    """A configuration file (or a table of one) that cannot be used; the message names file and key."""


def read_toml(path: str | Path) -> dict:
    """The tables of a TOML file; a missing file or a syntax error is a :class:`ConfigError` naming the file.

    The file is UTF-8, with or without the byte-order mark that Windows editors write (``utf-8-sig``):
    with it, tomllib reported ``Invalid statement (at line 1, column 1)`` for a file that looks right.
    Another encoding (UTF-16) is an error that says so."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 ({e}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {e}") from None
    return loads_toml(text, str(p))


def loads_toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None


# ---------------------------------------------------------------------------------------------
# sections: controllers and the guard
def controller_names() -> list[str]:
    from .controllers import REGISTRY

    return sorted(REGISTRY)


def controller_defaults(name: str) -> dict:
    """Every keyword option of controller ``name`` with its default, in signature order (the
    fields of its ``settings_class`` if it has one).

    Options passed on to a base class through ``**kwargs`` are collected along the MRO (the most
    derived class's default wins)."""
    from .controllers import REGISTRY

    if name not in REGISTRY:
        raise ConfigError(f"unknown controller {name!r}; available: {', '.join(sorted(REGISTRY))}")
    settings = getattr(REGISTRY[name], "settings_class", None)
    if settings is not None:  # a controller whose options are a settings dataclass (the MPC)
        return {f.name: f.default for f in dataclasses.fields(settings)}
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


def guard_defaults() -> dict:
    """The node guard's settings (the keywords of NodeGuard but its rule) with their defaults."""
    from .guard import GUARD_SETTINGS, NodeGuard

    params = inspect.signature(NodeGuard.__init__).parameters
    return {k: p.default for k, p in params.items() if k in GUARD_SETTINGS and k != "rule"}


def check_table(section: str, values: dict, source: str, known: dict, build: Callable[[dict], object]) -> dict:
    """``values`` if ``build(values)`` accepts them and every key is in ``known``.

    Each key is checked on its own first, so that the error names the key that is wrong; then all
    together (options may constrain each other). Raises :class:`ConfigError` naming ``source``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {section} must be a table, got {values!r}")
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key {section}.{key} (known: {', '.join(known)})")
        try:
            build({key: value})
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{source}: bad value {section}.{key} = {value!r}: {e}") from None
    try:
        build(values)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source}: bad values in [{section}]: {e}") from None
    return values


def option_defaults(section: str) -> dict:
    """The options of ``section`` (a controller's name or ``"guard"``) with their defaults."""
    return guard_defaults() if section == GUARD else controller_defaults(section)


def check_options(section: str, values: dict, source: str) -> dict:
    """``values`` if they are valid options of ``section``: a controller's name or ``"guard"``."""
    if section == GUARD:
        from .guard import NodeGuard as build
    else:
        from .controllers import make_controller

        def build(**v):  # TOML arrays are the constructors' tuples
            return make_controller(section, **{k: tuple(x) if isinstance(x, list) else x for k, x in v.items()})
    return check_table(section, values, source, option_defaults(section), lambda v: build(**v))


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
