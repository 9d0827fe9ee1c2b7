"""Properties of the 1-D discrete Gaussian kernels (SPEC §3), checked with hypothesis.

Independent references: ``scipy.special.ive`` (``T(n; s) = exp(-s) I_n(s)``), pyscsp's
``make1D*filter`` functions, closed forms of the Fourier transform and the generating
function, and finite differences in ``s`` for the diffusion equation.

Tolerances: kernels computed with ``epsilon=1e-15`` are "untruncated enough" that their
moments and transforms agree with the closed forms to ~1e-13; with the default
``epsilon=1e-8`` the tail mass bounds every such error by ``epsilon``.
"""

from __future__ import annotations

import numpy as np
import pyscsp.discscsp as pyscsp
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.special import ive

from scalespace_mk.scalespace.kernels import (
    METHODS,
    discrete_gaussian,
    gaussian_kernel,
    kernel_radius,
    truncation_error_1d,
)
from scalespace_mk.scalespace.operators import apply_1d

from .strategies import PROPERTY, distinct_signals, methods, sigmas

TINY = 1e-15  # epsilon of the "untruncated" kernels


def untruncated(sigma: float) -> np.ndarray:
    """The discrete Gaussian with tail mass <= ~1e-15 (zero-padded a little).

    An explicit ``size`` is passed because ``kernel_radius`` (used when ``size=None``) caps
    small-sigma radii below the mass rule for epsilon <~ 1e-11 (see
    ``tests/test_kernels.py::test_radius_meets_mass_bound_for_small_epsilon``).
    """
    size = 2 * int(np.ceil(10.0 * sigma)) + 21
    return discrete_gaussian(sigma, size=size, epsilon=TINY)


def offsets(kernel: np.ndarray) -> np.ndarray:
    """Tap positions ``n = -R .. R`` of a ``[2R + 1]`` kernel."""
    r = kernel.shape[-1] // 2
    return np.arange(-r, r + 1, dtype=np.float64)


def centre(kernel: np.ndarray, radius: int) -> np.ndarray:
    """The central ``2 radius + 1`` taps of a 1-D kernel."""
    r = kernel.shape[-1] // 2
    return kernel[..., r - radius : r + radius + 1]


# --------------------------------------------------------------------------------------
# moments, range, symmetry


@PROPERTY
@given(sigma=sigmas(0.0, 50.0))
def test_sum_mean_range_symmetry(sigma):
    k = discrete_gaussian(sigma)
    n = offsets(k)
    eps1d = truncation_error_1d(1e-8)
    assert 1.0 - eps1d - 1e-14 <= k.sum() <= 1.0 + 1e-14
    assert abs((n * k).sum()) <= 1e-13 * (1.0 + n.max())
    assert np.array_equal(k, k[::-1])
    assert k.min() >= 0.0 and k.max() <= 1.0


@PROPERTY
@given(sigma=sigmas(0.0, 30.0))
def test_variance_is_exactly_s(sigma):
    k = untruncated(sigma)
    n = offsets(k)
    s = sigma * sigma
    assert abs((n * n * k).sum() - s) <= 1e-10 * (1.0 + s)


@PROPERTY
@given(sigma=sigmas(0.0, 10.0, min_positive=1e-100), method=methods())
def test_every_method_is_symmetric_and_nonnegative(sigma, method):
    k = gaussian_kernel(sigma, method=method)
    assert np.array_equal(k, k[::-1])
    assert k.min() >= 0.0
    if method != "samplgauss":  # the sampled Gaussian exceeds 1 at the centre for sigma < 0.4
        assert k.max() <= 1.0 + 1e-15


# --------------------------------------------------------------------------------------
# semigroup, transforms, diffusion


@PROPERTY
@given(sigma1=sigmas(0.0, 6.0), sigma2=sigmas(0.0, 6.0))
def test_semigroup(sigma1, sigma2):
    t1 = untruncated(sigma1)
    t2 = untruncated(sigma2)
    t12 = untruncated(np.sqrt(sigma1**2 + sigma2**2))
    conv = np.convolve(t1, t2)
    r = min(conv.size, t12.size) // 2
    np.testing.assert_allclose(centre(conv, r), centre(t12, r), rtol=0, atol=1e-12)


