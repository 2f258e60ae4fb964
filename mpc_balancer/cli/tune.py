"""``mpc-balancer tune``: Optuna studies of a controller's settings (see mpc_balancer/sim/tuning.py),
and ``mpc-balancer tune worker``: one more process for a study in an RDB storage."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..config import ConfigError
from ..jsonio import write_json
from .args import int_list, name_list, positive
from .config import add_config_option
from .outputs import check_dir, check_file
from .simulate import check_run_length, seed


def register(sub):
    p = sub.add_parser("tune", help="Optuna study of a controller's settings over traces and seeds "
                                    "(`tune worker`: another worker of a study in PostgreSQL)")
    add_config_option(p)
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="base option of every trial (overrides --config)")
    p.add_argument("--space", default=None,
                   help="search space TOML: one [CONTROLLER.KEY] table per option (type, low, high, log, step, choices)")
    p.add_argument("--horizons", default=None, help="shortcut: grid over mpc.horizon, e.g. 5,10,20,40,80")
    p.add_argument("--controller", default="mpc", help="the tuned controller (default mpc)")
    p.add_argument("--traces", "--trace", dest="traces", default="nasa", help="comma-separated traces (default nasa)")
    p.add_argument("--seeds", "--seed", dest="seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--days", type=positive(float, 3650.0), default=2.0, help="simulated days per (trace, seed) (default 2)")
    p.add_argument("--trials", type=positive(int), default=20, help="trials of the study (default 20; --grid: the grid's size)")
    p.add_argument("--constraint", default=None, help="e.g. nu<=0.003: maximise return_pct under it (default: Pareto front)")
    p.add_argument("--sampler", choices=["tpe", "nsga2", "random", "grid"], default=None,
                   help="default tpe (grid under --grid and --horizons; another sampler with them is an error)")
    p.add_argument("--grid", action="store_true", help="every combination of the space's values (--sampler grid)")
    p.add_argument("--sampler-seed", type=seed, default=0)
    p.add_argument("--no-baseline", action="store_true", help="do not queue the controller's defaults as the first trial")
    p.add_argument("--objective", choices=["revenue", "tracking"], default=None, help="MPC objective of every trial (mpc.objective)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (sqlite:///F, postgresql://...) or journal file "
                                                  "(default: OUT/study.journal)")
    p.add_argument("--study", default=None, help="study name (default: controller and a digest of the settings)")
    p.add_argument("--jobs", type=positive(int), default=2, help="processes for the (trace, seed) runs (default 2)")
    p.add_argument("--heartbeat", type=positive(int), default=60, help="RDB storages: heartbeat period, s (a trial silent "
                                                                       "for 3 periods is retried)")
    p.add_argument("--workers-only", action="store_true", help="create the study and the hindsight cache, run no trial "
                                                              "(start `tune worker` processes)")
    p.add_argument("--json", default=None, help="write the study's trials and best settings here")
    p.add_argument("--out", default="runs/tune", help="trials.csv, pareto.png, best/*.toml and the default journal (default runs/tune)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=tune)
    wsub = p.add_subparsers(dest="tune_command", metavar="worker")
    w = wsub.add_parser("worker", help="run trials of a study created by `tune --storage URL --study NAME`")
    w.add_argument("--storage", required=True, help="the study's RDB URL, e.g. postgresql://user@host/db")
    w.add_argument("--study", required=True)
    w.add_argument("--jobs", type=positive(int), default=1, help="processes for the (trace, seed) runs (default 1)")
    w.add_argument("--heartbeat", type=positive(int), default=60)
    w.add_argument("--poll", type=positive(float), default=2.0, help="seconds between looks for stale trials")
    w.add_argument("--no-progress", action="store_true")
    w.set_defaults(func=worker)


def evaluate_run(base: dict, controller: str, options: dict, trace: str, seed: int, days: float) -> dict:
    """One closed-loop run of ``controller`` as ``simulate --config BASE`` would run it, with
    ``options`` (``{section: {key: value}}``) as ``--set`` items; its metrics."""
    import numpy as np

    from ..sim.experiment import run_comparison
    from . import build_parser
    from .config import parse_with_config
    from .simulate import settings

    argv = ["simulate", "--controller", controller, "--trace", trace, "--seed", str(seed), "--days", repr(float(days)),
            "--no-progress"]
    for section, opts in options.items():
        argv += [f"--set={section}.{k}={json.dumps(v)}" for k, v in opts.items()]
    args = parse_with_config(build_parser(), argv, base, "the study's base configuration")
    cfg, ctrl_opts, plant_opts = settings(args, [controller])
    runs, summary = run_comparison(cfg, [controller], ctrl_opts, plant_opts)
    m = summary["results"][0]
    out = {"revenue": m["revenue"], "mu": m["mu"], "nu": m["nu"], "clusters": m["clusters"], "wall_s": m["wall_s"],
           # ticks on which the Balancer's fallback acted (a step over its wall-clock budget, a solver failure, warm-up)
           "fallback_ticks": int((runs[0].log["acted"] != controller).sum())}
    if "solve_ms" in runs[0].log:
        solve = runs[0].log["solve_ms"].to_numpy()
        out["solve_ms_p50"], out["solve_ms_p95"] = float(np.percentile(solve, 50)), float(np.percentile(solve, 95))
    return out


def _base_config(args) -> dict:
    """The trials' base: the --config file's tables, then --set and --objective."""
    from ..sim.config import check_section
    from ..sim.experiment import parse_overrides

    base = {k: dict(v) for k, v in getattr(args, "base_config", {}).items()}
    ctrl, plant = parse_overrides(args.set)
    for section, opts in {**ctrl, **({"plant": plant} if plant else {})}.items():
        base.setdefault(section, {}).update(opts)
        check_section(section, base[section], "--set")
    if args.objective is not None:
        base.setdefault("mpc", {})["objective"] = args.objective
        check_section("mpc", base["mpc"], "--objective")
    return base


def _spec(args):
    from ..sim.tuning import SearchSpace, StudySpec

    if (args.space is None) == (args.horizons is None):
        raise ConfigError("give the search space: --space FILE.toml, or --horizons LIST (a grid over mpc.horizon)")
    if args.horizons is not None:
        horizons = int_list(args.horizons, "--horizons")
        if min(horizons) < 1:
            raise ValueError(f"--horizons must be integers >= 1, got {args.horizons!r}")
        if args.controller != "mpc":
            raise ConfigError(f"--horizons is a grid over mpc.horizon; --controller is {args.controller!r}")
        space, source, sampler = SearchSpace.from_dict({"mpc": {"horizon": {"type": "categorical", "choices": list(horizons)}}},
                                                      "--horizons"), "--horizons", "grid"
    else:
        space, source, sampler = SearchSpace.from_toml(args.space), args.space, args.sampler or "tpe"
    # every trial's run must pass simulate's checks, before the study is created (else each trial
    # fails, or --set mpc.horizon slips past the daily limit that --horizon has)
    period = float(getattr(args, "base_config", {}).get("run", {}).get("period", 60.0))
    where = "--horizons " + args.horizons if args.horizons is not None else args.space
    check_run_length(args.days, period, None)
    longest = _longest_horizon(space, args.controller)
    try:
        check_run_length(args.days, period, longest)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    if args.grid:
        sampler = "grid"
    if sampler == "grid" and args.sampler not in (None, "grid"):
        # --grid and --horizons run every grid point in order: a sampler given with them would be ignored
        raise ConfigError(f"--sampler {args.sampler} contradicts {'--grid' if args.grid else '--horizons'}, "
                          "which runs every point of the grid; drop one of them")
    space.check(args.controller, source)
    seeds = list(int_list(args.seeds, "--seeds"))
    traces = name_list(args.traces)
    from ..traces import load_trace

    for t in traces:
        load_trace(t)  # fail fast on a bad trace
    return StudySpec(controller=args.controller, space=space.to_dict(), traces=traces, seeds=seeds, days=float(args.days),
                     base=_base_config(args), constraint=args.constraint, sampler=sampler, sampler_seed=args.sampler_seed,
                     baseline=not args.no_baseline, trials=int(args.trials))


def _longest_horizon(space, controller: str) -> int | None:
    """The largest ``CONTROLLER.horizon`` the space can suggest (``high``, or the largest choice),
    or None when the space does not search the horizon (or the controller has none)."""
    for p in space.params:
        if p.section == controller and p.key == "horizon" and controller in ("mpc", "nmpc", "shooting"):
            values = [v for v in p.choices if isinstance(v, (int, float)) and not isinstance(v, bool)]
            top = max(values) if p.type == "categorical" and values else p.high
            return None if top is None else int(top)
    return None


def _tuning():
    try:
        import optuna  # noqa: F401 -- only whether it is installed
    except ImportError:
        raise ConfigError("mpc-balancer tune needs Optuna: pip install 'mpc-balancer[tune]'") from None
    from ..sim import tuning

    return tuning


def _check_outputs(args) -> None:
    """``--json`` and ``--out`` before the study runs (they were first touched after it).

    ``--out`` holds the default journal, so an existing directory with files is how a study is
    resumed, and a rerun rewrites ``--json`` with the study's new summary: neither needs
    ``--force``. What is checked is that ``--out`` is not a file, ``--json`` is not a directory,
    and both can be written (probed with a temporary file), each error naming the option and path.
    """
    check_file("--json", args.json, force=True)
    if args.out:
        check_dir("--out", args.out, force=True)


def tune(args) -> int:
    tuning = _tuning()

    if args.workers_only and (args.storage is None or "://" not in args.storage):
        # checked before the study is created: a journal file (the default) is not reachable by other workers
        raise ConfigError("--workers-only needs an RDB --storage (postgresql://...) that workers can reach"
                          + ("" if args.storage is None else f", got {args.storage!r}"))
    spec = _spec(args)
    _check_outputs(args)  # after the settings' checks, so that a bad option leaves no --out directory behind
    storage_text = args.storage or str(Path(args.out) / "study.journal")
    storage = tuning.open_storage(storage_text, heartbeat_s=args.heartbeat)
    name = args.study or f"{spec.controller}-{spec.identity()}"
    study = tuning.create_study(spec, storage, name)
    spec = tuning.load_spec(study)
    label = tuning.storage_label(storage)
    runner = tuning.Runner(study, spec, evaluate_run, jobs=args.jobs, progress=not args.no_progress and sys.stderr.isatty())
    with runner:
        requeued = runner.recover()
        if requeued:
            print(f"study {name}: {requeued} interrupted trial(s) queued again", file=sys.stderr)
        if args.workers_only:
            if not tuning.is_shared(storage):
                raise ConfigError("--workers-only needs an RDB --storage (postgresql://...) that workers can reach")
            runner.hindsight()
            print(f"study {name} in {label}: {spec.trials} trials on {len(spec.pairs)} (trace, seed) pairs; hindsight cached.\n"
                  f"start workers: mpc-balancer tune worker --storage URL --study {name}")
            return 0
        runner.run()
    summary = tuning.write_results(study, spec, args.out, label)
    print(tuning.format_trials(summary))
    if args.out:
        print(f"trials.csv, pareto.png and best/*.toml written to {args.out}")
    if args.json:
        write_json(args.json, summary)
    if not any(t["state"] == "COMPLETE" for t in summary["trials"]):
        first = next((t["error"] for t in summary["trials"] if "error" in t), "none ran")
        raise ValueError(f"study {name}: no trial completed; first error: {first}")
    return 0


def worker(args) -> int:
    tuning = _tuning()

    if "://" not in args.storage:
        raise ConfigError(f"--storage must be an RDB URL that every worker reaches (postgresql://...), got {args.storage!r}")
    tuning.check_existing_study(args.storage, args.study)  # before opening: that would create a SQLite file
    storage = tuning.open_storage(args.storage, heartbeat_s=args.heartbeat)
    study = tuning.load_study(storage, args.study)
    spec = tuning.load_spec(study)
    with tuning.Runner(study, spec, evaluate_run, jobs=args.jobs, progress=not args.no_progress and sys.stderr.isatty(),
                       poll_s=args.poll) as runner:
        runner.run()
    done = len(tuning.finished(study.get_trials(deepcopy=False)))
    print(f"study {args.study}: {done} of {spec.trials} trials finished")
    return 0
