"""Census of arbitrary learned filters: the best linear shift ``a g + b`` of every model.

For each filter ``y`` (any odd size k) and each model type ``g(theta)`` (the 8 master key
types of docs/method.md#models, optionally other derivative models), the census finds the scales
``theta`` and the gain and offset ``(a, b)`` that minimise ``||a g(theta) + b - y||_2``,
the linear shift ``a x + b`` of the master-key literature with the scales fitted too.

For fixed ``g`` the optimum is closed-form (:func:`linear_shift`): with ``y_c = y - mean y``
and ``g_c = g - mean g``,

    a = <y_c, g_c> / <g_c, g_c>,   b = mean(y) - a mean(g),
    RSS = ||y_c||^2 - <y_c, g_c>^2 / ||g_c||^2,

so the fraction of the filter's variance explained, ``R^2 = 1 - RSS / TSS`` with
``TSS = ||y_c||^2``, is the squared correlation of ``y`` and ``g``. The search maximises
that over the scales, for all filters at once (torch, CPU or CUDA, float64):

1. **Tables.** The models are tabulated once per call (and cached) at knots
   ``sigma = 0, d, 2d, ...`` (``d`` ~ 0.001) with
   :func:`scalespace_mk.scalespace.models.model_kernel`.
   Separable models ``g = v(sigma_y) (x) u(sigma_x)`` are stored as their two 1-D
   factors, so any pair of scales costs two 1-D interpolations. Between knots the factors
   are interpolated by 4-point cubic Lagrange interpolation (error ~1e-12 where the kernel
   is smooth in sigma; the truncation of the discrete Gaussian at ``epsilon`` makes the
   kernel itself jump by ~1e-9 at a few small scales).
2. **Coarse grid.** Every type is evaluated on a grid of scales (step ~0.1 for two scales,
   ~0.02 for one). For the separable types the correlation of a centred unit filter with
   every grid model ``v (x) u`` is ``v^T Z u / ||g_c||``: two float32 products of the 1-D
   factors (``Z^T V`` for all row factors at once, then one product per type), about a
   seventh of the multiply-adds of the grid models as one matrix (the grid only picks the
   start of the refinement, at the vertex of the quadratic through the 3x3 grid
   neighbourhood of the maximum).
3. **Refinement.** A batched trust-region Newton iteration on the squared correlation with
   exact first and second derivatives of the cubic tables (quadratic convergence: most
   filters need two evaluations; a full Newton step under ``3e-4`` is taken without
   evaluating it). One-scale types use the same iteration (their derivatives carried as
   second-order jets through the closed form in alpha). The few fits where Newton does
   not converge in 5 steps (saddles, sigma = 0 of an even objective, flat ridges) continue
   by a batched stencil search (finite-difference Newton on a 3x3 or 3-point stencil
   whose width shrinks from half a grid step to 1e-4) from both the grid point and the
   Newton's best point, the better end kept. There is no Python loop over filters; on the
   CPU, chunks of filters run on ``num_threads`` workers with one intra-op thread each
   (forked processes for large inputs on Linux, threads otherwise).
4. **Exact values.** At the final scales every model is recomputed exactly with
   ``model_kernel`` and ``a``, ``b``, ``R^2`` come from :func:`linear_shift`.

Model 7 (``K - alpha nabla5 T(sigma)``, one sigma) is linear in ``alpha`` and the gain, so
for each sigma the pair (gain, alpha) is solved in closed form as a two-regressor least
squares problem, with ``alpha`` held in ``alpha_range`` (default :data:`ALPHA_RANGE`); only
sigma is searched.

Conventions: filters are stored depthwise weights ``h[r, c]`` (rows top to bottom), with
``x = c - m`` and ``y = m - r`` (**y up**) for the centre index ``m = k // 2``; models are
built in the same index space and used with no flip. ``sigma`` is a standard deviation
(the theory's scale parameter is ``s = sigma**2``); scales lie in ``[0, sigma_max]``.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

import scalespace_mk.limits as limits
from scalespace_mk._checks import (
    check_batch_size,
    check_choice,
    check_device,
    check_epsilon,
    check_filters,
    check_num_threads,
    check_sigma_max,
    check_size,
)
from scalespace_mk.analysis.null import null_filters
from scalespace_mk.analysis.types import DEFAULT_TYPES, ModelType, parse_model_types
from scalespace_mk.scalespace.kernels import METHODS
from scalespace_mk.scalespace.models import MODES, model_kernel, parse_model

__all__ = [
    "ALPHA_RANGE",
    "DEFAULT_TYPES",
    "INVALID_REASONS",
    "ON_INVALID",
    "CensusResult",
    "LinearShift",
    "census",
    "linear_shift",
    "null_r2",
    "reference_fit",
    "scale_statistics",
    "screen_filters",
]

#: Default range of the Laplacian weight ``alpha`` of type 7 (``K - alpha nabla5 T``).
ALPHA_RANGE: tuple[float, float] = (0.0, 10.0)

_KNOT_STEP = 0.001  # table resolution in sigma (cubic interpolation error ~1e-12)
_GRID_STEP_2D = 0.1  # coarse grid step for two-scale models
_GRID_STEP_1D = 0.02  # coarse grid step for one-scale models
_H_MIN = 1e-4  # smallest finite-difference step of the refinement
_MAX_ITER = 30
_NEWTON_ITER = 5  # Newton steps before a filter is left to the stencil search
_NEWTON_TOL = 1e-7  # a proposed Newton move this short ends the two-scale refinement
_NEWTON_TAKE = 3e-4  # ... and a full Newton step this short is taken unevaluated, as the last
_X_TOL = 1e-6  # a trusted Newton step at _H_MIN this short ends the refinement
_S_REF = 1.0  # scale of the other axis when a 1-D factor is read off a 2-D model
_GRID_DTYPE = torch.float32  # precision of the coarse-grid products (argmax only)
_GRID_CHUNK = 256  # filters per coarse-grid product (one type's [chunk, G*G] block stays in cache)
_GRID_BLOCK_BYTES = 4 << 20  # ... fewer when that float32 block would pass 4 MB
_GRID_CHUNK_1D = 512  # filters per one-scale grid evaluation ([chunk, G] float64 in cache)
_SCREEN_CHUNK = 65536  # filters screened at a time (temporaries ~ 5 x 0.5 MB per 1k)
_TINY = 1e-14  # ||g_c||^2 (of a unit-norm model) below this counts as a constant model


# --------------------------------------------------------------------------------------
# closed-form linear shift


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


def _screen(filters: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`screen_filters`'s reasons, with what it computes on the way: per filter the
    largest ``|tap|`` (0 where not finite) and the centred sum of squares of the filter
    divided by it (NaN where the filter is zero or not finite), so that :func:`census`
    need not compute them again."""
    arr = np.asarray(filters, dtype=np.float64)
    flat = arr.reshape(arr.shape[0], -1)
    reason = np.full(arr.shape[0], None, dtype=object)
    scales = np.zeros(arr.shape[0])
    css = np.full(arr.shape[0], np.nan)
    for start in range(0, flat.shape[0], _SCREEN_CHUNK):  # bounded temporaries
        part = flat[start : start + _SCREEN_CHUNK]
        finite = np.isfinite(part).all(axis=1)
        safe = np.where(finite[:, None], part, 0.0)
        scale = np.abs(safe).max(axis=1)
        zero = finite & (scale == 0)
        ok = finite & ~zero
        yn = safe[ok] / scale[ok, None]
        yc = yn - yn.mean(axis=1, keepdims=True)
        ss = (yc * yc).sum(axis=1)
        const = ss <= _CONSTANT_RTOL * (yn * yn).sum(axis=1)
        here = reason[start : start + _SCREEN_CHUNK]  # a view: writes go to reason
        here[~finite] = "non-finite"
        here[zero] = "zero"
        here[np.flatnonzero(ok)[const]] = "constant"
        scales[start : start + _SCREEN_CHUNK] = scale
        css[start + np.flatnonzero(ok)] = ss
    return reason, scales, css


