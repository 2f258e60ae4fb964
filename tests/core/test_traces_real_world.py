"""Real-world trace files the loader met on a hostile pass: exports that are legitimate but not the
``timestamp,value`` of the bundled traces, and outages and gaps that were filled with made-up
traffic without a word. Each test failed before its fix."""
import warnings

import numpy as np
import pandas as pd
import pytest

from mpc_balancer.traces import TraceError, TraceWarning, load_trace, parse_trace
from mpc_balancer.traffic import Traffic

T = pd.date_range("2026-01-01", periods=3 * 1440, freq="min")
V = (400 + 300 * np.sin(np.arange(len(T)) / 1440 * 2 * np.pi)).round().astype(int)


def _rows(times=T, values=V, fmt=str):
    return [f"{fmt(t)},{v}" for t, v in zip(times, values)]


def _text(rows, header="timestamp,value"):
    return "\n".join(([header] if header is not None else []) + list(rows)) + "\n"


def _parse_quiet(text, name="t.csv"):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no TraceWarning either
        return parse_trace(text, name=name)


def _same(tr, times=T, values=V):
    assert tr.step == pd.Timedelta(minutes=1)
    assert tr.series.index.equals(pd.DatetimeIndex(times))
    np.testing.assert_array_equal(tr.series.to_numpy(), np.asarray(values, dtype=float))


def test_unsorted_rows_are_read_in_time_order_with_a_warning():
    """A database export without ORDER BY was 'row 4: timestamp ... is not after the previous row's'."""
    order = np.random.default_rng(0).permutation(len(T))
    with pytest.warns(TraceWarning, match=r"\d+ row\(s\) out of time order \(the first: row \d+, .*\): read sorted by time"):
        tr = parse_trace(_text(np.array(_rows())[order]))
    _same(tr)


