"""Every output of a command checked before any work starts.

``check_outputs(args)`` runs in :func:`scalespace_mk.cli.main` after parsing and before the
command: each output file must be a new or regular file (never a directory, FIFO, socket or
device, never ``.``, ``..`` or ``/``) in a writable folder, with a format the command can
write (figures: a format matplotlib writes); output folders must be writable folders. So a
command that would fail on its second output fails before it writes its first.

A command lists its outputs in :data:`OUTPUTS`, or (for commands added elsewhere) as a parser
default ``_outputs=(("out", "file"), ("plot", "figure"), ...)``. Kinds: ``"file"`` (any
suffix), ``"filters"`` (a filter file suffix), ``"npz"``, ``"figure"``, ``"folder"``.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["OUTPUTS", "check_outputs", "figure_formats"]

#: ``{command: ((attribute, kind), ...)}`` for the built-in commands
OUTPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "bank": (("out", "npz"), ("plot", "figure")),
    "census": (("out", "file"), ("plot", "figure")),
    "fit": (("plot", "figure"),),
    "analyze": (("plot", "folder"),),
    "replace": (("out", "file"),),
    "extract": (("out", "filters"), ("plot", "figure")),
    "train": (("out", "folder"),),
    "substitute": (("out", "file"), ("plot", "folder")),
}

_FILTER_SUFFIXES = (".npy", ".npz", ".txt", ".dat", ".text", ".pt", ".pth", ".safetensors")


def figure_formats() -> tuple[str, ...]:
    """The figure suffixes matplotlib can write (``".png"``, ``".pdf"``, ...)."""
    from matplotlib.figure import Figure

    return tuple(sorted("." + f for f in Figure().canvas.get_supported_filetypes()))


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, with one line naming the option, any output of ``args.command`` that cannot be
    written; nothing is created.

    Raises
    ------
    ValueError
        ``scalespace_mk._io.NotRegularFileError`` for a directory/FIFO/device given as a
        file; a ValueError for a wrong format or a folder that cannot be written.
    """
    from scalespace_mk._io import check_output_path

    spec: Any = getattr(args, "_outputs", None) or OUTPUTS.get(getattr(args, "command", ""), ())
    files = []
    for attr, kind in spec:
        value = getattr(args, attr, None)
        if value is None or value == "":
            if value == "":
                thing = "the run folder" if kind == "folder" else "a file"
                raise ValueError(f"{_option(attr)} must name {thing}; got an empty string")
            continue
        what = _option(attr)
        if kind == "folder":
            check_output_path(value, what, folder=True)
            continue
        suffixes = None
        if kind == "figure":
            suffixes = figure_formats()
        elif kind == "filters":
            suffixes = _FILTER_SUFFIXES
        elif kind == "npz":
            suffixes = (".npz",)
        check_output_path(value, what, suffixes=suffixes, label=kind.replace("npz", "bank"))
        files.append((what, value))
    import os

    seen: dict[str, str] = {}
    for what, value in files:
        key = os.path.realpath(value)
        if key in seen:
            raise ValueError(f"{seen[key]} and {what} name the same file {value!r}; give two files")
        seen[key] = what
