"""Symbolic derivations (sympy) behind the scale-space analysis of the master key filters.

Everything here is derived once with sympy, turned into numpy functions with
:func:`sympy.lambdify` and cached with :func:`functools.cache` (an unbounded
``lru_cache``), so that repeated numerical calls cost no sympy work (see :func:`cache_info`).

Contents
--------
(a) Difference stencils (docs/method.md#operators): :func:`stencil`, :func:`stencil_array`,
    :func:`stencil_mask`, :func:`apply_stencil`, :func:`fourier_symbol`,
    :func:`taylor_expansion`, :func:`leading_error_term`.
(b) Weighted-variance relations behind fitting method A (docs/method.md#fitting):
    :func:`weighted_variance`, :func:`weighted_variance_bound`,
    :func:`sigma_from_weighted_variance`, :func:`sigma_from_self_weighted_variance`,
    :func:`weighted_variance_expr`.
(c) Spreads and l1 norms of continuous Gaussian derivatives: :func:`spread_of_derivative`,
    :func:`l1_norm_of_derivative`, :func:`spread_constant`, :func:`l1_norm_constant`.
(d) l1 norms of scale-normalised derivatives: :func:`l1_norm_normalized_derivative`.
(e) DoG versus Laplacian in the semi-discrete scale space (master key model 7):
    :func:`dog_laplacian_residual_series`, :func:`dog_parameters_for_mk7`.
(f) N-jets and oriented derivatives (docs/theory.md): :func:`njet_monomial_response`,
    :func:`steering_identity`, :func:`steering_error`.

Conventions
-----------
``sigma`` is a standard deviation; the theory uses the variance ``s = sigma**2``. The
continuous 1-D Gaussian is ``g(x; sigma) = exp(-x**2 / (2 sigma**2)) / sqrt(2 pi sigma**2)``
and its n-th derivative is ``(-1)**n sigma**-n He_n(x / sigma) g(x; sigma)`` with the
probabilists' Hermite polynomials ``He_n``. Stencils are *correlation taps*:
``(op f)(x) = sum_k c_k f(x + k)``; in 2-D an offset is ``(kx, ky)`` with y pointing **up**,
and a dense mask is laid out as a stored weight ``h[r, c]`` with ``x = c - m``, ``y = m - r``
for the centre index ``m``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import sympy as sp
from numpy.typing import ArrayLike

from scalespace_mk._checks import check_choice, check_nonneg

__all__ = [
    "DERIVATIVE_ORDERS",
    "DOG_FORMS",
    "INVERSE_ORDERS",
    "STENCIL_NAMES",
    "STENCIL_ORDERS",
    "WEIGHTED_VARIANCE_ORDERS",
    "DogParameters",
    "apply_stencil",
    "cache_clear",
    "cache_info",
    "dog_laplacian_residual_series",
    "dog_parameters_for_mk7",
    "fourier_symbol",
    "l1_norm_constant",
    "l1_norm_normalized_derivative",
    "l1_norm_of_derivative",
    "leading_error_term",
    "njet_monomial_response",
    "sigma_from_self_weighted_variance",
    "sigma_from_weighted_variance",
    "spread_constant",
    "spread_of_derivative",
    "stencil",
    "stencil_array",
    "steering_error",
    "steering_identity",
    "stencil_mask",
    "taylor_expansion",
    "weighted_variance",
    "weighted_variance_bound",
    "weighted_variance_expr",
]

#: Names accepted by :func:`stencil` (1-D operators along x, plus the 2-D five-point Laplacian).
STENCIL_NAMES: tuple[str, ...] = ("x", "xx", "xxx", "xxxx", "x+", "x-", "lap")
#: Derivative order that each stencil approximates (its taps are divided by ``h**order``).
STENCIL_ORDERS: dict[str, int] = {
    "x": 1,
    "xx": 2,
    "xxx": 3,
    "xxxx": 4,
    "x+": 1,
    "x-": 1,
    "lap": 2,
}
#: Derivative orders of :func:`weighted_variance` and :func:`sigma_from_self_weighted_variance`.
WEIGHTED_VARIANCE_ORDERS: tuple[int, ...] = (0, 1, 2)
#: Orders for which :func:`sigma_from_weighted_variance` has a (unique, closed-form) inverse.
INVERSE_ORDERS: tuple[int, ...] = (0, 1)
#: Derivative orders of :func:`spread_of_derivative` and the l1 norms.
DERIVATIVE_ORDERS: tuple[int, ...] = (0, 1, 2, 3, 4)
#: DoG forms of :func:`dog_parameters_for_mk7` and :func:`dog_laplacian_residual_series`.
DOG_FORMS: tuple[str, ...] = ("central", "forward")

# Symbols shared by the derivations (exposed through the returned expressions).
_X, _Y = sp.symbols("x y", real=True)
_H = sp.Symbol("h", positive=True)
_U, _V = sp.symbols("u v", real=True)
_SIGMA, _SIGMA_REF = sp.symbols("sigma sigma_ref", positive=True)
_A, _B = sp.symbols("a b", positive=True)  # min and max of (sigma, sigma_ref)
_TAU = sp.Symbol("tau", positive=True)  # 1/tau**2 = 1/a**2 + 1/b**2
_TAU_OF_AB = _A * _B / sp.sqrt(_A**2 + _B**2)
_VAR = sp.Symbol("V", positive=True)
_ALPHA = sp.Symbol("alpha", real=True)
_NABLA = sp.Symbol("N", real=True)  # stands for the operator nabla5 (or its Fourier symbol)
_S = sp.Symbol("s", positive=True)
_F = sp.Function("f")
_E, _EY = sp.symbols("E E_y", positive=True)  # shift operators along x and y

_LAMBDIFY_MODULES = ["scipy", "numpy"]


# --------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------


def _check_order(order: Any, accepted: tuple[int, ...], name: str = "order") -> int:
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or order not in accepted:
        raise ValueError(
            f"{name} must be one of {', '.join(str(a) for a in accepted)}; got {order!r}"
        )
    return int(order)


def _finite_array(name: str, value: Any, *, nonneg: bool, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number or array ({what}); got {value!r}") from None
    bad = ~np.isfinite(arr)
    if nonneg:
        bad |= arr < 0
    if bad.any():
        first = float(arr[bad].flat[0])
        need = "finite and >= 0" if nonneg else "finite"
        raise ValueError(f"{name} must be {need} ({what}); got {first!r}")
    return arr


def _sigma_array(name: str, value: Any) -> np.ndarray:
    check_nonneg(name, value)
    return np.asarray(value, dtype=np.float64)


def _out(arr: np.ndarray, *inputs: Any) -> float | np.ndarray:
    """Return a Python float when every input was a scalar, else the array."""
    if all(np.ndim(v) == 0 for v in inputs):
        return float(arr)
    return arr


# --------------------------------------------------------------------------------------
# (a) difference stencils
# --------------------------------------------------------------------------------------


def _operator_polynomial(name: str) -> sp.Expr:
    """The operator as a Laurent polynomial in the shift operators E (x) and E_y (y)."""
    dx = (_E - 1 / _E) / 2
    dxx = _E - 2 + 1 / _E
    return {
        "x": dx,
        "xx": dxx,
        "xxx": dx * dxx,
        "xxxx": dxx**2,
        "x+": _E - 1,
        "x-": 1 - 1 / _E,
        "lap": dxx + (_EY - 2 + 1 / _EY),
    }[name]


@functools.cache
def _stencil_items(name: str) -> tuple[tuple[tuple[int, int], sp.Rational], ...]:
    """Sorted ((kx, ky), c) pairs derived by expanding the operator polynomial."""
    reach = 4
    poly = sp.Poly(sp.expand(_operator_polynomial(name) * _E**reach * _EY**reach), _E, _EY)
    items = []
    for (ex, ey), coeff in poly.terms():
        if coeff != 0:
            items.append(((ex - reach, ey - reach), sp.Rational(coeff)))
    items.sort(key=lambda item: (item[0][1], item[0][0]))
    return tuple(items)


def _is_2d(name: str) -> bool:
    return name == "lap"


def stencil(name: str) -> dict[Any, sp.Rational]:
    """Exact correlation taps of a difference operator.

    Parameters
    ----------
    name : str
        One of :data:`STENCIL_NAMES`: ``"x"`` central first difference
        ``(E - E^-1)/2``, ``"xx"`` second difference ``E - 2 + E^-1``, ``"xxx"`` =
        ``delta_x delta_xx``, ``"xxxx"`` = ``delta_xx**2``, ``"x+"`` forward half-grid
        difference ``E - 1``, ``"x-"`` backward half-grid difference ``1 - E^-1``, or
        ``"lap"`` the five-point Laplacian ``delta_xx + delta_yy``. ``E`` is the unit shift
        ``(E f)(x) = f(x + 1)``.

    Returns
    -------
    dict
        Offset -> :class:`sympy.Rational` coefficient, only non-zero taps. Offsets are ints
        for the 1-D operators and ``(kx, ky)`` tuples (y up) for ``"lap"``.

    Notes
    -----
    Correlation convention: ``(op f)(x) = sum_k c_k f(x + k)``. The same taps act along y
    (upwards) for the y operators. ``"x+"`` approximates ``f'(x + 1/2)`` and ``"x-"``
    approximates ``f'(x - 1/2)``.

    Examples
    --------
    >>> stencil("xxx")
    {-2: -1/2, -1: 1, 1: -1, 2: 1/2}
    """
    check_choice("name", name, STENCIL_NAMES)
    items = _stencil_items(name)
    if _is_2d(name):
        return {off: c for off, c in items}
    return {off[0]: c for off, c in items}


def stencil_array(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Numpy form of :func:`stencil`.

    Parameters
    ----------
    name : str
        One of :data:`STENCIL_NAMES`.

    Returns
    -------
    offsets : numpy.ndarray of int64, shape [n] (1-D operators) or [n, 2] (``"lap"``, columns
        ``(kx, ky)``, y up)
    coefficients : numpy.ndarray of float64, shape [n]
        With ``(op f)(x) = sum_i coefficients[i] * f(x + offsets[i])``; only non-zero taps,
        sorted by increasing offset (by ky, then kx in 2-D).
    """
    check_choice("name", name, STENCIL_NAMES)
    items = _stencil_items(name)
    coeffs = np.array([float(c) for _, c in items], dtype=np.float64)
    if _is_2d(name):
        offsets = np.array([off for off, _ in items], dtype=np.int64)
    else:
        offsets = np.array([off[0] for off, _ in items], dtype=np.int64)
    return offsets, coeffs


