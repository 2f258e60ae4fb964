import gzip

import numpy as np
import pandas as pd
import pytest

from mpc_balancer.traces import TraceError, available, load_trace, parse_trace


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
    ("time,value\n2020-01-01,1\n", "missing column 'timestamp'"),
    ("timestamp\n2020-01-01\n2020-01-02\n", "missing value column"),
    ("timestamp,value\n2020-01-01 00:00,1\nnot-a-date,2\n", "row 3: unparsable timestamp 'not-a-date'"),
    ("timestamp,value\n2020-01-01 00:00,1\n2020-01-01 00:01,NaN\n", "row 3: column 'value' is not a number"),
    ("timestamp,value\n2020-01-01 00:00,1\n2020-01-01 00:01,-4\n", "row 3: negative value -4"),
    ("timestamp,value\n2020-01-01 00:01,1\n2020-01-01 00:00,2\n", "row 3: timestamp 2020-01-01 00:00 is not after"),
    ("timestamp,value\n2020-01-01 00:00,1\n2020-01-01 00:00,2\n", "strictly increasing"),
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