def test_a_row_written_twice_is_dropped_and_two_counts_at_one_time_are_named():
    """Overlapping exports repeat rows: the repeats were 'not strictly increasing' errors. Two different
    counts at one time (naive local time when daylight saving ends) stay an error, naming both rows."""
    rows = _rows()
    text = _text(rows[:100] + rows[90:])  # two exports overlapping by ten rows
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _same(parse_trace(text))
    assert [str(w.message) for w in caught] == [
        f"<csv>: 1 row(s) out of time order (the first: row 102, {T[90]}, after row 101, {T[99]}): read sorted by time",
        f"<csv>: 10 row(s) repeat the timestamp of the row before with the same count or none (first: row 102, {T[90]}, "
        "as row 92): dropped"]
    bad = _text(rows[:100] + [f"{T[99]},{V[99] + 7}"] + rows[100:])
    with pytest.raises(TraceError, match=rf"rows 101 and 102 have the same timestamp {T[99]} and different counts "
                                         rf"\({V[99]}, {V[99] + 7}\).*daylight saving"):
        parse_trace(bad)
    local = pd.date_range("2025-11-01", periods=2 * 1440, freq="min", tz="UTC").tz_convert("America/New_York")
    with pytest.raises(TraceError, match="same timestamp 2025-11-02 01:00:00 and different counts"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        parse_trace(_text(_rows(local.tz_localize(None), np.arange(len(local)) % 50 + 1)))


def test_empty_and_nan_cells_are_missing_steps_not_an_error():
    """An exporter writes a missing measurement as an empty cell, NaN or null: the whole file was
    refused ('column 'value' is not a number ('')')."""
    rows = _rows()
    rows[500], rows[501], rows[3000] = f"{T[500]},", f"{T[501]},NaN", f"{T[3000]},null"
    with pytest.warns(TraceWarning, match=r"3 row\(s\) have no count in column 'value' \(first: row 502, .*''\): read "
                                          "as missing steps"):
        tr = parse_trace(_text(rows))
    assert len(tr) == len(T) - 3 and T[500] not in tr.series.index
    filled = tr.resample("1min")
    assert filled[T[500]] == pytest.approx((V[499] * 2 + V[502]) / 3)  # linear, like a missing row
    with pytest.raises(TraceError, match=r"row 3: column 'value' is not a number \('1,009'\) \(a thousands separator"):
        parse_trace('timestamp,value\n2026-01-01 00:00,5\n2026-01-01 00:01,"1,009"\n')
    with pytest.raises(TraceError, match=r"row 3: 3 cells, the header has 2 \(an unquoted separator in a number"):
        parse_trace("timestamp,value\n2026-01-01 00:00,5\n2026-01-01 00:01,1,009\n")


@pytest.mark.parametrize("header,fmt_row", [
    (None, "{t},{v}"),  # no header
    ("time,count", "{t},{v}"),
    ("ds,y", "{t},{v}"),  # Prophet's
    ("Timestamp ,Requests", "{t},{v}"),
    (",timestamp,value", "{i},{t},{v}"),  # pandas' to_csv with its index
    ("requests,datetime", "{v},{t}"),  # the time column second
    ("timestamp;value", "{t};{v}"),  # a semicolon-separated export
    ("timestamp\tvalue", "{t}\t{v}"),
    ("timestamp,value,", "{t},{v},"),  # a trailing separator on every line
])
def test_other_headers_and_separators_are_read(header, fmt_row):
    """All but the plain 'timestamp,<value>' were 'missing column 'timestamp'' errors or read the wrong column."""
    rows = [fmt_row.format(i=i, t=t, v=v) for i, (t, v) in enumerate(zip(T, V))]
    _same(_parse_quiet(_text(rows, header)))


def test_a_column_that_is_not_a_time_is_still_named():
    with pytest.raises(TraceError, match=r"missing column 'timestamp' \(header is 'host,value'; its first column holds "
                                         r"'web1', not a time\)"):
        parse_trace("host,value\nweb1,5\nweb1,6\n")
    with pytest.raises(TraceError, match=r"row 2: the number 0 in column 'n', read as a Unix time in s, is 1970-01-01 "
                                         r"00:00:00, before 1990: is 'n' a time column"):
        parse_trace("n,value\n0,5\n1,6\n2,7\n")


@pytest.mark.parametrize("fmt", [
    lambda t: str(int(t.timestamp())),  # Unix seconds
    lambda t: str(int(t.timestamp() * 1000)),  # milliseconds (JavaScript, Prometheus exports)
    lambda t: str(t.value),  # nanoseconds
    lambda t: f"{t.timestamp():.1f}",
    lambda t: t.strftime("%Y%m%d%H%M"),  # a compact date
])
def test_unix_times_and_compact_dates(fmt):
    """Unix times were 'row 2: unparsable timestamp '1767225600''."""
    _same(_parse_quiet(_text(_rows(fmt=fmt))))


@pytest.mark.parametrize("suffix,shift_h", [("+05", -5), ("+0530", -5.5), (" UTC", 0), ("Z", 0)])
def test_offsets_in_other_spellings_are_converted_to_utc(suffix, shift_h):
    tr = _parse_quiet(_text(_rows(fmt=lambda t: t.strftime("%Y-%m-%dT%H:%M:%S") + suffix)))
    _same(tr, T + pd.Timedelta(hours=shift_h))
    with pytest.raises(TraceError, match="row 3: time-zone offset -04 differs from row 2's -05"):
        parse_trace("timestamp,value\n2026-03-08T00:00:00-05,1\n2026-03-08T04:00:00-04,2\n")


def test_now_is_no_timestamp_and_an_empty_last_row_is_no_row():
    with pytest.raises(TraceError, match="row 3: unparsable timestamp 'now'"):
        parse_trace("timestamp,value\n2026-01-01 00:00,1\nnow,2\n")
    _same(_parse_quiet(_text(_rows()) + ",\n\n"))  # a spreadsheet's trailing empty row


def test_a_long_gap_is_named_with_its_rows_and_share_of_made_up_traffic():
    """A 47-hour hole was interpolated into a straight line and simulated without a word."""
    keep = (T < T[1440]) | (T >= T[1440] + pd.Timedelta(hours=6))
    with pytest.warns(TraceWarning, match=r"360 step\(s\) of 60 s have no count \(8\.3% of the trace\), filled by linear "
                                          r"interpolation: made-up traffic \(\d+\.\d% of the requests\).*1 gap\(s\) of "
                                          r"30 min or more, the longest 6 h between rows 1441 and 1442 \(2026-01-01 "
                                          r"23:59:00 \.\. 2026-01-02 06:00:00\)"):
        parse_trace(_text(_rows(T[keep], V[keep])))
    short = (T != T[100]) & (T != T[2000])  # a missing row here and there (the bundled elb has 8): not worth a word
    _parse_quiet(_text(_rows(T[short], V[short])))


def test_steps_without_requests_left_out_are_named():
    """Counts grouped from log lines have no row for a minute without a request: interpolating over
    the quiet night made up a third of the requests."""
    rng = np.random.default_rng(3)
    lam = 3 * (0.05 + 0.95 * np.sin(np.pi * (np.arange(len(T)) % 1440) / 1440) ** 4)
    c = rng.poisson(lam)
    with pytest.warns(TraceWarning, match="no row has a count of 0 and the gaps lie between small counts: were the steps "
                                          "without a request left out"):
        parse_trace(_text(_rows(T[c > 0], c[c > 0])))


def test_bundled_traces_read_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("nasa", "elb", "nyc-taxi"):
            load_trace(name)


def _outage_trace(level, start, minutes, step="1min", days=3):
    t = pd.date_range("2026-01-01", periods=int(days * pd.Timedelta("1D") / pd.Timedelta(step)), freq=step)
    v = np.full(len(t), float(level))
    v[(t >= start) & (t < pd.Timestamp(start) + pd.Timedelta(minutes=minutes))] = 0.0
    v[: len(t) // 3] *= 1.5  # a busier first day: the peak the traffic is scaled to
    return _parse_quiet(_text([f"{a},{b:g}" for a, b in zip(t, v)]))


@pytest.mark.parametrize("level", [20, 200, 5000])
def test_an_outage_stays_zero_and_the_traffic_around_it_is_not_halved(level):
    """A 20-minute outage at 20 requests a minute: the smoothing box (up to an hour wide at low counts)
    spilled over it, so its minutes carried up to half the traffic and the minutes before it half theirs."""
    start = pd.Timestamp("2026-01-02 12:00")
    tr = Traffic(_outage_trace(level, start, 20), period_s=60)
    r = pd.Series(tr.rate_qps, index=tr.times)
    inside = r[start:start + pd.Timedelta(minutes=19)]
    assert len(inside) == 20 and (inside == 0).all()
    around = pd.concat([r[start - pd.Timedelta(minutes=40):start - pd.Timedelta(minutes=1)],
                        r[start + pd.Timedelta(minutes=20):start + pd.Timedelta(minutes=59)]])
    np.testing.assert_allclose(around.to_numpy(), r[pd.Timestamp("2026-01-02 20:00")], rtol=1e-12)  # flat, as the counts


@pytest.mark.parametrize("step,minutes", [("5min", 30), ("1h", 120)])
def test_an_outage_in_a_coarse_trace_has_no_ticks_ramping_into_it(step, minutes):
    """5-minute or hourly counts at a 60 s period: the ticks of the outage's last step ramped towards
    the next step's count (made-up traffic before the service was back)."""
    start = pd.Timestamp("2026-01-02 12:00")
    tr = Traffic(_outage_trace(2000, start, minutes, step=step), period_s=60)
    r = pd.Series(tr.rate_qps, index=tr.times)
    assert (r[start:start + pd.Timedelta(minutes=minutes - 1)] == 0).all()
    assert r[start + pd.Timedelta(minutes=minutes)] > 0


def test_quiet_zero_minutes_are_noise_and_still_smoothed():
    """A zero now and then at a few requests a minute is sampling noise, not an outage: averaged out as before."""
    rng = np.random.default_rng(4)
    c = rng.poisson(2.0, len(T))
    tr = Traffic(_parse_quiet(_text(_rows(T, c))), period_s=60)
    assert (c == 0).sum() > 300 and (tr.rate_qps > 0).all()


def test_the_bundled_nasa_outage_stays_zero():
    """NASA's server was down 1995-08-28 05:53-06:00, in the default one-day window: the smoothing
    filled those eight minutes with 4,500-6,200 QPS and halved the traffic around them."""
    tr = Traffic(load_trace("nasa"), period_s=60)
    r = pd.Series(tr.rate_qps, index=tr.times)
    assert (r["1995-08-28 05:53":"1995-08-28 06:00"] == 0).all()
    assert r["1995-08-28 05:40":"1995-08-28 05:52"].min() > 8000 and r["1995-08-28 06:01":"1995-08-28 06:10"].min() > 11000


def test_counts_too_large_to_sum_are_named_not_a_numpy_error():
    """Counts of 1e307 overflowed the level's running sums: 'negative dimensions are not allowed'."""
    v = 1e307 * (1 + 0.5 * np.sin(np.arange(len(T)) / 1440 * 2 * np.pi))
    with pytest.raises(TraceError, match=r"trace 't.csv': the rate near 2026-01-01 06:00:00 is 1.5e\+307 requests a "
                                         r"step, more than 1e\+250 \(its sums overflow\)"):
        Traffic(_parse_quiet(_text([f"{a},{b!r}" for a, b in zip(T, v.tolist())])))
    big = _parse_quiet(_text(_rows(T, V * 1e9)))  # 1e11 requests a minute: read and scaled as any other
    assert np.isfinite(Traffic(big).rate_qps).all()