@PROPERTY
@given(sigma=sigmas(0.0, 30.0), w=st.floats(-np.pi, np.pi))
def test_fourier_transform(sigma, w):
    s = sigma * sigma
    exact = np.exp(-s * (1.0 - np.cos(w)))
    k = untruncated(sigma)
    dtft = (k * np.cos(offsets(k) * w)).sum()  # k is symmetric: the sine part vanishes
    assert abs(dtft - exact) <= 1e-12
    # with the default truncation, the error is bounded by the discarded mass
    k8 = discrete_gaussian(sigma)
    dtft8 = (k8 * np.cos(offsets(k8) * w)).sum()
    assert abs(dtft8 - exact) <= truncation_error_1d(1e-8) + 1e-14


@PROPERTY
@given(sigma=sigmas(0.0, 1.5), z=st.sampled_from([0.5, 0.8, 1.0, 1.25, 2.0]))
def test_generating_function(sigma, z):
    # sum_n T(n; s) z^n = exp(s (z + 1/z - 2) / 2); for z far from 1 the truncated tail is
    # weighted by z^|n|, so the scale range is kept where 1e-15 truncation is enough
    s = sigma * sigma
    k = untruncated(sigma)
    value = (k * z ** offsets(k)).sum()
    exact = np.exp(s * (z + 1.0 / z - 2.0) / 2.0)
    assert abs(value / exact - 1.0) <= 2e-10


