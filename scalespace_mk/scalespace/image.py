"""The scale-space of an image: smoothing, (scale-normalised) derivatives, N-jet, Laplacian, DoG.

Built from the package's one home for each formula: the 1-D kernels of
:mod:`scalespace_mk.scalespace.kernels` (the discrete analogue of the Gaussian by default,
or any of the other discretisations in ``kernels.METHODS``), applied separably along x and
y, and the difference stencils of :mod:`scalespace_mk.scalespace.operators` applied to the
smoothed image. The computation is written once in torch (float64 for numpy input); numpy
input gives numpy output, tensor input gives a tensor on the input's device and dtype,
differentiable in the image and in ``sigma``.

Conventions (docs/theory.md): an image is ``[..., H, W]`` (any leading batch axes), rows
top to bottom and columns left to right; x points right and **y points up** (for centre
row m, ``y = m - r``), so ``dy`` at row r is ``(L[r - 1] - L[r + 1]) / 2``. ``sigma`` is a
standard deviation in pixels (the scale is ``s = sigma**2``). Values agree with pyscsp's
``scspconv`` and ``applyNjetfcn`` (``scipy.ndimage`` ``mode='reflect'``) to 1e-12 (tested).

Functions
---------
:func:`scale_space`
    ``L(.; s) = T(.; s) * f`` at one or several scales.
:func:`derivative`
    ``sigma**(gamma (nx + ny)) d_x^nx d_y^ny L`` (no normalisation for ``gamma=None``).
:func:`njet`
    All partial derivatives up to an order (names :func:`~scalespace_mk.scalespace.jets.jet_names`).
:func:`laplacian`
    ``L_xx + L_yy`` (the five-point Laplacian of the smoothed image), optionally normalised.
:func:`difference_of_gaussians`
    ``L(.; s_{i+1}) - L(.; s_i)`` between consecutive scales.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from scalespace_mk._checks import check_choice
from scalespace_mk.scalespace.jets import jet_indices
from scalespace_mk.scalespace.kernels import METHODS, gaussian_kernel
from scalespace_mk.scalespace.operators import difference_stencil

__all__ = [
    "IMAGE_BOUNDARIES",
    "METHOD_ALIASES",
    "derivative",
    "difference_of_gaussians",
    "laplacian",
    "njet",
    "scale_space",
]

#: how the image is extended beyond its border: scipy.ndimage's ``reflect`` (``d c b a |
#: a b c d | d c b a``, pyscsp's choice), ``wrap`` (periodic) and ``zero``
IMAGE_BOUNDARIES = ("reflect", "wrap", "zero")


# --------------------------------------------------------------------------------------
# input checks and conversion


def _as_image(image: Any) -> tuple[torch.Tensor, bool]:
    """``(image as a tensor, came_from_numpy)``; numpy input becomes float64."""
    if isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            raise TypeError(
                f"image must be a floating-point tensor; got dtype {image.dtype} "
                "(convert with image.double() or image.float())"
            )
        t, from_numpy = image, False
    else:
        try:
            arr = np.asarray(image, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"image must be a numeric array [..., H, W]; got {type(image)}"
            ) from None
        t, from_numpy = torch.from_numpy(np.ascontiguousarray(arr)), True
    if t.ndim < 2:
        raise ValueError(
            f"image must have shape [..., H, W] (2-D or more); got shape {tuple(t.shape)}"
        )
    if t.shape[-1] < 1 or t.shape[-2] < 1:
        raise ValueError(f"image must not be empty; got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t.detach()).all()):
        raise ValueError("image holds NaN or infinite values; the scale-space needs finite values")
    return t, from_numpy


def _sigmas(sigma: Any, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(sigma as a 1-D float64 tensor on the image's device, was_scalar)``."""
    if isinstance(sigma, torch.Tensor):
        sig = sigma.to(device=like.device, dtype=torch.float64)
    else:
        try:
            sig = torch.as_tensor(np.asarray(sigma, dtype=np.float64), device=like.device)
        except (TypeError, ValueError):
            raise TypeError(
                f"sigma must be a number or a 1-D array of numbers; got {sigma!r}"
            ) from None
    if sig.ndim > 1:
        raise ValueError(
            f"sigma must be a number or a 1-D array of scales; got shape {tuple(sig.shape)}"
        )
    if sig.numel() == 0:
        raise ValueError("sigma is empty; pass at least one scale (a standard deviation, pixels)")
    if not bool(torch.isfinite(sig.detach()).all()) or bool((sig.detach() < 0).any()):
        raise ValueError(
            f"sigma must be finite and >= 0 (standard deviations in pixels); got {sigma!r}"
        )
    return sig.reshape(-1), sig.ndim == 0


