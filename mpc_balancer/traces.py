"""Real traffic traces: loading, validation, resampling, gaps and outages.

A trace is a CSV (plain or gzip) with a header ``timestamp,<value>``: one row per time step,
values non-negative request counts per step. Three real traces ship with the package and load by
name:

========== ============================================== ======= =====================
name       what                                           step    span
========== ============================================== ======= =====================
nasa       HTTP requests/min, NASA Kennedy Space Center   1 min   1995-07-01..08-28 (*)
nyc-taxi   NYC taxi passengers per 30 min (NAB)           30 min  2014-07-01..2015-01-31
elb        AWS ELB request count per 5 min (NAB)          5 min   2014-04-10..04-24
========== ============================================== ======= =====================

(*) The logs of 1995-07-28 13:32 to 08-01 00:00 (Hurricane Erin) are missing and the bundled file
closes the gap up: from 07-28 13:32 on, its timestamps are 3 days 10 h 28 min early (August's
afternoon peak falls on the file's early morning; the logs end 08-31 23:59, the file 08-28 13:31).

What real exports look like is read too (:func:`parse_trace`): no header, another name for the
time column (``time``, ``date``, ``ds``, ...), semicolons or tabs, Unix times (s, ms, us or ns, told
apart by their size) and compact dates (``20260101``). What is read other than as written is said in
a :class:`TraceWarning` naming the rows: rows out of time order are sorted, a row repeating another's
timestamp and count is dropped (another count at the same time is an error), empty or ``NaN`` cells
are missing steps, and gaps of ``GAP_NOTE`` (30 minutes) or more are named with how they are filled.

Timestamps are put on the trace's grid when it is read (:func:`parse_trace`): the step is fitted
to them, and rows carrying a logger's jitter are read at their nearest grid point; timestamps too
irregular for one step, a stretch at a coarser resolution and a trace mostly made of gaps are
errors naming the rows.

Gaps. Two kinds are handled explicitly:

* *missing rows* (a timestamp step is absent): :meth:`Trace.resample` leaves them NaN and the
  ``gaps`` argument decides: ``"interpolate"`` (default; linear in time between the neighbours),
  ``"zero"`` (no traffic was recorded, so none arrived), or ``"error"``.
* *outages* recorded as zeros (NASA's server was down from 1995-08-01 14:52 to 08-03 04:36, at
  07-29 04:25 .. 07-30 18:07 in the bundled file):
  :meth:`Trace.outages` lists runs of zeros at least ``min_minutes`` long. They are real: no
  request arrived, so the simulator replays them as zero traffic (no smoothing window of
  :mod:`mpc_balancer.traffic` reaches across one) and excludes ticks without traffic from the
  utilisation metrics (no controller can fill a cluster without requests).
"""
from __future__ import annotations

import csv
import gzip
import io
import re
import warnings
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


class TraceWarning(UserWarning):
    """A trace was read, but not exactly as written: rows put in time order, repeated rows dropped,
    cells without a count or long gaps filled by interpolation. The message names the rows."""


# column names read as the timestamps (any case); without one, the first column is
TIME_COLUMNS = frozenset({"timestamp", "timestamps", "time", "times", "datetime", "date", "date_time", "time_stamp",
                          "ts", "ds", "dt", "epoch", "unix_time", "unixtime", "time_utc", "timestamp_utc", "interval",
                          "period", "minute", "hour", "bucket", "window_start", "start", "start_time"})
