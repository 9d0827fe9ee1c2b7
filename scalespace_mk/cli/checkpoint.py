"""``scalespace-mk analyze | replace | extract``: depthwise filters of trained checkpoints."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ._args import model_types_arg

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``analyze``, ``replace`` and ``extract`` subcommands."""
    p = subparsers.add_parser(
        "analyze",
        help="census of every depthwise layer of a checkpoint",
        description="Find every depthwise weight [C, 1, k, k] in a state dict or checkpoint "
        "(.pt/.pth via torch.load(weights_only=True), or .safetensors), fit the idealised "
        "models to every filter, and report per layer the count per type, the median R^2, "
        "the share with R^2 > 0.8 and the scale distributions.",
    )
    p.add_argument("checkpoint", help="checkpoint file")
    p.add_argument(
        "--types",
        type=model_types_arg,
        default=list(range(1, 9)),
        metavar="LIST",
        help="comma-separated model types the census may choose from: 1..8 and/or model "
        "names such as dxx, dxy, dyy, lap (default 1,2,3,4,5,6,7,8)",
    )
    p.add_argument("--device", default=None, help="torch device for the census (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="DIR", help="write census figures per layer into DIR")
    p.set_defaults(_run=_run_analyze)

    p = subparsers.add_parser(
        "replace",
        help="replace every depthwise filter by its best a*x_j + b (SPEC §9, experiment 1)",
        description="Replace every depthwise filter y by a_j x_j + b, the least-squares "
        "linear shift of the best of 8 candidates x_j (zero-mean, unit-l2): the learned "
        "master key filters, or their idealised models under a fitting method. The output "
        "keeps the input's layout, keys and dtypes.",
    )
    p.add_argument("checkpoint", help="checkpoint file")
    p.add_argument(
        "--candidates",
        default="masterkey",
        choices=["masterkey", "A", "A-exact", "B", "C1", "C2", "D1", "D2"],
    )
    p.add_argument(
        "--filters",
        default=None,
        help="source of the master key filters (default: the published 8; or a file "
        "written by 'extract')",
    )
    p.add_argument("--out", required=True, help="output checkpoint (written atomically)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(_run=_run_replace)

    p = subparsers.add_parser(
        "extract",
        help="cluster depthwise filters into k master filters",
        description="Pool the depthwise filters of one or more checkpoints and cluster them "
        "into k master filters, invariant to a*y + b (zero mean, unit norm, sign).",
    )
    p.add_argument("checkpoints", nargs="+", help="checkpoint files or .npy filter arrays")
    p.add_argument("-k", type=int, default=8, help="number of master filters (default 8)")
    p.add_argument("--out", required=True, help="output .npy file [k, ks, ks]")
    p.add_argument("--plot", help="PNG figure of the master filters and their shares")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(_run=_run_extract)


def _run_analyze(args: argparse.Namespace) -> int:
    from scalespace_mk.networks.checkpoint import analyze

    result = analyze(
        args.checkpoint, types=args.types, device=args.device, progress=False if args.json else None
    )
    if args.json:
        json.dump(result.to_json(), sys.stdout)
        print()
    else:
        types = [str(t) for t in args.types]
        header = f"{'layer':<48} {'C':>5} " + " ".join(f"{t:>5}" for t in types)
        print(header + f" {'med R2':>7} {'R2>0.8':>7}")
        for layer in result.layers:
            counts = " ".join(f"{layer['types'][t]:>5}" for t in types)
            print(
                f"{layer['name'][-48:]:<48} {layer['channels']:>5} {counts} "
                f"{layer['median_r2']:>7.3f} {layer['share_r2_above_0.8']:>7.1%}"
            )
        r2 = np.array([f["r2"] for f in result.filters])
        print(
            f"\n{len(r2)} filters in {len(result.layers)} layers; median R^2 "
            f"{np.median(r2):.3f}; {np.mean(r2 > 0.8):.1%} with R^2 > 0.8"
        )
    if args.plot:
        from pathlib import Path

        from scalespace_mk.plot import plot_analysis

        paths = plot_analysis(result, Path(args.plot))
        print(f"figures written to {args.plot} ({len(paths)} files)", file=sys.stderr)
    return 0


def _run_replace(args: argparse.Namespace) -> int:
    from scalespace_mk.networks.checkpoint import replace

    result = replace(
        args.checkpoint, candidates=args.candidates, filters=args.filters, out=args.out
    )
    if args.json:
        json.dump(
            {
                "candidates": args.candidates,
                "out": args.out,
                "layers": result.layers,
                "totals": result.totals(),
            },
            sys.stdout,
        )
        print()
        return 0
    print(
        f"replaced the depthwise filters of {len(result.layers)} layers with "
        f"'{args.candidates}' candidates -> {args.out}"
    )
    totals = result.totals()
    n = sum(totals.values())
    for key in sorted(totals, key=int):
        print(f"  candidate {key}: {totals[key]:>7} channels ({totals[key] / n:.1%})")
    return 0


def _run_extract(args: argparse.Namespace) -> int:
    from scalespace_mk.analysis.filters import save_filters
    from scalespace_mk.networks.checkpoint import extract

    sources = [np.load(p) if p.endswith(".npy") else p for p in args.checkpoints]
    result = extract(sources, k=args.k, seed=args.seed)
    save_filters(args.out, result.filters)
    if args.json:
        json.dump(
            {
                "out": args.out,
                "share": result.share.tolist(),
                "mean_abs_cosine": result.mean_abs_cosine.tolist(),
                "explained": result.explained,
            },
            sys.stdout,
        )
        print()
    else:
        print(
            f"{args.k} master filters -> {args.out} (variance explained by the best "
            f"a*x + b: {result.explained:.1%})"
        )
        for j, (s, c) in enumerate(zip(result.share, result.mean_abs_cosine, strict=True), 1):
            print(f"  filter {j}: share {s:6.1%}  mean |cos| {c:.3f}")
    if args.plot:
        from scalespace_mk.plot import plot_filters

        plot_filters(
            result.filters,
            args.plot,
            titles=[f"{j}: {s:.1%}" for j, s in enumerate(result.share, 1)],
        )
    return 0