#: plain-word names accepted for the discretisations of ``kernels.METHODS``
METHOD_ALIASES = {
    "discrete": "discgauss",
    "sampled": "samplgauss",
    "normalized_sampled": "normsamplgauss",
    "integrated": "intgauss",
    "linear_integrated": "linintgauss",
}


def _check_options(method: str, boundary: str) -> str:
    """The method's name in ``kernels.METHODS`` (aliases resolved); checks both options."""
    method = METHOD_ALIASES.get(method, method) if isinstance(method, str) else method
    check_choice("method", method, METHODS + tuple(METHOD_ALIASES))
    check_choice("boundary", boundary, IMAGE_BOUNDARIES)
    return method


def _finish(out: torch.Tensor, from_numpy: bool) -> Any:
    return out.detach().numpy() if from_numpy else out


# --------------------------------------------------------------------------------------
# separable correlation along one axis


def _pad_index(length: int, before: int, after: int, boundary: str, device: Any) -> torch.Tensor:
    """Indices into an axis of ``length`` that extend it by ``before``/``after`` samples."""
    i = torch.arange(-before, length + after, device=device)
    if boundary == "wrap":
        return torch.remainder(i, length)
    j = torch.remainder(i, 2 * length)  # reflect: period 2 N, mirrored halves
    return torch.where(j >= length, 2 * length - 1 - j, j)


def _correlate_last(x: torch.Tensor, taps: torch.Tensor, boundary: str) -> torch.Tensor:
    """Correlate the last axis of ``x`` ``[M, C, L]`` with ``taps`` ``[C, K]`` (odd K),
    channel by channel: ``out[..., n] = sum_k taps[k] x[..., n + k - K // 2]``."""
    k = taps.shape[-1]
    h = k // 2
    length = x.shape[-1]
    if boundary == "zero":
        padded = F.pad(x, (h, h))
    else:
        padded = x.index_select(-1, _pad_index(length, h, h, boundary, x.device))
    return F.conv1d(padded, taps[:, None, :].to(x.dtype), groups=taps.shape[0])


def _along(x: torch.Tensor, taps: torch.Tensor, axis: int, boundary: str) -> torch.Tensor:
    """Correlate axis ``axis`` (-1: x, -2: rows) of ``x`` ``[B, C, H, W]`` with the per-
    channel ``taps`` ``[C, K]``."""
    b, c, h, w = x.shape
    if axis == -1:
        flat = x.permute(0, 2, 1, 3).reshape(b * h, c, w)  # [B H, C, W]
        return _correlate_last(flat, taps, boundary).reshape(b, h, c, w).permute(0, 2, 1, 3)
    flat = x.permute(0, 3, 1, 2).reshape(b * w, c, h)  # [B W, C, H]
    return _correlate_last(flat, taps, boundary).reshape(b, w, c, h).permute(0, 2, 3, 1)


def _smooth(
    t: torch.Tensor, sig: torch.Tensor, method: str, epsilon: float, boundary: str
) -> torch.Tensor:
    """``[S, ..., H, W]``: the image smoothed at each scale (separable, x then y)."""
    kernel = gaussian_kernel(sig, method=method, epsilon=epsilon, D=2)  # [S, K], float64
    if kernel.ndim == 1:
        kernel = kernel[None]
    kernel = kernel.to(t.dtype)
    s = kernel.shape[0]
    batch = t.shape[:-2]
    # scales become the channel axis: [B, S, H, W]
    x = t.reshape(-1, 1, *t.shape[-2:]).expand(-1, s, -1, -1)
    x = _along(x, kernel, -1, boundary)
    x = _along(x, kernel, -2, boundary)
    return x.movedim(1, 0).reshape(s, *batch, *t.shape[-2:])


def _difference(x: torch.Tensor, nx: int, ny: int, boundary: str) -> torch.Tensor:
    """Central differences ``d_x^nx d_y^ny`` (operators.difference_stencil) of ``x``
    ``[..., H, W]``, each axis padded once by ``boundary`` (pyscsp's masks)."""
    flat = x.reshape(-1, 1, *x.shape[-2:])
    for n, axis in ((nx, -1), (ny, -2)):
        if n == 0:
            continue
        name = "x" * n
        taps = torch.as_tensor(difference_stencil(name), dtype=x.dtype, device=x.device)
        if axis == -2:  # y up: offset +k in y is row -k
            taps = taps.flip(0)
        flat = _along(flat, taps[None], axis, boundary)
    return flat.reshape(x.shape)


