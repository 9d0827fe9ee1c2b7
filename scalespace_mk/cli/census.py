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
import sys
import time
from typing import Any

from scalespace_mk import _json as json  # never NaN/Infinity: null + reason

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
    add_stream_arguments(p)
    p.set_defaults(_run=run)
    return p


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text!r}")
    return value


def add_stream_arguments(p: argparse.ArgumentParser) -> None:
    """``--out``, ``--chunk-rows``, ``--offset``, ``--rows``, ``--limit``, ``--dataset``,
    ``--restart``, ``--keep-parts``: the streamed census of large inputs (docs/large_studies.md).
    """
    g = p.add_argument_group("large inputs (docs/large_studies.md)")
    g.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help="write the result as columns to FILE.parquet (pyarrow) or FILE.npz, chunk by "
        "chunk with bounded memory, resumable (rerun the same command after a crash) and "
        "split across torchrun/srun ranks; FILE.json writes the --json document instead "
        "(default: no file, the summary on stdout)",
    )
    g.add_argument(
        "--chunk-rows",
        type=_positive,
        default=None,
        metavar="N",
        help="filters per chunk with --out (default 65536 up to 15x15 filters, fewer for larger "
        "ones): the unit of memory, resuming and of the split across ranks",
    )
    g.add_argument(
        "--offset", type=_count, default=0, metavar="N", help="first row to fit (default 0)"
    )
    g.add_argument(
        "--rows",
        type=_count,
        default=None,
        metavar="N",
        help="rows from --offset (default: to the end)",
    )
    g.add_argument(
        "--limit", type=_count, default=None, metavar="N", help="fit at most N rows (default: all)"
    )
    g.add_argument(
        "--dataset",
        default=None,
        metavar="NAME",
        help="HDF5 dataset holding the filters (default: 'filters', 'kernels' or the only one)",
    )
    g.add_argument(
        "--restart",
        action="store_true",
        help="with --out: compute again, discarding the parts of an unfinished run (else "
        "resumed) or a finished result of the same input and options (else kept as it is)",
    )
    g.add_argument(
        "--keep-parts", action="store_true", help="with --out: keep FILE.parts/ after the merge"
    )


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

    out = getattr(args, "out", None)
    if out is not None and not out.lower().endswith((".parquet", ".npz", ".json")):
        raise ValueError(f"--out must end in .parquet, .npz or .json; got {out!r}")
    if out is not None and not out.lower().endswith(".json"):
        return _run_stream(args)
    for opt in ("chunk_rows", "restart", "keep_parts"):
        if getattr(args, opt, None):
            raise ValueError(f"--{opt.replace('_', '-')} works with --out FILE.parquet/.npz")
    try:
        filters = _load_selection(args)
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
    nulls, r2_null = {}, None
    kinds = null_kinds(args.null)
    if kinds:
        learned = filters[result.valid]
        r2_null = null_r2(learned, kinds, args.seed, num_threads=args.threads, **kw)
        nulls = {kind: null_contrast(result.r2, r2, seed=args.seed) for kind, r2 in r2_null.items()}
        _add_ceilings(nulls, result, filters.shape[-1], kinds, args, kw)
    seconds = time.perf_counter() - start
    if args.plot:
        from scalespace_mk.plot import plot_census

        fig = plot_census(result, null=r2_null, path=args.plot)  # the null beside the R^2
        import matplotlib.pyplot as plt  # after plot_census chose the backend

        plt.close(fig)
    doc = {
        "seconds": seconds,
        "filters": _records(result, filters.shape[-1], args.mode, args.method),
        "invalid": result.invalid_counts(),
        "null": nulls,
    }
    if out is not None:
        _write_json(out, doc)
    if args.json:
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(_summary(result, seconds, filters.shape, nulls))
    if out is not None:
        print(f"records written to {out}")
    if args.plot:
        print(f"histograms written to {args.plot}")
    return 0


def _load_selection(args: argparse.Namespace) -> Any:
    """The filters of FILTERS, rows ``--offset`` .. (``--rows``, ``--limit``), in memory."""
    from scalespace_mk.analysis.filters import load_filters

    chosen = args.offset or args.rows is not None or args.limit is not None or args.dataset
    if not chosen:
        return load_filters(args.filters, check_values=False)
    from scalespace_mk.analysis.sources import open_filters, select_rows

    src = (
        open_filters(load_filters(args.filters, check_values=False))
        if args.filters in ("masterkey", "builtin")
        else open_filters(args.filters, dataset=args.dataset)
    )
    try:
        start, stop = select_rows(len(src), args.offset, args.rows, args.limit)
        if start == stop:
            raise ValueError(f"--offset {args.offset} --rows/--limit select no filters")
        return src.read(start, stop)
    finally:
        src.close()


def _write_json(path: str, doc: dict) -> None:
    from scalespace_mk._io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(doc, fh)
            fh.write("\n")


def _run_stream(args: argparse.Namespace) -> int:
    """``census FILTERS --out FILE.parquet|.npz``: the streamed census (analysis.stream)."""
    from scalespace_mk.analysis.census import DEFAULT_TYPES
    from scalespace_mk.analysis.null import null_kinds
    from scalespace_mk.analysis.stream import census_stream

    if args.plot:
        raise ValueError("--plot draws a census held in memory; drop it with --out")
    if args.strict:
        raise ValueError("--strict stops at a bad filter; --out records them (drop --strict)")
    family = getattr(args, "family", "masterkey")
    kw: dict[str, Any] = dict(mode=args.mode, device=args.device, num_threads=args.threads)
    if family == "masterkey":
        kw.update(types=tuple(args.types) if args.types is not None else DEFAULT_TYPES)
        kw.update(method=args.method)
    else:
        kw.update(family=family, order=args.order, allow_saturated=args.allow_saturated)
    source = args.filters
    if source in ("masterkey", "builtin"):
        from scalespace_mk.analysis.filters import load_filters

        source = load_filters(source, check_values=False)
    summary = census_stream(
        source,
        args.out,
        chunk_rows=args.chunk_rows,
        offset=args.offset,
        rows=args.rows,
        limit=args.limit,
        dataset=args.dataset,
        null=null_kinds(args.null) if args.null else (),
        seed=args.seed,
        restart=args.restart,
        keep_parts=args.keep_parts,
        progress=False if args.json else None,
        **kw,
    )
    if summary.rank != 0:
        return 0
    info = {
        "out": str(summary.path),
        "rows": summary.rows,
        "chunks": summary.chunks,
        "resumed": summary.resumed,
        "ranks": summary.world,
        "seconds": summary.seconds,
        "up_to_date": summary.up_to_date,
    }
    if args.json:
        json.dump(info, sys.stdout)
        sys.stdout.write("\n")
    elif summary.up_to_date:
        print(
            f"{summary.path} is up to date: the census of these {summary.rows} filters with "
            "these options; nothing computed (--restart computes it again)"
        )
    else:
        print(
            f"census of {summary.rows} filters in {summary.chunks} chunk(s) "
            f"({summary.resumed} resumed, {summary.world} rank(s)) in {summary.seconds:.2f} s: "
            f"written to {summary.path}"
        )
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
    doc = {"seconds": seconds, "summary": summary, "filters": result.records()}
    if getattr(args, "out", None) is not None:
        _write_json(args.out, doc)
    if args.json:
        json.dump(doc, sys.stdout)
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
