"""Argument types shared by the command groups."""

from __future__ import annotations

import argparse
import ast
import functools
import re
from pathlib import Path
from typing import Any

__all__ = ["masterkey_types_arg", "model_types_arg", "source_constant", "source_fields"]


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


# --------------------------------------------------------------------------------------
# names read from the package's source, so that building the parsers (``--help``, argument
# errors) imports neither torch nor numpy


def _source(module: str, head: str) -> ast.Module:
    """The parsed top-level statement of ``scalespace_mk.<module>`` that starts with ``head``.

    Only that statement is parsed (from its first line to the next line at column 0), not
    the whole module, and nothing is imported.
    """
    path = Path(__file__).resolve().parents[1].joinpath(*module.split(".")).with_suffix(".py")
    lines = path.read_text(encoding="utf-8").splitlines()
    pattern = re.compile(rf"^{re.escape(head)}\b")
    for i, line in enumerate(lines):
        if pattern.match(line):
            j = i + 1
            while j < len(lines) and (not lines[j] or lines[j][0] in " \t#)]}"):
                j += 1
            return ast.parse("\n".join(lines[i:j]), filename=str(path))
    raise LookupError(f"no top-level {head!r} in scalespace_mk.{module}")


@functools.cache
def source_constant(module: str, name: str) -> Any:
    """The literal value of the module-level constant ``name`` of ``scalespace_mk.<module>``.

    Read from the source with :func:`ast.literal_eval` (a dict's keys only when its values
    are not literals); ``tests/test_cli_start.py`` checks each use against the imported
    value.
    """
    for node in _source(module, name).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:
            if isinstance(node.value, ast.Dict):
                return {ast.literal_eval(k): None for k in node.value.keys if k is not None}
            return ast.literal_eval(node.value)
    raise LookupError(f"no constant {name} in scalespace_mk.{module}")


@functools.cache
def source_fields(module: str, cls: str) -> tuple[tuple[str, str], ...]:
    """``(name, annotation)`` of the fields of dataclass ``cls`` in ``scalespace_mk.<module>``,
    read from the source (annotations as written, e.g. ``"int"``, ``"str | None"``)."""
    for node in _source(module, f"class {cls}").body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return tuple(
                (item.target.id, ast.unparse(item.annotation))
                for item in node.body
                if isinstance(item, ast.AnnAssign)
                and isinstance(item.target, ast.Name)
                and "ClassVar" not in ast.unparse(item.annotation)
            )
    raise LookupError(f"no class {cls} in scalespace_mk.{module}")