def stencil_mask(name: str) -> np.ndarray:
    """Dense mask of a stencil.

    Parameters
    ----------
    name : str
        One of :data:`STENCIL_NAMES`.

    Returns
    -------
    numpy.ndarray of float64
        1-D operators: shape ``[2 R + 1]`` over offsets ``-R .. R`` (``R = 1``, or 2 for
        orders 3 and 4), e.g. ``"x+"`` -> ``[0, -1, 1]``; this matches
        :func:`scalespace_mk.scalespace.operators.difference_stencil`. ``"lap"``: the
        ``[3, 3]`` stored weight ``h[r, c]`` with ``x = c - 1``, ``y = 1 - r`` (y up), i.e.
        ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]``, used as a cross-correlation kernel with no flip.
    """
    offsets, coeffs = stencil_array(name)
    reach = max(1, int(np.abs(offsets).max()))
    if _is_2d(name):
        mask = np.zeros((2 * reach + 1, 2 * reach + 1))
        for (kx, ky), c in zip(offsets, coeffs, strict=True):
            mask[reach - ky, reach + kx] = c
        return mask
    mask = np.zeros(2 * reach + 1)
    mask[offsets + reach] = coeffs
    return mask


def apply_stencil(name: str, expr: Any, *, x: sp.Symbol = _X, y: sp.Symbol = _Y) -> sp.Expr:
    """Apply a stencil exactly to a sympy expression.

    Parameters
    ----------
    name : str
        One of :data:`STENCIL_NAMES`.
    expr : sympy expression
        Function of ``x`` (and ``y`` for ``"lap"``), e.g. ``x**2 / 2``.
    x, y : sympy.Symbol, keyword-only
        The coordinate symbols (default: the real symbols ``x`` and ``y``).

    Returns
    -------
    sympy.Expr
        ``sum_k c_k expr(x + kx, y + ky)``, expanded.

    Examples
    --------
    >>> import sympy as sp
    >>> x = sp.Symbol("x", real=True)
    >>> apply_stencil("x+", x**2 / 2, x=x)
    x + 1/2
    """
    check_choice("name", name, STENCIL_NAMES)
    expr = sp.sympify(expr)
    total = sp.Integer(0)
    for (kx, ky), c in _stencil_items(name):
        total += c * expr.subs({x: x + kx, y: y + ky}, simultaneous=True)
    return sp.expand(total)


@functools.cache
def _fourier_symbol(name: str) -> sp.Expr:
    total = sp.Integer(0)
    for (kx, ky), c in _stencil_items(name):
        phase = kx * _U + ky * _V
        total += c * (sp.cos(phase) + sp.I * sp.sin(phase))
    return sp.expand(total)


def fourier_symbol(name: str) -> sp.Expr:
    """Fourier symbol of a stencil, ``sum_k c_k exp(i k u)`` (2-D: ``exp(i (kx u + ky v))``).

    Parameters
    ----------
    name : str
        One of :data:`STENCIL_NAMES`.

    Returns
    -------
    sympy.Expr
        In the real symbols ``u`` (and ``v``): the operator maps ``exp(i u x)`` to the symbol
        times ``exp(i u x)``. E.g. ``"xx"`` -> ``2 cos(u) - 2``; ``"x"`` -> ``i sin(u)``;
        ``"lap"`` -> ``2 cos(u) + 2 cos(v) - 4``.
    """
    check_choice("name", name, STENCIL_NAMES)
    return _fourier_symbol(name)


@functools.cache
def _taylor_expansion(name: str, order: int) -> sp.Expr:
    n = STENCIL_ORDERS[name]
    items = _stencil_items(name)
    total = sp.Integer(0)
    if _is_2d(name):
        f = _F(_X, _Y)
        for mx in range(order + 1):
            for my in range(order + 1 - mx):
                moment = sum(
                    c * sp.Integer(kx) ** mx * sp.Integer(ky) ** my for (kx, ky), c in items
                ) / (sp.factorial(mx) * sp.factorial(my))
                if moment != 0:
                    deriv = f
                    if mx:
                        deriv = sp.Derivative(deriv, (_X, mx))
                    if my:
                        deriv = sp.Derivative(deriv, (_Y, my))
                    total += moment * _H ** (mx + my - n) * deriv
        return total
    f = _F(_X)
    for m in range(order + 1):
        moment = sum(c * sp.Integer(k[0]) ** m for k, c in items) / sp.factorial(m)
        if moment != 0:
            deriv = sp.Derivative(f, (_X, m)) if m else f
            total += moment * _H ** (m - n) * deriv
    return total


