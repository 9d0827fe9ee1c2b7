"""The discrete N-jet basis and oriented derivatives (scalespace.jets) and their sympy facts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scalespace_mk.scalespace import symbolic
from scalespace_mk.scalespace.jets import (
    coefficient_names,
    jet_basis,
    jet_indices,
    jet_names,
    oriented_kernel,
    oriented_weights,
)
from scalespace_mk.scalespace.kernels import discrete_gaussian
from scalespace_mk.scalespace.models import model_kernel
from scalespace_mk.scalespace.operators import apply_1d


def test_indices_and_names():
    assert jet_indices(2) == ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2))
    assert jet_names(2) == ("T", "dx", "dy", "dxx", "dxy", "dyy")
    assert coefficient_names(1) == ("c_0", "c_x", "c_y")
    assert [len(jet_indices(n)) for n in (1, 2, 3, 4)] == [3, 6, 10, 15]
    with pytest.raises(ValueError, match="order must be one of"):
        jet_indices(5)


@pytest.mark.parametrize("mode", ["paper", "full"])
def test_basis_equals_model_kernels(mode):
    sx, sy = [0.0, 0.6, 1.4, 2.5], [0.3, 1.0, 0.9, 2.0]
    basis = jet_basis(4, sx, sy, size=7, mode=mode)
    assert basis.shape == (4, 15, 7, 7)
    for m, name in enumerate(jet_names(4)):
        ref = model_kernel(name, sx, sy, size=7, mode=mode)
        np.testing.assert_allclose(basis[:, m], ref, rtol=0, atol=1e-15)


def test_basis_against_composed_operators():
    # delta_x^i delta_y^j T built by hand: 1-D Gaussians, operators along each axis, outer
    # product with y increasing upwards (rows flipped); full mode: no boundary effects
    sx, sy, k = 0.9, 1.3, 9
    gx = discrete_gaussian(sx, size=k + 4)
    gy = discrete_gaussian(sy, size=k + 4)
    ops = {0: (), 1: ("x",), 2: ("xx",), 3: ("x", "xx"), 4: ("xx", "xx")}

    def axis(g, n):
        out = g
        for op in ops[n]:
            out = apply_1d(out, op, boundary="none")
        cut = (len(out) - k) // 2
        return out[cut : cut + k]

    basis = jet_basis(4, sx, sy, size=k, mode="full")
    for m, (i, j) in enumerate(jet_indices(4)):
        ref = np.outer(axis(gy, j)[::-1], axis(gx, i))
        np.testing.assert_allclose(basis[m], ref, rtol=0, atol=1e-15)


def test_scale_normalisation_and_torch_path():
    s = torch.tensor([0.7, 1.9], dtype=torch.float64, requires_grad=True)
    raw = jet_basis(3, s)
    norm = jet_basis(3, s, normalized=True, gamma=0.75)
    for m, (i, j) in enumerate(jet_indices(3)):
        torch.testing.assert_close(norm[:, m], raw[:, m] * s[:, None, None] ** (0.75 * (i + j)))
    np.testing.assert_allclose(raw.detach().numpy(), jet_basis(3, [0.7, 1.9]), atol=1e-15)
    norm.sum().backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_gradient_is_exact_in_float64():
    s = torch.tensor([0.8, 1.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: jet_basis(2, t, t * 0.9 + 0.1), (s,))


@settings(max_examples=20)
@given(
    theta=st.floats(-math.pi, math.pi),
    sigma=st.floats(0.2, 3.0),
)
def test_oriented_kernel_is_the_weighted_jet(theta, sigma):
    basis = jet_basis(2, sigma)
    d1 = oriented_kernel(1, theta, sigma)
    np.testing.assert_allclose(
        d1, math.cos(theta) * basis[1] + math.sin(theta) * basis[2], atol=1e-15
    )
    d2 = oriented_kernel(2, theta, sigma)
    c, s = math.cos(theta), math.sin(theta)
    np.testing.assert_allclose(
        d2, c * c * basis[3] + 2 * c * s * basis[4] + s * s * basis[5], atol=1e-15
    )


def test_oriented_axes_and_direction():
    # theta = 0 is +x, pi/2 is +y (up): the responses to the ramps x and y
    k = 21
    m = k // 2
    x = np.arange(k)[None, :] - m
    y = m - np.arange(k)[:, None]
    for theta, rx, ry in ((0.0, 1, 0), (math.pi / 2, 0, 1), (math.pi / 4, 0.5**0.5, 0.5**0.5)):
        h = oriented_kernel(1, theta, 1.0, size=k, mode="full")
        # convolution response at the centre: sum h(p) f(-p)
        assert float((h * -x).sum()) == pytest.approx(rx, abs=1e-7)
        assert float((h * -y).sum()) == pytest.approx(ry, abs=1e-7)
    np.testing.assert_allclose(oriented_kernel(2, 0.0, 1.2), model_kernel("dxx", 1.2), atol=1e-15)
    w = oriented_weights(2, torch.tensor([0.3]))
    assert isinstance(w, torch.Tensor) and w.shape == (1, 3)


def test_bad_input():
    with pytest.raises(ValueError, match="sigma"):
        jet_basis(2, -1.0)
    with pytest.raises(ValueError, match="gamma"):
        jet_basis(2, 1.0, normalized=True, gamma=-1)
    with pytest.raises(ValueError, match="order must be one of"):
        oriented_kernel(3, 0.0, 1.0)


# --------------------------------------------------------------------------------------
# sympy


def _value(expr, sx, sy):
    return float(
        expr.subs({s: {"s_x": sx * sx, "s_y": sy * sy}[s.name] for s in expr.free_symbols})
    )


def test_monomial_responses_known_values():
    r = symbolic.njet_monomial_response
    sx = sp.Symbol("s_x", nonnegative=True)
    assert r(1, 0, 1, 0) == 1 and r(2, 2, 2, 2) == 1
    assert r(2, 0, 1, 0) == 0 and r(1, 0, 2, 0) == 0  # lower power / wrong parity
    assert sp.simplify(r(1, 0, 3, 0) - (sx / 2 + sp.Rational(1, 6))) == 0
    assert sp.simplify(r(1, 0, 3, 0, discrete=False) - sx / 2) == 0
    # the discrete kernel's 4th moment s + 3 s^2 (continuous: 3 s^2)
    assert sp.simplify(r(0, 0, 4, 0) - (3 * sx**2 + sx) / 24) == 0
    with pytest.raises(ValueError, match="i \\+ j"):
        r(3, 2, 0, 0)


def test_monomial_responses_match_the_basis():
    k, sx, sy = 41, 1.1, 0.8
    m = k // 2
    x = np.arange(k)[None, :] - m
    y = m - np.arange(k)[:, None]
    basis = jet_basis(4, sx, sy, size=k, mode="full", epsilon=1e-14)
    for a, (i, j) in enumerate(jet_indices(4)):
        for kk, ll in ((0, 0), (i, j), (i + 2, j), (i, j + 2), (i + 1, j), (5, 1), (2, 4)):
            f = (-x) ** kk * (-y) ** ll / (math.factorial(kk) * math.factorial(ll))
            expected = _value(symbolic.njet_monomial_response(i, j, kk, ll), sx, sy)
            assert float((basis[a] * f).sum()) == pytest.approx(expected, abs=1e-9)


def test_steering_identity_is_exact_for_the_continuous_gaussian():
    for order in (1, 2):
        assert sp.simplify(symbolic.steering_identity(order)) == 0


def test_steering_error_of_the_discrete_jet():
    err = symbolic.steering_error(1, 1.0, [0.0, math.pi / 2, math.pi / 4])
    assert err[0] == pytest.approx(0.0, abs=1e-12) and err[1] == pytest.approx(0.0, abs=1e-12)
    assert err[2] > 0.05
    # falls with the scale: T suppresses the anisotropic high frequencies of the lattice
    e = symbolic.steering_error(2, [0.7, 1.5, 3.0], math.pi / 4)
    assert e[0] > e[1] > e[2]
    with pytest.raises(ValueError, match="sigma"):
        symbolic.steering_error(1, 0.0, 0.3)


@pytest.mark.parametrize(
    "module",
    [
        "scalespace_mk.scalespace.jets",
        "scalespace_mk.analysis.jets",
        "scalespace_mk.scalespace.symbolic",
        "scalespace_mk.networks.layers",
    ],
)
def test_doctests(module):
    import doctest
    import importlib

    torch.set_num_threads(1)
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 1
