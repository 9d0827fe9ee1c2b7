"""Fitting the idealised scale-space models to learned filters (docs/method.md#fitting).

Every method starts from the paper-mode normalised filter ``h~``
(:func:`scalespace_mk.analysis.normalize.normalize_filters`) and the paper-mode model
``g = masterkey_model(t, sigma_x, sigma_y, alpha=..., mode="paper")`` of the filter's type t
(docs/method.md#models), and returns scales ``sigma_x, sigma_y >= 0`` (standard deviations in
pixels;
``s = sigma**2`` in the theory):

========== ==========================================================================
method     criterion
========== ==========================================================================
A          weighted variance ``V`` of ``h~`` (weight ``|g(sigma_ref, sigma_ref)|``),
           converted with the continuous self-weighting relations
           ``sigma = sqrt(2 V)`` (smoothing axis) and ``sigma = sqrt(2 V / 3)``
           (derivative axis); separate ``sigma_x``, ``sigma_y``
A-exact    the same variances, converted with the exact continuous relation for the
           weighting scale ``sigma_ref`` (:mod:`scalespace_mk.scalespace.symbolic`)
B          per axis, the ``sigma`` at which the weighted variance of ``|g|`` equals that
           of ``|h~|`` (both weighted by ``|g(sigma_ref, sigma_ref)|``; the other model
           scale stays at ``sigma_ref``), found by a bracketing root finder (Brent)
C1 / C2    minimum of the l1 norm ``sum |g - h~|``: separate scales / one common sigma
D1 / D2    minimum of the l2 norm ``sqrt(sum (g - h~)**2)``: separate / one common sigma
A-joint,   one sigma per group {1, 2, 3, 4, 8} and {5, 6}: the geometric mean of the
B-joint    group's per-filter ``sigma_x`` and ``sigma_y`` of method A or B
C-joint,   one sigma per group minimising the summed l1 (C) or the summed squared l2 (D)
D-joint    distance over the group's filters
========== ==========================================================================

Type 7 (``K - alpha nabla5 T(sigma)``) is fitted in every method by minimising over
``(sigma, alpha)`` jointly: the l1 norm for the C methods, the l2 norm for all others.

Optimisation. The model of type 7 is affine in ``alpha``, so for each sigma the best alpha
is known in closed form (the least-squares coefficient for l2, a weighted median for l1);
the resulting exact profile over sigma is minimised like every one-scale problem (C2, D2,
joint C/D): a grid over ``[0, sigma_max]`` (step ``grid_step``), then a vectorised pattern
search (one batch of model evaluations per step) from each of the best local minima of the
grid. Two-scale problems (C1, D1) start from the best local minima of a grid over
``[0, sigma_max]**2``. l2 problems are finally polished by a bounded trust-region
least-squares solver (``scipy.optimize.least_squares``); the non-smooth l1 problems by a 2-D
pattern search over 48 directions, then Nelder-Mead and Powell (``scipy.optimize.minimize``).
Every search is bounded to ``0 <= sigma <= max(sigma_max, 4 k)`` for k x k filters
(:data:`scalespace_mk.limits.FIT_SIGMA_PER_TAP`; see docs/limits.md). A candidate replaces
the current point only if it is better, so no result is worse than the best grid point; the
l1 objective can be flat, so compare objective values rather than positions.
``sigma = 0`` is legal: ``T(.; 0)`` is the Kronecker delta. While fitting, torch runs
single-threaded (thousands of tiny kernels; the previous thread count is restored).

Coordinates are centred with y up: ``x = c - m``, ``y = m - r`` (docs/method.md#coordinates);
arrays are stored
depthwise weights ``h[r, c]`` used as conv2d (cross-correlation) weights with no flip.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq, least_squares, minimize

import scalespace_mk.limits as limits
from scalespace_mk._checks import check_choice, check_filters
from scalespace_mk._display import Tabular
from scalespace_mk.analysis.types import check_filter_type, resolve_filter_types, resolve_sigma_ref
from scalespace_mk.scalespace.models import (
    MASTERKEY_MODELS,
    MODES,
    masterkey_model,
    model_kernel,
    parse_model,
)

__all__ = [
    "DEFAULT_GRID_STEP",
    "DEFAULT_SIGMA_MAX",
    "JOINT_GROUPS",
    "METHODS",
    "FilterFit",
    "FitResult",
    "fit_filter",
    "fit_filters",
    "model_distance",
]

#: Fitting methods (docs/method.md#fitting).
METHODS: tuple[str, ...] = (
    "A",
    "A-exact",
    "B",
    "C1",
    "C2",
    "D1",
    "D2",
    "A-joint",
    "B-joint",
    "C-joint",
    "D-joint",
)

#: Groups of master key types that share one scale in the joint methods (docs/method.md#fitting).
JOINT_GROUPS: tuple[tuple[int, ...], ...] = ((1, 2, 3, 4, 8), (5, 6))

#: Upper end (pixels) of the starting grids and of the root bracket of method B.
DEFAULT_SIGMA_MAX = 4.0
#: Spacing (pixels) of the starting grids.
DEFAULT_GRID_STEP = 0.02

_CENTRE_SURROUND = 7
_BASE = {"A-joint": "A", "B-joint": "B"}
_NORM = {"C1": "l1", "C2": "l1", "C-joint": "l1", "D1": "l2", "D2": "l2", "D-joint": "l2"}
_TOL = 1e-14  # least-squares tolerances (relative)


# --------------------------------------------------------------------------------------
# results


@dataclass(frozen=True, eq=False)
class FilterFit:
    """The fit of one filter.

    Attributes
    ----------
    index : int
        Position of the filter in the input, counted from 1 (the paper's numbering of the
        published 8 filters).
    filter_type : int
        Master key type 1..8.
    model : str
        Model name (:data:`scalespace_mk.scalespace.models.MASTERKEY_MODELS`): ``"dy+"``, ``"dx-"``,
        ``"dy-"``, ``"dx+"``, ``"dx"``, ``"dy"``, ``"mk7"`` or ``"T"``.
    sigma_x, sigma_y : float
        Fitted scales (standard deviations, pixels, >= 0). Equal for one-scale fits and for
        type 7 (its one sigma).
    alpha : float or None
        Weight of the Laplacian for type 7, None for the other types.
    l1, l2 : float
        ``sum |g - h~|`` and ``sqrt(sum (g - h~)**2)`` of the fitted model ``g`` against the
        normalised filter ``h~``.
    normalized : numpy.ndarray
        ``[k, k]`` normalised filter ``h~`` (stored-weight layout, y up).
    fitted : numpy.ndarray
        ``[k, k]`` fitted paper-mode model ``g``.
    error : str or None
        Why the method found no fit for this filter (only with ``on_error="record"``); the
        scales, norms and model are then NaN, and :meth:`to_dict` gives None for them.
    """

    index: int
    filter_type: int
    model: str
    sigma_x: float
    sigma_y: float
    alpha: float | None
    l1: float
    l2: float
    normalized: np.ndarray = field(repr=False)
    fitted: np.ndarray = field(repr=False)
    error: str | None = None

    @property
    def residual(self) -> np.ndarray:
        """``[k, k]`` difference ``g - h~`` (model minus normalised filter)."""
        return self.fitted - self.normalized

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record ``{"index", "model", "sigma_x", "sigma_y", "alpha", "l1", "l2"}``.

        Returns
        -------
        dict
            Python floats (``alpha`` is None except for type 7).
        """

        def num(v: Any) -> float | None:
            return None if v is None or not np.isfinite(v) else float(v)

        record = {
            "index": int(self.index),
            "model": self.model,
            "sigma_x": num(self.sigma_x),
            "sigma_y": num(self.sigma_y),
            "alpha": num(self.alpha),
            "l1": num(self.l1),
            "l2": num(self.l2),
        }
        if self.error is not None:
            record["error"] = self.error
        return record