def _screen_input(filters: Any, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Filters as float64 ``[N, k, k]`` (shape checked) and their :func:`_screen`."""
    arr = check_filters(filters, name, values=False)
    return (arr, *_screen(arr))


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


# --------------------------------------------------------------------------------------
# model types


# --------------------------------------------------------------------------------------
# tables of the models over sigma


def _knots(sigma_max: float) -> tuple[np.ndarray, float]:
    """Knots ``|j| d`` for ``j = -1 .. J + 1`` with ``J d = sigma_max``."""
    n = max(int(math.ceil(sigma_max / _KNOT_STEP)), 2)
    step = sigma_max / n
    return np.abs(np.arange(-1, n + 2, dtype=np.float64)) * step, step


def _factor_name(name: str, axis: str) -> str:
    """A model with the same 1-D factor along ``axis`` as ``name`` (shares cached tables)."""
    ops = getattr(parse_model(name), f"ops_{axis}")
    a = axis
    canonical = {
        (): "T",
        ("x",): f"d{a}",
        ("xx",): f"d{a}{a}",
        ("x", "xx"): f"d{a * 3}",
        ("xx", "xx"): f"d{a * 4}",
        ("x+",): f"d{a}+",
        ("x-",): f"d{a}-",
    }.get(ops)
    if canonical is None or getattr(parse_model(canonical), f"ops_{axis}") != ops:
        return name
    return canonical


@functools.lru_cache(maxsize=64)
def _table(
    name: str, part: str, k: int, method: str, mode: str, epsilon: float, sigma_max: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tabulated model parts at the knots (CPU float64, cached).

    ``part`` is ``"x"`` / ``"y"`` (unit-norm 1-D factor along x / along the rows of a
    separable model; read off a 2-D model whose other scale is :data:`_S_REF`) or ``"lap"``
    (unit-norm flattened Laplacian part ``L`` of model 7 or of ``"lap"``). Returns the cubic
    coefficients (:func:`_cubic_coefficients`) of the unit-norm rows ``[J, 4, D]`` and of
    the norms of the raw rows ``[J, 4, 1]``.
    """
    knots, _ = _knots(sigma_max)
    kw = dict(size=k, method=method, mode=mode, epsilon=epsilon)
    with torch.no_grad():
        if part == "x":
            g = torch.as_tensor(model_kernel(name, knots, np.full_like(knots, _S_REF), **kw))
            row = int(g[len(knots) // 2].abs().sum(dim=1).argmax())
            raw = g[:, row, :]
        elif part == "y":
            g = torch.as_tensor(model_kernel(name, np.full_like(knots, _S_REF), knots, **kw))
            col = int(g[len(knots) // 2].abs().sum(dim=0).argmax())
            raw = g[:, :, col]
        elif name == "lap" or parse_model(name).laplacian:
            raw = torch.as_tensor(model_kernel(name, knots, **kw)).reshape(len(knots), -1)
        else:  # mk7 = K - alpha L, linear in alpha: L = K - mk7(alpha = 1)
            mk = torch.as_tensor(model_kernel(name, knots, alpha=np.ones_like(knots), **kw))
            delta = torch.zeros(k, k, dtype=torch.float64)
            delta[k // 2, k // 2] = 1.0
            raw = (delta - mk).reshape(len(knots), -1)
    norms = raw.norm(dim=1)
    table = raw / torch.where(norms > 0, norms, torch.ones_like(norms))[:, None]
    return _cubic_coefficients(table), _cubic_coefficients(norms[:, None])


#: cubic Lagrange interpolation through nodes -1, 0, 1, 2 as a polynomial in t:
#: coefficients of 1, t, t^2, t^3 (rows) from the four node values (columns)
_LAGRANGE = (
    (0.0, 1.0, 0.0, 0.0),
    (-1.0 / 3.0, -0.5, 1.0, -1.0 / 6.0),
    (0.5, -1.0, 0.5, 0.0),
    (-1.0 / 6.0, 0.5, -0.5, 1.0 / 6.0),
)


def _cubic_coefficients(table: torch.Tensor) -> torch.Tensor:
    """Polynomial coefficients ``[J, 4, D]`` of the cubic on each interval of a table.

    ``table`` is ``[J + 3, D]`` with rows at the knots ``-1, 0, .., J + 1`` (times the step;
    the models are even in sigma, so knot -1 holds the value at +step). Interval ``i``
    (between knots i and i + 1) gets the cubic through knots ``i - 1 .. i + 2`` as
    ``c0 + c1 t + c2 t^2 + c3 t^3`` in ``t`` in [0, 1].
    """
    lag = torch.tensor(_LAGRANGE, dtype=table.dtype, device=table.device)
    windows = table.unfold(0, 4, 1)  # [J, D, 4]: rows i-1..i+2 for interval i
    return torch.einsum("cj,idj->icd", lag, windows).contiguous()


class _Interp:
    """Piecewise-cubic (4-point Lagrange) interpolation in sigma of a tabulated model part.

    Calling it with scales ``[...]`` returns ``[..., D]``; the table is extended evenly
    about 0 and about ``sigma_max`` (scales beyond it are mirrored back).
    """

    def __init__(self, coef: torch.Tensor, step: float, sigma_max: float) -> None:
        self.coef = coef  # [J, 4, D] from _cubic_coefficients
        self.inv_step = 1.0 / step
        self.sigma_max = sigma_max
        self.n = coef.shape[0]

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.abs()
        # mirror at sigma_max as at 0: a maximum on the bound becomes a stationary point,
        # so the finite differences along the other scale stay exact there
        s = torch.where(s > self.sigma_max, 2.0 * self.sigma_max - s, s).clamp(min=0.0)
        s = s * self.inv_step
        i = s.floor().clamp(max=self.n - 1)
        t = (s - i)[..., None]
        c = self.coef.index_select(0, i.long().reshape(-1)).reshape(*s.shape, 4, -1)
        f = torch.addcmul(c[..., 2, :], c[..., 3, :], t)  # Horner: c0 + t (c1 + t (c2 + t c3))
        f = torch.addcmul(c[..., 1, :], f, t)
        return torch.addcmul(c[..., 0, :], f, t)

    def derivs(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Value, first and second derivative in sigma at scales ``[n]`` in [0, sigma_max].

        Each ``[n, D]``: the exact derivatives of the piecewise cubic.
        """
        s = sigma.clamp(0.0, self.sigma_max) * self.inv_step
        i = s.floor().clamp(max=self.n - 1)
        t = (s - i)[:, None]
        c = self.coef.index_select(0, i.long())  # [n, 4, D]
        c0, c1, c2, c3 = c.unbind(1)
        f = torch.addcmul(c1, torch.addcmul(c2, c3, t), t)  # Horner with fused steps
        f = torch.addcmul(c0, f, t)
        c2x2, c3x3 = c2 * 2.0, c3 * 3.0
        d1 = torch.addcmul(c1, torch.addcmul(c2x2, c3x3, t), t).mul_(self.inv_step)
        d2 = torch.addcmul(c2x2, c3x3, t, value=2.0).mul_(self.inv_step * self.inv_step)
        return f, d1, d2


# --------------------------------------------------------------------------------------
# objectives: squared correlation of the centred unit filters z with the models


def _mirror_parity(coef: torch.Tensor) -> float | None:
    """``1.0`` / ``-1.0`` when the taps of a 1-D table ``[J, 4, k]`` are even / odd about the
    centre (within ``1e-13`` of the largest coefficient), else None."""
    scale = float(coef.abs().max())
    for parity in (1.0, -1.0):
        if float((coef - parity * coef.flip(-1)).abs().max()) <= 1e-13 * scale:
            return parity
    return None


def _fold(k: int, parity: float, like: torch.Tensor) -> torch.Tensor:
    """Folding matrix ``[c + 1, k]`` (``c = k // 2``) of a tap axis about its centre: row 0
    picks the centre tap, row ``m`` adds tap ``c + m`` and ``parity`` times tap ``c - m``."""
    c = k // 2
    out = torch.zeros(c + 1, k, dtype=like.dtype, device=like.device)
    out[0, c] = 1.0
    for m in range(1, c + 1):
        out[m, c + m] = 1.0
        out[m, c - m] = parity
    return out


class _SepObjective:
    """Two-scale separable model ``v(sigma_y) (x) u(sigma_x)`` (filters as ``[n, k, k]``).

    When both 1-D factors are even or odd about the centre (:func:`_mirror_parity`; all
    factors of the master key types are), ``<z, v (x) u> = <F_y z F_x^T, v_h (x) u_h>``
    with the folding matrices ``F`` (:func:`_fold`) and the half factors ``u_h`` (taps
    ``c .. k - 1``): the filters are folded once (:meth:`reduce`, ``[n, c + 1, c + 1]``),
    and the norms and sums of the factors become weighted sums over the half taps. Every
    method accepts the filters folded or not.
    """

    dim = 2

    def __init__(self, ux: _Interp, vy: _Interp, k: int) -> None:
        self.ux, self.vy, self.k = ux, vy, k
        # each axis is folded when its factor is even or odd about the centre
        self.uh, self.sq_x, self.sum_x, fx = self._half(ux)
        self.vh, self.sq_y, self.sum_y, fy = self._half(vy)
        self.shape = (fy.shape[0], fx.shape[0])  # [n, *shape]: the filters as read
        self.fold: torch.Tensor | None = None
        if self.shape != (k, k):
            self.fold = torch.kron(fy, fx).T.contiguous()  # [k*k, hy * hx]

    def _half(self, w: _Interp) -> tuple[_Interp, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The factor as read (half taps ``c .. k - 1`` when folded), the weights of its
        squares and of its taps in sums, and the folding matrix (identity: not folded)."""
        k, dt, dev = self.k, w.coef.dtype, w.coef.device
        parity = _mirror_parity(w.coef)
        if k % 2 == 0 or k == 1 or parity is None:
            eye = torch.eye(k, dtype=dt, device=dev)
            return w, eye.sum(dim=1), eye.sum(dim=1), eye
        c = k // 2
        f = _fold(k, parity, w.coef)
        sq = torch.full((c + 1,), 2.0, dtype=dt, device=dev)
        sq[0] = 1.0
        half = _Interp(w.coef[..., c:].contiguous(), 1.0 / w.inv_step, w.sigma_max)
        return half, sq, f.sum(dim=1), f  # tap sums: 1, then 1 + parity

    def reduce(self, z: torch.Tensor) -> torch.Tensor:
        """Filters ``[n, k*k]`` or ``[n, k, k]`` as the objective reads them: ``[n, hy, hx]``
        (an axis folded when its factor allows: ``c + 1`` taps, else ``k``)."""
        n, k = z.shape[0], self.k
        if z.ndim == 3 and tuple(z.shape[1:]) == self.shape:
            return z  # as read already
        if self.fold is None:
            return z.reshape(n, k, k)
        return (z.reshape(n, k * k) @ self.fold).reshape(n, *self.shape)

    def _den(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``||g_c||^2`` of ``g = v (x) u`` for u ``[..., 1, B, h]``, v ``[..., A, 1, h]``."""
        uu, vv = torch.matmul(u * u, self.sq_x), torch.matmul(v * v, self.sq_y)
        su, sv = torch.matmul(u, self.sum_x), torch.matmul(v, self.sum_y)
        den = uu * vv - (su * sv) ** 2 / (self.k * self.k)
        return torch.where(den > _TINY * uu * vv, den, torch.full_like(den, math.inf))

    def product(self, z3: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
        """R^2 at all pairs of ``sx`` [n, B] (or [B]) and ``sy`` [n, A]: ``[n, A, B]``."""
        z3 = self.reduce(z3)
        u, v = self.uh(sx), self.vh(sy)  # [(n,) B, h], [(n,) A, h]
        num = torch.matmul(v, torch.matmul(z3, u.transpose(-1, -2)))  # [n, A, B]
        den = self._den(u.unsqueeze(-3), v.unsqueeze(-2))
        return num * num / den

    def grid(self, z3: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
        """R^2 on the grid ``sig x sig``: ``[n, G * G]`` (index ``iy * G + ix``)."""
        return self.product(z3, sig, sig).reshape(z3.shape[0], -1)

    def stencil(self, z3: torch.Tensor, th: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """R^2 on the 3x3 stencil ``th + h {-1, 0, 1}^2``: ``[n, 9]`` (index ``3 iy + ix``)."""
        o = h[:, None] * torch.tensor([-1.0, 0.0, 1.0], dtype=h.dtype, device=h.device)
        return self.product(z3, th[:, :1] + o, th[:, 1:] + o).reshape(z3.shape[0], 9)

    def point(self, z3: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
        """R^2 at ``th`` [n, 2] (sigma_x, sigma_y): ``[n]``."""
        return self.product(z3, th[:, :1], th[:, 1:]).reshape(-1)

    def newton(
        self, z3: torch.Tensor, th: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """R^2 ``f = N^2 / D`` at ``th`` [n, 2], its gradient [n, 2] and Hessian [n, 2, 2].

        ``N = <z, v (x) u>`` and ``D = ||g_c||^2 = (u.u)(v.v) - (sum u sum v)^2 / k^2`` with
        their exact derivatives from the cubic tables (x: sigma_x, y: sigma_y).
        """
        z3 = self.reduce(z3)
        u = torch.stack(self.uh.derivs(th[:, 0]), dim=2)  # [n, h, 3]: u, u', u''
        v = torch.stack(self.vh.derivs(th[:, 1]), dim=1)  # [n, 3, h]
        nm = torch.matmul(v, torch.matmul(z3, u))  # [n, 3, 3]: d^a/dy^a d^b/dx^b N
        n0, nx, ny = nm[:, 0, 0], nm[:, 0, 1], nm[:, 1, 0]
        nxx, nyy, nxy = nm[:, 0, 2], nm[:, 2, 0], nm[:, 1, 1]
        uu, ux_, uxx = _norm_terms(u.transpose(1, 2), self.sq_x)
        vv, vy_, vyy = _norm_terms(v, self.sq_y)
        su, sux, suxx = torch.matmul(self.sum_x, u).unbind(1)
        sv, svy, svyy = torch.matmul(v, self.sum_y).unbind(1)
        kk = float(self.k * self.k)
        d = uu * vv - (su * sv) ** 2 / kk
        dx = ux_ * vv - 2.0 * su * sux * sv * sv / kk
        dy = uu * vy_ - 2.0 * sv * svy * su * su / kk
        dxx = uxx * vv - 2.0 * sv * sv * (sux * sux + su * suxx) / kk
        dyy = uu * vyy - 2.0 * su * su * (svy * svy + sv * svyy) / kk
        dxy = ux_ * vy_ - 4.0 * su * sux * sv * svy / kk
        ok = d > _TINY * uu * vv
        d = torch.where(ok, d, torch.ones_like(d))
        f = torch.where(ok, n0 * n0 / d, torch.zeros_like(d))
        # f = N^2 / D: product and quotient rules
        gx = 2.0 * n0 * nx / d - f * dx / d
        gy = 2.0 * n0 * ny / d - f * dy / d
        hxx = (2.0 * (nx * nx + n0 * nxx) - 2.0 * gx * dx - f * dxx) / d
        hyy = (2.0 * (ny * ny + n0 * nyy) - 2.0 * gy * dy - f * dyy) / d
        hxy = (2.0 * (nx * ny + n0 * nxy) - gx * dy - gy * dx - f * dxy) / d
        grad = torch.stack([gx, gy], dim=1)
        hess = torch.stack([torch.stack([hxx, hxy], 1), torch.stack([hxy, hyy], 1)], 1)
        return f, grad, hess


def _norm_terms(
    w: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sum weight w^2`` and its first two derivatives from ``w, w', w''`` stacked as
    ``[n, 3, k]`` (``weight`` ``[k]``: 1, or 1 and 2 for the taps of a folded factor)."""
    w0, w1, w2 = w.unbind(1)
    return (
        torch.matmul(w0 * w0, weight),
        2.0 * torch.matmul(w0 * w1, weight),
        2.0 * (torch.matmul(w1 * w1, weight) + torch.matmul(w0 * w2, weight)),
    )


def _square_orbits(table: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Orbits of the ``k x k`` taps under the symmetries of the square, when ``table``
    ``[J, 4, k*k]`` (cubic coefficients of a flattened model) is invariant under them.

    Returns the one-hot orbit matrix ``[k*k, R]`` (column ``r`` sums the taps of orbit
    ``r``; the centre is the orbit of one tap) and the index of each orbit's first tap
    ``[R]``; None when a tap differs from its orbit's first by more than ``1e-13`` of the
    largest coefficient (then the taps are not pooled). A model invariant under the
    symmetries correlates with ``z`` as its orbit values with the orbit sums of ``z``.
    """
    c = k // 2
    keys: dict[tuple[int, int], int] = {}
    orbit = []
    for r in range(k):
        for q in range(k):
            a, b = abs(r - c), abs(q - c)
            orbit.append(keys.setdefault((max(a, b), min(a, b)), len(keys)))
    if len(keys) == k * k:
        return None
    member = torch.tensor(orbit, device=table.device)
    first = torch.tensor([orbit.index(i) for i in range(len(keys))], device=table.device)
    scale = float(table.abs().amax())
    for j, r in enumerate(orbit):  # tap by tap: no temporary of the table's size
        i = int(first[r])
        if j != i and float((table[..., j] - table[..., i]).abs().amax()) > 1e-13 * scale:
            return None
    onehot = torch.zeros(k * k, len(keys), dtype=table.dtype, device=table.device)
    onehot[torch.arange(k * k, device=table.device), member] = 1.0
    return onehot, first


Jet = tuple  # (value, first, second derivative) of a quantity in sigma: [n] tensors


def _jmul(a: Jet, b: Jet) -> Jet:
    """Product of two second-order jets."""
    return (a[0] * b[0], a[1] * b[0] + a[0] * b[1], a[2] * b[0] + 2.0 * a[1] * b[1] + a[0] * b[2])


def _jdiv(a: Jet, b: Jet) -> Jet:
    """Quotient of two second-order jets (``b[0]`` nonzero)."""
    q0 = a[0] / b[0]
    q1 = (a[1] - q0 * b[1]) / b[0]
    return q0, q1, (a[2] - 2.0 * q1 * b[1] - q0 * b[2]) / b[0]


def _jscale(a: Jet, c: float) -> Jet:
    """A jet times a constant."""
    return a[0] * c, a[1] * c, a[2] * c


def _jsub(a: Jet, b: Jet) -> Jet:
    """Difference of two jets."""
    return a[0] - b[0], a[1] - b[1], a[2] - b[2]


def _jadd(a: Jet, b: Jet) -> Jet:
    """Sum of two jets."""
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


class _LapObjective:
    """One-scale models (filters as ``[n, P]``): ``"lap"`` and model 7 (closed-form alpha).

    When the model is invariant under the symmetries of the square (:func:`_square_orbits`),
    the filters are first pooled into their orbit sums (:meth:`reduce`: 10 numbers for
    7x7 instead of 49) and the tables hold one tap per orbit; every method accepts the
    filters either way.
    """

    dim = 1

    def __init__(
        self, lap: _Interp, norms: _Interp, k: int, kind: str, alpha_range: tuple[float, float]
    ) -> None:
        self.lap, self.norms, self.k, self.kind = lap, norms, k, kind
        self.alpha_range = alpha_range
        self.centre = (k * k) // 2
        self.kk = 1.0 - 1.0 / (k * k)  # ||K_c||^2 of the Kronecker delta K
        self.onehot = None
        self.mult = torch.ones(k * k, dtype=lap.coef.dtype, device=lap.coef.device)
        orbits = _square_orbits(lap.coef, k)
        if orbits is not None:
            self.onehot, first = orbits
            self.lap = _Interp(
                lap.coef.index_select(2, first).contiguous(), 1.0 / lap.inv_step, lap.sigma_max
            )
            self.mult = self.onehot.sum(dim=0)  # taps per orbit
            self.centre = int(self.onehot[self.centre].argmax())

    def reduce(self, zf: torch.Tensor) -> torch.Tensor:
        """Filters ``[n, k*k]`` as the objective reads them (orbit sums): ``[n, R]``;
        already reduced filters are returned as they are."""
        if self.onehot is None or zf.shape[-1] != self.k * self.k:
            return zf
        return zf @ self.onehot

    def values(self, zf: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """R^2 at scales ``s`` ([G] shared, or [n, S] per filter): ``[n, G]`` / ``[n, S]``."""
        zf = self.reduce(zf)
        lhat, nrm = self.lap(s), self.norms(s)[..., 0]  # unit-norm L, and its raw norm
        if s.ndim == 1:
            zl = zf @ lhat.T
        else:
            zl = torch.matmul(lhat, zf[:, :, None])[..., 0]
        p = self.k * self.k
        lm = torch.matmul(lhat, self.mult) / p
        ll = (torch.matmul(lhat * lhat, self.mult) - p * lm * lm).clamp(min=_TINY)  # ||L_c||^2
        if self.kind == "iso":
            return zl * zl / ll
        # model 7: y ~ a (K - alpha L) + b = a K - a alpha_hat L_hat + b, alpha_hat = alpha ||L||
        zk = zf[:, self.centre : self.centre + 1]  # <z, K_c> (z is centred)
        kl = lhat[..., self.centre] - lm  # <K_c, L_c>
        kk = self.kk
        det = kk * ll - kl * kl
        okd = det > 1e-12 * kk * ll
        sdet = torch.where(okd, det, torch.ones_like(det))
        ca = (ll * zk - kl * zl) / sdet  # coefficient of K_c
        cl = (kk * zl - kl * zk) / sdet  # coefficient of L_c
        ahat = -cl / torch.where(ca != 0, ca, torch.ones_like(ca))
        lo, hi = self.alpha_range[0] * nrm, self.alpha_range[1] * nrm
        inside = okd & (ca != 0) & (ahat >= lo) & (ahat <= hi)

        def bound(ah: torch.Tensor) -> torch.Tensor:
            num = zk - ah * zl
            return num * num / (kk - 2.0 * ah * kl + ah * ah * ll)

        return torch.where(inside, ca * zk + cl * zl, torch.maximum(bound(lo), bound(hi)))

    def grid(self, zf: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
        """R^2 on the grid ``sig``: ``[n, G]``.

        Model 7 as in :meth:`values`, with everything that depends on the scale alone
        computed once per column: with ``A = ll zk - kl zl`` and ``B = kk zl - kl zk``
        (``det`` times the coefficients of K_c and L_c), the free optimum
        ``alpha_hat = -B / A`` lies in ``[lo, hi]`` exactly when ``(lo A + B)(hi A + B) <=
        0``, and its R^2 is ``(ll zk^2 - 2 kl zk zl + kk zl^2) / det``.
        """
        if self.kind == "iso":
            return self.values(zf, sig)
        zf = self.reduce(zf)
        lhat, nrm = self.lap(sig), self.norms(sig)[..., 0]  # [G, R], [G]
        zl = zf @ lhat.T  # [n, G]
        zk = zf[:, self.centre : self.centre + 1]  # [n, 1]
        p = self.k * self.k
        lm = torch.matmul(lhat, self.mult) / p
        ll = (torch.matmul(lhat * lhat, self.mult) - p * lm * lm).clamp(min=_TINY)
        kl = lhat[:, self.centre] - lm
        kk = self.kk
        det = kk * ll - kl * kl
        okd = det > 1e-12 * kk * ll
        sdet = torch.where(okd, det, torch.ones_like(det))
        lo, hi = self.alpha_range[0] * nrm, self.alpha_range[1] * nrm
        e_lo = torch.addcmul(zl * (kk - lo * kl), zk, lo * ll - kl)  # lo A + B
        e_hi = torch.addcmul(zl * (kk - hi * kl), zk, hi * ll - kl)  # hi A + B
        # (A = 0 gives a product B^2 >= 0: inside only when A = B = 0, i.e. zk = zl = 0,
        # where both branches give 0)
        inside = (e_lo.mul_(e_hi) <= 0) & okd
        del e_hi, e_lo

        def bound(ah: torch.Tensor) -> torch.Tensor:
            num = torch.addcmul(zk, zl, -ah)
            return num.square_().mul_(1.0 / (kk - 2.0 * ah * kl + ah * ah * ll))

        free = torch.addcmul(zk * (-2.0 * kl / sdet), zl, kk / sdet)
        free = torch.addcmul((zk * zk) * (ll / sdet), zl, free)
        return torch.where(inside, free, torch.maximum(bound(lo), bound(hi)))

    def newton(
        self, zf: torch.Tensor, th: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """R^2 at ``th`` [n, 1] (``zf`` as read, :meth:`reduce`) with its exact first and
        second derivatives in sigma from the cubic tables: ``[n]`` each.

        The same expressions as :meth:`values`, carried as second-order jets
        ``(value, d/dsigma, d^2/dsigma^2)``; for model 7 the branch (free alpha, or alpha on
        the bound that explains more) is the one :meth:`values` takes at ``th``.
        """
        lhat = self.lap.derivs(th[:, 0])  # 3 x [n, R]: L, L', L''
        p = float(self.k * self.k)
        zl = tuple((zf * w).sum(dim=1) for w in lhat)  # linear in L
        lm = tuple(torch.matmul(w, self.mult) / p for w in lhat)
        l0, l1, l2 = lhat
        s2 = (
            torch.matmul(l0 * l0, self.mult),
            2.0 * torch.matmul(l0 * l1, self.mult),
            2.0 * (torch.matmul(l1 * l1, self.mult) + torch.matmul(l0 * l2, self.mult)),
        )
        ll = _jsub(s2, _jscale(_jmul(lm, lm), p))
        if self.kind == "iso":
            return _jdiv(_jmul(zl, zl), ll)
        zk = zf[:, self.centre]
        kl = tuple(w[:, self.centre] - m for w, m in zip(lhat, lm, strict=True))
        kk = self.kk
        det = _jsub(_jscale(ll, kk), _jmul(kl, kl))
        # free alpha: (ll zk^2 - 2 kl zk zl + kk zl^2) / det
        klzl, zlzl = _jmul(kl, zl), _jmul(zl, zl)
        num = tuple(
            zk * zk * a - 2.0 * zk * b + kk * c for a, b, c in zip(ll, klzl, zlzl, strict=True)
        )
        free = _jdiv(num, det)
        nrm = tuple(w[:, 0] for w in self.norms.derivs(th[:, 0]))
        zero = torch.zeros_like(zk)

        def bound(a: float) -> Jet:  # alpha = a: (zk - ah zl)^2 / (kk - 2 ah kl + ah^2 ll)
            ah = _jscale(nrm, a)
            top = _jsub((zk, zero, zero), _jmul(ah, zl))
            den = _jsub((zero + kk, zero, zero), _jscale(_jmul(ah, kl), 2.0))
            den = _jadd(den, _jmul(_jmul(ah, ah), ll))
            return _jdiv(_jmul(top, top), den)

        lo, hi = bound(self.alpha_range[0]), bound(self.alpha_range[1])
        # the branch of values(): the free optimum where alpha_hat lies in the range
        okd = det[0] > 1e-12 * kk * ll[0]
        sdet = torch.where(okd, det[0], torch.ones_like(det[0]))
        ca = (ll[0] * zk - kl[0] * zl[0]) / sdet
        ahat = -(kk * zl[0] - kl[0] * zk) / sdet / torch.where(ca != 0, ca, torch.ones_like(ca))
        inside = okd & (ca != 0)
        inside &= (ahat >= self.alpha_range[0] * nrm[0]) & (ahat <= self.alpha_range[1] * nrm[0])
        on_lo = lo[0] >= hi[0]
        out = [
            torch.where(inside, a, torch.where(on_lo, b, c))
            for a, b, c in zip(free, lo, hi, strict=True)
        ]
        return out[0], out[1], out[2]

    def stencil(self, zf: torch.Tensor, th: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """R^2 at ``th + h {-1, 0, 1}``: ``[n, 3]``."""
        o = torch.tensor([-1.0, 0.0, 1.0], dtype=h.dtype, device=h.device)
        return self.values(zf, th + h[:, None] * o)

    def point(self, zf: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
        """R^2 at ``th`` [n, 1]: ``[n]``."""
        return self.values(zf, th)[:, 0]


class _AsTwoScales:
    """A one-scale objective seen as a two-scale one whose second scale does nothing
    (gradient 0, curvature -1), so that :func:`_refine_sep` refines it: its Newton step
    and trust region then act on the first scale alone, and the second stays at 0."""

    dim = 2

    def __init__(self, obj: _LapObjective) -> None:
        self.obj = obj

    def newton(
        self, z: torch.Tensor, th: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``f`` [n], gradient [n, 2] and Hessian [n, 2, 2] at ``th`` [n, 2]."""
        f, g, h = self.obj.newton(z, th[:, :1])
        zero, one = torch.zeros_like(f), torch.ones_like(f)
        grad = torch.stack([g, zero], dim=1)
        hess = torch.stack([torch.stack([h, zero], 1), torch.stack([zero, -one], 1)], 1)
        return f, grad, hess


# --------------------------------------------------------------------------------------
# batched refinement


def _newton(fs: torch.Tensor, h: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Newton step of the quadratic through a 3^dim stencil, and whether it is a maximum."""
    if dim == 1:
        fm, f0, fp = fs[:, 0], fs[:, 1], fs[:, 2]
        grad = (fp - fm) / (2 * h)
        hess = (fp - 2 * f0 + fm) / (h * h)
        ok = hess < 0
        return (-grad / torch.where(ok, hess, -torch.ones_like(hess)))[:, None], ok
    F = fs.reshape(-1, 3, 3)  # [y, x]
    f0 = F[:, 1, 1]
    gx = (F[:, 1, 2] - F[:, 1, 0]) / (2 * h)
    gy = (F[:, 2, 1] - F[:, 0, 1]) / (2 * h)
    hxx = (F[:, 1, 2] - 2 * f0 + F[:, 1, 0]) / (h * h)
    hyy = (F[:, 2, 1] - 2 * f0 + F[:, 0, 1]) / (h * h)
    hxy = (F[:, 2, 2] - F[:, 2, 0] - F[:, 0, 2] + F[:, 0, 0]) / (4 * h * h)
    det = hxx * hyy - hxy * hxy
    ok = (hxx < 0) & (det > 0)
    sdet = torch.where(ok, det, torch.ones_like(det))
    return torch.stack([-(hyy * gx - hxy * gy) / sdet, -(hxx * gy - hxy * gx) / sdet], 1), ok


def _refine(obj: Any, z: torch.Tensor, theta: torch.Tensor, h0: float, sigma_max: float):
    """Maximise the objective from ``theta`` [n, d] for all filters at once; returns theta.

    Each step evaluates a 3^d stencil of half-width h around theta, takes the Newton point
    of the quadratic through it (clipped to 2 h per coordinate), evaluates it and moves to
    the best of these points. When the quadratic model is trusted (the Newton point or the
    centre wins), h shrinks towards the distance just moved (at most by 4, at least to
    :data:`_H_MIN`); a filter is done after a trusted step at ``_H_MIN`` that moved less
    than :data:`_X_TOL`, or when it correlates with no model of the type (R^2 < 1e-20).
    Only unfinished filters are evaluated. The objective is even in each sigma, so the
    stencil may cross 0 (``|theta|`` is returned).
    """
    n, d = theta.shape
    centre = 3**d // 2
    offs = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64, device=theta.device)
    grid_x = offs.repeat(3) if d == 2 else offs
    grid_y = offs.repeat_interleave(3) if d == 2 else None
    theta = theta.clone()
    h = torch.full((n,), h0, dtype=torch.float64, device=theta.device)
    idx = torch.arange(n, device=theta.device)
    zs, th, hs = z, theta, h
    for _ in range(_MAX_ITER):
        fs = obj.stencil(zs, th, hs)  # [m, 3^d]
        step, ok = _newton(fs, hs, d)
        lim = 2.0 * hs[:, None]
        clipped = (step.abs() > lim).any(dim=1) | ~ok
        prop = (th + step.clamp(-lim, lim)).clamp(-sigma_max, sigma_max)
        fp = torch.where(ok, obj.point(zs, prop), -math.inf)
        f0 = fs[:, centre]
        best_f, best_s = fs.max(dim=1)
        stay = best_f <= f0  # ties (e.g. beyond sigma_max) keep the centre
        best_s = torch.where(stay, centre, best_s)
        best_f = torch.where(stay, f0, best_f)
        take_p = fp > best_f
        moved = hs[:, None] * torch.stack(
            [grid_x[best_s]] + ([grid_y[best_s]] if d == 2 else []), dim=1
        )
        new = torch.where(take_p[:, None], prop, (th + moved).clamp(-sigma_max, sigma_max))
        trusted = (take_p & ~clipped) | (~take_p & (best_s == centre))
        dist = (new - th).abs().amax(dim=1)
        shrunk = torch.minimum(hs / 4.0, torch.maximum(2.0 * dist, hs * hs)).clamp(min=_H_MIN)
        h_new = torch.where(trusted, shrunk, hs)
        fin = (trusted & (hs <= _H_MIN * 1.000001) & (dist <= _X_TOL)) | (
            torch.maximum(best_f, fp) < 1e-20
        )
        keep = ~fin
        if len(idx) < n or not bool(keep.all()):
            theta[idx] = new
            h[idx] = h_new
            idx = idx[keep]
            if idx.numel() == 0:
                break
            zs, th, hs = z.index_select(0, idx), theta.index_select(0, idx), h.index_select(0, idx)
        else:
            th, hs = new, h_new
    if len(idx) == n:
        theta = th
    return theta.abs()


def _refine_sep(obj: _SepObjective, z3: torch.Tensor, theta: torch.Tensor, r0: float, smax: float):
    """Maximise a two-scale objective from ``theta`` [n, 2] by trust-region Newton steps.

    Every step evaluates ``f``, its gradient and Hessian at the proposal with exact
    derivatives of the cubic tables (:meth:`_SepObjective.newton`). A proposal that does
    not lower ``f`` is accepted; otherwise the trust radius (first ``r0``, half the coarse
    grid step, per coordinate) shrinks by 4. From the accepted point the next proposal is
    the Newton point (where the Hessian is negative definite) or an ascent step (along the
    gradient, or either way along a scale of positive curvature), scaled down to the radius
    (which doubles when such a step is accepted) and clipped to ``[0, smax]``; a scale on a
    bound whose gradient points out of the range is held there. A filter is done when a
    full Newton step (negative definite Hessian, within the radius) is below
    :data:`_NEWTON_TAKE` (converged: that last step is taken without evaluating it, as it
    lands within about its length squared of the maximum), any proposed move is below
    :data:`_NEWTON_TOL` where the Hessian is negative definite (converged), the radius is
    below it, or R^2 < 1e-20; after :data:`_NEWTON_ITER` steps at
    most. Only unfinished filters are evaluated. Returns the scales and whether each filter
    converged; the others (saddles, sigma = 0 of an even objective, flat ridges, the few
    that need more steps) are left to the stencil search :func:`_refine`, from the best
    point the Newton steps reached (never below the grid start).
    """
    n = theta.shape[0]
    out = theta.clone()
    converged = torch.zeros(n, dtype=torch.bool, device=theta.device)
    idx = torch.arange(n, device=theta.device)
    zs, cur = z3, theta
    f, g, hm = obj.newton(zs, cur)
    r = torch.full((n,), r0, dtype=torch.float64, device=theta.device)
    for _ in range(_NEWTON_ITER):
        # a scale on a bound with the gradient pointing out stays there (projected Newton)
        concave = torch.stack([hm[:, 0, 0], hm[:, 1, 1]], dim=1) <= 0
        free = ~((((cur >= smax) & (g > 0)) | ((cur <= 0.0) & (g < 0))) & concave)
        g = torch.where(free, g, torch.zeros_like(g))
        both = free[:, 0] & free[:, 1]
        hxx = torch.where(free[:, 0], hm[:, 0, 0], -torch.ones_like(f))
        hyy = torch.where(free[:, 1], hm[:, 1, 1], -torch.ones_like(f))
        hxy = torch.where(both, hm[:, 0, 1], torch.zeros_like(f))
        det = hxx * hyy - hxy * hxy
        nd = (hxx < 0) & (det > 0)
        sdet = torch.where(nd, det, torch.ones_like(det))
        newton = torch.stack(
            [-(hyy * g[:, 0] - hxy * g[:, 1]) / sdet, -(hxx * g[:, 1] - hxy * g[:, 0]) / sdet], 1
        )
        gmax = g.abs().amax(dim=1, keepdim=True)
        ascent = g / torch.where(gmax > 0, gmax, torch.ones_like(gmax)) * r[:, None]
        # along a scale of positive curvature (e.g. sigma = 0 of an even objective, a saddle
        # with zero gradient) either direction ascends: go by the radius
        side = torch.where(cur < 0.5 * smax, 1.0, -1.0)
        inner = (cur > 0.0) & (cur < smax) & (g != 0)
        push = torch.where(inner, torch.sign(g), side) * r[:, None]
        curv = torch.stack([hxx, hyy], dim=1) > 0
        ascent = torch.where(curv & free, push, ascent)
        step = torch.where(nd[:, None], newton, ascent)
        size = step.abs().amax(dim=1)
        limited = size > r
        step = step * torch.where(limited, r / torch.where(limited, size, r), 1.0)[:, None]
        prop = (cur + step).clamp(0.0, smax)
        move = (prop - cur).abs().amax(dim=1)
        # a full Newton step this short (negative definite Hessian, within the radius) lands
        # within ~move^2 of the maximum (quadratic convergence): taken without evaluating it
        take = (move <= _NEWTON_TAKE) & nd & ~limited
        conv = take | (move <= _NEWTON_TOL) & nd
        done = conv | (r <= _NEWTON_TOL) | (f < 1e-20)
        if bool(done.any()):
            out[idx] = torch.where(take[:, None], prop, cur)
            converged[idx] = conv
            keep = ~done
            idx, zs, prop, cur = idx[keep], zs[keep], prop[keep], cur[keep]
            f, g, hm, r, limited = f[keep], g[keep], hm[keep], r[keep], limited[keep]
            if idx.numel() == 0:
                break
        fp, gp, hp = obj.newton(zs, prop)
        acc = fp >= f
        cur = torch.where(acc[:, None], prop, cur)
        f = torch.where(acc, fp, f)
        g = torch.where(acc[:, None], gp, g)
        hm = torch.where(acc[:, None, None], hp, hm)
        r = torch.where(acc, torch.where(limited, 2.0 * r, r), r / 4.0)
    else:
        out[idx] = cur
    return out, converged


# --------------------------------------------------------------------------------------
# result


#: per-type columns of :meth:`CensusResult.to_columns` (suffixed ``_<type label>``)
_PER_TYPE: tuple[str, ...] = ("r2", "sigma_x", "sigma_y", "alpha", "a", "b", "rss")
#: the per-filter columns of :meth:`CensusResult.to_columns`, in order
_BEST_COLUMNS: tuple[str, ...] = (
    "index",
    "type",
    "best",
    "sigma_x",
    "sigma_y",
    "alpha",
    "a",
    "b",
    "r2",
    "rss",
    "tss",
    "reason",
)


@dataclass
class CensusResult:
    """Result of :func:`census` (numpy arrays; N filters, T types).

    Attributes
    ----------
    types : tuple
        The fitted types, in the order of the ``*_all`` columns (ints 1..8 for the master
        key types, model names for other models).
    best : numpy.ndarray of int, shape [N]
        Column of the best type (largest R^2; the first type on ties); -1 for a filter
        that was not fitted.
    type : numpy.ndarray, shape [N]
        Label of the best type (int64 when all types are ints and every filter was fitted,
        else object, None for a filter that was not fitted).
    sigma_x, sigma_y, alpha, a, b, r2, rss : numpy.ndarray of float64, shape [N]
        Fit of the best type: scales (standard deviations, >= 0; ``sigma_y = sigma_x`` for
        one-scale models), the Laplacian weight of type 7 (NaN for other types), gain,
        offset, ``R^2 = 1 - RSS / TSS`` in [0, 1] and the residual sum of squares. NaN for
        a filter that was not fitted.
    tss : numpy.ndarray, shape [N]
        ``sum (y - mean y)^2`` of each filter (NaN for a non-finite one).
    sigma_x_all, sigma_y_all, alpha_all, a_all, b_all, r2_all, rss_all : numpy.ndarray [N, T]
        The same fit for every type.
    alpha_range, sigma_max : the bounds used.
    reason : numpy.ndarray of object, shape [N], optional
        Why a filter was not fitted (``"zero"``, ``"constant"``, ``"non-finite"``; see
        :func:`screen_filters`), None for a fitted filter. None: every filter was fitted.
    """

    types: tuple[int | str, ...]
    best: np.ndarray
    sigma_x_all: np.ndarray
    sigma_y_all: np.ndarray
    alpha_all: np.ndarray
    a_all: np.ndarray
    b_all: np.ndarray
    r2_all: np.ndarray
    rss_all: np.ndarray
    tss: np.ndarray
    alpha_range: tuple[float, float] = ALPHA_RANGE
    sigma_max: float = 3.5
    reason: np.ndarray | None = None
    _rows: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rows = np.arange(len(self.best))
        if self.reason is None:
            self.reason = np.full(len(self.best), None, dtype=object)

    @property
    def valid(self) -> np.ndarray:
        """[N] bool: the filter was fitted (its ``reason`` is None)."""
        return np.equal(self.reason, None)

    def invalid_counts(self) -> dict[str, int]:
        """Filters not fitted, per reason: ``{"zero": n, "constant": n, "non_finite": n}``."""
        return {r.replace("-", "_"): int(np.sum(self.reason == r)) for r in INVALID_REASONS}

    def _pick(self, arr: np.ndarray) -> np.ndarray:
        return arr[self._rows, self.best]

    def __len__(self) -> int:
        return len(self.best)

    @property
    def type(self) -> np.ndarray:
        """Label of the best type per filter, shape [N]."""
        labels = np.array(list(self.types) + [None], dtype=object)
        out = labels[self.best]  # best = -1 picks the None of a filter not fitted
        if all(isinstance(t, int) for t in self.types) and self.valid.all():
            out = out.astype(np.int64)
        return out

    sigma_x = property(lambda self: self._pick(self.sigma_x_all), doc="[N] best sigma_x")
    sigma_y = property(lambda self: self._pick(self.sigma_y_all), doc="[N] best sigma_y")
    alpha = property(lambda self: self._pick(self.alpha_all), doc="[N] best alpha (NaN: none)")
    a = property(lambda self: self._pick(self.a_all), doc="[N] gain of the best fit")
    b = property(lambda self: self._pick(self.b_all), doc="[N] offset of the best fit")
    r2 = property(lambda self: self._pick(self.r2_all), doc="[N] R^2 of the best fit")
    rss = property(lambda self: self._pick(self.rss_all), doc="[N] RSS of the best fit")

    def records(self) -> list[dict[str, Any]]:
        """One dict per filter: index (0-based), type, sigma_x, sigma_y, alpha, a, b, r2, reason.

        ``alpha`` is None for types other than 7; all numbers are Python floats. A filter
        that was not fitted has ``type``, the scales, ``a``, ``b`` and ``r2`` None and its
        ``reason`` (``"zero"``, ``"constant"``, ``"non-finite"``); fitted filters have
        ``reason`` None.
        """
        labels = self.type.tolist()
        reasons = self.reason.tolist()
        out = []
        cols = (self.sigma_x, self.sigma_y, self.alpha, self.a, self.b, self.r2)
        for i, (sx, sy, al, a, b, r2) in enumerate(zip(*(c.tolist() for c in cols), strict=True)):
            if reasons[i] is not None:
                out.append(
                    {"index": i, "type": None}
                    | dict.fromkeys(("sigma_x", "sigma_y", "alpha", "a", "b", "r2"))
                    | {"reason": reasons[i]}
                )
                continue
            out.append(
                {
                    "index": i,
                    "type": labels[i],
                    "sigma_x": sx,
                    "sigma_y": sy,
                    "alpha": None if math.isnan(al) else al,
                    "a": a,
                    "b": b,
                    "r2": r2,
                    "reason": None,
                }
            )
        return out

    def scale_statistics(self) -> dict[str, Any]:
        """Median and 5-95 % range of the fitted scales, overall and per best type.

        Returns
        -------
        dict
            See :func:`scale_statistics`.
        """
        return scale_statistics(self.type, self.sigma_x, self.sigma_y, self.alpha, self.types)

    def counts(self) -> dict[int | str, int]:
        """Number of filters whose best type is each type (in the order of ``types``)."""
        c = np.bincount(self.best[self.valid], minlength=len(self.types))
        return {t: int(n) for t, n in zip(self.types, c, strict=True)}

    # ----------------------------------------------------------------------------------
    # display and columns (one screen; a table per type; flat columns for files/pandas)

    def __repr__(self) -> str:
        n, t = len(self), len(self.types)
        fitted = int(self.valid.sum())
        head = (
            f"CensusResult({n} filters, {t} types {list(self.types)}, {fitted} fitted, "
            f"sigma_max={self.sigma_max:g})"
        )
        if n == 0:
            return head
        return head + "\n" + self.format_table()

    def format_table(self) -> str:
        """One line per type: count and share of filters it explains best, median R^2 and
        median scales of those filters, and the share with R^2 > 0.8; a line for all fitted
        filters, and one naming the filters not fitted.

        Returns
        -------
        str
            A plain-text table (fixed-width columns, no trailing newline).
        """
        n = max(int(self.valid.sum()), 1)
        r2, sx, sy = self.r2, self.sigma_x, self.sigma_y
        lines = [
            f"{'type':>6}  {'count':>9}  {'share':>6}  {'median R^2':>10}  {'R^2>0.8':>7}  "
            f"{'median sigma_x':>14}  {'median sigma_y':>14}"
        ]

        def med(v: np.ndarray) -> str:
            return f"{float(np.median(v)):.4f}" if v.size else "-"

        def row(label: str, m: np.ndarray) -> str:
            c = int(m.sum())
            good = f"{100.0 * float(np.mean(r2[m] > 0.8)):6.1f}%" if c else "      -"
            return (
                f"{label:>6}  {c:>9}  {100.0 * c / n:5.1f}%  {med(r2[m]):>10}  {good:>7}  "
                f"{med(sx[m]):>14}  {med(sy[m]):>14}"
            )

        for j, tp in enumerate(self.types):
            lines.append(row(str(tp), self.best == j))
        lines.append(row("all", self.valid))
        bad = {k: v for k, v in self.invalid_counts().items() if v}
        if bad:
            lines.append(
                "not fitted: " + ", ".join(f"{v} {k.replace('_', '-')}" for k, v in bad.items())
            )
        return "\n".join(lines)

    def to_columns(self, index: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The result as flat columns of equal length N (what ``to_pandas`` and the census
        files of :mod:`scalespace_mk.analysis.stream` hold).

        Parameters
        ----------
        index : numpy.ndarray of int, shape [N], optional
            Row of each filter in its input (default ``0 .. N-1``).

        Returns
        -------
        dict of str to numpy.ndarray
            In this order: ``index`` (int64), ``type`` (str: the best type's label, ``""``
            for a filter not fitted), ``best`` (int64 column of the best type in ``types``,
            -1 when not fitted), ``sigma_x``, ``sigma_y`` (standard deviations of the best
            fit), ``alpha`` (type 7, else NaN), ``a``, ``b``, ``r2``, ``rss``, ``tss``
            (float64), ``reason`` (str: ``""`` when fitted, else ``"zero"``, ``"constant"``
            or ``"non-finite"``), then per type ``t`` (its label) ``r2_t``, ``sigma_x_t``,
            ``sigma_y_t``, ``alpha_t``, ``a_t``, ``b_t``, ``rss_t`` (float64).
        """
        n = len(self)
        idx = np.arange(n, dtype=np.int64) if index is None else np.asarray(index, np.int64)
        labels = np.array([str(t) for t in self.types] + [""])
        cols: dict[str, np.ndarray] = {
            "index": idx,
            "type": labels[self.best],
            "best": self.best.astype(np.int64),
            "sigma_x": self.sigma_x,
            "sigma_y": self.sigma_y,
            "alpha": self.alpha,
            "a": self.a,
            "b": self.b,
            "r2": self.r2,
            "rss": self.rss,
            "tss": self.tss,
            "reason": np.array(
                ["" if r is None else r for r in self.reason.tolist()], dtype="<U10"
            ),
        }
        for j, tp in enumerate(self.types):
            for key in _PER_TYPE:
                cols[f"{key}_{tp}"] = getattr(self, f"{key}_all")[:, j]
        return {k: np.ascontiguousarray(v) for k, v in cols.items()}

    @classmethod
    def from_columns(
        cls,
        columns: dict[str, Any],
        types: Sequence[int | str],
        *,
        sigma_max: float,
        alpha_range: tuple[float, float] = ALPHA_RANGE,
    ) -> CensusResult:
        """Rebuild a result from :meth:`to_columns` (e.g. read back from a census file).

        Parameters
        ----------
        columns : dict of str to array_like
            At least ``best``, ``tss``, ``reason`` and the per-type columns of ``types``.
        types : sequence of int or str
            The census's types (labels), in column order.
        sigma_max, alpha_range
            The bounds the census used.

        Returns
        -------
        CensusResult
        """
        types = tuple(types)
        all_ = {
            key: np.stack(
                [np.asarray(columns[f"{key}_{t}"], dtype=np.float64) for t in types], axis=1
            ).reshape(-1, len(types))
            for key in _PER_TYPE
        }
        reason = np.array(
            [
                None if (r == "" or r is None) else str(r)
                for r in np.asarray(columns["reason"]).tolist()
            ],
            dtype=object,
        )
        return cls(
            types=types,
            best=np.asarray(columns["best"], dtype=np.int64),
            sigma_x_all=all_["sigma_x"],
            sigma_y_all=all_["sigma_y"],
            alpha_all=all_["alpha"],
            a_all=all_["a"],
            b_all=all_["b"],
            r2_all=all_["r2"],
            rss_all=all_["rss"],
            tss=np.asarray(columns["tss"], dtype=np.float64),
            alpha_range=tuple(alpha_range),
            sigma_max=float(sigma_max),
            reason=reason,
        )

    def to_pandas(self, *, per_type: bool = True) -> Any:
        """The result as a :class:`pandas.DataFrame`, one row per filter (pandas is imported
        here; it is not a dependency of the package).

        Parameters
        ----------
        per_type : bool
            Include the per-type columns ``r2_t``, ``sigma_x_t``, ... (default True).

        Returns
        -------
        pandas.DataFrame
            The columns of :meth:`to_columns`, except that ``type`` holds the label as in
            ``types`` (int for the master key types) or None, and ``reason`` None for a
            fitted filter.

        Raises
        ------
        ImportError
            If pandas is not installed (``pip install pandas``).
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "CensusResult.to_pandas needs pandas (pip install pandas); to_columns() gives "
                "the same columns as numpy arrays"
            ) from None
        cols: dict[str, Any] = self.to_columns()
        cols["type"] = self.type.astype(object) if len(self) else np.zeros(0, dtype=object)
        cols["reason"] = self.reason
        if not per_type:
            cols = {k: v for k, v in cols.items() if k in _BEST_COLUMNS}
        return pd.DataFrame(cols)


# --------------------------------------------------------------------------------------
# scale statistics


def _quantiles(values: np.ndarray) -> dict[str, float] | None:
    """``{"median", "p5", "p95"}`` of the finite values, None when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return None
    p5, med, p95 = np.percentile(v, (5, 50, 95)).tolist()
    return {"median": med, "p5": p5, "p95": p95}


def scale_statistics(
    type_labels: Any, sigma_x: Any, sigma_y: Any, alpha: Any, types: Sequence[int | str]
) -> dict[str, Any]:
    """Median and 5-95 % range of fitted scales, overall and per best type.

    Parameters
    ----------
    type_labels : array_like, shape [N]
        Best type per filter (None for filters not fitted, which are left out).
    sigma_x, sigma_y, alpha : array_like of float, shape [N]
        Fitted scales (standard deviations, pixels; ``s = sigma**2``) and the Laplacian
        weight of type 7 (NaN for other types).
    types : sequence of int or str
        The census's types (their kinds decide which have two scales).

    Returns
    -------
    dict
        ``{"n", "sigma_x", "sigma_y", "anisotropy", "by_type": {label: {...}}}``: each
        statistic is ``{"median", "p5", "p95"}`` (or None when empty). ``anisotropy`` is
        ``(sigma_x - sigma_y) / (sigma_x + sigma_y)`` in [-1, 1] (0 when both are 0;
        positive: wider along x), over the filters of two-scale types only (one-scale types
        have ``sigma_x = sigma_y`` by construction). Each type's entry holds ``n``,
        ``sigma_x``, ``sigma_y``, ``anisotropy`` (two-scale types) or ``alpha`` (type 7).
    """
    tps = parse_model_types(types)
    labels = np.asarray(type_labels, dtype=object)
    sx = np.asarray(sigma_x, dtype=np.float64)
    sy = np.asarray(sigma_y, dtype=np.float64)
    al = np.asarray(alpha, dtype=np.float64)
    two = np.zeros(len(labels), dtype=bool)
    for tp in tps:
        if tp.kind == "sep":
            two |= labels == tp.label
    total = sx + sy
    with np.errstate(invalid="ignore", divide="ignore"):
        aniso = np.where(total > 0, (sx - sy) / np.where(total > 0, total, 1.0), 0.0)
    fitted = np.not_equal(labels, None)
    out: dict[str, Any] = {
        "n": int(fitted.sum()),
        "sigma_x": _quantiles(sx[fitted]),
        "sigma_y": _quantiles(sy[fitted]),
        "anisotropy": _quantiles(aniso[two]),
        "by_type": {},
    }
    for tp in tps:
        m = labels == tp.label
        entry: dict[str, Any] = {
            "n": int(m.sum()),
            "sigma_x": _quantiles(sx[m]),
            "sigma_y": _quantiles(sy[m]),
        }
        if tp.kind == "sep":
            entry["anisotropy"] = _quantiles(aniso[m])
        if tp.kind == "mk7":
            entry["alpha"] = _quantiles(al[m])
        out["by_type"][str(tp.label)] = entry
    return out


# --------------------------------------------------------------------------------------
# the census


def _resolve_device(device: Any) -> torch.device:
    return check_device(device, torch.device("cpu"))


def _check_alpha_range(alpha_range: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in alpha_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"alpha_range must be a pair (low, high) of numbers; got {alpha_range!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"alpha_range must be finite with low <= high; got {alpha_range!r}")
    return lo, hi


def census(
    filters: Any,
    *,
    types: Sequence[int | str] | int | str = DEFAULT_TYPES,
    size: int | None = None,
    method: str = "discgauss",
    mode: str = "paper",
    epsilon: float = 1e-8,
    sigma_max: float | None = None,
    alpha_range: tuple[float, float] = ALPHA_RANGE,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    num_threads: int | None = None,
    on_invalid: str = "record",
    family: str = "masterkey",
    order: int = 2,
    allow_saturated: bool = False,
) -> CensusResult:
    """Best linear shift ``a g(theta) + b`` of every model type for every filter.

    Parameters
    ----------
    filters : array_like or torch.Tensor, shape [N, k, k] or [k, k]
        Learned filters in the stored-weight layout (rows top to bottom; ``x = c - m``,
        ``y = m - r``, y up), any odd k >= 3. NaN/infinite, all-zero and constant filters
        are not fitted (see ``on_invalid``).
    types : sequence of int or str
        Model types to fit: master key types 1..8 (docs/method.md#models; also
        ``"mk1"``..``"mk8"``) and
        any model name of :func:`scalespace_mk.scalespace.models.parse_model`, e.g. ``"dxx"``,
        ``"dxy"``, ``"dyy"`` (two scales) or ``"lap"`` (fitted here with one scale,
        ``sigma_y = sigma_x``). Default: 1..8.
    size : int, optional
        Model size; must equal k when given (the models are built at the filter's size).
    method : str
        1-D Gaussian discretisation (:data:`scalespace_mk.scalespace.kernels.METHODS`).
    mode : str
        ``"paper"`` or ``"full"`` (:func:`scalespace_mk.scalespace.models.model_kernel`).
    epsilon : float
        Truncation error of the 1-D kernels, in (0, 1).
    sigma_max : float, optional
        Largest scale searched (standard deviation); default ``k / 2`` (3.5 for 7x7), beyond
        which a cropped Gaussian is nearly flat. A fitted scale equal to ``sigma_max`` means
        the fit wants a flatter model.
    alpha_range : (float, float)
        Range of the Laplacian weight ``alpha`` of type 7 (default :data:`ALPHA_RANGE`,
        ``alpha >= 0`` keeps the centre-surround form ``K - alpha nabla5 T``).
    device : str or torch.device, optional
        ``"cpu"`` (default) or ``"cuda"``; all arithmetic is float64.
    batch_size : int, optional
        Filters processed at once (memory bound); default 8192 on CPU, 131072 on CUDA.
    progress : bool, optional
        Show a tqdm progress bar on stderr; default: only for >= 20,000 filters when
        stderr is a terminal.
    num_threads : int, optional
        CPU threads during this call: chunks of ``batch_size`` filters run on this many
        workers, each with one torch intra-op thread (``torch.set_num_threads``, restored
        afterwards; it is process-wide). On Linux a census of at least 32,768 filters
        forks its workers as processes (they inherit the filters and tables; Python
        threads would share one interpreter lock), otherwise they are threads; 1 runs
        everything in the calling thread. Default: torch's setting. The results do not
        depend on it.
    on_invalid : {"record", "raise"}
        What to do with a filter that has nothing to fit (:func:`screen_filters`: a NaN or
        infinite tap, all taps zero, or all taps equal): ``"record"`` (default) fits the
        others and gives it ``type`` None, NaN fit values and its ``reason`` (``"zero"``,
        ``"constant"``, ``"non-finite"``); ``"raise"`` raises a ValueError naming the first
        such filter. The default records because trained networks routinely hold dead or
        pruned channels, and one of them should not stop the census of thousands.
    family : str
        ``"masterkey"`` (default: the types above), or a model family fitted as a whole by
        :func:`scalespace_mk.analysis.jets.family_census`: ``"njet"`` (all discrete
        derivatives up to ``order`` at one scale) or ``"oriented"`` (a directional
        derivative of ``order`` 1 or 2 at angle theta); ``types`` and ``alpha_range`` are
        then unused and a :class:`~scalespace_mk.analysis.jets.FamilyCensusResult` is
        returned.
    order : int
        Order of the family (N = 1..4 for ``"njet"``, 1 or 2 for ``"oriented"``).
    allow_saturated : bool
        Fit a family with at least ``k * k - 1`` free parameters (refused by default).

    Returns
    -------
    CensusResult
        Per filter the best type and its ``sigma_x``, ``sigma_y``, ``alpha`` (type 7, else
        NaN), ``a``, ``b``, ``r2``; per filter and type the same in ``*_all`` ``[N, T]``;
        ``reason`` per filter (None when fitted).

    Raises
    ------
    ValueError
        Bad filters (wrong shape, even size; with ``on_invalid="raise"`` NaN, all zero,
        constant: the message names the filter's index), unknown types, bad options.

    Notes
    -----
    ``R^2 = 1 - RSS / TSS`` with ``TSS = sum (y - mean y)^2`` is the squared correlation of
    the filter and the model: the fraction of the filter's variance explained. If no model
    correlates with a filter (e.g. a filter odd in both x and y against the 8 types), every
    R^2 is 0, ``a = 0``, ``b = mean(y)`` and the first type is reported. Scales lie in
    ``[0, sigma_max]``; sigma is a standard deviation (``s = sigma**2``). The search is
    global on a coarse grid and local after it: a filter whose correlation has two maxima
    closer than the grid step may end on the lower one. See the module docstring. Each
    filter is divided by its largest ``|tap|`` before the fit (``a``, ``b``, ``rss`` and
    ``tss`` are scaled back), so the result does not depend on the filter's scale even near
    the limits of float64.

    Examples
    --------
    >>> from scalespace_mk.scalespace.models import masterkey_model
    >>> y = 2.0 * masterkey_model(5, 1.1, 0.9) + 0.01
    >>> res = census(y)
    >>> int(res.type[0]), round(float(res.sigma_x[0]), 6), round(float(res.sigma_y[0]), 6)
    (5, 1.1, 0.9)
    >>> round(float(res.a[0]), 6), round(float(res.r2[0]), 9)
    (2.0, 1.0)
    """
    if check_choice("family", family, ("masterkey", "njet", "oriented")) != "masterkey":
        from scalespace_mk.analysis.jets import family_census

        opts = dict(mode=mode, epsilon=epsilon, sigma_max=sigma_max, device=device)
        opts.update(batch_size=batch_size, progress=progress, num_threads=num_threads)
        check_choice("on_invalid", on_invalid, ON_INVALID)
        if on_invalid == "record":  # recorded like the 8-type census, not fitted
            opts["invalid"] = screen_filters(check_filters(filters, "filters", values=False))
        return family_census(
            filters, family=family, order=order, allow_saturated=allow_saturated, **opts
        )
    check_choice("on_invalid", on_invalid, ON_INVALID)
    y_in, reason, max_tap, css = _screen_input(filters, "filters")
    n_filters, k = y_in.shape[0], y_in.shape[1]
    if k < 3:
        raise ValueError(f"filters must be at least 3x3 to fit a model; got k = {k}")
    if size is not None and check_size(size) != k:
        raise ValueError(f"size must equal the filter size k = {k} (or be None); got {size!r}")
    tps = parse_model_types(types)
    check_choice("method", method, METHODS)
    check_choice("mode", mode, MODES)
    epsilon = check_epsilon(epsilon)
    lo_hi = _check_alpha_range(alpha_range)
    sigma_max = check_sigma_max(sigma_max, k)
    dev = _resolve_device(device)
    chosen = batch_size is not None
    if batch_size is None:
        batch_size = 131072 if dev.type == "cuda" else 8192
    check_batch_size(batch_size)
    valid = np.equal(reason, None)
    if on_invalid == "raise" and not valid.all():
        idx = int(np.flatnonzero(~valid)[0])
        raise ValueError(_invalid_message("filters", idx, reason[idx], y_in))
    n_all, n_filters = n_filters, int(valid.sum())
    y_valid = y_in if valid.all() else y_in[valid]  # no copy when every filter is valid
    scale = max_tap[valid]  # max |tap| from the screening; > 0 and finite for valid filters
    y = np.ascontiguousarray(y_valid / scale[:, None, None])
    del y_valid
    batch_size = _check_census_memory(tps, k, sigma_max, n_filters, int(batch_size), chosen)

    show = progress
    if show is None:
        show = n_filters >= 20_000 and sys.stderr.isatty()
    check_num_threads(num_threads)
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_filters * len(tps), unit="fit", desc="census", file=sys.stderr)
    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)

    try:
        objectives = _objectives(tps, k, method, mode, epsilon, sigma_max, lo_hi, dev)
        args = (k, method, mode, epsilon, sigma_max, lo_hi)
        theta, out = _fit_all(y, tps, objectives, args, dev, int(batch_size), bar)
    finally:
        if bar is not None:
            bar.close()
        if num_threads is not None:
            torch.set_num_threads(threads_before)
    # back to the filters' own scale; invalid filters get NaN rows and best = -1
    tss_valid = css[valid]  # centred sum of squares of y, from the screening
    with np.errstate(over="ignore"):  # filters near 1e300: a, b and sums of squares may be inf
        out["a"] *= scale[:, None]
        out["b"] *= scale[:, None]
        out["rss"] *= scale[:, None] * scale[:, None]  # 0 stays 0
        tss_valid *= scale * scale

    def full(values: np.ndarray) -> np.ndarray:
        if n_filters == n_all:  # every filter fitted: no copy
            return values
        arr = np.full((n_all,) + values.shape[1:], np.nan)
        arr[valid] = values
        return arr

    r2 = full(out["r2"])
    best = np.full(n_all, -1, dtype=np.int64)
    if n_filters:
        best[valid] = np.argmax(out["r2"], axis=1)
    tss = full(tss_valid)
    finite_invalid = ~valid & (reason != "non-finite")
    tss[finite_invalid] = 0.0  # zero and constant filters: nothing to explain
    return CensusResult(
        types=tuple(t.label for t in tps),
        best=best,
        sigma_x_all=full(theta[:, :, 0]),
        sigma_y_all=full(theta[:, :, 1]),
        alpha_all=full(out["alpha"]),
        a_all=full(out["a"]),
        b_all=full(out["b"]),
        r2_all=r2,
        rss_all=full(out["rss"]),
        tss=tss,
        alpha_range=lo_hi,
        sigma_max=sigma_max,
        reason=reason,
    )


def _census_memory(
    tps: Sequence[ModelType], k: int, sigma_max: float, n: int, batch: int, threads: int
) -> tuple[float, float]:
    """Estimated peak working memory of a census, in bytes: ``(fixed, per_filter)`` with
    ``fixed + per_filter * batch`` the peak for a batch of ``batch`` filters.

    Measured (VmHWM over the imports, 2 threads) and the estimate: see
    ``tests/test_census_memory.py`` and docs/limits.md. Terms:

    - tables: every knot's kernel is built with one FFT (~24 bytes per knot and FFT sample),
      the cubic coefficients of the one-scale models' 2-D tables ``[J, 4, k*k]``, with 60 %
      for the temporaries of their construction;
    - coarse grid of the separable types: the 1-D factors at the grid scales (float64 while
      built, then float32);
    - per thread: the grid's first product ``[rows, k, T, G]`` and one type's block ``[rows,
      G * G]`` (float32, :func:`_grid_rows` filters) and, per filter of the batch, the
      one-scale grids (``~12`` float64 arrays of ``G1`` values), the refinement and exact
      models (~``64 k^2`` bytes) and the input's copies and result columns;
    """
    from scalespace_mk.scalespace.kernels import fft_length

    knots = sigma_max / _KNOT_STEP + 3
    n_fft = fft_length(sigma_max, k)
    tables = 1.6 * knots * (24 * n_fft + 3 * 4 * 8 * k * k)
    g2 = math.ceil(sigma_max / _GRID_STEP_2D) + 1
    g1 = math.ceil(sigma_max / _GRID_STEP_1D) + 1
    n_sep = sum(tp.kind == "sep" for tp in tps)
    n_one = len(tps) - n_sep
    grid = 2 * 8.0 * k * g2 * n_sep
    rows = min(_grid_rows(g2 * g2), max(batch, 1))
    block = 4.0 * rows * g2 * (2 * n_sep * k + 2 * g2) if n_sep else 0.0
    per_filter = 96.0 * g1 * n_one + 64.0 * k * k * 2 + 400.0 * len(tps)
    inputs = 3 * 8.0 * k * k * n + 6 * 8.0 * len(tps) * n  # filters (3 copies), results
    return tables + grid + threads * block + inputs, threads * per_filter


def _check_census_memory(
    tps: Sequence[ModelType], k: int, sigma_max: float, n: int, batch: int, chosen: bool
) -> int:
    """The batch size to use within the memory budget, or a MemoryBudgetError.

    The estimate is :func:`_census_memory` with the threads the census will run (one per
    chunk, at most ``torch.get_num_threads()``); a default batch size shrinks to fit, a
    chosen one that does not fit is refused, and so is a census whose fixed part (tables,
    grid, inputs) alone passes the budget, before any work.
    """
    rows = max(min(batch, n), 1)
    threads = max(1, min(torch.get_num_threads(), math.ceil(n / rows)))
    fixed, per_filter = _census_memory(tps, k, sigma_max, n, rows, threads)
    what = f"census of {n} filter(s) of size {k} with sigma_max = {sigma_max:g}"
    limits.check_memory(
        fixed + per_filter,
        what,
        f"lower sigma_max (k / 2 = {k / 2:g} is the default, beyond it a model "
        "is nearly flat across the filter), or fit fewer filters at a time "
        "(scalespace_mk.analysis.stream.census_stream, census --out)",
    )
    need = fixed + per_filter * rows
    if need <= limits.memory_budget():
        return batch
    fits = int((limits.memory_budget() - fixed) // per_filter)
    if not chosen and fits >= 1:
        return fits
    limits.check_memory(
        need,
        f"{what} and batch_size = {batch}",
        f"lower batch_size (at most {max(fits, 1)} fits) or sigma_max",
    )
    return batch  # pragma: no cover - check_memory raised


#: CPU chunks run in forked worker processes (Linux) when the census has at least this many
#: filters and more than one thread; below it, or where fork is not available, in threads
_PROCESS_MIN_FILTERS = 32768
#: None: choose as above; True / False: always / never processes (tests and benchmarks)
_PROCESSES: bool | None = None
_JOBS: dict[int, _Job] = {}  # the census of each running _fit_all, for forked workers


class _Job:
    """The work of one :func:`_fit_all`: a chunk of filters, or the left-over stencil
    searches of one type; returns numpy arrays, so that it can run in a forked process."""

    def __init__(self, y: torch.Tensor, tps, objs, args: tuple, dev, batch_size: int) -> None:
        self.y, self.tps, self.objs, self.args = y, tps, objs, args
        self.dev, self.batch_size = dev, batch_size
        with torch.no_grad():
            self.grid = _grid_models(objs, args[4], dev) if len(y) else None

    def chunk(self, start: int) -> tuple[int, int, list, list]:
        """Fit the filters ``start .. start + batch_size``: ``(start, stop, per-type (theta,
        fit arrays), left-over (type, rows, starts))``."""
        stop = min(start + self.batch_size, len(self.y))
        left: list = []
        with torch.no_grad():
            yf = self.y[start:stop].to(self.dev).reshape(stop - start, -1)
            fits = _fit_chunk(self.tps, self.objs, yf, *self.args, pending=left, grid=self.grid)
        out = [(th.cpu().numpy(), {k: v.cpu().numpy() for k, v in res.items()}) for th, res in fits]
        rest = [(j, rows.numpy() + start, th0.cpu().numpy()) for j, rows, th0 in left]
        return start, stop, out, rest

    def pending(self, j: int, rows: np.ndarray, th0: np.ndarray) -> tuple:
        """The stencil searches of type ``j`` left by the chunks (rows, starts ``[m, S,
        d]``): ``(j, rows, theta, fit arrays)``."""
        with torch.no_grad():
            idx = torch.as_tensor(rows)
            yf = self.y.index_select(0, idx).to(self.dev).reshape(len(rows), -1)
            th0t = torch.as_tensor(th0, device=self.dev)
            th, res = _fit_pending(self.tps[j], self.objs[j], yf, th0t, self.args)
        return j, rows, th.cpu().numpy(), {k: v.cpu().numpy() for k, v in res.items()}


def _call_job(token: int, method: str, *a: Any) -> Any:
    """Run ``method`` of the registered job ``token`` (in a forked worker)."""
    return getattr(_JOBS[token], method)(*a)


def _worker_init() -> None:
    """A forked census worker: one intra-op thread; Ctrl-C is the parent's to handle (it
    stops the workers)."""
    import signal

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _use_processes(n: int, workers: int) -> bool:
    """Whether the CPU chunks of a census of ``n`` filters on ``workers`` threads run in
    forked processes (see :data:`_PROCESS_MIN_FILTERS`)."""
    import multiprocessing as mp

    if workers < 2 or _PROCESSES is False:
        return False
    if "fork" not in mp.get_all_start_methods() or mp.current_process().daemon:
        return False
    return _PROCESSES is True or (sys.platform == "linux" and n >= _PROCESS_MIN_FILTERS)


def _fit_all(
    y: np.ndarray,
    tps: Sequence[ModelType],
    objs: Sequence[Any],
    args: tuple,
    dev: torch.device,
    batch_size: int,
    bar: Any = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fit all filters ``y`` [N, k, k] chunk by chunk: scales ``[N, T, 2]`` and fit arrays.

    On the CPU the chunks run on up to ``torch.get_num_threads()`` workers, each doing its
    torch work on one intra-op thread (the small operations of a chunk do not profit from
    OpenMP, and its waiting stalls on a loaded machine); an input of one chunk (e.g. a
    layer of a network) thus runs on one thread. The workers are forked processes on Linux
    for large inputs (:func:`_use_processes`: Python threads would share one interpreter
    lock between the many small operations), else threads. The filters that the Newton
    steps leave (:func:`_fit_pending`) are then searched one type per worker. The results
    do not depend on the number or kind of workers. ``args`` is
    ``(k, method, mode, epsilon, sigma_max, alpha_range)``.
    """
    n, n_t = y.shape[0], len(tps)
    theta = np.zeros((n, n_t, 2))
    out = {key: np.zeros((n, n_t)) for key in ("a", "b", "r2", "rss", "alpha")}
    job = _Job(torch.as_tensor(y), tps, objs, args, dev, batch_size)
    starts = range(0, n, batch_size)
    pending: dict[int, list] = {}

    def store(rows: Any, j: int, th: np.ndarray, res: dict[str, np.ndarray]) -> None:
        theta[rows, j, :] = th  # one-scale types: sigma_y = sigma_x
        for key in out:
            out[key][rows, j] = res[key]

    def take_chunk(result: tuple) -> None:
        start, stop, fits, rest = result
        for j, (th, res) in enumerate(fits):
            store(slice(start, stop), j, th, res)
        for j, rows, th0 in rest:
            pending.setdefault(j, []).append((rows, th0))
        if bar is not None:
            bar.update((stop - start) * n_t)

    def left_over() -> list[tuple]:
        order = sorted(pending, key=lambda j: -sum(len(r) for r, _ in pending[j]))
        return [
            (
                j,
                np.concatenate([r for r, _ in pending[j]]),
                np.concatenate([t for _, t in pending[j]]),
            )
            for j in order
        ]

    if dev.type != "cpu":
        for start in starts:
            take_chunk(job.chunk(start))
        for j, rows, th, res in (job.pending(*p) for p in left_over()):
            store(rows, j, th, res)
        return theta, out

    intra = torch.get_num_threads()
    workers = max(min(intra, len(starts)), 1)
    torch.set_num_threads(1)
    try:
        if _use_processes(n, workers):
            _fit_processes(job, starts, workers, take_chunk, left_over, store)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                for result in pool.map(job.chunk, starts):
                    take_chunk(result)
                # the stencil searches left by the Newton refinement, one type per thread
                for j, rows, th, res in pool.map(lambda p: job.pending(*p), left_over()):
                    store(rows, j, th, res)
    finally:
        torch.set_num_threads(intra)
    return theta, out


def _fit_processes(job: _Job, starts, workers: int, take_chunk, left_over, store) -> None:
    """:func:`_fit_all`'s chunks and left-over searches in ``workers`` forked processes
    (they inherit the filters, tables and grid; results come back as numpy arrays). A
    worker that dies (e.g. killed for memory) raises ``BrokenProcessPool``; on any error or
    Ctrl-C the workers are stopped."""
    import multiprocessing as mp
    import warnings
    from concurrent.futures import ProcessPoolExecutor
    from itertools import repeat

    token = id(job)
    _JOBS[token] = job
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_worker_init)
    try:
        with warnings.catch_warnings():  # Python >= 3.12 warns on fork beside threads: the
            warnings.simplefilter("ignore", DeprecationWarning)  # workers run only torch code
            results = pool.map(_call_job, repeat(token), repeat("chunk"), starts)
        for result in results:
            take_chunk(result)
        rest = left_over()
        if rest:
            js, rows, th0 = zip(*rest, strict=True)
            for j, r, th, res in pool.map(
                _call_job, repeat(token), repeat("pending"), js, rows, th0
            ):
                store(r, j, th, res)
    except BaseException as exc:
        procs = getattr(pool, "_processes", None) or {}  # no public way before 3.14
        for proc in list(procs.values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        from concurrent.futures.process import BrokenProcessPool

        if isinstance(exc, BrokenProcessPool):
            raise RuntimeError(
                "a census worker process died (killed for memory, or by a signal): run the "
                "census with fewer threads (num_threads=1 runs it in this process) or a "
                "smaller batch_size, or stream it (census_stream, census --out)"
            ) from exc
        raise
    finally:
        _JOBS.pop(token, None)
    pool.shutdown(wait=True)


def _objectives(tps, k, method, mode, epsilon, sigma_max, alpha_range, dev) -> list[Any]:
    """Interpolated objective of each type on ``dev``."""
    _, step = _knots(sigma_max)
    objs: list[Any] = []
    for tp in tps:
        args = (tp.name, k, method, mode, epsilon, sigma_max)
        if tp.kind == "sep":
            tx, _ = _table(_factor_name(tp.name, "x"), "x", *args[1:])
            ty, _ = _table(_factor_name(tp.name, "y"), "y", *args[1:])
            objs.append(
                _SepObjective(
                    _Interp(tx.to(dev), step, sigma_max), _Interp(ty.to(dev), step, sigma_max), k
                )
            )
        else:
            tl, norms = _table(args[0], "lap", *args[1:])
            objs.append(
                _LapObjective(
                    _Interp(tl.to(dev), step, sigma_max),
                    _Interp(norms.to(dev), step, sigma_max),
                    k,
                    tp.kind,
                    alpha_range,
                )
            )
    return objs


def _coarse_grid(sigma_max: float, dim: int, dev: torch.device) -> tuple[torch.Tensor, float]:
    """Coarse grid of scales ``[G]`` of a ``dim``-scale search and its half step."""
    gstep = _GRID_STEP_2D if dim == 2 else _GRID_STEP_1D
    n_grid = max(int(math.ceil(sigma_max / gstep)), 2)
    sig = torch.linspace(0.0, sigma_max, n_grid + 1, dtype=torch.float64, device=dev)
    return sig, 0.5 * sigma_max / n_grid


class _SepGrid:
    """The coarse grid of the separable types, held as their 1-D factors.

    The correlation of a centred unit filter ``z`` with the grid model ``g = v(sig[iy])
    (x) u(sig[ix])`` of type ``t`` is ``<z, g> / ||g_c||`` (``z`` is centred, so ``<z, g_c> =
    <z, g>``; the tabulated factors have unit norm, so ``||g_c||^2 = 1 - (sum u sum v)^2 /
    k^2``). ``<z, g> = v^T Z u`` is computed in two products: ``Y = Z^T V`` for the
    distinct row factors of all types at once, then ``Y_fy^T U_fx`` per type (a product of
    inner dimension ``k``): about ``k^2 F G + T k G^2`` multiply-adds per filter instead of
    ``T k^2 G^2`` for the grid models as one matrix. Built once per census, in
    :data:`_GRID_DTYPE` (the grid only picks the start of the float64 refinement).

    Attributes: ``v`` ``[k, Fy * G]`` (distinct row factors, unit norm), ``u`` ``[Fx, k, G]``
    (distinct column factors), ``pairs`` (``(fx, fy)`` of each type), ``scale`` (per type
    ``[G * G]``, index ``iy * G + ix``: ``1 / ||g_c||``, 0 where ``g`` is constant; None
    where it is 1 everywhere).
    """

    def __init__(self, objs: Sequence[_SepObjective], sig: torch.Tensor) -> None:
        k = objs[0].k
        self.k, self.g = k, sig.shape[0]
        xs: dict[int, torch.Tensor] = {}
        ys: dict[int, torch.Tensor] = {}
        self.pairs: list[tuple[int, int]] = []
        self.scale: list[torch.Tensor | None] = []
        for obj in objs:  # factors shared by types (cached tables) are computed once
            if id(obj.ux.coef) not in xs:
                xs[id(obj.ux.coef)] = obj.ux(sig)  # [G, k] float64, unit rows
            if id(obj.vy.coef) not in ys:
                ys[id(obj.vy.coef)] = obj.vy(sig)
            u, v = xs[id(obj.ux.coef)], ys[id(obj.vy.coef)]
            self.pairs.append((list(xs).index(id(obj.ux.coef)), list(ys).index(id(obj.vy.coef))))
            prod = v.sum(dim=1)[:, None] * u.sum(dim=1)[None, :]  # [G (iy), G (ix)]
            den = 1.0 - prod * prod / (k * k)
            inv = torch.where(den > _TINY, den.clamp(min=_TINY).rsqrt(), torch.zeros_like(den))
            inv = inv.reshape(-1).to(_GRID_DTYPE)
            self.scale.append(None if bool((inv == 1.0).all()) else inv)
        self.u = torch.stack([u.T for u in xs.values()]).to(_GRID_DTYPE).contiguous()
        self.v = torch.cat([v.T for v in ys.values()], dim=1).to(_GRID_DTYPE).contiguous()
        self.n_rows = len(ys)


def _grid_models(objs: Sequence[Any], sigma_max: float, dev: torch.device) -> _SepGrid | None:
    """:class:`_SepGrid` of the separable objectives on the coarse grid (None when there is
    none): built once per census, shared by the chunks and threads."""
    sep = [obj for obj in objs if obj.dim == 2]
    if not sep:
        return None
    sig2, _ = _coarse_grid(sigma_max, 2, dev)
    return _SepGrid(sep, sig2)


def _grid_argmax(zf: torch.Tensor, grid: _SepGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """Index ``iy * G + ix`` of the largest ``|<z, g_c>| / ||g_c||`` per filter and
    separable type, ``[n, T]`` (the first in that order on ties), and the values on the
    3x3 grid neighbourhood of each maximum, ``[n, T, 9]`` (index ``3 dy + dx``; mirrored at
    both ends of the grid, as the objective is).

    In :data:`_GRID_DTYPE`, over chunks of :data:`_GRID_CHUNK` filters whose ``[chunk, G *
    G]`` block per type stays in cache.
    """
    n, k, g = zf.shape[0], grid.k, grid.g
    out = torch.empty(n, len(grid.pairs), dtype=torch.long, device=zf.device)
    near = torch.empty(n, len(grid.pairs), 9, dtype=_GRID_DTYPE, device=zf.device)
    off = torch.tensor([-1, 0, 1], device=zf.device)
    rows = _grid_rows(g * g)
    for start in range(0, n, rows):
        z = zf[start : start + rows].to(_GRID_DTYPE).view(-1, k, k)
        m = z.shape[0]
        # Y[m, c, (fy, iy)] = sum_r z[m, r, c] v_fy[r, iy], then [fy, m, iy, c]
        y = torch.matmul(z.transpose(1, 2).reshape(m * k, k), grid.v)
        y = y.view(m, k, grid.n_rows, g).permute(2, 0, 3, 1).contiguous()
        for t, (fx, fy) in enumerate(grid.pairs):
            corr = torch.matmul(y[fy].view(m * g, k), grid.u[fx])  # [m * G (iy), G (ix)]
            if grid.scale[t] is not None:
                corr.view(m, g * g).mul_(grid.scale[t])
            corr = corr.abs_().view(m, g, g)
            # the first maximum in row-major order: the row of the maximum, then its column
            # (torch's argmax over a long row is far slower than amax on the CPU)
            iy = corr.amax(dim=2).argmax(dim=1)  # [m]
            row = corr.gather(1, iy[:, None, None].expand(-1, 1, g))[:, 0, :]
            ix = row.argmax(dim=1)
            out[start : start + m, t] = iy * g + ix
            ny, nx = (iy[:, None] + off).abs_(), (ix[:, None] + off).abs_()
            ny = torch.minimum(ny, 2 * (g - 1) - ny)
            nx = torch.minimum(nx, 2 * (g - 1) - nx)
            idx = (ny[:, :, None] * g + nx[:, None, :]).view(m, 9)
            near[start : start + m, t] = corr.view(m, g * g).gather(1, idx)
    return out, near


def _grid_start(
    best: torch.Tensor, near: torch.Tensor, sig: torch.Tensor, sigma_max: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid points ``[n, 2]`` (sigma_x, sigma_y) of the indices ``best`` [n] and the start of
    the Newton refinement: the vertex of the quadratic through the grid values of R^2 on
    the 3x3 neighbourhood ``near`` [n, 9], where it is a maximum within one grid step (else
    the grid point)."""
    g = sig.shape[0]
    point = torch.stack([sig[best % g], sig[best // g]], dim=1)
    step_g = float(sig[1] - sig[0])
    fs = near.to(torch.float64).square()
    h = torch.full((fs.shape[0],), step_g, dtype=torch.float64, device=fs.device)
    step, ok = _newton(fs, h, 2)
    ok = ok & (step.abs() <= step_g).all(dim=1)
    return point, torch.where(ok[:, None], point + step, point).clamp(0.0, sigma_max)


def _grid_start_1d(
    obj: _LapObjective, z: torch.Tensor, sig: torch.Tensor, sigma_max: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid maxima ``[n, 1]`` of a one-scale objective for filters ``z`` (as it reads them)
    on the grid ``sig`` [G], and the start of its Newton refinement: the vertex of the
    parabola through the maximum and its two neighbours (mirrored at both ends of the
    grid, as the objective is), where it is a maximum within one grid step (else the grid
    point). The grid is evaluated :data:`_GRID_CHUNK_1D` filters at a time (its ``[rows,
    G]`` temporaries stay in cache)."""
    n, g = z.shape[0], sig.shape[0]
    best = torch.empty(n, dtype=torch.long, device=z.device)
    near = torch.empty(n, 3, dtype=torch.float64, device=z.device)
    off = torch.tensor([-1, 0, 1], device=z.device)
    for start in range(0, n, _GRID_CHUNK_1D):
        values = obj.grid(z[start : start + _GRID_CHUNK_1D], sig)  # [rows, G]
        b = values.argmax(dim=1)
        idx = (b[:, None] + off).abs_()
        idx = torch.minimum(idx, 2 * (g - 1) - idx)
        best[start : start + _GRID_CHUNK_1D] = b
        near[start : start + _GRID_CHUNK_1D] = values.gather(1, idx)
    step_g = float(sig[1] - sig[0])
    h = torch.full((n,), step_g, dtype=torch.float64, device=z.device)
    step, ok = _newton(near, h, 1)
    point = sig[best][:, None]
    ok = ok & (step[:, 0].abs() <= step_g)
    return point, torch.where(ok[:, None], point + step, point).clamp(0.0, sigma_max)


def _grid_rows(columns: int) -> int:
    """Filters per coarse-grid product: :data:`_GRID_CHUNK`, fewer when one type's ``[rows,
    columns]`` float32 block would pass :data:`_GRID_BLOCK_BYTES` (large k or sigma_max)."""
    return int(max(1, min(_GRID_CHUNK, _GRID_BLOCK_BYTES // (4 * max(columns, 1)))))


def _fit_chunk(
    tps: Sequence[ModelType],
    objs: Sequence[Any],
    yf: torch.Tensor,
    k: int,
    method: str,
    mode: str,
    epsilon: float,
    sigma_max: float,
    alpha_range: tuple[float, float],
    pending: list | None = None,
    grid: _SepGrid | None = None,
) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Fit every type to the flattened filters ``yf`` [n, k*k]: per type (scales, exact fit).

    The coarse grids of all separable types are searched by one matrix product
    (:func:`_grid_argmax`), the one-scale types by their own closed form; each type is then
    refined (:func:`_refine_sep`, :func:`_refine`) and evaluated exactly (:func:`_exact`).
    The few filters that the Newton refinement leaves to the stencil search are refined
    here, or, when a list ``pending`` is given, appended to it as ``(type column, rows,
    start scales)`` for :func:`_fit_pending` (one stencil search for all chunks: its cost
    is mostly per step, not per filter). ``grid`` is :func:`_grid_models` of ``objs`` when
    the caller built it once for all chunks (it is the same for every chunk).
    """
    centred = _centred(yf)  # shared by the exact fits of all types
    zf = centred[1] / centred[2].sqrt()[:, None]
    z3 = zf.reshape(-1, k, k)
    dev = yf.device
    sig2, h2 = _coarse_grid(sigma_max, 2, dev)
    sep = [j for j, obj in enumerate(objs) if obj.dim == 2]
    start2: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    if sep:
        if grid is None:
            grid = _grid_models(objs, sigma_max, dev)
        best, near = _grid_argmax(zf, grid)
        for col, j in enumerate(sep):
            start2[j] = _grid_start(best[:, col], near[:, col], sig2, sigma_max)
    fits = []
    for j, (tp, obj) in enumerate(zip(tps, objs, strict=True)):
        if obj.dim == 2:
            th0, th1 = start2.pop(j)  # the grid point and the quadratic's vertex near it
            zr = obj.reduce(z3)  # folded once per type
            th, conv = _refine_sep(obj, zr, th1, h2, sigma_max)
            rest = torch.nonzero(~conv)[:, 0]
            starts = torch.stack([th0, th], dim=1)  # [n, 2 starts, 2]
            if rest.numel() and pending is not None:
                pending.append((j, rest.cpu(), starts[rest]))
            elif rest.numel():
                th[rest] = _refine_from(obj, zr[rest], starts[rest], h2, sigma_max)
        else:
            sig1, h1 = _coarse_grid(sigma_max, 1, dev)
            z1 = obj.reduce(zf)
            th0, th1 = _grid_start_1d(obj, z1, sig1, sigma_max)
            th, conv = _refine_sep(_AsTwoScales(obj), z1, F.pad(th1, (0, 1)), h1, sigma_max)
            th = th[:, :1].contiguous()
            rest = torch.nonzero(~conv)[:, 0]
            starts = torch.stack([th0, th], dim=1)  # [n, 2 starts, 1]
            if rest.numel() and pending is not None:
                pending.append((j, rest.cpu(), starts[rest]))
            elif rest.numel():
                th[rest] = _refine_from(obj, z1[rest], starts[rest], h1, sigma_max)
        fits.append((th, _exact(tp, th, yf, k, method, mode, epsilon, alpha_range, centred)))
    return fits


def _fit_pending(
    tp: ModelType, obj: Any, yf: torch.Tensor, th0: torch.Tensor, args: tuple
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stencil search and exact fit of filters ``yf`` of one type from the starts ``th0``
    ``[m, S, d]`` (:func:`_refine_from`; ``d`` the objective's number of scales).

    ``args`` is ``(k, method, mode, epsilon, sigma_max, alpha_range)``.
    """
    sigma_max = args[4]
    zc = yf - yf.mean(dim=1, keepdim=True)
    z = obj.reduce(zc / zc.norm(dim=1, keepdim=True))  # [m, k*k] -> as the objective reads
    _, h0 = _coarse_grid(sigma_max, obj.dim, yf.device)
    th = _refine_from(obj, z, th0, h0, sigma_max)
    return th, _exact(tp, th, yf, *args[:4], args[5])


def _refine_from(
    obj: Any, z: torch.Tensor, starts: torch.Tensor, h0: float, sigma_max: float
) -> torch.Tensor:
    """The stencil search (:func:`_refine`) of each filter ``z`` [m, ...] from each of its
    starts ``[m, S, d]`` (the grid point and the Newton's best point), in one batch: the
    scales ``[m, d]`` of the best end point. On flat ridges the search stops where its
    steps become too small to matter, which depends on where it starts; the best of two
    starts is never below either."""
    m, n_s, d = starts.shape
    zz = z.repeat_interleave(n_s, dim=0)
    th = _refine(obj, zz, starts.reshape(m * n_s, d), h0, sigma_max)
    f = obj.point(zz, th).reshape(m, n_s)
    pick = f.argmax(dim=1)  # the first start on ties
    return th.reshape(m, n_s, d)[torch.arange(m, device=th.device), pick]


def _exact(
    tp: ModelType,
    th: torch.Tensor,
    yf: torch.Tensor,
    k: int,
    method: str,
    mode: str,
    epsilon: float,
    alpha_range: tuple[float, float],
    centred: tuple[torch.Tensor, ...] | None = None,
) -> dict[str, torch.Tensor]:
    """Exact models at the found scales and their linear shifts (``a, b, r2, rss, alpha``);
    ``centred`` is :func:`_centred` of ``yf`` when the caller has it."""
    n = yf.shape[0]
    kw = dict(size=k, method=method, mode=mode, epsilon=epsilon)
    nan = torch.full((n,), math.nan, dtype=torch.float64, device=yf.device)
    with torch.no_grad():
        if tp.kind == "sep":
            g = model_kernel(tp.name, th[:, 0], th[:, 1], **kw).reshape(n, -1)
            res = _shift_t(yf, g, centred)
            alpha = nan
        elif tp.kind == "iso":
            g = model_kernel(tp.name, th[:, 0], **kw).reshape(n, -1)
            res = _shift_t(yf, g, centred)
            alpha = nan
        else:
            ones = torch.ones_like(th[:, 0])
            mk1 = model_kernel(tp.name, th[:, 0], alpha=ones, **kw).reshape(n, -1)
            delta = torch.zeros(k * k, dtype=torch.float64, device=yf.device)
            delta[(k * k) // 2] = 1.0
            lap = delta - mk1
            alpha = _best_alpha(yf, delta, lap, alpha_range)
            g = delta - alpha[:, None] * lap  # K - alpha L: the model at alpha (linear in it)
            res = _shift_t(yf, g, centred)
    return {"a": res.a, "b": res.b, "r2": res.r2, "rss": res.rss, "alpha": alpha}


def _best_alpha(
    yf: torch.Tensor, delta: torch.Tensor, lap: torch.Tensor, alpha_range: tuple[float, float]
) -> torch.Tensor:
    """Closed-form alpha of ``y ~ a (K - alpha L) + b`` within ``alpha_range``: [n]."""
    yc = yf - yf.mean(dim=1, keepdim=True)
    kc = delta - delta.mean()
    lc = lap - lap.mean(dim=1, keepdim=True)
    kk = (kc * kc).sum()
    ll = (lc * lc).sum(dim=1)
    kl = (lc * kc).sum(dim=1)
    yk = (yc * kc).sum(dim=1)
    yl = (yc * lc).sum(dim=1)
    det = kk * ll - kl * kl
    okd = det > 1e-12 * kk * ll
    sdet = torch.where(okd, det, torch.ones_like(det))
    ca = (ll * yk - kl * yl) / sdet
    cl = (kk * yl - kl * yk) / sdet
    lo, hi = alpha_range
    a_u = -cl / torch.where(ca != 0, ca, torch.ones_like(ca))
    inside = okd & (ca != 0) & (a_u >= lo) & (a_u <= hi)

    def explained(al: float) -> torch.Tensor:
        num = yk - al * yl
        den = kk - 2.0 * al * kl + al * al * ll
        return num * num / den

    a_b = torch.where(
        explained(lo) >= explained(hi),
        torch.full_like(ll, lo),
        torch.full_like(ll, hi),
    )
    return torch.where(inside, a_u, a_b)


# --------------------------------------------------------------------------------------
# a slow per-filter reference on the same objective (for tests and benchmarks)


def reference_fit(
    y: Any,
    filter_type: int | str,
    *,
    x0: Sequence[float] | None = None,
    method: str = "discgauss",
    mode: str = "paper",
    epsilon: float = 1e-8,
    sigma_max: float | None = None,
    alpha_range: tuple[float, float] = ALPHA_RANGE,
) -> dict[str, Any]:
    """Fit one filter and one type with ``scipy.optimize`` (L-BFGS-B), as a reference.

    Minimises the same objective as :func:`census`, ``RSS(theta) = ||a g(theta) + b - y||^2``
    with the closed-form ``a, b`` of :func:`linear_shift`, over the scales (and, for type 7,
    over ``(sigma, alpha)`` jointly) within the same bounds, from one starting point, with
    the exact gradient from autograd through :func:`scalespace_mk.scalespace.models.model_kernel`.
    It is slow (one optimisation per filter and type) and finds a local optimum only.

    Parameters
    ----------
    y : array_like, shape [k, k]
        One filter (stored-weight layout, y up).
    filter_type : int or str
        A type accepted by :func:`census` (1..8 or a model name).
    x0 : sequence of float, optional
        Start: ``(sigma_x, sigma_y)``, ``(sigma,)`` for ``"lap"``, ``(sigma, alpha)`` for
        type 7. Default ``(1, 1)``, ``(1,)``, ``(1, 0.5)``.
    method, mode, epsilon, sigma_max, alpha_range
        As in :func:`census`.

    Returns
    -------
    dict
        ``sigma_x``, ``sigma_y``, ``alpha`` (None unless type 7), ``a``, ``b``, ``r2``,
        ``rss`` (floats) and ``nfev`` (objective evaluations).
    """
    from scipy.optimize import minimize

    yy = np.ascontiguousarray(check_filters(y, "y", allow_single=True))
    if yy.shape[0] != 1:
        raise ValueError(f"y must be one filter of shape [k, k]; got shape {np.shape(y)}")
    _check_tss(yy, "y")
    k = yy.shape[1]
    (tp,) = parse_model_types((filter_type,))
    lo_hi = _check_alpha_range(alpha_range)
    smax = k / 2.0 if sigma_max is None else float(sigma_max)
    kw = dict(size=k, method=method, mode=mode, epsilon=epsilon)
    yt = torch.as_tensor(yy.reshape(1, -1))
    if tp.kind == "sep":
        start, bounds = (1.0, 1.0), [(0.0, smax), (0.0, smax)]
    elif tp.kind == "iso":
        start, bounds = (1.0,), [(0.0, smax)]
    else:
        start, bounds = (1.0, 0.5), [(0.0, smax), lo_hi]
    start = tuple(float(v) for v in (x0 if x0 is not None else start))
    if len(start) != len(bounds):
        raise ValueError(f"x0 must have {len(bounds)} values for type {filter_type!r}; got {x0!r}")

    def model(p: torch.Tensor) -> torch.Tensor:
        if tp.kind == "sep":
            return model_kernel(tp.name, p[0:1], p[1:2], **kw)
        if tp.kind == "iso":
            return model_kernel(tp.name, p[0:1], **kw)
        return model_kernel(tp.name, p[0:1], alpha=p[1:2], **kw)

    def fun(x: np.ndarray) -> float:
        p = torch.tensor(x, dtype=torch.float64)
        p[0] = p[0].clamp(min=0.0)  # L-BFGS-B keeps to the bounds; guard rounding
        if tp.kind == "sep":
            p[1] = p[1].clamp(min=0.0)
        with torch.no_grad():
            return float(_shift_t(yt, model(p).reshape(1, -1)).rss[0])

    opt = minimize(
        fun,
        np.array(start),
        jac="3-point",
        method="L-BFGS-B",
        bounds=bounds,
        options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 500},
    )
    p = torch.tensor(opt.x, dtype=torch.float64)
    with torch.no_grad():
        res = _shift_t(yt, model(p).reshape(1, -1))
    sx = float(opt.x[0])
    sy = float(opt.x[1]) if tp.kind == "sep" else sx
    return {
        "sigma_x": sx,
        "sigma_y": sy,
        "alpha": float(opt.x[1]) if tp.kind == "mk7" else None,
        "a": float(res.a[0]),
        "b": float(res.b[0]),
        "r2": float(res.r2[0]),
        "rss": float(res.rss[0]),
        "nfev": int(opt.nfev),
    }


def null_r2(
    filters: np.ndarray, kinds: tuple[str, ...], seed: int, **census_kwargs: Any
) -> dict[str, np.ndarray]:
    """R^2 of the best model for the null filters of each kind.

    The null filters are :func:`scalespace_mk.analysis.null.null_filters`.

    Parameters
    ----------
    filters : numpy.ndarray, shape [N, k, k]
        The learned filters that were fitted (finite; leave out zero, constant and
        non-finite ones).
    kinds : tuple of str
        Null kinds (:func:`scalespace_mk.analysis.null.null_kinds`).
    seed : int
        Seed (>= 0) of the null filters.
    **census_kwargs
        Options of :func:`census` (``types``, ``device``,
        ...), the same as for the learned filters so that both are fitted alike.

    Returns
    -------
    dict
        ``{kind: R^2 [N]}`` (NaN where a null filter could not be fitted, e.g. the phase
        copy of a constant filter).
    """
    out: dict[str, np.ndarray] = {}
    for kind in kinds:
        if len(filters) == 0:
            out[kind] = np.zeros(0)
            continue
        if kind == "covariance" and len(filters) < 2:  # no covariance of one filter
            out[kind] = np.full(len(filters), np.nan)
            continue
        z = null_filters(filters, kind, seed)
        out[kind] = census(z, on_invalid="record", **census_kwargs).r2
    return out
