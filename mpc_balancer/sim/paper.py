"""MaRCA's headline tables in closed loop: the online A/B (``ab``) and feedback vs MPC (``table3``).

Every arm is a (policy, controller, node guard) triple, as the paper defines the arms, run on the
same traffic, request samples and outcome draws for a given (trace, seed):

============== ==================================== ====================================== ==============
arm            per request                          lambda                                 node guard
============== ==================================== ====================================== ==============
static         single-agent value model (the        one stress-tested lambda per hour of   proportional
               shipped DQN bundle, DCAF's           day (history's hourly QPS at the 95th
               estimator)                           percentile + 10%), predefined
                                                    downgrades over C_m (``static``,
                                                    ``rule="hourly"``)
dcaf           the same DQN bundle                  bisection on the last tick's sample    maxpower
                                                    at the last QPS (``dcaf``)
rl_mpca        one centralised REM agent over the   PID on measured load (``pid``)         proportional
               joint action (shipped REM bundle)
marca_feedback AWRQ-Mixer (shipped pretrained)      PID (``pid``)                          proportional
marca_mpc      AWRQ-Mixer (shipped pretrained)      MPC (``mpc``, no solver time limit)    proportional
static_rules   one rule for all requests            as static                              proportional
               (:class:`policies.rules.
               UniformRulePolicy`, rules valued by
               the AWRQ-Mixer's own estimates)
============== ==================================== ====================================== ==============

Static and DCAF share their value model, so that DCAF's gain over Static is its lambda control
(per tick, on the last sample, with MaxPower) against a fixed hourly schedule, as the paper's
+3.67% measures. ``static_rules`` is the stricter reading of "fixed allocation rules" (no
per-request model at all: the same joint action for every request of the hour); ``ab`` runs it as
a reference row of the markdown table and ``results.json`` (the ``--json`` document holds the
paper's five arms, relative to ``static``).

No arm reads the simulator's ground truth: the static rules come from the history's traffic and the
value model's estimates, the controllers from telemetry, forecasts and their policy's own
``respond``. The metrics are the plant's: revenue (expected revenue of the served actions),
impressions, clicks and the GMV proxy of :mod:`mpc_balancer.sim.outcomes`, CTR = clicks /
impressions, and MaRCA's mu and nu per cluster per sub-tick.

``ab`` reports each arm relative to Static on the same (trace, seed) (``*_pct`` = 100 (arm /
static - 1)), as mean +- std over all (trace, seed) pairs, and mu/nu as mean +- std; ``table3``
runs the two MaRCA arms and reports mu and nu per cluster.
"""
from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..controllers import make_controller
from ..forecast import TickForecaster
from ..jsonio import write_json
from .experiment import ExperimentConfig, build_simulator, make_policy
from .outcomes import AdOutcomes

TABLES = ("ab", "table3")
METRICS = ("revenue", "gmv", "impressions", "clicks", "ctr")
NAMES = {"static": "Static", "dcaf": "DCAF", "rl_mpca": "RL-MPCA", "marca_feedback": "MaRCA-Feedback",
         "marca_mpc": "MaRCA-MPC", "static_rules": "(Static, uniform rules)"}
# the paper's figures (MaRCA, arXiv 2512.24325): A/B revenue relative to Static, %, and Table 3
PAPER_AB_REVENUE = {"static": 0.0, "dcaf": 3.67, "rl_mpca": 12.16, "marca_feedback": 14.93, "marca_mpc": 16.67}
PAPER_TABLE3 = {"marca_feedback": {"mu": 92.33, "nu": 2.91}, "marca_mpc": {"mu": 95.29, "nu": 0.64}}
RULE_SAMPLE = 4096  # requests (over a day) on which the static rules are valued
RULE_SEED = 12345


@dataclass(frozen=True)
class Arm:
    """One arm: the per-request policy, the controller (with options) and the node guard."""

    policy: str  # "rules", or a policy name for experiment.make_policy ("pretrained", "rem", "dqn")
    controller: str
    guard: str = "proportional"
    options: dict = field(default_factory=dict)


ARMS = {
    "static": Arm("dqn", "static", options={"rule": "hourly"}),
    "dcaf": Arm("dqn", "dcaf", guard="maxpower"),
    "rl_mpca": Arm("rem", "pid"),
    "marca_feedback": Arm("pretrained", "pid"),
    # OSQP's per-solve time limit lifted: otherwise a solve cut short on a busy machine changes the run
    # (measured: 1e-4 relative revenue between two runs of one pair), and the table is to be rerun exactly
    "marca_mpc": Arm("pretrained", "mpc", options={"time_limit_s": 0.0}),
    "static_rules": Arm("rules", "static", options={"rule": "hourly"}),
}
TABLE_ARMS = {"ab": tuple(ARMS), "table3": ("marca_feedback", "marca_mpc")}
PAPER_ARMS = ("static", "dcaf", "rl_mpca", "marca_feedback", "marca_mpc")  # the arms of the --json document


