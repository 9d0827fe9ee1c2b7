"""The closed-form linear shift ``a g + b`` of a filter onto a model (least squares).

For fixed ``g`` the optimum is closed-form: with ``y_c = y - mean y`` and ``g_c = g - mean
g``, ``a = <y_c, g_c> / <g_c, g_c>``, ``b = mean(y) - a mean(g)`` and ``RSS = ||y_c||^2 -
<y_c, g_c>^2 / ||g_c||^2``, so ``R^2 = 1 - RSS / TSS`` (``TSS = ||y_c||^2``) is the squared
correlation of ``y`` and ``g``. Used by :mod:`scalespace_mk.analysis.census` for every
model it fits; :func:`linear_shift` is the public form.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from scalespace_mk._checks import check_filters
from scalespace_mk.analysis.screening import screen_filters

__all__ = ["LinearShift", "linear_shift"]

_TINY = 1e-14  # ||g_c||^2 (of a unit-norm model) below this counts as a constant model


class LinearShift(NamedTuple):
    """Least-squares gain and offset of ``y ~ a g + b`` (arrays of shape [N] or scalars)."""

    a: Any
    b: Any
    r2: Any
    rss: Any


def _shift_t(
    y: torch.Tensor, g: torch.Tensor, centred: tuple[torch.Tensor, ...] | None = None
) -> LinearShift:
    """Closed-form linear shift for rows of ``[n, P]`` tensors (float64).

    ``centred`` is :func:`_centred` of ``y`` when the caller fits several models to the same
    filters (computed here otherwise).
    """
    ym, yc, yy = _centred(y) if centred is None else centred
    gm = g.mean(dim=1, keepdim=True)
    gc = g - gm
    gg = (gc * gc).sum(dim=1)
    yg = (yc * gc).sum(dim=1)
    scale = gg + g.shape[1] * gm[:, 0] * gm[:, 0]  # (g * g).sum(dim=1)
    ok = gg > _TINY * scale
    a = torch.where(ok, yg / torch.where(ok, gg, torch.ones_like(gg)), torch.zeros_like(gg))
    b = ym[:, 0] - a * gm[:, 0]
    rss = (gc.mul_(a[:, None]).sub_(yc)).square_().sum(dim=1)  # direct: accurate when RSS << TSS
    r2 = (1.0 - rss / yy).clamp(0.0, 1.0)
    return LinearShift(a, b, r2, rss)


def _centred(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row means ``[n, 1]``, centred rows ``[n, P]`` and their sums of squares ``[n]``."""
    ym = y.mean(dim=1, keepdim=True)
    yc = y - ym
    return ym, yc, (yc * yc).sum(dim=1)


def linear_shift(y: Any, g: Any) -> LinearShift:
    """Least-squares gain and offset for ``y ~ a g + b`` (closed form).

    Parameters
    ----------
    y : array_like or torch.Tensor, shape [k, k] or [N, k, k]
        Filter(s) to explain (stored-weight layout, rows top to bottom, y up).
    g : array_like or torch.Tensor, shape [k, k] or [N, k, k]
        Model(s) in the same layout; a single ``[k, k]`` model is used for every filter.

    Returns
    -------
    LinearShift
        ``(a, b, r2, rss)``: gain, offset, ``R^2 = 1 - RSS / TSS`` in [0, 1] and the
        residual sum of squares ``||a g + b - y||^2``. Scalars for a single ``[k, k]``
        filter and model, else arrays of shape [N] (numpy float64; torch tensors when ``y``
        is a tensor).

    Raises
    ------
    ValueError
        If the shapes disagree or a filter is constant (``TSS = sum (y - mean y)^2 = 0``,
        R^2 undefined); the message names the filter's index.

    Notes
    -----
    ``a = <y_c, g_c> / <g_c, g_c>`` and ``b = mean(y) - a mean(g)`` with ``y_c = y - mean y``
    and ``g_c = g - mean g``; ``RSS = ||y_c||^2 - <y_c, g_c>^2 / ||g_c||^2``, computed
    directly from the residual. A constant model (``g_c = 0``) gives ``a = 0``,
    ``b = mean(y)`` and ``R^2 = 0``.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.arange(9.0).reshape(3, 3)
    >>> s = linear_shift(3 * g + 0.5, g)
    >>> round(float(s.a), 12), round(float(s.b), 12), float(s.r2)
    (3.0, 0.5, 1.0)
    """
    as_torch = isinstance(y, torch.Tensor)
    single = np.ndim(y) == 2 if not as_torch else y.ndim == 2
    yy = torch.as_tensor(np.ascontiguousarray(check_filters(y, "y")))
    if isinstance(g, torch.Tensor):
        g = g.detach().cpu().numpy()
    try:
        ga = np.asarray(g, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"g must be a numeric array of shape [k, k] or [N, k, k]; got {type(g)}"
        ) from None
    if ga.ndim == 2:
        ga = ga[None]
    if ga.ndim != 3 or ga.shape[1:] != yy.shape[1:] or ga.shape[0] not in (1, yy.shape[0]):
        raise ValueError(
            f"g must have shape {tuple(yy.shape[1:])} or {tuple(yy.shape)} to match y; "
            f"got shape {np.shape(g)}"
        )
    if not np.isfinite(ga).all():
        raise ValueError("g holds NaN or infinite values")
    _check_tss(yy.numpy(), "y")
    gt = torch.as_tensor(ga).expand(yy.shape[0], -1, -1)
    res = _shift_t(yy.reshape(yy.shape[0], -1), gt.reshape(yy.shape[0], -1))
    if as_torch:
        dev = y.device
        out = [v.to(dev) for v in res]
    else:
        out = [v.numpy() for v in res]
    if single:
        out = [v[0] if as_torch else float(v[0]) for v in out]
    return LinearShift(*out)


def _check_tss(y: np.ndarray, name: str) -> None:
    """Raise naming the first constant filter (``TSS = 0``: R^2 undefined).

    Constancy is judged on each filter divided by its largest ``|tap|`` (:func:`screen_filters`),
    so a filter scaled by 1e-300 or 1e300 is judged like the same filter at scale 1.
    """
    reason = screen_filters(y)
    bad = reason == "constant"
    if bad.any():
        idx = int(np.argwhere(bad)[0, 0])
        flat = y.reshape(y.shape[0], -1)
        raise ValueError(
            f"{name}[{idx}] is constant (all taps equal {flat[idx, 0]!r} up to rounding): it "
            "has no variance to explain, so R^2 is undefined; drop constant filters first"
        )


#: reasons a filter is not fitted (``CensusResult.reason``, records' ``"reason"``)
