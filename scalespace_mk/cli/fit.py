"""``scalespace-mk fit``: fit the idealised scale-space models to filters (SPEC §8).

Examples
--------
``scalespace-mk fit`` prints the method-B fit of the 8 published master key filters;
``scalespace-mk fit --method D1 --json`` prints one JSON object
``{"method": "D1", "filters": [{"index", "model", "sigma_x", "sigma_y", "alpha", "l1",
"l2"}, ...]}``; ``--plot fit.png`` also writes the learned/model/residual figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._args import masterkey_types_arg

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
    from scalespace_mk.analysis.fit import METHODS

    p = subparsers.add_parser(
        "fit",
        help="fit the scale-space models of the 8 master key types to filters (methods A-D)",
        description=(
            "Normalise the filters in paper mode (SPEC §7) and fit the idealised model of "
            "each filter's type (SPEC §5) by one method of SPEC §8: A (weighted variance, "
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
        metavar="T1,T2,...",
        type=masterkey_types_arg,
        default=None,
        help="master key type (1..8) of each filter; default 1..8 when there are 8 filters, "
        "required otherwise",
    )
    p.add_argument(
        "--method",
        "-m",
        choices=METHODS,
        default="B",
        help="fitting method (default B)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="also write a figure of the normalised filters, the models and the residuals",
    )
    p.set_defaults(_run=run)
    return p


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
        h = load_filters(args.filters)
        if args.types is None and h.shape[0] != 8:
            raise ValueError(
                f"the filters hold {h.shape[0]} filters, not the 8 published ones; give the "
                "master key type of each with --types T1,T2,... (integers 1..8)"
            )
        if args.types is not None and len(args.types) != h.shape[0]:
            raise ValueError(
                f"--types gives {len(args.types)} types for {h.shape[0]} filters; give one "
                "type per filter"
            )
        result = fit_filters(h, args.types, method=args.method, on_error="record")
        if args.plot is not None:
            from scalespace_mk.plot import plot_fit

            plot_fit(result, path=args.plot)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"scalespace-mk fit: error: {exc}", file=sys.stderr)
        return 2
    for f in result.fits:  # recorded, not silent: the row says "no fit" and why
        if f.error is not None:
            print(f"scalespace-mk fit: warning: filter {f.index}: {f.error}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        source = "the published master key filters" if args.filters is None else args.filters
        print(f"fit of {source}")
        print(result.format_table())
        if args.plot is not None:
            print(f"figure written to {args.plot}")
    return 0
