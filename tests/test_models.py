"""Tests of :mod:`scalespace_mk.scalespace.models`:
conventions (y up, conv2d is a cross-correlation),
the 8 master key models, model 7 and the DoG, batching, gradients and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import correlate
from scipy.signal import convolve2d

from scalespace_mk.scalespace.kernels import discrete_gaussian
from scalespace_mk.scalespace.models import (
    MASTERKEY_MODELS,
    derivative_model,
    dog,
    gaussian_2d,
    masterkey_model,
    model_kernel,
    parse_model,
)
from scalespace_mk.scalespace.operators import apply_1d

LAPLACE5 = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """``x = c - m`` and ``y = m - r`` (y up) as float [size, size] arrays."""
    m = size // 2
    idx = np.arange(size, dtype=np.float64)
    x = np.broadcast_to(idx[None, :] - m, (size, size))
    y = np.broadcast_to(m - idx[:, None], (size, size))
    return x, y


def big(name: str, sigma: float = 1.0, **kw) -> np.ndarray:
    """A full-mode model on a grid large enough to hold its whole (1e-15) support."""
    size = 2 * int(np.ceil(10 * sigma)) + 21
    return model_kernel(name, sigma, size=size, mode="full", epsilon=1e-15, **kw)


# --------------------------------------------------------------------------------------
# conventions


def test_y_points_up():
    h = model_kernel("dy", 1.0)
    # like the Gaussian derivative -y/s g(y), the dy model is NEGATIVE where y > 0; with
    # y = m - r (up) that is the TOP rows, and its convolution response to y is then +1
    assert (h[:3] < 0).all() and (h[4:] > 0).all() and not h[3].any()
    x, y = coords(7)
    hb = big("dy")
    xb, yb = coords(hb.shape[0])
    assert (hb * -yb).sum() == pytest.approx(1.0, abs=1e-12)  # sum_p h(p) f(-p), f = y
    assert (h * -y).sum() > 0.9  # paper mode (cropped): 0.9386 at sigma = 1
    # x is to the right: dx is negative on the right half (the response to x is +1)
    hx = model_kernel("dx", 1.0)
    assert (hx[:, 4:] < 0).all() and (hx[:, :3] > 0).all()


def test_models_match_the_published_filters_in_orientation(masterkey_dir):
    # with y up and the Gaussian-derivative signs, the models correlate strongly with the
    # published filters; learned filters 2 and 3 have the opposite sign (SPEC §5)
    from scalespace_mk.analysis.filters import load_filters

    learned = load_filters(masterkey_dir)
    for k in range(1, 9):
        g = masterkey_model(k, 1.0, alpha=0.5 if k == 7 else None)
        a, b = learned[k - 1] - learned[k - 1].mean(), g - g.mean()
        corr = (a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b)
        assert (corr < -0.7) if k in (2, 3) else (corr > 0.7), (k, corr)
    # filter 6 is negative in its top rows, like the dy model
    assert learned[5][:3, 3].max() < 0 < learned[5][4:, 3].min()


def test_anisotropic_scales_go_to_the_right_axes():
    g = gaussian_2d(2.0, 0.5)  # sigma_x = 2 along columns, sigma_y = 0.5 along rows
    np.testing.assert_allclose(
        g, np.outer(discrete_gaussian(0.5, size=7), discrete_gaussian(2.0, size=7)), atol=1e-16
    )
    x, y = coords(7)
    gb = model_kernel("T", 2.0, 0.5, size=41, epsilon=1e-15)
    xb, yb = coords(41)
    assert (gb * xb**2).sum() == pytest.approx(4.0, abs=1e-10)
    assert (gb * yb**2).sum() == pytest.approx(0.25, abs=1e-10)


def test_dy_plus_is_centred_below_and_zero_in_the_top_row():
    # dy+ T (model 1): f(y + 1) - f(y), centred at y = -1/2, i.e. half a pixel BELOW the
    # centre; paper mode's reflect boundary makes the top row (y = +3) zero
    h = masterkey_model(1, 1.0)
    assert not h[0].any()
    w = np.abs(h)
    _, y = coords(7)
    assert (w * y).sum() / w.sum() == pytest.approx(-0.5, abs=1e-12)
    # rows r = 3 (y = 0) and r = 4 (y = -1) straddle the centre y = -1/2, with opposite signs
    np.testing.assert_allclose(h[3], -h[4], rtol=0, atol=1e-16)


def test_conv2d_is_a_cross_correlation_and_returns_minus_the_derivative():
    # F.conv2d computes out(p) = sum_q h(q) f(p + q) (no flip). On f = x this is
    # x_p sum h + sum_q h(q) q_x = -1 for the dx model (sum h = 0, sum h q_x = -1): conv2d
    # returns MINUS the derivative, a true convolution returns +1 (docs/theory.md)
    n = 61
    xi, yi = coords(n)
    for name, image, odd in [
        ("dx", xi, True),
        ("dy", yi, True),
        ("dx+", xi, True),
        ("dy-", yi, True),
        ("dxx", xi**2 / 2, False),
        ("dyy", yi**2 / 2, False),
        ("dxy", xi * yi, False),
        ("dxxx", xi**3 / 6, True),
    ]:
        h = big(name, 1.0)
        k = h.shape[0]
        corr = F.conv2d(torch.from_numpy(image.copy())[None, None], torch.from_numpy(h)[None, None])
        conv = convolve2d(image, h, mode="valid")
        centre = (n - k) // 2  # output index of the image centre (x = y = 0)
        sign = -1.0 if odd else 1.0  # odd total order: the flip changes the sign
        assert corr[0, 0, centre, centre].item() == pytest.approx(sign, abs=1e-10), name
        assert conv[centre, centre] == pytest.approx(1.0, abs=1e-10), name
    # the same for the paper-mode 7x7 weights: conv2d on x gives -R, R = sum_p h(p) (-p_x)
    h = masterkey_model(5, 1.0)
    x7, _ = coords(7)
    r = (h * -x7).sum()
    out = F.conv2d(torch.from_numpy(xi.copy())[None, None], torch.from_numpy(h)[None, None])
    np.testing.assert_allclose(out[0, 0].numpy(), -r, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------
# the 8 models


def test_masterkey_table():
    assert MASTERKEY_MODELS == {
        1: "dy+",
        2: "dx-",
        3: "dy-",
        4: "dx+",
        5: "dx",
        6: "dy",
        7: "mk7",
        8: "T",
    }
    for k, name in MASTERKEY_MODELS.items():
        kw = {"alpha": 0.4} if k == 7 else {}
        a = masterkey_model(k, 0.8, **kw)
        np.testing.assert_array_equal(a, model_kernel(f"mk{k}", 0.8, **kw))
        if k != 7:
            np.testing.assert_array_equal(a, model_kernel(name, 0.8))
    assert derivative_model is model_kernel


@pytest.mark.parametrize("mode", ["paper", "full"])
def test_model_is_separable_outer_product(mode):
    sx, sy = 0.7, 1.3
    for name, (ox, oy) in {
        "dx": ("x", None),
        "dyy": (None, "xx"),
        "dxy": ("x", "x"),
        "dx-": ("x-", None),
        "dy+": (None, "x+"),
    }.items():
        h = model_kernel(name, sx, sy, mode=mode)
        if mode == "paper":
            u = discrete_gaussian(sx, size=7)
            v = discrete_gaussian(sy, size=7)
            u = apply_1d(u, ox) if ox else u
            v = apply_1d(v, oy) if oy else v
        else:
            u = discrete_gaussian(sx, size=9 if ox else 7)
            v = discrete_gaussian(sy, size=9 if oy else 7)
            u = apply_1d(u, ox, boundary="none") if ox else u
            v = apply_1d(v, oy, boundary="none") if oy else v
        np.testing.assert_allclose(h, np.outer(v[::-1], u), rtol=0, atol=1e-16, err_msg=name)


def test_paper_mode_laplacian_uses_zero_padding():
    sigma = 0.9
    t2 = gaussian_2d(sigma)
    lap = correlate(t2, LAPLACE5, mode="constant", cval=0.0)
    np.testing.assert_allclose(model_kernel("lap", sigma), lap, rtol=0, atol=1e-15)
    np.testing.assert_allclose(
        masterkey_model(7, sigma, alpha=0.6),
        np.eye(7)[3][:, None] * np.eye(7)[3] - 0.6 * lap,
        rtol=0,
        atol=1e-15,
    )
    # full mode: the 5-point Laplacian of the full-support Gaussian, cropped
    t_big = gaussian_2d(sigma, size=9, epsilon=1e-8)
    lap_full = correlate(t_big, LAPLACE5, mode="constant")[1:-1, 1:-1]
    np.testing.assert_allclose(model_kernel("lap", sigma, mode="full"), lap_full, atol=1e-15)


def test_paper_vs_full_border_example():
    # the numeric example of docs/theory.md: model 4 (dx+) at sigma = 1, centre row
    paper = masterkey_model(4, 1.0)
    full = masterkey_model(4, 1.0, mode="full")
    np.testing.assert_allclose(paper[1:-1, 1:-1], full[1:-1, 1:-1], rtol=0, atol=1e-16)
    assert paper[3, 6] == 0.0
    t = discrete_gaussian(1.0, size=9)  # T(n), n = -4..4
    assert full[3, 6] == pytest.approx(t[4] * (t[8] - t[7]), abs=1e-16)
    assert full[3, 6] == pytest.approx(-0.003329, abs=1e-6)
    assert paper[3, 0] == pytest.approx(full[3, 0], abs=1e-16)


def test_model7_is_a_difference_of_gaussians():
    # semi-discrete diffusion: T(s + a) - T(s - a) = a nabla5 T(s) + O(a^3), so
    # K - alpha nabla5 T(s) ~ K + T(s - alpha) - T(s + alpha) (full mode)
    sigma = 1.2
    s = sigma**2
    delta = np.zeros((9, 9))
    delta[4, 4] = 1.0
    errors = []
    for alpha in (0.2, 0.1, 0.05):
        mk7 = masterkey_model(7, sigma, alpha=alpha, size=9, mode="full")
        approx = delta + dog(np.sqrt(s - alpha), np.sqrt(s + alpha), size=9, mode="full")
        errors.append(np.abs(mk7 - approx).max())
    assert errors[-1] < 1e-4
    assert 6.0 < errors[0] / errors[1] < 10.0 and 6.0 < errors[1] / errors[2] < 10.0  # O(a^3)
    # sum: the Laplacian of a mass-1 kernel sums to 0 (up to truncation at the border)
    assert big("mk7", 1.0, alpha=0.5).sum() == pytest.approx(1.0, abs=1e-12)


def test_dog_is_difference_of_gaussians():
    np.testing.assert_array_equal(dog(0.5, 1.5), gaussian_2d(0.5) - gaussian_2d(1.5))


# --------------------------------------------------------------------------------------
# batches and torch


def test_output_shapes_scalar_and_batch():
    # a scalar (Python float, 0-d array or 0-d tensor) gives [size, size]; a 1-D batch of
    # length B (even B = 1, even a non-contiguous view) gives [B, size, size]
    for scalar in (1.0, np.float64(1.0), np.array(1.0), torch.tensor(1.0, dtype=torch.float64)):
        assert tuple(model_kernel("dx", scalar).shape) == (7, 7), type(scalar)
        assert tuple(masterkey_model(7, scalar, alpha=0.5).shape) == (7, 7)
    assert model_kernel("dx", [1.0]).shape == (1, 7, 7)
    strided = np.array([0.5, 9.0, 1.5, 9.0])[::2]
    assert not strided.flags.c_contiguous
    batch = model_kernel("dxy", strided, size=5)
    assert batch.shape == (2, 5, 5)
    np.testing.assert_allclose(batch[1], model_kernel("dxy", 1.5, size=5), rtol=0, atol=1e-15)
    assert masterkey_model(7, 1.0, alpha=[0.2, 0.4, 0.6]).shape == (3, 7, 7)


def test_batch_equals_loop():
    sx = np.array([0.0, 0.4, 1.1, 2.5])
    sy = np.array([0.9, 0.0, 1.7, 0.3])
    for name in ["T", "dx", "dyy", "dxy", "dx+", "dy-", "lap", "mk3"]:
        for mode in ("paper", "full"):
            batch = model_kernel(name, sx, sy, mode=mode)
            assert batch.shape == (4, 7, 7)
            for i in range(4):
                one = model_kernel(name, sx[i], sy[i], mode=mode)
                np.testing.assert_allclose(batch[i], one, rtol=0, atol=1e-15)
    alphas = np.array([0.1, 0.5, 1.0, 2.0])
    batch = masterkey_model(7, sx, alpha=alphas)
    for i in range(4):
        np.testing.assert_allclose(
            batch[i], masterkey_model(7, sx[i], alpha=alphas[i]), rtol=0, atol=1e-15
        )
    # broadcasting a scalar against a batch
    np.testing.assert_allclose(
        masterkey_model(7, 1.0, alpha=alphas)[2], masterkey_model(7, 1.0, alpha=1.0), atol=1e-15
    )


def test_torch_equals_numpy():
    for name in ["T", "dx", "dxy", "dy+", "lap"]:
        ref = model_kernel(name, 0.8, 1.3)
        out = model_kernel(name, torch.tensor(0.8, dtype=torch.float64), 1.3)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
        np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-15)
    out32 = masterkey_model(7, torch.tensor([0.8], dtype=torch.float32), alpha=0.5)
    assert out32.dtype == torch.float32 and out32.shape == (1, 7, 7)
    np.testing.assert_allclose(
        out32[0].double().numpy(), masterkey_model(7, 0.8, alpha=0.5), rtol=0, atol=1e-6
    )


def test_gradcheck_models():
    sx = torch.tensor([0.6, 1.4], dtype=torch.float64, requires_grad=True)
    sy = torch.tensor([1.1, 0.7], dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor([0.3, 0.8], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: model_kernel("dxy", a, b), (sx, sy))
    assert torch.autograd.gradcheck(lambda a, b: masterkey_model(7, a, alpha=b), (sx, alpha))


def test_gradient_in_alpha_only():
    alpha = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    h = masterkey_model(7, 1.0, alpha=alpha)
    h.sum().backward()
    assert alpha.grad.item() == pytest.approx(-model_kernel("lap", 1.0).sum(), abs=1e-15)


# --------------------------------------------------------------------------------------
# parsing and bad input


def test_parse_model():
    assert parse_model("dxxy").order == (2, 1)
    assert parse_model("dyxx").order == (2, 1)
    assert parse_model("dxxxx").ops_x == ("xx", "xx")
    assert parse_model("dy+").ops_y == ("x+",) and parse_model("dy+").ops_x == ()
    assert parse_model("mk2").ops_x == ("x-",)
    assert parse_model("mk7").centre_surround and parse_model("lap").laplacian
    np.testing.assert_array_equal(model_kernel("dyx", 1.0), model_kernel("dxy", 1.0))


@pytest.mark.parametrize("bad", ["dz", "dxxxxx", "mk9", "mk0", "Dx", "gauss", "", "dx+y"])
def test_unknown_model_name(bad):
    with pytest.raises(ValueError, match="model name"):
        model_kernel(bad, 1.0)


def test_bad_arguments_name_the_argument():
    cases = [
        (dict(name="dx", sigma_x=-1.0), "sigma"),
        (dict(name="dx", sigma_x=1.0, sigma_y=float("nan")), "sigma"),
        (dict(name="dx", sigma_x=float("inf")), "sigma"),
        (dict(name="dx", sigma_x=1.0, size=6), "size"),
        (dict(name="dx", sigma_x=1.0, size=7.5), "size"),
        (dict(name="dx", sigma_x=1.0, method="gauss"), "method"),
        (dict(name="dx", sigma_x=1.0, mode="exact"), "mode"),
        (dict(name="dx", sigma_x=1.0, epsilon=1.0), "epsilon"),
        (dict(name="dx", sigma_x=1.0, epsilon=0.0), "epsilon"),
        (dict(name="mk7", sigma_x=1.0), "alpha"),
        (dict(name="mk7", sigma_x=1.0, alpha=float("nan")), "alpha"),
        (dict(name="dx", sigma_x=1.0, alpha=0.5), "alpha"),
        (dict(name="mk7", sigma_x=1.0, sigma_y=2.0, alpha=0.5), "sigma_y"),
    ]
    for kwargs, word in cases:
        kwargs = dict(kwargs)
        name = kwargs.pop("name")
        with pytest.raises(ValueError, match=word):
            model_kernel(name, **kwargs)
    for bad in (0, 9, 1.0, "1", True):
        with pytest.raises(ValueError, match="filter_type"):
            masterkey_model(bad, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        dog(-1.0, 1.0)
    with pytest.raises(ValueError, match="scales"):  # names the scales, not sigma_x
        gaussian_2d(np.ones((2, 2)))
