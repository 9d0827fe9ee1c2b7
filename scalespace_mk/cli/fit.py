"""``scalespace-mk fit``: fit the idealised scale-space models to filters (docs/method.md#fitting).

Examples
--------
``scalespace-mk fit`` prints the method-B fit of the 8 published master key filters;
``scalespace-mk fit --method D1 --json`` prints one JSON object
``{"method": "D1", "filters": [{"index", "model", "sigma_x", "sigma_y", "alpha", "l1",
"l2"}, ...]}``; ``--plot fit.png`` also writes the learned/model/residual figure.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scalespace_mk import _json as json  # never NaN/Infinity: null + reason

from ._args import cli_words, fit_types_arg, refuse_wrong_file, source_constant

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``fit`` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The object returned by ``ArgumentParser.add_subparsers``.

    Returns
    -------
    argparse.ArgumentParser
        The ``fit`` parser, with :func:`run` set as its ``_run`` default.
    """
    # read from the source: importing analysis.fit (scipy, torch) would make --help slow
    METHODS = source_constant("analysis.fit", "METHODS")  # noqa: N806
    DEFAULT_GRID_STEP = source_constant("analysis.fit", "DEFAULT_GRID_STEP")  # noqa: N806
    DEFAULT_SIGMA_MAX = source_constant("analysis.fit", "DEFAULT_SIGMA_MAX")  # noqa: N806

    p = subparsers.add_parser(
        "fit",
        help="fit the scale-space models of the 8 master key types to filters (methods A-D)",
        description=(
            "Normalise the filters in paper mode (docs/method.md#normalisation) and fit the "
            "idealised model of "
            "each filter's type (docs/method.md#models) by one method of docs/method.md#fitting: "
            "A (weighted variance, "
            "self-weighting relations), A-exact (weighted variance, exact relation at "
            "sigma_ref), B (weighted variance matched to the model's), C1/C2 (least l1 "
            "distance; separate / one common sigma), D1/D2 (least l2 distance), and the "
            "joint variants with one sigma per group {1,2,3,4,8} and {5,6}. Type 7 is "
            "fitted over (sigma, alpha) by l1 in the C methods and by l2 otherwise. "
            "Filters are numbered from 1 in file order (the paper's numbering)."
        ),
    )
    p.add_argument(
        "--filters",
        metavar="SRC",
        default=None,
        help="filters: 'masterkey' (default, the published 8) or a path "
        "(.txt, .npy, .npz, .pt, .pth, .safetensors, or a directory with 8Filters.txt)",
    )
    p.add_argument(
        "--types",
        metavar="T1,T2,...|auto",
        type=fit_types_arg,
        default=None,
        help="master key type (1..8) of each filter, one per filter in file order, or 'auto': "
        "each filter's type is the census's best a g + b of types 1..8 (printed). Default: "
        "1..8 for the published 8 ('masterkey', or the same file given by path); required for "
        "any other set",
    )
    p.add_argument(
        "--method",
        "-m",
        choices=METHODS,
        default="B",
        help="fitting method (default: %(default)s)",
    )
    p.add_argument(
        "--sigma-max",
        metavar="PIXELS",
        type=float,
        default=DEFAULT_SIGMA_MAX,
        help="upper end of the starting grids and of method B's root bracket, pixels "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--grid-step",
        metavar="PIXELS",
        type=float,
        default=DEFAULT_GRID_STEP,
        help="spacing of the one-scale starting grids, pixels (default: %(default)s)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object instead of a table (default: off)",
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="also write a figure of the normalised filters, the models and the residuals "
        "(default: no figure)",
    )
    p.set_defaults(_run=run)
    return p


_ORDERED = (None, "masterkey")  # sources whose filters are types 1..8 in order


