"""Request and response bodies of the service (pydantic), validated at the edge.

Field-level rules live here (types, finite, non-negative, sizes); rules that depend on the
configuration (cluster names, ``max_load``, ``lam_max``, ``max_qps``, the policy's feature width)
are checked by :func:`check_tick` with the same 422 error shape, each naming its field. Nothing
that fails either ever reaches the controller.

The request models are strict: a number must be a JSON number (``"qps": "12.5"`` and
``"qps": true`` are refused, where pydantic's default lax mode took them as 12.5 and 1.0; a JSON
integer is a number, so ``"qps": 12`` is 12.0), a string a JSON string, an object an object. Times
are ISO-8601 strings (``"1995-08-28T13:32:00"``, with ``Z`` or an offset, or a date alone for its
midnight); a number of seconds since the epoch, or a string of one, is refused rather than read
as seconds or, past 2e10, as milliseconds (pydantic's guess). FastAPI validates the decoded JSON
in Python mode, where strict validation would refuse every string for a ``datetime``: the time
fields are therefore validated laxly after :func:`_iso_8601` has let only strings through.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo

from ..telemetry import TIME_MAX, TIME_MIN

Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _iso_8601(value, info: ValidationInfo):
    """Let only ISO-8601 text (or a ``datetime``, from Python callers) through to the datetime
    parser: a JSON number, or a string holding one, is a ``ValueError`` naming the field and the value."""
    if isinstance(value, datetime):
        return value
    why = ""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        why = ": a count of seconds since the epoch is not read as a time"
    raise ValueError(f"{info.field_name} must be an ISO-8601 string such as \"1995-08-28T13:32:00Z\", got {json_value(value)}{why}")


#: A time in a request body: ISO-8601 text only (see the module doc), naive = UTC.
IsoTime = Annotated[datetime, BeforeValidator(_iso_8601), Field(strict=False)]


def json_value(value, limit: int = 80) -> str:
    """``value`` as it was written in the JSON body, for an error message: ``the string "12.5"``,
    ``true``, ``null``, ``1e+300``; strings longer than ``limit`` characters are cut, containers
    are named by their kind and size only."""
    if isinstance(value, str):
        text = json.dumps(value if len(value) <= limit else value[:limit] + "...")
        return f"the string {text}"
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    if isinstance(value, (list, dict)):
        return f"an {'array' if isinstance(value, list) else 'object'} of {len(value)} items"
    return repr(value)[:limit]


class TickIn(BaseModel):
    """One whole tick's telemetry (``POST /v1/step``), about the tick that just ended."""

    model_config = ConfigDict(extra="forbid", strict=True)

    time: IsoTime = Field(description="end of the tick, ISO-8601; a timezone-aware time is converted to UTC")
    qps: NonNegative = Field(description="requests per second over the tick")
    load: dict[str, NonNegative] = Field(description="cluster -> measured load (fraction of capacity)")
    lam: dict[str, NonNegative] = Field(description="cluster -> lambda in force during the tick")
    features: list[list[Finite]] | None = Field(default=None, description="a sample of the tick's requests "
                                                "(rows of the policy's features), or null: telemetry-only")
    over: dict[str, NonNegative] | None = Field(default=None, description="cluster -> over-utilisation the nodes "
                                                "saw during the tick: the mean of max(load - C_m, 0) / C_m over "
                                                "their own load readings (the MPC's back-off calibrates on it), "
                                                "or null: the back-off scores the tick's mean load")


class ReportIn(TickIn):
    """One node's report for one tick (``POST /v1/telemetry``)."""

    node: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@/-]+$")


class OverrideIn(BaseModel):
    """An operator's pin of lambda (``PUT /v1/override``): the given clusters' lambda until ``until``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    lam: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(min_length=1)
    until: IsoTime = Field(description="wall-clock end of the override, ISO-8601 (naive = UTC)")
    by: str = Field(min_length=1, max_length=128, description="who sets it (recorded in the audit log)")
    reason: str = Field(default="", max_length=1000)


class PlanOut(BaseModel):
    """The controller's plan in a decision: lambdas and loads per horizon step."""

    lam: list[list[float]]
    load: list[list[float]] | None = None


class DecisionOut(BaseModel):
    """``GET /v1/decision``: the lambda to apply until ``valid_until``; past it, ``safe_lam``."""

    version: int
    time: str | None = Field(description="end of the telemetry tick this decision follows (null before any)")
    lam: dict[str, float]
    status: str = Field(description="ok | fallback | hold | override")
    reason: str
    controller: str
    issued_at: str
    valid_until: str
    safe_lam: dict[str, float]
    plan: PlanOut | None = None
    reports: int = Field(0, description="node reports aggregated into the tick")


