"""``scalespace-mk bank``: write a bank of idealised model kernels (and optionally a figure).

Examples
--------
``scalespace-mk bank`` writes ``bank.npz`` with the 8 master key models at sigma 1;
``scalespace-mk bank --sigma 0.5 1 2 --models dx dy lap --mode full --plot bank.png``
writes three scales of three models and a figure (rows sigma, columns model).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._args import cli_words, source_constant

__all__ = ["add_parser", "run"]


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None


def _int(text: str) -> int:
    from scalespace_mk.limits import is_ascii_int

    if not is_ascii_int(text.strip()) or len(text.strip()) > 30:  # int() takes '1_0'
        raise argparse.ArgumentTypeError(f"expected an odd integer such as 7; got {text[:40]!r}")
    return int(text)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``bank`` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The object returned by ``ArgumentParser.add_subparsers``.

    Returns
    -------
    argparse.ArgumentParser
        The ``bank`` parser, with :func:`run` set as its ``_run`` default.
    """
    DEFAULT_MODELS = source_constant("scalespace.bank", "DEFAULT_MODELS")  # noqa: N806
    METHODS = source_constant("scalespace.kernels", "METHODS")  # noqa: N806

    p = subparsers.add_parser(
        "bank",
        help="write idealised model kernels for several scales to an .npz file",
        description=(
            "Evaluate idealised models (docs/method.md#models) at several scales and write them "
            "to an .npz "
            "file with arrays 'kernels' [n_sigma, n_models, size, size] (stored depthwise "
            "weights: rows top to bottom, y up, x = c - m, y = m - r; use as conv2d weights "
            "with no flip), 'sigma' and 'models'. The file is written atomically."
        ),
    )
    p.add_argument(
        "--sigma",
        metavar="S",
        type=_float,
        nargs="+",
        default=[1.0],
        help="standard deviations in pixels, >= 0 (default: 1.0)",
    )
    p.add_argument(
        "--models",
        metavar="NAME",
        nargs="+",
        default=list(DEFAULT_MODELS),
        help="model names: mk1..mk8, T, dx, dy, dxx, dxy, ... (1-4 letters x/y), dx+, dx-, "
        "dy+, dy-, lap (default: mk1 .. mk8)",
    )
    p.add_argument(
        "--alpha",
        metavar="A",
        type=_float,
        default=0.5,
        help="weight of the Laplacian in mk7 = K - alpha nabla5 T (default: 0.5)",
    )
    p.add_argument("--size", metavar="K", type=_int, default=7, help="odd kernel size (default: 7)")
    p.add_argument(
        "--method",
        default="discgauss",
        metavar="METHOD",
        help=f"1-D Gaussian discretisation: {', '.join(METHODS)} (default: discgauss)",
    )
    p.add_argument(
        "--mode",
        default="paper",
        metavar="MODE",
        help="paper (crop, then 3-tap operators with reflect boundary, as the reference "
        "analysis) or full (operators on the full-support kernel, then crop); default paper",
    )
    p.add_argument(
        "--epsilon",
        metavar="E",
        type=_float,
        default=1e-8,
        help="relative truncation error of each 1-D kernel, in (0, 1) (default: 1e-8)",
    )
    p.add_argument(
        "--out", metavar="FILE.npz", default="bank.npz", help="output file (default: bank.npz)"
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="also draw the bank (rows sigma, columns model; diverging colormap at 0) "
        "(default: no figure)",
    )
    p.set_defaults(_run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Build, write and summarise a bank for the parsed ``bank`` arguments.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments: ``sigma``, ``models``, ``alpha``, ``size``, ``method``, ``mode``,
        ``epsilon``, ``out``, ``plot``.

    Returns
    -------
    int
        0 on success, 2 on a usage error (message on stderr).
    """
    from scalespace_mk.scalespace.bank import make_bank, save_bank

    if args.plot:  # before anything is written: a figure format matplotlib can write
        from pathlib import Path

        from matplotlib.figure import Figure

        formats = Figure().canvas.get_supported_filetypes()
        suffix = Path(args.plot).suffix.lower().lstrip(".")
        if suffix not in formats:
            print(
                f"scalespace-mk bank: error: --plot {args.plot!r}: unknown figure format "
                f"{suffix or '(none)'!r}; use one of {', '.join('.' + f for f in sorted(formats))}",
                file=sys.stderr,
            )
            return 2
    try:
        bank = make_bank(
            args.sigma,
            args.models,
            alpha=args.alpha,
            size=args.size,
            method=args.method,
            mode=args.mode,
            epsilon=args.epsilon,
        )
    except (ValueError, TypeError) as exc:
        message = cli_words(str(exc), None, "bank")  # CLI options, not Python names
        print(f"scalespace-mk bank: error: {message}", file=sys.stderr)
        return 2
    out = save_bank(args.out, bank)
    n_sigma, n_models, size, _ = bank.kernels.shape
    print(
        f"wrote {out}: kernels [{n_sigma}, {n_models}, {size}, {size}] "
        "(sigma x model x row x col; rows top to bottom, y up)"
    )
    print(f"  sigma : {', '.join(f'{s:g}' for s in bank.sigma)}")
    alpha = f", alpha {bank.alpha:g}" if any(m == "mk7" for m in bank.models) else ""
    print(f"  models: {' '.join(bank.models)}{alpha}")
    print(f"  method {bank.method}, mode {bank.mode}, epsilon {bank.epsilon:g}")
    if args.plot:
        from scalespace_mk.plot import _pyplot, plot_bank

        fig = plot_bank(bank.kernels, bank.sigma, bank.models, path=args.plot)
        _pyplot().close(fig)
        print(f"  figure: {args.plot}")
    return 0
