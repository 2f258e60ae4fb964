"""PNG plots of a closed-loop run: load against C_m and lambda over time, per cluster."""
from __future__ import annotations

from pathlib import Path


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