def taylor_expansion(name: str, *, order: int = 6) -> sp.Expr:
    """Taylor expansion of a stencil with grid spacing ``h`` about ``x`` (and ``y``).

    Parameters
    ----------
    name : str
        One of :data:`STENCIL_NAMES`.
    order : int, keyword-only
        Highest derivative order kept (default 6, at most 12).

    Returns
    -------
    sympy.Expr
        ``sum_k c_k f(x + k h) / h**n`` (n = :data:`STENCIL_ORDERS` [name]) expanded as
        ``sum_m M_m h**(m - n) f^(m)(x)`` with the moments ``M_m = sum_k c_k k**m / m!``,
        truncated after derivative order ``order``. Contains the symbol ``h`` and the
        undefined function ``f``.
    """
    check_choice("name", name, STENCIL_NAMES)
    order = _check_order(order, tuple(range(13)), "order")
    return _taylor_expansion(name, order)


def leading_error_term(name: str) -> sp.Expr:
    """Leading truncation-error term of a stencil as an approximation of its derivative.

    Parameters
    ----------
    name : str
        One of :data:`STENCIL_NAMES`.

    Returns
    -------
    sympy.Expr
        The lowest-order term in ``h`` of ``op f / h**n - f^(n)`` (expansion about ``x``).
        ``"xx"`` -> ``h**2 f''''(x) / 12``; ``"x"`` -> ``h**2 f'''(x) / 6``;
        ``"x+"`` -> ``h f''(x) / 2`` (it is second order about ``x + h/2``);
        ``"lap"`` -> ``h**2 (f_xxxx + f_yyyy) / 12``.
    """
    check_choice("name", name, STENCIL_NAMES)
    n = STENCIL_ORDERS[name]
    expansion = _taylor_expansion(name, n + 4)
    if _is_2d(name):
        exact = sp.Derivative(_F(_X, _Y), (_X, 2)) + sp.Derivative(_F(_X, _Y), (_Y, 2))
    else:
        exact = sp.Derivative(_F(_X), (_X, n))
    error = sp.expand(expansion - exact)
    power = min(term.as_coeff_exponent(_H)[1] for term in sp.Add.make_args(error))
    return sp.Add(*[t for t in sp.Add.make_args(error) if t.as_coeff_exponent(_H)[1] == power])


# --------------------------------------------------------------------------------------
# Gaussian moments on half lines and intervals (used by (b) and (c))
# --------------------------------------------------------------------------------------


def _gauss_moment(k: int, c: sp.Expr, tau: sp.Expr) -> sp.Expr:
    """``int_0^c x**k exp(-x**2 / (2 tau**2)) dx`` in closed form (``c`` may be ``oo``)."""
    if c is sp.oo:
        # tau**(k+1) * 2**((k-1)/2) * Gamma((k+1)/2)
        return tau ** (k + 1) * 2 ** sp.Rational(k - 1, 2) * sp.gamma(sp.Rational(k + 1, 2))
    if k == 0:
        return tau * sp.sqrt(sp.pi / 2) * sp.erf(c / (tau * sp.sqrt(2)))
    if k == 1:
        return tau**2 * (1 - sp.exp(-(c**2) / (2 * tau**2)))
    return tau**2 * (
        (k - 1) * _gauss_moment(k - 2, c, tau) - c ** (k - 1) * sp.exp(-(c**2) / (2 * tau**2))
    )


def _poly_gauss_integral(poly: sp.Poly, k: int, lo: Any, hi: Any, tau: sp.Expr) -> sp.Expr:
    """``int_lo^hi x**k poly(x) exp(-x**2 / (2 tau**2)) dx`` for ``0 <= lo <= hi <= oo``."""
    total = sp.Integer(0)
    for (m,), coeff in poly.terms():
        upper = _gauss_moment(m + k, hi, tau)
        lower = sp.Integer(0) if lo == 0 else _gauss_moment(m + k, lo, tau)
        total += coeff * (upper - lower)
    return total


def _hermite(n: int, z: sp.Expr) -> sp.Expr:
    """Probabilists' Hermite polynomial ``He_n(z)``."""
    return sp.expand(sp.hermite_prob(n, z))


# --------------------------------------------------------------------------------------
# (b) weighted variances (fitting method A)
# --------------------------------------------------------------------------------------


@functools.cache
def _weighted_variance_ab(order: int) -> sp.Expr:
    """Weighted variance in terms of a = min(sigma, sigma_ref), b = max(sigma, sigma_ref), tau.

    The density ``|g^(n)(x; sigma)| |g^(n)(x; sigma_ref)|`` is proportional to
    ``|He_n(x/a) He_n(x/b)| exp(-x**2 / (2 tau**2))`` with ``1/tau**2 = 1/a**2 + 1/b**2``;
    the product of Hermite polynomials is symmetric in (a, b). For order 2 it changes sign
    at ``x = a`` and ``x = b``, so the absolute value is integrated piecewise:
    ``|p| = p - 2 p 1[a < x < b]`` on the half line. ``tau`` stays a symbol here (it keeps
    the expression short); :data:`_TAU_OF_AB` gives its value.
    """
    prod = sp.expand(_hermite(order, _X / _A) * _hermite(order, _X / _B) * (_A * _B) ** order)
    poly = sp.Poly(prod, _X)

    def moment(k: int) -> sp.Expr:
        full = _poly_gauss_integral(poly, k, 0, sp.oo, _TAU)
        if order <= 1:  # He_0 He_0 = 1 and He_1 He_1 = x**2 / (a b): no sign change
            return full
        inner = _poly_gauss_integral(poly, k, _A, _B, _TAU)
        expr = sp.expand(full - 2 * inner)
        atoms = sorted(expr.atoms(sp.erf, sp.exp), key=str)
        return sp.collect(expr, atoms, func=sp.factor)

    ratio = moment(2) / moment(0)
    return sp.factor(sp.simplify(ratio)) if order <= 1 else ratio


@functools.cache
def _weighted_variance_expr(order: int) -> sp.Expr:
    expr = _weighted_variance_ab(order).subs(_TAU, _TAU_OF_AB)
    if order <= 1:
        return sp.factor(expr.subs({_A: _SIGMA, _B: _SIGMA_REF}, simultaneous=True))
    return expr.subs(
        {_A: sp.Min(_SIGMA, _SIGMA_REF), _B: sp.Max(_SIGMA, _SIGMA_REF)}, simultaneous=True
    )


def weighted_variance_expr(order: int) -> sp.Expr:
    """Closed-form weighted variance as a sympy expression in ``sigma`` and ``sigma_ref``.

    Parameters
    ----------
    order : int
        0, 1 or 2 (see :func:`weighted_variance`).

    Returns
    -------
    sympy.Expr
        Order 0: ``sigma**2 sigma_ref**2 / (sigma**2 + sigma_ref**2)``; order 1: three times
        that; order 2: an expression with ``erf`` and ``exp`` of ``Min``/``Max`` of the two
        scales.
    """
    order = _check_order(order, WEIGHTED_VARIANCE_ORDERS)
    return _weighted_variance_expr(order)


@functools.cache
def _weighted_variance_func(order: int) -> Callable[..., Any]:
    expr = _weighted_variance_ab(order)
    if order <= 1:  # c tau**2 = c a**2 b**2 / (a**2 + b**2): rational, no square root
        expr = sp.factor(expr.subs(_TAU, _TAU_OF_AB))
    return sp.lambdify((_A, _B, _TAU), expr, modules=_LAMBDIFY_MODULES)


