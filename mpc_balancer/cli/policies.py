"""``mpc-balancer train`` (build a policy bundle) and ``mpc-balancer policies evaluate`` (Table 1/2)."""
from __future__ import annotations

import time
from pathlib import Path

from policies.bundle import REQUEST_KINDS

from ..jsonio import write_json
from .args import name_list, positive
from .outputs import declare_outputs
from .simulate import raise_arg, seed

# largest --batch-size: every step draws the batch's features and targets over all joint actions
# (REM at 65,536 rows took 2.3 GB; --batch-size 100000000 was killed for memory)
MAX_BATCH = 65_536


def _at_least(least: int):
    """An argparse type: an integer >= ``least``; argparse names the option and the value."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise_arg(f"expected an integer, got {text!r}")
        if v < least:
            raise_arg(f"must be at least {least:,}, got {text!r}")
        return v
    return parse


def _bundle_stem(text: str) -> str:
    """An argparse type for ``train --name``: a plain file stem inside ``--out``.

    Parameters
    ----------
    text : str
        The option's value.

    Returns
    -------
    str
        ``text`` unchanged.

    Raises
    ------
    argparse.ArgumentTypeError
        For an empty name, ``.`` or ``..``, a path separator or a ``.json``/``.npz`` suffix: the
        bundle was written beside ``--out`` (``--name ""`` wrote ``OUT.json``, ``--name ../x``
        wrote ``x.json`` in the parent, past ``--out``'s overwrite check) or as ``x.json.json``,
        which ``--policy OUT/x.json`` does not find.
    """
    if text in ("", ".", "..") or "/" in text or "\\" in text:
        raise_arg(f"expected a file name without a directory, got {text!r}")
    if text.endswith((".json", ".npz")):
        raise_arg(f"give the stem without .json/.npz (both files are written), got {text!r}")
    return text


def register(sub) -> None:
    t = sub.add_parser("train", help="train a per-request value model on generated logs and write a policy bundle",
                       description="Generate logs from the cascade under the behaviour policy, train AWRQ-Mixer "
                                   "(torch, one thread) and write <out>/<name>.npz + <name>.json for PolicyRuntime.")
    t.add_argument("--algo", default="awrq", choices=["awrq", "rem", "dqn"],
                   help="awrq: AWRQ-Mixer (default); rem, dqn: one agent over the joint action (the RL-MPCA and "
                        "single-agent baselines), served by the joint-q runtime")
    t.add_argument("--seed", type=seed, default=0)
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument("--name", type=_bundle_stem, default="pretrained",
                   help="bundle file stem, written as <out>/<name>.npz and .json (default: pretrained)")
    t.add_argument("--logs", type=_at_least(1000), default=1_000_000,
                   help="number of logged requests, at least 1000 (default: 1,000,000)")
    t.add_argument("--steps", type=positive(int), default=2000, help="gradient steps (default: 2000)")
    t.add_argument("--batch-size", type=positive(int, MAX_BATCH), default=2048,
                   help=f"requests per gradient step, drawn from the logs (default: 2048; at most {MAX_BATCH:,})")
    t.add_argument("--request", default="shared", choices=REQUEST_KINDS,
                   help="request side: one trunk shared by the agents and the mixer (default, faster to serve) "
                        "or separate MLPs per agent reading and hypernetwork")
    t.add_argument("--hidden", type=positive(int), default=24,
                   help="request-side hidden width (default: 24; for rem/dqn the width of the joint network's layers)")
    t.add_argument("--channels", type=positive(int), default=1,
                   help="channels per agent reading rho and utility head (default: 1; Table 1 uses 2)")
    for flag in ("aw", "smc", "vgca"):
        t.add_argument(f"--no-{flag}", action="store_true", help=f"ablate {flag.upper()}")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_train)
    declare_outputs(t, dirs=("--out",))
    t.set_defaults(defaults=vars(t.parse_args(["--out", "DIR"])))  # for the bundle's recorded command

    p = sub.add_parser("policies", help="value-model policies: paper-style evaluation")
    psub = p.add_subparsers(dest="policies_command", metavar="SUBCOMMAND")
    psub.required = True
    e = psub.add_parser("evaluate", help="train and score AWRQ-Mixer and baselines (Return%%, r_s, regret vs the oracle)")
    e.add_argument("--algos", default="awrq,qmix,vdn,rem,dqn",
                   help="comma list of awrq,qmix,vdn,rem,dqn, ablations awrq-no-aw,awrq-no-smc,awrq-no-vgca, or pretrained")
    e.add_argument("--seeds", type=positive(int, 1000), default=3)
    e.add_argument("--ablations", action="store_true", help="also run the AWRQ-Mixer ablations (Table 2)")
    e.add_argument("--bundle", default=None, help="bundle evaluated by --algos pretrained (default: the shipped one); "
                                                 "an error without pretrained in --algos")
    e.add_argument("--quick", action="store_true", help="tiny data and training budget (smoke test)")
    e.add_argument("--json", help="write the results as JSON to this file")
    declare_outputs(e, files=("--json",))
    e.set_defaults(func=_evaluate)
    x = psub.add_parser("export", help="export a bundle's per-request decision for another serving stack (ONNX)",
                        description="Write the bundle's decision (features (N, F) float32 and lam (G,) in; action, "
                                    "revenue estimate and cost out) as an ONNX model; needs the export extra.")
    x.add_argument("--bundle", default="pretrained", help="bundle name or path (default: pretrained)")
    x.add_argument("--format", default="onnx", choices=["onnx"])
    x.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    x.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                   help="compute precision inside the model (float64: agrees with the runtime on every row)")
    declare_outputs(x, files=("--out",))  # an existing model is not overwritten without --force
    x.set_defaults(func=_export)


def _train(args) -> int:
    import numpy as np

    from policies.cascade import Cascade
    from policies.logs import BehaviourPolicy, generate_logs
    from policies.training import ValueModel
    from policies.training.export import export_bundle

    check_awrq_only(args)
    t0 = time.perf_counter()
    cascade = Cascade()
    logs = generate_logs(cascade, args.logs, seed=args.seed)
    model = ValueModel(args.algo, steps=args.steps, batch_size=args.batch_size, seed=args.seed, aw=not args.no_aw,
                       smc=not args.no_smc, vgca=not args.no_vgca, verbose=not args.quiet, request=args.request,
                       hidden=args.hidden, channels=args.channels).fit(logs, cascade)
    path = export_bundle(model, Path(args.out) / args.name,
                         training={"logs": {"n": args.logs, "seed": args.seed, "behaviour": vars(BehaviourPolicy())},
                                   "command": _train_command(args)})
    heads = f", head weights {np.round(model.net_.head_weights.numpy(), 3).tolist()}" if args.algo == "awrq" else ""
    print(f"wrote {path} and {path.with_suffix('.npz').name} ({time.perf_counter() - t0:.0f}s, "
          f"final loss {model.history_[-1]['loss']:.4f}{heads})")
    return 0


AWRQ_ONLY = ("request", "channels", "no_aw", "no_smc", "no_vgca")  # AWRQ-Mixer's own options


def check_awrq_only(args) -> None:
    """Refuse AWRQ-Mixer's own options under ``--algo rem`` or ``dqn``.

    The joint-action network has no request side to share, no agent channels and none of
    AWRQ-Mixer's AW, SMC and VGCA parts: ``--algo rem --channels 3`` trained the very network
    ``--algo rem`` does, yet the bundle recorded the option in its rebuild command.

    Raises
    ------
    ValueError
        Naming the first such option given with a value other than its default, and the algorithm.
    """
    if args.algo == "awrq":
        return
    for k in AWRQ_ONLY:
        v = getattr(args, k)
        if v != args.defaults[k]:
            flag = "--" + k.replace("_", "-")
            shown = flag if isinstance(v, bool) else f"{flag} {v}"
            raise ValueError(f"{shown} has no effect with --algo {args.algo}: it is an option of AWRQ-Mixer "
                             "(--algo awrq), not of the joint-action network (whose width is --hidden)")


def _train_command(args) -> str:
    """The command that rebuilds this bundle: every option that differs from its default."""
    parts = [f"mpc-balancer train --algo {args.algo} --seed {args.seed} --out DIR"]
    for k, d in args.defaults.items():
        v = getattr(args, k)
        if k in ("algo", "seed", "out", "quiet", "func", "defaults") or v == d:
            continue
        flag = "--" + k.replace("_", "-")
        parts.append(flag if isinstance(v, bool) else f"{flag} {v}")
    return " ".join(parts)


def _evaluate(args) -> int:
    from policies.evaluation import evaluate, format_tables

    algos = name_list(args.algos)
    if not algos:
        raise ValueError("--algos is empty")
    if args.ablations:
        algos += [a for a in ("awrq-no-aw", "awrq-no-smc", "awrq-no-vgca") if a not in algos]
    if args.bundle is not None and "pretrained" not in algos:
        # the bundle is only read for "pretrained": without it, --bundle would be silently ignored
        raise ValueError(f"--bundle {args.bundle!r} is evaluated by --algos pretrained, which --algos {args.algos!r} "
                         "does not list; add pretrained or drop --bundle")
    bundle = args.bundle if args.bundle is not None else "pretrained"
    if "pretrained" in algos:
        from policies.runtime import load_runtime

        load_runtime(bundle)  # a bad bundle fails now, not after the other algorithms have trained
    results = evaluate(algos, seeds=args.seeds, quick=args.quick, bundle=bundle)
    print(format_tables(results))
    print(f"wall {results['wall_s']:.0f}s")
    if args.json:
        write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


def _export(args) -> int:
    try:
        import onnx  # noqa: F401

        from policies.export_onnx import export_onnx
    except ImportError as e:
        raise ValueError(f"export needs the export extra ({e.name} is missing): pip install -e \".[export]\"") from None
    info = export_onnx(args.bundle, args.out, dtype=args.dtype)
    print(f"wrote {info['out']} ({info['bytes']:,} bytes, {info['candidates']} candidate actions of {info['n_actions']}, "
          f"{info['compute_dtype']}); bundle npz sha256 {info['bundle_npz_sha256'][:16]}..., "
          f"cost table sha256 {info['cost_table_sha256'][:16]}..., lambda range {info['lambda_range']}")
    return 0
