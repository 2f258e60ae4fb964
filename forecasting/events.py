"""Announced events (promotions, launches, holidays) as regressors.

CSV format, one event per row, header required::

    start,end,name[,expected_multiplier]
    2024-11-29 00:00,2024-11-30 00:00,black-friday,2.5

``start`` is inclusive, ``end`` exclusive; ``expected_multiplier`` (optional, > 0) is the traffic
multiplier the business expects. :func:`load_events` reports the (1-based) file row and the
problem for every bad row.

Regressors (:meth:`EventCalendar.features`), per step:

* ``event``: 1.0 while any event is active;
* ``event_logmult``: ``log(expected_multiplier)`` while an event with a multiplier is active.

A forecaster on log traffic learns a coefficient for each from past events in its history, so a
fitted model predicts the lift of the next announced one. When the history holds no event (the
column is constant), the column is dropped and, for future events with an
``expected_multiplier``, the announced multiplier is applied as a fixed offset on the log scale.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import EventFileError
from .series import TimeGrid

EVENT_COLUMNS = ("event", "event_logmult")


@dataclass(frozen=True)
class Event:
    """An announced event: ``[start, end)``, a name and optionally the traffic multiplier expected during it."""

    start: pd.Timestamp
    end: pd.Timestamp
    name: str
    expected_multiplier: float | None = None


class EventCalendar:
    """A set of announced events; builds per-step regressors on any time grid."""

    def __init__(self, events: list[Event] | tuple[Event, ...] = ()):
        for e in events:
            if not isinstance(e, Event):
                raise EventFileError(f"events must be Event instances, got {type(e).__name__}")
        self.events = tuple(sorted(events, key=lambda e: e.start))

    def __len__(self) -> int:
        return len(self.events)

    def overlapping(self, start, end) -> int:
        """How many events overlap ``[start, end)`` (timestamps, or anything ``pd.Timestamp`` reads;
        compared as nanoseconds since the epoch, as :meth:`multiplier` compares them)."""
        a, b = pd.Timestamp(start).value, pd.Timestamp(end).value
        return sum(1 for e in self.events if e.start.value < b and e.end.value > a)

    def multiplier(self, times_ns) -> np.ndarray:
        """The product of the ``expected_multiplier`` of the events active at each time (1 where none).

        Parameters
        ----------
        times_ns : array_like of int
            Times as nanoseconds since the epoch (``DatetimeIndex.asi8``).
        """
        t = np.asarray(times_ns)
        m = np.ones(len(t))
        for e in self.events:
            if e.expected_multiplier is not None:
                m[(t >= e.start.value) & (t < e.end.value)] *= e.expected_multiplier
        return m

    def features(self, grid: TimeGrid, i0: int, n: int) -> np.ndarray:
        """``(n, 2)`` columns ``event``, ``event_logmult`` for steps ``i0 .. i0+n-1``."""
        out = np.zeros((n, 2))
        if not self.events:
            return out
        f = grid.freq
        for e in self.events:
            # steps whose timestamp lies in [start, end)
            a = int(np.ceil((e.start - grid.start) / f)) - i0
            b = int(np.ceil((e.end - grid.start) / f)) - i0
            a, b = max(a, 0), min(b, n)
            if a >= b:
                continue
            out[a:b, 0] = 1.0
            if e.expected_multiplier is not None:
                out[a:b, 1] = np.log(e.expected_multiplier)
        return out


def as_calendar(events) -> EventCalendar:
    """Accept ``None``, an :class:`EventCalendar`, a list of :class:`Event`, or a CSV path."""
    if events is None:
        return EventCalendar()
    if isinstance(events, EventCalendar):
        return events
    if isinstance(events, (str, Path)):
        return load_events(events)
    return EventCalendar(list(events))


def load_events(path: str | Path) -> EventCalendar:
    """Read an events CSV (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise EventFileError(f"events file {str(p)!r} does not exist")
    if p.is_dir():
        raise EventFileError(f"events file {str(p)!r} is a directory, expected a CSV file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise EventFileError(f"events file {str(p)!r} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise EventFileError(f"events file {str(p)!r}: cannot read ({e.strerror})") from None
    return parse_events(text, name=str(p))


def parse_events(text: str, name: str = "<events>") -> EventCalendar:
    """An :class:`EventCalendar` from CSV text ``start,end,name[,expected_multiplier]``.

    Raises
    ------
    EventFileError
        A bad header or row, naming ``name``, the row and the column.
    """
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise EventFileError(f"{name}: not a readable CSV ({e})") from None
    rows = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not rows:
        raise EventFileError(f"{name}: empty file; expected header start,end,name[,expected_multiplier]")
    hdr = [c.strip().lower() for c in rows[0][1]]
    if hdr[:3] != ["start", "end", "name"] or len(hdr) > 4 or (len(hdr) == 4 and hdr[3] != "expected_multiplier"):
        raise EventFileError(f"{name}: row 1: header {','.join(hdr)!r}; expected start,end,name[,expected_multiplier]")
    events = []
    for lineno, r in rows[1:]:
        r = [c.strip() for c in r]
        if len(r) not in (3, 4) or len(r) > len(hdr):
            raise EventFileError(f"{name}: row {lineno}: expected {len(hdr)} fields, got {len(r)}")
        ts = []
        for col, v in zip(("start", "end"), r[:2]):
            try:
                ts.append(pd.Timestamp(v))
            except (ValueError, TypeError):
                raise EventFileError(f"{name}: row {lineno}: column {col!r}: unparsable timestamp {v!r}") from None
            if ts[-1] is pd.NaT:
                raise EventFileError(f"{name}: row {lineno}: column {col!r}: empty timestamp")
        if ts[1] <= ts[0]:
            raise EventFileError(f"{name}: row {lineno}: end {r[1]} is not after start {r[0]}")
        if not r[2]:
            raise EventFileError(f"{name}: row {lineno}: column 'name' is empty")
        mult = None
        if len(r) == 4 and r[3] != "":
            try:
                mult = float(r[3])
            except ValueError:
                raise EventFileError(f"{name}: row {lineno}: column 'expected_multiplier': {r[3]!r} is not a number") from None
            if not np.isfinite(mult) or mult <= 0:
                raise EventFileError(f"{name}: row {lineno}: column 'expected_multiplier' = {r[3]} must be a positive number")
        events.append(Event(ts[0], ts[1], r[2], mult))
    return EventCalendar(events)
