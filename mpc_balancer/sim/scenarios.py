"""Synthetic scenarios: the DCAF-style spike test.

A trace of three days of steady traffic (a mild daily cycle, large counts so no smoothing applies)
whose last day holds a sudden step to ``factor`` times the traffic at ``spike_hour``, lasting
``duration_min`` minutes. Announced, the spike is an event with ``expected_multiplier=factor``
in the forecasters' calendar; unannounced, nobody knows it is coming.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..jsonio import write_json
from ..traces import Trace
from .disturbances import MAX_FACTOR

SPIKE_START = pd.Timestamp("2024-01-04 14:00")


def spike_trace(factor: float = 8.0, duration_min: int = 30, base_fraction: float = 0.11, days: int = 4,
                start: pd.Timestamp = SPIKE_START) -> Trace:
    """Minute counts: ``base_fraction`` of the peak with a +-10% daily cycle, times ``factor`` during the spike.

    ``factor`` is in ``[1, MAX_FACTOR]``: below 1 the "spike" is a drop, whose metrics (counted from
    its start) read 0 ticks to recover while the load peaked when the traffic came back; 1e300 ran
    into the traffic's overflow check, which named a row of a trace the user never wrote."""
    if not (isinstance(factor, (int, float, np.number)) and 1 <= factor <= MAX_FACTOR):
        raise ValueError(f"--factor must be in [1, {MAX_FACTOR:g}] (a spike multiplies the traffic; for a drop or an "
                         f"outage, use --outages of simulate/compare), got {factor!r}")
    idx = pd.date_range("2024-01-01", periods=days * 1440, freq="1min")
    hour = idx.hour + idx.minute / 60
    level = 1e6 * base_fraction * (1 + 0.1 * np.sin(2 * np.pi * (hour - 8) / 24))
    spike = (idx >= start) & (idx < start + pd.Timedelta(minutes=duration_min))
    level = np.where(spike, level * factor, level)
    # one minute of the run-up at full scale anchors the traffic scaling (99.5th percentile) at 1e6
    level[:8] = 1e6
    return Trace(name=f"spike-x{factor:g}", series=pd.Series(level, index=idx, name="value"), step=pd.Timedelta("1min"))


def spike_events(factor: float, duration_min: int, start: pd.Timestamp = SPIKE_START):
    """The spike as an announced event: an :class:`~forecasting.EventCalendar` with one event
    ``spike`` over ``[start, start + duration)`` and ``expected_multiplier=factor``."""
    from forecasting import Event, EventCalendar

    return EventCalendar([Event(start, start + pd.Timedelta(minutes=duration_min), "spike", float(factor))])


def spike_metrics(log: pd.DataFrame, clusters, target: np.ndarray, start: pd.Timestamp = SPIKE_START,
                  subtick_load: np.ndarray | None = None) -> dict:
    """Peak load, time over C_m, and time to recover (from the spike's first tick until every
    cluster is back under C_m), on the plant's true load: per tick (``ticks_*``, the tick's mean
    load) and, given the sub-tick loads ``(ticks, subticks, clusters)``, per sub-tick
    (``subticks_*``; the peak is then the sub-tick peak)."""
    k0 = int(log.index.searchsorted(start))

    def over_and_recovery(L):
        over = (L > target[None, :]).any(axis=1)
        under = np.flatnonzero(~over)
        return int(over.sum()), int(under[0]) if under.size else len(over)

    L = np.stack([log[f"true_load_{c}"].to_numpy() for c in clusters], axis=1)[k0:]
    out = {}
    out["ticks_over_cm"], out["ticks_to_recover"] = over_and_recovery(L)
    if subtick_load is not None:
        L = subtick_load[k0:].reshape(-1, subtick_load.shape[-1])
        out["subticks_over_cm"], out["subticks_to_recover"] = over_and_recovery(L)
    return {"peak_load": float(L.max()), "peak_over_cm_pct": float(100 * (L.max() / target.max() - 1)), **out}


def run_spike_test(controllers: list[str], factor: float = 8.0, announced: bool = False, duration_min: int = 30,
                   seed: int = 0, n_requests: int = 1000, controller_options: dict | None = None, subticks: int = 12,
                   guard: str | dict = "proportional") -> dict:
    from ..controllers import make_controller
    from ..forecast import TickForecaster
    from ..traffic import Traffic
    from .experiment import make_policy
    from .simulator import Simulator

    trace = spike_trace(factor, duration_min)
    traffic = Traffic(trace, period_s=60, peak_qps=20000.0)
    window_start = SPIKE_START - pd.Timedelta(hours=2)
    sim = Simulator(traffic, n_requests=n_requests, seed=seed, days=0.25, start=window_start, subticks=subticks, guard=guard)
    policy = make_policy("oracle", sim.cascade)
    opts = controller_options or {}
    out = {"factor": factor, "announced": announced, "duration_min": duration_min, "subticks": subticks, "guard": sim.guard,
           "controllers": {}}
    events = spike_events(factor, duration_min) if announced else None
    for name in controllers:
        c = make_controller(name, **opts.get(name, {}))
        fc = TickForecaster(events=events) if c.needs_forecast else None
        t0 = time.perf_counter()
        res = sim.run(sim.balancer(c, fc), policy)
        m = spike_metrics(res.log, sim.cascade.clusters, res.target, subtick_load=res.subtick_load)
        m["wall_s"] = time.perf_counter() - t0
        out["controllers"][name] = m
        out.setdefault("_logs", {})[name] = res.log
    return out


def format_spike(result: dict) -> str:
    lines = [f"spike x{result['factor']:g} for {result['duration_min']} min, {'announced' if result['announced'] else 'unannounced'}",
             f"{'controller':<12}{'peak load':>10}{'peak over C_m %':>17}{'ticks > C_m':>13}{'ticks to recover':>18}"
             f"{'sub-ticks > C_m':>17}{'sub-ticks to recover':>22}"]
    for name, m in result["controllers"].items():
        lines.append(f"{name:<12}{m['peak_load']:>10.3f}{m['peak_over_cm_pct']:>17.1f}{m['ticks_over_cm']:>13d}{m['ticks_to_recover']:>18d}"
                     f"{m.get('subticks_over_cm', -1):>17d}{m.get('subticks_to_recover', -1):>22d}")
    return "\n".join(lines)


def dump(result: dict, path: str | Path) -> None:
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    write_json(path, clean)
