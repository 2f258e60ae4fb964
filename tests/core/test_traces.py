import gzip

import numpy as np
import pandas as pd
import pytest

from mpc_balancer.traces import TraceError, TraceWarning, available, load_trace, parse_trace
from mpc_balancer.traffic import Traffic


@pytest.mark.parametrize("name,step,col", [("nasa", "1min", "requests"), ("nyc-taxi", "30min", "value"), ("elb", "5min", "value")])
def test_bundled_traces_load(name, step, col):
    t = load_trace(name)
    assert t.step == pd.Timedelta(step)
    assert t.series.name == col
    assert t.series.index.is_monotonic_increasing and (t.series >= 0).all()
    assert name in available()


def test_resample_coarser_sums_counts_and_finer_keeps_rate():
    t = load_trace("elb")
    coarse = t.resample("1h")
    full = t.resample("5min")
    # every complete hour bucket is the sum of its 5-minute counts
    h = coarse.index[3]
    assert coarse.iloc[3] == pytest.approx(full[h:h + pd.Timedelta("55min")].sum())
    fine = t.resample("1min")
    # finer steps hold the rate: five 1-min counts add up to about one 5-min count
    assert fine.sum() == pytest.approx(t.series.sum() / 5 * 5, rel=0.01)


def write(tmp_path, text, name="t.csv", gz=False):
    p = tmp_path / (name + (".gz" if gz else ""))
    data = text.encode()
    p.write_bytes(gzip.compress(data) if gz else data)
    return p


@pytest.mark.parametrize("text,needle", [
    ("", "empty file"),
    ("timestamp,value\n", "no data rows"),
    ("host,value\nweb1,1\n", "missing column 'timestamp'"),
    ("value\n5\n6\n", "missing column 'timestamp' (header is 'value'"),
    ("timestamp\n2020-01-01\n2020-01-02\n", "missing value column"),
    ("timestamp,value\n2020-01-01 00:00,1\nnot-a-date,2\n", "row 3: unparsable timestamp 'not-a-date'"),
    ("timestamp,value\n2020-01-01 00:00,1\n2020-01-01 00:01,abc\n", "row 3: column 'value' is not a number"),
    ("timestamp,value\n2020-01-01 00:00,1\n2020-01-01 00:01,NaN\n", "need at least 2 rows with a count, got 1"),
    ("timestamp,value\n2020-01-01 00:00,1\n2020-01-01 00:01,-4\n", "row 3: negative value -4"),
    ("timestamp,value\n2020-01-01 00:00,1\n2020-01-01 00:00,2\n", "rows 2 and 3 have the same timestamp 2020-01-01 00:00 "
     "and different counts"),
])
def test_bad_files_name_row_and_problem(tmp_path, text, needle):
    with pytest.raises(TraceError, match=needle.replace("(", r"\(").replace("'", "'")):
        load_trace(write(tmp_path, text))


def test_gzip_user_csv_and_corrupted_gzip(tmp_path):
    p = write(tmp_path, "timestamp,qps\n2020-01-01 00:00,3\n2020-01-01 00:01,4\n", gz=True)
    t = load_trace(p)
    assert t.series.tolist() == [3.0, 4.0]
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(TraceError, match="corrupted gzip"):
        load_trace(bad)


def test_unknown_name_and_directory(tmp_path):
    with pytest.raises(TraceError, match="unknown trace 'nope'"):
        load_trace("nope")
    with pytest.raises(TraceError, match="is a directory"):
        load_trace(tmp_path)


def test_missing_rows_are_handled_explicitly():
    t = parse_trace("timestamp,value\n2020-01-01 00:00,10\n2020-01-01 00:01,20\n2020-01-01 00:03,40\n2020-01-01 00:04,50\n")
    assert t.resample("1min", gaps="interpolate").tolist() == [10, 20, 30, 40, 50]
    assert t.resample("1min", gaps="zero").tolist() == [10, 20, 0, 40, 50]
    with pytest.raises(TraceError, match="1 missing rows, first at 2020-01-01 00:02"):
        t.resample("1min", gaps="error")


def test_nasa_outage_is_reported():
    out = load_trace("nasa").outages(min_minutes=600)
    assert len(out) == 1
    start, end = out[0]
    assert (end - start) > pd.Timedelta(hours=30)


def test_any_trace_step_works_with_any_control_period():
    from mpc_balancer.traffic import Traffic

    for name in ("nasa", "nyc-taxi", "elb"):
        for period in (30.0, 60.0, 300.0):
            tr = Traffic(load_trace(name), period_s=period)
            assert np.all(np.isfinite(tr.rate_qps)) and tr.rate_qps.min() >= 0
            assert np.percentile(tr.rate_qps, 99.5) == pytest.approx(tr.peak_qps)


