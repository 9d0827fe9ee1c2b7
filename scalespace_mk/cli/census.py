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

from ._args import model_types_arg

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
    p.add_argument("--plot", metavar="FILE", default=None, help="write histograms to FILE")
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="torch device (default cpu)"
    )
    p.add_argument(
        "--method",
        default="discgauss",
        help="1-D Gaussian discretisation (discgauss, samplgauss, normsamplgauss, intgauss, "
        "linintgauss; default discgauss)",
    )
    p.add_argument("--mode", default="paper", help="model construction: paper (default) or full")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads during the census (default: torch's setting; 1 helps on a "
        "CPU shared with other busy processes)",
    )
    p.set_defaults(_run=run)
    return p


def _summary(result: Any, seconds: float, shape: tuple[int, ...]) -> str:
    import numpy as np

    r2 = result.r2
    lines = [
        f"census of {shape[0]} filters ({shape[1]}x{shape[2]}) in {seconds:.2f} s",
        f"{'type':>6}  {'count':>7}  {'share':>6}  {'median R^2':>10}  {'R^2 > 0.8':>9}",
    ]
    n = len(result)

    def row(label: str, mask: np.ndarray) -> str:
        count = int(mask.sum())
        med = f"{np.median(r2[mask]):.4f}" if count else "-"
        good = f"{100.0 * np.mean(r2[mask] > 0.8):.1f} %" if count else "-"
        return f"{label:>6}  {count:>7}  {100.0 * count / n:5.1f}%  {med:>10}  {good:>9}"

    for j, t in enumerate(result.types):
        lines.append(row(str(t), result.best == j))
    lines.append(row("all", np.ones(n, dtype=bool)))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``scalespace-mk census``; returns the exit code (0 on success)."""
    from scalespace_mk.analysis.census import DEFAULT_TYPES, census
    from scalespace_mk.analysis.filters import load_filters

    filters = load_filters(args.filters)
    types = tuple(args.types) if args.types is not None else DEFAULT_TYPES
    progress = False if args.json else None  # None: auto (large inputs on a terminal)
    start = time.perf_counter()
    result = census(
        filters,
        types=types,
        method=args.method,
        mode=args.mode,
        device=args.device,
        progress=progress,
        num_threads=args.threads,
    )
    seconds = time.perf_counter() - start
    if args.plot:
        from scalespace_mk.plot import plot_census

        fig = plot_census(result, path=args.plot)
        import matplotlib.pyplot as plt  # after plot_census chose the backend

        plt.close(fig)
    if args.json:
        json.dump({"seconds": seconds, "filters": result.records()}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(_summary(result, seconds, filters.shape))
    if args.plot:
        print(f"histograms written to {args.plot}")
    return 0
