"""Scale-space of images (scalespace/image.py): against pyscsp to 1e-12, properties with
hypothesis (semigroup, commutation of differences and smoothing, gamma normalisation, the
diffusion equation), and torch: batched, dtype/device kept, differentiable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scalespace_mk.scalespace.image import (
    derivative,
    difference_of_gaussians,
    laplacian,
    njet,
    scale_space,
)
from scalespace_mk.scalespace.jets import jet_indices
from scalespace_mk.scalespace.kernels import METHODS

pyscsp = pytest.importorskip("pyscsp.discscsp")

ORDERS = {
    "Lx": (1, 0),
    "Ly": (0, 1),
    "Lxx": (2, 0),
    "Lxy": (1, 1),
    "Lyy": (0, 2),
    "Lxxx": (3, 0),
    "Lxxy": (2, 1),
    "Lxyy": (1, 2),
    "Lyyy": (0, 3),
    "Lxxxx": (4, 0),
    "Lxxxy": (3, 1),
    "Lxxyy": (2, 2),
    "Lxyyy": (1, 3),
    "Lyyyy": (0, 4),
}


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).normal(size=(23, 31))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sigma", [0.0, 0.5, 1.0, 2.3, 6.0, 20.0])
def test_scale_space_equals_pyscsp(image, method, sigma):
    ours = scale_space(image, sigma, method=method)
    # pyscsp divides by sigma in the sampled kernels: at sigma = 0 every method is the delta
    ref = image if sigma == 0.0 else pyscsp.scspconv(image, sigma, method)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_scale_space_of_several_sigmas_is_each_scale(image):
    sig = [0.7, 1.5, 3.0]
    stack = scale_space(image, sig)
    assert stack.shape == (3, *image.shape)
    for s, layer in zip(sig, stack, strict=True):
        np.testing.assert_allclose(layer, pyscsp.scspconv(image, s, "discgauss"), atol=1e-12)


@pytest.mark.parametrize("name", list(ORDERS))
@pytest.mark.parametrize("gamma", [None, 0.75, 1.0])
def test_derivatives_equal_pyscsp(image, name, gamma):
    sigma = 1.7
    smooth = pyscsp.scspconv(image, sigma, "discgauss")
    if gamma is None:
        ref = pyscsp.applyNjetfcn(smooth, name, sigma, "discgauss")
    else:
        ref = pyscsp.applyNjetfcn(smooth, name, sigma, "discgaussvar", gamma)
    ours = derivative(image, sigma, ORDERS[name], gamma=gamma)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_laplacian_and_njet_equal_pyscsp(image):
    sigma = 2.0
    smooth = pyscsp.scspconv(image, sigma, "discgauss")
    ref = pyscsp.applyNjetfcn(smooth, "Laplace", sigma, "discgaussvar", 1.0)
    np.testing.assert_allclose(laplacian(image, sigma, gamma=1.0), ref, atol=1e-12)
    jet = njet(image, sigma, 2, gamma=1.0)
    names = {(0, 0): "L", **{v: k for k, v in ORDERS.items()}}
    for part, (nx, ny) in zip(jet, jet_indices(2), strict=True):
        want = pyscsp.applyNjetfcn(smooth, names[(nx, ny)], sigma, "discgaussvar", 1.0)
        np.testing.assert_allclose(part, want, atol=1e-12)


images = st.integers(0, 2**32 - 1).map(
    lambda seed: np.random.default_rng(seed).normal(size=(12, 15))
)
sigmas = st.floats(0.0, 2.5, allow_nan=False)


@settings(max_examples=15)
@given(images, sigmas, sigmas, st.sampled_from(["reflect", "wrap"]))
def test_semigroup_of_the_discrete_analogue(f, s1, s2, boundary):
    """T(s1) * T(s2) = T(s1 + s2), to the truncation error (reflect and wrap keep the
    symmetric / periodic extension of the image, so the property holds at the border too)."""
    eps = 1e-14
    twice = scale_space(
        scale_space(f, s1, epsilon=eps, boundary=boundary), s2, epsilon=eps, boundary=boundary
    )
    once = scale_space(f, np.hypot(s1, s2), epsilon=eps, boundary=boundary)
    np.testing.assert_allclose(twice, once, rtol=0, atol=1e-11)


@settings(max_examples=15)
@given(images, sigmas, st.sampled_from(sorted(set(ORDERS.values()))))
def test_differences_commute_with_smoothing(f, sigma, order):
    """d(T * f) = T * (d f) on a periodic image (wrap)."""
    first = derivative(f, sigma, order, boundary="wrap", epsilon=1e-14)
    diff = derivative(f, 0.0, order, boundary="wrap")
    then = scale_space(diff, sigma, boundary="wrap", epsilon=1e-14)
    np.testing.assert_allclose(first, then, rtol=0, atol=1e-10)


@settings(max_examples=15)
@given(images, st.floats(0.1, 4.0), st.floats(0.0, 2.0), st.sampled_from(list(ORDERS.values())))
def test_gamma_normalisation_scales_by_sigma_power(f, sigma, gamma, order):
    raw = derivative(f, sigma, order)
    norm = derivative(f, sigma, order, gamma=gamma)
    np.testing.assert_allclose(norm, sigma ** (gamma * sum(order)) * raw, rtol=1e-12, atol=1e-300)


def test_dog_approximates_half_the_laplacian_times_ds(image):
    """For the discrete analogue dL/ds = (L_xx + L_yy) / 2 exactly: the DoG over a small
    step ds is ds/2 times the Laplacian to O(ds^2)."""
    sigma, ds = 1.5, 1e-4
    dog = difference_of_gaussians(image, [sigma, np.sqrt(sigma**2 + ds)], epsilon=1e-15)[0]
    lap = laplacian(image, np.sqrt(sigma**2 + ds / 2), epsilon=1e-15)
    np.testing.assert_allclose(dog / ds, lap / 2, rtol=0, atol=1e-8)


def test_zero_scale_is_the_image_and_mass_is_kept(image):
    np.testing.assert_array_equal(scale_space(image, 0.0), image)
    for method in ("discgauss", "normsamplgauss", "intgauss"):
        assert (
            abs(scale_space(image, 3.0, method=method, boundary="wrap").sum() - image.sum()) < 1e-6
        )


def test_y_points_up():
    ramp = np.repeat(np.arange(5.0)[::-1, None], 5, axis=1)  # value = y (grows upwards)
    np.testing.assert_allclose(derivative(ramp, 0.0, (0, 1))[1:-1], 1.0)
    np.testing.assert_allclose(derivative(ramp, 0.0, (1, 0)), 0.0)


def test_torch_batched_keeps_dtype_device_and_matches_numpy(image):
    batch = torch.from_numpy(np.stack([image, -2 * image]))[:, None]  # [2, 1, H, W]
    out = njet(batch.float(), torch.tensor([1.0, 2.0]), 2, gamma=1.0)
    assert out.shape == (6, 2, 2, 1, *image.shape) and out.dtype == torch.float32
    want = njet(image, [1.0, 2.0], 2, gamma=1.0)
    np.testing.assert_allclose(out[:, :, 0, 0].numpy(), want, atol=1e-5)
    np.testing.assert_allclose(out[:, :, 1, 0].numpy(), -2 * want, atol=1e-5)


def test_torch_is_differentiable_in_image_and_sigma():
    f = torch.randn(1, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    f.requires_grad_(True)
    sigma = torch.tensor([0.8, 1.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, s: derivative(a, s, (1, 1), gamma=1.0, epsilon=1e-12),
        (f, sigma),
        fast_mode=True,
    )
    # the Laplacian of the discrete analogue is 2 dL/ds: the sigma gradient says so exactly
    s = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)
    g = torch.randn(9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    smoothed = scale_space(g, s, epsilon=1e-15, boundary="wrap")
    (grad,) = torch.autograd.grad((smoothed * g).sum(), s)
    # dL/dsigma = 2 sigma dL/ds = sigma (L_xx + L_yy)
    want = 1.1 * (laplacian(g, 1.1, epsilon=1e-15, boundary="wrap") * g).sum()
    assert abs(float(grad) - float(want)) < 1e-9


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f: scale_space(f, -1.0), "sigma must be finite and >= 0"),
        (lambda f: scale_space(f[0], 1.0), r"\[\.\.\., H, W\]"),
        (lambda f: scale_space(f, 1.0, method="gauss"), "method"),
        (lambda f: scale_space(f, 1.0, boundary="mirror"), "boundary"),
        (lambda f: derivative(f, 1.0, (3, 2)), "at most 4"),
        (lambda f: derivative(f, 1.0, (1, 0), gamma=-1), "gamma"),
        (lambda f: difference_of_gaussians(f, 1.0), "at least two scales"),
        (lambda f: scale_space(np.where(f > 0, np.nan, f), 1.0), "NaN"),
    ],
)
def test_bad_input_names_the_argument(image, call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(image)


def test_method_aliases_are_the_kernels_methods(image):
    from scalespace_mk.scalespace.image import METHOD_ALIASES

    for alias, name in METHOD_ALIASES.items():
        np.testing.assert_array_equal(
            scale_space(image, 1.3, method=alias), scale_space(image, 1.3, method=name)
        )
    np.testing.assert_array_equal(
        scale_space(image, 1.3), scale_space(image, 1.3, method="discrete")
    )
