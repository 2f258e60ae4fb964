"""Configuration files of simulated runs: the engine's tables plus the plant, read, checked and written.

A configuration file holds one table per section, with the keys ``--set SECTION.KEY=VALUE``
accepts::

    [run]          # options of the command line run (trace, days, requests, ...): see mpc_balancer.cli.config
    controller = "mpc"

    [mpc]          # a controller's constructor options (checked by mpc_balancer.config)
    horizon = 40

    [plant]        # PlantConfig fields
    target_load = 0.9

This module adds the plant to the engine's sections (controllers, ``[guard]``); the ``[run]`` and
``[tune]`` tables belong to the command line (their keys are its options) and are checked there.
"""
from __future__ import annotations

from dataclasses import fields

from ..config import GUARD, ConfigError, check_options, check_table, controller_defaults, controller_names, dumps, option_defaults

PLANT = "plant"


def plant_defaults() -> dict:
    from .plant import PlantConfig

    return {f.name: f.default for f in fields(PlantConfig)}


def section_defaults(section: str) -> dict:
    if section == PLANT:
        return plant_defaults()
    return option_defaults(section)


def is_section(name: str) -> bool:
    """Whether ``name`` is a controller, the plant or the guard (the sections ``--set`` accepts)."""
    return name in (PLANT, GUARD) or name in controller_names()


def check_section(section: str, values: dict, source: str) -> dict:
    """``values`` if they are valid options of ``section`` (a controller, ``guard`` or ``plant``);
    otherwise a :class:`ConfigError` naming ``source`` and the key."""
    if not is_section(section):
        raise ConfigError(f"{source}: unknown table [{section}]; tables are [run], [tune], [plant], [guard] and the "
                          f"controllers: {', '.join(controller_names())}")
    if section == PLANT:
        from .plant import PlantConfig

        return check_table(section, values, source, plant_defaults(), PlantConfig.from_dict)
    return check_options(section, values, source)


def defaults_toml(controller: str, run_defaults: dict | None = None, header: str = "", plant: bool = True) -> str:
    """The defaults of ``controller`` and the plant (and of the run's options, when given) as TOML.

    ``plant=False`` leaves the ``[plant]`` table out (``spike-test`` has a fixed plant and rejects
    plant options, so a shown file holding one would not run)."""
    tables = {}
    if run_defaults:
        tables["run"] = run_defaults
    tables[controller] = controller_defaults(controller)
    if plant:
        tables[PLANT] = plant_defaults()
    return dumps(tables, header)