def _check_order(order: Any) -> tuple[int, int]:
    try:
        nx, ny = order
    except (TypeError, ValueError):
        raise TypeError(
            f"order must be a pair (nx, ny) of derivative orders; got {order!r}"
        ) from None
    for name, n in (("nx", nx), ("ny", ny)):
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"order: {name} must be an integer >= 0; got {n!r}")
    if nx + ny > 4 or max(nx, ny) > 4:
        raise ValueError(
            f"order: nx + ny must be at most 4 (stencils up to order 4); got {order!r}"
        )
    return int(nx), int(ny)


def _check_gamma(gamma: Any) -> float | None:
    if gamma is None:
        return None
    if isinstance(gamma, bool) or not isinstance(gamma, int | float | np.floating | np.integer):
        raise TypeError(f"gamma must be a number or None; got {gamma!r}")
    if not np.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite number >= 0 (1: scale invariance); got {gamma!r}")
    return float(gamma)


def _normalise(x: torch.Tensor, sig: torch.Tensor, order: int, gamma: float | None) -> torch.Tensor:
    if gamma is None or order == 0:
        return x
    factor = sig.to(x.dtype) ** (gamma * order)
    return x * factor.reshape(-1, *([1] * (x.ndim - 1)))


def _squeeze(out: torch.Tensor, scalar: bool) -> torch.Tensor:
    return out[0] if scalar else out


# --------------------------------------------------------------------------------------
# public functions


def scale_space(
    image: Any,
    sigma: Any,
    *,
    method: str = "discgauss",
    epsilon: float = 1e-8,
    boundary: str = "reflect",
) -> Any:
    """Scale-space representation ``L(.; s) = T(.; s) * f`` of an image.

    Parameters
    ----------
    image : array_like or torch.Tensor, shape [..., H, W]
        Image(s), rows top to bottom (y up: ``y = m - r``). Leading axes are a batch.
        numpy input is computed in float64; a tensor keeps its dtype and device.
    sigma : float, sequence of floats [S], or torch.Tensor [] or [S]
        Standard deviations in pixels, >= 0 (``s = sigma**2``); 0 returns the image.
    method : str
        The 1-D discretisation (:data:`scalespace_mk.scalespace.kernels.METHODS`):
        ``"discgauss"`` (default, the discrete analogue of the Gaussian: semigroup, no new
        extrema, variance exactly s), ``"samplgauss"``, ``"normsamplgauss"``, ``"intgauss"``
        or ``"linintgauss"``; or the same as plain words (:data:`METHOD_ALIASES`:
        ``"discrete"``, ``"sampled"``, ``"normalized_sampled"``, ``"integrated"``,
        ``"linear_integrated"``).
    epsilon : float
        Relative truncation error of the 2-D separable kernel (as pyscsp's ``epsilon``).
    boundary : {"reflect", "wrap", "zero"}
        Extension beyond the border: ``reflect`` (scipy.ndimage and pyscsp), ``wrap``
        (periodic) or ``zero``.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``[..., H, W]`` for a scalar sigma, ``[S, ..., H, W]`` for S scales.

    Examples
    --------
    >>> import numpy as np
    >>> from scalespace_mk.scalespace.image import scale_space
    >>> f = np.zeros((9, 9)); f[4, 4] = 1.0
    >>> L = scale_space(f, [1.0, 2.0])
    >>> L.shape, round(float(L[0].sum()), 12)
    ((2, 9, 9), 1.0)
    """
    method = _check_options(method, boundary)
    t, from_numpy = _as_image(image)
    sig, scalar = _sigmas(sigma, t)
    return _finish(_squeeze(_smooth(t, sig, method, epsilon, boundary), scalar), from_numpy)


def derivative(
    image: Any,
    sigma: Any,
    order: tuple[int, int],
    *,
    gamma: float | None = None,
    method: str = "discgauss",
    epsilon: float = 1e-8,
    boundary: str = "reflect",
) -> Any:
    """Scale-space derivative ``sigma**(gamma (nx + ny)) d_x^nx d_y^ny L(.; s)`` of an image.

    Parameters
    ----------
    image, sigma, method, epsilon, boundary
        As in :func:`scale_space`.
    order : (int, int)
        ``(nx, ny)``: orders along x (right) and y (up), ``nx + ny <= 4``. The differences
        are the central stencils of :func:`scalespace_mk.scalespace.operators.difference_stencil`
        (``x``, ``xx``, ``xxx``, ``xxxx``), applied to the smoothed image.
    gamma : float, optional
        Scale normalisation: the derivative is multiplied by ``sigma**(gamma * (nx + ny))``
        (Lindeberg's gamma-normalised derivatives; ``gamma=1`` makes them scale invariant).
        ``None`` (default): not normalised.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``[..., H, W]`` for a scalar sigma, ``[S, ..., H, W]`` for S scales.
    """
    method = _check_options(method, boundary)
    nx, ny = _check_order(order)
    g = _check_gamma(gamma)
    t, from_numpy = _as_image(image)
    sig, scalar = _sigmas(sigma, t)
    smooth = _smooth(t, sig, method, epsilon, boundary)
    out = _normalise(_difference(smooth, nx, ny, boundary), sig, nx + ny, g)
    return _finish(_squeeze(out, scalar), from_numpy)


