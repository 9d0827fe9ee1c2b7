"""1-D discretisations of the Gaussian kernel (docs/method.md#discretisations), for numpy and
torch alike.

Every formula here has one home: the computation is written once in torch (float64
internally), and numpy input is routed through it and returned as a numpy array. Pass a
torch tensor to get a tensor back (same dtype and device as the input, differentiable in
``sigma``); pass a float or a numpy array to get a float64 numpy array.

Conventions (see ``docs/theory.md``): ``sigma`` is a standard deviation; the theory's scale
parameter is the variance ``s = sigma**2``. Kernels are symmetric, so the 1-D tap order is
simply ``n = -R .. R`` from left to right.

The discrete analogue of the Gaussian, ``T(n; s) = exp(-s) I_n(s)``, is evaluated from its
Fourier transform ``exp(-s (1 - cos w))`` by an inverse real FFT whose length is chosen so
that the periodic aliasing ``sum_{m != 0} T(n + m N; s)`` lies below 1e-20. The result agrees
with ``scipy.special.ive`` to ~1e-16 in absolute terms (tested), costs one ``exp`` per
frequency instead of one Bessel function per tap, and runs on any torch device. Its exact
derivative comes from the semi-discrete diffusion equation
``dT/ds = (T(n-1) - 2 T(n) + T(n+1)) / 2``, i.e. ``dT/dsigma = sigma (T(n-1) - 2T(n) + T(n+1))``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.special import erfcinv

import scalespace_mk.limits as limits
from scalespace_mk._checks import check_choice, check_epsilon, check_sigma, check_size

__all__ = [
    "METHODS",
    "discrete_gaussian",
    "discrete_gaussian_rows",
    "fft_length",
    "gaussian_kernel",
    "kernel_radius",
    "truncation_error_1d",
]

METHODS = ("discgauss", "samplgauss", "normsamplgauss", "intgauss", "linintgauss")

ArrayLike = Any  # float, sequence, numpy array or torch tensor


def truncation_error_1d(epsilon: float = 1e-8, D: int = 1) -> float:
    """Relative 1-D truncation error for a D-dimensional separable filter.

    Parameters
    ----------
    epsilon : float
        Relative truncation error allowed for the whole D-dimensional filter, in (0, 1).
    D : int
        Number of dimensions over which the separable filter is applied (>= 1).

    Returns
    -------
    float
        ``1 - (1 - epsilon) ** (1 / D)`` (docs/method.md#discretisations).
    """
    epsilon = check_epsilon(epsilon)
    if isinstance(D, bool) or not isinstance(D, int | np.integer) or D < 1:
        raise ValueError(f"D must be a positive integer (the number of dimensions); got {D!r}")
    if D > limits.D_MAX:
        raise ValueError(
            f"D must be an integer from 1 to {limits.D_MAX} (the number of dimensions of the "
            f"separable filter, scalespace_mk.limits.D_MAX); got {D!r}"
        )
    eps1d = 1.0 - (1.0 - epsilon) ** (1.0 / D)
    if eps1d < 0.5 * limits.EPSILON_MIN:
        raise ValueError(
            f"epsilon = {epsilon!r} spread over D = {D} dimensions gives a 1-D truncation error "
            f"{eps1d:.3g}, below float64 precision ({0.5 * limits.EPSILON_MIN:g}); raise "
            "epsilon or lower D"
        )
    return eps1d


# --------------------------------------------------------------------------------------
# input handling


def _to_tensor(sigma: ArrayLike) -> tuple[torch.Tensor, bool, tuple[int, ...]]:
    """Return ``(sigma as a 1-D float64 tensor, came_from_torch, original batch shape)``."""
    if isinstance(sigma, torch.Tensor):
        if sigma.is_meta:
            raise ValueError(
                "sigma is a meta tensor (shape only, no values); pass a tensor with data"
            )
        if sigma.is_complex() or sigma.dtype == torch.bool:
            raise TypeError(f"sigma must be a real tensor; got dtype {sigma.dtype}")
        shape = tuple(sigma.shape)
        if len(shape) > 1:
            raise ValueError(f"sigma must be a scalar or a 1-D batch of scales; got shape {shape}")
        check_sigma("sigma", sigma)
        return sigma.reshape(-1).to(torch.float64), True, shape
    if sigma is None or isinstance(sigma, str | bytes) or np.iscomplexobj(sigma):
        raise TypeError(f"sigma must be a real number or a 1-D array of numbers; got {sigma!r}")
    try:
        arr = np.asarray(sigma, dtype=np.float64)
    except OverflowError:  # an int beyond the float range
        raise ValueError(
            f"sigma must be <= {limits.SIGMA_LIMIT:g} (scalespace_mk.limits.SIGMA_LIMIT); got an "
            "integer too large for a float"
        ) from None
    except (TypeError, ValueError):
        raise TypeError(
            f"sigma must be a number or a 1-D array of numbers; got {sigma!r}"
        ) from None
    if arr.ndim > 1:
        raise ValueError(f"sigma must be a scalar or a 1-D batch of scales; got shape {arr.shape}")
    check_sigma("sigma", arr)
    return torch.from_numpy(arr.reshape(-1).copy()), False, arr.shape


def _finish(kernel: torch.Tensor, like: torch.Tensor | None, from_torch: bool, shape) -> Any:
    """Reshape a ``[B, K]`` float64 result to the caller's batch shape and array type."""
    if len(shape) == 0:
        kernel = kernel[0]
    if from_torch:
        dtype = like.dtype if like is not None and like.is_floating_point() else torch.float64
        out = kernel.to(dtype)
        if dtype != torch.float64 and not torch.compiler.is_compiling():
            with torch.no_grad():
                if not bool(torch.isfinite(out).all()):
                    raise ValueError(
                        f"the kernel overflows sigma's dtype {dtype} (a tap above "
                        f"{torch.finfo(dtype).max:.3g}); pass sigma as a float64 tensor"
                    )
        return out
    return kernel.detach().numpy()


# --------------------------------------------------------------------------------------
# radii


def _gaussfiltsize(sigma: np.ndarray, eps1d: float) -> np.ndarray:
    """Continuous estimate ``sqrt(2 s) erfcinv(eps1d)`` of the radius (pyscsp's rule)."""
    return np.sqrt(2.0) * sigma * float(erfcinv(eps1d))


def kernel_radius(
    sigma: ArrayLike, *, method: str = "discgauss", epsilon: float = 1e-8, D: int = 1
) -> int | np.ndarray:
    """Radius R of the truncated kernel (it has 2 R + 1 taps).

    Parameters
    ----------
    sigma : float or array_like of shape [B]
        Standard deviation(s) of the kernel, >= 0 (``s = sigma**2``).
    method : str
        One of :data:`METHODS`.
    epsilon : float
        Relative truncation error for the whole D-dimensional separable filter, in (0, 1).
    D : int
        Dimension of the separable filter the 1-D kernel belongs to.

    Returns
    -------
    int or numpy.ndarray of int, shape [B]
        For ``discgauss`` the smallest R with ``T(0) + 2 sum_{n=1..R} T(n) >= 1 - eps1d``
        (accumulated mass, docs/method.md#discretisations); for the other methods pyscsp's
        ``ceil(1.1 sqrt(2 s) erfcinv(eps1d))``. ``eps1d = 1 - (1 - epsilon)**(1/D)``.
    """
    check_choice("method", method, METHODS)
    eps1d = truncation_error_1d(epsilon, D)
    sig, _, shape = _to_tensor(sigma)
    if method == "discgauss":
        with torch.no_grad():
            radius = _chunked_truncated_half(sig * sig, eps1d)[1].numpy()
    else:
        radius = np.ceil(1.1 * _gaussfiltsize(sig.numpy(), eps1d)).astype(np.int64)
    return int(radius[0]) if len(shape) == 0 else radius.astype(np.int64)


def _discgauss_truncated_half(
    s: torch.Tensor, eps1d: float, extra: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``T(0..L + extra; s)``, zero beyond each row's mass radius, with L large enough for
    every row, and the radii.

    The first window is pyscsp's estimate ``ceil(1 + 1.5 sqrt(2 s) erfcinv(eps1d))`` for the
    largest s; it grows until every row reaches the mass ``1 - eps1d`` (only needed for
    very small epsilon, where the estimate is short).
    """
    s_max = float(s.max()) if s.numel() else 0.0
    length = int(np.ceil(1 + 1.5 * _gaussfiltsize(np.sqrt(s_max), eps1d))) + 1
    while True:
        half = _discgauss_half(s, length + extra)
        radius = _mass_radius(half[:, : length + 1], eps1d)
        if int(radius.max()) <= length:
            keep = torch.arange(half.shape[1], device=s.device)[None, :] <= radius[:, None]
            return half * keep, radius
        length = 2 * length


def _chunked_truncated_half(
    s: torch.Tensor, eps1d: float, chunks: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_discgauss_truncated_half` for a large batch, in chunks of similar scale.

    Sorting the scales and giving each chunk its own window and FFT length costs about the
    mean scale instead of the largest one; rows are zero beyond their own radius either way.
    """
    if s.numel() < 1024:
        return _discgauss_truncated_half(s, eps1d)
    order = torch.argsort(s)
    parts = [_discgauss_truncated_half(s[idx], eps1d) for idx in order.chunk(chunks)]
    width = max(part[0].shape[1] for part in parts)
    half = torch.zeros(s.shape[0], width, dtype=s.dtype, device=s.device)
    radius = torch.empty(s.shape[0], dtype=torch.int64, device=s.device)
    for idx, (h, r) in zip(order.chunk(chunks), parts, strict=True):
        half[idx, : h.shape[1]] = h
        radius[idx] = r
    return half, radius


def _mass_radius(half: torch.Tensor, eps1d: float) -> torch.Tensor:
    """Per row, the smallest R whose accumulated two-sided mass reaches ``1 - eps1d``.

    ``half`` holds ``T(0..L)``; rows that do not reach the mass within it get ``L + 1``.
    """
    mass = torch.cumsum(torch.cat([half[:, :1], 2.0 * half[:, 1:]], dim=1), dim=1)
    return (mass < 1.0 - eps1d).sum(dim=1)


# --------------------------------------------------------------------------------------
# the discrete analogue of the Gaussian


def _fft_length(s_max: float, taps: int) -> int:
    """FFT length that keeps the periodic aliasing of T(.; s) below ~1e-20."""
    # T(n) aliases with T(N - n): N - (taps - 1) must lie beyond the tail where T < 1e-20.
    # (A floor of 16 taps makes small kernels of one scale come from one transform.)
    taps = max(taps, 16)
    tail = int(math.ceil(9.5 * math.sqrt(s_max))) + 12
    return _next_fast_length(taps + tail)


def _next_fast_length(n: int) -> int:
    """Smallest even 2^a 3^b 5^c >= n (a fast length for pocketfft and cuFFT)."""
    best = 1 << max(1, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n or m % 2:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _discgauss_half(s: torch.Tensor, radius: int, n_fft: int | None = None) -> torch.Tensor:
    """``T(n; s)`` for ``n = 0 .. radius`` as ``[B, radius + 1]`` float64 (no autograd)."""
    if n_fft is None:
        s_max = float(s.max()) if s.numel() else 0.0
        n_fft = _fft_length(s_max, radius + 1)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64, device=s.device)
    # 1 - cos(w) = 2 sin^2(w / 2), free of cancellation near w = 0 (matters for large s)
    one_minus_cos = 2.0 * torch.sin((math.pi / n_fft) * k) ** 2
    spectrum = torch.exp(-s[:, None] * one_minus_cos[None, :])
    values = torch.fft.irfft(spectrum, n=n_fft, dim=1)[:, : radius + 1]
    # T is positive; the transform leaves rounding noise of ~1e-17 in far tails
    return values.clamp_(min=0.0, max=1.0)


class _DiscreteGaussianHalf(torch.autograd.Function):
    """``T(0..R; sigma**2)`` with the exact derivative from the diffusion equation."""

    @staticmethod
    def forward(ctx, sigma: torch.Tensor, radius: int, n_fft: int | None):  # noqa: D102
        half = _discgauss_half(sigma * sigma, radius + 1, n_fft)
        ctx.save_for_backward(sigma, half)
        return half[:, : radius + 1]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        sigma, half = ctx.saved_tensors
        # T(n - 1) for n = 0..R, using the symmetry T(-1) = T(1)
        left = torch.cat([half[:, 1:2], half[:, :-2]], dim=1)
        second = left - 2.0 * half[:, :-1] + half[:, 1:]
        return (grad * second).sum(dim=1) * sigma, None, None


def _mirror(half: torch.Tensor) -> torch.Tensor:
    """``[B, R + 1]`` half kernel (n = 0..R) to the symmetric ``[B, 2R + 1]`` kernel."""
    return torch.cat([half[:, 1:].flip(1), half], dim=1)


def _crop_or_pad(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop or zero-pad ``[B, 2R + 1]`` to ``[B, size]`` (no renormalisation)."""
    have = kernel.shape[1]
    if have >= size:
        start = (have - size) // 2
        return kernel[:, start : start + size]
    pad = (size - have) // 2
    return torch.nn.functional.pad(kernel, (pad, pad))


def fft_length(sigma_max: float, size: int) -> int:
    """FFT length for :func:`discrete_gaussian_rows` at scales up to ``sigma_max``.

    Parameters
    ----------
    sigma_max : float
        Largest standard deviation the kernels will have (>= 0).
    size : int
        Odd number of taps.

    Returns
    -------
    int
        A fast transform length that keeps the periodic aliasing below ~1e-20 for every
        ``sigma <= sigma_max`` (including the extra tap the exact gradient needs). Fixing
        it once lets a module evaluate kernels without a host synchronisation.

    Raises
    ------
    ValueError
        If ``sigma_max`` lies outside ``[0, SIGMA_LIMIT]`` or ``size`` is not a positive
        odd integer (:mod:`scalespace_mk.limits`).
    """
    check_sigma("sigma_max", sigma_max)
    size = check_size(size, allow_none=False)
    return _fft_length(float(sigma_max) ** 2, size // 2 + 2)


def discrete_gaussian_rows(
    sigma: torch.Tensor, size: int, *, n_fft: int, eps1d: float = 1e-8
) -> torch.Tensor:
    """Epsilon-truncated discrete Gaussians ``[B, size]``: no checks, no host sync.

    The fast path behind :func:`discrete_gaussian` (which validates its input and then
    calls this), for modules that evaluate kernels in every forward pass.

    Parameters
    ----------
    sigma : torch.Tensor, shape [B]
        Standard deviations, >= 0 and <= the ``sigma_max`` of ``n_fft`` (not checked).
    size : int
        Odd number of taps (not checked).
    n_fft : int
        Transform length from :func:`fft_length`.
    eps1d : float
        1-D relative truncation error (:func:`truncation_error_1d`).

    Returns
    -------
    torch.Tensor, shape [B, size]
        Float64 kernels, taps ``n = -(size // 2) .. size // 2``; differentiable in sigma
        with the exact derivative of the diffusion equation.
    """
    radius = size // 2
    if sigma.requires_grad:
        half = _DiscreteGaussianHalf.apply(sigma.to(torch.float64), radius, n_fft)
    else:
        sig = sigma.to(torch.float64)
        half = _discgauss_half(sig * sig, radius, n_fft)
    # zero every tap beyond the row's own epsilon radius (docs/method.md#discretisations)
    with torch.no_grad():
        own = _mass_radius(half.detach(), eps1d)
        keep = torch.arange(radius + 1, device=sigma.device)[None, :] <= own[:, None]
    return _mirror(half * keep)


def _check_n_fft(n_fft: Any, size: int | None) -> None:
    """Refuse an FFT length that is not an integer in ``[size + 2, FFT_LENGTH_MAX]``."""
    low = (size or 1) + 2
    if (
        isinstance(n_fft, bool)
        or not isinstance(n_fft, int | np.integer)
        or not low <= n_fft <= limits.FFT_LENGTH_MAX
    ):
        raise ValueError(
            f"n_fft must be an integer from {low} to {limits.FFT_LENGTH_MAX} (use "
            f"fft_length(sigma_max, size)); got {n_fft!r}"
        )


def discrete_gaussian(
    sigma: ArrayLike,
    *,
    size: int | None = None,
    epsilon: float = 1e-8,
    D: int = 1,
    n_fft: int | None = None,
) -> Any:
    """Discrete analogue of the Gaussian kernel, ``T(n; s) = exp(-s) I_n(s)``.

    Parameters
    ----------
    sigma : float, array_like of shape [B], or torch.Tensor of shape [] or [B]
        Standard deviation(s), >= 0; ``s = sigma**2`` is the kernel's variance.
        ``sigma = 0`` gives the Kronecker delta.
    size : int, optional
        Odd number of taps. ``None``: the radius follows from ``epsilon`` (a batch shares the
        largest radius; rows are zero beyond their own). Given: the ``epsilon``-truncated
        kernel is centre-cropped or zero-padded to ``size`` taps and not renormalised, which
        for ``size=7`` is the paper mode of docs/method.md#discretisations.
    epsilon : float
        Relative truncation error for the whole D-dimensional separable filter, in (0, 1).
    D : int
        Dimension of the separable filter (the 1-D error is ``1 - (1 - epsilon)**(1/D)``).
    n_fft : int, optional
        FFT length override (advanced; default: chosen from the largest sigma so that the
        aliasing error is below 1e-20). Fixing it avoids a host sync under ``torch.compile``.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        Shape ``[K]`` for a scalar sigma, ``[B, K]`` for a batch; taps ``n = -R .. R`` from
        left to right. numpy input gives float64 numpy; tensor input gives a tensor of the
        input's floating dtype and device, differentiable in ``sigma`` with the exact
        derivative ``dT/dsigma = sigma (T(n-1) - 2 T(n) + T(n+1))``.

    Notes
    -----
    Sum 1 (up to the truncation), mean 0, variance exactly ``s``, values in [0, 1], the
    semigroup property ``T(s1) * T(s2) = T(s1 + s2)`` and no creation of new local extrema
    in 1-D signals (docs/method.md#discretisations). Values agree with
    ``scipy.special.ive(|n|, s)`` and pyscsp's ``make1Ddiscgaussfilter`` to 1e-12 or better
    for sigma in [0, 1e3].

    Examples
    --------
    >>> from scalespace_mk.scalespace.kernels import discrete_gaussian
    >>> discrete_gaussian(0.0, size=3).tolist()
    [0.0, 1.0, 0.0]
    >>> k = discrete_gaussian(1.0, epsilon=1e-15)
    >>> n = np.arange(len(k)) - len(k) // 2
    >>> round(float((k * n**2).sum()), 12)  # the variance is s
    1.0
    """
    size = check_size(size)
    eps1d = truncation_error_1d(epsilon, D)
    sig, from_torch, shape = _to_tensor(sigma)
    if sig.numel() == 0:
        raise ValueError("sigma is empty; pass at least one scale")
    if n_fft is not None:
        _check_n_fft(n_fft, size)
    if size is not None:
        if n_fft is None:
            n_fft = fft_length(float(sig.detach().max()), size)
        kernel = discrete_gaussian_rows(sig, size, n_fft=n_fft, eps1d=eps1d)
        return _finish(kernel, sigma if from_torch else None, from_torch, shape)
    needs_grad = from_torch and sig.requires_grad
    with torch.no_grad():
        window, own_radius = _chunked_truncated_half(sig.detach() * sig.detach(), eps1d)
    radius = int(own_radius.max())
    if needs_grad or n_fft is not None:
        kernel = discrete_gaussian_rows(
            sig,
            2 * radius + 1,
            n_fft=n_fft or fft_length(float(sig.detach().max()), 2 * radius + 1),
            eps1d=eps1d,
        )
    else:  # reuse the evaluation that found the radius (rows already truncated)
        kernel = _mirror(window[:, : radius + 1])
    return _finish(kernel, sigma if from_torch else None, from_torch, shape)


# --------------------------------------------------------------------------------------
# the other discretisations (pyscsp's names and formulas)


def _sampled_family(sig: torch.Tensor, method: str, radius: int) -> torch.Tensor:
    """Half kernels ``[B, radius + 1]`` for the sampled and integrated Gaussians.

    Written to stay finite for every ``sigma >= 0``, subnormal included: the normalised
    sampled Gaussian is built from ``exp(-n**2 / (2 s))`` (the prefactor cancels), and the
    ``s * g(x)`` term of the linearly integrated Gaussian as ``sigma exp(-x**2 / (2 s)) /
    sqrt(2 pi)``, so neither forms ``inf / inf`` or ``0 * inf``. Each tends to the unit
    impulse as ``sigma -> 0``. The sampled Gaussian itself has the centre tap
    ``1 / (sqrt(2 pi) sigma)``, which exceeds the float64 range below sigma ~ 2.2e-309;
    :func:`gaussian_kernel` refuses those scales.
    """
    n = torch.arange(radius + 1, dtype=torch.float64, device=sig.device)[None, :]
    zero = sig[:, None] == 0
    safe = torch.where(zero, torch.ones_like(sig[:, None]), sig[:, None])
    delta = (n == 0).to(torch.float64).expand(sig.shape[0], -1)

    def shape(x):  # exp(-x**2 / (2 s)), in [0, 1]
        return torch.exp(-0.5 * (x / safe) ** 2)

    def gauss(x):
        return shape(x) / (math.sqrt(2 * math.pi) * safe)

    def phi(x):  # scaled error function: the Gaussian's distribution function
        return 0.5 * (1.0 + torch.erf(x / (math.sqrt(2.0) * safe)))

    if method == "samplgauss":
        values = gauss(n)
    elif method == "normsamplgauss":
        values = shape(n)  # normalised by the caller: 1 / (sqrt(2 pi) sigma) cancels
    elif method == "intgauss":
        values = phi(n + 0.5) - phi(n - 0.5)
    else:  # linintgauss: the Gaussian integrated against a triangle of width 2

        def xphi(x):
            return x * phi(x)

        def s_gauss(x):  # s * g(x) = sigma * exp(-x**2 / (2 s)) / sqrt(2 pi), never 0 * inf
            return safe * shape(x) / math.sqrt(2 * math.pi)

        values = (
            xphi(n + 1)
            - 2 * xphi(n)
            + xphi(n - 1)
            + (s_gauss(n + 1) - 2 * s_gauss(n) + s_gauss(n - 1))
        )
    return torch.where(zero, delta, values)


#: Below this sigma the sampled Gaussian's centre tap ``1 / (sqrt(2 pi) sigma)`` overflows
#: float64 (it is ~1.8e308 here).
SAMPLGAUSS_SIGMA_MIN = (1.0 + 1e-9) / math.sqrt(2 * math.pi) / 1.7976931348623157e308


def gaussian_kernel(
    sigma: ArrayLike,
    *,
    method: str = "discgauss",
    size: int | None = None,
    epsilon: float = 1e-8,
    D: int = 1,
) -> Any:
    """1-D discrete approximation of the Gaussian by one of five methods
    (docs/method.md#discretisations).

    Parameters
    ----------
    sigma : float, array_like of shape [B], or torch.Tensor of shape [] or [B]
        Standard deviation(s), >= 0 (``s = sigma**2``); 0 gives the Kronecker delta for
        every method.
    method : str
        ``"discgauss"`` (discrete analogue, variance exactly s), ``"samplgauss"`` (sampled;
        sum != 1), ``"normsamplgauss"`` (sampled, divided by its sum), ``"intgauss"``
        (integrated over each pixel, variance ~ s + 1/12) or ``"linintgauss"`` (integrated
        against a triangle of width 2, variance ~ s + 1/6).
    size : int, optional
        Odd number of taps; the truncated kernel is centre-cropped or zero-padded to it
        (not renormalised). ``None``: the radius follows from ``epsilon``.
    epsilon : float
        Relative truncation error for the D-dimensional separable filter, in (0, 1).
        ``discgauss`` truncates by accumulated mass (docs/method.md#discretisations); the other
        methods use pyscsp's radius ``ceil(1.1 sqrt(2 s) erfcinv(eps1d))``.
    D : int
        Dimension of the separable filter.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``[K]`` for a scalar sigma, ``[B, K]`` for a batch, taps ``n = -R .. R``. numpy in,
        float64 numpy out; tensor in, tensor out (same dtype/device, differentiable).

    Notes
    -----
    ``normsamplgauss`` is normalised over its own epsilon radius before any cropping, as in
    pyscsp. Values equal pyscsp's ``make1D*filter`` functions to 1e-12 (tested).
    """
    check_choice("method", method, METHODS)
    if method == "discgauss":
        return discrete_gaussian(sigma, size=size, epsilon=epsilon, D=D)
    size = check_size(size)
    eps1d = truncation_error_1d(epsilon, D)
    sig, from_torch, shape = _to_tensor(sigma)
    if sig.numel() == 0:
        raise ValueError("sigma is empty; pass at least one scale")
    if method == "samplgauss":
        with torch.no_grad():
            tiny = (sig > 0) & (sig < SAMPLGAUSS_SIGMA_MIN)
            if bool(tiny.any()):
                raise ValueError(
                    f"sigma = {float(sig[tiny][0]):.3g} is too small for method 'samplgauss': "
                    "its centre tap 1 / (sqrt(2 pi) sigma) exceeds the float64 maximum; use "
                    "sigma = 0 (the unit impulse), a sigma >= "
                    f"{SAMPLGAUSS_SIGMA_MIN:.3g}, or method 'normsamplgauss' (finite for every "
                    "sigma)"
                )
    with torch.no_grad():
        own = torch.ceil(1.1 * math.sqrt(2.0) * float(erfcinv(eps1d)) * sig).to(torch.int64)
    radius = int(own.max()) if size is None else size // 2
    # normalisation of normsamplgauss needs the kernel over its own radius
    work = max(radius, int(own.max())) if method == "normsamplgauss" else radius
    half = _sampled_family(sig, method, work)
    keep = torch.arange(work + 1, device=sig.device)[None, :] <= own[:, None]
    half = half * keep
    if method == "normsamplgauss":
        half = half / (half[:, :1] + 2.0 * half[:, 1:].sum(dim=1, keepdim=True))
    kernel = _mirror(half[:, : radius + 1])
    if size is not None:
        kernel = _crop_or_pad(kernel, size)
    return _finish(kernel, sigma if from_torch else None, from_torch, shape)