def weighted_variance(order: int, sigma: ArrayLike, sigma_ref: ArrayLike) -> float | np.ndarray:
    """Variance of ``|g^(n)(x; sigma)|`` weighted by ``|g^(n)(x; sigma_ref)|`` (continuous 1-D).

    This is the variance of the normalised density
    ``|g^(n)(x; sigma)| |g^(n)(x; sigma_ref)| / int(...)`` (its mean is 0 by symmetry), the
    continuous counterpart of the weighted spread measure of docs/method.md#spread and the
    relation behind fitting method A.

    Parameters
    ----------
    order : int
        Derivative order n: 0 (smoothing axis, weight ``|g|``), 1 (derivative axis, weight
        ``|g_x|``) or 2 (``delta_xx``-type axis, weight ``|g_xx|``).
    sigma, sigma_ref : float or array_like
        Scale (standard deviation, >= 0, in pixels) of the filter and of the weight;
        broadcast against each other.

    Returns
    -------
    float or numpy.ndarray
        ``V`` in pixels squared, with the broadcast shape; a float when both inputs are
        scalars. ``V = 0`` when ``sigma`` or ``sigma_ref`` is 0 (the limit).

    Notes
    -----
    With ``1/tau**2 = 1/sigma**2 + 1/sigma_ref**2``:

    - order 0: ``V = tau**2 = sigma**2 sigma_ref**2 / (sigma**2 + sigma_ref**2)``;
    - order 1: ``V = 3 tau**2`` (the density is ``x**2`` times a Gaussian);
    - order 2: ``|(x**2 - sigma**2)(x**2 - sigma_ref**2)| exp(-x**2/(2 tau**2))`` integrated
      piecewise between the zeros ``min`` and ``max`` of the two scales (erf terms).

    Self-weighting (``sigma_ref = sigma``) gives ``V = sigma**2 / 2``, ``3 sigma**2 / 2`` and
    ``7 sigma**2 / 6``, i.e. the paper's ``sigma = sqrt(2 V)`` and ``sqrt(2 V / 3)``. The 2-D
    case (separable kernel and separable weight, also mixed orders ``x**a y**b``) factorises,
    so each axis follows the 1-D relation of its own order and the covariance is diagonal.

    docs/method.md#fitting method A converts a measured variance with the self-weighting
    relations although the weight sits at a fixed ``sigma_ref``;
    :func:`sigma_from_weighted_variance` gives the conversion that is exact for a continuous
    Gaussian under that weight.

    Examples
    --------
    >>> weighted_variance(0, 1.0, 1.0)
    0.5
    >>> round(weighted_variance(1, 2.0, 1.0), 12)
    2.4
    """
    order = _check_order(order, WEIGHTED_VARIANCE_ORDERS)
    s = _sigma_array("sigma", sigma)
    r = _sigma_array("sigma_ref", sigma_ref)
    s_b, r_b = np.broadcast_arrays(s, r)
    lo = np.minimum(s_b, r_b)
    hi = np.maximum(s_b, r_b)
    zero = lo == 0
    func = _weighted_variance_func(order)
    # V is homogeneous of degree 2 and symmetric: V = lo**2 q(rho), rho = lo / hi in (0, 1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        rho = np.where(zero, 1.0, lo / np.where(zero, 1.0, hi))
        small = rho < _SMALL_RATIO
        r = np.where(small, 1.0, rho)
        q = np.asarray(func(r, 1.0, r / np.hypot(r, 1.0)), dtype=np.float64) / r**2
        q = np.where(small, float(_small_ratio_factor(order)), q)
        val = np.where(zero, 0.0, lo**2 * q)
    return _out(val, sigma, sigma_ref)


#: Below this ratio min/max of the two scales, V = min**2 * lim q (exact in float64: the
#: closed form deviates from its limit by O(rho**2) and underflows below ~1e-80).
_SMALL_RATIO = 1e-8


@functools.cache
def _small_ratio_factor(order: int) -> sp.Expr:
    """``lim_{rho -> 0} V(rho, 1) / rho**2``, V's behaviour when one scale is much smaller.

    Orders 0 and 1 by a sympy limit (1 and 3). For order 2 the limit is too slow for sympy;
    as ``a / b -> 0`` the factor ``He_2(x / b) -> He_2(0) = -1`` is constant on the support of
    ``g(x; a)``, so the density tends to ``|g_xx(x; a)|`` and the factor is
    ``spread_constant(2)**2`` (the tests check continuity against the closed form).
    """
    if order == 2:
        return _abs_moments(2).second / _abs_moments(2).l1
    expr = _weighted_variance_ab(order).subs(
        {_TAU: _A / sp.sqrt(1 + _A**2), _B: sp.Integer(1)}, simultaneous=True
    )
    return sp.limit(expr / _A**2, _A, 0, "+")


@functools.cache
def _bound_factor(order: int) -> sp.Expr:
    """``lim_{sigma -> oo} V / sigma_ref**2``."""
    expr = _weighted_variance_expr(order)
    return sp.simplify(sp.limit(expr, _SIGMA, sp.oo) / _SIGMA_REF**2)


def weighted_variance_bound(order: int, sigma_ref: ArrayLike) -> float | np.ndarray:
    """Supremum over ``sigma`` of :func:`weighted_variance` for orders 0 and 1.

    Parameters
    ----------
    order : int
        0 or 1 (:data:`INVERSE_ORDERS`).
    sigma_ref : float or array_like
        Weighting scale (standard deviation, >= 0).

    Returns
    -------
    float or numpy.ndarray
        ``sigma_ref**2`` (order 0) or ``3 sigma_ref**2`` (order 1), the limit of ``V`` as
        ``sigma -> oo``; ``V`` increases strictly towards it, so the inverse exists exactly for
        ``0 <= V < bound``.
    """
    order = _check_order(order, INVERSE_ORDERS)
    r = _sigma_array("sigma_ref", sigma_ref)
    return _out(float(_bound_factor(order)) * r**2, sigma_ref)


@functools.cache
def _inverse_expr(order: int) -> sp.Expr:
    """Solve ``V = weighted_variance(sigma, sigma_ref)`` for ``sigma > 0``."""
    sols = sp.solve(sp.Eq(_weighted_variance_expr(order), _VAR), _SIGMA)
    # V < bound: keep the root that is positive there (the other is its negative)
    probe = {_VAR: sp.Rational(1, 2), _SIGMA_REF: sp.Integer(1)}
    positive = [sol for sol in sols if sol.subs(probe).is_positive]
    if len(positive) != 1:  # pragma: no cover - guards the derivation, not user input
        raise RuntimeError(f"expected one positive solution for order {order}; got {sols}")
    return sp.simplify(positive[0])


@functools.cache
def _inverse_func(order: int) -> Callable[..., Any]:
    return sp.lambdify((_VAR, _SIGMA_REF), _inverse_expr(order), modules=_LAMBDIFY_MODULES)