@dataclass(frozen=True, eq=False, repr=False)
class FitResult(Tabular):
    """Fits of N filters by one method.

    Attributes
    ----------
    method : str
        One of :data:`METHODS`.
    fits : tuple of FilterFit
        One entry per filter, in input order.
    mode : str
        Model mode (``"paper"``).
    """

    method: str
    fits: tuple[FilterFit, ...]
    mode: str = "paper"

    def __len__(self) -> int:
        return len(self.fits)

    def __iter__(self) -> Iterator[FilterFit]:
        return iter(self.fits)

    def __getitem__(self, i: int) -> FilterFit:
        return self.fits[i]

    @property
    def filter_types(self) -> np.ndarray:
        """``[N]`` int master key types."""
        return np.array([f.filter_type for f in self.fits], dtype=np.int64)

    @property
    def sigma_x(self) -> np.ndarray:
        """``[N]`` fitted ``sigma_x`` (pixels)."""
        return np.array([f.sigma_x for f in self.fits])

    @property
    def sigma_y(self) -> np.ndarray:
        """``[N]`` fitted ``sigma_y`` (pixels)."""
        return np.array([f.sigma_y for f in self.fits])

    @property
    def l1(self) -> np.ndarray:
        """``[N]`` l1 norms of ``g - h~``."""
        return np.array([f.l1 for f in self.fits])

    @property
    def l2(self) -> np.ndarray:
        """``[N]`` l2 norms of ``g - h~``."""
        return np.array([f.l2 for f in self.fits])

    @property
    def normalized(self) -> np.ndarray:
        """``[N, k, k]`` normalised filters ``h~``."""
        return np.stack([f.normalized for f in self.fits])

    @property
    def models(self) -> np.ndarray:
        """``[N, k, k]`` fitted models ``g``."""
        return np.stack([f.fitted for f in self.fits])

    def _headline(self) -> str:
        failed = sum(f.error is not None for f in self.fits)
        return f"fits of {len(self.fits)} filters by method {self.method} ({self.mode} mode)" + (
            f", {failed} with no fit" if failed else ""
        )

    def _columns(self) -> dict[str, list[Any]]:
        """index, type, model, sigma_x, sigma_y, alpha, l1, l2, error (NaN when no fit)."""
        fits = self.fits
        return {
            "index": [int(f.index) for f in fits],
            "type": [int(f.filter_type) for f in fits],
            "model": [f.model for f in fits],
            "sigma_x": [float(f.sigma_x) for f in fits],
            "sigma_y": [float(f.sigma_y) for f in fits],
            "alpha": [None if f.alpha is None else float(f.alpha) for f in fits],
            "l1": [float(f.l1) for f in fits],
            "l2": [float(f.l2) for f in fits],
            "error": [f.error for f in fits],
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"method": str, "filters": [FilterFit.to_dict(), ...]}``."""
        return {"method": self.method, "filters": [f.to_dict() for f in self.fits]}

    def format_table(self, max_rows: int | None = None) -> str:
        """Readable fixed-width table of the fits (one line per filter).

        Parameters
        ----------
        max_rows : int, optional
            Show at most this many filters (default: all).

        Returns
        -------
        str
            Columns index, type, model, sigma_x, sigma_y, alpha, l1, l2.
        """
        head = (
            f"{'index':>5} {'type':>4} {'model':>6} {'sigma_x':>9} {'sigma_y':>9} "
            f"{'alpha':>9} {'l1':>9} {'l2':>9}"
        )
        lines = [f"method {self.method} ({self.mode} mode); sigma in pixels, y up", head]
        lines.append("-" * len(head))
        for f in self.fits[:max_rows]:
            if f.error is not None:
                lines.append(f"{f.index:>5} {f.filter_type:>4} {f.model:>6}   no fit: {f.error}")
                continue
            alpha = "-" if f.alpha is None else f"{f.alpha:.4f}"
            lines.append(
                f"{f.index:>5} {f.filter_type:>4} {f.model:>6} {f.sigma_x:>9.4f} "
                f"{f.sigma_y:>9.4f} {alpha:>9} {f.l1:>9.4f} {f.l2:>9.4f}"
            )
        if max_rows is not None and len(self.fits) > max_rows:
            lines.append(f"... {len(self.fits) - max_rows} more rows")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# small public helpers


def _self_weighted_sigma(variance: float, order: int) -> float:
    """Convert a self-weighted variance to a scale (method A).

    Parameters
    ----------
    variance : float or array_like
        Weighted variance ``V`` (pixels squared, >= 0) along one axis.
    order : int or array_like of int
        Derivative order along that axis: 0 (smoothing axis) or 1 (derivative axis).

    Returns
    -------
    float
        ``sqrt(2 V)`` for order 0 and ``sqrt(2 V / 3)`` for order 1.

    Notes
    -----
    For a continuous Gaussian derivative of order n weighted by itself, ``|g_n|^2`` is
    ``x^(2n) exp(-x^2 / sigma^2)`` up to a constant, whose variance is ``sigma^2 / 2``
    (n = 0) and ``3 sigma^2 / 2`` (n = 1). The same closed form is derived symbolically by
    :func:`scalespace_mk.scalespace.symbolic.sigma_from_self_weighted_variance`
    (tests check that they agree); it is repeated here so that method A does not need to
    import sympy.
    """
    return math.sqrt(2.0 * variance / (3.0 if order == 1 else 1.0))


def model_distance(
    h: Any,
    filter_type: int,
    sigma_x: Any,
    sigma_y: Any = None,
    *,
    alpha: Any = None,
    norm: str = "l2",
    mode: str = "paper",
) -> np.ndarray:
    """Distance between the model of ``filter_type`` and a (normalised) filter.

    Parameters
    ----------
    h : array_like
        One filter ``[k, k]`` (odd k), normally the normalised filter ``h~``.
    filter_type : int
        Master key type 1..8.
    sigma_x : float or array_like [B]
        Scale(s) along x (pixels, >= 0); for type 7 the one sigma.
    sigma_y : float or array_like [B], optional
        Scale(s) along y; None means ``sigma_y = sigma_x``. Ignored for type 7.
    alpha : float or array_like [B], optional
        Laplacian weight, required for type 7 and rejected otherwise.
    norm : {"l1", "l2"}
        ``sum |g - h|`` or ``sqrt(sum (g - h)**2)``.
    mode : {"paper", "full"}
        Model mode (:func:`scalespace_mk.scalespace.models.masterkey_model`).

    Returns
    -------
    numpy.ndarray
        Shape ``[]`` for scalar parameters, ``[B]`` for batches.
    """
    hn = _single(h)
    t = check_filter_type(filter_type)
    check_choice("norm", norm, ("l1", "l2"))
    check_choice("mode", mode, MODES)
    sigma_x, sigma_y, alpha = (
        v if v is None or isinstance(v, torch.Tensor) else np.array(v, dtype=np.float64)
        for v in (sigma_x, sigma_y, alpha)
    )
    if t == _CENTRE_SURROUND:
        g = masterkey_model(t, sigma_x, alpha=alpha, size=hn.shape[0], mode=mode)
    else:
        g = masterkey_model(t, sigma_x, sigma_y, alpha=alpha, size=hn.shape[0], mode=mode)
    d = np.asarray(g) - hn
    return np.abs(d).sum(axis=(-2, -1)) if norm == "l1" else np.sqrt((d * d).sum(axis=(-2, -1)))


# --------------------------------------------------------------------------------------
# input handling


def _single(h: Any) -> np.ndarray:
    arr = check_filters(h, "h")
    if arr.shape[0] != 1:
        raise ValueError(f"h must be one filter of shape [k, k]; got shape {np.shape(h)}")
    return arr[0]


def _check_grid(sigma_max: Any, grid_step: Any) -> tuple[float, float]:
    try:
        smax, step = float(sigma_max), float(grid_step)
    except (TypeError, ValueError):
        raise ValueError(
            f"sigma_max and grid_step must be numbers; got {sigma_max!r}, {grid_step!r}"
        ) from None
    if not (math.isfinite(smax) and smax > 0):
        raise ValueError(f"sigma_max must be a finite number > 0 (pixels); got {sigma_max!r}")
    if smax > limits.SIGMA_LIMIT:
        raise ValueError(
            f"sigma_max must be <= {limits.SIGMA_LIMIT:g} pixels (scalespace_mk.limits."
            f"SIGMA_LIMIT); got {sigma_max!r}"
        )
    if not (math.isfinite(step) and 0 < step <= smax / 4):
        raise ValueError(
            f"grid_step must be a number in (0, sigma_max / 4] (pixels); got {grid_step!r}"
        )
    if smax / step + 1 > limits.FIT_GRID_POINTS_MAX:
        raise ValueError(
            f"grid_step = {grid_step!r} gives {smax / step + 1:.3g} grid points over [0, "
            f"sigma_max = {smax:g}], above {limits.FIT_GRID_POINTS_MAX} (scalespace_mk.limits."
            f"FIT_GRID_POINTS_MAX); use grid_step >= {smax / (limits.FIT_GRID_POINTS_MAX - 1):.3g}"
        )
    return smax, step


def _upper(smax: float, size: int) -> float:
    """Largest sigma the optimisers search for k x k filters: ``max(sigma_max, 4 k)``.

    At ``sigma = 4 k`` a Gaussian varies by under 1 % across the filter (larger scales give
    the same flat model), and the bound keeps every model evaluation a small FFT.
    """
    return max(smax, limits.FIT_SIGMA_PER_TAP * size)


def _check_fit_memory(smax: float, step: float, size: int, n: int) -> None:
    """Refuse grids whose batched model evaluation would exceed the memory budget."""
    from scalespace_mk.scalespace.kernels import fft_length

    points = max(int(round(smax / step)) + 1, 81 * 81)  # the 2-D grid has <= 81 x 81 points
    taps = size + 2
    n_fft = fft_length(_upper(smax, size), size) + 2 * taps
    # per point: the FFT spectrum and transform of two 1-D kernels (complex and real
    # float64), and the k x k model, its difference and norms
    need = points * (2 * n_fft * 24 + 6 * size * size * 8)
    limits.check_memory(
        need,
        f"fitting {n} filter(s) of size {size} with sigma_max = {smax:g} and grid_step = {step:g}",
        "lower sigma_max (the default is 4 pixels) or raise grid_step",
    )


def _axis_orders(t: int) -> tuple[int, int]:
    """Derivative order of the model of type t along (x, y); 0 or 1 for types 1-6, 8."""
    return parse_model(MASTERKEY_MODELS[t]).order


# --------------------------------------------------------------------------------------
# generic minimisers


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch single-threaded meanwhile (the fits build thousands of tiny kernels, and
    intra-op threading makes each tiny FFT ~100x slower); the setting is restored after."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _grid(smax: float, step: float) -> np.ndarray:
    return np.linspace(0.0, smax, int(round(smax / step)) + 1)


def _local_minima(values: np.ndarray, count: int = 3) -> np.ndarray:
    """Indices of up to ``count`` best local minima of a 1-D sampled function.

    The last sample (``sigma_max``) is a minimum of the finite grid only, and is kept only
    when it is the global minimum of the grid (then the search continues beyond it).
    """
    v = values
    left = np.concatenate([[np.inf], v[:-1]])
    right = np.concatenate([v[1:], [np.inf]])
    is_min = (v <= left) & (v <= right)
    best = int(np.argmin(v))
    if best != len(v) - 1:
        is_min[-1] = False
    is_min[best] = True
    idx = np.flatnonzero(is_min)
    return idx[np.argsort(v[idx], kind="stable")][:count]


def _stencil(d: int, points: int) -> np.ndarray:
    """Unit-size search stencil: ``points`` samples of [-1, 1] in 1-D; in 2-D, ``4 * points``
    directions on four circles of radii 1, 1/2, 1/4, 1/8 (many directions, so that a
    narrow descent cone along a kink of an l1 objective is not missed)."""
    if d == 1:
        return np.linspace(-1.0, 1.0, points)[:, None]
    angles = np.linspace(0.0, 2.0 * np.pi, 4 * points, endpoint=False)
    ring = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    radii = 0.5 ** np.arange(4)
    return (radii[:, None, None] * ring[None, :, :]).reshape(-1, 2)


def _zoom(
    f_batch: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    width: float,
    lower: np.ndarray,
    *,
    points: int,
    max_iter: int = 400,
    upper: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Vectorised pattern search from ``x0`` (values never increase).

    Each step evaluates the stencil of :func:`_stencil` scaled by ``w`` around ``x``
    (clipped to ``[lower, upper]``) in one batch and moves to the best point if it is better. In 2-D
    ``w`` is halved after a step without improvement; in 1-D it shrinks to one sample
    spacing whenever the best sample is not at an end of the window. It stops when
    ``w < 1e-12``. ``f_batch`` maps ``[B, d]`` to ``[B]``.
    """
    x = np.asarray(x0, dtype=np.float64)
    fx = float(f_batch(x[None, :])[0])
    mesh = _stencil(x.size, points)
    top = np.full_like(lower, np.inf) if upper is None else upper
    w = width
    for _ in range(max_iter):
        cand = np.clip(x[None, :] + w * mesh, lower[None, :], top[None, :])
        vals = f_batch(cand)
        j = int(np.argmin(vals))
        if vals[j] < fx:
            x, fx = cand[j], float(vals[j])
            # 1-D: a best sample inside the window brackets a minimum within one spacing
            if x.size == 1 and 0 < j < len(mesh) - 1:
                w *= 2.0 / (points - 1)
        else:
            w *= 2.0 / (points - 1) if x.size == 1 else 0.5
        if w < 1e-12:
            break
    return x, fx