@dataclass
class PaperConfig:
    """A paper table's run: which table, traces, seeds, simulated days and per-tick sample size."""

    table: str = "ab"
    traces: tuple[str, ...] = ("nasa", "elb", "nyc-taxi")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    days: float = 1.0
    n_requests: int = 1000
    jobs: int = 1

    def __post_init__(self):
        if self.table not in TABLES:
            raise ValueError(f"table must be one of {TABLES}, got {self.table!r}")
        if not self.traces:
            raise ValueError("traces is empty")
        if not self.seeds:
            raise ValueError("seeds is empty")
        if not (np.isfinite(self.days) and self.days > 0):
            raise ValueError(f"days must be finite and > 0, got {self.days!r}")
        if self.n_requests < 1:
            raise ValueError(f"requests must be >= 1, got {self.n_requests!r}")
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs!r}")

    @property
    def arms(self) -> tuple[str, ...]:
        return TABLE_ARMS[self.table]


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0-4"`` -> (0, 1, 2, 3, 4); ``"0,2,5"`` -> (0, 2, 5); ranges and lists may mix."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ValueError(f"--seeds must be integers or ranges like 0-4, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must name distinct integers >= 0, got {text!r}")
    return tuple(seeds)


def rule_policy(learned, cascade):
    """The Static arm's rules, valued by ``learned``'s own estimates over a day of requests."""
    from policies.rules import UniformRulePolicy

    rng = np.random.default_rng(RULE_SEED)
    x = cascade.sample_features(RULE_SAMPLE, rng.uniform(0, 24, RULE_SAMPLE), rng)
    return UniformRulePolicy.from_policy(learned, x)


def run_pair(trace: str, seed: int, days: float, arms: tuple[str, ...], n_requests: int = 1000) -> dict:
    """Every arm in ``arms`` on one (trace, seed): ``{arm: metrics}`` (see :func:`arm_metrics`)."""
    sims, policies, out = {}, {}, {}
    for name in arms:
        arm = ARMS[name]
        if arm.guard not in sims:
            cfg = ExperimentConfig(trace=trace, days=days, seed=seed, n_requests=n_requests, guard=arm.guard)
            sim = build_simulator(cfg)
            sim.outcomes = AdOutcomes(sim.cascade, seed=seed)
            sims[arm.guard] = sim
        sim = sims[arm.guard]
        if arm.policy not in policies:
            if arm.policy == "rules":
                learned = policies["pretrained"] if "pretrained" in policies else make_policy("pretrained", sim.cascade)
                policies["rules"] = rule_policy(learned, sim.cascade)
            else:
                policies[arm.policy] = make_policy(arm.policy, sim.cascade)
        controller = make_controller(arm.controller, **arm.options)
        forecaster = TickForecaster() if controller.needs_forecast else None
        t0, c0 = time.perf_counter(), time.process_time()
        res = sim.run(sim.balancer(controller, forecaster), policies[arm.policy])
        out[name] = arm_metrics(res, time.perf_counter() - t0, time.process_time() - c0)
    return out


def arm_metrics(res, seconds: float, cpu_seconds: float) -> dict:
    """A run's totals: revenue, GMV proxy, impressions, clicks, CTR, mu, nu (mean and per cluster),
    and its wall and CPU seconds (CPU time is the figure to quote on a shared machine)."""
    m, log = res.metrics(), res.log
    impressions, clicks = float(log["impressions"].sum()), float(log["clicks"].sum())
    return {"revenue": m["revenue"], "gmv": float(log["gmv"].sum()), "impressions": impressions, "clicks": clicks,
            "ctr": clicks / impressions if impressions > 0 else float("nan"), "mu": m["mu"], "nu": m["nu"],
            "clusters": m["clusters"], "degraded_pct": m["degraded_pct"], "seconds": seconds, "cpu_s": cpu_seconds}


def _pair_task(args):
    trace, seed, days, arms, n_requests = args
    t0, c0 = time.perf_counter(), time.process_time()
    arm_runs = run_pair(trace, seed, days, arms, n_requests)
    return trace, seed, arm_runs, time.perf_counter() - t0, time.process_time() - c0


