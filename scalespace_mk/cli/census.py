"""``scalespace-mk census``: best linear shift ``a g + b`` of every model for many filters.

Examples
--------
``scalespace-mk census masterkey`` prints, for the 8 published filters, how many are best
explained by each type, the median R^2 and the share with R^2 > 0.8;
``scalespace-mk census filters.npy --json`` prints one JSON object
``{"seconds": ..., "filters": [{"index": 0, "type": 5, "sigma_x": ..., ...}, ...]}``;
``--plot census.png`` writes histograms of the types, R^2 and scales.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ._args import add_device_option, add_null_arguments, model_types_arg, refuse_wrong_file
from ._family import add_family_args

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``census`` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The object returned by ``ArgumentParser.add_subparsers``.

    Returns
    -------
    argparse.ArgumentParser
        The ``census`` parser, with ``run`` set as its ``_run`` default.
    """
    p = subparsers.add_parser(
        "census",
        help="fit y ~ a g(sigma_x, sigma_y) + b for every filter and model type (vectorised)",
        description=(
            "For every filter y and model type g (the 8 master key types by default), find "
            "the scales (standard deviations, >= 0; type 7: sigma and alpha) and the gain a "
            "and offset b minimising ||a g + b - y||_2, and report the best type per filter "
            "with R^2 = 1 - RSS/TSS (the fraction of the filter's variance explained). "
            "Filters are stored depthwise weights, rows top to bottom, y up; indices in the "
            "output are 0-based positions in the input."
        ),
    )
    p.add_argument(
        "filters",
        metavar="FILTERS",
        help="'masterkey' (the published 8) or a path (.txt, .npy, .npz, .pt, "
        ".pth, .safetensors, or a directory with 8Filters.txt); shape [N, k, k], k odd",
    )
    p.add_argument(
        "--types",
        type=model_types_arg,
        default=None,
        metavar="LIST",
        help="comma-separated types: 1..8 and/or model names such as dxx, dxy, dyy, lap "
        "(default 1,2,3,4,5,6,7,8)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    p.add_argument(
        "--plot", metavar="FILE", default=None, help="write histograms to FILE (default: no figure)"
    )
    add_device_option(p, "the census")
    p.add_argument(
        "--method",
        default="discgauss",
        help="1-D Gaussian discretisation (discgauss, samplgauss, normsamplgauss, intgauss, "
        "linintgauss; default discgauss)",
    )
    p.add_argument("--mode", default="paper", help="model construction: paper (default) or full")
    add_null_arguments(p)
    add_family_args(p)
    p.set_defaults(_run=run)
    return p


def _summary(
    result: Any, seconds: float, shape: tuple[int, ...], nulls: dict[str, Any] | None = None
) -> str:
    import numpy as np

    r2 = result.r2
    lines = [
        f"census of {shape[0]} filters ({shape[1]}x{shape[2]}) in {seconds:.2f} s",
        f"{'type':>6}  {'count':>7}  {'share':>6}  {'median R^2':>10}  {'R^2 > 0.8':>9}",
    ]
    n = max(int(result.valid.sum()), 1)

    def row(label: str, mask: np.ndarray) -> str:
        count = int(mask.sum())
        med = f"{np.median(r2[mask]):.4f}" if count else "-"
        good = f"{100.0 * np.mean(r2[mask] > 0.8):.1f} %" if count else "-"
        return f"{label:>6}  {count:>7}  {100.0 * count / n:5.1f}%  {med:>10}  {good:>9}"

    for j, t in enumerate(result.types):
        lines.append(row(str(t), result.best == j))
    lines.append(row("all", result.valid))
    invalid = result.invalid_counts()
    if sum(invalid.values()):
        lines.append(
            "not fitted: "
            + ", ".join(f"{n} {k.replace('_', '-')}" for k, n in invalid.items() if n)
            + " (type and R^2 null in --json; --strict stops at the first)"
        )
    for kind, c in (nulls or {}).items():
        lines.append(null_line(kind, c))
    return "\n".join(lines)


def null_line(kind: str, c: dict[str, Any]) -> str:
    """One line comparing the learned filters with a null model (numbers of null_contrast)."""

    def ci(pair: Any) -> str:
        return f" [{pair[0]:+.3f}, {pair[1]:+.3f}]" if pair else ""

    if c["median_diff"] is None:
        return f"null {kind}: nothing to compare"
    line = (
        f"null {kind:>5}: median R^2 {c['median_r2']:.3f} ({c['null_median_r2']:.3f}), "
        f"difference {c['median_diff']:+.3f}{ci(c['median_diff_ci'])}; "
        f"R^2 > 0.8 {c['share_r2_gt_0_8']:.1%} ({c['null_share_r2_gt_0_8']:.1%})"
    )
    if c.get("ceiling_median_r2") is not None:
        share = c.get("gap_share")
        line += (
            f"; ceiling {c['ceiling_median_r2']:.3f} (ideal filters on this null), gap "
            + ("-" if share is None else f"{share:.0%}")
            + " of the attainable"
        )
    return line