@PROPERTY
@given(sigma=sigmas(0.1, 10.0))
def test_semidiscrete_diffusion_equation(sigma):
    # dT/ds = (T(n-1) - 2 T(n) + T(n+1)) / 2, with dT/ds from a central difference in s
    s = sigma * sigma
    size = 2 * int(np.ceil(8 * sigma)) + 9

    def central_difference(h):
        plus = discrete_gaussian(np.sqrt(s + h), size=size, epsilon=TINY)
        minus = discrete_gaussian(np.sqrt(s - h), size=size, epsilon=TINY)
        return (plus - minus) / (2.0 * h)

    # Richardson extrapolation: O(h^4) truncation, O(1e-16 / h) rounding
    h = 1e-2 * s
    fd = (4.0 * central_difference(h / 2) - central_difference(h)) / 3.0
    t = discrete_gaussian(sigma, size=size + 2, epsilon=TINY)
    formula = 0.5 * (t[:-2] - 2.0 * t[1:-1] + t[2:])
    np.testing.assert_allclose(fd, formula, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------------------
# scale-space property: no new local extrema


def count_circular_extrema(f: np.ndarray, tol: float) -> int:
    """Number of strict local extrema of a periodic signal.

    Differences with ``|d| <= tol`` (rounding noise on plateaus) are dropped; the count is
    the number of sign changes around the circle of the remaining ones.
    """
    d = np.roll(f, -1) - f
    signs = np.sign(d[np.abs(d) > tol])
    if signs.size < 2:
        return 0
    return int(np.count_nonzero(signs != np.roll(signs, 1)))


def circular_smooth(f: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Circular convolution of ``f`` with a symmetric kernel (taps folded modulo len(f))."""
    n = f.size
    folded = np.zeros(n)
    np.add.at(folded, offsets(kernel).astype(int) % n, kernel)
    return np.real(np.fft.ifft(np.fft.fft(f) * np.fft.fft(folded)))


@PROPERTY
@given(f=distinct_signals(), sigma=sigmas(0.0, 5.0))
def test_no_new_local_extrema(f, sigma):
    smooth = circular_smooth(f, untruncated(sigma))
    tol = 1e-11 * np.abs(f).max()
    assert count_circular_extrema(smooth, tol) <= count_circular_extrema(f, 0.0)


def test_count_circular_extrema_counts():
    f = np.array([0.0, 3.0, 1.0, 2.0, 5.0, 4.0])  # maxima 3, 5; minima 0, 1
    assert count_circular_extrema(f, 0.0) == 4
    assert count_circular_extrema(np.ones(8), 1e-12) == 0


# --------------------------------------------------------------------------------------
# monomial responses of derivative approximations on full-size kernels


def full_operator_kernel(sigma: float, op: str) -> np.ndarray:
    """``op`` applied to the (untruncated enough) discrete Gaussian over its full support."""
    t = np.pad(untruncated(sigma), 2)  # room for a 5-tap operator
    return apply_1d(t, op, boundary="zero")


def convolution_at_zero(h: np.ndarray, f) -> float:
    """``(h * f)(0) = sum_n h(n) f(-n)`` and the scale of its rounding error."""
    n = offsets(h)
    terms = h * f(-n)
    return terms.sum(), np.abs(terms).sum()


MONOMIALS = {
    0: lambda x: np.ones_like(x),
    1: lambda x: x,
    2: lambda x: x**2 / 2,
    3: lambda x: x**3 / 6,
    4: lambda x: x**4 / 24,
}
ORDER = {"x": 1, "xx": 2, "xxx": 3, "xxxx": 4, "x+": 1, "x-": 1}


@PROPERTY
@given(sigma=sigmas(0.0, 8.0), op=st.sampled_from(sorted(ORDER)))
def test_monomial_response_is_exact(sigma, op):
    # the response to x^k / k! at the origin is 1 and to lower powers 0, at every scale
    # (the discrete Gaussian has exact moments; central differences are exact on polynomials)
    h = full_operator_kernel(sigma, op)
    order = ORDER[op]
    for j in range(order + 1):
        value, scale = convolution_at_zero(h, MONOMIALS[j])
        expected = 1.0 if j == order else 0.0
        assert abs(value - expected) <= 1e-12 + 1e-13 * scale, (op, j, value)


# --------------------------------------------------------------------------------------
# limits, batches, torch


@PROPERTY
@given(
    sigma=sigmas(0.0, 0.2, min_positive=1e-100),
    method=st.sampled_from([m for m in METHODS if m != "samplgauss"]),
)
def test_small_sigma_tends_to_delta(sigma, method):
    k = gaussian_kernel(sigma, method=method, size=7)
    delta = np.zeros(7)
    delta[3] = 1.0
    # discgauss: 1 - T(0; s) <= s; the integrated kernels converge like sigma
    assert np.abs(k - delta).max() <= sigma + 1e-15


@PROPERTY
@given(
    batch=st.lists(sigmas(0.0, 20.0, min_positive=1e-100), min_size=1, max_size=6),
    method=methods(),
)
def test_batch_equals_loop(batch, method):
    sig = np.asarray(batch)
    n_fft = 4096  # one FFT length for batch and loop makes discgauss bit-identical
    kwargs = {"n_fft": n_fft} if method == "discgauss" else {}
    fn = discrete_gaussian if method == "discgauss" else gaussian_kernel
    if method != "discgauss":
        kwargs["method"] = method
    rows = fn(sig, **kwargs)
    r_batch = rows.shape[1] // 2
    for row, s in zip(rows, sig, strict=True):
        single = fn(float(s), **kwargs)
        r = single.size // 2
        own = centre(row, r)
        if method == "normsamplgauss":  # the normalising sum is reduced in another order
            np.testing.assert_allclose(own, single, rtol=1e-15, atol=0)
        else:
            assert np.array_equal(own, single)
        assert not row[: r_batch - r].any() and not row[r_batch + r + 1 :].any()


@PROPERTY
@given(batch=st.lists(sigmas(0.0, 20.0), min_size=1, max_size=6))
def test_batch_equals_loop_default_fft_length(batch):
    # with the default n_fft the FFT length follows the largest sigma of the call, so a batch
    # and a loop agree to rounding (not bit for bit): see the package docs
    sig = np.asarray(batch)
    rows = discrete_gaussian(sig, size=7)
    for row, s in zip(rows, sig, strict=True):
        np.testing.assert_allclose(row, discrete_gaussian(float(s), size=7), rtol=0, atol=4e-16)


@PROPERTY
@given(
    batch=st.lists(sigmas(0.0, 20.0, min_positive=1e-100), min_size=1, max_size=5),
    method=methods(),
)
def test_torch_equals_numpy(batch, method):
    sig = np.asarray(batch)
    ref = gaussian_kernel(sig, method=method)
    out = gaussian_kernel(torch.tensor(sig, dtype=torch.float64), method=method)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-15)


@PROPERTY
@given(
    batch=st.lists(sigmas(0.0, 20.0, min_positive=1e-30), min_size=1, max_size=5),
    method=methods(),
)
def test_float32_close_to_float64(batch, method):
    sig32 = torch.tensor(batch, dtype=torch.float32)
    out = gaussian_kernel(sig32, method=method, size=15)
    assert out.dtype == torch.float32
    ref = gaussian_kernel(sig32.double().numpy(), method=method, size=15)  # same rounded sigma
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(out.double().numpy(), ref, rtol=0, atol=2e-7 * scale)


# --------------------------------------------------------------------------------------
# independent values: scipy and pyscsp


@PROPERTY
@given(sigma=st.one_of(sigmas(0.0, 1e3), sigmas(0.0, 3.0), st.just(1e3)))
def test_values_equal_scipy_ive(sigma):
    k = discrete_gaussian(sigma)
    n = offsets(k)
    np.testing.assert_allclose(k, ive(np.abs(n), sigma * sigma), rtol=0, atol=1e-12)


PYSCSP = {
    "discgauss": pyscsp.make1Ddiscgaussfilter,
    "samplgauss": pyscsp.make1Dsamplgaussfilter,
    "normsamplgauss": pyscsp.make1Dnormsamplgaussfilter,
    "intgauss": pyscsp.make1Dintgaussfilter,
    "linintgauss": pyscsp.make1Dlinintgaussfilter,
}


@PROPERTY
@given(
    sigma=sigmas(0.01, 300.0),
    method=methods(),
    epsilon=st.sampled_from([1e-8, 1e-6, 1e-4]),
    D=st.integers(1, 3),
)
def test_equal_to_pyscsp(sigma, method, epsilon, D):
    ours = gaussian_kernel(sigma, method=method, epsilon=epsilon, D=D)
    ref = PYSCSP[method](sigma, epsilon, D)
    r = min(ours.size, ref.size) // 2
    # linintgauss is x Phi(x) differences: ill-conditioned for large sigma in both
    # implementations (cancellation of terms ~sigma), so 1e-11 there
    tol = 1e-11 if (method == "linintgauss" and sigma >= 100) else 1e-12
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(centre(ours, r), centre(ref, r), rtol=0, atol=tol * scale)
    if method != "discgauss":
        assert ours.size == ref.size
        return
    # pyscsp caps the discgauss radius at ceil(1 + 1.5 N) (N its continuous estimate), which
    # for small sigma is shorter than the accumulated-mass rule of SPEC §3; there the extra
    # taps of ours are further exact values of T and carry the mass pyscsp drops
    assert ours.size >= ref.size
    extra = ours[: (ours.size - ref.size) // 2]
    n_extra = -offsets(ours)[: extra.size]
    np.testing.assert_allclose(extra, ive(n_extra, sigma * sigma), rtol=0, atol=1e-15)
    assert ours.sum() >= 1.0 - truncation_error_1d(epsilon, D) - 1e-14
    if ours.size > ref.size:  # where the lengths differ, pyscsp misses its own bound
        assert ref.sum() < 1.0 - truncation_error_1d(epsilon, D)


@PROPERTY
@given(sigma=sigmas(0.0, 50.0, min_positive=1e-100), method=methods())
def test_kernel_radius_matches_kernel(sigma, method):
    k = gaussian_kernel(sigma, method=method)
    assert kernel_radius(sigma, method=method) == k.size // 2
    assume(sigma > 0)
    if method == "discgauss":
        # the outermost taps are inside the kernel's own mass radius: they are nonzero
        assert k[0] > 0


@pytest.mark.parametrize("method", METHODS)
def test_sigma_zero_is_delta_for_every_method(method):
    assert np.array_equal(gaussian_kernel(0.0, method=method), np.array([1.0]))
    assert np.array_equal(gaussian_kernel(0.0, method=method, size=5), [0, 0, 1.0, 0, 0])
