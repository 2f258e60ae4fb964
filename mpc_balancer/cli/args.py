"""Parsers for the CLI's comma-separated options, shared by every subcommand."""
from __future__ import annotations


def name_list(text: str) -> list[str]:
    """``"pid, mpc,"`` -> ``["pid", "mpc"]`` (blanks dropped)."""
    return [v.strip() for v in text.split(",") if v.strip()]


def int_list(text: str, what: str) -> tuple[int, ...]:
    """``"25,50"`` -> ``(25, 50)``; ``what`` (the option's name) is named in the error."""
    try:
        vals = tuple(int(v) for v in name_list(text))
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals:
        raise ValueError(f"{what} is empty")
    return vals
