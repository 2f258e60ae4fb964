"""mpc-balancer: revenue-cost balancing of compute for multi-stage recommender pipelines.

The embeddable engine, importable from here::

    import mpc_balancer as mb
    bal = mb.Balancer.create(controller="mpc", clusters={"recall": mb.Cluster(capacity=1.2e6, target=0.9)},
                             policy=my_policy, history=qps, period_s=60)
    d = bal.step(mb.Telemetry(time=ts, qps=4200.0, load={"recall": 0.87}, lam={"recall": 0.02}, features=X))
    d.lam  # {"recall": ...}

``policy`` is anything with ``clusters`` and ``respond(features, lam)`` (:class:`Policy`), or None
for telemetry-only control. The simulator, traces and CLI live in the submodules.

Logging: the engine logs holds and fallbacks (``INFO``; a component that raised: ``WARNING``),
telemetry gaps and failed forecaster refits to the ``mpc_balancer`` logger and never prints.
"""
import logging

from .balancer import Balancer, Decision
from .controllers import Controller, Plan, make_controller
from .guard import NodeGuard
from .policy import Policy
from .telemetry import Cluster, Telemetry

logging.getLogger(__name__).addHandler(logging.NullHandler())  # the host application decides what is shown

__all__ = ["Balancer", "Cluster", "Controller", "Decision", "NodeGuard", "Plan", "Policy", "Telemetry", "make_controller"]