def _add_ceilings(nulls: dict, result: Any, k: int, kinds: Any, args: Any, kw: dict) -> None:
    """Each null's ceiling (the same null of the fitted models ``a g + b``, the ideal versions
    of the same filters, :mod:`scalespace_mk.analysis.ceiling`) and the gap share."""
    import numpy as np

    from scalespace_mk.analysis.ceiling import fitted_models, gap_share, matched_ceiling

    models = fitted_models(result, k, mode=args.mode, method=args.method)[result.valid]
    z = matched_ceiling(models, kinds, args.seed, num_threads=args.threads, **kw)
    for kind, c in nulls.items():
        vals = z[kind][np.isfinite(z[kind])]
        if not vals.size:
            continue
        ceil = float(np.median(vals))
        c["ceiling_median_r2"] = ceil
        c["attainable_gap"] = 1.0 - ceil
        c["gap_share"] = gap_share(
            c["median_r2"], c["null_median_r2"], {"attainable_gap": 1.0 - ceil}
        )


def _records(result: Any, k: int, mode: str, method: str) -> list[dict[str, Any]]:
    """Census records with undetermined scales None (and why), effective parameters and
    adjusted R^2 (:mod:`scalespace_mk.analysis.identify`)."""
    from scalespace_mk.analysis.identify import annotate_records, identify_census

    ident = identify_census(result, size=k, mode=mode, method=method)
    return annotate_records(result.records(), ident, n_types=len(result.types), taps=k * k)


def run(args: argparse.Namespace) -> int:
    """Run ``scalespace-mk census``; returns the exit code (0 on success)."""
    from scalespace_mk.analysis.census import DEFAULT_TYPES, census
    from scalespace_mk.analysis.filters import load_filters

    try:
        filters = load_filters(args.filters, check_values=False)
    except (ValueError, TypeError):
        refuse_wrong_file("census", args.filters, "filters")  # a checkpoint: say so
        raise
    types = tuple(args.types) if args.types is not None else DEFAULT_TYPES
    progress = False if args.json else None  # None: auto (large inputs on a terminal)
    if getattr(args, "family", "masterkey") != "masterkey":
        return _run_family(args, filters)
    from scalespace_mk.analysis.census import null_r2
    from scalespace_mk.analysis.null import null_contrast, null_kinds

    start = time.perf_counter()
    kw = dict(types=types, method=args.method, mode=args.mode, device=args.device)
    try:
        result = census(
            filters,
            progress=progress,
            num_threads=args.threads,
            on_invalid="raise" if args.strict else "record",
            **kw,
        )
    except ValueError as exc:
        if args.strict and "filters[" in str(exc):
            raise ValueError(f"{exc} (--strict)") from None
        raise
    nulls = {}
    kinds = null_kinds(args.null)
    if kinds:
        learned = filters[result.valid]
        r2_null = null_r2(learned, kinds, args.seed, num_threads=args.threads, **kw)
        nulls = {kind: null_contrast(result.r2, r2, seed=args.seed) for kind, r2 in r2_null.items()}
        _add_ceilings(nulls, result, filters.shape[-1], kinds, args, kw)
    seconds = time.perf_counter() - start
    if args.plot:
        from scalespace_mk.plot import plot_census

        fig = plot_census(result, path=args.plot)
        import matplotlib.pyplot as plt  # after plot_census chose the backend

        plt.close(fig)
    if args.json:
        json.dump(
            {
                "seconds": seconds,
                "filters": _records(result, filters.shape[-1], args.mode, args.method),
                "invalid": result.invalid_counts(),
                "null": nulls,
            },
            sys.stdout,
        )
        sys.stdout.write("\n")
        return 0
    print(_summary(result, seconds, filters.shape, nulls))
    if args.plot:
        print(f"histograms written to {args.plot}")
    return 0


def _run_family(args: argparse.Namespace, filters: Any) -> int:
    """``census --family njet|oriented``: the family census, its summary and the nulls."""
    from ._family import family_summary

    if args.method != "discgauss":
        raise ValueError(
            f"--family {args.family} builds discrete Gaussians only; drop --method {args.method}"
        )
    if args.plot:
        raise ValueError(f"--plot draws the 8-type census; drop it with --family {args.family}")
    start = time.perf_counter()
    result, summary = family_summary(
        filters,
        args,
        mode=args.mode,
        device=args.device,
        num_threads=args.threads,
        progress=False if args.json else None,
    )
    seconds = time.perf_counter() - start
    if args.json:
        out = {"seconds": seconds, "summary": summary, "filters": result.records()}
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
        return 0
    n, k = filters.shape[0], filters.shape[1]
    print(
        f"{args.family} census (order {args.order}, {summary['n_params']} free parameters "
        f"per filter) of {n} filters ({k}x{k}) in {seconds:.2f} s"
    )
    adj, med = summary["median_r2_adjusted"], summary["median_r2"]
    print(
        f"  median R^2 {med if med is None else round(med, 4)}; adjusted "
        f"{adj if adj is None else round(adj, 4)}"
    )
    share = summary["share_r2_above_0.8"]
    print(f"  R^2 > 0.8: {'-' if share is None else format(100.0 * share, '.1f')} %")
    inv = summary["invalid"]
    if any(inv.values()):
        print(
            f"  not fitted: {inv['zero']} zero, {inv['constant']} constant, "
            f"{inv['non_finite']} non-finite (reason in --json; --strict stops at the first)"
        )
    if summary.get("null_median_r2") is not None:
        print(f"  null median R^2 {summary['null_median_r2']:.4f}")
    return 0
