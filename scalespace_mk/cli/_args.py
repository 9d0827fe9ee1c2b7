"""Argument types shared by the command groups."""

from __future__ import annotations

import argparse

__all__ = ["add_null_arguments", "masterkey_types_arg", "model_types_arg"]


def masterkey_types_arg(text: str) -> list[int]:
    """``--types`` of fit and spread: master-key types 1..8, comma- or space-separated."""
    try:
        values = [int(tok) for tok in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--types must be comma-separated integers in 1..8; got {text!r}"
        ) from None
    if not values or any(v < 1 or v > 8 for v in values):
        raise argparse.ArgumentTypeError(f"--types must be integers in 1..8; got {text!r}")
    return values


def model_types_arg(text: str) -> list[int | str]:
    """``--types`` of census and analyze: types 1..8 and/or model names such as ``dxx``."""
    tokens = [tok for tok in text.replace(",", " ").split() if tok]
    if not tokens:
        raise argparse.ArgumentTypeError(
            f"--types must list types 1..8 and/or model names (e.g. '1,5,dxx'); got {text!r}"
        )
    return [int(tok) if tok.lstrip("+-").isdigit() else tok for tok in tokens]


def add_null_arguments(p: argparse.ArgumentParser) -> None:
    """``--null``, ``--seed`` and ``--strict`` of census and analyze."""
    p.add_argument(
        "--null",
        choices=("none", "iid", "phase", "both"),
        default="both",
        help="null model fitted beside the filters: i.i.d. Gaussian filters (iid), the "
        "filters' own power spectra with random phases (phase), both (default), or none; "
        "see docs/analysis.md",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the null filters and bootstrap (default 0)"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop with an error at the first zero, constant or NaN/Inf filter (default: "
        "record it with type null, r2 null and its reason, and go on)",
    )
