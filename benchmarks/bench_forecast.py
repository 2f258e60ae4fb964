"""Forecasting speed, side by side in one run: ours vs statsforecast (external peer).

Data: the last 28 days of the NASA trace at 5-minute steps (8064 points) for fitting, then the
next ticks one by one. Figures (medians over repeats; import / JIT warm-up excluded):

* fit time: SarimaForecaster (target <= 5 s), HybridForecaster(horizon=96) (target <= 30 s),
  statsforecast AutoETS(season_length=288) and MSTL(season_length=[288, 2016]) (one fit each,
  in a subprocess capped at ``--peer-timeout`` seconds: they take minutes here);
* per tick: ingest one new observation + predict 96 steps with 80/95 bands (target <= 5 ms).
  Ours: ``update`` + ``predict``. statsforecast has no incremental update: ``forward`` re-applies
  the fitted model to the extended series (the cheapest no-refit path it offers).

Run: ``python benchmarks/bench_forecast.py [--ticks 100] [--repeats 3]``. Needs the ``bench``
extra (statsforecast); without it the peer rows say so.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# one BLAS / OpenMP thread, like torch.set_num_threads(1) below: on the shared 2-core machine a
# spinning BLAS pool costs more than it gains on these small matrices (set before numpy loads)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and CPU (this process) seconds of ``fn()``; CPU time is what the fit
    costs when the shared machine is busy with other jobs."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def tick_ms(update_predict, new_values) -> tuple[float, float]:
    """Median wall-clock and CPU milliseconds of one ``update_predict(value)``."""
    wall, cpu = [], []
    for v in new_values:
        t0, c0 = time.perf_counter(), time.process_time()
        update_predict(float(v))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1e3 * float(np.median(wall)), 1e3 * float(np.median(cpu))


def ours(train, future, repeats, ticks):
    from forecasting import HybridForecaster, SarimaForecaster

    rows = []
    SarimaForecaster().fit(train.iloc[-3 * 288:])  # warm-up: scipy imports
    fit = median_time(lambda: SarimaForecaster().fit(train), repeats)
    m = SarimaForecaster().fit(train)
    tick = tick_ms(lambda v: (m.update(v), m.predict(96)), future[:ticks])
    rows.append(("SarimaForecaster", fit, tick, f"K_d={m.kd_} K_w={m.kw_} ARMA{m.order_}"))

    HybridForecaster(horizon=96, epochs=1).fit(train.iloc[-8 * 288:])  # warm-up: torch import
    fit = median_time(lambda: HybridForecaster(horizon=96).fit(train), max(1, repeats - 1))
    h = HybridForecaster(horizon=96).fit(train)
    tick = tick_ms(lambda v: (h.update(v), h.predict(96)), future[:ticks])
    rows.append(("HybridForecaster(H=96)", fit, tick, f"net epochs run={h.net_.epochs_run_}"))
    return rows


PEERS = ("AutoETS", "MSTL")


def peer_spec(name):
    from statsforecast.models import MSTL, AutoETS

    if name == "AutoETS":
        return "sf AutoETS(season=288)", lambda: AutoETS(season_length=288)
    return "sf MSTL(288,2016)+AutoETS", lambda: MSTL(season_length=[288, 2016], trend_forecaster=AutoETS(model="ZZN"))


def run_peer(name, train, future, ticks):
    """One statsforecast model: one fit (after a small JIT warm-up) and ``ticks`` forward() calls."""
    label, make = peer_spec(name)
    y = train.to_numpy().astype(float)
    make().fit(y[-3 * 288:])  # warm-up: numba JIT
    t0, c0 = time.perf_counter(), time.process_time()
    m = make().fit(y)
    fit = (time.perf_counter() - t0, time.process_time() - c0)
    hist = list(y)

    def step(v):
        hist.append(v)
        return m.forward(y=np.asarray(hist), h=96, level=[80, 95])

    return label, fit, tick_ms(step, future[:ticks])


def peers(timeout_s, ticks):
    """Each peer in a subprocess with a wall-clock cap, so a model that does not finish is reported."""
    try:
        import statsforecast  # noqa: F401
    except ImportError:
        return [("statsforecast", (float("nan"),) * 2, (float("nan"),) * 2, "not installed (pip install -e .[bench])")]
    rows = []
    for name in PEERS:
        cmd = [sys.executable, __file__, "--peer", name, "--peer-ticks", str(ticks)]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            label, fit, tick = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((label, fit, tick, f"1 fit; tick = forward() on the extended series, median of {ticks}"))
        except subprocess.TimeoutExpired:
            rows.append((f"sf {name}", (float("nan"),) * 2, (float("nan"),) * 2, f"did not finish fit+{ticks} ticks within {timeout_s} s"))
        except (IndexError, ValueError):
            last = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}, no output"])[-1]
            rows.append((f"sf {name}", (float("nan"),) * 2, (float("nan"),) * 2, "failed: " + last[:80]))
    return rows


def load_data():
    from mpc_balancer.traces import load_trace

    s = load_trace("nasa").resample("5min")
    n_train = 28 * 288
    return s.iloc[-n_train - 288:-288], s.iloc[-288:].to_numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-timeout", type=float, default=300.0, help="wall-clock cap per statsforecast model (s)")
    ap.add_argument("--peer-ticks", type=int, default=3, help="forward() calls timed per statsforecast model")
    ap.add_argument("--skip-peers", action="store_true", help="only our models")
    ap.add_argument("--peer", choices=PEERS, help=argparse.SUPPRESS)  # internal: run one peer, print JSON
    args = ap.parse_args()
    train, future = load_data()
    if args.peer:  # a statsforecast model alone: no torch in this process
        print(json.dumps(run_peer(args.peer, train, future, args.peer_ticks)))
        return
    import torch

    torch.set_num_threads(1)  # 2 threads measured ~20x slower on the shared 2-core machine
    print(f"data: nasa 5-min, fit on {len(train)} points ({train.index[0]} .. {train.index[-1]}), "
          f"then {args.ticks} ticks; ours: medians of {args.repeats} fits", flush=True)
    rows = ours(train, future, args.repeats, args.ticks)
    for r in rows:
        print("  done:", r[0], flush=True)
    if not args.skip_peers:
        rows += peers(args.peer_timeout, args.peer_ticks)

    def cell(v, width, p):  # a peer that is missing, timed out or failed has no figure: "-"
        return f"{'-':>{width}}" if np.isnan(v) else f"{v:>{width}.{p}f}"

    print(f"{'model':<28}{'fit wall s':>12}{'fit CPU s':>11}{'tick wall ms':>14}{'tick CPU ms':>13}  notes (medians)")
    for name, fit, tick, note in rows:
        print(f"{name:<28}{cell(fit[0], 12, 2)}{cell(fit[1], 11, 2)}{cell(tick[0], 14, 3)}{cell(tick[1], 13, 3)}  {note}")
    print("targets: SARIMA fit <= 5 s, hybrid fit <= 30 s, update+predict(96) <= 5 ms per tick")


if __name__ == "__main__":
    main()
