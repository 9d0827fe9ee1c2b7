"""``scalespace-mk analyze | replace | extract``: depthwise filters of trained checkpoints."""

from __future__ import annotations

import argparse
import sys

from scalespace_mk import _json as json  # never NaN/Infinity: null + reason

from ._args import (
    add_device_option,
    add_null_arguments,
    count_arg,
    model_types_arg,
    refuse_wrong_file,
)
from ._family import add_family_args

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``analyze``, ``replace`` and ``extract`` subcommands."""
    p = subparsers.add_parser(
        "analyze",
        help="census of every depthwise layer of a checkpoint",
        description="Find every depthwise weight [C, 1, k, k] (k odd, 3..15) in a state dict "
        "or checkpoint (.pt/.pth via torch.load(weights_only=True), or .safetensors; nested "
        "model/state_dict/ema wrappers included), fit the idealised models to every filter, "
        "and report per layer the count per type, the median R^2 and the share with "
        "R^2 > 0.8 beside the same numbers for matched null filters (in brackets), and the "
        "scale distributions. Zero, constant and NaN/Inf filters are counted, not fitted. "
        "With two or more checkpoints, compare them side by side per stage of depth.",
    )
    p.add_argument(
        "checkpoint", nargs="+", help="checkpoint file(s); two or more are compared per stage"
    )
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="CKPT",
        help="another checkpoint to compare with (repeatable; same as more positional files; "
        "default: none)",
    )
    p.add_argument(
        "--stages",
        type=count_arg("stages", "--stages"),
        default=4,
        metavar="N",
        help="comparison: cut each network's depthwise layers into N groups of equal depth "
        "share (default 4)",
    )
    p.add_argument(
        "--types",
        type=model_types_arg,
        default=list(range(1, 9)),
        metavar="LIST",
        help="comma-separated model types the census may choose from: 1..8 and/or model "
        "names such as dxx, dxy, dyy, lap (default 1,2,3,4,5,6,7,8)",
    )
    add_device_option(p, "the census")
    add_null_arguments(p)
    add_family_args(p)
    p.add_argument(
        "--null-size",
        type=count_arg("null_size", "--null-size"),
        default=2048,  # networks.checkpoint.NULL_SIZE (not imported: --help stays fast)
        metavar="N",
        help="about N null filters of each kind per checkpoint, drawn from every layer in "
        "proportion (at least 128 per layer); 0: one per learned filter (default %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--plot",
        metavar="DIR",
        help="write figures into DIR: types per layer, R^2 per layer with the null band, "
        "scales against depth, worst/best-explained filters beside their models (and the "
        "comparison per stage with two or more checkpoints) (default: no figures)",
    )
    p.set_defaults(_run=_run_analyze)

    p = subparsers.add_parser(
        "replace",
        help=(
            "replace every depthwise filter by its best a*x_j + b "
            "(docs/method.md#networks, experiment 1)"
        ),
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
        help="candidates x_j: 'masterkey' (the filters of --filters as they are) or their "
        "idealised models fitted by this method (default: %(default)s)",
    )
    p.add_argument(
        "--filters",
        default=None,
        help="source of the master key filters (default: the published 8; or a file "
        "written by 'extract')",
    )
    p.add_argument("--out", required=True, help="output checkpoint (written atomically)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--njet-order",
        type=count_arg("order", "--njet-order", 1, 4),
        default=None,
        metavar="N",
        help="instead of the candidates, replace every filter by its least-squares N-jet of "
        "order N (1-4; one scale and an offset per filter; default: off)",
    )
    p.add_argument(
        "--kind",
        default=None,
        metavar="KIND",
        help="instead of --candidates / --njet-order, any kind of substitute_depthwise: "
        "census (best of the 8 types per filter), method:X, njet:N, masterkey, and the "
        "controls noise (the filter plus noise with the census residual energy) and random "
        "(i.i.d. filters with each filter's norm) (default: off)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the noise/random controls (default: 0)"
    )
    p.set_defaults(_run=_run_replace)

    p = subparsers.add_parser(
        "extract",
        help="cluster depthwise filters into k master filters",
        description="Pool the depthwise filters of one or more checkpoints and cluster them "
        "into k master filters, invariant to a*y + b (zero mean, unit norm, sign).",
    )
    p.add_argument("checkpoints", nargs="+", help="checkpoint files or .npy filter arrays")
    p.add_argument(
        "-k",
        type=count_arg("k", "-k"),
        default=8,
        help="number of master filters, 1..1000 (default 8)",
    )
    p.add_argument("--out", required=True, help="output .npy file [k, ks, ks]")
    p.add_argument(
        "--plot", help="PNG figure of the master filters and their shares (default: no figure)"
    )
    p.add_argument(
        "--seed",
        type=count_arg("seed", "--seed"),
        default=0,
        help="seed of the clustering (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(_run=_run_extract)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _undetermined(layer: dict) -> str:
    """Filters of the layer with an undetermined scale (the larger of sigma_x, sigma_y)."""
    u = layer.get("undetermined") or {}
    return str(max(u.get("sigma_x", 0), u.get("sigma_y", 0)))


def _entropy_cell(layer: dict) -> str:
    pop = layer.get("population") or {}
    h, thr = pop.get("variance_entropy"), pop.get("entropy_threshold")
    return f"{_fmt(h, '.2f')} ({_fmt(thr, '.2f')})"


def _print_table(result: object, checkpoint: str) -> None:
    types = [str(t) for t in result.types]
    print(f"{checkpoint}: depthwise layers; R^2 of the best model, null in brackets")
    header = f"{'layer':<40} {'k':>2} {'C':>5} {'inv':>4} " + " ".join(f"{t:>4}" for t in types)
    print(
        header + f"  {'median R2 (null)':>16}  {'R2>0.8 (null)':>15}  {'sigma_x':>7}"
        f"  {'undet':>5}  {'H (iid thr)':>12}  {'orth':>5}"
    )
    for layer in result.layers:
        counts = " ".join(f"{layer['types'].get(t, 0):>4}" for t in types)
        inv = layer["channels"] - layer["fitted"]
        sx = (layer["sigma"]["sigma_x"] or {}).get("median")
        print(
            f"{layer['name'][-40:]:<40} {layer['kernel_size']:>2} {layer['channels']:>5} "
            f"{inv:>4} {counts}  {_fmt(layer['median_r2']):>7} ({_fmt(layer['null_median_r2'])})"
            f"  {_fmt(layer['share_r2_gt_0_8'], '.1%'):>6} "
            f"({_fmt(layer['null_share_r2_gt_0_8'], '.1%'):>6})  {_fmt(sx, '.2f'):>7}"
            f"  {_undetermined(layer):>5}  {_entropy_cell(layer):>12}"
            f"  {_fmt(layer['population']['orthogonality'], '.2f'):>5}"
        )
    summary = result.summary
    inv = summary["invalid"]
    print(
        f"\n{summary['filters']} filters in {len(result.layers)} layers, {summary['fitted']} "
        f"fitted ({inv['zero']} zero, {inv['constant']} constant, {inv['non_finite']} "
        f"non-finite not fitted); median R^2 {_fmt(summary['median_r2'])} "
        f"({_fmt(summary['null_median_r2'])} {summary['null_kind'] or 'no'} null); "
        f"{_fmt(summary['share_r2_gt_0_8'], '.1%')} with R^2 > 0.8 "
        f"({_fmt(summary['null_share_r2_gt_0_8'], '.1%')})"
    )
    for k, group in summary["by_kernel_size"].items():
        print(
            f"  {k}x{k}: {group['filters']} filters, median R^2 {_fmt(group['median_r2'])} "
            f"({_fmt(group['null_median_r2'])}), R^2 > 0.8 "
            f"{_fmt(group['share_r2_gt_0_8'], '.1%')} "
            f"({_fmt(group['null_share_r2_gt_0_8'], '.1%')})"
        )
    from .census import null_line

    for kind, c in summary["nulls"].items():
        print("  " + null_line(kind, c))
    und = summary["undetermined"]
    if any(und.values()):
        print(
            f"  undetermined (no effect on the normalised model, reported as null): sigma_x "
            f"{und['sigma_x']}, sigma_y {und['sigma_y']}, alpha {und['alpha']} filters; "
            f"median adjusted R^2 {_fmt(summary['median_r2_adjusted'])}"
        )
    pop = summary["population"]
    print(
        f"  population: {pop['layers_random_like']} of {pop['layers']} layers at or above the "
        f"i.i.d. variance-entropy threshold; median sparsity {_fmt(pop['median_sparsity'], '.1%')}"
        f", orthogonality {_fmt(pop['median_orthogonality'], '.2f')}, drift between "
        f"consecutive layers {_fmt(pop['median_drift_sym_kl'])} (symmetric KL)"
    )
    for skip in result.skipped:
        print(f"  skipped {skip['name']} {tuple(skip['shape'])}: {skip['reason']}")


def _print_comparison(comparison: dict) -> None:
    nets = comparison["networks"]
    print("median R^2 per stage of depth (null in brackets); R^2 > 0.8 share")
    print(f"{'stage':>5} " + " ".join(f"{n['name'][-26:]:>28}" for n in nets))
    for j in range(comparison["stages"]):
        cells = []
        for n in nets:
            st = n["stages"][j]
            cells.append(
                f"{_fmt(st['median_r2'])} ({_fmt(st['null_median_r2'])}) "
                f"{_fmt(st['share_r2_gt_0_8'], '.0%'):>4}"
            )
        print(f"{j + 1:>5} " + " ".join(f"{c:>28}" for c in cells))
    cells = [
        f"{_fmt(n['summary']['median_r2'])} ({_fmt(n['summary']['null_median_r2'])}) "
        f"{_fmt(n['summary']['share_r2_gt_0_8'], '.0%'):>4}"
        for n in nets
    ]
    print(f"{'all':>5} " + " ".join(f"{c:>28}" for c in cells))


def _run_analyze(args: argparse.Namespace) -> int:
    if args.family != "masterkey":
        return _run_analyze_family(args)
    from scalespace_mk.networks.checkpoint import analyze, compare

    paths = list(args.checkpoint) + list(args.compare)
    if args.stages < 1:
        raise ValueError(f"--stages must be a positive integer; got {args.stages}")
    results = []
    for path in paths:
        refuse_wrong_file("analyze", path, "checkpoint")
        try:
            results.append(
                analyze(
                    path,
                    types=args.types,
                    device=args.device,
                    progress=False if args.json else None,
                    null=args.null,
                    seed=args.seed,
                    on_invalid="raise" if args.strict else "record",
                    null_size=args.null_size or None,
                )
            )
        except ValueError as exc:
            if args.strict and "layer " in str(exc):
                raise ValueError(f"{path}: {exc} (--strict)") from None
            raise
    comparison = compare(results, names=paths, stages=args.stages) if len(paths) > 1 else None
    if args.json:
        if comparison is None:
            json.dump(results[0].to_json(), sys.stdout)
        else:
            json.dump(
                {
                    "comparison": comparison,
                    "checkpoints": [
                        dict(r.to_json(), path=p) for p, r in zip(paths, results, strict=True)
                    ],
                },
                sys.stdout,
            )
        print()
    else:
        for path, result in zip(paths, results, strict=True):
            _print_table(result, path)
            print()
        if comparison is not None:
            _print_comparison(comparison)
    if args.plot:
        from pathlib import Path

        from scalespace_mk.plot import plot_analysis, plot_comparison

        out = Path(args.plot)
        written = []
        for i, result in enumerate(results):
            sub = out if len(results) == 1 else out / f"{i + 1}_{Path(paths[i]).stem}"
            written += plot_analysis(result, sub)
        if comparison is not None:
            written.append(plot_comparison(comparison, out / "comparison.png"))
        print(f"figures written to {args.plot} ({len(written)} files)", file=sys.stderr)
    return 0


def _run_analyze_family(args: argparse.Namespace) -> int:
    """``analyze --family njet|oriented``: one family census per kernel size, pooled.

    Sizes where the family is saturated (at least k*k - 1 free parameters) are skipped with
    the reason unless ``--allow-saturated``; the summary pools every fitted size, with
    ``by_kernel_size`` beside it. Invalid filters are recorded (``--strict``: refused).
    """
    import numpy as np

    from scalespace_mk.analysis.jets import family_parameters
    from scalespace_mk.networks.checkpoint import find_depthwise

    from ._family import family_fit, pooled_family_summary

    if len(args.checkpoint) + len(args.compare) != 1:
        raise ValueError("--family njet|oriented analyses one checkpoint; drop --compare")
    if args.types != list(range(1, 9)):
        raise ValueError(f"--types chooses among the 8 types; drop it with --family {args.family}")
    refuse_wrong_file("analyze", args.checkpoint[0], "checkpoint")
    layers = find_depthwise(args.checkpoint[0])
    if not layers:
        raise ValueError("no depthwise weights ([C, 1, k, k] tensors) found in the checkpoint")
    by_size: dict[int, list[tuple[str, np.ndarray]]] = {}
    for name, weight in layers.items():
        w = weight.detach().double().cpu().numpy()[:, 0]
        by_size.setdefault(w.shape[-1], []).append((name, w))
    q = family_parameters(args.family, args.order)
    out: dict = {
        "family": args.family,
        "order": args.order,
        "n_params": q,
        "by_kernel_size": {},
        "layers": [],
        "skipped": [],
    }
    total = sum(len(w) for group in by_size.values() for _, w in group)
    null_size = args.null_size or None
    parts = {}
    for k, group in sorted(by_size.items()):
        if q >= k * k - 1 and not args.allow_saturated:
            reason = (
                f"saturated: {args.family} order {args.order} has {q} free parameters for "
                f"{k * k} taps (at least taps - 1), so it fits any {k}x{k} filter; "
                "--allow-saturated fits it anyway"
            )
            out["skipped"] += [
                {"name": name, "kernel_size": k, "channels": len(w), "reason": reason}
                for name, w in group
            ]
            continue
        pooled = np.concatenate([w for _, w in group])
        share = None if null_size is None else max(1, round(null_size * len(pooled) / total))
        try:
            result, summary, nulls = family_fit(
                pooled, args, device=args.device, progress=False, null_size=share
            )
        except ValueError as exc:
            if args.strict and "filters[" in str(exc):
                # name the layer and the channel, not the index in the pooled array
                idx = int(str(exc).split("filters[", 1)[1].split("]", 1)[0])
                for name, w in group:
                    if idx < len(w):
                        raise ValueError(
                            f"layer {name!r}: filters[{idx}]" + str(exc).split("]", 1)[1]
                        ) from None
                    idx -= len(w)
            raise
        out["by_kernel_size"][str(k)] = summary
        parts[k] = (result, nulls)
        start = 0
        for name, w in group:
            sl = slice(start, start + len(w))
            start += len(w)
            ok = result.valid[sl]
            r2, adj = result.r2[sl][ok], result.r2_adjusted[sl][ok]
            out["layers"].append(
                {
                    "name": name,
                    "channels": len(w),
                    "kernel_size": k,
                    "fitted": int(ok.sum()),
                    "invalid": {
                        key: int(np.sum(result.reason[sl] == key.replace("_", "-")))
                        for key in ("zero", "constant", "non_finite")
                    },
                    "median_r2": float(np.median(r2)) if r2.size else None,
                    "median_r2_adjusted": float(np.median(adj)) if adj.size else None,
                }
            )
    if not parts:
        raise ValueError(
            f"--family {args.family} --order {args.order} is saturated at every kernel size of "
            "the checkpoint (" + ", ".join(f"{k}x{k}" for k in sorted(by_size)) + "); use a "
            "smaller --order or pass --allow-saturated"
        )
    out["summary"] = pooled_family_summary(parts, args)
    if args.plot:
        from pathlib import Path

        from scalespace_mk.plot import plot_family_analysis

        written = plot_family_analysis(out, parts, Path(args.plot))
        print(f"figures written to {args.plot} ({len(written)} files)", file=sys.stderr)
    if args.json:
        json.dump(out, sys.stdout)
        print()
        return 0
    print(f"{'layer':<48} {'C':>5} {'k':>3} {'med R2':>7} {'adj R2':>7}")
    for layer in out["layers"]:
        print(
            f"{layer['name'][-48:]:<48} {layer['channels']:>5} {layer['kernel_size']:>3} "
            f"{_fmt(layer['median_r2']):>7} {_fmt(layer['median_r2_adjusted']):>7}"
        )
    groups = list(out["by_kernel_size"].items()) + [("all", out["summary"])]
    for k, summary in groups:
        null = summary.get("null_median_r2")
        tail = "" if null is None else f"; null median R^2 {null:.3f}"
        size = "all sizes" if k == "all" else f"{k}x{k}"
        print(
            f"{size}: {summary['fitted']} of {summary['n_filters']} filters fitted, "
            f"{args.family} order {args.order}, median R^2 {_fmt(summary['median_r2'])} "
            f"(adjusted {_fmt(summary['median_r2_adjusted'])}){tail}"
        )
    for skip in out["skipped"]:
        print(
            f"  skipped {skip['name']} ({skip['kernel_size']}x{skip['kernel_size']}): "
            f"{skip['reason']}"
        )
    return 0


def _run_replace(args: argparse.Namespace) -> int:
    from scalespace_mk.networks.checkpoint import replace

    refuse_wrong_file("replace", args.checkpoint, "checkpoint")
    if args.kind is not None and args.njet_order is not None:
        print(
            "scalespace-mk replace: error: pass --kind or --njet-order, not both", file=sys.stderr
        )
        return 2
    try:
        result = replace(
            args.checkpoint,
            candidates=args.candidates if args.njet_order is None else "njet",
            filters=args.filters,
            out=args.out,
            order=2 if args.njet_order is None else args.njet_order,
            kind=args.kind,
            seed=args.seed,
        )
    except ValueError as exc:
        if args.kind is None or "kind" not in str(exc):
            raise
        print(f"scalespace-mk replace: error: --kind: {exc}", file=sys.stderr)
        return 2
    for s in result.skipped:
        print(f"skipped {s['name']}: {s['reason']}", file=sys.stderr)
    if args.kind is not None:
        if args.json:
            doc = {"kind": args.kind, "out": args.out, "layers": result.layers}
            json.dump(dict(doc, skipped=result.skipped), sys.stdout)  # _json: NaN -> null
            print()
            return 0
        print(
            f"replaced the depthwise filters of {len(result.layers)} layers by "
            f"{args.kind!r} -> {args.out}"
        )
        for layer in result.layers:
            print(f"  {layer['name']:<48} median R^2 {_fmt(layer['median_r2'])}")
        return 0
    njet = args.njet_order is not None
    if args.json:
        json.dump(
            {
                "candidates": "njet" if njet else args.candidates,
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
        f"'{'njet' if njet else args.candidates}' candidates -> {args.out}"
    )
    totals = result.totals()
    n = sum(totals.values())
    if njet:
        import numpy as np

        r2 = np.array([layer["median_r2"] for layer in result.layers], dtype=float)
        r2 = r2[np.isfinite(r2)]
        median = f"{np.median(r2):.3f}" if r2.size else "undefined (every filter is constant)"
        print(f"  N-jet order {args.njet_order}: median R^2 per layer, median {median}")
        return 0
    for key in sorted(totals, key=int):
        print(f"  candidate {key}: {totals[key]:>7} channels ({totals[key] / n:.1%})")
    return 0


def _run_extract(args: argparse.Namespace) -> int:

    from scalespace_mk.analysis.filters import save_filters
    from scalespace_mk.networks.checkpoint import extract

    # filter files (.npy, .npz, .txt) and checkpoints alike: extract reads each safely
    result = extract(list(args.checkpoints), k=args.k, seed=args.seed)
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
