"""Node-local overload guards: what a serving node does between two central decisions.

The central controller sets lambda once a control period (a minute). A burst that starts inside
that minute overloads the nodes before any forecast or feedback can react, so each node keeps a
fast local rule (DCAF's MaxPower, MaRCA's "predefined downgrades for spikes", a concurrency
limiter). Every sub-tick (5 s by default) the node reads its own load per cluster and applies

    lambda_local = max(lambda_central, floor)

where ``floor`` is the guard's state, in lambda units (0 while the guard is idle):

* over ``C_m``: the floor is raised multiplicatively from the lambda in force,
  ``floor = lambda_local * step`` (the step depends on the rule, bounded by ``max_step``);
* under ``C_m (1 - release)``: the floor decays geometrically (``halflife`` sub-ticks), so the
  node falls back to the central lambda, and as soon as the central lambda has caught up
  (``lambda_central >= floor``) the guard is idle again;
* in between (an optional hold band, ``release > 0``): the floor holds.

The default has no hold band (``release=0``). A central controller that plans its load close to
``C_m`` keeps the load inside any band under ``C_m`` once the guard has raised it there, so the
floor never decays and the guard overrides the central lambda for good after its first raise.
Measured with ``release=0.03`` on one day of each bundled trace: the guard active on 41-70% of
sub-ticks of plain traffic, and the MPC 0.4-0.8 points of hindsight's revenue lower than with
``release=0``. Without the band the floor decays as soon as the load is under ``C_m``; a plan
slightly over ``C_m`` then makes a small limit cycle (a raise, a few sub-ticks of decay) that the
central controller sees in the applied lambda and its back-off answers. A node left alone under a
lasting overload (no central controller catching up) keeps cycling around ``C_m``: over it on 70-90%
of sub-ticks by 0.6-1.0% on average, where a hold band settles just under it; a node that may run
without its central controller for long should set ``release`` to a few percent. Holding the band
only until the next central decision was tried and, under the MPC, gave a higher nu and less
revenue than no band.

The load read at the end of one sub-tick sets the lambda of the next: a reaction delay of one
sub-tick. The rules differ only in the step:

* ``"proportional"`` (default): ``step = min((L / C_m) ** gain, max_step)``: a 5% overload
  raises lambda 1.5x, 20% 4x (the cap), so a 6x burst is shed within a few sub-ticks while a
  graze of ``C_m`` costs little;
* ``"maxpower"`` (DCAF's MaxPower as a node rule): a fixed ``step`` whatever the overload, the
  published guard's shape: it cannot tell a 2% from a 200% overload;
* ``"none"``: no guard (``lambda_local = lambda_central``).

Load meters lag (a CPU average, a queue draining): after a raise the load falls towards the new
demand over several sub-ticks while still over ``C_m``. Raising again on every such sub-tick
winds the floor up far past what the burst needs (a 6x burst ended with lambda 20x too high, and
the node shed revenue for minutes after). So while over ``C_m`` the guard first extrapolates the
load ``lookahead`` sub-ticks at its current rate of fall: if that is back under ``C_m`` the last
raise is taking effect and the floor holds; otherwise (still rising, flat, or falling too slowly
towards a demand that stays over ``C_m``) it raises. For a first-order meter whose lag is
``lookahead`` sub-ticks the extrapolation is the demand itself; a shorter one errs towards
raising. ``lookahead=0`` raises on every sub-tick over ``C_m``.

A guard knows only its node's load, ``C_m`` and the central lambda: it runs in the serving path
(the service's client library, a sidecar), with no forecast and no policy call.
"""
from __future__ import annotations

import inspect

import numpy as np

from .config import is_number
from .telemetry import readings

GUARDS = ("none", "maxpower", "proportional")