def _local_minima_2d(values: np.ndarray, count: int = 3) -> list[int]:
    """Flat indices of up to ``count`` best local minima (8-neighbourhood) of a 2-D grid.

    Points on the upper edges (``sigma_max``) are minima of the finite grid only, and are
    kept only when one of them is the global minimum of the grid.
    """
    padded = np.pad(values, 1, constant_values=np.inf)
    n0, n1 = values.shape
    is_min = np.ones(values.shape, dtype=bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                is_min &= values <= padded[1 + di : 1 + di + n0, 1 + dj : 1 + dj + n1]
    best = np.unravel_index(int(np.argmin(values)), values.shape)
    is_min[-1, :] = False
    is_min[:, -1] = False
    is_min[best] = True
    idx = np.flatnonzero(is_min)
    flat = values.reshape(-1)
    return [int(i) for i in idx[np.argsort(flat[idx], kind="stable")][:count]]


def _minimize_1d(
    f_vec: Callable[[np.ndarray], np.ndarray], grid: np.ndarray, upper: float = math.inf
) -> tuple[float, float]:
    """Minimise a function of one scale in ``[0, upper]``: a grid, then a zoom around its
    best minima.

    ``f_vec`` maps ``[B]`` scales to ``[B]`` values. Returns ``(x, f(x))``; never worse than
    the best grid point.
    """
    values = f_vec(grid)
    best_x, best_f = float(grid[int(np.argmin(values))]), float(np.min(values))
    spacing = float(grid[1] - grid[0])
    for i in _local_minima(values):
        x, fx = _zoom(
            lambda p: f_vec(p[:, 0]),
            grid[i : i + 1],
            spacing,
            np.zeros(1),
            points=17,
            upper=np.array([upper]),
        )
        if fx < best_f:
            best_x, best_f = float(x[0]), fx
    return best_x, best_f


def _polish_nm(
    f: Callable[[np.ndarray], float],
    x0: np.ndarray,
    bounds: Sequence[tuple[float | None, float | None]],
    scale: float,
    maxiter: int = 400,
) -> tuple[np.ndarray, float]:
    """Nelder-Mead, then Powell, then Nelder-Mead again if Powell moved (bounded)."""
    x = np.asarray(x0, dtype=np.float64)
    fx = f(x)
    n = x.size
    for step, method in enumerate(("Nelder-Mead", "Powell", "Nelder-Mead")):
        if method == "Nelder-Mead":
            simplex = np.repeat(x[None, :], n + 1, axis=0)
            for j in range(n):
                lo, up = bounds[j]
                if (lo is None or x[j] - scale < lo) and (up is None or x[j] + scale <= up):
                    simplex[j + 1, j] += scale
                else:
                    simplex[j + 1, j] -= scale
            options = {
                "xatol": 1e-10,
                "fatol": 1e-14,
                "maxiter": maxiter,
                "initial_simplex": simplex,
            }
        else:
            options = {"xtol": 1e-10, "ftol": 1e-14, "maxiter": maxiter}
        res = minimize(f, x, method=method, bounds=bounds, options=options)
        improved = bool(np.isfinite(res.fun) and res.fun < fx - 1e-15)
        if np.isfinite(res.fun) and res.fun <= fx:
            x, fx = np.asarray(res.x, dtype=np.float64), float(res.fun)
        if step == 1 and not improved:
            break
        scale = max(scale * 0.1, 1e-6)
    return x, fx


def _polish_lsq(
    residual: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray | None = None,
) -> np.ndarray:
    """Bounded trust-region least squares (``sum residual**2``) from ``x0``.

    The solver stays strictly inside the bounds, and near ``sigma = 0`` the model depends on
    ``sigma**2`` only, so the gradient vanishes there and convergence is slow; a coordinate
    that ends within 1e-3 of its bound is therefore set onto it when that does not increase
    the objective (``sigma = 0`` is legal).
    """
    upper = np.full_like(lower, np.inf) if upper is None else upper
    x0 = np.clip(np.asarray(x0, dtype=np.float64), lower, upper)
    res = least_squares(
        residual,
        x0,
        bounds=(lower, upper),
        jac="3-point",
        method="trf",
        ftol=_TOL,
        xtol=_TOL,
        gtol=_TOL,
        max_nfev=2000,
    )
    x = np.asarray(res.x, dtype=np.float64)
    snap = np.where(x - lower < 1e-3, lower, x)
    if (snap != x).any():
        r_x, r_s = residual(x), residual(snap)
        if float(r_s @ r_s) <= float(r_x @ r_x):
            x = snap
    return x


# --------------------------------------------------------------------------------------
# one filter, one criterion


def _model(t: int, sx: Any, sy: Any, alpha: Any, size: int, mode: str) -> np.ndarray:
    if t == _CENTRE_SURROUND:
        return np.asarray(masterkey_model(t, sx, alpha=alpha, size=size, mode=mode))
    return np.asarray(masterkey_model(t, sx, sy, size=size, mode=mode))


def _norms(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.abs(d).sum(axis=(-2, -1)), np.sqrt((d * d).sum(axis=(-2, -1)))


def _fit_centre_surround(
    hn: np.ndarray, norm: str, mode: str, smax: float, step: float
) -> tuple[float, float]:
    """Type 7: minimise over (sigma, alpha); the best alpha per sigma is exact."""
    size = hn.shape[0]
    delta = np.zeros_like(hn)
    delta[size // 2, size // 2] = 1.0
    r = (delta - hn).reshape(-1)  # g - h~ = r - alpha * L

    def lap(s: np.ndarray) -> np.ndarray:
        return np.asarray(model_kernel("lap", s, size=size, mode=mode)).reshape(len(s), -1)

    def best_alpha(L: np.ndarray) -> np.ndarray:
        if norm == "l2":
            den = (L * L).sum(axis=1)
            return np.where(den > 0, (L @ r) / np.where(den > 0, den, 1.0), 0.0)
        # l1: weighted median of r_i / L_i with weights |L_i|
        w = np.abs(L)
        z = np.where(w > 0, r[None, :] / np.where(w > 0, L, 1.0), 0.0)
        order = np.argsort(z, axis=1, kind="stable")
        zs = np.take_along_axis(z, order, axis=1)
        cw = np.cumsum(np.take_along_axis(w, order, axis=1), axis=1)
        k = np.argmax(cw >= 0.5 * cw[:, -1:], axis=1)
        return zs[np.arange(len(zs)), k]

    def profile(s: np.ndarray) -> np.ndarray:
        L = lap(s)
        d = r[None, :] - best_alpha(L)[:, None] * L
        return np.abs(d).sum(axis=1) if norm == "l1" else (d * d).sum(axis=1)

    hi = _upper(smax, size)
    sigma, _ = _minimize_1d(profile, _grid(smax, step), hi)
    alpha = float(best_alpha(lap(np.array([sigma])))[0])
    x0 = np.array([sigma, alpha])

    def objective(p: np.ndarray) -> np.ndarray:
        d = _model(7, p[:, 0], None, p[:, 1], size, mode) - hn
        return np.abs(d).sum(axis=(-2, -1)) if norm == "l1" else (d * d).sum(axis=(-2, -1))

    if norm == "l2":
        x = _polish_lsq(
            lambda p: (_model(7, p[0], None, p[1], size, mode) - hn).reshape(-1),
            x0,
            np.array([0.0, -np.inf]),
            np.array([hi, np.inf]),
        )
    else:  # the profile is exact; a joint zoom only guards against rounding
        x, _ = _zoom(
            objective,
            x0,
            step / 4,
            np.array([0.0, -np.inf]),
            points=12,
            upper=np.array([hi, np.inf]),
        )
    if objective(x[None, :])[0] > objective(x0[None, :])[0]:
        x = x0
    return float(x[0]), float(x[1])


def _fit_common(
    hns: Sequence[np.ndarray],
    types: Sequence[int],
    norm: str,
    mode: str,
    smax: float,
    step: float,
) -> float:
    """One sigma (sigma_x = sigma_y) for one or more filters: summed l1 or squared l2."""
    size = hns[0].shape[0]

    def total(s: np.ndarray) -> np.ndarray:
        out = np.zeros(len(s))
        for hn, t in zip(hns, types, strict=True):
            d = _model(t, s, s, None, size, mode) - hn
            out += np.abs(d).sum(axis=(-2, -1)) if norm == "l1" else (d * d).sum(axis=(-2, -1))
        return out

    hi = _upper(smax, size)
    sigma, f_best = _minimize_1d(total, _grid(smax, step), hi)
    if norm == "l2":

        def residual(p: np.ndarray) -> np.ndarray:
            return np.concatenate(
                [
                    (_model(t, p[0], p[0], None, size, mode) - hn).reshape(-1)
                    for hn, t in zip(hns, types, strict=True)
                ]
            )

        x = float(_polish_lsq(residual, np.array([sigma]), np.zeros(1), np.array([hi]))[0])
        if float(total(np.array([x]))[0]) <= f_best:
            sigma = x
    return sigma


def _fit_separate(
    hn: np.ndarray, t: int, norm: str, mode: str, smax: float, step: float
) -> tuple[float, float]:
    """Separate sigma_x, sigma_y: 2-D grid, then least squares (l2) or NM/Powell (l1)."""
    size = hn.shape[0]
    coarse = _grid(smax, max(step, smax / 80))
    sx, sy = np.meshgrid(coarse, coarse, indexing="ij")
    sx, sy = sx.reshape(-1), sy.reshape(-1)
    l1, l2 = _norms(_model(t, sx, sy, None, size, mode) - hn)
    values = l1 if norm == "l1" else l2
    chosen = _local_minima_2d(values.reshape(len(coarse), len(coarse)))

    def batch(p: np.ndarray) -> np.ndarray:
        d = _model(t, p[:, 0], p[:, 1], None, size, mode) - hn
        return np.abs(d).sum(axis=(-2, -1)) if norm == "l1" else np.sqrt((d * d).sum(axis=(-2, -1)))

    def objective(p: np.ndarray) -> float:
        return float(batch(np.asarray(p, dtype=np.float64)[None, :])[0])

    spacing = float(coarse[1] - coarse[0])
    hi = np.full(2, _upper(smax, size))
    best = np.array([sx[chosen[0]], sy[chosen[0]]])
    best_f = float(values[chosen[0]])
    for i in chosen:
        x0 = np.array([sx[i], sy[i]])
        if norm == "l2":
            x = _polish_lsq(
                lambda p: (_model(t, p[0], p[1], None, size, mode) - hn).reshape(-1),
                x0,
                np.zeros(2),
                hi,
            )
            fx = objective(x)
        else:
            x, fx = _zoom(batch, x0, spacing, np.zeros(2), points=12, upper=hi)
        if fx < best_f:
            best, best_f = x, fx
    if norm == "l1":  # derivative-free polish of the best point (adaptive directions)
        bounds = [(0.0, float(hi[0])), (0.0, float(hi[1]))]
        best, best_f = _polish_nm(objective, best, bounds, 1e-4, 200)
    return float(best[0]), float(best[1])


def _fit_variance(
    hn: np.ndarray,
    t: int,
    method: str,
    sigma_ref: float,
    mode: str,
    smax: float,
    step: float,
    index: int,
) -> tuple[float, float]:
    """Methods A, A-exact and B for types 1-6 and 8 (separate sigma_x, sigma_y)."""
    from scalespace_mk.analysis.spread import reference_weights, spread

    size = hn.shape[0]
    weight = reference_weights([t], sigma_ref, size=size)[0]
    v_learned = spread(hn, weights=weight).cov[0]
    orders = _axis_orders(t)
    out = []
    for axis, name in ((0, "x"), (1, "y")):
        v = float(v_learned[axis, axis])
        if method == "A":
            out.append(_self_weighted_sigma(v, orders[axis]))
        elif method == "A-exact":
            out.append(_sigma_exact(orders[axis], v, sigma_ref, index, t, name))
        else:
            out.append(_solve_b(hn, t, weight, v, axis, sigma_ref, mode, smax, step, index, name))
    return out[0], out[1]


def _sigma_exact(order: int, v: float, sigma_ref: float, index: int, t: int, name: str) -> float:
    try:
        from scalespace_mk.scalespace.symbolic import sigma_from_weighted_variance
    except ImportError as exc:  # pragma: no cover - the module ships with the package
        raise RuntimeError(
            "method 'A-exact' needs scalespace_mk.scalespace.symbolic "
            "(sigma_from_weighted_variance)"
        ) from exc
    try:
        sigma = float(sigma_from_weighted_variance(order, v, sigma_ref))
    except (ValueError, ZeroDivisionError, TypeError) as exc:
        raise ValueError(
            f"method 'A-exact': filter {index} (type {t}): the weighted variance V_{name}{name} "
            f"= {v:.6g} has no finite scale for a derivative of order {order} weighted at "
            f"sigma_ref = {sigma_ref:.6g} ({exc}); use method A, B, C or D"
        ) from None
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(
            f"method 'A-exact': filter {index} (type {t}): the weighted variance V_{name}{name} "
            f"= {v:.6g} has no finite scale for a derivative of order {order} weighted at "
            f"sigma_ref = {sigma_ref:.6g} (got {sigma}); use method A, B, C or D"
        )
    return sigma


def _solve_b(
    hn: np.ndarray,
    t: int,
    weight: np.ndarray,
    v: float,
    axis: int,
    sigma_ref: float,
    mode: str,
    smax: float,
    step: float,
    index: int,
    name: str,
) -> float:
    """Root of ``V_model(sigma) - V_learned`` along one axis (other axis at sigma_ref)."""
    from scalespace_mk.analysis.spread import spread

    size = hn.shape[0]

    def v_model(s: np.ndarray) -> np.ndarray:
        other = np.full(len(s), sigma_ref)
        sx, sy = (s, other) if axis == 0 else (other, s)
        return spread(_model(t, sx, sy, None, size, mode), weights=weight).cov[:, axis, axis]

    grid = _grid(smax, step)
    f = v_model(grid) - v
    zero = np.flatnonzero(f == 0.0)
    change = np.flatnonzero(np.sign(f[:-1]) * np.sign(f[1:]) < 0)
    if zero.size and (change.size == 0 or zero[0] <= change[0]):
        return float(grid[zero[0]])
    if change.size == 0:
        # advise a larger sigma_max only where it can help: the weighted variance of the
        # model is bounded by the filter's support, and saturates as sigma grows
        far = _upper(smax, size)  # larger scales give the same flat model
        v_far = float(v_model(np.array([far]))[0])
        if f.max() + v < v < v_far:
            advice = f"raise sigma_max above {smax:g}, or use method A, C or D"
        else:
            advice = (
                f"a larger sigma_max cannot help: at sigma = {far:g} the model's weighted "
                f"variance is {v_far:.6g}; use method A, C or D"
            )
        raise ValueError(
            f"method 'B': filter {index} (type {t}): no sigma_{name} in [0, {smax:g}] gives "
            f"the weighted variance V_{name}{name} = {v:.6g} of the filter; the model's weighted "
            f"variance ranges over [{f.min() + v:.6g}, {f.max() + v:.6g}] there ({advice})"
        )
    i = int(change[0])

    def func(s: float) -> float:
        return float(v_model(np.array([s]))[0] - v)

    # re-evaluate the ends one by one: a batch may round differently in the last bit
    a, b = float(grid[i]), float(grid[i + 1])
    fa, fb = func(a), func(b)
    if fa * fb >= 0.0:  # the root sits on an end, up to rounding
        return a if abs(fa) <= abs(fb) else b
    return float(brentq(func, a, b, xtol=1e-14, rtol=4 * np.finfo(float).eps, maxiter=200))


# --------------------------------------------------------------------------------------
# public entry points


def fit_filters(
    h: Any,
    filter_types: Any = None,
    *,
    method: str = "B",
    normalize: bool = True,
    sigma_ref: Any = None,
    mode: str = "paper",
    sigma_max: float = DEFAULT_SIGMA_MAX,
    grid_step: float = DEFAULT_GRID_STEP,
    on_error: str = "raise",
    progress: bool | None = None,
) -> FitResult:
    """Fit the idealised models to N filters by one method (docs/method.md#fitting).

    Parameters
    ----------
    h : array_like or torch.Tensor
        Filters ``[N, k, k]`` (or ``[k, k]``), stored depthwise weights ``h[r, c]`` (odd k).
    filter_types : None, int or sequence of int, optional
        Master key type (1..8) of each filter; default ``1..8`` for exactly 8 filters (the
        published order), required otherwise.
    method : str
        One of :data:`METHODS` (default ``"B"``).
    normalize : bool
        If True (default), normalise the filters in paper mode first
        (:func:`scalespace_mk.analysis.normalize.normalize_filters`); if False, ``h`` is taken to be
        the normalised filters ``h~`` already.
    sigma_ref : None, float or sequence of float, optional
        Reference scale (pixels, >= 0) of the weights of methods A, A-exact and B; default 1
        for types 1-6 and 8 (type 7 is fitted by its l2 criterion in these methods).
    mode : {"paper", "full"}
        Model mode; ``"paper"`` (default) reproduces the reference analysis.
    sigma_max : float
        Upper end (pixels) of the starting grids and of the root bracket of method B, at
        most :data:`scalespace_mk.limits.SIGMA_LIMIT`. The optimisers of methods C, D and
        of type 7 may leave the grid but stay in ``[0, max(sigma_max, 4 k)]`` for k x k
        filters (:data:`scalespace_mk.limits.FIT_SIGMA_PER_TAP`: beyond ``4 k`` a Gaussian
        is flat across the filter to 1 %); methods A and A-exact search nothing (closed
        form) and method B only ``[0, sigma_max]``.
    grid_step : float
        Spacing (pixels) of the one-scale starting grids (two-scale grids use at least
        ``sigma_max / 80``); at most :data:`scalespace_mk.limits.FIT_GRID_POINTS_MAX` grid
        points.
    on_error : {"raise", "record"}
        When a filter has nothing to fit (all zero, constant, or a NaN/Inf tap; see
        :func:`scalespace_mk.analysis.census.screen_filters`) or method A-exact or B has no
        solution for it: ``"raise"`` (default) raises a ValueError naming the filter;
        ``"record"`` fits the other filters and stores the reason in that filter's
        :attr:`FilterFit.error` (``"zero"``, ``"constant"``, ``"non-finite"`` or the
        method's message; its scales are NaN; joint methods then pool the group's other
        filters), as the census does.
    progress : bool, optional
        Show progress and an estimate of the time left (a tqdm bar on a terminal, log lines
        otherwise; :mod:`scalespace_mk._progress`). Default: for 100 filters or more with
        the searching methods (all but A and A-exact, which are closed form). Method B costs
        about 0.5 s per filter: for thousands of filters use the census
        (:func:`scalespace_mk.analysis.census.census`), which fits thousands per second.

    Returns
    -------
    FitResult
        Per filter: type, model name, ``sigma_x``, ``sigma_y``, ``alpha`` (type 7), l1 and l2
        of ``g - h~``, the normalised filter and the fitted model.

    Raises
    ------
    ValueError
        For an unknown method (the message lists :data:`METHODS`), invalid filters (NaN,
        all zero, not square or even-sized), types outside 1..8, or when method B finds no
        root in ``[0, sigma_max]`` or method A-exact no finite scale (the message names the
        filter and the axis). :class:`scalespace_mk.limits.MemoryBudgetError` (a ValueError)
        when ``sigma_max`` and ``grid_step`` ask for grids above the memory budget.

    Notes
    -----
    Joint methods pool the filters whose types belong to the same group of
    :data:`JOINT_GROUPS`; ``A-joint``/``B-joint`` take the geometric mean of the group's
    ``sigma_x`` and ``sigma_y`` (a zero scale makes it zero), ``C-joint``/``D-joint``
    minimise the summed l1 / squared l2 distances. Coordinates: ``x = c - m``,
    ``y = m - r`` (y up). Filters whose largest tap lies outside ``[2**-100, 2**100]``
    (e.g. scaled by 1e300 or 1e-300) are first scaled by an exact power of two (the
    normalisation divides the scale out; only ``normalize=True``).

    Examples
    --------
    >>> from scalespace_mk.analysis.filters import load_filters
    >>> res = fit_filters(load_filters(), method="B")  # doctest: +SKIP
    >>> round(res[0].sigma_x, 4), round(res[0].sigma_y, 4)  # doctest: +SKIP
    (0.6445, 0.5829)
    """
    check_choice("method", method, METHODS)
    check_choice("mode", mode, MODES)
    check_choice("on_error", on_error, ("raise", "record"))
    if not isinstance(normalize, bool | np.bool_):
        raise TypeError(f"normalize must be True or False; got {normalize!r}")
    if progress is not None and not isinstance(progress, bool | np.bool_):
        raise TypeError(f"progress must be True, False or None; got {progress!r}")
    smax, step = _check_grid(sigma_max, grid_step)
    arr = check_filters(h, "h", values=False)
    _check_fit_memory(smax, step, arr.shape[1], arr.shape[0])
    types = resolve_filter_types(filter_types, arr.shape[0])
    refs = resolve_sigma_ref(sigma_ref, types)
    from scalespace_mk.analysis.screening import _invalid_message, screen_filters

    reason = screen_filters(arr)
    bad = np.not_equal(reason, None)
    if bad.any():
        if on_error == "raise":
            idx = int(np.flatnonzero(bad)[0])
            raise ValueError(_invalid_message("h", idx, reason[idx], arr))
        return _with_invalid(
            arr, types, refs, reason, method, normalize, mode, smax, step, on_error
        )
    if normalize:
        from scalespace_mk.analysis.normalize import normalize_filters

        hns = normalize_filters(_rescale_extreme(arr), filter_types=types).filters
    else:
        hns = arr
    if progress is None:
        progress = arr.shape[0] >= 100 and method not in ("A", "A-exact", "A-joint")
    with _one_thread():
        return _fit_all(hns, types, refs, method, mode, smax, step, on_error, bool(progress))


def _rescale_extreme(arr: np.ndarray) -> np.ndarray:
    """Scale filters whose largest tap lies outside ``[2**-100, 2**100]`` by an exact power
    of two to a largest tap in ``[0.5, 1)`` (sums and moments of 1e300-scaled filters would
    overflow, those of 1e-300-scaled ones underflow)."""
    peak = np.abs(arr).max(axis=(1, 2))
    extreme = (peak > 2.0**100) | (peak < 2.0**-100)
    if not extreme.any():
        return arr
    _, exponent = np.frexp(peak[extreme])
    out = arr.copy()
    out[extreme] = np.ldexp(arr[extreme], -exponent[:, None, None])
    return out


def _with_invalid(
    arr: np.ndarray,
    types: np.ndarray,
    refs: np.ndarray,
    reason: np.ndarray,
    method: str,
    normalize: bool,
    mode: str,
    smax: float,
    step: float,
    on_error: str,
) -> FitResult:
    """Fit the valid filters; the others get a :class:`FilterFit` with NaN and their reason."""
    import dataclasses

    ok = np.equal(reason, None)
    sub: list[FilterFit] = []
    if ok.any():
        sub = list(
            fit_filters(
                arr[ok],
                types[ok],
                method=method,
                normalize=normalize,
                sigma_ref=refs[ok],
                mode=mode,
                sigma_max=smax,
                grid_step=step,
                on_error=on_error,
            )
        )
    fits, it = [], iter(sub)
    nan = np.full(arr.shape[1:], np.nan)
    for i in range(arr.shape[0]):
        t = int(types[i])
        if ok[i]:
            fits.append(dataclasses.replace(next(it), index=i + 1))
            continue
        fits.append(
            FilterFit(
                index=i + 1,
                filter_type=t,
                model=MASTERKEY_MODELS[t],
                sigma_x=math.nan,
                sigma_y=math.nan,
                alpha=None,
                l1=math.nan,
                l2=math.nan,
                normalized=nan.copy(),
                fitted=nan.copy(),
                error=str(reason[i]),
            )
        )
    return FitResult(method=method, fits=tuple(fits), mode=mode)


def _fit_all(
    hns: np.ndarray,
    types: np.ndarray,
    refs: np.ndarray,
    method: str,
    mode: str,
    smax: float,
    step: float,
    on_error: str = "raise",
    show: bool = False,
) -> FitResult:
    from scalespace_mk._progress import progress

    n, size = hns.shape[0], hns.shape[1]
    ticker = progress(range(n), desc=f"fit (method {method})", unit="filter", enabled=show)
    next(ticker, None)  # the first line

    def tick(count: int = 1) -> None:
        for _ in range(count):
            next(ticker, None)

    errors: list[str | None] = [None] * n
    sx = np.zeros(n)
    sy = np.zeros(n)
    alpha: list[float | None] = [None] * n
    base = _BASE.get(method, method)
    norm = _NORM.get(method, "l2")

    # type 7: (sigma, alpha) jointly in every method
    for i in np.flatnonzero(types == _CENTRE_SURROUND):
        s, a = _fit_centre_surround(hns[i], norm, mode, smax, step)
        sx[i] = sy[i] = s
        alpha[i] = a
        tick()

    others = np.flatnonzero(types != _CENTRE_SURROUND)
    if base in ("A", "A-exact", "B"):
        for i in others:
            try:
                sx[i], sy[i] = _fit_variance(
                    hns[i], int(types[i]), base, float(refs[i]), mode, smax, step, int(i) + 1
                )
            except ValueError as exc:
                if on_error == "raise":
                    raise
                sx[i] = sy[i] = np.nan
                errors[i] = str(exc)
            tick()
        if method in ("A-joint", "B-joint"):
            for group in JOINT_GROUPS:
                members = [i for i in others if int(types[i]) in group and errors[i] is None]
                if members:
                    logs = np.log(np.concatenate([sx[members], sy[members]]))
                    gm = 0.0 if np.isneginf(logs).any() else float(np.exp(logs.mean()))
                    sx[members] = sy[members] = gm
    elif method in ("C1", "D1"):
        for i in others:
            sx[i], sy[i] = _fit_separate(hns[i], int(types[i]), norm, mode, smax, step)
            tick()
    elif method in ("C2", "D2"):
        for i in others:
            sx[i] = sy[i] = _fit_common([hns[i]], [int(types[i])], norm, mode, smax, step)
            tick()
    else:  # C-joint, D-joint
        for group in JOINT_GROUPS:
            members = [i for i in others if int(types[i]) in group]
            if members:
                s = _fit_common(
                    [hns[i] for i in members],
                    [int(types[i]) for i in members],
                    norm,
                    mode,
                    smax,
                    step,
                )
                sx[members] = sy[members] = s
                tick(len(members))

    for _ in ticker:  # the last line
        pass
    fits = []
    for i in range(n):
        t = int(types[i])
        if errors[i] is None:
            g = _model(t, sx[i], sy[i], alpha[i], size, mode)
            l1, l2 = _norms(g - hns[i])
        else:
            g = np.full_like(hns[i], np.nan)
            l1 = l2 = np.nan
        fits.append(
            FilterFit(
                index=i + 1,
                filter_type=t,
                model=MASTERKEY_MODELS[t],
                sigma_x=float(sx[i]),
                sigma_y=float(sy[i]),
                alpha=alpha[i],
                l1=float(l1),
                l2=float(l2),
                normalized=hns[i].copy(),
                fitted=g,
                error=errors[i],
            )
        )
    return FitResult(method=method, fits=tuple(fits), mode=mode)


def fit_filter(
    h: Any,
    filter_type: int,
    *,
    method: str = "B",
    normalize: bool = True,
    sigma_ref: float | None = None,
    mode: str = "paper",
    sigma_max: float = DEFAULT_SIGMA_MAX,
    grid_step: float = DEFAULT_GRID_STEP,
) -> FilterFit:
    """Fit the model of one master key type to one filter.

    Parameters
    ----------
    h : array_like or torch.Tensor
        One filter ``[k, k]`` (odd k), stored depthwise weight ``h[r, c]``.
    filter_type : int
        Master key type 1..8.
    method : str
        One of :data:`METHODS`. The joint methods pool only this one filter: ``A-joint`` and
        ``B-joint`` give the geometric mean of A's / B's ``sigma_x`` and ``sigma_y``,
        ``C-joint`` and ``D-joint`` equal ``C2`` and ``D2``.
    normalize, sigma_ref, mode, sigma_max, grid_step
        As in :func:`fit_filters`.

    Returns
    -------
    FilterFit
        The fit (``index`` is 1).

    Examples
    --------
    >>> from scalespace_mk.scalespace.models import masterkey_model
    >>> g = masterkey_model(5, 1.2, 0.8)
    >>> fit = fit_filter(g, 5, method="D1", normalize=False)  # g is its own h~
    >>> round(fit.sigma_x, 6), round(fit.sigma_y, 6)
    (1.2, 0.8)
    """
    hn = _single(h)
    t = check_filter_type(filter_type)
    return fit_filters(
        hn[None],
        [t],
        method=method,
        normalize=normalize,
        sigma_ref=sigma_ref,
        mode=mode,
        sigma_max=sigma_max,
        grid_step=grid_step,
    )[0]