def run_table(cfg: PaperConfig, log=print) -> dict:
    """Run every (trace, seed) pair (in ``cfg.jobs`` processes) and summarise: the ``--json`` document."""
    tasks = [(t, s, cfg.days, cfg.arms, cfg.n_requests) for t in cfg.traces for s in cfg.seeds]
    pairs = []
    t0 = time.perf_counter()
    if cfg.jobs == 1:
        results = map(_pair_task, tasks)
    else:
        pool = ProcessPoolExecutor(max_workers=cfg.jobs)
        results = pool.map(_pair_task, tasks)
    try:
        for trace, seed, arms, secs, cpu in results:
            pairs.append({"trace": trace, "seed": seed, "arms": arms, "seconds": secs, "cpu_s": cpu})
            log(f"{trace} seed {seed}: {secs:.0f}s wall, {cpu:.0f}s CPU (" + ", ".join(f"{a} {m['cpu_s']:.0f}s" for a, m in arms.items())
                + f" CPU; total {time.perf_counter() - t0:.0f}s wall)")
    finally:
        if cfg.jobs > 1:
            pool.shutdown(cancel_futures=True)
    doc = summarize(cfg, pairs)
    doc["wall_s"] = time.perf_counter() - t0
    doc["cpu_s"] = float(sum(p["cpu_s"] for p in pairs))
    return doc


def table_from_runs(path: str | Path, table: str) -> dict:
    """``table`` summarised from the per-pair totals of an earlier run's ``results.json`` (``--out``),
    e.g. Table 3 from the A/B's MaRCA-Feedback and MaRCA-MPC runs, which are the very runs
    ``table3`` makes (same traffic, requests, policy, controller and guard per (trace, seed))."""
    import json

    try:
        src = json.loads(Path(path).read_text(encoding="utf-8"))
        traces, seeds, days, pairs = src["traces"], src["seeds"], src["days"], src["pairs"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--from {path}: not a results.json of mpc-balancer paper ({type(e).__name__}: {e})") from None
    cfg = PaperConfig(table=table, traces=tuple(traces), seeds=tuple(seeds), days=float(days),
                      n_requests=int(src.get("requests", 1000)))
    missing = sorted({a for p in pairs for a in cfg.arms if a not in p.get("arms", {})})
    if missing or not pairs:
        raise ValueError(f"--from {path}: its runs lack the arms {missing or list(cfg.arms)} of {table}")
    kept = [{**p, "arms": {a: p["arms"][a] for a in cfg.arms}} for p in pairs]
    for p in kept:
        p["cpu_s"] = float(sum(m.get("cpu_s", 0.0) for m in p["arms"].values()))
    doc = summarize(cfg, kept)
    doc["wall_s"], doc["cpu_s"], doc["from"] = 0.0, float(sum(p["cpu_s"] for p in kept)), str(path)
    return doc


def _mean_std(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=0))}


def aggregate(pairs: list[dict], arms: tuple[str, ...]) -> dict:
    """Per arm, ``*_pct`` relative to the first arm (Static in ``ab``, MaRCA-Feedback in ``table3``)
    on the same pair, and mu, nu, each as mean +- std over ``pairs``; mu and nu also per cluster
    (``clusters``)."""
    base = arms[0]
    out = {}
    for arm in arms:
        row = {}
        for k in METRICS:
            row[f"{k}_pct"] = _mean_std([100.0 * (p["arms"][arm][k] / p["arms"][base][k] - 1.0) for p in pairs])
        for k in ("mu", "nu"):
            row[k] = _mean_std([p["arms"][arm][k] for p in pairs])
            clusters = pairs[0]["arms"][arm]["clusters"]
            row[k]["clusters"] = {c: _mean_std([p["arms"][arm]["clusters"][c][k] for p in pairs]) for c in clusters}
        out[arm] = row
    return out


def summarize(cfg: PaperConfig, pairs: list[dict]) -> dict:
    """The full results: ``{"table", "traces", "seeds", "days", "arms"}``, plus ``per_trace`` (the
    same per trace) and ``pairs`` (every run's totals); :func:`json_document` is the ``--json`` part."""
    doc = {"table": cfg.table, "traces": list(cfg.traces), "seeds": list(cfg.seeds), "days": float(cfg.days),
           "arms": aggregate(pairs, cfg.arms), "requests": cfg.n_requests}
    doc["per_trace"] = {t: aggregate([p for p in pairs if p["trace"] == t], cfg.arms) for t in cfg.traces}
    doc["pairs"] = pairs
    return doc


def json_document(doc: dict) -> dict:
    """The ``--json`` schema: ``{"table", "traces", "seeds", "days", "arms": {arm: {"revenue_pct",
    "gmv_pct", "impressions_pct", "clicks_pct", "ctr_pct", "mu", "nu"}}}``, each ``{"mean", "std"}``
    (``table3``'s mu and nu also carry ``clusters``: ``{cluster: {"mean", "std"}}``)."""
    arms = {}
    for arm, row in doc["arms"].items():
        if arm not in PAPER_ARMS:
            continue
        arms[arm] = {f"{k}_pct": dict(row[f"{k}_pct"]) for k in METRICS}
        for k in ("mu", "nu"):
            arms[arm][k] = dict(row[k]) if doc["table"] == "table3" else {"mean": row[k]["mean"], "std": row[k]["std"]}
    return {"table": doc["table"], "traces": doc["traces"], "seeds": doc["seeds"], "days": doc["days"], "arms": arms}


