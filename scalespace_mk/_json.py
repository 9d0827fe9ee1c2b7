"""The one JSON encoder of every ``--json`` output and JSON file: always valid JSON.

Python's ``json`` writes ``NaN`` and ``Infinity``, which strict readers (JavaScript, jq,
most JSON libraries outside Python) reject. :func:`dumps` writes a non-finite number as
``null`` and, when the top level is an object, adds ``"null_reasons"``: ``{path: reason}``
for each such value (e.g. ``{"summary.a": "was -Infinity (beyond the float range or
undefined)"}``), so nothing is hidden. ``json.dumps(..., allow_nan=False)`` is the final
guard. numpy scalars are written as plain numbers. numpy and torch are never imported here
(``--help`` stays light).

The CLI modules import this module as ``json`` (``from scalespace_mk import _json as
json``): ``dump``, ``dumps`` and ``loads`` have the standard library's signatures.
"""

from __future__ import annotations

import json as _std
import math
from typing import Any, TextIO

__all__ = ["JSONDecodeError", "dump", "dumps", "finite", "loads", "number"]

JSONDecodeError = _std.JSONDecodeError
loads = _std.loads
load = _std.load


def _reason(value: float) -> str:
    word = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return f"was {word} (undefined, or beyond the float range); written as null"


def _clean(obj: Any, path: str, reasons: dict[str, str]) -> Any:
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return float(obj)
        reasons[path or "."] = _reason(obj)
        return None
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, dict):
        return {k: _clean(v, f"{path}.{k}" if path else str(k), reasons) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v, f"{path}[{i}]", reasons) for i, v in enumerate(obj)]
    kind = type(obj).__module__.split(".")[0]
    if kind in ("numpy", "torch") and getattr(obj, "ndim", 1) == 0:  # 0-d scalars
        item = obj.item()
        return _clean(item, path, reasons)
    if kind == "numpy" and hasattr(obj, "tolist"):
        return _clean(obj.tolist(), path, reasons)
    return obj


def number(value: Any) -> float | None:
    """``float(value)``, or None where it is NaN or infinite (one value; see :func:`finite`)."""
    value = float(value)
    return value if math.isfinite(value) else None


def finite(obj: Any) -> tuple[Any, dict[str, str]]:
    """``obj`` with every non-finite float replaced by None, and ``{path: reason}``."""
    reasons: dict[str, str] = {}
    return _clean(obj, "", reasons), reasons


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes NaN or Infinity (see the module docstring)."""
    clean, reasons = finite(obj)
    if reasons and isinstance(clean, dict):
        clean = dict(clean, null_reasons=reasons)
    kwargs["allow_nan"] = False
    return _std.dumps(clean, **kwargs)


def dump(obj: Any, fp: TextIO, **kwargs: Any) -> None:
    """``json.dump`` that never writes NaN or Infinity (see the module docstring)."""
    fp.write(dumps(obj, **kwargs))
