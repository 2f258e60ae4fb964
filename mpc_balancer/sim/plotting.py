"""PNG plots of a closed-loop run: load against C_m and lambda over time, per cluster."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_run(result, path: str | Path, results: list | None = None) -> None:
    """Plot one run (or several runs of a comparison, overlaid) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results or [result]
    G = len(runs[0].clusters)
    fig, axes = plt.subplots(G + 1, 1, figsize=(12, 2.4 * (G + 1)), sharex=True)
    ax = axes[0]
    ax.plot(runs[0].log.index, runs[0].log["qps"], color="0.3", lw=0.8)
    ax.set_ylabel("QPS")
    ax.set_title("closed loop: " + ", ".join(r.controller for r in runs))
    for g, name in enumerate(runs[0].clusters):
        ax = axes[g + 1]
        for r in runs:
            ax.plot(r.log.index, r.log[f"load_{name}"], lw=0.8, label=f"{r.controller} load")
        ax.axhline(runs[0].target[g], color="k", ls="--", lw=1, label="C_m")
        ax.set_ylabel(f"{name} load")
        ax2 = ax.twinx()
        for r in runs:
            if (r.log[f"lambda_{name}"] > 0).any():
                ax2.plot(r.log.index, r.log[f"lambda_{name}"], lw=0.6, ls=":", label=f"{r.controller} lambda")
        ax2.set_yscale("log")
        ax2.set_ylabel("lambda")
        if g == 0:
            ax.legend(loc="upper left", fontsize=7, ncol=len(runs) + 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_backoff(results: list, path: str | Path, target: float | None = None) -> bool:
    """The MPC's back-off per cluster and the running nu (per sub-tick) against the target, for
    every run that has a back-off; False (nothing written) when none has."""
    runs = [r for r in results if any(c.startswith("backoff_") for c in r.log.columns)]
    if not runs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(12, 5.5), sharex=True)
    for r in runs:
        for g, name in enumerate(r.clusters):
            ax.plot(r.log.index, r.log[f"backoff_{name}"], lw=0.8, label=f"{r.controller} {name}")
            if r.subtick_load is not None:
                excess = np.maximum(r.subtick_load[:, :, g] - r.target[g], 0.0) / r.target[g]
                on = r.subtick_arrivals > 0
                num = np.cumsum((excess * on).sum(axis=1))
                den = np.maximum(np.cumsum(on.sum(axis=1)), 1)
                ax2.plot(r.log.index, np.maximum(num / den, 1e-6), lw=0.8, label=f"{r.controller} {name}")
    if target is not None:
        ax2.axhline(target, color="k", ls="--", lw=1, label="target nu")
    ax.set_ylabel("back-off (load)")
    ax.set_title("MPC back-off (online chance constraint) and running nu per sub-tick")
    ax.legend(fontsize=7, ncol=3)
    ax2.set_ylabel("running nu")
    ax2.set_yscale("log")
    ax2.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