def _cell(d: dict, scale: float = 1.0, digits: int = 2) -> str:
    return f"{scale * d['mean']:+.{digits}f} ± {scale * d['std']:.{digits}f}"


def format_table(doc: dict) -> str:
    """Markdown tables laid out as the paper's (all pairs, then per trace)."""
    blocks = []
    for title, arms in [("all traces", doc["arms"])] + [(t, a) for t, a in doc.get("per_trace", {}).items()]:
        blocks.append(_ab_table(title, arms, doc) if doc["table"] == "ab" else _table3(title, arms, doc))
    return "\n\n".join(blocks)


def _ab_table(title: str, arms: dict, doc: dict) -> str:
    lines = [(f"A/B, {title}: relative to Static, %, mean ± std over {_pairs(doc, title)} "
              f"({doc['days']:g} days each)"), "",
             "| Method | Revenue | GMV | Impressions | Clicks | CTR | mu | nu | paper revenue |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm, row in arms.items():
        cells = [_cell(row[f"{k}_pct"]) for k in METRICS]
        mu, nu = row["mu"], row["nu"]
        lines.append(f"| {NAMES[arm]} | " + " | ".join(cells)
                     + f" | {100 * mu['mean']:.2f} ± {100 * mu['std']:.2f} | {100 * nu['mean']:.3f} ± {100 * nu['std']:.3f}"
                     + (f" | {PAPER_AB_REVENUE[arm]:+.2f} |" if arm in PAPER_AB_REVENUE else " | |"))
    return "\n".join(lines)


def _table3(title: str, arms: dict, doc: dict) -> str:
    clusters = list(next(iter(arms.values()))["mu"]["clusters"])
    lines = [(f"Table 3, {title}: mu and nu (%) per sub-tick, mean ± std over {_pairs(doc, title)} "
              f"({doc['days']:g} days each)"), "",
             "| Method | mu | nu | " + " | ".join(f"{c} mu | {c} nu" for c in clusters) + " | paper mu | paper nu |",
             "|---|---|---|" + "---|---|" * len(clusters) + "---|---|"]
    for arm, row in arms.items():
        per = " | ".join(f"{100 * row['mu']['clusters'][c]['mean']:.2f} ± {100 * row['mu']['clusters'][c]['std']:.2f} | "
                         f"{100 * row['nu']['clusters'][c]['mean']:.3f} ± {100 * row['nu']['clusters'][c]['std']:.3f}"
                         for c in clusters)
        paper = PAPER_TABLE3.get(arm, {"mu": float("nan"), "nu": float("nan")})
        lines.append(f"| {NAMES[arm]} | {100 * row['mu']['mean']:.2f} ± {100 * row['mu']['std']:.2f} | "
                     f"{100 * row['nu']['mean']:.3f} ± {100 * row['nu']['std']:.3f} | {per} | {paper['mu']:.2f} | {paper['nu']:.2f} |")
    return "\n".join(lines)


def _pairs(doc: dict, title: str) -> str:
    n_traces = len(doc["traces"]) if title == "all traces" else 1
    return f"{n_traces} trace(s) x {len(doc['seeds'])} seed(s)"


def plot_bars(doc: dict, path: str | Path) -> None:
    """Bar chart with error bars (std): ``ab`` the ``*_pct`` of each arm per metric; ``table3`` mu and nu."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = doc["arms"]
    names = [a for a in arms if a in PAPER_ARMS]  # the reference row (uniform rules) would set the scale
    if doc["table"] == "ab":
        keys, labels, scale = [f"{k}_pct" for k in METRICS], ["Revenue", "GMV", "Impressions", "Clicks", "CTR"], 1.0
        ylabel = "relative to Static, %"
    else:
        keys, labels, scale = ["mu", "nu"], ["mu", "nu"], 100.0
        ylabel = "%"
    fig, ax = plt.subplots(figsize=(2.0 + 1.6 * len(keys), 4.0))
    width = 0.8 / len(names)
    x = np.arange(len(keys))
    for i, arm in enumerate(names):
        means = [scale * arms[arm][k]["mean"] for k in keys]
        stds = [scale * arms[arm][k]["std"] for k in keys]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=NAMES[arm])
    ax.set_xticks(x, labels)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{doc['table']}: {', '.join(doc['traces'])}; seeds {len(doc['seeds'])}; {doc['days']:g} days")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out_dir: str | Path, doc: dict) -> None:
    """``table.md``, ``bars.png`` and ``results.json`` (the document with every pair's totals) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(format_table(doc) + "\n")
    plot_bars(doc, out / "bars.png")
    write_json(out / "results.json", doc)