def test_one_outlier_row_is_an_error_and_never_wipes_out_the_trace():
    """A single 1e300 row zeroed 3,300-3,800 of 4,320 ticks through a running cumulative sum and the
    run exited 0 with revenue 0; now the smoothing keeps every other tick and the row is named."""
    import numpy as np
    import pandas as pd
    import pytest

    from mpc_balancer.traces import TraceError, parse_trace
    from mpc_balancer.traffic import Traffic, _level_matched_smooth

    idx = pd.date_range("2021-01-01", periods=3 * 288, freq="5min")
    vals = 100 + 50 * np.sin(np.arange(len(idx)) / 288 * 2 * np.pi)
    clean = Traffic(parse_trace("timestamp,value\n" + "\n".join(f"{t},{float(v)!r}" for t, v in zip(idx, vals)), name="c"))
    vals[400] = 1e300
    text = "timestamp,value\n" + "\n".join(f"{t},{float(v)!r}" for t, v in zip(idx, vals))
    with pytest.raises(TraceError, match=r"trace 'o': the rate near 2021-01-02 09:.* an outlier row"):
        Traffic(parse_trace(text, name="o"))
    # the smoothing itself: windows without the outlier are exact, as on the clean series
    smooth, _ = _level_matched_smooth(pd.Series(vals, index=idx), pd.Timedelta("5min"), 0.03)
    ref, _ = _level_matched_smooth(pd.Series(np.where(np.arange(len(vals)) == 400, 100.0, vals), index=idx),
                                   pd.Timedelta("5min"), 0.03)
    far = np.abs(np.arange(len(vals)) - 400) > 12
    np.testing.assert_allclose(smooth.to_numpy()[far], ref.to_numpy()[far], rtol=1e-12)
    assert clean.rate_qps.min() > 0


def _csv(times, values) -> str:
    return "timestamp,count\n" + "\n".join(f"{t.isoformat()},{v}" for t, v in zip(times, values))


def test_jittered_timestamps_are_read_on_the_grid_not_interpolated_over():
    """A logger's 1-49 ms of jitter: every row is read at its nearest grid point. Before, only rows
    landing exactly on the grid were read and the rest interpolated over (the bursts were gone)."""
    rng = np.random.default_rng(0)
    t = pd.date_range("2026-01-01", periods=3 * 1440, freq="min")
    v = rng.poisson(400, len(t)) * np.where(rng.random(len(t)) < 0.02, 6, 1)  # minute-scale bursts
    exact = parse_trace(_csv(t, v))
    jittered = parse_trace(_csv(t + pd.to_timedelta(rng.integers(1, 50, len(t)), unit="ms"), v))
    assert jittered.step == exact.step == pd.Timedelta(minutes=1)
    shift = jittered.series.index[0] - t[0]  # the logger's phase: its median offset, 1-49 ms
    assert pd.Timedelta(milliseconds=1) <= shift <= pd.Timedelta(milliseconds=49)
    assert jittered.series.index.equals(t + shift)
    np.testing.assert_array_equal(jittered.series.to_numpy(), exact.series.to_numpy())
    np.testing.assert_array_equal(Traffic(jittered).rate_qps, Traffic(exact).rate_qps)
    wide = parse_trace(_csv(t + pd.to_timedelta(rng.uniform(-25, 25, len(t)), unit="s"), v))  # up to 25 s either way
    shift = wide.series.index[0] - t[0]  # the grid's phase, estimated from the rows: within a second or two
    assert abs(shift) <= pd.Timedelta(seconds=2) and wide.series.index.equals(t + shift)
    np.testing.assert_array_equal(wide.series.to_numpy(), v)


def test_irregular_or_coarsening_timestamps_are_named_not_flattened():
    rng = np.random.default_rng(1)
    random = pd.to_datetime(np.sort(rng.choice(10 ** 6, 500, replace=False)) * 10 ** 9)
    with pytest.raises(TraceError, match="fall on the same step .* too irregular"):
        parse_trace(_csv(random, np.ones(500)))
    coarse = pd.date_range("2026-01-01", periods=300, freq="5min")  # older data rolled up to 5 minutes (25 h)
    fine = pd.date_range(coarse[-1] + pd.Timedelta(minutes=5), periods=1500, freq="min")
    with pytest.raises(TraceError, match=r"rows 2\.\.302 .* are 5 steps of 0 days 00:01:00 apart"):
        parse_trace(_csv(coarse.append(fine), np.ones(1800)))
    t = pd.date_range("2026-01-01", periods=4 * 1440, freq="min")
    night = ((t.hour < 6) & (t.minute % 2 == 1)) & (t.day == 2)  # a sparse night: every other minute left out
    long_gap = (t >= "2026-01-03") & (t < "2026-01-04 06:00")  # an outage of 30 h without rows
    for drop, said in ((night, "no row has a count of 0"), (long_gap, "the longest 30 h")):
        # gaps, not a coarser resolution: read, the gaps interpolated and named
        with pytest.warns(TraceWarning, match=said):
            assert parse_trace(_csv(t[~drop], np.ones((~drop).sum()))).step == pd.Timedelta(minutes=1)


