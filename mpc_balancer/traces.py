"""Real traffic traces: loading, validation, resampling, gaps and outages.

A trace is a CSV (plain or gzip) with a header ``timestamp,<value>``: one row per time step,
timestamps strictly increasing, values non-negative request counts per step. Three real traces ship
with the package and load by name:

========== ============================================== ======= =====================
name       what                                           step    span
========== ============================================== ======= =====================
nasa       HTTP requests/min, NASA Kennedy Space Center   1 min   1995-07-01..08-31
nyc-taxi   NYC taxi passengers per 30 min (NAB)           30 min  2014-07-01..2015-01-31
elb        AWS ELB request count per 5 min (NAB)          5 min   2014-04-10..04-24
========== ============================================== ======= =====================

Timestamps are put on the trace's grid when it is read (:func:`parse_trace`): the step is fitted
to them, and rows carrying a logger's jitter are read at their nearest grid point; timestamps too
irregular for one step, a stretch at a coarser resolution and a trace mostly made of gaps are
errors naming the rows.

Gaps. Two kinds are handled explicitly:

* *missing rows* (a timestamp step is absent): :meth:`Trace.resample` leaves them NaN and the
  ``gaps`` argument decides: ``"interpolate"`` (default; linear in time between the neighbours),
  ``"zero"`` (no traffic was recorded, so none arrived), or ``"error"``.
* *outages* recorded as zeros (NASA's server was down from 1995-08-01 14:52 to 08-03 04:36):
  :meth:`Trace.outages` lists runs of zeros at least ``min_minutes`` long. They are real: no
  request arrived, so the simulator replays them as zero traffic and excludes ticks without
  traffic from the utilisation metrics (no controller can fill a cluster without requests).
"""
from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from .telemetry import TIME_MAX, TIME_MIN

BUNDLED = {
    "nasa": "nasa_http_1995_1min.csv.gz",
    "nyc-taxi": "nab_nyc_taxi_30min.csv.gz",
    "elb": "nab_elb_request_count_5min.csv.gz",
}


class TraceError(ValueError):
    """A trace file or name that cannot be used; the message names the row and the problem."""


