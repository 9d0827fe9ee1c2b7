"""Properties of the difference operators and the 2-D models built with them (SPEC §4-§5).

Independent references: ``scipy.ndimage.correlate1d`` for the boundary handling, exact
polynomial responses for the derivative approximations, and the symmetry of the half-grid
differences about x = -1/2 or +1/2.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.ndimage import correlate1d

from scalespace_mk.scalespace.kernels import discrete_gaussian
from scalespace_mk.scalespace.models import model_kernel
from scalespace_mk.scalespace.operators import OPERATORS, apply_1d, difference_stencil

from .strategies import PROPERTY, random_arrays, sigmas

PRIMITIVE = ("x", "xx", "x+", "x-")
FACTORS = {
    "x": ("x",),
    "xx": ("xx",),
    "x+": ("x+",),
    "x-": ("x-",),
    "xxx": ("x", "xx"),
    "xxxx": ("xx", "xx"),
}


def coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """``x = c - m`` and ``y = m - r`` (y up) on a ``size x size`` grid, as [size, size]."""
    m = size // 2
    idx = np.arange(size)
    return np.broadcast_to(idx[None, :] - m, (size, size)), np.broadcast_to(
        m - idx[:, None], (size, size)
    )


# --------------------------------------------------------------------------------------
# boundary handling against scipy


@PROPERTY
@given(values=random_arrays(), op=st.sampled_from(OPERATORS))
def test_reflect_boundary_equals_scipy(values, op):
    out = apply_1d(values, op, boundary="reflect")
    ref = values
    for factor in FACTORS[op]:  # orders 3 and 4: each 3-tap factor with reflect, in turn
        ref = correlate1d(ref, difference_stencil(factor), axis=-1, mode="reflect")
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)
    as_torch = apply_1d(torch.from_numpy(values), op, boundary="reflect")
    np.testing.assert_allclose(as_torch.numpy(), ref, rtol=0, atol=1e-12)


@PROPERTY
@given(values=random_arrays(), op=st.sampled_from(PRIMITIVE))
def test_zero_boundary_equals_scipy_constant(values, op):
    out = apply_1d(values, op, boundary="zero")
    ref = correlate1d(values, difference_stencil(op), axis=-1, mode="constant", cval=0.0)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)


@PROPERTY
@given(values=random_arrays(), op=st.sampled_from(OPERATORS))
def test_none_boundary_is_the_valid_correlation(values, op):
    stencil = difference_stencil(op)
    if values.shape[-1] < stencil.size:
        return
    out = apply_1d(values, op, boundary="none")
    ref = np.apply_along_axis(lambda v: np.correlate(v, stencil, mode="valid"), -1, values)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------
# half-grid differences and the paper-mode boundary


def weighted_mean(h: np.ndarray) -> tuple[float, float]:
    """Mean (x, y) of ``|h|`` in centred y-up coordinates."""
    x, y = coords(h.shape[-1])
    w = np.abs(h)
    return float((w * x).sum() / w.sum()), float((w * y).sum() / w.sum())


HALF_CENTRES = {"dx+": (-0.5, 0.0), "dx-": (0.5, 0.0), "dy+": (0.0, -0.5), "dy-": (0.0, 0.5)}


@PROPERTY
@given(
    name=st.sampled_from(sorted(HALF_CENTRES)),
    sigma_x=sigmas(0.0, 8.0),
    sigma_y=sigmas(0.0, 8.0),
    size=st.sampled_from([3, 5, 7, 9]),
)
def test_half_grid_models_are_centred_half_a_pixel_off(name, sigma_x, sigma_y, size):
    # delta_x+ T is antisymmetric about x = -1/2 (|h(n)| = |h(-1 - n)|); in paper mode the
    # reflect boundary zeroes the one tap whose partner falls outside the grid
    h = model_kernel(name, sigma_x, sigma_y, size=size)
    np.testing.assert_allclose(weighted_mean(h), HALF_CENTRES[name], rtol=0, atol=1e-12)


@PROPERTY
@given(sigma=sigmas(0.0, 8.0), op=st.sampled_from(["x+", "x-"]))
def test_half_grid_1d_centre_on_full_support(sigma, op):
    t = discrete_gaussian(sigma, size=2 * int(np.ceil(10 * sigma)) + 21, epsilon=1e-15)
    h = apply_1d(t, op, boundary="zero")
    n = np.arange(h.size) - h.size // 2
    mean = (np.abs(h) * n).sum() / np.abs(h).sum()
    assert abs(mean - (-0.5 if op == "x+" else 0.5)) <= 1e-12


@PROPERTY
@given(sigma_x=sigmas(0.0, 8.0), sigma_y=sigmas(0.0, 8.0), size=st.sampled_from([5, 7, 9]))
def test_paper_mode_half_grid_border_zeros(sigma_x, sigma_y, size):
    # delta_x+ f(x) = f(x + 1) - f(x) is 0 at the last column (reflect repeats the edge);
    # delta_x- is 0 at the first column; y is up, so delta_y+ is 0 in the TOP row
    kw = dict(size=size)
    assert not model_kernel("dx+", sigma_x, sigma_y, **kw)[:, -1].any()  # x = +m
    assert not model_kernel("dx-", sigma_x, sigma_y, **kw)[:, 0].any()  # x = -m
    assert not model_kernel("dy+", sigma_x, sigma_y, **kw)[0, :].any()  # y = +m
    assert not model_kernel("dy-", sigma_x, sigma_y, **kw)[-1, :].any()  # y = -m


BORDER_NAMES = ["T", "dx", "dy", "dxx", "dxy", "dyy", "dx+", "dx-", "dy+", "dy-", "lap"] + [
    f"mk{k}" for k in range(1, 9)
]


@PROPERTY
@given(
    name=st.sampled_from(BORDER_NAMES + ["dxxx", "dxxxx", "dyyy", "dxxy"]),
    sigma_x=sigmas(0.0, 6.0),
    sigma_y=sigmas(0.0, 6.0),
    alpha=st.floats(-2.0, 2.0),
    size=st.sampled_from([5, 7, 9]),
)
def test_paper_and_full_mode_differ_only_at_the_border(name, sigma_x, sigma_y, alpha, size):
    kw = dict(size=size)
    if name == "mk7":
        kw["alpha"] = alpha
        sigma_y = None
    paper = model_kernel(name, sigma_x, sigma_y, mode="paper", **kw)
    full = model_kernel(name, sigma_x, sigma_y, mode="full", **kw)
    # a 3-tap operator sees the boundary only at the outermost tap; orders 3 and 4 are two
    # 3-tap factors in turn, so the difference reaches one tap further in
    depth = 2 if any(name.count(a) >= 3 for a in "xy") else 1
    inner = (slice(depth, size - depth),) * 2
    # (the two modes evaluate T on different tap counts, hence FFT lengths: rounding only)
    np.testing.assert_allclose(paper[inner], full[inner], rtol=0, atol=1e-15)
    if name in ("T", "mk8"):  # no operator: the modes coincide everywhere
        np.testing.assert_allclose(paper, full, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------------------
# exact polynomial responses of the 2-D models (full mode, untruncated)

RESPONSES = {
    # name: (monomial f(x, y), response of the convolution at the origin)
    "dx": (lambda x, y: x, 1.0),
    "dy": (lambda x, y: y, 1.0),
    "dx+": (lambda x, y: x, 1.0),
    "dx-": (lambda x, y: x, 1.0),
    "dy+": (lambda x, y: y, 1.0),
    "dy-": (lambda x, y: y, 1.0),
    "dxx": (lambda x, y: x**2 / 2, 1.0),
    "dyy": (lambda x, y: y**2 / 2, 1.0),
    "dxy": (lambda x, y: x * y, 1.0),
    "dxxy": (lambda x, y: x**2 * y / 2, 1.0),
    "dxyy": (lambda x, y: x * y**2 / 2, 1.0),
    "dxxx": (lambda x, y: x**3 / 6, 1.0),
    "dyyyy": (lambda x, y: y**4 / 24, 1.0),
    "dxxyy": (lambda x, y: x**2 * y**2 / 4, 1.0),
    "lap": (lambda x, y: (x**2 + y**2) / 2, 2.0),
    "T": (lambda x, y: np.ones_like(x), 1.0),
    "dx_on_y": (lambda x, y: y, 0.0),
    "dy_on_x": (lambda x, y: x, 0.0),
}


@PROPERTY
@given(name=st.sampled_from(sorted(RESPONSES)), sigma_x=sigmas(0.0, 3.0), sigma_y=sigmas(0.0, 3.0))
def test_model_monomial_responses_full_mode(name, sigma_x, sigma_y):
    f, expected = RESPONSES[name]
    model = name.split("_")[0]
    size = 2 * int(np.ceil(10 * max(sigma_x, sigma_y))) + 21
    if model == "lap":
        sigma_y = sigma_x
    h = model_kernel(model, sigma_x, sigma_y, size=size, mode="full", epsilon=1e-15)
    x, y = coords(size)
    terms = h * f(-x.astype(float), -y.astype(float))  # convolution: sum_p h(p) f(-p)
    assert abs(terms.sum() - expected) <= 1e-12 + 1e-13 * np.abs(terms).sum()
