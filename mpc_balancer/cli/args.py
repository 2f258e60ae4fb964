"""Parsers for the CLI's options shared by every subcommand: comma-separated lists and bounded numbers."""
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


def names(text: str, what: str) -> list[str]:
    """``"pid, mpc"`` -> ``["pid", "mpc"]``, but an empty list is an error naming the option.

    Parameters
    ----------
    text : str
        The option's value, comma-separated names.
    what : str
        The option (``"--controllers"``), named in the error.

    Raises
    ------
    ValueError
        When ``text`` holds no name (``""``, ``","``): a command would otherwise run nothing and
        report an empty table as success.
    """
    vals = name_list(text)
    if not vals:
        raise ValueError(f"{what} is empty (got {text!r}); give at least one name")
    return vals


def positive(kind=float, most=None):
    """An argparse type: a finite ``kind`` > 0 (and <= ``most``); argparse names the option."""
    return _bounded(kind, most, zero=False)


def nonnegative(kind=float, most=None):
    """An argparse type: a finite ``kind`` >= 0 (and <= ``most``); argparse names the option."""
    return _bounded(kind, most, zero=True)


def _bounded(kind, most, zero: bool):
    """The parser of :func:`positive` (``zero`` False) and :func:`nonnegative` (True).

    ``float("nan")`` and ``float("inf")`` parse, so a plain ``type=float`` lets them through; a NaN
    then compares False with every bound and passes ``x < 0`` checks unnoticed.
    """
    import argparse
    import math

    def parse(text):
        try:
            v = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not (math.isfinite(v) and (v >= 0 if zero else v > 0)):
            raise argparse.ArgumentTypeError(f"must be finite and {'>=' if zero else '>'} 0, got {text!r}")
        if most is not None and v > most:
            raise argparse.ArgumentTypeError(f"must be <= {most:g}, got {text!r}")
        return v
    return parse