@dataclass(frozen=True)
class Trace:
    """A validated trace: counts per step, indexed by strictly increasing timestamps."""

    name: str
    series: pd.Series  # float counts per step, DatetimeIndex
    step: pd.Timedelta  # the trace's own step (fitted to its timestamps; see parse_trace)

    def __len__(self) -> int:
        return len(self.series)

    @property
    def start(self) -> pd.Timestamp:
        """The first timestamp."""
        return self.series.index[0]

    @property
    def end(self) -> pd.Timestamp:
        """The last timestamp."""
        return self.series.index[-1]

    def rate_per_s(self) -> pd.Series:
        """Requests per second at each timestamp."""
        return self.series / self.step.total_seconds()

    def resample(self, freq: str | pd.Timedelta, gaps: str = "interpolate") -> pd.Series:
        """Counts per ``freq`` step.

        Coarser than the trace: counts are summed. Finer: each count is spread evenly over the
        sub-steps (the rate is held, linearly interpolated between trace points). Missing rows are
        handled by ``gaps`` (see the module docstring).
        """
        if gaps not in ("interpolate", "zero", "error"):
            raise TraceError(f"gaps must be 'interpolate', 'zero' or 'error', got {gaps!r}")
        freq = pd.Timedelta(freq)
        if freq <= pd.Timedelta(0):
            raise TraceError(f"resample step must be positive, got {freq}")
        full = self.series.asfreq(self.step)  # missing rows become NaN
        n_missing = int(full.isna().sum())
        if n_missing:
            if gaps == "error":
                first = full.index[full.isna()][0]
                raise TraceError(f"trace {self.name!r}: {n_missing} missing rows, first at {first}")
            full = full.fillna(0.0) if gaps == "zero" else full.interpolate("time")
        if freq >= self.step:
            out = full.resample(freq, origin="start").sum(min_count=1)
            # a partial last bucket would look like a traffic drop: drop it
            if (self.end + self.step - out.index[-1]) < freq:
                out = out.iloc[:-1]
            return out.astype(float)
        # finer: interpolate the rate, then convert back to counts per new step
        rate = full / self.step.total_seconds()
        idx = pd.date_range(self.start, self.end, freq=freq)
        r = np.interp(idx.asi8, rate.index.asi8, rate.to_numpy())
        return pd.Series(r * freq.total_seconds(), index=idx, name=self.series.name)

    def outages(self, min_minutes: float = 30.0) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """Runs of zero counts lasting at least ``min_minutes`` (start, end inclusive)."""
        z = (self.series.to_numpy() == 0).astype(np.int8)
        edges = np.diff(np.concatenate([[0], z, [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
        out = []
        for s, e in zip(starts, ends):
            dur = self.series.index[e] - self.series.index[s] + self.step
            if dur >= pd.Timedelta(minutes=min_minutes):
                out.append((self.series.index[s], self.series.index[e]))
        return out


def available() -> list[str]:
    """Names of the bundled traces."""
    return sorted(BUNDLED)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise TraceError(f"{path}: corrupted gzip file ({e})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TraceError(f"{path}: not a UTF-8 text file ({e})") from None


def load_trace(name_or_path: str | Path) -> Trace:
    """Load a bundled trace by name (``nasa``, ``nyc-taxi``, ``elb``) or a user CSV (plain or .gz)."""
    key = str(name_or_path)
    if key in BUNDLED:
        ref = resources.files("mpc_balancer") / "data" / "traces" / BUNDLED[key]
        with resources.as_file(ref) as p:
            return parse_trace(_read_text(Path(p)), name=key)
    path = Path(key)
    if not path.exists():
        raise TraceError(f"unknown trace {key!r}: not a bundled name ({', '.join(available())}) nor an existing file")
    if path.is_dir():
        raise TraceError(f"trace path {key!r} is a directory, expected a CSV file")
    return parse_trace(_read_text(path), name=path.name)


def _check_offsets(ts_raw: pd.Series, name: str) -> None:
    """Timestamps are naive, or all carry the same UTC offset (then they are converted to UTC).
    Mixed offsets (a daylight-saving change in local time) would shift the daily cycle by an hour
    without a word: an error naming the row."""
    off = ts_raw.str.extract(r"(Z|[+-]\d{2}:?\d{2})$", expand=False)
    has = off.notna().to_numpy()
    if not has.any():
        return
    if not has.all():
        i = int(np.flatnonzero(~has)[0]) if has[0] else int(np.flatnonzero(has)[0])
        raise TraceError(f"{name}: row {i + 2}: timestamp {ts_raw.iloc[i]!r} mixes naive timestamps with ones carrying a "
                         "time-zone offset; write all of them in UTC (or all naive)")
    norm = off.str.replace("Z", "+00:00").str.replace(":", "").to_numpy()
    diff = norm != norm[0]
    if diff.any():
        i = int(np.flatnonzero(diff)[0])
        raise TraceError(f"{name}: row {i + 2}: time-zone offset {off.iloc[i]} differs from row 2's {off.iloc[0]} "
                         "(a daylight-saving change?); mixed offsets would shift the daily cycle: write UTC or naive times")


def parse_trace(text: str, name: str = "<csv>") -> Trace:
    """Parse and validate CSV text ``timestamp,<value>``. Errors name the (1-based) file row."""
    if not text.strip():
        raise TraceError(f"{name}: empty file")
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skip_blank_lines=True)
    except pd.errors.ParserError as e:
        raise TraceError(f"{name}: malformed CSV ({e})") from None
    cols = [c.strip() for c in df.columns]
    if not cols or cols[0].lower() != "timestamp":
        raise TraceError(f"{name}: missing column 'timestamp' (header is {','.join(cols)!r}); expected 'timestamp,<value>'")
    if len(cols) < 2:
        raise TraceError(f"{name}: missing value column (header is {','.join(cols)!r}); expected 'timestamp,<value>'")
    if len(df) == 0:
        raise TraceError(f"{name}: no data rows after the header")
    ts_raw, val_raw = df.iloc[:, 0].str.strip(), df.iloc[:, 1].str.strip()
    _check_offsets(ts_raw, name)
    ts = pd.to_datetime(ts_raw, errors="coerce", format="mixed")
    bad = ts.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TraceError(f"{name}: row {i + 2}: unparsable timestamp {ts_raw.iloc[i]!r}")
    vals = pd.to_numeric(val_raw, errors="coerce").to_numpy(dtype=float)
    nan = np.isnan(vals)
    if nan.any():
        i = int(np.flatnonzero(nan)[0])
        raise TraceError(f"{name}: row {i + 2}: column {cols[1]!r} is not a number ({val_raw.iloc[i]!r})")
    if np.isinf(vals).any():
        i = int(np.flatnonzero(np.isinf(vals))[0])
        raise TraceError(f"{name}: row {i + 2}: column {cols[1]!r} is infinite ({val_raw.iloc[i]!r})")
    neg = vals < 0
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise TraceError(f"{name}: row {i + 2}: negative value {vals[i]:g} in column {cols[1]!r}")
    t = ts.to_numpy(dtype="datetime64[ns]")
    outside = (t < TIME_MIN.to_datetime64()) | (t >= TIME_MAX.to_datetime64())
    if outside.any():  # the Balancer takes telemetry times in this range only (it holds the others)
        i = int(np.flatnonzero(outside)[0])
        raise TraceError(f"{name}: row {i + 2}: timestamp {ts_raw.iloc[i]} is outside [{TIME_MIN.date()}, {TIME_MAX.date()})")
    if len(t) < 2:
        raise TraceError(f"{name}: need at least 2 rows, got {len(t)}")
    nonincr = np.diff(t.astype(np.int64)) <= 0
    if nonincr.any():
        i = int(np.flatnonzero(nonincr)[0]) + 1
        raise TraceError(
            f"{name}: row {i + 2}: timestamp {ts_raw.iloc[i]} is not after the previous row's {ts_raw.iloc[i - 1]} "
            "(timestamps must be strictly increasing)"
        )
    step, t = _on_grid(t.astype(np.int64), ts_raw, name)
    series = pd.Series(vals, index=pd.DatetimeIndex(t.astype("datetime64[ns]")), name=cols[1])
    return Trace(name=name, series=series, step=step)


# steps a logger writes (seconds): a fitted step within NICE_TOLERANCE of one is that step
NICE_TOLERANCE = 1e-4
NICE_STEPS_S = np.array([1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400])
# this many consecutive spacings of one multiple of the step, lasting this long: a coarser resolution, not gaps
COARSE_SPAN, COARSE_ROWS = pd.Timedelta(days=1), 12
MAX_MISSING = 0.5  # more than this share of the steps missing: interpolation would make up most of the trace


def _grain(ns: float) -> int:
    """The resolution (ns) a step of ``ns`` and its grid are kept to: a millisecond, a microsecond
    under one second."""
    return 10 ** 6 if ns >= 10 ** 9 else 10 ** 3


def _on_grid(t: np.ndarray, ts_raw: pd.Series, name: str) -> tuple[pd.Timedelta, np.ndarray]:
    """The trace's step and its timestamps (int64 ns) on the grid ``t0 + k step``.

    A logger's timestamps carry jitter. The step is the nearest of ``NICE_STEPS_S`` when the median
    spacing is within ``NICE_TOLERANCE`` of it; else the rows are numbered by the mean spacing (the
    median where rows are missing; a gap skips numbers) and the least-squares slope of time on that
    number is the step: a nice one if within the tolerance, else rounded to :func:`_grain` (a 59.9 s
    or 1.5 s logger keeps its own step). The grid's phase is the median of the rows' offsets from
    it, unwrapped around their circular mean. Rows off the grid are moved to the nearest grid point:
    without it only the rows landing exactly on the grid would be read, and the rest interpolated
    over (1-49 ms of jitter flattened a trace's minute-scale bursts). A late row whose point the
    next row holds takes its free neighbour; two rows left on one point (timestamps more irregular
    than the step), ``COARSE_ROWS`` or more consecutive spacings of one multiple of the step lasting
    ``COARSE_SPAN`` or longer (a trace whose older part was rolled up coarser: its counts would be
    read per step), and more than ``MAX_MISSING`` of the steps missing (day-first dates read
    month-first spread four days over four months) are errors naming the rows. A trace already on
    its grid is returned as it is."""
    rel = (t - t[0]).astype(float)
    med = float(np.median(np.diff(t)))
    fitted = rel[-1] / (len(t) - 1)  # the mean spacing: the better first guess under heavy jitter, unless rows are missing
    if not abs(fitted / med - 1) < 0.05:
        fitted = med
    for _ in range(2):  # number the rows by the guess (a gap skips numbers), fit the slope, renumber
        n0 = np.round(rel / fitted)
        dn = n0 - n0.mean()
        if (dn * dn).sum() > 0:
            fitted = float((dn * (rel - rel.mean())).sum() / (dn * dn).sum())
    grain = _grain(fitted)  # finer is the fit's own noise
    step_ns = max(int(round(fitted / grain)) * grain, grain)
    for guess in (med, fitted):  # the median first: a phase that shifts once pulls the fit, not the median
        nice = NICE_STEPS_S[np.argmin(np.abs(np.log(guess / (NICE_STEPS_S * 1e9))))] * 10 ** 9
        if abs(guess / nice - 1) < NICE_TOLERANCE:
            step_ns = int(nice)
            break
    # the grid's phase: the median of the rows' offsets within a step, unwrapped around their circular
    # mean (a late row or two do not move it; 0 on an exact grid)
    frac = ((t - t[0]) % step_ns) / step_ns
    mean = np.arctan2(np.sin(2 * np.pi * frac).mean(), np.cos(2 * np.pi * frac).mean()) / (2 * np.pi)
    phase = mean + float(np.median((frac - mean + 0.5) % 1.0 - 0.5))
    unit = _grain(step_ns)  # the grid on it: far under step / 2
    t0 = int(round((t[0] + phase * step_ns) / unit)) * unit
    k = np.round((t - t0) / step_ns).astype(np.int64)
    for i in np.flatnonzero(np.diff(k) == 0):  # a late row on the next one's point: its free neighbour, if any
        if k[i + 1] != k[i]:
            continue  # resolved by an earlier move
        if i == 0 or k[i - 1] < k[i] - 1:
            k[i] -= 1
        elif i + 2 >= len(k) or k[i + 2] > k[i + 1] + 1:
            k[i + 1] += 1
    same = np.diff(k) <= 0
    if same.any():
        i = int(np.flatnonzero(same)[0]) + 1
        raise TraceError(f"{name}: rows {i + 1} and {i + 2} ({ts_raw.iloc[i - 1]}, {ts_raw.iloc[i]}) fall on the same "
                         f"step of {pd.Timedelta(step_ns, unit='ns')} (the trace's step): the timestamps are too irregular "
                         "for one step; resample the trace to a regular step")
    gap = np.diff(k)
    # runs of equal gaps of 2 steps or more: a stretch spaced at one coarser step for a day or more
    change = np.flatnonzero(np.diff(gap) != 0) + 1
    starts, ends = np.concatenate([[0], change]), np.concatenate([change, [len(gap)]])
    span = (ends - starts) * gap[starts] * step_ns
    coarse = (gap[starts] >= 2) & (ends - starts >= COARSE_ROWS) & (span >= COARSE_SPAN.value)
    if coarse.any():
        a, b = int(starts[coarse][0]), int(ends[coarse][0])
        raise TraceError(f"{name}: rows {a + 2}..{b + 2} ({ts_raw.iloc[a]} .. {ts_raw.iloc[b]}) are {int(gap[a])} steps of "
                         f"{pd.Timedelta(step_ns, unit='ns')} apart, the trace's step elsewhere: its resolution changes, "
                         "and coarser counts would be read per step; resample the trace to one step")
    missing = 1.0 - len(k) / float(k[-1] - k[0] + 1)
    if missing > MAX_MISSING:
        j = int(np.argmax(gap))
        raise TraceError(f"{name}: {missing:.0%} of the steps of {pd.Timedelta(step_ns, unit='ns')} between the first and "
                         f"the last row have no row (the largest gap: {ts_raw.iloc[j]} to {ts_raw.iloc[j + 1]}, rows "
                         f"{j + 2}-{j + 3}); they would be interpolated, not read. Check the date format (day-first "
                         "dates read month-first?), write the steps with a count of 0 if they were left out, or cut "
                         "the trace to the part with data")
    snapped = t0 + k * step_ns
    return pd.Timedelta(step_ns, unit="ns"), t if np.array_equal(snapped, t) else snapped
