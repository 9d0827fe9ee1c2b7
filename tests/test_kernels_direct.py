"""The discrete Gaussian's few-tap route (a cosine sum of ``S - 1`` instead of an FFT,
``kernels._discgauss_half`` for up to ``_DIRECT_TAPS`` taps) against the FFT route and
against ``T(n; s) = exp(-s) I_n(s)`` (scipy.special.ive)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ive

from scalespace_mk.scalespace import kernels
from scalespace_mk.scalespace.kernels import _discgauss_half, _fft_length, discrete_gaussian


def _fft_route(s: torch.Tensor, radius: int, n_fft: int) -> torch.Tensor:
    """The same taps by the FFT (the route for more than ``_DIRECT_TAPS`` taps)."""
    return _discgauss_half(s, kernels._DIRECT_TAPS + 4, n_fft)[:, : radius + 1]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 5.0), min_size=1, max_size=20), st.integers(0, 7))
def test_direct_taps_equal_the_fft_and_bessel(sigmas, radius):
    radius = min(radius, kernels._DIRECT_TAPS - 1)
    s = torch.tensor(sigmas, dtype=torch.float64) ** 2
    n_fft = _fft_length(float(s.max()), radius + 1)
    assert n_fft <= kernels._DIRECT_FFT_MAX  # the cosine sum serves these scales
    direct = _discgauss_half(s, radius, n_fft)
    assert direct.shape == (len(sigmas), radius + 1)
    np.testing.assert_allclose(direct, _fft_route(s, radius, n_fft), rtol=0, atol=1e-15)
    exact = ive(np.arange(radius + 1)[None, :], s.numpy()[:, None])
    np.testing.assert_allclose(direct, exact, rtol=0, atol=1e-15)


def test_direct_taps_are_exact_at_zero_and_accurate_when_small():
    s = torch.tensor([0.0, 1e-300, 1e-12, 1e-6, 1e-3, 0.01, 0.1, 0.5])
    half = _discgauss_half(s.to(torch.float64), 4, 64).numpy()
    np.testing.assert_array_equal(half[0], [1.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(half[1], [1.0, 0.0, 0.0, 0.0, 0.0])
    exact = ive(np.arange(5)[None, :], s.numpy()[:, None].astype(np.float64))
    big = exact > 1e-10  # the small taps of small scales: relative accuracy (S - 1)
    rel = np.abs(half - exact)[big] / exact[big]
    assert rel.max() < 1e-7, rel.max()


def test_seven_tap_kernels_keep_their_properties():
    sig = np.linspace(0.0, 3.5, 71)
    k = discrete_gaussian(sig, size=7, epsilon=1e-15)
    np.testing.assert_allclose(k, k[:, ::-1], rtol=0, atol=0)  # symmetric
    n = np.arange(-3, 4)
    exact = ive(np.abs(n)[None, :], (sig**2)[:, None])
    np.testing.assert_allclose(k, exact, rtol=0, atol=1e-15)
    assert (k >= 0).all() and (k <= 1).all()


def test_long_transforms_keep_the_fft():
    s = torch.tensor([64.0, 1.0], dtype=torch.float64)  # sigma = 8: n_fft > _DIRECT_FFT_MAX
    n_fft = _fft_length(64.0, 5)
    assert n_fft > kernels._DIRECT_FFT_MAX
    spectrum = torch.exp(-s[:, None] * (2.0 * torch.sin(
        (np.pi / n_fft) * torch.arange(n_fft // 2 + 1, dtype=torch.float64)) ** 2)[None, :])
    fft = torch.fft.irfft(spectrum, n=n_fft, dim=1)[:, :5].clamp(0.0, 1.0)
    assert torch.equal(_discgauss_half(s, 4, n_fft), fft)
