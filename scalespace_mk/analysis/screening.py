"""Which filters have nothing to fit: zero, constant or non-finite filters.

:func:`screen_filters` gives each filter's reason (or None); the census records such filters
(``on_invalid="record"``) or refuses them naming the first (``"raise"``). Constancy is
judged on each filter divided by its largest ``|tap|``, so a filter scaled by 1e-300 or
1e300 is judged like the same filter at scale 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scalespace_mk._checks import check_filters

__all__ = ["INVALID_REASONS", "ON_INVALID", "screen_filters"]

_SCREEN_CHUNK = 65536  # filters screened at a time (temporaries ~ 5 x 0.5 MB per 1k)


INVALID_REASONS: tuple[str, ...] = ("zero", "constant", "non-finite")
#: how :func:`census` treats zero, constant and non-finite filters
ON_INVALID: tuple[str, ...] = ("record", "raise")
_CONSTANT_RTOL = 1e-24  # centred sum of squares / sum of squares (of the max-scaled filter)


def screen_filters(filters: np.ndarray) -> np.ndarray:
    """Why each filter cannot be fitted: ``None`` (it can), ``"zero"``, ``"constant"`` or
    ``"non-finite"``.

    Parameters
    ----------
    filters : numpy.ndarray, shape [N, k, k]
        Filters (stored-weight layout, y up), float64.

    Returns
    -------
    numpy.ndarray of object, shape [N]
        The reason per filter, or None.

    Notes
    -----
    A filter is *non-finite* if a tap is NaN or infinite, *zero* if every tap is 0, and
    *constant* if, divided by its largest ``|tap|`` (so the test does not depend on the
    filter's scale: 1e-300 and 1e300 times a filter are judged like the filter),
    ``sum (y - mean y)^2 <= 1e-24 sum y^2``: all taps equal up to rounding, nothing for
    ``R^2`` to explain.
    """
    return _screen(filters)[0]


def _screen(
    filters: np.ndarray, normalised: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`screen_filters`'s reasons, with what it computes on the way: per filter the
    largest ``|tap|`` (0 where not finite) and the centred sum of squares of the filter
    divided by it (NaN where the filter is zero or not finite), so that :func:`census`
    need not compute them again. ``normalised`` (``[N, k * k]`` float64, optional) receives
    each fittable filter divided by its largest ``|tap|`` (other rows are left as they are).
    """
    arr = np.asarray(filters, dtype=np.float64)
    flat = arr.reshape(arr.shape[0], -1)
    reason = np.full(arr.shape[0], None, dtype=object)
    scales = np.zeros(arr.shape[0])
    css = np.full(arr.shape[0], np.nan)
    p = flat.shape[1]
    for start in range(0, flat.shape[0], _SCREEN_CHUNK):  # bounded temporaries
        stop = min(start + _SCREEN_CHUNK, flat.shape[0])
        part = flat[start:stop]
        finite = np.isfinite(part).all(axis=1)
        safe = part if finite.all() else np.where(finite[:, None], part, 0.0)
        scale = np.abs(safe).max(axis=1)
        zero = finite & (scale == 0)
        ok = finite & ~zero
        every = bool(ok.all())
        if normalised is not None and every:
            yn = np.divide(safe, scale[:, None], out=normalised[start:stop])
        else:
            yn = safe[ok] / scale[ok, None]
            if normalised is not None:
                normalised[start + np.flatnonzero(ok)] = yn
        mean = yn.mean(axis=1)
        yc = yn - mean[:, None]
        ss = np.einsum("ij,ij->i", yc, yc)
        # sum of squares of yn = ss + P mean^2 (the centred part and the mean, orthogonal)
        const = ss <= _CONSTANT_RTOL * (ss + p * mean * mean)
        here = reason[start:stop]  # a view: writes go to reason
        here[~finite] = "non-finite"
        here[zero] = "zero"
        here[np.flatnonzero(ok)[const]] = "constant"
        scales[start:stop] = scale
        css[start + np.flatnonzero(ok)] = ss
    return reason, scales, css


def _screen_input(filters: Any, name: str, normalise: bool = False) -> tuple[np.ndarray, ...]:
    """Filters as float64 ``[N, k, k]`` (shape checked) and their :func:`_screen`; with
    ``normalise``, also the filters divided by their largest ``|tap|`` ``[N, k, k]``."""
    arr = check_filters(filters, name, values=False)
    if not normalise:
        return (arr, *_screen(arr))
    out = np.zeros(arr.shape, dtype=np.float64)
    return (arr, *_screen(arr, out.reshape(arr.shape[0], -1)), out)


def _invalid_message(name: str, idx: int, reason: str, y: np.ndarray) -> str:
    """The error of ``on_invalid="raise"`` for filter ``idx``."""
    if reason == "non-finite":
        return f"{name}[{idx}] holds NaN or infinite values; clean the filters first"
    if reason == "zero":
        return f"{name}[{idx}] is identically zero; a zero filter has no shape to fit"
    return (
        f"{name}[{idx}] is constant (all taps equal {float(y[idx].flat[0])!r} up to rounding): it "
        "has no variance to explain, so R^2 is undefined; drop constant filters first"
    )