class NodeGuard:
    """A node's guard over ``G`` clusters; ``apply`` before a sub-tick, ``observe`` after it.

    Parameters
    ----------
    rule : {"proportional", "maxpower", "none"}
        How the floor is raised on overload (see the module doc).
    target : array_like, shape (G,)
        ``C_m`` per cluster, in load units (fraction of capacity).
    gain : float
        Exponent of the proportional rule's step ``(L / C_m) ** gain``.
    step : float
        The maxpower rule's fixed step (> 1).
    max_step : float
        Largest raise per sub-tick (the proportional rule's cap).
    release : float
        The floor decays only once the load is under ``C_m (1 - release)`` (0: as soon as it is
        under ``C_m``; see the module doc for why that is the default).
    halflife : float
        Sub-ticks for the floor to halve while it decays.
    lam_max : float
        Ceiling on the local lambda: the central Balancer's ``lam_max`` (both default to 10). The
        Balancer holds a tick whose reported lambda in force is above its own ``lam_max`` (a
        sensor fault), so a guard allowed higher would cost those ticks.
    lookahead : float
        Sub-ticks over which an overloaded but falling load is extrapolated before raising again
        (anti-windup against a lagging load meter; see the module doc). 0: no hold.
    """

    def __init__(self, rule: str = "proportional", target=(0.9,), gain: float = 8.0, step: float = 2.0,
                 max_step: float = 4.0, release: float = 0.0, halflife: float = 3.0, lam_max: float = 10.0,
                 lookahead: float = 4.0):
        if rule not in GUARDS:
            raise ValueError(f"guard must be one of {GUARDS}, got {rule!r}")
        try:
            arr = np.asarray(target)
            if arr.dtype.kind not in "iuf":  # strings, flags, a dict: not C_m values
                raise TypeError
            arr = arr.astype(float)
        except (TypeError, ValueError):
            raise ValueError(f"guard target (C_m per cluster) must be numbers, got {target!r}") from None
        if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr) & (arr > 0) & (arr <= 1)):
            raise ValueError(f"guard target (C_m per cluster) must be load fractions in (0, 1], got {target!r}")
        target = arr
        for name, v, ok in (("gain", gain, lambda x: x > 0), ("step", step, lambda x: x > 1),
                            ("max_step", max_step, lambda x: x > 1), ("release", release, lambda x: 0 <= x < 1),
                            ("halflife", halflife, lambda x: x > 0), ("lam_max", lam_max, lambda x: x > 0),
                            ("lookahead", lookahead, lambda x: x >= 0)):
            if not is_number(v):
                raise ValueError(f"guard {name} must be a number, got {v!r}")
            if not (np.isfinite(v) and ok(v)):
                raise ValueError(f"guard {name} out of range: {v!r}")
        self.rule, self.target = rule, target
        self.gain, self.step_, self.max_step = float(gain), float(step), float(max_step)
        self.release, self.halflife, self.lam_max = float(release), float(halflife), float(lam_max)
        self.lookahead = float(lookahead)
        self.reset()

    def reset(self) -> None:
        """Idle: no floor, nothing applied yet."""
        self.floor = np.zeros(self.target.size)
        self.lam_local = None
        self.last_load = None  # the load read at the end of the previous sub-tick
        self.over_sum = np.zeros(self.target.size)  # sum of max(L - C_m, 0) / C_m over the readings since take_over
        self.readings = np.zeros(self.target.size, dtype=np.int64)

    def take_over(self) -> np.ndarray | None:
        """The node's over-utilisation since the last call, per cluster, in units of ``C_m``: the
        mean over the loads read by :meth:`observe` of ``max(L - C_m, 0) / C_m`` (MaRCA's nu on the
        node's own readings; what :class:`~mpc_balancer.telemetry.Telemetry` ``over`` reports once
        a tick). None when a cluster had no finite reading. Starts the next count."""
        over = None if not self.readings.all() else self.over_sum / self.readings
        self.over_sum, self.readings = np.zeros(self.target.size), np.zeros(self.target.size, dtype=np.int64)
        return over

    @property
    def active(self) -> np.ndarray:
        """Clusters on which the guard overrides the central lambda now."""
        if self.lam_local is None:
            return np.zeros(self.target.size, dtype=bool)
        return self.lam_local > self._central

    def apply(self, lam_central) -> np.ndarray:
        """The lambda the node applies in the coming sub-tick, given the central one."""
        lam_central = _numbers("lam_central", lam_central)
        if lam_central.shape != self.target.shape:
            raise ValueError(f"lam_central must have {self.target.size} values, got shape {lam_central.shape}")
        if not np.all(np.isfinite(lam_central) & (lam_central > 0)):  # a floor raised from 0 or NaN stays there
            raise ValueError(f"lam_central must be finite and > 0, got {lam_central.tolist()}")
        self._central = lam_central
        self.lam_local = np.minimum(np.maximum(lam_central, self.floor), np.maximum(self.lam_max, lam_central))
        return self.lam_local

    def observe_many(self, loads) -> None:
        """The sub-ticks of ``loads`` ((m, G)) under the central lambda of the last :meth:`apply`:
        :meth:`observe` of each row in turn, with :meth:`apply` of that lambda again between two
        rows (the node's loop). An idle guard whose readings are all at or under ``C_m`` only
        counts them: that common case takes one step, not m."""
        loads = _numbers("loads", loads)
        if loads.ndim != 2 or loads.shape[1] != self.target.size:
            raise ValueError(f"loads must have shape (m, {self.target.size}), got {loads.shape}")
        if not len(loads):
            return
        if self.floor.any() or not ((loads >= 0) & (loads <= self.target)).all():  # a raise, a decay or a broken meter on the way
            for i, row in enumerate(loads):
                if i and self.lam_local is not None:
                    self.apply(self._central)
                self.observe(row)
            return
        self.readings += len(loads)  # each adds max(L / C_m - 1, 0) = 0 to over_sum
        if self.rule != "none" and self.lam_local is not None:
            self.last_load = loads[-1].copy()

    def observe(self, load) -> None:
        """The node's load per cluster at the end of the sub-tick: counted for :meth:`take_over`,
        and sets the next sub-tick's floor. A reading that is not a finite load >= 0 (a broken
        meter) is not counted and neither raises nor releases the floor."""
        load = _numbers("load", load)  # a copy: kept as last_load, whatever the caller does with its buffer
        if load.shape != self.target.shape:
            raise ValueError(f"load must have {self.target.size} values, got shape {load.shape}")
        ratio = load / self.target
        read = np.isfinite(ratio) & (ratio >= 0)  # NaN, inf or a negative load: a broken meter, not a reading
        self.over_sum += np.where(read, np.maximum(ratio - 1.0, 0.0), 0.0)
        self.readings += read
        if self.rule == "none" or self.lam_local is None:
            return
        ratio = np.where(read, ratio, 1.0)  # a broken meter neither raises nor releases
        over = ratio > 1.0
        answering = np.zeros(over.shape, dtype=bool)  # over C_m but already answering the last raise
        if self.lookahead > 0 and self.last_load is not None:
            fall = self.last_load - load
            answering = (fall > 0) & (load - self.lookahead * fall < self.target)
        self.last_load = load
        if not over.any() and not self.floor.any():
            return  # idle and no overload: the floor stays at zero
        if self.rule == "proportional":
            with np.errstate(over="ignore"):  # an absurd reading (1e300) steps by max_step, silently
                step = np.minimum(np.power(np.maximum(ratio, 1.0), self.gain), self.max_step)
        else:
            step = np.full(ratio.shape, self.step_)
        raised = np.minimum(self.lam_local * step, self.lam_max)
        decayed = self.floor * 0.5 ** (1.0 / self.halflife)
        self.floor = np.where(over, np.where(answering & (self.floor > 0), self.floor, np.maximum(self.floor, raised)),
                              np.where(ratio < 1.0 - self.release, decayed, self.floor))
        # once the central lambda has caught up the guard is idle: nothing left to decay from
        self.floor = np.where(self.floor <= self._central, 0.0, self.floor)


