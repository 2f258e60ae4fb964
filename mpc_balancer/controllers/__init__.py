"""Controllers behind one interface: ``setup(context)``, ``make_step(obs, forecast, response) -> Plan``."""
from .base import ControlContext, Controller, Observation, Plan
from .dcaf import DcafController
from .hindsight import HindsightController
from .mpc import MpcController
from .nmpc import NmpcController, ShootingController
from .pid import PidController
from .static import StaticController

REGISTRY = {"static": StaticController, "dcaf": DcafController, "pid": PidController, "mpc": MpcController,
            "hindsight": HindsightController, "nmpc": NmpcController, "shooting": ShootingController}


def make_controller(name: str, **kwargs) -> Controller:
    """A controller by name; unknown names and keyword arguments are rejected."""
    if name not in REGISTRY:
        raise ValueError(f"unknown controller {name!r}; available: {', '.join(sorted(REGISTRY))}")
    try:
        return REGISTRY[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"controller {name!r}: {e}") from None


__all__ = ["ControlContext", "Controller", "Observation", "Plan", "StaticController", "DcafController",
           "PidController", "MpcController", "HindsightController", "NmpcController",
           "ShootingController", "REGISTRY", "make_controller"]
