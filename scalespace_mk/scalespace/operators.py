"""Discrete difference operators (docs/method.md#operators), applied along one axis of a kernel.

All operators are written as *correlation taps*: ``(op f)(x) = sum_k c[k] f(x + k)`` over
offsets ``k = -h .. h``. They act along the last axis of an array whose entries are ordered
by increasing coordinate (x to the right; for y, the caller orders values by increasing y,
i.e. upwards, and flips to rows afterwards: see :mod:`scalespace_mk.scalespace.models`).

Primitive 3-tap operators:

========  =========================  ==========================  =================
name      definition                 taps over (-1, 0, +1)       centred at
========  =========================  ==========================  =================
``x``     (f(x+1) - f(x-1)) / 2      (-1/2, 0, 1/2)              x
``xx``    f(x+1) - 2 f(x) + f(x-1)   (1, -2, 1)                  x
``x+``    f(x+1) - f(x)              (0, -1, 1)                  x + 1/2
``x-``    f(x) - f(x-1)              (-1, 1, 0)                  x - 1/2
========  =========================  ==========================  =================

Higher orders compose them: ``xxx = x o xx`` and ``xxxx = xx o xx``; mixed derivatives
compose operators along different axes. Boundary handling when the operator meets the end
of a cropped kernel: ``"reflect"`` (scipy.ndimage's ``mode='reflect'``, the paper mode; for
a 3-tap operator it repeats the edge value), ``"zero"`` (zero padding), or ``"none"`` (the
output is shorter by the operator's reach on each side).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import torch

from scalespace_mk._checks import check_choice

__all__ = [
    "BOUNDARIES",
    "OPERATORS",
    "apply_1d",
    "compose",
    "difference_stencil",
]

_PRIMITIVE = {
    "x": (Fraction(-1, 2), Fraction(0), Fraction(1, 2)),
    "xx": (Fraction(1), Fraction(-2), Fraction(1)),
    "x+": (Fraction(0), Fraction(-1), Fraction(1)),
    "x-": (Fraction(-1), Fraction(1), Fraction(0)),
}
_COMPOSED = {"xxx": ("x", "xx"), "xxxx": ("xx", "xx")}
OPERATORS = ("x", "xx", "xxx", "xxxx", "x+", "x-")
BOUNDARIES = ("reflect", "zero", "none")


def compose(order: int) -> tuple[str, ...]:
    """The primitive 3-tap operators whose composition is the central difference of ``order``.

    Parameters
    ----------
    order : int
        Derivative order, 0 to 4.

    Returns
    -------
    tuple of str
        ``()`` for order 0, ``("x",)``, ``("xx",)``, ``("x", "xx")``, ``("xx", "xx")``.
    """
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or not 0 <= order <= 4:
        raise ValueError(f"order must be an integer from 0 to 4; got {order!r}")
    return ((), ("x",), ("xx",), ("x", "xx"), ("xx", "xx"))[int(order)]


def difference_stencil(name: str) -> np.ndarray:
    """Correlation taps of a 1-D difference operator.

    Parameters
    ----------
    name : str
        One of :data:`OPERATORS`: ``"x"``, ``"xx"``, ``"xxx"``, ``"xxxx"`` (central
        differences of orders 1-4), ``"x+"`` (forward, centred at +1/2) or ``"x-"``
        (backward, centred at -1/2).

    Returns
    -------
    numpy.ndarray, shape [2 h + 1]
        Taps ``c`` over offsets ``-h .. h`` with ``(op f)(x) = sum_k c[k] f(x + k)``;
        ``h = 1`` for the 3-tap operators and ``h = 2`` for orders 3 and 4.

    Examples
    --------
    >>> difference_stencil("xxx").tolist()
    [-0.5, 1.0, 0.0, -1.0, 0.5]
    """
    check_choice("name", name, OPERATORS)
    if name in _PRIMITIVE:
        return np.array([float(c) for c in _PRIMITIVE[name]])
    # composing correlations: (A o B f)(x) = sum_m (a * b)[m] f(x + m), a full convolution
    first, second = (_PRIMITIVE[p] for p in _COMPOSED[name])
    taps = [sum(first[j] * second[m - j] for j in range(3) if 0 <= m - j < 3) for m in range(5)]
    return np.array([float(c) for c in taps])


def _pad1(values: torch.Tensor, boundary: str) -> torch.Tensor:
    if boundary == "reflect":  # scipy 'reflect' (half-sample symmetric): edge repeated once
        return torch.cat([values[..., :1], values, values[..., -1:]], dim=-1)
    if boundary == "zero":
        return torch.nn.functional.pad(values, (1, 1))
    return values


def _apply_primitive(values: torch.Tensor, name: str, boundary: str) -> torch.Tensor:
    a, b, c = (float(t) for t in _PRIMITIVE[name])
    p = _pad1(values, boundary)
    out = 0.0
    for coef, part in ((a, p[..., :-2]), (b, p[..., 1:-1]), (c, p[..., 2:])):
        if coef != 0.0:
            out = out + coef * part
    return out


def apply_1d(values: Any, op: str, *, boundary: str = "reflect") -> Any:
    """Apply a difference operator along the last axis.

    Parameters
    ----------
    values : numpy.ndarray or torch.Tensor, shape [..., K]
        Samples ordered by increasing coordinate along the last axis.
    op : str
        One of :data:`OPERATORS`; orders 3 and 4 apply their 3-tap factors in turn, each
        with the same boundary handling (the paper mode's rule).
    boundary : str
        ``"reflect"`` (scipy.ndimage ``mode='reflect'``), ``"zero"`` or ``"none"``
        (valid part only: shorter by one tap per side and factor).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        Same type as ``values``; shape ``[..., K]`` (``[..., K - 2 n]`` for ``"none"`` with n
        factors).
    """
    check_choice("op", op, OPERATORS)
    check_choice("boundary", boundary, BOUNDARIES)
    is_numpy = not isinstance(values, torch.Tensor)
    t = torch.as_tensor(np.asarray(values, dtype=np.float64)) if is_numpy else values
    for prim in _COMPOSED.get(op, (op,)):
        t = _apply_primitive(t, prim, boundary)
    return t.numpy() if is_numpy else t