def test_a_short_trace_and_an_idle_one():
    """Fewer rows than the smoothing window (at most an hour) smooth over what there is; a trace idle
    on almost every tick has no busy level to scale to peak_qps: named, not scaled by 1e12."""
    t = pd.date_range("2026-01-01", periods=45, freq="min")
    tr = Traffic(parse_trace(_csv(t, np.full(45, 3))))
    np.testing.assert_allclose(tr.rate_qps, tr.peak_qps)  # constant counts stay constant
    t = pd.date_range("2026-01-01", periods=4 * 1440, freq="min")
    burst = np.where((t >= "2026-01-03 12:00") & (t < "2026-01-03 12:20"), 500, 0)
    with pytest.raises(TraceError, match=r"has traffic on 0\.35% of its ticks"):
        Traffic(parse_trace(_csv(t, burst)), mode="raw")


@pytest.mark.parametrize("start", ["2026-01-02T00:00:00Z", "2026-01-02T02:00:00+02:00", "2026-01-02 00:00:00"])
def test_start_may_carry_a_time_zone(start):
    t = pd.date_range("2026-01-01", periods=3 * 1440, freq="min")
    tr = Traffic(parse_trace(_csv(t, np.full(len(t), 100) + np.arange(len(t)) % 7)))
    hist, sim = tr.window(days=0.5, start=start)
    assert tr.times[sim.start] == pd.Timestamp("2026-01-02") and sim.stop - sim.start == 720
    with pytest.raises(ValueError, match="--start '' is not a timestamp"):
        tr.window(days=0.5, start="")


def test_a_trace_mostly_made_of_gaps_is_named():
    """Day-first dates read month-first spread four days over four months: 96% of the steps would
    have been interpolated without a word."""
    days = [pd.date_range(f"2026-01-0{d}", periods=1440, freq="min") for d in (1, 2, 3, 4)]  # 1-4 January
    text = "timestamp,value\n" + "\n".join(f"{t.strftime('%d/%m/%Y %H:%M')},5" for d in days for t in d)
    with pytest.raises(TraceError, match=r"96% of the steps .* rows 1441-1442\); they would be interpolated"):
        parse_trace(text)
    assert parse_trace(_csv(days[0].append(days[1][:1]), np.ones(1441))).step == pd.Timedelta(minutes=1)  # 1 gap in 2


@pytest.mark.parametrize("step_s,jitter_s", [(1.5, 0.0), (2.5, 0.0), (7.5, 0.001), (420.0, 0.0), (59.9, 0.0), (1.0, 0.0)])
def test_any_regular_step_is_kept_and_a_late_row_finds_its_point(step_s, jitter_s):
    """A step that is not whole seconds, or a logger drifting to 59.9 s, keeps its own step (rounding
    the spacing to whole seconds read 2.5 s as 2 s, +25% traffic); a 1 s grid at half a second
    keeps its phase; one row 35% of a step late takes the free point before the next row's."""
    rng = np.random.default_rng(2)
    n = 2000
    t = pd.Timestamp("2024-05-01 12:00:00.5") + pd.to_timedelta(np.arange(n) * step_s + rng.uniform(-jitter_s, jitter_s, n), unit="s")
    tr = parse_trace(_csv(t, np.arange(n) % 9 + 1))
    assert tr.step == pd.Timedelta(seconds=step_s) and len(tr.series) == n
    assert abs(tr.series.index[0] - pd.Timestamp("2024-05-01 12:00:00.5")) <= pd.Timedelta(milliseconds=1)
    assert tr.series.asfreq(tr.step).notna().all()  # nothing to interpolate
    late = t.to_series().reset_index(drop=True)
    late[200] += pd.Timedelta(seconds=0.85 * step_s)
    assert parse_trace(_csv(pd.DatetimeIndex(late), np.arange(n) % 9 + 1)).series.index.equals(tr.series.index)


def test_timestamps_outside_the_balancers_range_are_named():
    """The Balancer holds telemetry times outside [1970, 2100) (a mistyped year): a trace there would
    have every simulated tick held."""
    t = pd.date_range("1969-12-31 23:00", periods=120, freq="min")
    with pytest.raises(TraceError, match=r"row 2: timestamp 1969-12-31T23:00:00 is outside \[1970-01-01, 2100-01-01\)"):
        parse_trace(_csv(t, np.ones(120)))
    assert parse_trace(_csv(t[60:], np.ones(60))).start == pd.Timestamp("1970-01-01")