# cells read as "no count at this timestamp" (a missing measurement, like a missing row); any case
MISSING_CELLS = frozenset({"", "nan", "na", "n/a", "null", "none", "nil"})
# a gap (steps without a count) at least this long is named in a TraceWarning: its interpolated
# traffic is made up
GAP_NOTE = pd.Timedelta(minutes=30)
# this share of the steps without a row, in a trace without a count of 0, is named too: steps without
# requests left out (counts grouped from log lines), which the interpolation fills with made-up traffic
ZEROS_LEFT_OUT = 0.01
# numeric timestamps of these many digits are compact dates (20260101, 202601011200) when they read as
# one; other numbers are Unix times, their unit told by their size
# (10 digits, as Unix seconds since 2001 have, only for years from EPOCH_EARLIEST: Unix seconds up to
# 2033 read as years before 2000)
COMPACT_DATES = {4: "%Y", 6: "%Y%m", 8: "%Y%m%d", 10: "%Y%m%d%H", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
EPOCH_UNITS = ((1e11, "s", 10 ** 9), (1e14, "ms", 10 ** 6), (1e17, "us", 10 ** 3), (np.inf, "ns", 1))
EPOCH_EARLIEST = pd.Timestamp("1990-01-01")  # a Unix time before this is another column's numbers (an index, hours)
_OFFSET = (r"(Z|\s?(?:UTC|GMT)|[+-]\d{2}:?\d{2}|(?:(?<=:\d\d)|(?<=\d\.\d{3})|(?<=\d\.\d{6})|(?<=\d\.\d{9}))[+-]\d{2})$")
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
# words pandas reads as the time they are read at: no timestamp of a trace
_RELATIVE = frozenset(w for v in ("now", "today", "tomorrow", "yesterday") for w in (v, v.title(), v.upper()))


def _warn(message: str) -> None:
    warnings.warn(message, TraceWarning, stacklevel=3)  # at parse_trace's caller


def _span(td: pd.Timedelta) -> str:
    """A duration in the unit people say it in: 45 s, 30 min, 47 h."""
    s = td.total_seconds()
    return f"{s:g} s" if s < 120 else f"{s / 60:.4g} min" if s < 7200 else f"{s / 3600:.4g} h"


def _check_offsets(ts_raw: pd.Series, rows: np.ndarray, name: str) -> None:
    """Timestamps are naive, or all carry the same UTC offset (then they are converted to UTC).
    Mixed offsets (a daylight-saving change in local time) would shift the daily cycle by an hour
    without a word: an error naming the row."""
    # only a timestamp ending in a letter or with a sign among its last characters may carry one
    maybe = ts_raw.str[-6:].str.contains(r"[+\-A-Za-z]", regex=True).to_numpy(dtype=bool)
    if not maybe.any():
        return
    off = pd.Series(np.nan, index=ts_raw.index, dtype=object)
    off[maybe] = ts_raw[maybe].str.extract(_OFFSET, expand=False)
    has = off.notna().to_numpy()
    if not has.any():
        return
    if not has.all():
        i = int(np.flatnonzero(~has)[0]) if has[0] else int(np.flatnonzero(has)[0])
        raise TraceError(f"{name}: row {rows[i]}: timestamp {ts_raw.iloc[i]!r} mixes naive timestamps with ones carrying a "
                         "time-zone offset; write all of them in UTC (or all naive)")
    norm = off.str.strip().str.replace(r"^(?:Z|UTC|GMT)$", "+00:00", regex=True).str.replace(":", "")
    norm = norm.where(norm.str.len() != 3, norm + "00").to_numpy()  # +05 is +0500
    diff = norm != norm[0]
    if diff.any():
        i = int(np.flatnonzero(diff)[0])
        raise TraceError(f"{name}: row {rows[i]}: time-zone offset {off.iloc[i].strip()} differs from row {rows[0]}'s "
                         f"{off.iloc[0].strip()} (a daylight-saving change?); mixed offsets would shift the daily cycle: "
                         "write UTC or naive times")


def _table(text: str, name: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The CSV's non-empty rows as strings (stripped; a short row padded with empty cells) and their
    1-based line numbers in the file. The delimiter is a comma, or the first line's semicolon, tab or
    bar when it has no comma."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    first = next((ln for ln in lines if ln.strip()), "")
    sep = "," if "," in first else next((d for d in (";", "\t", "|") if d in first), ",")
    numbers = np.array([i + 1 for i, ln in enumerate(lines) if ln.strip()], dtype=np.int64)
    df = None
    try:  # the fast reader; a quoted line break or a row longer than the first falls back to csv's
        df = pd.read_csv(io.StringIO(text), header=None, sep=sep, dtype=str, keep_default_na=False,
                         skip_blank_lines=True)
        if len(df) != len(numbers):
            df = None
    except (pd.errors.ParserError, ValueError):
        df = None
    if df is None:
        reader = csv.reader(io.StringIO(text), delimiter=sep)
        rows, at = [], []
        try:
            for r in reader:
                if any(c.strip() for c in r):
                    rows.append(r)
                    at.append(reader.line_num)
        except csv.Error as e:
            raise TraceError(f"{name}: row {reader.line_num}: malformed CSV ({e})") from None
        df, numbers = pd.DataFrame(rows, dtype=object).fillna(""), np.array(at, dtype=np.int64)
    df = df.apply(lambda c: c.str.strip())
    keep = (df != "").any(axis=1).to_numpy()  # a row of empty cells (a spreadsheet's ",,") is no row
    return df[keep].reset_index(drop=True), numbers[keep]


def _is_number(cell: str) -> bool:
    return re.fullmatch(_NUMBER, cell) is not None


def _is_time(cell: str) -> bool:
    if _is_number(cell):
        return True
    try:
        ts = pd.Timestamp(cell)
    except (ValueError, TypeError, OverflowError):
        return False
    return ts is not pd.NaT and cell not in _RELATIVE


def _numeric_times(ts_raw: pd.Series, rows: np.ndarray, col: str, name: str) -> np.ndarray:
    """Numeric timestamps (int64 ns): compact dates (``20260101``, ``202601011200``) when every one
    reads as one, else Unix times in seconds, milliseconds, microseconds or nanoseconds, the unit told
    by their size (seconds up to 1e11, i.e. the year 5138)."""
    width = ts_raw.str.len()
    if ts_raw.str.fullmatch(r"\d+").all() and width.nunique() == 1 and int(width.iloc[0]) in COMPACT_DATES:
        fmt = COMPACT_DATES[int(width.iloc[0])]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # out of pandas' range: NaT, then read as Unix times
            compact = pd.to_datetime(ts_raw, format=fmt, errors="coerce")
        if compact.notna().all() and (int(width.iloc[0]) != 10 or compact.min() >= EPOCH_EARLIEST):
            return _in_range(compact.to_numpy(dtype="datetime64[ns]").astype(np.int64), ts_raw, rows, name)
    v = ts_raw.astype(float).to_numpy()
    _, unit, per = next(u for u in EPOCH_UNITS if np.abs(v).max() < u[0])
    ns = v * per
    outside = ~((ns >= TIME_MIN.value) & (ns < TIME_MAX.value))
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise TraceError(f"{name}: row {rows[i]}: timestamp {ts_raw.iloc[i]} (column {col!r}, read as a Unix time in {unit}) "
                         f"is outside [{TIME_MIN.date()}, {TIME_MAX.date()})")
    if ts_raw.str.fullmatch(r"[+-]?\d+").all():  # integers: exact
        ns = np.array([int(x) * per for x in ts_raw], dtype=np.int64)
    else:
        ns = np.round(ns).astype(np.int64)
    early = ns < EPOCH_EARLIEST.value
    if early.any():
        i = int(np.flatnonzero(early)[0])
        raise TraceError(f"{name}: row {rows[i]}: the number {ts_raw.iloc[i]} in column {col!r}, read as a Unix time in "
                         f"{unit}, is {pd.Timestamp(int(ns[i]))}, before {EPOCH_EARLIEST.year}: is {col!r} a time column? "
                         "Write timestamps as dates (2026-01-01 00:00) or Unix times, in a column named 'timestamp'")
    return ns


def _in_range(t: np.ndarray, ts_raw: pd.Series, rows: np.ndarray, name: str) -> np.ndarray:
    """``t`` (int64 ns) unless a timestamp is outside the Balancer's range: an error naming the row."""
    outside = (t < TIME_MIN.value) | (t >= TIME_MAX.value)
    if outside.any():  # the Balancer takes telemetry times in this range only (it holds the others)
        i = int(np.flatnonzero(outside)[0])
        raise TraceError(f"{name}: row {rows[i]}: timestamp {ts_raw.iloc[i]} is outside [{TIME_MIN.date()}, {TIME_MAX.date()})")
    return t


def _times(ts_raw: pd.Series, rows: np.ndarray, col: str, name: str) -> np.ndarray:
    """Timestamps (int64 ns, UTC when they carry an offset) of the column ``col``; errors name the row."""
    if _is_number(ts_raw.iloc[0]) and ts_raw.str.fullmatch(_NUMBER).all():
        return _numeric_times(ts_raw, rows, col, name)
    _check_offsets(ts_raw, rows, name)
    ts = pd.to_datetime(ts_raw, errors="coerce", format="mixed")
    if not pd.api.types.is_datetime64_any_dtype(ts):  # offsets spelled apart (+05, +05:00): one offset, checked above
        ts = pd.to_datetime(ts_raw, errors="coerce", format="mixed", utc=True)
    if ts.dt.tz is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    bad = ts.isna().to_numpy() | ts_raw.isin(_RELATIVE).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TraceError(f"{name}: row {rows[i]}: unparsable timestamp {ts_raw.iloc[i]!r}")
    return _in_range(ts.to_numpy(dtype="datetime64[ns]").astype(np.int64), ts_raw, rows, name)


def _counts(val_raw: pd.Series, rows: np.ndarray, col: str, name: str) -> np.ndarray:
    """The counts (float; NaN where the cell holds no count: empty, NaN, null, ...); errors name the row."""
    vals = pd.to_numeric(val_raw, errors="coerce").to_numpy(dtype=float)
    missing = np.isnan(vals)
    missing[missing] = val_raw[missing].str.lower().isin(MISSING_CELLS).to_numpy()
    bad = np.isnan(vals) & ~missing
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        cell = val_raw.iloc[i]
        hint = (" (a thousands separator? write plain numbers)" if re.fullmatch(r"\d{1,3}([,.' ]\d{3})+", cell)
                else " (a decimal comma? write a decimal point)" if re.fullmatch(r"\d+,\d+", cell) else "")
        raise TraceError(f"{name}: row {rows[i]}: column {col!r} is not a number ({cell!r}){hint}")
    if np.isinf(vals).any():
        i = int(np.flatnonzero(np.isinf(vals))[0])
        raise TraceError(f"{name}: row {rows[i]}: column {col!r} is infinite ({val_raw.iloc[i]!r})")
    neg = vals < 0
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise TraceError(f"{name}: row {rows[i]}: negative value {vals[i]:g} in column {col!r} (counts are >= 0; "
                         "leave the cell empty where the count is unknown)")
    return vals


def _columns(table: pd.DataFrame, lines: np.ndarray, name: str) -> tuple[list[str], pd.DataFrame, np.ndarray, int, int]:
    """(header, data rows, their line numbers, timestamp column, value column).

    A first row whose first cell is a time and second a number (or empty) is data (a file without a
    header: ``timestamp,value``). The timestamps are the column named like a time (``timestamp``,
    ``time``, ``date``, ``ds``, ...; any case), else the first column; the counts are the column
    after it (before it when it is the last)."""
    first = table.iloc[0].tolist()
    if len(first) >= 2 and _is_time(first[0]) and (_is_number(first[1]) or first[1].lower() in MISSING_CELLS):
        header, data = ["timestamp", "value"] + [f"column {j + 1}" for j in range(2, len(first))], table
    else:
        header, data, lines = first, table.iloc[1:].reset_index(drop=True), lines[1:]
    width = max((j + 1 for j, c in enumerate(header) if c), default=1)  # a trailing separator names no column
    header = header[:width]
    low = [c.strip('"').lower() for c in header]
    named = [j for j, c in enumerate(low) if c in TIME_COLUMNS]
    ti = named[0] if named else 0
    if not named and len(data) and not _is_time(data.iloc[0, 0]):
        raise TraceError(f"{name}: missing column 'timestamp' (header is {','.join(header)!r}; its first column holds "
                         f"{data.iloc[0, 0]!r}, not a time); expected 'timestamp,<value>'")
    if width < 2 and not named:
        raise TraceError(f"{name}: missing column 'timestamp' (header is {','.join(header)!r}); expected 'timestamp,<value>'")
    if width < 2:
        raise TraceError(f"{name}: missing value column (header is {','.join(header)!r}); expected 'timestamp,<value>'")
    if not len(data):
        raise TraceError(f"{name}: no data rows after the header")
    if data.shape[1] > width:
        extra = (data.iloc[:, width:] != "").any(axis=1).to_numpy()
        if extra.any():
            i = int(np.flatnonzero(extra)[0])
            cells = int(np.flatnonzero((data.iloc[i] != "").to_numpy())[-1]) + 1
            raise TraceError(f"{name}: row {lines[i]}: {cells} cells, the header has {width} (an unquoted separator in "
                             "a number? write plain numbers, or quote the cell)")
    vi = ti + 1 if ti + 1 < width else ti - 1
    return header, data, lines, ti, vi


def parse_trace(text: str, name: str = "<csv>") -> Trace:
    """Parse and validate CSV text ``timestamp,<value>``. Errors name the (1-based) file row.

    Also read, with a :class:`TraceWarning` naming the rows: rows out of time order (sorted), a row
    repeating the timestamp and count of another (dropped; the same timestamp with another count is
    an error), cells without a count (empty, ``NaN``, ``null``: missing steps, interpolated like a
    missing row), and gaps of ``GAP_NOTE`` or more (interpolated). Accepted as well: a file without
    a header, another time column name, a semicolon- or tab-separated file, Unix times (s, ms, us or
    ns) and compact dates (``20260101``)."""
    if not text.strip():
        raise TraceError(f"{name}: empty file")
    table, lines = _table(text, name)
    if not len(table):
        raise TraceError(f"{name}: empty file")
    cols, data, rows, ti, vi = _columns(table, lines, name)
    ts_raw, val_raw = data.iloc[:, ti], data.iloc[:, vi]
    t = _times(ts_raw, rows, cols[ti], name)
    vals = _counts(val_raw, rows, cols[vi], name)
    if _is_number(ts_raw.iloc[0]):  # Unix times: messages show the time too
        ts_raw = ts_raw + " (" + pd.Series(t.astype("datetime64[ns]")).astype(str) + ")"
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        i = int(back[0]) + 1
        _warn(f"{name}: {back.size} row(s) out of time order (the first: row {rows[i]}, {ts_raw.iloc[i]}, after row "
              f"{rows[i - 1]}, {ts_raw.iloc[i - 1]}): read sorted by time")
        order = np.argsort(t, kind="stable")
        t, vals, rows = t[order], vals[order], rows[order]
        ts_raw, val_raw = ts_raw.iloc[order].reset_index(drop=True), val_raw.iloc[order].reset_index(drop=True)
    same = np.flatnonzero(np.diff(t) == 0) + 1
    if same.size:
        for i in same:  # a repeat without a count adds nothing; a count and another count: which one?
            a, b = vals[i - 1], vals[i]
            if not (a == b or np.isnan(a) or np.isnan(b)):
                raise TraceError(f"{name}: rows {rows[i - 1]} and {rows[i]} have the same timestamp {ts_raw.iloc[i]} and "
                                 f"different counts ({a:g}, {b:g}): rows written twice, or local time repeating an hour "
                                 "when daylight saving ends? Write UTC times, one row per time step")
            if np.isnan(a):
                vals[i - 1] = b
        _warn(f"{name}: {same.size} row(s) repeat the timestamp of the row before with the same count or none (first: "
              f"row {rows[same[0]]}, {ts_raw.iloc[same[0]]}, as row {rows[same[0] - 1]}): dropped")
        keep = np.ones(len(t), dtype=bool)
        keep[same] = False
        t, vals, rows = t[keep], vals[keep], rows[keep]
        ts_raw, val_raw = ts_raw[keep].reset_index(drop=True), val_raw[keep].reset_index(drop=True)
    valid = ~np.isnan(vals)
    if valid.sum() < 2:
        raise TraceError(f"{name}: need at least 2 rows with a count, got {int(valid.sum())}")
    step, t = _on_grid(t, ts_raw, rows, valid, name)
    if not valid.all():
        i = int(np.flatnonzero(~valid)[0])
        _warn(f"{name}: {int((~valid).sum())} row(s) have no count in column {cols[vi]!r} (first: row {rows[i]}, "
              f"{ts_raw.iloc[i]}, {val_raw.iloc[i]!r}): read as missing steps, filled like missing rows")
    series = pd.Series(vals[valid], index=pd.DatetimeIndex(t[valid].astype("datetime64[ns]")), name=cols[vi])
    gaps = _gaps_note(series, step, rows[valid], name)
    if gaps:
        _warn(gaps)
    return Trace(name=name, series=series, step=step)


def _gaps_note(series: pd.Series, step: pd.Timedelta, rows: np.ndarray, name: str) -> str | None:
    """What a TraceWarning says about the steps without a count, filled by linear interpolation:
    when they make a gap of ``GAP_NOTE`` or more, or when they are ``ZEROS_LEFT_OUT`` or more of the
    steps of a trace without a count of 0 (steps without requests left out, as counts grouped from
    log lines are: the interpolation then makes up their traffic). None otherwise (a missing row
    here and there, as in the bundled elb)."""
    k = np.round((series.index.asi8 - series.index.asi8[0]) / step.value).astype(np.int64)
    missing = np.diff(k) - 1
    n = int(missing.sum())
    if not n:
        return None
    long = np.flatnonzero(missing * step.value >= GAP_NOTE.value)
    v = series.to_numpy()
    edges = np.flatnonzero(missing)
    # a trace without zeros, its gaps between small counts (a Poisson count of 5 is 0 with probability 0.7%)
    no_zeros = (n >= ZEROS_LEFT_OUT * (k[-1] + 1) and not (v == 0).any()
                and float(np.median(np.concatenate([v[edges], v[edges + 1]]))) <= 5)
    if not (long.size or no_zeros):
        return None
    full = series.asfreq(step)
    made_up = float(full.interpolate("time")[full.isna()].sum())
    total = float(series.sum())
    head = (f"{name}: {n} step(s) of {_span(step)} have no count ({n / (k[-1] + 1):.1%} of the trace), filled by linear "
            f"interpolation: made-up traffic ({made_up / max(made_up + total, 1e-300):.1%} of the requests), simulated "
            "as if it had been measured")
    if long.size:
        j = int(long[np.argmax(missing[long])])
        idx = series.index
        head += (f"; {long.size} gap(s) of {_span(GAP_NOTE)} or more, the longest {_span(int(missing[j]) * step)} "
                 f"between rows {rows[j]} and {rows[j + 1]} ({idx[j]} .. {idx[j + 1]})")
    if no_zeros:
        head += ("; no row has a count of 0 and the gaps lie between small counts: were the steps without a request "
                 "left out (counts grouped from log lines)?")
    else:
        head += "."
    return head + (" If no request arrived then, write those steps with a count of 0; else simulate a window clear "
                   "of the gaps (--start, --days)")


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


def _on_grid(t: np.ndarray, ts_raw: pd.Series, rows: np.ndarray, valid: np.ndarray, name: str) -> tuple[pd.Timedelta, np.ndarray]:
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
    month-first spread four days over four months; a row without a count, ``~valid``, is a missing
    step) are errors naming the rows (``rows``: the rows' lines in the file). A trace already on its
    grid is returned as it is."""
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
        raise TraceError(f"{name}: rows {rows[i - 1]} and {rows[i]} ({ts_raw.iloc[i - 1]}, {ts_raw.iloc[i]}) fall on the same "
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
        raise TraceError(f"{name}: rows {rows[a]}..{rows[b]} ({ts_raw.iloc[a]} .. {ts_raw.iloc[b]}) are {int(gap[a])} steps of "
                         f"{pd.Timedelta(step_ns, unit='ns')} apart, the trace's step elsewhere: its resolution changes, "
                         "and coarser counts would be read per step; resample the trace to one step")
    at = np.flatnonzero(valid)  # rows with a count: a row without one is a missing step too
    kv = k[at]
    missing = 1.0 - len(kv) / float(kv[-1] - kv[0] + 1)
    if missing > MAX_MISSING:
        g = int(np.argmax(np.diff(kv)))
        j, j1 = int(at[g]), int(at[g + 1])
        raise TraceError(f"{name}: {missing:.0%} of the steps of {pd.Timedelta(step_ns, unit='ns')} between the first and "
                         f"the last row have no row (the largest gap: {ts_raw.iloc[j]} to {ts_raw.iloc[j1]}, rows "
                         f"{rows[j]}-{rows[j1]}); they would be interpolated, not read. Check the date format (day-first "
                         "dates read month-first?), write the steps with a count of 0 if they were left out, or cut "
                         "the trace to the part with data")
    snapped = t0 + k * step_ns
    return pd.Timedelta(step_ns, unit="ns"), t if np.array_equal(snapped, t) else snapped
