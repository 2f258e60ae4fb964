"""``--config FILE.toml`` on the run commands, and ``mpc-balancer config show``.

A configuration file maps onto the command line generically, so options added to a command are
covered without touching this module:

* ``[run]``: the options of the run commands (``simulate``, ``compare``, ``spike-test``), keyed by
  their names (``peak_qps`` or ``peak-qps`` for ``--peak-qps``). Values are parsed and checked as
  the option's own parser does; a key the reading command does not have but another run command
  does (``controller`` under ``compare``) is ignored; a key no run command has is an error. For
  ``tune`` the ``[run]`` table is the base of every trial: the options of ``simulate`` (the study
  sets each trial's trace, seed, days and controller).
* ``[tune]``: the options of ``tune`` itself (``traces``, ``seeds``, ``trials``, ...).
* ``[plant]`` and one table per controller: what ``--set SECTION.KEY=VALUE`` accepts, checked
  against the controller's constructor / ``PlantConfig``. They become ``--set`` items placed before
  the command line's own, so ``--set`` overrides the file. A controller table whose controller is
  not in the run is checked and ignored.

The command line always wins over the file: the file's ``[run]`` values become the parser's
defaults and the arguments are parsed again.
"""
from __future__ import annotations

import argparse
import json

from ..config import ConfigError, read_toml
from ..sim.config import check_section, defaults_toml
from .args import name_list
from .outputs import declare_outputs

RUN, TUNE = "run", "tune"
RUN_COMMANDS = ("simulate", "compare", "spike-test")
_NOT_SETTINGS = {"help", "config", "set", "run_config"}  # options a config table cannot hold


def add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.toml", default=None,
                   help="TOML file: [run] options, [plant] and controller tables (`mpc-balancer config show`); "
                        "the command line overrides it")
    p.set_defaults(run_config=True)  # main() applies --config of these commands only (serve reads its own)


