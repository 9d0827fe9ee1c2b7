"""Paper-mode normalisation of learned filters before fitting (docs/method.md#normalisation).

- Types 1-6 (derivative-like): divide ``h`` by its convolution response, at the centre, to
  the shift-adjusted monomial ``x - m_x`` (types 2, 4, 5) or ``y - m_y`` (types 1, 3, 6),
  where ``(m_x, m_y)`` is the mean of ``|h|`` (:func:`scalespace_mk.analysis.spread.spread`):
  ``R = sum_p h(p) * (-p_i - m_i)``. ``R < 0`` for the published filters 2 and 3, so the
  division flips their sign to that of the models.
- Types 7 and 8 (zero-order): subtract the constant ``C`` in ``[-0.1, 0.1]`` that minimises
  ``sqrt(det V(|h - C|))``, then divide by ``sum(h - C)``.

The objective of types 7-8 has kinks where ``C`` crosses a value of ``h``; between two
consecutive kinks it is smooth. :func:`optimal_offset` therefore evaluates it at every kink
and at the interval ends, and minimises it within every interval between consecutive kinks
(a sampled bracket refined by bounded Brent minimisation), keeping the best value.

Coordinates are centred and y up: ``x = c - m``, ``y = m - r``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from scalespace_mk._checks import check_filters
from scalespace_mk._display import Tabular
from scalespace_mk.analysis.spread import _moments, centred_coordinates, spread
from scalespace_mk.analysis.types import resolve_filter_types

__all__ = [
    "DEFAULT_OFFSET_BOUNDS",
    "NormalizeResult",
    "normalize_filters",
    "offset_objective",
    "optimal_offset",
    "response_axis",
]

#: Search interval of the constant C for types 7 and 8 (paper mode, unit-l2 filters).
DEFAULT_OFFSET_BOUNDS: tuple[float, float] = (-0.1, 0.1)

_X_TYPES = (2, 4, 5)
_Y_TYPES = (1, 3, 6)
_SAMPLES_PER_INTERVAL = 8
_REL_ZERO = 1e-12


@dataclass(frozen=True, repr=False)
class NormalizeResult(Tabular):
    """Normalised filters and the constants used.

    Attributes
    ----------
    filters : numpy.ndarray
        ``[N, k, k]`` normalised filters ``(h - C) / divisor``.
    filter_types : numpy.ndarray
        ``[N]`` master key types (1..8).
    divisor : numpy.ndarray
        ``[N]``: the response ``R`` for types 1-6, the sum ``sum(h - C)`` for types 7-8.
    offset : numpy.ndarray
        ``[N]``: the subtracted constant ``C`` for types 7-8, 0 for types 1-6.
    mean : numpy.ndarray
        ``[N, 2]`` mean ``(m_x, m_y)`` of ``|h|`` (the shift of the monomial, types 1-6).
    objective : numpy.ndarray
        ``[N]``: ``sqrt(det V(|h - C|))`` at the chosen ``C`` for types 7-8 and
        ``sqrt(det V(|h|))`` for types 1-6 (for information).
    """

    filters: np.ndarray
    filter_types: np.ndarray
    divisor: np.ndarray
    offset: np.ndarray
    mean: np.ndarray
    objective: np.ndarray

    def _headline(self) -> str:
        n, k = self.filters.shape[0], self.filters.shape[-1]
        return f"{n} normalised {k}x{k} filters (paper's normalisation; index from 1)"

    def _columns(self) -> dict[str, list[Any]]:
        """index (from 1), type, divisor, offset, m_x, m_y, objective."""
        return {
            "index": list(range(1, self.filters.shape[0] + 1)),
            "type": [int(t) for t in self.filter_types],
            "divisor": self.divisor.tolist(),
            "offset": self.offset.tolist(),
            "m_x": self.mean[:, 0].tolist(),
            "m_y": self.mean[:, 1].tolist(),
            "objective": self.objective.tolist(),
        }


def response_axis(filter_type: int) -> str:
    """Return the axis (``"x"`` or ``"y"``) of the monomial for a derivative-like type.

    Parameters
    ----------
    filter_type : int
        Master key type 1..6 (types 2, 4, 5 are x derivatives, 1, 3, 6 y derivatives).

    Returns
    -------
    str
        ``"x"`` or ``"y"``.
    """
    if filter_type in _X_TYPES:
        return "x"
    if filter_type in _Y_TYPES:
        return "y"
    raise ValueError(f"filter_type must be one of 1..6 (derivative-like); got {filter_type!r}")


def offset_objective(h: Any, c: Any) -> np.ndarray:
    """Evaluate ``sqrt(det V(|h - C|))`` for one filter at many constants ``C``.

    Parameters
    ----------
    h : array_like
        One filter ``[k, k]`` (or ``[1, k, k]``).
    c : float or array_like
        Constants C (same units as ``h``), any shape.

    Returns
    -------
    numpy.ndarray
        Objective values with the shape of ``c`` (pixels squared; ``det V`` is clipped at 0
        against rounding).

    Notes
    -----
    ``V`` is the covariance of the weight ``|h - C|`` in centred y-up coordinates
    (:func:`scalespace_mk.analysis.spread.spread`).
    """
    arr = check_filters(h, "h")
    if arr.shape[0] != 1:
        raise ValueError(f"h must be one filter [k, k]; got shape {np.shape(h)}")
    cs = np.asarray(c, dtype=np.float64)
    return _objective(arr[0], cs)


def _objective(h2: np.ndarray, cs: np.ndarray) -> np.ndarray:
    w = np.abs(h2 - cs[..., None, None])
    total = w.sum(axis=(-2, -1))
    if not (total > 0).all():
        raise ValueError("h is constant, equal to a tested C; the objective is undefined")
    _, cov, _ = _moments(w)
    det = cov[..., 0, 0] * cov[..., 1, 1] - cov[..., 0, 1] ** 2
    return np.sqrt(np.clip(det, 0.0, None))


def optimal_offset(
    h: Any,
    *,
    bounds: tuple[float, float] = DEFAULT_OFFSET_BOUNDS,
    xatol: float = 1e-13,
) -> tuple[float, float]:
    """Return the constant C minimising ``sqrt(det V(|h - C|))`` over ``bounds``.

    Parameters
    ----------
    h : array_like
        One filter ``[k, k]``.
    bounds : (float, float), optional
        Closed search interval ``[lo, hi]`` of C (units of h); default ``(-0.1, 0.1)``, the
        paper's interval for unit-l2 filters.
    xatol : float, optional
        Absolute tolerance on C of the bounded minimisation inside each smooth interval.

    Returns
    -------
    C : float
        The minimiser.
    value : float
        The objective at C.

    Notes
    -----
    The objective is smooth between consecutive values of ``h`` (the weight ``|h - C|`` is
    affine in C there) and has kinks at them. The search evaluates every kink inside the
    interval and both ends, samples each smooth piece at a few points and refines the best
    sample of every piece with bounded Brent minimisation
    (``scipy.optimize.minimize_scalar(method="bounded")``); the best value wins.
    """
    arr = check_filters(h, "h")
    if arr.shape[0] != 1:
        raise ValueError(f"h must be one filter [k, k]; got shape {np.shape(h)}")
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be two numbers (lo, hi); got {bounds!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must be finite with lo < hi; got {bounds!r}")
    h2 = arr[0]
    vals = np.unique(h2)
    knots = np.unique(np.concatenate([[lo, hi], vals[(vals > lo) & (vals < hi)]]))
    knot_f = _objective(h2, knots)
    best_i = int(np.argmin(knot_f))
    best_c, best_f = float(knots[best_i]), float(knot_f[best_i])

    # Sample the interior of every smooth piece at once.
    a, b = knots[:-1], knots[1:]
    frac = np.arange(1, _SAMPLES_PER_INTERVAL + 1) / (_SAMPLES_PER_INTERVAL + 1)
    grid = a[:, None] + (b - a)[:, None] * frac[None, :]  # [I, S]
    full = np.concatenate([a[:, None], grid, b[:, None]], axis=1)  # [I, S + 2]
    full_f = np.concatenate([knot_f[:-1, None], _objective(h2, grid), knot_f[1:, None]], axis=1)

    def f(c: float) -> float:
        return float(_objective(h2, np.asarray(c))[()])

    for i in range(full.shape[0]):
        j = int(np.argmin(full_f[i]))
        left, right = full[i, max(j - 1, 0)], full[i, min(j + 1, full.shape[1] - 1)]
        if right <= left:
            continue
        res = minimize_scalar(
            f, bounds=(left, right), method="bounded", options={"xatol": xatol, "maxiter": 500}
        )
        cand = [(float(full_f[i, j]), float(full[i, j]))]
        if np.isfinite(res.fun):
            cand.append((float(res.fun), float(res.x)))
        val, c = min(cand)
        if val < best_f:
            best_f, best_c = val, c
    return best_c, best_f


def normalize_filters(
    h: Any,
    filter_types: Any = None,
    *,
    offset_bounds: tuple[float, float] = DEFAULT_OFFSET_BOUNDS,
) -> NormalizeResult:
    """Normalise learned filters in paper mode (docs/method.md#normalisation).

    Parameters
    ----------
    h : array_like or torch.Tensor
        Filters ``[N, k, k]`` (or ``[k, k]``), stored weights ``h[r, c]``; the published
        filters have unit l2 norm, which is what the default C interval assumes.
    filter_types : None, int or sequence of int, optional
        Master key type (1..8) of each filter; default ``1..8`` for 8 filters (the published
        order), required otherwise.
    offset_bounds : (float, float), optional
        Search interval of C for types 7-8 (default ``(-0.1, 0.1)``).

    Returns
    -------
    NormalizeResult
        ``filters [N, k, k]``, ``filter_types [N]``, ``divisor [N]``, ``offset [N]``,
        ``mean [N, 2]``, ``objective [N]``.

    Raises
    ------
    ValueError
        If the filters are invalid, a type is not in 1..8, the response ``R`` of a type 1-6
        filter is zero, or the sum ``sum(h - C)`` of a type 7-8 filter is zero.

    Notes
    -----
    Types 1-6: ``R = sum_p h(p) * (-p_i - m_i)``, the convolution response at the centre to
    ``p_i - m_i`` (``i = x`` for types 2, 4, 5, ``i = y`` for 1, 3, 6) with ``(m_x, m_y)`` the
    mean of ``|h|``; the result ``h / R`` has response exactly 1. Types 7-8: ``C`` minimises
    ``sqrt(det V(|h - C|))`` (:func:`optimal_offset`), and ``(h - C) / sum(h - C)`` sums to 1.
    Coordinates: ``x = c - m``, ``y = m - r`` (y up). Types 1-6 are vectorised over filters;
    types 7-8 need one exact 1-D search per filter.
    """
    arr = check_filters(h, "h")
    n = arr.shape[0]
    types = resolve_filter_types(filter_types, n)
    x, y = centred_coordinates(arr.shape[1])
    base = spread(arr)
    mean = base.mean
    offset = np.zeros(n)
    divisor = np.empty(n)
    objective = np.sqrt(
        np.clip(base.cov[:, 0, 0] * base.cov[:, 1, 1] - base.cov[:, 0, 1] ** 2, 0.0, None)
    )
    out = np.empty_like(arr)

    deriv = types <= 6
    if deriv.any():
        hd = arr[deriv]
        use_x = np.isin(types[deriv], _X_TYPES)
        p = np.where(use_x[:, None, None], x, y)  # [D, k, k]
        m_i = np.where(use_x, mean[deriv, 0], mean[deriv, 1])
        resp = np.einsum("nij,nij->n", hd, -p - m_i[:, None, None])
        scale = np.einsum("nij,nij->n", np.abs(hd), np.abs(p) + np.abs(m_i)[:, None, None])
        bad = np.abs(resp) <= _REL_ZERO * scale
        if bad.any():
            idx = int(np.flatnonzero(deriv)[np.argmax(bad)])
            raise ValueError(
                f"filter {idx} (type {types[idx]}) has zero response R to the shift-adjusted "
                f"monomial along {response_axis(int(types[idx]))}; it cannot be normalised "
                "as a derivative (is the filter type right?)"
            )
        divisor[deriv] = resp
        out[deriv] = hd / resp[:, None, None]

    for idx in np.flatnonzero(~deriv):
        c, val = optimal_offset(arr[idx], bounds=offset_bounds)
        shifted = arr[idx] - c
        total = float(shifted.sum())
        if abs(total) <= _REL_ZERO * float(np.abs(shifted).sum()):
            raise ValueError(
                f"filter {idx} (type {types[idx]}) has zero sum after subtracting C = {c:.6g}; "
                "it cannot be normalised to unit sum (is the filter type right?)"
            )
        offset[idx] = c
        divisor[idx] = total
        objective[idx] = val
        out[idx] = shifted / total
    return NormalizeResult(
        filters=out,
        filter_types=types,
        divisor=divisor,
        offset=offset,
        mean=mean,
        objective=objective,
    )
