"""Unannounced bursts and outages injected into any trace, at the plant's sub-tick resolution.

Real traffic the controller was never tuned on has two shapes the bundled traces lack:

* **bursts**: a sudden step to ``factor`` x the traffic (social-media streams: 3-6x for 1-5
  minutes, many a day), starting at any second, so its edges fall inside a control tick;
* **outages**: the traffic vanishes for ``minutes`` (the front end is down) and comes back with a
  surge of retries: half of the missed requests re-arrive on top of the normal rate, decaying
  with a 5-minute time constant (the surge's peak is capped at 4x the normal rate).

``Disturbances(bursts, outages, seed).multiplier(n_ticks, period_s, subticks)`` is the factor on
the trace's rate for every sub-tick of a window. Event times come from their own generator,
seeded by ``seed``, so every controller of a comparison sees the same events, and the rest of the
environment's random draws are those of the undisturbed run. Nobody is told: the events are not
in any forecaster's calendar.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SURGE_SHARE = 0.5  # of the requests missed during an outage, the share retried when it ends
SURGE_TAU_S = 300.0  # time constant of the retry surge
SURGE_MAX = 3.0  # cap on the surge's excess over the normal rate (peak 4x)
MAX_FACTOR = 1000.0  # largest burst factor, and of overlapping bursts together (they multiply: 1e308, or 40 of 100x, overflowed)
MAX_MINUTES = 1440.0  # longest burst or outage: one day (a longer one is a different trace, not an event)


def _number_range(text: str, what: str, most: float) -> tuple[float, float]:
    """``"3-6"`` -> ``(3.0, 6.0)`` and ``"4"`` -> ``(4.0, 4.0)``.

    Parameters
    ----------
    text : str
        A number or a range ``LOW-HIGH``.
    what : str
        The option's part (``"--bursts FACTOR"``), named in the error.
    most : float
        Largest value allowed: a burst factor of 1e308 overflowed the rate to infinity (the run
        then failed deep in the controller with "lam value too large"), and 1e9-minute bursts
        multiplied into a load of 1e12.

    Raises
    ------
    ValueError
        Naming ``what`` and ``text`` unless ``0 < LOW <= HIGH <= most``.
    """
    lo, _, hi = text.partition("-")
    try:
        a, b = float(lo), float(hi or lo)
    except ValueError:
        raise ValueError(f"{what} must be a number or a range LOW-HIGH, got {text!r}") from None
    if not (np.isfinite(a) and np.isfinite(b) and 0 < a <= b):
        raise ValueError(f"{what} must satisfy 0 < LOW <= HIGH (finite), got {text!r}")
    if b > most:
        raise ValueError(f"{what} must be at most {most:g}, got {text!r}")
    return a, b


@dataclass(frozen=True)
class BurstSpec:
    """``per_day`` bursts a day on average (Poisson), each ``factor`` x the traffic for ``minutes``,
    both drawn uniformly from their ranges."""

    per_day: float
    factor: tuple[float, float]
    minutes: tuple[float, float]

    @classmethod
    def parse(cls, text: str) -> BurstSpec:
        """``"10,3-6,1-5"``: 10 a day, 3-6 x, 1-5 minutes (the ``--bursts`` option)."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 3:
            raise ValueError(f"--bursts expects PER_DAY,FACTOR_MIN-FACTOR_MAX,MINUTES_MIN-MINUTES_MAX (e.g. 10,3-6,1-5), got {text!r}")
        per_day = _rate(parts[0], "--bursts PER_DAY")
        factor = _number_range(parts[1], "--bursts FACTOR", MAX_FACTOR)
        if factor[0] < 1:
            raise ValueError(f"--bursts FACTOR must be >= 1 (a burst raises traffic), got {parts[1]!r}")
        return cls(per_day, factor, _number_range(parts[2], "--bursts MINUTES", MAX_MINUTES))


