"""Traffic from a trace: a rate at the control period, scaled to a system's QPS.

A public trace gives the *shape* of a day, not the traffic of a system serving tens of thousands
of requests per second. At 40 requests a minute Poisson noise alone moves the count by ~15%, noise
such a system never sees. So by default (``mode="rate"``):

1. the trace's counts are smoothed by a centred moving average whose width is matched to the
   *local* count level ``m_t`` (a one-hour centred mean): ``w_t = ceil(1 / (target_cv**2 * m_t))``
   trace steps, capped at one hour, so the Poisson sampling noise left is about ``target_cv``
   (3%) everywhere: busy hours keep their minute-scale bursts, quiet hours are averaged longer.
   An outage (a run of zeros where the steps around it would have brought ``OUTAGE_REQUESTS`` or
   more requests) is no noise: it stays zero and no window reaches across it;
2. the rate is interpolated linearly to the control period (a tick within an outage's step is zero);
3. it is scaled so that the 99.5th percentile of the rate is ``peak_qps``;
4. each tick's arrivals are drawn ``Poisson(rate * period)`` at that scaled volume.

``mode="raw"`` replays the counts as they are (no smoothing; the scaled count itself is the tick's
traffic), for stress tests: every sampling burst of the trace becomes a burst of the system.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .traces import Trace, TraceError

EDGE_RATIO = 1.5  # neighbouring ticks this far apart are a step of the trace, not a ramp
MAX_SPIKE = 1e4  # a rate this many times the trace's 99.5th percentile is a corrupt row (real spikes: 90x)
MAX_COUNT = 1e250  # a count above this overflows the smoothing's sums (1e9 a minute is a busy real trace)
# a run of zero counts is an outage (kept at zero, not smoothed over) when the rows around it would have
# brought this many requests over its length; fewer is a quiet spell's sampling noise, averaged out
OUTAGE_REQUESTS = 100.0


class Traffic:
    """Per-tick traffic rate (requests/s) over the whole trace at the control period."""

    def __init__(self, trace: Trace, period_s: float = 60.0, peak_qps: float = 20000.0, mode: str = "rate",
                 target_cv: float = 0.03):
        if mode not in ("rate", "raw"):
            raise ValueError(f"traffic mode must be 'rate' or 'raw', got {mode!r}")
        if not (np.isfinite(period_s) and period_s > 0):
            raise ValueError(f"control period must be > 0 seconds, got {period_s!r}")
        if not (np.isfinite(peak_qps) and peak_qps > 0):
            raise ValueError(f"peak_qps must be > 0, got {peak_qps!r}")
        if not (0 < target_cv < 1):
            raise ValueError(f"target_cv must be in (0, 1), got {target_cv!r}")
        self.trace, self.period_s, self.peak_qps, self.mode, self.target_cv = trace, float(period_s), float(peak_qps), mode, target_cv
        counts = trace.series.asfreq(trace.step).interpolate("time")  # missing rows: linear (documented in traces)
        if counts.max() > MAX_COUNT:  # the level's running sums overflowed to nan: "negative dimensions are not allowed"
            raise TraceError(f"trace {trace.name!r}: the rate near {counts.idxmax()} is {counts.max():.3g} requests a step, "
                             f"more than {MAX_COUNT:g} (its sums overflow): an outlier row, not traffic, or counts in "
                             "another unit; fix or remove it, or scale the counts down")
        outage = _outages(counts.to_numpy(dtype=float), _reach(trace.step))
        self.smoothing_steps = np.ones(len(counts), dtype=np.int64)
        if mode == "rate":
            counts, self.smoothing_steps = _level_matched_smooth(counts, trace.step, target_cv, outage)
        rate = counts.to_numpy() / trace.step.total_seconds()
        step = pd.Timedelta(seconds=self.period_s)
        self.times = pd.date_range(trace.start, trace.end, freq=step)
        if len(self.times) < 2:
            raise TraceError(f"trace {trace.name!r} spans less than two control periods of {self.period_s:g} s")
        r = np.interp(self.times.asi8, counts.index.asi8, rate)
        if outage.any():  # a tick in an outage's step has no traffic (not a ramp towards the next step's)
            r[outage[np.searchsorted(counts.index.asi8, self.times.asi8, side="right") - 1]] = 0.0
        p995 = np.percentile(r, 99.5)
        ref = np.percentile(r[r > 0], 99.5) if np.any(r > 0) else 0.0  # of the ticks with traffic: sparse traces too
        if ref > 0 and r.max() > MAX_SPIKE * ref:
            raise TraceError(f"trace {trace.name!r}: the rate near {self.times[int(np.argmax(r))]} is {r.max() / ref:.3g} x "
                             f"the 99.5th percentile of its traffic (more than {MAX_SPIKE:g} x): an outlier row, not "
                             "traffic; fix or remove it")
        if ref <= 0 or p995 * MAX_SPIKE < ref:  # idle on more than 0.5% short of every tick
            raise TraceError(f"trace {trace.name!r} has traffic on {np.mean(r > 0):.2%} of its ticks: its 99.5th percentile "
                             f"({p995:.3g}) is no busy level to scale to peak_qps; give a trace with a daily cycle, "
                             "or cut it to the part with traffic")
        self.scale = self.peak_qps / p995
        self.rate_qps = r * self.scale

    def __len__(self) -> int:
        return len(self.times)

    def window(self, days: float | None = None, start: str | pd.Timestamp | None = None) -> tuple[slice, slice]:
        """(history, simulation) tick slices: the last ``days`` days, or ``days`` from ``start``."""
        if days is not None and not (np.isfinite(days) and days > 0):
            raise ValueError(f"--days must be > 0, got {days!r}")
        n = len(self.times)
        ticks = n if days is None else int(round(days * 86400 / self.period_s))
        if start is None:
            if ticks > n:
                raise ValueError(f"--days {days:g} is longer than the trace {self.trace.name!r} "
                                 f"({(self.times[-1] - self.times[0]).total_seconds() / 86400:.2f} days)")
            s0 = n - ticks
        else:
            try:
                ts = pd.Timestamp(start)
            except (ValueError, TypeError):
                raise ValueError(f"--start {start!r} is not a timestamp") from None
            if ts is pd.NaT:
                raise ValueError(f"--start {start!r} is not a timestamp")
            if ts.tzinfo is not None:  # traces are read in UTC (or naive): an offset is converted like theirs
                ts = ts.tz_convert("UTC").tz_localize(None)
            if ts < self.times[0] or ts > self.times[-1]:
                raise ValueError(f"--start {ts} is outside the trace {self.trace.name!r} ({self.times[0]} .. {self.times[-1]})")
            s0 = int(self.times.searchsorted(ts))
            if s0 + ticks > n:
                raise ValueError(f"--start {ts} plus --days {days:g} runs past the trace end {self.times[-1]}")
        return slice(0, s0), slice(s0, s0 + ticks)

    def subtick_shape(self, sl: slice, subticks: int, edge_ratio: float = EDGE_RATIO) -> np.ndarray:
        """How each tick's traffic spreads over its ``subticks`` sub-ticks, ``(ticks, subticks)`` with
        mean 1 per tick (a tick's arrivals are conserved).

        A tick's rate stands for its middle; inside the tick the rate is interpolated linearly
        towards each neighbour's middle, except across an edge, where the neighbour's rate differs
        by more than ``edge_ratio`` x: there the trace's own step is kept (flat up to the tick's
        boundary) instead of being smeared into a ramp."""
        if not (isinstance(subticks, (int, np.integer)) and subticks >= 1):
            raise ValueError(f"subticks must be an integer >= 1, got {subticks!r}")
        r = self.rate_qps
        idx = np.arange(len(r))[sl]
        if subticks == 1 or idx.size == 0:
            return np.ones((idx.size, subticks))
        cur = r[idx]
        prev, nxt = r[np.maximum(idx - 1, 0)], r[np.minimum(idx + 1, len(r) - 1)]
        f = (np.arange(subticks) + 0.5) / subticks - 0.5  # position from the tick's middle, in ticks

        def smooth(other):  # no ramp across an edge
            ratio = np.maximum(other, 1e-12) / np.maximum(cur, 1e-12)
            return np.where((ratio > edge_ratio) | (ratio < 1 / edge_ratio), cur, other)

        left, right = smooth(prev), smooth(nxt)
        shape = np.where(f[None, :] < 0, cur[:, None] + (cur - left)[:, None] * f[None, :],
                         cur[:, None] + (right - cur)[:, None] * f[None, :])
        shape = np.maximum(shape, 0.0)
        mean = shape.mean(axis=1, keepdims=True)
        return np.where(mean > 0, shape / np.where(mean > 0, mean, 1.0), 1.0)

    def arrivals(self, sl: slice, rng: np.random.Generator, factor: np.ndarray | float = 1.0) -> np.ndarray:
        """Requests arriving in each tick of ``sl``, at ``factor`` x the trace's rate (injected
        bursts and outages)."""
        lam = self.rate_qps[sl] * self.period_s * factor
        if self.mode == "raw":
            return np.round(lam).astype(np.int64)
        return rng.poisson(lam).astype(np.int64)


def _reach(step: pd.Timedelta) -> int:
    """Half the one-hour window of the local count level, in trace steps (at least one: the
    neighbours that tell an outage of an hourly trace)."""
    return max(1, (max(1, int(pd.Timedelta(hours=1) // step)) | 1) // 2)


def _outages(y: np.ndarray, reach: int) -> np.ndarray:
    """Where ``y`` is a run of zeros that is an outage, not Poisson noise: the rows within ``reach``
    of it on either side would have brought ``OUTAGE_REQUESTS`` or more requests over its length."""
    out = np.zeros(len(y), dtype=bool)
    z = np.diff(np.concatenate([[0], (y == 0).astype(np.int8), [0]]))
    for s, e in zip(np.flatnonzero(z == 1), np.flatnonzero(z == -1)):
        around = np.concatenate([y[max(0, s - reach):s], y[e:e + reach]])
        if around.size and around.mean() * (e - s) >= OUTAGE_REQUESTS:
            out[s:e] = True
    return out


def _level_matched_smooth(counts: pd.Series, step: pd.Timedelta, target_cv: float,
                          outage: np.ndarray | None = None) -> tuple[pd.Series, np.ndarray]:
    """Centred moving average with a per-point half-width matched to the local count level.

    An outage (:func:`_outages`) stays zero and is a wall: the level and the box of a step near it
    take only the steps on its own side (a box spilling over it made up minutes of traffic inside
    the outage and halved the traffic before it). Steps farther from every outage than the level's
    window get what they got before outages were walls, bit for bit."""
    cap = max(1, int(pd.Timedelta(hours=1) // step))
    level = counts.rolling(cap | 1, center=True, min_periods=1).mean().to_numpy()
    w = np.ceil(1.0 / (target_cv ** 2 * np.maximum(level, 1e-9)))
    y = counts.to_numpy(dtype=float)
    # a box no wider than the data: np.convolve(mode="same") returns the longer of the two
    half = np.minimum(np.clip(w, 1, cap).astype(np.int64) // 2, (len(y) - 1) // 2)
    # windowed sums computed directly, one box filter per distinct half-width: a running cumulative
    # sum would lose every count after one huge outlier to rounding (1e300 + 5 - 1e300 == 0)
    sums, n = np.empty(len(y)), np.empty(len(y))
    ones = np.ones(len(y))
    for h in np.unique(half):
        at = half == h
        box = np.ones(2 * int(h) + 1)
        sums[at] = np.convolve(y, box, mode="same")[at]
        n[at] = np.convolve(ones, box, mode="same")[at]
    reach = _reach(step)  # the level's half-window, (cap | 1) // 2 (1 where that is 0: a box of one step)
    if outage is None:  # the caller's, when it has them already
        outage = _outages(y, reach)
    if outage.any():
        # the segments between outages; a step within the level's window of one is redone on its segment
        idx = np.arange(len(y))
        seg = np.cumsum(np.concatenate([[0], np.diff(outage.astype(np.int8)) != 0]))
        starts = np.flatnonzero(np.concatenate([[True], seg[1:] != seg[:-1]]))
        ends = np.concatenate([starts[1:], [len(y)]]) - 1
        hits = np.concatenate([[0], np.cumsum(outage)])
        near = idx[(hits[np.minimum(idx + reach + 1, len(y))] - hits[np.maximum(idx - reach, 0)] > 0) & ~outage]
        lo_seg, hi_seg = np.maximum(starts[seg[near]], near - reach), np.minimum(ends[seg[near]], near + reach)
        for i, a, b in zip(near, lo_seg, hi_seg):
            lvl = y[a:b + 1].mean()
            h = min(int(np.clip(np.ceil(1.0 / (target_cv ** 2 * max(lvl, 1e-9))), 1, cap)) // 2, (len(y) - 1) // 2)
            lo, hi = max(a, i - h), min(b, i + h)
            sums[i], n[i], half[i] = y[lo:hi + 1].sum(), hi + 1 - lo, h
        sums[outage], n[outage], half[outage] = 0.0, 1.0, 0
    return pd.Series(sums / n, index=counts.index), 2 * half + 1
