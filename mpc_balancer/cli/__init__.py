"""The ``mpc-balancer`` command line.

Each command group lives in its own module exposing ``register(subparsers)``; the parser for a
subcommand sets ``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an
exit code. Errors a user can fix (bad trace, bad flag value, bad file) are raised as
:class:`UsageError` or ``ValueError`` and printed as one line, never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# the decision path runs many small matrix products: BLAS threads only add contention on small, shared machines
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

# modules of mpc_balancer.cli, each with register(subparsers)
COMMAND_MODULES = ("simulate", "scenarios", "tune", "config", "forecast", "policies", "testbench", "mtorl", "serve", "paper")


from .outputs import check_outputs, created_dirs_mark, remove_created_dirs  # noqa: E402


class UsageError(Exception):
    """A problem with the command line or its inputs, reported as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpc-balancer",
        description="Dynamic computation allocation for multi-stage recommender pipelines: "
        "closed-loop simulation, controllers, forecasting, policies.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    parser.commands = sub.choices  # {name: subparser}: what config files map onto (cli/config.py)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    mark, done = created_dirs_mark(), False
    try:
        if getattr(args, "run_config", False) and args.config is not None:
            from .config import reparse

            args = reparse(parser, argv, args)
        check_outputs(args)  # before any long run: an output that cannot be written fails now
        code = int(args.func(args) or 0)
        done = True
        return code
    except (UsageError, ValueError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"mpc-balancer {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout's reader left (``mpc-balancer testbench fit ... | head``): not an error of this program.
        # Point stdout at /dev/null so the interpreter's final flush does not raise again; 141 is
        # the shell's code for a process ended by SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    finally:
        if not done:  # failed or interrupted: no output directory the checks made is left behind empty
            remove_created_dirs(mark)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