@dataclass(frozen=True)
class OutageSpec:
    """``per_day`` outages a day on average (Poisson), each ``minutes`` long, then a retry surge."""

    per_day: float
    minutes: float

    @classmethod
    def parse(cls, text: str) -> OutageSpec:
        """``"1,20"``: one 20-minute outage a day (the ``--outages`` option).

        Every outage lasts ``MINUTES``, one number: a range ``20-30`` (as ``--bursts`` takes) is
        an error, not read as 20 with the rest dropped."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 2:
            raise ValueError(f"--outages expects PER_DAY,MINUTES (e.g. 1,20), got {text!r}")
        lo, hi = _number_range(parts[1], "--outages MINUTES", MAX_MINUTES)
        if lo != hi:
            raise ValueError(f"--outages MINUTES is one length (every outage lasts it), got the range {parts[1]!r}")
        return cls(_rate(parts[0], "--outages PER_DAY"), lo)


def _rate(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{what} must be a number, got {text!r}") from None
    if not (np.isfinite(v) and 0 <= v <= 1440):
        raise ValueError(f"{what} must be in [0, 1440], got {text!r}")
    return v


@dataclass(frozen=True)
class Disturbances:
    """Bursts and outages of one run; ``seed`` fixes their times, sizes and lengths."""

    bursts: BurstSpec | None = None
    outages: OutageSpec | None = None
    seed: int = 0

    def __bool__(self) -> bool:
        return self.bursts is not None or self.outages is not None

    def events(self, duration_s: float) -> list[tuple[str, float, float, float]]:
        """``(kind, start_s, length_s, factor)`` of every event within ``[0, duration_s)``."""
        rng = np.random.default_rng([int(self.seed) & 0xFFFFFFFF, 0xB0757])
        out = []
        days = duration_s / 86400.0
        if self.bursts is not None:
            b = self.bursts
            for _ in range(rng.poisson(b.per_day * days)):
                out.append(("burst", rng.uniform(0, duration_s), 60.0 * rng.uniform(*b.minutes), rng.uniform(*b.factor)))
        if self.outages is not None:
            for _ in range(rng.poisson(self.outages.per_day * days)):
                out.append(("outage", rng.uniform(0, duration_s), 60.0 * self.outages.minutes, 0.0))
        return sorted(out, key=lambda e: e[1])

    def multiplier(self, n_ticks: int, period_s: float, subticks: int) -> np.ndarray:
        """Factor on the rate, ``(n_ticks, subticks)``: each sub-tick's share of every event is the
        fraction of the sub-tick it covers (an edge inside a sub-tick weighs by its overlap).
        Overlapping bursts multiply, up to ``MAX_FACTOR`` together (many long bursts a day multiplied
        past the float range: ``lam value too large`` from the Poisson draw); an outage zeroes whatever
        it covers."""
        dt = period_s / subticks
        edges = np.arange(n_ticks * subticks + 1) * dt
        mult = np.ones(n_ticks * subticks)
        down = np.zeros(n_ticks * subticks)  # covered fraction of each sub-tick by an outage
        surge = np.zeros(n_ticks * subticks)
        for kind, start, length, factor in self.events(n_ticks * period_s):
            cover = np.clip(np.minimum(edges[1:], start + length) - np.maximum(edges[:-1], start), 0.0, dt) / dt
            if kind == "burst":
                mult = np.minimum(mult * (1.0 + (factor - 1.0) * cover), MAX_FACTOR)
            else:
                down = np.maximum(down, cover)
                # retries: SURGE_SHARE of the missed traffic on top, exp(-t/tau) after the return,
                # integrated over each sub-tick
                peak = min(SURGE_SHARE * length / SURGE_TAU_S, SURGE_MAX)
                t0 = np.maximum(edges[:-1] - (start + length), 0.0)
                t1 = np.maximum(edges[1:] - (start + length), 0.0)
                surge += peak * SURGE_TAU_S * (np.exp(-t0 / SURGE_TAU_S) - np.exp(-t1 / SURGE_TAU_S)) / dt
        # the surge lives after an outage's end, its share of a sub-tick is the uncovered part
        return (mult * (1.0 - down + surge)).reshape(n_ticks, subticks)