def sigma_from_weighted_variance(
    order: int, V: ArrayLike, sigma_ref: ArrayLike
) -> float | np.ndarray:
    """Invert :func:`weighted_variance`: the scale whose weighted variance is ``V``.

    Parameters
    ----------
    order : int
        0 or 1 (:data:`INVERSE_ORDERS`). Order 2 is refused: its ``V(sigma)`` is not monotone
        (a local maximum ``V ~ 1.348 sigma_ref**2`` at ``sigma ~ 1.324 sigma_ref`` and a local
        minimum ``V ~ 0.961 sigma_ref**2`` at ``sigma ~ 2.324 sigma_ref``), so ``V`` does not
        determine ``sigma``; use :func:`sigma_from_self_weighted_variance` for self-weighting.
    V : float or array_like
        Weighted variance (pixels squared), ``0 <= V < bound`` with the bound of
        :func:`weighted_variance_bound` (``sigma_ref**2`` for order 0, ``3 sigma_ref**2`` for
        order 1).
    sigma_ref : float or array_like
        Weighting scale (standard deviation, > 0); broadcast against ``V``.

    Returns
    -------
    float or numpy.ndarray
        ``sigma`` (standard deviation): order 0 ``sigma = sigma_ref sqrt(V / (sigma_ref**2 -
        V))``, order 1 ``sigma = sigma_ref sqrt(V / (3 sigma_ref**2 - V))``; a float when both
        inputs are scalars.

    Raises
    ------
    ValueError
        For an unsupported order, negative or non-finite ``V``, ``sigma_ref <= 0``, or ``V``
        at or above the bound (the message names ``V`` and the bound).

    Examples
    --------
    >>> round(sigma_from_weighted_variance(1, 2.4, 1.0), 12)
    2.0
    """
    if order == 2 and not isinstance(order, bool):
        raise ValueError(
            "order 2 has no inverse: the weighted variance of |g_xx(sigma)| under "
            "|g_xx(sigma_ref)| is not monotone in sigma (local max ~1.348 sigma_ref**2 at "
            "sigma ~1.324 sigma_ref, local min ~0.961 sigma_ref**2 at sigma ~2.324 sigma_ref); "
            "order must be one of 0, 1 (or use sigma_from_self_weighted_variance)"
        )
    order = _check_order(order, INVERSE_ORDERS)
    v = _finite_array("V", V, nonneg=True, what="a weighted variance in pixels squared")
    r = _sigma_array("sigma_ref", sigma_ref)
    if (r == 0).any():
        raise ValueError(
            "sigma_ref must be > 0 to invert the weighted variance (at sigma_ref = 0 every "
            "sigma gives V = 0); got 0.0"
        )
    v_b, r_b = np.broadcast_arrays(v, r)
    factor = float(_bound_factor(order))
    mant, expo = np.frexp(r_b)  # V / sigma_ref**2 by exact power-of-two scaling (no overflow)
    v_norm = np.ldexp(v_b, -2 * expo) / mant**2
    over = v_norm >= factor
    if over.any():
        i = tuple(np.argwhere(over)[0]) if over.ndim else ()
        raise ValueError(
            f"V must be below the bound {factor:g} * sigma_ref**2 for order {order} "
            f"(V -> bound as sigma -> oo); got V = {float(v_b[i])!r} >= bound = "
            f"{factor * float(r_b[i]) ** 2!r} (sigma_ref = {float(r_b[i])!r})"
        )
    # homogeneous of degree 1: sigma = sigma_ref * sigma(V / sigma_ref**2, 1)
    sig = r_b * np.asarray(_inverse_func(order)(v_norm, 1.0), dtype=np.float64)
    return _out(np.broadcast_to(sig, v_b.shape).copy(), V, sigma_ref)


@functools.cache
def _self_factor(order: int) -> sp.Expr:
    """``c_n`` with ``V = c_n sigma**2`` under self-weighting (sigma_ref = sigma)."""
    expr = _weighted_variance_ab(order).subs(
        {_A: _SIGMA, _B: _SIGMA, _TAU: _SIGMA / sp.sqrt(2)}, simultaneous=True
    )
    return sp.simplify(expr / _SIGMA**2)


def sigma_from_self_weighted_variance(order: int, V: ArrayLike) -> float | np.ndarray:
    """The paper's method-A conversion, ``sigma_ref = sigma`` (self-weighting).

    Parameters
    ----------
    order : int
        0, 1 or 2 (:data:`WEIGHTED_VARIANCE_ORDERS`).
    V : float or array_like
        Self-weighted variance (pixels squared, >= 0).

    Returns
    -------
    float or numpy.ndarray
        ``sqrt(2 V)`` (order 0, smoothing axis), ``sqrt(2 V / 3)`` (order 1, derivative
        axis), ``sqrt(6 V / 7)`` (order 2), from ``V = sigma**2 / 2``, ``3 sigma**2 / 2``,
        ``7 sigma**2 / 6``.
    """
    order = _check_order(order, WEIGHTED_VARIANCE_ORDERS)
    v = _finite_array("V", V, nonneg=True, what="a weighted variance in pixels squared")
    return _out(np.sqrt(v / float(_self_factor(order))), V)


# --------------------------------------------------------------------------------------
# (c), (d) spreads and l1 norms of Gaussian derivatives
# --------------------------------------------------------------------------------------


class _AbsMoments(NamedTuple):
    l1: sp.Expr  # int |d^n g(x; 1)| dx
    second: sp.Expr  # int x**2 |d^n g(x; 1)| dx


@functools.cache
def _abs_moments(order: int) -> _AbsMoments:
    """Exact moments of ``|d^n g(x; 1)/dx^n| = |He_n(x)| exp(-x**2/2) / sqrt(2 pi)``.

    Integrates piecewise over the half line between the positive zeros of ``He_n`` (the
    density is even) and doubles.
    """
    he = _hermite(order, _X)
    poly = sp.Poly(he, _X)
    zeros = sorted((z for z in sp.roots(poly, _X) if z.is_positive), key=lambda z: float(z))
    edges = [sp.Integer(0), *zeros, sp.oo]
    norm = 2 / sp.sqrt(2 * sp.pi)
    results = []
    for k in (0, 2):
        total = sp.Integer(0)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            probe = (lo + hi) / 2 if hi is not sp.oo else lo + 1
            sign = 1 if float(he.subs(_X, probe)) > 0 else -1
            total += sign * _poly_gauss_integral(poly, k, lo, hi, sp.Integer(1))
        results.append(sp.radsimp(sp.expand(norm * total)))
    return _AbsMoments(*results)


def l1_norm_constant(order: int) -> sp.Expr:
    """Exact ``int |d^n g(x; 1)/dx^n| dx`` (unit scale), a sympy number.

    Parameters
    ----------
    order : int
        0 to 4 (:data:`DERIVATIVE_ORDERS`).

    Returns
    -------
    sympy.Expr
        1, ``sqrt(2/pi)``, ``2 sqrt(2/pi) exp(-1/2)``, ... (numerically 1, 0.79788, 0.96788,
        1.51001, 2.80060).
    """
    order = _check_order(order, DERIVATIVE_ORDERS)
    return _abs_moments(order).l1


def spread_constant(order: int) -> sp.Expr:
    """Exact spread of ``|d^n g(x; 1)/dx^n|`` (unit scale), a sympy number.

    Parameters
    ----------
    order : int
        0 to 4 (:data:`DERIVATIVE_ORDERS`).

    Returns
    -------
    sympy.Expr
        ``sqrt(int x**2 |d^n g| / int |d^n g|)``: 1, ``sqrt(2)``, ... (numerically 1,
        1.41421, 1.49833, 1.49814, 1.48122).
    """
    order = _check_order(order, DERIVATIVE_ORDERS)
    m = _abs_moments(order)
    return sp.sqrt(m.second / m.l1)


@functools.cache
def _constants(order: int) -> tuple[float, float]:
    m = _abs_moments(order)
    return float(m.l1), float(sp.sqrt(m.second / m.l1))


