"""Tests of scalespace.symbolic against sympy, scipy quadrature and ive-built kernels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.polynomial import hermite_e
from scipy import integrate, optimize, special

from scalespace_mk.scalespace import symbolic as S

X, Y = sp.symbols("x y", real=True)
H = sp.Symbol("h", positive=True)
F = sp.Function("f")
CENTRAL = {"x": 1, "xx": 2, "xxx": 3, "xxxx": 4}
ONE_D = ("x", "xx", "xxx", "xxxx", "x+", "x-")


# ----------------------------------------------------------------------------- (a) stencils


def test_stencil_exact_taps() -> None:
    half = sp.Rational(1, 2)
    assert S.stencil("x") == {-1: -half, 1: half}
    assert S.stencil("xx") == {-1: 1, 0: -2, 1: 1}
    assert S.stencil("xxx") == {-2: -half, -1: 1, 1: -1, 2: half}
    assert S.stencil("xxxx") == {-2: 1, -1: -4, 0: 6, 1: -4, 2: 1}
    assert S.stencil("x+") == {0: -1, 1: 1}
    assert S.stencil("x-") == {-1: -1, 0: 1}
    assert S.stencil("lap") == {(0, -1): 1, (-1, 0): 1, (0, 0): -4, (1, 0): 1, (0, 1): 1}
    assert all(isinstance(c, sp.Rational) for c in S.stencil("xxx").values())


def _apply_by_hand(name: str, expr: sp.Expr) -> sp.Expr:
    """Correlation sum_k c_k f(x + k), written out here independently of apply_stencil."""
    total = sp.Integer(0)
    for off, c in S.stencil(name).items():
        kx, ky = off if isinstance(off, tuple) else (off, 0)
        total += c * expr.subs({X: X + kx, Y: Y + ky}, simultaneous=True)
    return sp.expand(total)


@pytest.mark.parametrize("name", ["x", "xx", "xxx", "xxxx", "x+", "x-"])
def test_monomials_exact(name: str) -> None:
    n = S.STENCIL_ORDERS[name]
    # the order-n operator maps x^n / n! to exactly 1 and annihilates lower degrees
    assert _apply_by_hand(name, X**n / sp.factorial(n)) == 1
    for m in range(n):
        assert _apply_by_hand(name, X**m / sp.factorial(m)) == 0
    assert S.apply_stencil(name, X ** (n + 1) / 7) == _apply_by_hand(name, X ** (n + 1) / 7)


def test_central_stencils_are_symmetric_in_degree() -> None:
    # central differences map x^(n+1)/(n+1)! to x exactly (no half-grid offset)
    for name, n in CENTRAL.items():
        assert _apply_by_hand(name, X ** (n + 1) / sp.factorial(n + 1)) == X


def test_half_grid_differences() -> None:
    assert S.apply_stencil("x+", X**2 / 2) == X + sp.Rational(1, 2)
    assert S.apply_stencil("x-", X**2 / 2) == X - sp.Rational(1, 2)
    assert _apply_by_hand("x+", X**2 / 2) == X + sp.Rational(1, 2)


def test_laplacian_on_monomials() -> None:
    assert S.apply_stencil("lap", (X**2 + Y**2) / 2) == 2
    assert S.apply_stencil("lap", X**2 / 2) == 1
    for expr in (sp.Integer(1), X, Y, X * Y, X**2 - Y**2, X**3 - 3 * X * Y**2):
        assert S.apply_stencil("lap", expr) == 0  # harmonic polynomials up to degree 3
    assert _apply_by_hand("lap", X**2 * Y**2) == S.apply_stencil("lap", X**2 * Y**2)


def test_leading_error_terms() -> None:
    fx = F(X)
    assert sp.simplify(S.leading_error_term("xx") - H**2 * sp.Derivative(fx, (X, 4)) / 12) == 0
    assert sp.simplify(S.leading_error_term("x") - H**2 * sp.Derivative(fx, (X, 3)) / 6) == 0
    assert sp.simplify(S.leading_error_term("x+") - H * sp.Derivative(fx, (X, 2)) / 2) == 0
    fxy = F(X, Y)
    lap_err = H**2 * (sp.Derivative(fxy, (X, 4)) + sp.Derivative(fxy, (Y, 4))) / 12
    assert sp.simplify(S.leading_error_term("lap") - lap_err) == 0


@pytest.mark.parametrize("name", ONE_D)
def test_leading_error_against_series(name: str) -> None:
    # independent: sympy series of the stencil applied to sin(x + k h), minus sin^(n)
    n = S.STENCIL_ORDERS[name]
    applied = sum(c * sp.sin(X + k * H) for k, c in S.stencil(name).items()) / H**n
    err = sp.series(applied - sp.diff(sp.sin(X), X, n), H, 0, 3).removeO()
    predicted = S.leading_error_term(name).subs(F(X), sp.sin(X)).doit()
    power = sp.Poly(predicted, H).degree()
    assert sp.simplify(err.coeff(H, power) - predicted.coeff(H, power)) == 0
    for lower in range(power):
        assert sp.simplify(err.coeff(H, lower)) == 0


@pytest.mark.parametrize("name", ONE_D)
def test_taylor_expansion_against_exp(name: str) -> None:
    n = S.STENCIL_ORDERS[name]
    # sum_k c_k exp(x + k h) / h^n = exp(x) * (sum_k c_k exp(k h)) / h^n
    inner = sum(c * sp.exp(k * H) for k, c in S.stencil(name).items())
    series = sp.exp(X) * sp.series(inner, H, 0, 5).removeO() / H**n
    taylor = S.taylor_expansion(name, order=4).subs(F(X), sp.exp(X)).doit()
    assert sp.simplify(sp.expand(series - taylor)) == 0


def test_stencil_array_and_mask() -> None:
    from scalespace_mk.scalespace.operators import difference_stencil

    for name in ONE_D:
        offsets, coeffs = S.stencil_array(name)
        assert offsets.dtype == np.int64 and coeffs.dtype == np.float64
        exact = S.stencil(name)
        assert offsets.tolist() == sorted(exact)
        np.testing.assert_array_equal(coeffs, [float(exact[k]) for k in sorted(exact)])
        np.testing.assert_array_equal(S.stencil_mask(name), difference_stencil(name))
    offsets, coeffs = S.stencil_array("lap")
    assert offsets.shape == (5, 2)
    np.testing.assert_array_equal(
        S.stencil_mask("lap"), [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]
    )
    assert S.stencil_mask("x+").tolist() == [0.0, -1.0, 1.0]


def test_fourier_symbols() -> None:
    u, v = sp.symbols("u v", real=True)
    assert sp.simplify(S.fourier_symbol("xx") - (2 * sp.cos(u) - 2)) == 0
    assert sp.simplify(S.fourier_symbol("x") - sp.I * sp.sin(u)) == 0
    assert sp.simplify(S.fourier_symbol("lap") - (2 * sp.cos(u) + 2 * sp.cos(v) - 4)) == 0
    rng = np.random.default_rng(0)
    for name in ONE_D:
        offsets, coeffs = S.stencil_array(name)
        f = sp.lambdify(u, S.fourier_symbol(name), "numpy")
        for w in rng.uniform(-np.pi, np.pi, 5):
            direct = np.sum(coeffs * np.exp(1j * offsets * w))
            assert abs(complex(f(w)) - direct) < 1e-13


def test_stencil_bad_names() -> None:
    with pytest.raises(ValueError, match="name must be one of 'x', 'xx'.*got 'xy'"):
        S.stencil("xy")
    with pytest.raises(ValueError, match="name must be one of"):
        S.stencil_array(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="order must be one of 0, 1"):
        S.taylor_expansion("x", order=13)


# ------------------------------------------------------------------ (b) weighted variances


def _dn_gauss(n: int, x: np.ndarray | float, sigma: float) -> np.ndarray | float:
    """d^n/dx^n of the normalised Gaussian, via Hermite polynomials (numpy)."""
    z = np.asarray(x) / sigma
    coef = np.zeros(n + 1)
    coef[n] = 1.0
    g = np.exp(-(z**2) / 2) / (math.sqrt(2 * math.pi) * sigma)
    return (-1) ** n * sigma ** (-n) * hermite_e.hermeval(z, coef) * g


def _zeros(n: int, sigma: float) -> list[float]:
    coef = np.zeros(n + 1)
    coef[n] = 1.0
    return sorted(float(z) * sigma for z in hermite_e.hermeroots(coef) if z > 0) if n else []


def _quad_half_line(f, breaks: list[float]) -> float:
    edges = [0.0, *sorted(breaks), np.inf]
    return sum(
        integrate.quad(f, lo, hi, epsabs=0, epsrel=1e-13, limit=200)[0]
        for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        if hi > lo
    )


def _weighted_variance_quad(n: int, sigma: float, sigma_ref: float) -> float:
    def dens(x: float) -> float:
        return abs(_dn_gauss(n, x, sigma) * _dn_gauss(n, x, sigma_ref))

    breaks = _zeros(n, sigma) + _zeros(n, sigma_ref)
    return _quad_half_line(lambda x: x * x * dens(x), breaks) / _quad_half_line(dens, breaks)


@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize(
    ("sigma", "sigma_ref"), [(0.3, 1.0), (1.0, 1.0), (1.7, 1.0), (0.5, 1 / math.sqrt(2)), (4, 0.7)]
)
def test_weighted_variance_against_quad(order: int, sigma: float, sigma_ref: float) -> None:
    got = S.weighted_variance(order, sigma, sigma_ref)
    assert isinstance(got, float)
    assert got == pytest.approx(_weighted_variance_quad(order, sigma, sigma_ref), rel=1e-11)


def test_weighted_variance_closed_forms() -> None:
    s, r = sp.symbols("sigma sigma_ref", positive=True)
    base = s**2 * r**2 / (s**2 + r**2)
    assert sp.simplify(S.weighted_variance_expr(0) - base) == 0
    assert sp.simplify(S.weighted_variance_expr(1) - 3 * base) == 0
    # order 2 at sigma = sigma_ref: (x^2 - s^2)^2 exp(-x^2/s^2) gives 7 s^2 / 6
    assert S.weighted_variance_expr(2).subs(r, s).subs(s, 1.3).evalf() == pytest.approx(
        7 * 1.3**2 / 6, rel=1e-14
    )


@given(sigma=st.floats(0.01, 30.0))
@settings(max_examples=40)
def test_self_weighting_is_the_paper_relation(sigma: float) -> None:
    v0 = S.weighted_variance(0, sigma, sigma)
    v1 = S.weighted_variance(1, sigma, sigma)
    v2 = S.weighted_variance(2, sigma, sigma)
    assert v0 == pytest.approx(sigma**2 / 2, rel=1e-12)
    assert v1 == pytest.approx(3 * sigma**2 / 2, rel=1e-12)
    assert v2 == pytest.approx(7 * sigma**2 / 6, rel=1e-12)
    # the paper's method A: sqrt(2 V) on a smoothing axis, sqrt(2 V / 3) on a derivative axis
    assert S.sigma_from_self_weighted_variance(0, v0) == pytest.approx(math.sqrt(2 * v0), rel=1e-12)
    assert S.sigma_from_self_weighted_variance(1, v1) == pytest.approx(
        math.sqrt(2 * v1 / 3), rel=1e-12
    )
    assert S.sigma_from_self_weighted_variance(2, v2) == pytest.approx(sigma, rel=1e-12)
    # and the general inverse with sigma_ref = sigma gives the same
    assert S.sigma_from_weighted_variance(0, v0, sigma) == pytest.approx(sigma, rel=1e-12)
    assert S.sigma_from_weighted_variance(1, v1, sigma) == pytest.approx(sigma, rel=1e-12)


@given(
    order=st.sampled_from([0, 1]),
    sigma_ref=st.floats(0.05, 20.0),
    log_ratio=st.floats(-3.0, 3.0),
)
@settings(max_examples=80)
def test_inverse_of_forward(order: int, sigma_ref: float, log_ratio: float) -> None:
    sigma = sigma_ref * math.exp(log_ratio)
    v = S.weighted_variance(order, sigma, sigma_ref)
    assert v < S.weighted_variance_bound(order, sigma_ref)
    assert S.sigma_from_weighted_variance(order, v, sigma_ref) == pytest.approx(sigma, rel=1e-9)


def test_bounds_and_monotonicity() -> None:
    assert S.weighted_variance_bound(0, 2.0) == pytest.approx(4.0, rel=1e-15)
    assert S.weighted_variance_bound(1, 2.0) == pytest.approx(12.0, rel=1e-15)
    sig = np.logspace(-2, 4, 500)
    for order, factor in ((0, 1.0), (1, 3.0)):
        v = S.weighted_variance(order, sig, 1.0)
        assert np.all(np.diff(v) > 0) and v[-1] < factor
        assert v[-1] == pytest.approx(factor, rel=1e-7)
        just_below = np.nextafter(factor, 0.0)
        assert S.sigma_from_weighted_variance(order, just_below, 1.0) > 1e6
        with pytest.raises(ValueError, match=r"V must be below the bound.*got V = .*bound ="):
            S.sigma_from_weighted_variance(order, factor, 1.0)
        with pytest.raises(ValueError, match="V must be below the bound"):
            S.sigma_from_weighted_variance(order, [0.1, 2 * factor], 1.0)


def test_inverse_extreme_scales() -> None:
    for sigma, ref in ((1e-150, 1e150), (1e150, 1e150), (1e-100, 1e-100), (2e100, 1e100)):
        for order in (0, 1):
            v = S.weighted_variance(order, sigma, ref)
            assert S.sigma_from_weighted_variance(order, v, ref) == pytest.approx(sigma, rel=1e-12)


def test_order2_is_not_invertible() -> None:
    def v(x: float) -> float:
        return S.weighted_variance(2, x, 1.0)

    peak = optimize.minimize_scalar(
        lambda x: -v(x), bounds=(1.0, 1.8), method="bounded", options={"xatol": 1e-8}
    )
    dip = optimize.minimize_scalar(v, bounds=(1.8, 3.5), method="bounded", options={"xatol": 1e-8})
    # the values quoted in the docstring
    assert peak.x == pytest.approx(1.324, abs=1e-3) and -peak.fun == pytest.approx(1.348, abs=1e-3)
    assert dip.x == pytest.approx(2.324, abs=1e-3) and dip.fun == pytest.approx(0.961, abs=1e-3)
    with pytest.raises(ValueError, match="not monotone"):
        S.sigma_from_weighted_variance(2, 1.0, 1.0)


def test_weighted_variance_vectorised_and_zero() -> None:
    sig = np.array([[0.0], [0.4], [1.0]])
    ref = np.array([0.0, 0.5, 1.0, 3.0])
    for order in (0, 1, 2):
        out = S.weighted_variance(order, sig, ref)
        assert out.shape == (3, 4)
        for i in range(3):
            for j in range(4):
                assert out[i, j] == S.weighted_variance(order, float(sig[i, 0]), float(ref[j]))
        assert np.all(out[0] == 0) and np.all(out[:, 0] == 0)
    v = np.array([0.0, 0.1, 0.9])
    inv = S.sigma_from_weighted_variance(0, v, 1.0)
    assert inv.shape == (3,) and inv[0] == 0
    np.testing.assert_allclose(S.weighted_variance(0, inv, 1.0), v, rtol=1e-13, atol=0)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_weighted_variance_extreme_ratios(order: int) -> None:
    # V = min**2 * q(min / max); q is continuous across the switch to its limit at 1e-8
    limit = (1.0, 3.0, float(S.spread_constant(2)) ** 2)[order]
    q = [S.weighted_variance(order, rho, 1.0) / rho**2 for rho in (1.01e-8, 0.99e-8, 1e-4)]
    assert q[0] == pytest.approx(limit, rel=1e-14) and q[1] == pytest.approx(limit, rel=1e-14)
    assert q[2] == pytest.approx(limit, rel=1e-6)
    self_factor = (0.5, 1.5, 7 / 6)[order]
    for lo, hi in ((1e-80, 1.0), (1e-100, 1e100), (3.0, 1e150), (1e120, 1e120)):
        expected = lo**2 * (self_factor if lo == hi else limit)
        for s, r in ((lo, hi), (hi, lo)):  # symmetric in (sigma, sigma_ref)
            assert S.weighted_variance(order, s, r) == pytest.approx(expected, rel=1e-12)


def test_two_d_separable_case() -> None:
    # 2-D: |g_x(x; sx) g(y; sy)| weighted by |g_x(x; r) g(y; r)|: covariance is diagonal with
    # the 1-D relations of the order of each axis (Riemann sum, spectrally accurate here).
    sx, sy, r = 0.8, 1.3, 1.0
    t = np.arange(-10, 10 + 1e-9, 0.05)  # the weighted density is smooth: x**2 * Gaussian
    xx, yy = np.meshgrid(t, t, indexing="xy")
    w = np.abs(_dn_gauss(1, xx, sx) * _dn_gauss(0, yy, sy))
    w *= np.abs(_dn_gauss(1, xx, r) * _dn_gauss(0, yy, r))
    w /= w.sum()
    mx, my = (w * xx).sum(), (w * yy).sum()
    vxx = (w * xx**2).sum() - mx**2
    vyy = (w * yy**2).sum() - my**2
    vxy = (w * xx * yy).sum() - mx * my
    assert abs(mx) < 1e-12 and abs(my) < 1e-12 and abs(vxy) < 1e-12
    assert vxx == pytest.approx(S.weighted_variance(1, sx, r), rel=1e-6)
    assert vyy == pytest.approx(S.weighted_variance(0, sy, r), rel=1e-9)


def test_weighted_variance_bad_input() -> None:
    with pytest.raises(ValueError, match="order must be one of 0, 1, 2; got 3"):
        S.weighted_variance(3, 1.0, 1.0)
    with pytest.raises(ValueError, match="order must be one of"):
        S.weighted_variance(True, 1.0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        S.weighted_variance(0, -1.0, 1.0)
    with pytest.raises(ValueError, match="sigma_ref must be finite.*NaN"):
        S.weighted_variance(0, 1.0, [1.0, float("nan")])
    with pytest.raises(ValueError, match="sigma_ref must be > 0"):
        S.sigma_from_weighted_variance(0, 0.1, 0.0)
    with pytest.raises(ValueError, match="V must be finite and >= 0"):
        S.sigma_from_weighted_variance(1, -0.1, 1.0)
    with pytest.raises(ValueError, match="V must be finite"):
        S.sigma_from_self_weighted_variance(0, float("nan"))
    with pytest.raises(ValueError, match="order must be one of 0, 1; got 4"):
        S.sigma_from_weighted_variance(4, 0.1, 1.0)


# ------------------------------------------------------------- (c), (d) spreads and l1 norms


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("sigma", [0.4, 1.0, 2.3])
def test_spread_and_l1_against_quad(order: int, sigma: float) -> None:
    def dens(x: float) -> float:
        return abs(_dn_gauss(order, x, sigma))

    breaks = _zeros(order, sigma)
    l1 = 2 * _quad_half_line(dens, breaks)
    second = 2 * _quad_half_line(lambda x: x * x * dens(x), breaks)
    assert S.l1_norm_of_derivative(order, sigma) == pytest.approx(l1, rel=1e-12)
    assert S.spread_of_derivative(order, sigma) == pytest.approx(math.sqrt(second / l1), rel=1e-12)
    assert S.l1_norm_normalized_derivative(order) == pytest.approx(sigma**order * l1, rel=1e-12)


def test_exact_constants() -> None:
    assert S.spread_constant(0) == 1
    assert sp.simplify(S.spread_constant(1) - sp.sqrt(2)) == 0
    assert S.l1_norm_constant(0) == 1
    assert sp.simplify(S.l1_norm_constant(1) - sp.sqrt(2 / sp.pi)) == 0
    # order 2: 2 * |g_x(sigma)| at the inflection points = 4 g(1) = 2 sqrt(2/pi) e^(-1/2)
    expected = 2 * sp.sqrt(2 / sp.pi) * sp.exp(-sp.Rational(1, 2))
    assert sp.simplify(S.l1_norm_constant(2) - expected) == 0
    # order 3: 2 (|g_xx(0)| + 2 |g_xx(sqrt 3)|) in closed form
    g2 = sp.diff(sp.exp(-(X**2) / 2) / sp.sqrt(2 * sp.pi), X, 2)
    expected3 = 2 * (-g2.subs(X, 0) + 2 * g2.subs(X, sp.sqrt(3)))
    assert float(S.l1_norm_constant(3)) == pytest.approx(float(expected3), rel=1e-15)
    assert S.spread_of_derivative(1, 2.0) == pytest.approx(2 * math.sqrt(2), rel=1e-15)


@given(sigma=st.floats(0.05, 50.0), order=st.sampled_from([0, 1, 2, 3, 4]))
@settings(max_examples=40)
def test_normalised_l1_is_scale_invariant(sigma: float, order: int) -> None:
    val = sigma**order * S.l1_norm_of_derivative(order, sigma)
    assert val == pytest.approx(S.l1_norm_normalized_derivative(order), rel=1e-12)
    assert S.spread_of_derivative(order, sigma) == pytest.approx(
        sigma * float(S.spread_constant(order)), rel=1e-13
    )


def test_normalised_l1_two_d() -> None:
    # |sigma^2 g_x(x) g_y(y)| over the plane: 4 x the integral over one quadrant
    sigma = 1.7

    def kernel(y: float, x: float) -> float:
        return sigma**2 * abs(_dn_gauss(1, x, sigma) * _dn_gauss(1, y, sigma))

    quadrant = integrate.dblquad(kernel, 0, np.inf, 0, np.inf, epsabs=0, epsrel=1e-12)[0]
    assert S.l1_norm_normalized_derivative(1, 1) == pytest.approx(4 * quadrant, rel=1e-10)
    assert S.l1_norm_normalized_derivative(1, 1) == pytest.approx(2 / math.pi, rel=1e-14)
    prod = S.l1_norm_normalized_derivative(2) * S.l1_norm_normalized_derivative(3)
    assert S.l1_norm_normalized_derivative(2, 3) == pytest.approx(prod, rel=1e-15)
    assert S.l1_norm_normalized_derivative(0, 0) == pytest.approx(1.0, rel=1e-15)


def test_spread_vectorised_and_bad_input() -> None:
    sig = np.array([0.0, 0.5, 2.0])
    np.testing.assert_allclose(S.spread_of_derivative(1, sig), math.sqrt(2) * sig, rtol=1e-15)
    assert S.l1_norm_of_derivative(0, 0.0) == 1.0
    with pytest.raises(ValueError, match="sigma must be > 0 for order 2"):
        S.l1_norm_of_derivative(2, [1.0, 0.0])
    with pytest.raises(ValueError, match="order must be one of 0, 1, 2, 3, 4; got 5"):
        S.spread_of_derivative(5, 1.0)
    with pytest.raises(ValueError, match="order_y must be one of"):
        S.l1_norm_normalized_derivative(1, -1)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        S.spread_of_derivative(0, float("nan"))


# ------------------------------------------------------------ (e) DoG versus the Laplacian


def _disc_gauss_1d(s: float, radius: int) -> np.ndarray:
    n = np.arange(-radius, radius + 1)
    return special.ive(np.abs(n), s) if s > 0 else (n == 0).astype(float)


def _disc_gauss_2d(s: float, radius: int) -> np.ndarray:
    t = _disc_gauss_1d(s, radius)
    return np.outer(t, t)


def _lap5(a: np.ndarray) -> np.ndarray:
    p = np.pad(a, 1)
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * a


def test_semidiscrete_diffusion_equation() -> None:
    # d/ds [exp(-s) I_n(s)] = (T(n-1) - 2 T(n) + T(n+1)) / 2 (the exact derivative in s)
    n = np.arange(-15, 16)
    for s in (0.3, 1.0, 2.5):
        t = special.ive(np.abs(n), s)
        dt = np.exp(-s) * special.ivp(np.abs(n), s) - t
        rhs = np.zeros_like(t)
        rhs[1:-1] = (t[:-2] - 2 * t[1:-1] + t[2:]) / 2
        np.testing.assert_allclose(dt[1:-1], rhs[1:-1], rtol=0, atol=1e-15)
    # and symbolically: the 2-D transform exp(-s (2 - cos u - cos v)) solves dT/ds = lap T / 2
    s_, u, v = sp.Symbol("s", positive=True), *sp.symbols("u v", real=True)
    that = sp.exp(-s_ * (2 - sp.cos(u) - sp.cos(v)))
    assert sp.simplify(sp.diff(that, s_) - S.fourier_symbol("lap") * that / 2) == 0


def test_residual_series_coefficients() -> None:
    a, n = sp.Symbol("alpha", real=True), sp.Symbol("N", real=True)
    central = S.dog_laplacian_residual_series(form="central", order=5)
    forward = S.dog_laplacian_residual_series(form="forward", order=3)
    assert sp.expand(central - (-(a**3) * n**3 / 24 - a**5 * n**5 / 1920)) == 0
    assert sp.expand(forward - (-(a**2) * n**2 / 2 - a**3 * n**3 / 6)) == 0
    # independent: 1 - exp(alpha N) + alpha N and -2 sinh(alpha N / 2) + alpha N
    fwd_ref = sp.series(1 - sp.exp(a * n) + a * n, a, 0, 4).removeO()
    cen_ref = sp.series(-2 * sp.sinh(a * n / 2) + a * n, a, 0, 6).removeO()
    assert sp.expand(forward - fwd_ref) == 0 and sp.expand(central - cen_ref) == 0


@pytest.mark.parametrize(("form", "expected_ratio"), [("forward", 4.0), ("central", 8.0)])
def test_dog_residual_order(form: str, expected_ratio: float) -> None:
    sigma, radius = 1.2, 24
    t_s = _disc_gauss_2d(sigma**2, radius)
    lap_powers = [t_s]
    for _ in range(6):
        lap_powers.append(_lap5(lap_powers[-1]))
    series = S.dog_laplacian_residual_series(form=form, order=6)
    a_sym, n_sym = sp.Symbol("alpha", real=True), sp.Symbol("N", real=True)
    norms = []
    for alpha in (0.08, 0.04, 0.02):
        s1, s2 = S.dog_parameters_for_mk7(sigma, alpha, form=form)
        dog = _disc_gauss_2d(s1**2, radius) - _disc_gauss_2d(s2**2, radius)
        residual = dog - (-alpha * lap_powers[1])
        norms.append(np.linalg.norm(residual))
        # the series predicts the residual up to O(alpha^7)
        predicted = sum(
            float(series.coeff(a_sym, j).coeff(n_sym, j)) * alpha**j * lap_powers[j]
            for j in range(1, 7)
        )
        assert np.linalg.norm(residual - predicted) < 1e-3 * norms[-1]
    ratios = [norms[0] / norms[1], norms[1] / norms[2]]
    for r in ratios:
        assert r == pytest.approx(expected_ratio, rel=0.05)
    # and the ratio converges to its limit as alpha -> 0
    assert abs(ratios[1] - expected_ratio) < abs(ratios[0] - expected_ratio)


def test_dog_parameters_values() -> None:
    p = S.dog_parameters_for_mk7(1.5, 0.3)
    assert p.sigma_1 == pytest.approx(math.sqrt(2.25 - 0.3), rel=1e-15)
    assert p.sigma_2 == pytest.approx(math.sqrt(2.25 + 0.3), rel=1e-15)
    q = S.dog_parameters_for_mk7(1.5, 0.3, form="forward")
    assert q == (1.5, pytest.approx(math.sqrt(2.25 + 0.6), rel=1e-15))
    assert S.dog_parameters_for_mk7(0.7, 0.0) == (pytest.approx(0.7), pytest.approx(0.7))
    out = S.dog_parameters_for_mk7(np.array([1.0, 2.0]), np.array([[0.1], [0.5]]))
    assert out.sigma_1.shape == (2, 2)
    assert out.sigma_1[1, 0] == pytest.approx(math.sqrt(0.5), rel=1e-15)
    # the paper's fit (sigma 0.6754, alpha 0.5256) has alpha > sigma**2: central form refused
    with pytest.raises(ValueError, match=r"\|alpha\| <= sigma\*\*2.*alpha = 0.5256.*forward"):
        S.dog_parameters_for_mk7(0.6754, 0.5256)
    fwd = S.dog_parameters_for_mk7(0.6754, 0.5256, form="forward")
    assert fwd.sigma_2 == pytest.approx(math.sqrt(0.6754**2 + 2 * 0.5256), rel=1e-15)
    with pytest.raises(ValueError, match="alpha >= -sigma"):
        S.dog_parameters_for_mk7(1.0, -0.6, form="forward")
    with pytest.raises(ValueError, match="alpha must be finite"):
        S.dog_parameters_for_mk7(1.0, float("nan"))
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        S.dog_parameters_for_mk7(-1.0, 0.1)
    with pytest.raises(ValueError, match="form must be one of 'central', 'forward'"):
        S.dog_parameters_for_mk7(1.0, 0.1, form="backward")


# ----------------------------------------------------------------------------- caching


def test_second_call_served_from_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = [
        lambda: S.weighted_variance(2, 0.7, 1.0),
        lambda: S.sigma_from_weighted_variance(1, 0.7, 1.0),
        lambda: S.spread_of_derivative(4, 0.7),
        lambda: S.l1_norm_normalized_derivative(3, 2),
        lambda: S.stencil_array("xxxx"),
        lambda: S.dog_laplacian_residual_series(form="central"),
    ]
    for call in calls:
        call()
    before = S.cache_info()

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("sympy work on a cached call")

    for name in ("lambdify", "solve", "simplify", "series", "limit", "integrate", "roots"):
        monkeypatch.setattr(sp, name, boom)
    for call in calls:
        call()
    after = S.cache_info()
    assert {k: v.misses for k, v in after.items()} == {k: v.misses for k, v in before.items()}
    assert after["weighted_variance_lambdified"].hits > before["weighted_variance_lambdified"].hits
    assert after["inverse_lambdified"].hits > before["inverse_lambdified"].hits
    assert after["derivative_constants"].hits > before["derivative_constants"].hits