def _numbers(name: str, value) -> np.ndarray:
    """``value`` as a new float array (:func:`~mpc_balancer.telemetry.readings`), or a ``ValueError``
    naming ``name`` and the value (a string, a flag or None instead of the readings is a caller's
    mistake; NaN, or None for one cluster, is a broken meter's reading and passes as NaN)."""
    try:
        if value is None:
            raise TypeError
        return readings(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, one per cluster, got {value!r}") from None


# what a user may set (--set guard.KEY=VALUE): the rule's parameters; C_m and lam_max come from the plant
GUARD_SETTINGS = frozenset(inspect.signature(NodeGuard.__init__).parameters) - {"self", "target", "lam_max"}

# the settings each rule reads: the step is the rule's (gain and max_step: proportional; step: maxpower),
# the hold band, decay and anti-windup are both raising rules'; "none" never raises and reads none
RULE_SETTINGS = {"proportional": frozenset({"gain", "max_step", "release", "halflife", "lookahead"}),
                 "maxpower": frozenset({"step", "release", "halflife", "lookahead"}),
                 "none": frozenset()}


def unused_guard_settings(guard: dict) -> list[str]:
    """The settings of ``guard`` (``{"rule": ..., KEY: VALUE}``) that its rule does not read.

    Parameters
    ----------
    guard : dict
        A guard's rule and settings, as ``Simulator(guard=...)`` takes them.

    Returns
    -------
    list of str
        Sorted keys other than ``rule`` that have no effect under ``guard["rule"]``: every key under
        ``none``, ``step`` under ``proportional``, ``gain`` and ``max_step`` under ``maxpower``
        (``--guard none --set guard.max_step=8`` ran as if the setting were not there). Unknown
        rules and keys are left to :class:`NodeGuard`'s own checks.
    """
    used = RULE_SETTINGS.get(guard.get("rule", "proportional"))
    if used is None:
        return []
    return sorted(k for k in guard if k != "rule" and k in GUARD_SETTINGS and k not in used)


def check_rule_settings(guard: dict) -> None:
    """``ValueError`` naming the first setting of ``guard`` that its rule does not read (see
    :func:`unused_guard_settings`), its value, the rule and what the rule reads."""
    unused = unused_guard_settings(guard)
    if unused:
        rule = guard.get("rule", "proportional")
        reads = ", ".join(sorted(RULE_SETTINGS[rule])) or "no setting"
        raise ValueError(f"guard.{unused[0]}={guard[unused[0]]!r} has no effect under the guard rule {rule!r} "
                         f"(--guard {rule} reads {reads}); drop it or choose the rule that reads it")