def spread_of_derivative(order: int, sigma: ArrayLike) -> float | np.ndarray:
    """Standard deviation of the normalised density ``|d^n g(x; sigma)/dx^n|``.

    Parameters
    ----------
    order : int
        0 to 4 (:data:`DERIVATIVE_ORDERS`).
    sigma : float or array_like
        Scale (standard deviation, >= 0, in pixels).

    Returns
    -------
    float or numpy.ndarray
        ``spread_constant(order) * sigma`` in pixels: order 0 -> ``sigma``, order 1 ->
        ``sqrt(2) sigma``, orders 2-4 -> about 1.4983, 1.4981, 1.4812 times ``sigma``. The mean
        of the density is 0 by symmetry. A float for scalar ``sigma``.

    Notes
    -----
    ``d^n g(x; sigma)/dx^n = (-1)**n sigma**-n He_n(x/sigma) g(x; sigma)``; the absolute
    value is integrated exactly between the zeros of ``He_n`` (erf and exp terms).
    """
    order = _check_order(order, DERIVATIVE_ORDERS)
    s = _sigma_array("sigma", sigma)
    return _out(_constants(order)[1] * s, sigma)


def l1_norm_of_derivative(order: int, sigma: ArrayLike) -> float | np.ndarray:
    """l1 norm ``int |d^n g(x; sigma)/dx^n| dx`` of a continuous 1-D Gaussian derivative.

    Parameters
    ----------
    order : int
        0 to 4 (:data:`DERIVATIVE_ORDERS`).
    sigma : float or array_like
        Scale (standard deviation, in pixels); > 0 for ``order >= 1`` (the norm diverges as
        ``sigma -> 0``), >= 0 for order 0.

    Returns
    -------
    float or numpy.ndarray
        ``l1_norm_constant(order) * sigma**-order`` (units pixel**-order); a float for scalar
        ``sigma``.
    """
    order = _check_order(order, DERIVATIVE_ORDERS)
    s = _sigma_array("sigma", sigma)
    if order >= 1 and (s == 0).any():
        raise ValueError(
            f"sigma must be > 0 for order {order} (the l1 norm grows like sigma**-{order} and "
            "diverges at sigma = 0); got 0.0"
        )
    with np.errstate(divide="ignore"):
        val = _constants(order)[0] * s ** (-float(order))
    return _out(np.asarray(val, dtype=np.float64), sigma)


def l1_norm_normalized_derivative(order: int, order_y: int | None = None) -> float:
    """l1 norm of a scale-normalised Gaussian derivative, a scale-invariant constant.

    Parameters
    ----------
    order : int
        Order along x, 0 to 4.
    order_y : int or None
        ``None`` for the 1-D kernel ``sigma**n d^n g/dx^n``; otherwise the order along y (0 to
        4) of the 2-D separable kernel ``sigma**(a + b) d^(a+b) g(x; sigma) g(y; sigma) /
        dx^a dy^b``.

    Returns
    -------
    float
        1-D: ``l1_norm_constant(order)`` (1, 0.79788, 0.96788, 1.51001, 2.80060 for orders 0-4),
        independent of sigma. 2-D: the product ``l1_norm_constant(a) l1_norm_constant(b)``
        (the absolute value of a separable kernel is separable), e.g. ``x**1 y**1`` -> ``2/pi``.
    """
    a = _check_order(order, DERIVATIVE_ORDERS, "order")
    if order_y is None:
        return _constants(a)[0]
    b = _check_order(order_y, DERIVATIVE_ORDERS, "order_y")
    return _constants(a)[0] * _constants(b)[0]


# --------------------------------------------------------------------------------------
# (e) DoG versus the five-point Laplacian in the semi-discrete scale space
# --------------------------------------------------------------------------------------


@functools.cache
def _dog_series(form: str, order: int) -> sp.Expr:
    """Series in alpha of ``[DoG - (-alpha nabla5 T(s))] / T(s)`` in the Fourier domain.

    With ``L = 2 - cos u - cos v`` the 2-D discrete Gaussian has the transform
    ``exp(-s L)`` and the five-point Laplacian the symbol ``-2 L``, so
    ``d/ds T = nabla5 T / 2``. The result is written in ``N`` (the symbol of nabla5,
    ``N = -2 L``).
    """
    lap = _fourier_symbol("lap")
    L = 2 - sp.cos(_U) - sp.cos(_V)
    if sp.simplify(lap + 2 * L) != 0:  # pragma: no cover - guards the derivation
        raise RuntimeError("unexpected Fourier symbol of the five-point Laplacian")
    Ls = sp.Symbol("L", positive=True)

    def T(var: sp.Expr) -> sp.Expr:
        return sp.exp(-var * Ls)

    # semi-discrete diffusion in the Fourier domain: d/ds T = (lap / 2) T
    if sp.simplify(sp.diff(T(_S), _S) - (-2 * Ls / 2) * T(_S)) != 0:  # pragma: no cover
        raise RuntimeError("the discrete Gaussian does not solve dT/ds = nabla5 T / 2")
    if form == "central":
        dog = T(_S - _ALPHA) - T(_S + _ALPHA)
    else:
        dog = T(_S) - T(_S + 2 * _ALPHA)
    # residual DoG - (-alpha nabla5 T(s)), with nabla5 -> -2 L, divided by T(s)
    ratio = sp.powsimp(sp.expand((dog + _ALPHA * (-2 * Ls) * T(_S)) / T(_S)), combine="exp")
    ratio = sp.simplify(ratio)
    series = sp.series(ratio, _ALPHA, 0, order + 1).removeO()
    return sp.expand(series.subs(Ls, -_NABLA / 2))


def dog_laplacian_residual_series(*, form: str = "central", order: int = 5) -> sp.Expr:
    """Residual of the DoG approximation of ``-alpha nabla5 T(.; s)``, as a series in alpha.

    Parameters
    ----------
    form : {"central", "forward"}, keyword-only
        ``"central"``: ``DoG = T(s - alpha) - T(s + alpha)``; ``"forward"``:
        ``DoG = T(s) - T(s + 2 alpha)``. ``T(.; s)`` is the 2-D discrete Gaussian of variance
        ``s`` per axis (``s = sigma**2``).
    order : int, keyword-only
        Highest power of alpha kept (1 to 12, default 5).

    Returns
    -------
    sympy.Expr
        A polynomial ``sum_j c_j alpha**j N**j`` in the symbols ``alpha`` and ``N``, where
        ``N**j`` stands for ``nabla5`` applied j times, such that
        ``DoG - (-alpha nabla5 T(s)) = (sum_j c_j alpha**j nabla5**j) T(s) + O(alpha**(order+1))``.
        Central: ``-alpha**3 N**3 / 24 - alpha**5 N**5 / 1920 + ...`` (second order in the
        approximation of ``dT/ds``, residual O(alpha**3)); forward:
        ``-alpha**2 N**2 / 2 - alpha**3 N**3 / 6 - ...`` (residual O(alpha**2)).

    Notes
    -----
    Derived in the Fourier domain: ``T(s)`` has the transform ``exp(-s (2 - cos u - cos v))``
    and ``nabla5`` the symbol ``2 cos u + 2 cos v - 4`` (:func:`fourier_symbol`), so
    ``dT/ds = nabla5 T / 2`` (each axis: ``delta_xx / 2``) and
    ``T(s) - T(s + ds) = -(ds/2) nabla5 T(s) + O(ds**2)``.
    """
    check_choice("form", form, DOG_FORMS)
    order = _check_order(order, tuple(range(1, 13)), "order")
    return _dog_series(form, order)