def _resolve_types(args: argparse.Namespace, h: Any) -> list[int]:
    """The type of each filter: given, chosen by the census (``auto``), or 1..8 for the
    published 8; anything else is refused rather than guessed."""
    import numpy as np

    n = h.shape[0]
    if args.types == "auto":
        from scalespace_mk.analysis.census import census

        res = census(h, types=list(range(1, 9)), progress=False)
        # a filter the census cannot fit (zero, constant, non-finite) has no type: it gets
        # type 1 as a placeholder, and fit_filters records its "no fit" row with the reason
        chosen = [None if t is None else int(t) for t in res.type]
        shown = ",".join("-" if t is None else str(t) for t in chosen)
        r2 = ", ".join("-" if not np.isfinite(r) else f"{r:.3f}" for r in res.r2)
        print(
            f"--types auto: types chosen by the census (best a g + b of types 1..8): "
            f"{shown} (R^2 {r2}; '-': nothing to fit, listed as type 1 with no fit)",
            file=sys.stderr if args.json else sys.stdout,
        )
        return [1 if t is None else t for t in chosen]
    if args.types is not None:
        if len(args.types) != n:
            raise ValueError(
                f"--types gives {len(args.types)} types for {n} filters; give one type per "
                "filter (or --types auto)"
            )
        return list(args.types)
    if args.filters in _ORDERED:
        return list(range(1, 9))
    from scalespace_mk.analysis.filters import load_filters

    if n == 8 and np.array_equal(h, load_filters()):
        return list(range(1, 9))  # the published file, given by path
    raise ValueError(
        f"--filters {args.filters} holds {n} filters whose master key types are unknown; give "
        "the type of each with --types T1,T2,... (integers 1..8, one per filter in file "
        "order) or let the census choose with --types auto"
    )


def _cli_words(result: Any) -> Any:
    """The result with its recorded errors in CLI words (``--sigma-max``, not ``sigma_max``)."""
    import dataclasses

    fits = tuple(
        f
        if f.error is None
        else dataclasses.replace(f, error=f.error.replace("sigma_max", "--sigma-max"))
        for f in result.fits
    )
    return dataclasses.replace(result, fits=fits)


def run(args: argparse.Namespace) -> int:
    """Fit and print the results for the parsed ``fit`` arguments.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments with ``filters``, ``types``, ``method``, ``json`` and ``plot``.

    Returns
    -------
    int
        0 on success, 2 on a usage or data error (message on stderr).

    Notes
    -----
    With ``--json`` stdout holds exactly one JSON object ``{"method": M, "filters":
    [{"index", "model", "sigma_x", "sigma_y", "alpha", "l1", "l2"}]}``; ``index`` starts at
    1; for one-scale fits and type 7 ``sigma_x == sigma_y``; ``alpha`` is null except for
    type 7. ``l1`` and ``l2`` are the norms of the fitted model minus the normalised filter.
    """
    from scalespace_mk.analysis.filters import load_filters
    from scalespace_mk.analysis.fit import fit_filters

    try:
        try:
            h = load_filters(args.filters, check_values=False)  # bad filters: 'no fit' rows
        except (ValueError, TypeError):
            if args.filters is not None:
                refuse_wrong_file("fit", args.filters, "filters")  # a checkpoint: say so
            raise
        types = _resolve_types(args, h)
        result = fit_filters(
            h,
            types,
            method=args.method,
            sigma_max=args.sigma_max,
            grid_step=args.grid_step,
            on_error="record",
        )
        result = _cli_words(result)
        if args.plot is not None:
            from scalespace_mk.plot import plot_fit

            plot_fit(result, path=args.plot)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        message = cli_words(str(exc), None, "fit")  # CLI options, not Python names
        print(f"scalespace-mk fit: error: {message}", file=sys.stderr)
        return 2
    for f in result.fits:  # recorded, not silent: the row says "no fit" and why
        if f.error is not None:
            error = f.error
            print(f"scalespace-mk fit: warning: filter {f.index}: {error}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        source = "the published master key filters" if args.filters is None else args.filters
        print(f"fit of {source}")
        print(result.format_table())
        if args.plot is not None:
            print(f"figure written to {args.plot}")
    return 0
