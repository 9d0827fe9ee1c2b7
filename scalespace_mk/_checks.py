"""Input checks shared by every public function.

Each check raises a :class:`ValueError` (or :class:`TypeError`) whose message names the
argument, what is accepted and what was received. Messages are built only on failure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

__all__ = [
    "check_choice",
    "check_epsilon",
    "check_filters",
    "check_nonneg",
    "check_size",
]


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor | np.ndarray):
        return f"array of shape {tuple(value.shape)}"
    return repr(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ValueError listing them."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}"
        )
    return value


def check_size(size: Any, name: str = "size", *, allow_none: bool = True) -> int | None:
    """Return ``size`` as an int if it is a positive odd integer (or None when allowed)."""
    if size is None and allow_none:
        return None
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        if isinstance(size, float) and size.is_integer() and int(size) % 2 == 1 and size > 0:
            return int(size)
        raise ValueError(f"{name} must be a positive odd integer such as 7; got {size!r}")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"{name} must be a positive odd integer such as 7; got {size!r}")
    return int(size)


def check_epsilon(epsilon: Any, name: str = "epsilon") -> float:
    """Return ``epsilon`` as a float if it lies in the open interval (0, 1)."""
    try:
        value = float(epsilon)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a number in the open interval (0, 1); got {epsilon!r}"
        ) from None
    if not (0.0 < value < 1.0):
        raise ValueError(f"{name} must be a number in the open interval (0, 1); got {epsilon!r}")
    return value


def check_nonneg(name: str, value: Any) -> None:
    """Raise if ``value`` (scalar, array or tensor) holds a negative, NaN or infinite entry.

    Works on torch tensors without leaving their device unless a check fails; under
    ``torch.compile`` tracing the check is skipped.
    """
    if isinstance(value, torch.Tensor):
        if torch.compiler.is_compiling():
            return
        if value.numel() == 0:
            return
        with torch.no_grad():
            bad = ~torch.isfinite(value) | (value < 0)
            if not bool(bad.any()):
                return
            first = value[bad].flatten()[0].item()
    else:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name} must be a finite number >= 0; got {_describe(value)}"
            ) from None
        bad = ~np.isfinite(arr) | (arr < 0)
        if not bad.any():
            return
        first = float(arr[bad].flat[0])
    kind = "NaN" if math.isnan(first) else ("infinite" if math.isinf(first) else "negative")
    raise ValueError(
        f"{name} must be finite and >= 0 (a standard deviation; 0 gives the identity); "
        f"got a {kind} value {first!r}"
    )


def check_filters(
    h: Any, name: str = "filters", *, allow_single: bool = True, values: bool = True
) -> np.ndarray:
    """Validate learned filters and return them as float64 ``[N, k, k]``.

    Accepts ``[k, k]`` (when ``allow_single``) or ``[N, k, k]`` with odd ``k``; rejects empty
    input and, when ``values`` is True (default), NaN/Inf entries and filters that are
    identically zero (``values=False`` checks the shape only, for callers that record such
    filters instead).
    """
    if isinstance(h, torch.Tensor):
        h = h.detach().cpu().numpy()
    try:
        arr = np.asarray(h, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a numeric array of shape [N, k, k]; got {type(h)}"
        ) from None
    if arr.ndim == 2 and allow_single:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(
            f"{name} must have shape [N, k, k] (or [k, k]) with square filters; "
            f"got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one filter")
    if arr.shape[1] % 2 == 0:
        raise ValueError(
            f"{name} must have an odd size k so that the filter has a centre tap; "
            f"got k = {arr.shape[1]}"
        )
    if not values:
        return arr
    finite = np.isfinite(arr)
    if not finite.all():
        idx = int(np.argwhere(~finite.reshape(arr.shape[0], -1).all(axis=1))[0, 0])
        raise ValueError(f"{name}[{idx}] holds NaN or infinite values; clean the filters first")
    zero = ~np.any(arr != 0, axis=(1, 2))
    if zero.any():
        idx = int(np.argwhere(zero)[0, 0])
        raise ValueError(f"{name}[{idx}] is identically zero; a zero filter has no shape to fit")
    return arr
