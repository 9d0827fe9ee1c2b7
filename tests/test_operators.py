"""Example-based tests of :mod:`scalespace_mk.scalespace.operators`.

Properties: tests/properties/.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate, correlate1d

from scalespace_mk.scalespace.kernels import discrete_gaussian
from scalespace_mk.scalespace.operators import (
    BOUNDARIES,
    OPERATORS,
    apply_1d,
    compose,
    difference_stencil,
)

STENCILS = {
    "x": [-0.5, 0.0, 0.5],
    "xx": [1.0, -2.0, 1.0],
    "x+": [0.0, -1.0, 1.0],
    "x-": [-1.0, 1.0, 0.0],
    "xxx": [-0.5, 1.0, 0.0, -1.0, 0.5],
    "xxxx": [1.0, -4.0, 6.0, -4.0, 1.0],
}


@pytest.mark.parametrize("name", OPERATORS)
def test_stencil_values(name):
    np.testing.assert_array_equal(difference_stencil(name), STENCILS[name])


@pytest.mark.parametrize(
    ("name", "order", "centre"),
    [
        ("x", 1, 0.0),
        ("xx", 2, 0.0),
        ("xxx", 3, 0.0),
        ("xxxx", 4, 0.0),
        ("x+", 1, 0.5),
        ("x-", 1, -0.5),
    ],
)
def test_stencils_are_exact_derivatives_of_polynomials(name, order, centre):
    # (op f)(0) = sum_k c[k] f(k): the order-th derivative of a polynomial of degree <= order
    # + 1 (central) or <= order (half-grid, evaluated at the stencil's centre), exactly
    c = difference_stencil(name)
    k = np.arange(c.size) - c.size // 2
    for degree in range(order + 2):
        value = (c * k.astype(float) ** degree).sum()
        if degree < order:
            expected = 0.0
        else:  # d^order/dx^order x^degree at x = centre
            expected = math.perm(degree, order) * centre ** (degree - order)
        if centre != 0.0 and degree > order:
            continue  # half-grid differences are first-order accurate away from x^1
        assert value == pytest.approx(expected, abs=1e-14), (name, degree)


def test_compose():
    assert compose(0) == ()
    assert compose(1) == ("x",)
    assert compose(2) == ("xx",)
    assert compose(3) == ("x", "xx")
    assert compose(4) == ("xx", "xx")
    for bad in (5, -1, 1.0, True, "2"):
        with pytest.raises(ValueError, match="order"):
            compose(bad)


def test_stencils_match_symbolic_module():
    try:
        symbolic = importlib.import_module("scalespace_mk.scalespace.symbolic")
    except ModuleNotFoundError as exc:
        if exc.name != "scalespace_mk.scalespace.symbolic":
            raise
        pytest.skip("scalespace_mk.scalespace.symbolic is not available")
    for name in OPERATORS:
        exact = symbolic.stencil(name)  # offset -> sympy Rational, derived from shift operators
        taps = difference_stencil(name)
        r = taps.size // 2
        dense = [float(exact.get(k, 0)) for k in range(-r, r + 1)]
        assert set(exact) <= set(range(-r, r + 1)), name
        np.testing.assert_array_equal(taps, dense, err_msg=name)
    # the five-point Laplacian of model "lap" / "mk7" (paper mode: zero padding)
    mask = symbolic.stencil_mask("lap")
    np.testing.assert_array_equal(mask, [[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    from scalespace_mk.scalespace.models import gaussian_2d, model_kernel

    lap = correlate(gaussian_2d(0.8), mask, mode="constant", cval=0.0)
    np.testing.assert_allclose(model_kernel("lap", 0.8), lap, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------------------
# application


def test_paper_mode_half_grid_boundary_zeros_1d():
    t7 = discrete_gaussian(1.0, size=7)
    plus = apply_1d(t7, "x+")
    minus = apply_1d(t7, "x-")
    assert plus[-1] == 0.0 and minus[0] == 0.0  # x = +3 and x = -3 (reflect repeats the edge)
    np.testing.assert_allclose(plus[:-1], np.diff(t7), rtol=0, atol=0)
    np.testing.assert_allclose(minus[1:], np.diff(t7), rtol=0, atol=0)
    # scipy's 'reflect' is the half-sample symmetric extension: the same numbers
    np.testing.assert_array_equal(plus, correlate1d(t7, STENCILS["x+"], mode="reflect"))


def test_boundaries_differ_only_at_the_ends():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(4, 9))
    ref = apply_1d(v, "xx", boundary="reflect")
    zero = apply_1d(v, "xx", boundary="zero")
    np.testing.assert_array_equal(ref[:, 1:-1], zero[:, 1:-1])
    np.testing.assert_array_equal(apply_1d(v, "xx", boundary="none"), ref[:, 1:-1])
    assert apply_1d(v, "xxxx", boundary="none").shape == (4, 5)
    np.testing.assert_allclose(zero[:, 0], v[:, 1] - 2 * v[:, 0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(ref[:, 0], v[:, 1] - v[:, 0], rtol=0, atol=1e-15)


def test_numpy_and_torch_agree_and_keep_their_type():
    rng = np.random.default_rng(4)
    v = rng.normal(size=(3, 7))
    for op in OPERATORS:
        for boundary in BOUNDARIES:
            out = apply_1d(v, op, boundary=boundary)
            assert isinstance(out, np.ndarray) and out.dtype == np.float64
            t = apply_1d(torch.from_numpy(v), op, boundary=boundary)
            assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
            np.testing.assert_array_equal(t.numpy(), out)
    t32 = apply_1d(torch.from_numpy(v).float(), "x")
    assert t32.dtype == torch.float32


def test_apply_1d_is_differentiable():
    v = torch.randn(2, 7, dtype=torch.float64, requires_grad=True)
    for op in OPERATORS:
        assert torch.autograd.gradcheck(lambda t, op=op: apply_1d(t, op), (v,))


def test_apply_1d_accepts_lists():
    np.testing.assert_array_equal(apply_1d([0.0, 1.0, 4.0], "x", boundary="none"), [2.0])


# --------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("bad", ["y", "xy", "x++", "", None, 1])
def test_bad_operator_name(bad):
    with pytest.raises(ValueError, match="name"):
        difference_stencil(bad)
    with pytest.raises(ValueError, match="op"):
        apply_1d(np.zeros(5), bad)


@pytest.mark.parametrize("bad", ["wrap", "mirror", "Reflect", None])
def test_bad_boundary(bad):
    with pytest.raises(ValueError, match="boundary.*'reflect'"):
        apply_1d(np.zeros(5), "x", boundary=bad)
