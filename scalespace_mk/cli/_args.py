"""Argument types shared by the command groups."""

from __future__ import annotations

import argparse

__all__ = ["masterkey_types_arg", "model_types_arg"]


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
