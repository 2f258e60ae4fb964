"""Synthetic traces of the kinds the bundled ones lack, for checking a default on traffic it was not
tuned on (the bundled nasa / elb / nyc-taxi are smooth at the tick's scale).

    python benchmarks/unseen_traces.py --out /tmp/unseen --seed 7
    python benchmarks/bench_bursts.py --traces /tmp/unseen/social.csv,/tmp/unseen/spike90.csv \\
        --scenarios plain --days 3 --seeds 0,1

Two CSVs (``timestamp,value``, 14 days; the simulator scales each trace so that its 99.5th
percentile is the peak QPS, and uses the days before the simulated window as history):

* ``social.csv``, 1-minute counts: a diurnal and weekly cycle, 8% log-normal noise per minute (a
  stream whose minute-to-minute changes no forecast explains), and 12 unannounced bursts a day of
  2-8x that decay with a 6-minute time constant and stop after 1-10 minutes;
* ``spike90.csv``, 5-minute counts: a diurnal cycle with 5% noise, a 30-minute outage every night
  with half of the missed requests retried over the 15 minutes after it, and one 90x spike of 10
  minutes on day 13. At the default peak QPS it is over capacity for much of every day: a check
  that nothing breaks when no allocation fits, not of the margin.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

DAYS = 14


def social(rng: np.random.Generator) -> pd.Series:
    """1-minute counts: diurnal and weekly cycle, log-normal noise, frequent decaying bursts."""
    n = DAYS * 1440
    t = np.arange(n)
    day = 0.55 + 0.45 * np.sin(2 * np.pi * (t / 1440 - 0.3)) ** 2
    week = 1 + 0.15 * np.sin(2 * np.pi * t / (7 * 1440))
    base = 1000 * day * week * np.exp(rng.normal(0, 0.08, n))
    mult = np.ones(n)
    for start in rng.choice(n, DAYS * 12, replace=False):
        length, factor = int(rng.integers(1, 11)), rng.uniform(2, 8)
        span = mult[start:start + length]
        span[:] = np.maximum(span, factor * np.exp(-np.arange(len(span)) / 6))
    return pd.Series(np.round(base * mult), index=pd.date_range("2026-01-01", periods=n, freq="1min"))


def spike90(rng: np.random.Generator) -> pd.Series:
    """5-minute counts: diurnal cycle, a nightly outage with a retry surge, one 90x spike."""
    n = DAYS * 288
    t = np.arange(n)
    x = 500 * (0.4 + 0.6 * np.sin(np.pi * (t % 288) / 288) ** 2) * np.exp(rng.normal(0, 0.05, n))
    for d in range(DAYS):
        o = d * 288 + 36  # 03:00, 6 steps = 30 minutes
        missed = x[o:o + 6].sum()
        x[o:o + 6] = 0
        x[o + 6:o + 9] += missed / 2 / 3
    s = 12 * 288 + 170
    x[s:s + 2] *= 90
    return pd.Series(np.round(x), index=pd.date_range("2026-01-01", periods=n, freq="5min"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory to write social.csv and spike90.csv into")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--force", action="store_true", help="overwrite the CSVs if they exist")
    a = ap.parse_args()
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        ap.error(f"--out {a.out} is a file, not a directory")
    existing = [str(out / f"{name}.csv") for name in ("social", "spike90") if (out / f"{name}.csv").exists()]
    if existing and not a.force:
        ap.error(f"{', '.join(existing)} already exist(s): pass --force to overwrite")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    for name, make in (("social", social), ("spike90", spike90)):
        series = make(rng)
        series.rename("value").to_csv(out / f"{name}.csv", index_label="timestamp")
        print(f"{out / f'{name}.csv'}: {len(series)} points, {series.index[0]} .. {series.index[-1]}")


if __name__ == "__main__":
    main()
