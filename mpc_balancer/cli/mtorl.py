"""``mpc-balancer mtorl``: train MTORL, evaluate it against the baselines, diagnose a data set.

``--data`` is ``kuairand`` or ``criteo`` (samples shipped with the package), ``sim`` (the
simulated environment) or the path of a journey CSV (format: :mod:`policies.offline.journeys`).

``train --data D [--seed S] --out DIR`` fits MTORL on the training users and writes a bundle
(npz + JSON, no pickle) with ``metrics.json`` (test agreement).
``evaluate [--data D] [--seeds N] [--json FILE]`` prints and optionally writes
``{"data", "methods": {method: {channel_auc, macro_f1, value_per_budget_same,
budget_used_pct_same, value_per_budget_own, budget_used_pct_own}}, "seeds", "spread",
"value_estimator", ["mtorl_wins"], ["reference"]}`` (see :mod:`policies.offline.evaluation`).
``diagnose --data D [--json FILE]`` prints channel shares, transitions, the per-user
chi-square, a gradient-boosting probe AUC and the random-window leakage check
(:mod:`policies.offline.diagnose`).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..jsonio import dumps, write_json
from .outputs import check_outputs, declare_outputs

MAX_WINDOWS = 1_000_000  # diagnose --windows: the leakage check's draws


def _shares(text: str | None):
    if text is None or text == "logged":
        return text
    try:
        vals = [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--channel-shares: expected comma-separated numbers or 'logged', got {text!r}") from None
    return vals


def _check_common(args) -> None:
    """The options ``train``, ``evaluate`` and ``diagnose`` share, checked before any data is read.

    Raised as ``ValueError`` naming the option and the value (one line, also under this module's
    own :func:`main`). A plain ``type=float`` accepts ``nan`` and ``inf``, which compare False with
    every bound; ``--max-epochs 0`` trained nothing and saved the untrained model, a NaN
    ``--penalty`` a model of NaNs.
    """
    seed = getattr(args, "seed", 0)
    if not 0 <= seed < 2 ** 32:
        raise ValueError(f"--seed must be an integer in [0, 2**32), got {seed}")
    if getattr(args, "max_epochs", 1) < 1:
        raise ValueError(f"--max-epochs must be >= 1, got {args.max_epochs}")
    penalty = getattr(args, "penalty", 0.0)
    if not 0 <= penalty < math.inf:
        raise ValueError(f"--penalty must be finite and >= 0, got {penalty}")
    prior = getattr(args, "prior_weight", 0.0)
    if not 0 <= prior < math.inf:
        raise ValueError(f"--prior-weight must be finite and >= 0, got {prior}")


def _cmd_train(args) -> int:
    from policies.offline.bundle import save_model
    from policies.offline.evaluation import PATIENCE, SPLIT, agreement, load_data
    from policies.offline.mtorl import MTORL

    _check_common(args)

    journeys, _ = load_data(args.data, args.seed)
    train, val, test = journeys.split(SPLIT, args.seed)
    model = MTORL(seed=args.seed, max_epochs=args.max_epochs, penalty=args.penalty,
                  patience=PATIENCE).fit(train, val)
    out = save_model(model, args.out)
    metrics = agreement(model, test)
    metrics.update(best_epoch=model.history_["best_epoch"], data=args.data, seed=args.seed)
    write_json(Path(out) / "metrics.json", metrics)  # strict JSON: an undefined AUC is null, never NaN
    print(dumps(metrics))
    return 0


def _cmd_evaluate(args) -> int:
    from policies.offline.evaluation import evaluate

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    _check_common(args)
    if not 0 < args.budget_fraction <= 1:
        raise ValueError(f"--budget-fraction must be in (0, 1], got {args.budget_fraction}")
    log = (lambda m: print(m, file=sys.stderr)) if args.verbose else None
    if args.patience < 1:
        raise ValueError(f"--patience must be >= 1, got {args.patience}")
    result = evaluate(args.data, seeds=args.seeds, budget_fraction=args.budget_fraction,
                      shares=_shares(args.channel_shares), prior_weight=args.prior_weight,
                      max_epochs=args.max_epochs, patience=args.patience, log=log)
    text = dumps(result)  # strict JSON, as --json writes it: an undefined AUC is null, never NaN
    if args.json:
        write_json(args.json, result)
    print(text)
    return 0


def _cmd_diagnose(args) -> int:
    from policies.offline.diagnose import diagnose, format_report
    from policies.offline.evaluation import load_data

    _check_common(args)
    if args.window < 1 or args.windows < 2:
        raise ValueError(f"--window must be >= 1 and --windows >= 2, got {args.window}, {args.windows}")
    if args.windows > MAX_WINDOWS:  # the windows are drawn as arrays at once: 1e8 of them ran out of memory
        raise ValueError(f"--windows must be <= {MAX_WINDOWS:,}, got {args.windows:,}")
    journeys, _ = load_data(args.data, args.seed, split=False)  # diagnose reads all users, no split
    longest = int(journeys.mask.sum(axis=1).max())
    result = diagnose(journeys, seed=args.seed, probe=not args.no_probe,
                      window_check=longest >= args.window, n_windows=args.windows, window=args.window)
    result["data"] = args.data
    if args.json:
        write_json(args.json, result)
    print(format_report(args.data, result))
    if longest < args.window:
        print(f"random-window check skipped: the longest journey has {longest} exposures, "
              f"--window is {args.window}")
    return 0


def register(subparsers) -> None:
    """Add ``mtorl train``, ``mtorl evaluate`` and ``mtorl diagnose``."""
    p = subparsers.add_parser("mtorl", help="MTORL: offline RL channel recommendation and budget allocation")
    sub = p.add_subparsers(dest="mtorl_command", metavar="SUBCOMMAND")
    sub.required = True
    t = sub.add_parser("train", help="fit MTORL and save it (npz + JSON)")
    t.add_argument("--data", default="kuairand", help="kuairand, criteo, sim, or a journey CSV path")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument("--max-epochs", type=int, default=100)
    t.add_argument("--penalty", type=float, default=0.1, help="s in the token's r - s*cost (finite, >= 0)")
    declare_outputs(t, dirs=("--out",))
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("evaluate", help="MTORL beside the baselines, over seeds")
    e.add_argument("--data", default="kuairand", help="kuairand, criteo, sim, or a journey CSV path")
    e.add_argument("--seeds", type=int, default=3)
    e.add_argument("--json", help="write the result to this file")
    e.add_argument("--budget-fraction", type=float, default=0.4,
                   help="budget as a fraction of the logged spend on the test users")
    e.add_argument("--channel-shares", default=None,
                   help="budget share per channel, e.g. 0.3,0.3,0.4, or 'logged'")
    e.add_argument("--prior-weight", type=float, default=0.0,
                   help="weight of MTORL's channel policy in its allocation")
    e.add_argument("--max-epochs", type=int, default=100,
                   help="epoch cap; training stops earlier when the validation loss stalls")
    e.add_argument("--patience", type=int, default=5,
                   help="epochs without validation improvement before stopping")
    e.add_argument("--verbose", action="store_true", help="log per seed and method to stderr")
    declare_outputs(e, files=("--json",))
    e.set_defaults(func=_cmd_evaluate)
    d = sub.add_parser("diagnose", help="is the channel predictable? shares, transitions, probe")
    d.add_argument("--data", default="kuairand", help="kuairand, criteo, sim, or a journey CSV path")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--json", help="write the result to this file")
    d.add_argument("--no-probe", action="store_true", help="skip the gradient-boosting probe")
    d.add_argument("--window", type=int, default=20, help="window length of the leakage check")
    d.add_argument("--windows", type=int, default=4000, help="windows drawn in the leakage check")
    declare_outputs(d, files=("--json",))
    d.set_defaults(func=_cmd_diagnose)


def main(argv: list[str] | None = None) -> int:
    """Run the ``mtorl`` group alone (``python -m mpc_balancer.cli.mtorl ...``), with the same
    one-line error reporting as ``mpc-balancer``."""
    parser = argparse.ArgumentParser(prog="mpc-balancer")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register(sub)
    args = parser.parse_args(["mtorl", *(sys.argv[1:] if argv is None else argv)])
    try:
        check_outputs(args)
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"mpc-balancer mtorl: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
