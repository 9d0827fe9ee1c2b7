"""Argument types shared by the command groups."""

from __future__ import annotations

import argparse

__all__ = [
    "DEVICES",
    "add_null_arguments",
    "add_device_option",
    "file_kind",
    "fit_types_arg",
    "masterkey_types_arg",
    "model_types_arg",
    "refuse_wrong_file",
]

#: choices of every ``--device`` option
DEVICES = ("cpu", "cuda")


def masterkey_types_arg(text: str) -> list[int]:
    """``--types`` of fit and spread: master-key types 1..8, comma- or space-separated."""
    from scalespace_mk._checks import is_ascii_int

    tokens = text.replace(",", " ").split()
    if not all(is_ascii_int(tok) for tok in tokens):  # int() would take '1_0' and other scripts
        raise argparse.ArgumentTypeError(
            f"--types must be comma-separated integers in 1..8 (ASCII digits); got {text!r}"
        )
    values = [int(tok) for tok in tokens]
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
    from scalespace_mk._checks import is_ascii_int

    return [int(tok) if is_ascii_int(tok) else tok for tok in tokens]


def add_device_option(parser: argparse.ArgumentParser, what: str) -> None:
    """Add the shared ``--device {cpu,cuda}`` option (default cpu) to ``parser``."""
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help=f"torch device for {what} (default: %(default)s)",
    )


def fit_types_arg(text: str) -> list[int] | str:
    """``--types`` of fit: ``auto`` (chosen by the census) or master-key types 1..8."""
    if text.strip().lower() == "auto":
        return "auto"
    return masterkey_types_arg(text)


_FILTER_SUFFIXES = (".txt", ".dat", ".text", ".npy", ".npz")


def file_kind(path: str) -> str:
    """Guess what a file holds from its first bytes: ``"filters"`` (a filter text file or a
    numpy array), ``"checkpoint"`` (a torch or safetensors file) or ``"unknown"``."""
    import json
    import zipfile
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        return "unknown"
    with open(p, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"\x93NUMPY") or p.suffix.lower() in (".txt", ".dat", ".text"):
        return "filters"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return "unknown"
        if any(n.endswith("data.pkl") for n in names):
            return "checkpoint"
        return "filters" if names and all(n.endswith(".npy") for n in names) else "unknown"
    if head[:1] == b"\x80":  # a legacy torch.save pickle
        return "checkpoint"
    if p.suffix.lower() == ".safetensors" and len(head) == 8:
        n = int.from_bytes(head, "little")
        try:
            with open(p, "rb") as fh:
                fh.seek(8)
                header = json.loads(fh.read(min(n, 1 << 24)))
        except (ValueError, OSError):
            return "unknown"
        keys = [k for k in header if k != "__metadata__"]
        if set(keys) & {"filters", "kernels"} or (
            len(keys) == 1 and len(header[keys[0]].get("shape", ())) in (2, 3)
        ):
            return "filters"
        return "checkpoint"
    return "unknown"


def refuse_wrong_file(command: str, path: str, wanted: str) -> None:
    """Raise a one-line ValueError when ``path`` is not the kind of file ``command`` reads.

    ``wanted`` is ``"checkpoint"`` (analyze, replace, eval) or ``"filters"`` (census, fit).
    """
    kind = file_kind(path)
    if kind == "filters" and wanted == "checkpoint":
        raise ValueError(
            f"{path} holds a filter array, not a network checkpoint; 'scalespace-mk {command}' "
            f"reads checkpoints. For filters use 'scalespace-mk census {path}' (best type and "
            f"scales per filter) or 'scalespace-mk fit --filters {path} --types auto'"
        )
    if kind == "checkpoint" and wanted == "filters":
        raise ValueError(
            f"{path} is a network checkpoint, not a filter array; 'scalespace-mk {command}' "
            f"reads filters. For a checkpoint use 'scalespace-mk analyze {path}' (census of "
            "every depthwise layer) or 'scalespace-mk extract' to write its master filters"
        )


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