class DogParameters(NamedTuple):
    """Scales of a DoG ``T(.; sigma_1) - T(.; sigma_2)`` (standard deviations, per axis)."""

    sigma_1: float | np.ndarray
    sigma_2: float | np.ndarray


def dog_parameters_for_mk7(
    sigma: ArrayLike, alpha: ArrayLike, *, form: str = "central"
) -> DogParameters:
    """DoG scales that approximate master key model 7, ``K - alpha nabla5 T(.; sigma, sigma)``.

    Parameters
    ----------
    sigma : float or array_like
        Scale of model 7 (standard deviation per axis, >= 0); ``s = sigma**2``.
    alpha : float or array_like
        Weight of the Laplacian (finite, any sign); broadcast against ``sigma``.
    form : {"central", "forward"}, keyword-only
        ``"central"`` (default): ``K - alpha nabla5 T(s) ~ K + T(s - alpha) - T(s + alpha)``,
        error O(alpha**3); needs ``|alpha| <= s``. ``"forward"``:
        ``K - alpha nabla5 T(s) ~ K + T(s) - T(s + 2 alpha)``, error O(alpha**2); needs
        ``s + 2 alpha >= 0``.

    Returns
    -------
    DogParameters
        ``(sigma_1, sigma_2)`` with ``model 7 ~ K + T(.; sigma_1) - T(.; sigma_2)``: central
        ``(sqrt(s - alpha), sqrt(s + alpha))``, forward ``(sigma, sqrt(s + 2 alpha))``. Floats
        when both inputs are scalars, else arrays of the broadcast shape.

    Raises
    ------
    ValueError
        When a DoG variance would be negative (e.g. the central form with ``alpha > s``: the
        paper's fit sigma 0.6754, alpha 0.5256 has ``s = 0.456 < alpha``, so only the forward
        form applies there), for bad ``form``, or negative/non-finite inputs.

    Notes
    -----
    From ``dT/ds = nabla5 T / 2``; see :func:`dog_laplacian_residual_series` for the error
    terms. The relation is a first/second-order expansion in ``alpha``, accurate only for
    ``alpha`` small against ``s``.
    """
    check_choice("form", form, DOG_FORMS)
    sig = _sigma_array("sigma", sigma)
    a = _finite_array("alpha", alpha, nonneg=False, what="the weight of the Laplacian")
    sig_b, a_b = np.broadcast_arrays(sig, a)
    s = sig_b**2
    if form == "central":
        s1, s2 = s - a_b, s + a_b
        need = "|alpha| <= sigma**2 for the central form"
    else:
        s1, s2 = s, s + 2 * a_b
        need = "alpha >= -sigma**2 / 2 for the forward form"
    bad = (s1 < 0) | (s2 < 0)
    if bad.any():
        i = tuple(np.argwhere(bad)[0]) if bad.ndim else ()
        raise ValueError(
            f"sigma and alpha give a negative DoG variance: need {need}; got sigma = "
            f"{float(sig_b[i])!r}, alpha = {float(a_b[i])!r} (sigma**2 = {float(s[i])!r})"
            + ("; use form='forward'" if form == "central" and float(a_b[i]) > 0 else "")
        )
    return DogParameters(_out(np.sqrt(s1), sigma, alpha), _out(np.sqrt(s2), sigma, alpha))


# --------------------------------------------------------------------------------------
# cache management
# --------------------------------------------------------------------------------------

_CACHED = {
    "stencil": _stencil_items,
    "fourier_symbol": _fourier_symbol,
    "taylor_expansion": _taylor_expansion,
    "weighted_variance_derivation": _weighted_variance_ab,
    "weighted_variance_expr": _weighted_variance_expr,
    "weighted_variance_lambdified": _weighted_variance_func,
    "weighted_variance_bound": _bound_factor,
    "weighted_variance_small_ratio": _small_ratio_factor,
    "inverse_derivation": _inverse_expr,
    "inverse_lambdified": _inverse_func,
    "self_weighting_factor": _self_factor,
    "abs_moments": _abs_moments,
    "derivative_constants": _constants,
    "dog_series": _dog_series,
}


def cache_info() -> dict[str, Any]:
    """``functools`` cache statistics of every cached sympy derivation.

    Returns
    -------
    dict
        Name -> :class:`functools._CacheInfo` (``hits``, ``misses``, ``maxsize``,
        ``currsize``). A repeated numerical call adds hits only.
    """
    return {name: func.cache_info() for name, func in _CACHED.items()}


def cache_clear() -> None:
    """Clear every cached derivation (the next call redoes the sympy work)."""
    for func in _CACHED.values():
        func.cache_clear()


# --------------------------------------------------------------------------------------
# (f) N-jets: exact responses to monomials, the steering identity and its discrete error
# --------------------------------------------------------------------------------------

_SX, _SY = sp.symbols("s_x s_y", nonnegative=True)  # variances along x and y
_THETA = sp.Symbol("theta", real=True)


@functools.cache
def _gaussian_moment(m: int, discrete: bool, axis: str) -> sp.Expr:
    """``E[X^m]`` of the discrete (``exp(s (cosh t - 1))``) or continuous Gaussian."""
    t = sp.Symbol("t")
    s = _SX if axis == "x" else _SY
    mgf = sp.exp(s * (sp.cosh(t) - 1)) if discrete else sp.exp(s * t**2 / 2)
    return sp.expand(sp.diff(mgf, t, m).subs(t, 0))


def _apply_difference(order: int, expr: sp.Expr, var: sp.Symbol, discrete: bool) -> sp.Expr:
    if order == 0:
        return expr
    if not discrete:
        return sp.diff(expr, var, order)
    return apply_stencil("x" * order, expr, x=var, y=sp.Dummy("other"))  # "x" .. "xxxx"


@functools.cache
def _njet_response(i: int, j: int, k: int, l: int, discrete: bool) -> sp.Expr:  # noqa: E741
    f = _X**k * _Y**l / (sp.factorial(k) * sp.factorial(l))
    g = sp.expand(_apply_difference(j, _apply_difference(i, f, _X, discrete), _Y, discrete))
    poly = sp.Poly(g, _X, _Y)
    total = sp.Integer(0)
    for (px, py), c in poly.terms():
        total += c * _gaussian_moment(px, discrete, "x") * _gaussian_moment(py, discrete, "y")
    return sp.expand(total)