def njet(
    image: Any,
    sigma: Any,
    order: int = 2,
    *,
    gamma: float | None = None,
    method: str = "discgauss",
    epsilon: float = 1e-8,
    boundary: str = "reflect",
) -> Any:
    """The N-jet of an image: every partial derivative up to ``order`` at each scale.

    Parameters
    ----------
    image, sigma, gamma, method, epsilon, boundary
        As in :func:`derivative`.
    order : int
        Highest total order, 0 to 4.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``[J, ..., H, W]`` for a scalar sigma, ``[J, S, ..., H, W]`` for S scales; entry j is
        the derivative ``jet_indices(order)[j]`` named ``jet_names(order)[j]``
        (:mod:`scalespace_mk.scalespace.jets`: ``T, dx, dy, dxx, dxy, dyy, ...``).
    """
    method = _check_options(method, boundary)
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or not 0 <= order <= 4:
        raise ValueError(f"order must be an integer from 0 to 4; got {order!r}")
    g = _check_gamma(gamma)
    t, from_numpy = _as_image(image)
    sig, scalar = _sigmas(sigma, t)
    smooth = _smooth(t, sig, method, epsilon, boundary)
    parts = [
        _normalise(_difference(smooth, nx, ny, boundary), sig, nx + ny, g)
        for nx, ny in jet_indices(int(order))
    ]
    out = torch.stack([_squeeze(p, scalar) for p in parts])
    return _finish(out, from_numpy)


def laplacian(
    image: Any,
    sigma: Any,
    *,
    gamma: float | None = None,
    method: str = "discgauss",
    epsilon: float = 1e-8,
    boundary: str = "reflect",
) -> Any:
    """Laplacian ``sigma**(2 gamma) (L_xx + L_yy)`` of the scale-space of an image.

    ``L_xx + L_yy`` is the five-point Laplacian of the smoothed image (pyscsp's
    ``'Laplace'``). For the discrete analogue, ``dL/ds = (L_xx + L_yy) / 2`` exactly (the
    semi-discrete diffusion equation), which :func:`difference_of_gaussians` approximates.

    Parameters and Returns as in :func:`derivative` (``gamma=1``: ``s * Laplacian``, the
    scale-normalised Laplacian of blob detection).
    """
    method = _check_options(method, boundary)
    g = _check_gamma(gamma)
    t, from_numpy = _as_image(image)
    sig, scalar = _sigmas(sigma, t)
    smooth = _smooth(t, sig, method, epsilon, boundary)
    lap = _difference(smooth, 2, 0, boundary) + _difference(smooth, 0, 2, boundary)
    return _finish(_squeeze(_normalise(lap, sig, 2, g), scalar), from_numpy)


def difference_of_gaussians(
    image: Any,
    sigma: Any,
    *,
    method: str = "discgauss",
    epsilon: float = 1e-8,
    boundary: str = "reflect",
) -> Any:
    """Differences of Gaussians ``L(.; s_{i+1}) - L(.; s_i)`` between consecutive scales.

    Parameters
    ----------
    image, method, epsilon, boundary
        As in :func:`scale_space`.
    sigma : sequence of floats [S], S >= 2, or torch.Tensor [S]
        Standard deviations in pixels (increasing for the usual sign: a DoG approximates
        ``(s_{i+1} - s_i) / 2`` times the Laplacian, :func:`laplacian`).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``[S - 1, ..., H, W]``.
    """
    method = _check_options(method, boundary)
    t, from_numpy = _as_image(image)
    sig, scalar = _sigmas(sigma, t)
    if scalar or sig.numel() < 2:
        raise ValueError(
            f"sigma must hold at least two scales for a difference of Gaussians; got {sigma!r}"
        )
    smooth = _smooth(t, sig, method, epsilon, boundary)
    return _finish(smooth[1:] - smooth[:-1], from_numpy)
