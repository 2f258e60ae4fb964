"""Announced events: CSV loading with row-level errors, and regressors that move the forecast."""
import numpy as np
import pandas as pd
import pytest

from forecasting import Event, EventCalendar, EventFileError, HybridForecaster, SarimaForecaster, load_events, parse_events


def test_load_events_csv(tmp_path):
    p = tmp_path / "ev.csv"
    p.write_text("start,end,name,expected_multiplier\n2024-01-10 10:00,2024-01-10 16:00,promo,2\n"
                 "2024-01-17 10:00,2024-01-17 16:00,promo2,\n")
    cal = load_events(p)
    assert len(cal) == 2 and cal.events[0].expected_multiplier == 2.0 and cal.events[1].expected_multiplier is None


@pytest.mark.parametrize("text, msg", [
    ("", "empty file"),
    ("begin,end,name\n", "row 1: header"),
    ("start,end,name\n2024-01-01,2024-01-02\n", "row 2: expected 3 fields"),
    ("start,end,name\n2024-01-01,2024-01-02,a\nnot-a-date,2024-01-02,b\n", "row 3: column 'start': unparsable"),
    ("start,end,name\n2024-01-02,2024-01-01,a\n", "row 2: end 2024-01-01 is not after start"),
    ("start,end,name,expected_multiplier\n2024-01-01,2024-01-02,a,-1\n", "row 2: column 'expected_multiplier' = -1"),
    ("start,end,name,expected_multiplier\n2024-01-01,2024-01-02,a,lots\n", "row 2: column 'expected_multiplier': 'lots'"),
    ("start,end,name\n2024-01-01,2024-01-02,\n", "row 2: column 'name' is empty"),
])
def test_event_file_errors_name_row_and_problem(text, msg):
    with pytest.raises(EventFileError, match=msg):
        parse_events(text, name="ev.csv")


def test_missing_events_file(tmp_path):
    with pytest.raises(EventFileError, match="does not exist"):
        load_events(tmp_path / "nope.csv")


def _promos(start):
    """Irregular 6-hour promotions (not a weekly pattern the Fourier terms could absorb)."""
    t0 = pd.Timestamp(start)
    return [Event(t0 + pd.Timedelta(days=d, hours=hr), t0 + pd.Timedelta(days=d, hours=hr + 6), f"promo{i}")
            for i, (d, hr) in enumerate([(2, 10), (8, 14), (16, 6), (23, 12), (26, 9)])]


def _with_lift(y, events, mult=2.0):
    in_event = np.zeros(len(y), bool)
    for e in events:
        in_event |= (y.index >= e.start) & (y.index < e.end)
    return y.where(~in_event, y * mult)


def test_past_events_teach_the_lift_of_the_next_announced_one(make_traffic):
    events = _promos("2024-01-01")  # 4 in the history, the 5th announced for day 26
    y = _with_lift(make_traffic(days=28, seed=4, start="2024-01-01"), events)
    hist = y.iloc[: 24 * 25]
    h = 48
    with_ev = SarimaForecaster(events=events).fit(hist).predict(h)["mean"]
    without = SarimaForecaster().fit(hist).predict(h)["mean"]
    fut = pd.date_range(hist.index[-1] + pd.Timedelta("1h"), periods=h, freq="1h")
    mask = (fut >= events[-1].start) & (fut < events[-1].end)
    assert mask.sum() == 6
    ratio = (with_ev[mask] + 1) / (without[mask] + 1)
    assert np.all(ratio > 1.6) and np.all(ratio < 2.5)
    np.testing.assert_allclose(with_ev[~mask], without[~mask], rtol=0.15)


def test_announced_multiplier_applies_without_past_events(make_traffic):
    y = make_traffic(days=21, seed=5)
    t0 = y.index[-1] + pd.Timedelta("3h")
    cal = EventCalendar([Event(t0, t0 + pd.Timedelta("2h"), "launch", 3.0)])
    a = SarimaForecaster(events=cal).fit(y).predict(6)["mean"]
    b = SarimaForecaster().fit(y).predict(6)["mean"]
    np.testing.assert_allclose((a[2:4] + 1) / (b[2:4] + 1), 3.0, rtol=1e-9)  # x3 on the log1p scale
    np.testing.assert_allclose(a[[0, 1, 4, 5]], b[[0, 1, 4, 5]])


def test_hybrid_uses_events(make_traffic):
    events = _promos("2024-01-01")
    y = _with_lift(make_traffic(days=28, seed=6, start="2024-01-01"), events)
    hist = y.iloc[: 24 * 26 + 8]  # last point day 26 07:00; the promo starts at 09:00
    m = HybridForecaster(horizon=12, hidden=8, epochs=5, lags=6, events=events).fit(hist)
    f = m.predict(12)
    fut = pd.date_range(hist.index[-1] + pd.Timedelta("1h"), periods=12, freq="1h")
    mask = (fut >= events[-1].start) & (fut < events[-1].end)
    assert mask.sum() == 6
    base = SarimaForecaster().fit(hist).predict(12)["mean"]
    assert np.mean(f["mean"][mask] / base[mask]) > 1.6


def test_calendar_multiplier_is_the_product_of_the_active_events():
    ev = [Event(pd.Timestamp("2024-01-01 10:00"), pd.Timestamp("2024-01-01 12:00"), "a", 2.0),
          Event(pd.Timestamp("2024-01-01 11:00"), pd.Timestamp("2024-01-01 13:00"), "b", 1.5),
          Event(pd.Timestamp("2024-01-01 09:00"), pd.Timestamp("2024-01-01 14:00"), "c")]  # no multiplier
    cal = EventCalendar(ev)
    times = pd.date_range("2024-01-01 08:00", "2024-01-01 15:00", freq="30min")
    expect = [np.prod([e.expected_multiplier for e in ev if e.expected_multiplier and e.start <= t < e.end] or [1.0])
              for t in times]  # start inclusive, end exclusive
    np.testing.assert_array_equal(cal.multiplier(times.asi8), expect)
    assert np.array_equal(EventCalendar().multiplier(times.asi8), np.ones(len(times)))


def test_calendar_counts_the_events_overlapping_a_span():
    cal = EventCalendar([Event(pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-03"), "a"),
                         Event(pd.Timestamp("2024-02-01"), pd.Timestamp("2024-02-02"), "b")])
    assert cal.overlapping("2024-01-01", "2024-03-01") == 2
    assert cal.overlapping("2024-01-02 12:00", "2024-01-10") == 1
    assert cal.overlapping("2024-01-03", "2024-02-01") == 0  # [start, end): touching ends do not overlap
    assert cal.overlapping(pd.Timestamp("2023-01-01", tz="UTC"), "2023-12-31") == 0