def njet_monomial_response(
    i: int,
    j: int,
    k: int,
    l: int,
    *,
    discrete: bool = True,  # noqa: E741
) -> sp.Expr:
    """Exact response of the jet member ``delta_x^i delta_y^j T`` to ``x^k y^l / (k! l!)``.

    Parameters
    ----------
    i, j : int
        Difference orders along x and y (``i + j <= 4``; central differences, orders 3 and 4
        composed as in :mod:`scalespace_mk.scalespace.operators`).
    k, l : int
        Powers of the monomial (``>= 0``).
    discrete : bool
        True (default): the discrete analogue ``T`` with differences; False: the continuous
        Gaussian with derivatives (for comparison).

    Returns
    -------
    sympy.Expr
        In the variances ``s_x``, ``s_y`` (``s = sigma**2``): the convolution of the kernel
        with the monomial at the centre, ``sum_n h(n) f(-n)`` (the sign convention of
        :func:`scalespace_mk.scalespace.models.model_kernel`: ``dx`` gives +1 on ``x``). It
        is ``E[(delta_x^i delta_y^j f)(X, Y)]`` with ``X, Y`` independent with the kernel's
        law, whose moments come from its generating function ``exp(s (cosh t - 1))``
        (discrete: ``E X^2 = s``, ``E X^4 = s + 3 s^2``, ...) or ``exp(s t^2 / 2)``.

    Notes
    -----
    ``1`` when ``(k, l) = (i, j)``; ``0`` when ``k < i`` or ``l < j`` or ``k - i``/``l - j``
    is odd; otherwise the variance terms. The discrete kernel has extra terms that the
    continuous one lacks: e.g. ``delta_x T`` on ``x^3 / 6`` gives ``s_x / 2 + 1/6`` against
    ``s_x / 2``.

    Examples
    --------
    >>> njet_monomial_response(1, 0, 3, 0)
    s_x/2 + 1/6
    >>> njet_monomial_response(1, 0, 3, 0, discrete=False)
    s_x/2
    """
    for name, v, hi in (("i", i, 4), ("j", j, 4), ("k", k, 12), ("l", l, 12)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 0 <= v <= hi:
            raise ValueError(f"{name} must be an integer from 0 to {hi}; got {v!r}")
    if i + j > 4:
        raise ValueError(f"i + j must be at most 4 (the N-jets go to N = 4); got {i + j}")
    return _njet_response(int(i), int(j), int(k), int(l), bool(discrete))


def _gaussian_2d(x: sp.Expr, y: sp.Expr) -> sp.Expr:
    return sp.exp(-(x**2 + y**2) / (2 * _S)) / (2 * sp.pi * _S)


@functools.cache
def _steering(order: int) -> sp.Expr:
    u = _X * sp.cos(_THETA) + _Y * sp.sin(_THETA)
    v = -_X * sp.sin(_THETA) + _Y * sp.cos(_THETA)
    a, b = sp.symbols("a b", real=True)
    # the x-derivative kernel rotated by theta: (d^n g / da^n)(u, v)
    rotated = sp.diff(_gaussian_2d(a, b), a, order).subs({a: u, b: v}, simultaneous=True)
    g = _gaussian_2d(_X, _Y)
    c, s = sp.cos(_THETA), sp.sin(_THETA)
    if order == 1:
        steered = c * sp.diff(g, _X) + s * sp.diff(g, _Y)
    else:
        steered = (
            c**2 * sp.diff(g, _X, 2) + 2 * c * s * sp.diff(g, _X, _Y) + s**2 * sp.diff(g, _Y, 2)
        )
    return rotated - steered


def steering_identity(order: int) -> sp.Expr:
    """The steering identity of the continuous Gaussian, as ``rotated - steered``.

    Parameters
    ----------
    order : int
        1: ``(d_x g)(R x) = cos(theta) d_x g + sin(theta) d_y g``; 2: ``(d_xx g)(R x) =
        cos^2 d_xx g + 2 cos sin d_xy g + sin^2 d_yy g``, with ``R`` the rotation by
        ``-theta`` (the kernel turned counter-clockwise by theta, y up) and ``g`` the
        isotropic Gaussian of variance ``s``.

    Returns
    -------
    sympy.Expr
        In ``x``, ``y``, ``s``, ``theta``; it simplifies to 0 (tested): steering the
        continuous jet is exact. For the discrete jet see :func:`steering_error`.
    """
    return _steering(_check_order(order, (1, 2)))


@functools.cache
def _steering_symbols(order: int) -> Callable[..., Any]:
    """Lambdified ``(steered, rotated)`` Fourier symbols of the discrete directional jet."""
    u, v = _U, _V
    t_hat = sp.exp(_S * (sp.cos(u) - 1) + _S * (sp.cos(v) - 1))  # symbol of T(s) (x) T(s)
    c, s = sp.cos(_THETA), sp.sin(_THETA)
    wu = c * u + s * v  # the frequency along the direction theta
    wv = -s * u + c * v
    rot = {u: wu, v: wv}
    if order == 1:
        dx = fourier_symbol("x")  # i sin(u)
        steered = (c * dx + s * dx.subs(u, v)) * t_hat
        rotated = (dx * t_hat).subs(rot, simultaneous=True)
    else:
        dxx = fourier_symbol("xx")
        dx = fourier_symbol("x")
        steered = (c**2 * dxx + 2 * c * s * dx * dx.subs(u, v) + s**2 * dxx.subs(u, v)) * t_hat
        rotated = (dxx * t_hat).subs(rot, simultaneous=True)
    return sp.lambdify((u, v, _S, _THETA), (steered, rotated), _LAMBDIFY_MODULES)


def steering_error(order: int, sigma: ArrayLike, theta: ArrayLike, *, radial: int = 48) -> Any:
    """Relative error of steering the discrete jet: ``||S_theta - S_0 o R|| / ||S_0 o R||``.

    Parameters
    ----------
    order : int
        1 (``delta_phi T``) or 2 (``delta_phiphi T``).
    sigma : float or array_like
        Standard deviation(s) of the discrete Gaussian (``s = sigma**2``, > 0).
    theta : float or array_like
        Angle(s) in radians (counter-clockwise from +x, y up); broadcast with sigma.
    radial : int
        Gauss-Legendre nodes in the radius (and 4 x that many angles).

    Returns
    -------
    float or numpy.ndarray
        With ``S_theta(w)`` the Fourier symbol of the steered kernel
        ``cos delta_x T + sin delta_y T`` (order 2: ``cos^2 delta_xx + 2 cos sin
        delta_x delta_y + sin^2 delta_yy``, times ``T``) and ``S_0 o R`` the symbol of the
        axis kernel ``delta_x T`` (``delta_xx T``) turned by theta, the relative L2 distance
        over the Nyquist disk ``|w| <= pi``. Zero at multiples of ``pi / 2``, and zero for
        every theta in the continuous limit (:func:`steering_identity`). The discrete
        kernels are not rotation-covariant: the error is largest near ``pi / 4`` and falls
        with sigma as ``T`` suppresses the high frequencies where the lattice is anisotropic.
    """
    order = _check_order(order, (1, 2))
    sig = _finite_array("sigma", sigma, nonneg=True, what="a standard deviation")
    if np.any(sig == 0):
        raise ValueError("sigma must be > 0 (at sigma = 0 the kernel is a bare difference)")
    th = _finite_array("theta", theta, nonneg=False, what="radians")
    if isinstance(radial, bool) or not isinstance(radial, int | np.integer) or radial < 4:
        raise ValueError(f"radial must be an integer >= 4; got {radial!r}")
    sig_b, th_b = np.broadcast_arrays(sig, th)
    x, wx = np.polynomial.legendre.leggauss(int(radial))
    r = (x + 1) * np.pi / 2
    wr = wx * np.pi / 2 * r  # area element r dr
    phi = np.arange(4 * radial) * (2 * np.pi / (4 * radial))
    uu = (r[:, None] * np.cos(phi)[None, :]).reshape(-1)
    vv = (r[:, None] * np.sin(phi)[None, :]).reshape(-1)
    weights = np.repeat(wr, len(phi))
    func = _steering_symbols(order)
    out = np.empty(sig_b.shape)
    for idx in np.ndindex(sig_b.shape):
        steered, rotated = func(uu, vv, sig_b[idx] ** 2, th_b[idx])
        diff = np.abs(np.asarray(steered - rotated, dtype=complex)) ** 2
        ref = np.abs(np.asarray(rotated, dtype=complex)) ** 2
        out[idx] = np.sqrt((weights * diff).sum() / (weights * ref).sum())
    return _out(out, sigma, theta)


_CACHED.update(
    {
        "gaussian_moment": _gaussian_moment,
        "njet_response": _njet_response,
        "steering": _steering,
        "steering_symbols": _steering_symbols,
    }
)