def to_naive_utc(t: datetime) -> datetime:
    """Telemetry times are timezone-naive (as the history's): aware times are converted to UTC.
    ``OverflowError`` when the conversion leaves the calendar (year 1 or 9999 with an offset)."""
    return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo is not None else t


def check_time(t: datetime) -> tuple[datetime | None, list[dict]]:
    """The tick's time as naive UTC, or the 422 error naming ``time``: it must lie in
    ``[1970, 2100)`` (a mistyped year is refused here, before it can close ticks or reach a checkpoint)."""
    try:
        naive = to_naive_utc(t)
    except OverflowError:
        naive = None
    if naive is None or not TIME_MIN <= naive < TIME_MAX:
        return None, [_err(("time",), f"time {t.isoformat()} is outside [{TIME_MIN.date()}, {TIME_MAX.date()}) (UTC)",
                           t.isoformat())]
    return naive, []


def _err(loc: tuple, msg: str, value) -> dict:
    return {"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": value}


def check_tick(tick: TickIn, clusters: tuple, *, max_load: float, lam_max: float, max_qps: float,
               n_features: int | None, max_rows: int) -> list[dict]:
    """Errors (FastAPI's 422 shape, one per bad field) of the configuration-dependent rules."""
    errors = []
    if tick.qps > max_qps:
        errors.append(_err(("qps",), f"qps {tick.qps!r} is above max_qps {max_qps:g}", tick.qps))
    per_cluster = [("load", tick.load, max_load), ("lam", tick.lam, lam_max)]
    if tick.over is not None:  # its range depends on each cluster's C_m: the Balancer checks it
        per_cluster.append(("over", tick.over, float("inf")))
    for name, values, top in per_cluster:
        for c in values:
            if c not in clusters:
                errors.append(_err((name, c), f"unknown cluster {c!r}; the clusters are {list(clusters)}", c))
            elif values[c] > top:
                errors.append(_err((name, c), f"{name}[{c}] = {values[c]!r} is above {top:g}", values[c]))
        for c in clusters:
            if c not in values:
                errors.append(_err((name, c), f"missing cluster {c!r} (need one value per cluster {list(clusters)})", None))
    x = tick.features
    if x is not None:
        if n_features is None:
            errors.append(_err(("features",), "this service runs telemetry-only (no policy): send features null", None))
        elif not x:
            errors.append(_err(("features",), "features must have at least one row, or be null", x))
        elif len(x) > max_rows:
            errors.append(_err(("features",), f"{len(x)} rows, more than max_report_rows {max_rows}", len(x)))
        else:
            bad = next((i for i, row in enumerate(x) if len(row) != n_features), None)
            if bad is not None:
                errors.append(_err(("features", bad), f"row {bad} has {len(x[bad])} values; the policy reads "
                                   f"{n_features} features per request", len(x[bad])))
    return errors


#: Bytes one feature value can take in a report body: the longest float64 JSON text (24
#: characters, e.g. ``-2.2250738585072014e-308``), its ", " separator and, pretty-printed
#: (``indent=2``), its line break and indentation.
JSON_VALUE_BYTES = 32


def largest_body_bytes(max_rows: int, n_features: int, clusters: tuple) -> int:
    """An upper bound on the size of the largest legitimate request body, for ``max_body_bytes``.

    Parameters
    ----------
    max_rows : int
        ``[service] max_report_rows``: the most feature rows a report may carry.
    n_features : int
        Values per feature row (the policy's features; 0 for a telemetry-only service, which
        refuses features: its reports carry none).
    clusters : tuple of str
        The cluster names: every report carries ``load``, ``lam`` and ``over`` per cluster.

    Returns
    -------
    int
        The larger of the biggest node report (``max_rows`` rows of ``n_features`` values of
        :data:`JSON_VALUE_BYTES` each, the per-cluster maps, a 128-character node name, the time,
        pretty-printed) and the biggest override (a 1000-character reason and a 128-character
        ``by``, every character a 12-byte escaped surrogate pair). With the defaults (4096 rows,
        the shipped bundle's 5 features, 3 clusters) this is 0.72 MB; the largest such body
        ``json.dumps`` writes with ``indent=2`` is 0.60 MB.
    """
    per_cluster = sum(3 * (len(json.dumps(c)) + 2 * JSON_VALUE_BYTES) for c in clusters)
    rows = max_rows if n_features else 0  # a telemetry-only service refuses features whatever their size
    report = 1024 + per_cluster + rows * (n_features * JSON_VALUE_BYTES + 16)
    override = 1024 + per_cluster + 12 * (1000 + 128)
    return max(report, override)