def _options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The optional arguments of a parser a config table may set, by destination (argparse keeps
    them in ``_actions``; it has no public accessor)."""
    return {a.dest: a for a in p._actions
            if a.option_strings and a.dest not in _NOT_SETTINGS and not isinstance(a, argparse._AppendAction)}


def _convert(action: argparse.Action, key: str, value, where: str):
    """``value`` parsed as the command line would parse it for ``action``."""
    if action.nargs == 0:  # store_true / store_false: the key holds the destination's value
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: bad value {key} = {value!r}: expected true or false")
        return value
    if isinstance(value, (bool, dict)) or (isinstance(value, list) and action.nargs is None):
        raise ConfigError(f"{where}: bad value {key} = {value!r}: expected what {action.option_strings[-1]} takes")
    text = value if isinstance(value, str) else str(value)
    try:
        v = action.type(text) if action.type is not None else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
        raise ConfigError(f"{where}: bad value {key} = {value!r}: {e}") from None
    if action.choices is not None and v not in action.choices:
        raise ConfigError(f"{where}: bad value {key} = {value!r}: choose from {', '.join(map(str, action.choices))}")
    return v


def table_defaults(table: dict, own: argparse.ArgumentParser, siblings: list[argparse.ArgumentParser],
                   source: str, name: str) -> dict:
    """``{dest: value}`` for the keys of table ``name`` that are options of ``own``; keys that only
    ``siblings`` have are skipped; any other key is an error naming the key and ``source``."""
    mine = _options(own)
    others = set().union(*(_options(s) for s in siblings)) if siblings else set()
    out = {}
    for key, value in table.items():
        dest = key.replace("-", "_")
        if dest in mine:
            out[dest] = _convert(mine[dest], f"{name}.{key}", value, source)
        elif dest not in others:
            raise ConfigError(f"{source}: unknown key {name}.{key} (options: {', '.join(sorted(mine))})")
    return out


def check_config(cfg: dict, source: str) -> dict:
    """Check every controller and plant table of ``cfg`` (the ``[run]``/``[tune]`` tables are checked
    against the parsers in :func:`parse_with_config`)."""
    for name, values in cfg.items():
        if name in (RUN, TUNE):
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: {name} must be a table, got {values!r}")
            continue
        check_section(name, values, source)
    return cfg


def _run_controllers(args) -> list[str] | None:
    """The controllers of a parsed run command (``--controller`` / ``--controllers``), or None."""
    if getattr(args, "controllers", None):
        return name_list(args.controllers)
    if getattr(args, "controller", None):
        return [args.controller]
    return None


def set_items(cfg: dict, controllers: list[str] | None) -> list[str]:
    """The controller and plant tables of ``cfg`` as ``--set`` items (``SECTION.KEY=JSON``)."""
    items = []
    for section, values in cfg.items():
        if section in (RUN, TUNE) or (controllers is not None and section not in ("plant", "guard") and section not in controllers):
            continue
        items += [f"{section}.{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in values.items()]
    return items


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None, cfg: dict,
                      source: str) -> argparse.Namespace:
    """Parse ``argv`` with the configuration ``cfg`` (read from ``source``) under the command line."""
    args = parser.parse_args(argv)
    commands = parser.commands
    check_config(cfg, source)
    if args.command == "tune":
        table_defaults(cfg.get(RUN, {}), commands["simulate"], [commands["compare"]], source, RUN)
        commands["tune"].set_defaults(**table_defaults(cfg.get(TUNE, {}), commands["tune"], [], source, TUNE))
        args = parser.parse_args(argv)
        args.base_config = cfg  # every trial parses its simulate run with it
        return args
    own = commands[args.command]
    siblings = [commands[c] for c in RUN_COMMANDS if c != args.command] + [commands["tune"]]
    own.set_defaults(**table_defaults(cfg.get(RUN, {}), own, siblings, source, RUN))
    if TUNE in cfg:
        table_defaults(cfg[TUNE], commands["tune"], [], source, TUNE)  # checked, used by tune only
    args = parser.parse_args(argv)
    if "set" in vars(args):
        args.config_set = set_items(cfg, _run_controllers(args))
        args.set = args.config_set + list(args.set or [])
    return args


def reparse(parser: argparse.ArgumentParser, argv: list[str] | None, args: argparse.Namespace) -> argparse.Namespace:
    """``args`` again, with the ``--config`` file it names applied under the command line."""
    return parse_with_config(parser, argv, read_toml(args.config), args.config)


# ---------------------------------------------------------------------------------------------
def register(sub):
    p = sub.add_parser("config", help="configuration files: `config show --controller NAME` prints the defaults as TOML")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    csub.required = True
    s = csub.add_parser("show", help="print a controller's and the plant's defaults (and the run's) as TOML")
    s.add_argument("--controller", default="mpc", help="controller whose options to print (default mpc)")
    # dest "for_command": "command" is the top-level subcommand's dest, which errors are prefixed with
    s.add_argument("--command", dest="for_command", default="simulate", choices=list(RUN_COMMANDS),
                   help="whose [run] options to include (default simulate)")
    s.add_argument("--out", default=None, help="write the TOML here instead of printing it")
    declare_outputs(s, files=("--out",))
    s.set_defaults(func=show)


def show(args) -> int:
    """Print (or write to ``--out``) the defaults of ``--command`` with ``--controller`` as TOML.

    The file runs as it is under ``--command --config FILE``: for ``compare`` and ``spike-test``,
    whose ``[run]`` table lists ``controllers``, the shown controller is added to that list (its
    table would otherwise be checked and ignored, and edits to it would have no effect); for
    ``spike-test``, which has a fixed synthetic plant, the ``[plant]`` table is left out (the
    command rejects plant options).
    """
    from . import build_parser

    command = args.for_command
    own = build_parser().commands[command]
    run = {dest: a.default for dest, a in _options(own).items()}
    if "controller" in run:
        run["controller"] = args.controller
    if "controllers" in run and args.controller not in name_list(run["controllers"]):
        run["controllers"] = ",".join([*name_list(run["controllers"]), args.controller])
    header = (f"mpc-balancer configuration: the defaults of `{command}` with controller {args.controller}.\n"
              f"Use: mpc-balancer {command} --config FILE.toml [--set SECTION.KEY=VALUE overrides the file]")
    text = defaults_toml(args.controller, run, header, plant=command != "spike-test")
    if args.out:
        from ..jsonio import write_text

        write_text(args.out, text)
    else:
        print(text, end="")
    return 0
