"""Depthwise convolution layers whose kernels are the idealised master-key models.

Drop-in replacements for ``nn.Conv2d(C, C, k, padding=k // 2, groups=C)`` (input and output
``[B, C, H, W]``), in the order functional first, thin module second:

- :func:`analytic_basis_kernels` / :func:`analytic_depthwise_kernels`: every channel's
  kernel ``gain * g + offset`` in one vectorised step, where ``g`` is the model of
  docs/method.md#models
  (:func:`scalespace_mk.scalespace.models.masterkey_model`) of the channel's type (1-8) at its
  own ``sigma_x``, ``sigma_y`` (and ``alpha`` for type 7);
- :class:`AnalyticDepthwiseConv2d`: per-channel types with learnable (or frozen) scales,
  gain, offset and bias (docs/method.md#networks, experiment 3);
- :class:`MasterKeyDepthwiseConv2d`: each channel one of a set of frozen filters with a
  per-channel ``a * x + b`` (docs/method.md#networks, experiment 2, variants ``"ab"`` and
  ``"f+b"``);
- conversion: :meth:`AnalyticDepthwiseConv2d.from_census`,
  :meth:`AnalyticDepthwiseConv2d.from_conv`, :func:`to_conv2d` (export to a plain
  ``nn.Conv2d`` for deployment) and :func:`make_dwconv` (the factory used by
  :mod:`scalespace_mk.networks`).

Conventions (``docs/theory.md``): kernels are stored depthwise weights ``[C, 1, k, k]``,
cross-correlation kernels used by ``F.conv2d`` with no flip, rows top to bottom, ``x = c - m``
and ``y = m - r`` (y points **up**) for the centre index ``m = k // 2``. ``sigma`` is a
standard deviation; the theory's scale is ``s = sigma**2``.

Scales, gradients and precision. Kernels are built in float64 from the exact discrete
Gaussian of :mod:`scalespace_mk.scalespace.kernels` (its derivative in sigma comes from the
semi-discrete diffusion equation, not from autograd through an FFT) and cast to the
caller's dtype at the end. Scales are clamped to ``[0, sigma_max]`` (default 8, far beyond
what a 7-tap kernel resolves) so that the FFT length is a constant: no host
synchronisation, and ``torch.compile`` sees static shapes.

Caching. A module keeps its last kernel while nothing it depends on can change: whenever
autograd will not need the kernel's graph (``torch.no_grad()``/``inference_mode``, or every
kernel parameter frozen). With frozen scales but learnable gain/offset, the model part ``g``
is cached and only ``gain * g + offset`` is recomputed. Entries are keyed on each tensor's
storage and version counter (``load_state_dict``, ``.to()``, optimiser steps and in-place
edits under ``torch.no_grad()`` all invalidate them) and dropped by ``train()``/``eval()``
and ``.to()``. Edits through ``.data`` bypass the version counter: call
:meth:`clear_cache` after them. The cache is a plain attribute, never a buffer.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import scalespace_mk.limits as limits
from scalespace_mk._checks import check_choice, check_device, check_nonneg, check_size
from scalespace_mk.scalespace import kernels as _kernels
from scalespace_mk.scalespace.models import MODES
from scalespace_mk.scalespace.operators import apply_1d

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_SCALES",
    "DWCONV_KINDS",
    "SIGMA_MAX",
    "AnalyticDepthwiseConv2d",
    "MasterKeyDepthwiseConv2d",
    "NJetDepthwiseConv2d",
    "OrientedDepthwiseConv2d",
    "analytic_basis_kernels",
    "analytic_depthwise_kernels",
    "make_dwconv",
    "to_conv2d",
]

#: Default ``(sigma_x, sigma_y)`` of each type: the docs/method.md#fitting method-B fits of the
#: published
#: filters (type 7 has one sigma).
DEFAULT_SCALES: dict[int, tuple[float, float]] = {
    1: (0.6445, 0.5829),
    2: (0.5858, 0.6440),
    3: (0.6898, 0.6740),
    4: (0.7560, 0.4596),
    5: (1.1067, 0.9448),
    6: (0.9004, 0.8889),
    7: (0.6754, 0.6754),
    8: (0.6095, 0.6012),
}
#: Default weight of the Laplacian of type 7 (docs/method.md#fitting, method B).
DEFAULT_ALPHA = 0.5256
#: Default upper clamp of the scales (sets the constant FFT length of the kernel builder).
SIGMA_MAX = 8.0
#: Kinds accepted by :func:`make_dwconv` (the one list: ``create_model``, ``TrainConfig`` and
#: ``--dwconv`` use it).
DWCONV_KINDS = ("learned", "masterkey", "idealized", "learnable", "njet")

# operator bank: index of each 1-D operator in the bank
_I, _XP, _XM, _X, _XX = range(5)
# per type (index 1..8; 0 is unused): operator along x and along y of the first term
_TERM1_X = (0, _I, _XM, _I, _XP, _X, _I, _XX, _I)
_TERM1_Y = (0, _XP, _I, _XM, _I, _I, _X, _I, _I)
# second term (only type 7 has one, K - alpha (dxx T + dyy T)): T along x, dyy along y
_TERM2_X = (0, _I, _I, _I, _I, _I, _I, _I, _I)
_TERM2_Y = (0, _I, _I, _I, _I, _I, _I, _XX, _I)


# --------------------------------------------------------------------------------------
# building blocks


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _no_autocast(device: torch.device):
    """Context that disables autocast on ``device`` (a no-op where autocast does not exist)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _make_bank(size: int, mode: str, device: torch.device) -> dict[str, torch.Tensor]:
    """Constant tensors of the kernel builder for one (size, mode, device).

    The 1-D operators of :mod:`scalespace_mk.scalespace.operators` are linear maps on the Gaussian's
    taps; each is taken as a matrix by applying it to the identity (``v @ A == op(v)``),
    so every channel's operator is selected by an index instead of a Python branch.
    """
    n = size + 2 if mode == "full" else size
    eye = torch.eye(n, dtype=torch.float64, device=device)
    # docs/method.md#operators, #models: reflect for the first differences, zero for nabla5
    if mode == "paper":
        mats = [
            eye,
            apply_1d(eye, "x+", boundary="reflect"),
            apply_1d(eye, "x-", boundary="reflect"),
            apply_1d(eye, "x", boundary="reflect"),
            apply_1d(eye, "xx", boundary="zero"),
        ]
    else:  # operator on the (size + 2)-tap kernel, valid part only
        mats = [eye[:, 1:-1]] + [
            apply_1d(eye, op, boundary="none") for op in ("x+", "x-", "x", "xx")
        ]
    bank = torch.stack(mats)  # [5, n, size]
    # along y the taps run upwards; rows run downwards: fold the flip into the matrices
    bank_x = bank.permute(1, 0, 2).reshape(n, 5 * size)
    bank_y = bank.flip(-1).permute(1, 0, 2).reshape(n, 5 * size)
    tables = torch.tensor(
        [_TERM1_X, _TERM2_X, _TERM1_Y, _TERM2_Y], dtype=torch.int64, device=device
    )
    delta = torch.zeros(size, size, dtype=torch.float64, device=device)
    delta[size // 2, size // 2] = 1.0
    return {"x": bank_x, "y": bank_y, "tables": tables, "delta": delta}


_BANKS: dict[tuple[int, str, str], dict[str, torch.Tensor]] = {}


def _bank(size: int, mode: str, device: torch.device) -> dict[str, torch.Tensor]:
    if _compiling():
        return _make_bank(size, mode, device)
    key = (size, mode, str(device))
    bank = _BANKS.get(key)
    if bank is None:
        # normal tensors even if first built under inference_mode (autograd saves them)
        with torch.inference_mode(False), torch.no_grad():
            bank = _BANKS[key] = _make_bank(size, mode, device)
    return bank


def _gaussian_rows(sigma: torch.Tensor, taps: int, n_fft: int, eps1d: float) -> torch.Tensor:
    """``[B, taps]`` epsilon-truncated discrete Gaussians, no checks and no host sync."""
    return _kernels.discrete_gaussian_rows(sigma, taps, n_fft=n_fft, eps1d=eps1d)


def _n_fft(taps: int, sigma_max: float) -> int:
    # the autograd path evaluates one tap more than it returns (for the exact derivative)
    return _kernels.fft_length(sigma_max, taps)


def _basis64(
    types: torch.Tensor,
    sigma_x: torch.Tensor,
    sigma_y: torch.Tensor,
    alpha: torch.Tensor,
    size: int,
    mode: str,
    sigma_max: float,
    eps1d: float,
) -> torch.Tensor:
    """Vectorised core: float64 ``[C, size, size]`` models (no checks)."""
    c = types.shape[0]
    bank = _bank(size, mode, types.device)
    taps = size + 2 if mode == "full" else size
    is7 = types == 7
    sx = sigma_x.clamp(0.0, sigma_max)
    sy = torch.where(is7, sx, sigma_y.clamp(0.0, sigma_max))  # type 7 has one sigma
    rows = _gaussian_rows(torch.cat([sx, sy]), taps, _n_fft(taps, sigma_max), eps1d)
    ux = (rows[:c] @ bank["x"]).view(c, 5, size)  # every operator along x, every channel
    vy = (rows[c:] @ bank["y"]).view(c, 5, size)  # ... along y, already in row order
    idx = bank["tables"][:, types]  # [4, C]
    u = ux.gather(1, idx[:2].T[:, :, None].expand(c, 2, size))  # [C, 2, size]
    v = vy.gather(1, idx[2:].T[:, :, None].expand(c, 2, size))
    one = torch.ones_like(alpha)
    coef = torch.stack(
        [torch.where(is7, -alpha, one), torch.where(is7, -alpha, torch.zeros_like(alpha))], 1
    )  # [C, 2]
    kernel = torch.bmm((v * coef[:, :, None]).transpose(1, 2), u)  # sum of 2 outer products
    return kernel + is7.to(torch.float64)[:, None, None] * bank["delta"]


def _affine64(basis: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``gain * g + offset`` per channel, float64 ``[C, k, k]``."""
    return gain.to(torch.float64)[:, None, None] * basis + offset.to(torch.float64)[:, None, None]


# --------------------------------------------------------------------------------------
# input handling of the functional API


def _as_types(types: Any, name: str = "types") -> torch.Tensor:
    """Validate types 1..8 and return them as an int64 tensor ``[C]`` (keeps the device)."""
    if isinstance(types, torch.Tensor):
        t = types
    else:
        try:
            t = torch.as_tensor(np.asarray(types), device="cpu")
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} must be a 1-D sequence of integers 1..8; got {types!r}"
            ) from None
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must hold integers 1..8; got dtype {t.dtype}")
    if t.is_floating_point():
        if not _compiling() and not bool(torch.all(t == torch.round(t))):
            raise ValueError(f"{name} must hold integers 1..8; got non-integral values")
    if t.ndim != 1 or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence [C]; got shape {tuple(t.shape)}")
    t = t.to(torch.int64)
    if not _compiling():
        bad = (t < 1) | (t > 8)
        if bool(bad.any()):
            raise ValueError(
                f"{name} must hold master-key types 1..8; got {int(t[bad][0])} "
                f"at channel {int(torch.nonzero(bad)[0, 0])}"
            )
    return t


def _types_unchecked(types: Any) -> torch.Tensor:
    """Types as int64 without checks; a tensor keeps its device (hot path)."""
    if isinstance(types, torch.Tensor):
        return types.to(torch.int64)
    return torch.as_tensor(np.asarray(types), device="cpu").to(torch.int64)


def _channel_values(
    name: str, value: Any, channels: int, device: torch.device | None
) -> torch.Tensor:
    """A scalar or ``[C]`` value as a float64 tensor ``[C]`` (differentiable if a tensor)."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            value = value.to(torch.float64)
        t = value.to(torch.float64)
    else:
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float64), device="cpu")
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} must be a number or a sequence of C numbers; got {value!r}"
            ) from None
    if device is not None:
        t = t.to(device)
    if t.ndim == 0:
        t = t.expand(channels)
    if t.ndim != 1 or t.shape[0] != channels:
        raise ValueError(
            f"{name} must be a scalar or have shape [C] = [{channels}]; got shape {tuple(t.shape)}"
        )
    return t


def _check_finite(name: str, t: torch.Tensor) -> None:
    if _compiling() or t.numel() == 0:
        return
    with torch.no_grad():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            ch = int(torch.nonzero(bad.reshape(-1))[0, 0])
            raise ValueError(
                f"{name} must be finite; got {float(t.reshape(-1)[ch])} at channel {ch}"
            )


def _check_sigma_max(sigma_max: Any) -> float:
    try:
        value = float(sigma_max)
    except (TypeError, ValueError):
        raise ValueError(f"sigma_max must be a positive finite number; got {sigma_max!r}") from None
    if not (0.0 < value < math.inf):
        raise ValueError(f"sigma_max must be a positive finite number; got {sigma_max!r}")
    if value > limits.SIGMA_LIMIT:
        raise ValueError(
            f"sigma_max must be <= {limits.SIGMA_LIMIT:g} pixels (scalespace_mk.limits."
            f"SIGMA_LIMIT); got {sigma_max!r}"
        )
    return value


def _prepare(
    types: Any,
    sigma_x: Any,
    sigma_y: Any,
    alpha: Any,
    size: Any,
    mode: str,
    sigma_max: Any,
    epsilon: float,
    validate: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, float, float, list]:
    size = check_size(size, "size", allow_none=False)
    if size < 3:
        raise ValueError(f"size must be an odd integer >= 3; got {size}")
    check_choice("mode", mode, MODES)
    sigma_max = _check_sigma_max(sigma_max)
    eps1d = _kernels.truncation_error_1d(epsilon, 1)
    inputs = [sigma_x, sigma_y, alpha]
    device = next((v.device for v in inputs if isinstance(v, torch.Tensor)), None)
    if device is None and isinstance(types, torch.Tensor):
        device = types.device
    t = _as_types(types) if validate else _types_unchecked(types)
    if device is not None:
        t = t.to(device)
    c = t.shape[0]
    sx = _channel_values("sigma_x", sigma_x, c, device)
    sy = sx if sigma_y is None else _channel_values("sigma_y", sigma_y, c, device)
    if alpha is None:
        if validate and bool((t == 7).any()):
            raise ValueError("alpha (the weight of the Laplacian) is needed for type-7 channels")
        al = torch.zeros(c, dtype=torch.float64, device=sx.device)
    else:
        al = _channel_values("alpha", alpha, c, device)
    if validate:
        check_nonneg("sigma_x", sx)
        check_nonneg("sigma_y", sy)
        _check_finite("alpha", al)
    return t, sx, sy, al, size, sigma_max, eps1d, inputs


def _out_dtype(dtype: torch.dtype | None, values: Iterable[Any]) -> torch.dtype:
    if dtype is not None:
        return dtype
    out = None
    for v in values:
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            out = v.dtype if out is None else torch.promote_types(out, v.dtype)
    return out or torch.float64


# --------------------------------------------------------------------------------------
# functional API


def analytic_basis_kernels(
    types: Any,
    sigma_x: Any,
    sigma_y: Any = None,
    alpha: Any = None,
    *,
    size: int = 7,
    mode: str = "paper",
    sigma_max: float = SIGMA_MAX,
    epsilon: float = 1e-8,
    dtype: torch.dtype | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Idealised master-key models of every channel, ``[C, 1, k, k]``, in one step.

    Parameters
    ----------
    types : sequence of int or torch.Tensor, shape [C]
        Model type of each channel, 1..8 (docs/method.md#models): 1 ``delta_y+ T``, 2 ``delta_x-
        T``,
        3 ``delta_y- T``, 4 ``delta_x+ T``, 5 ``delta_x T``, 6 ``delta_y T``,
        7 ``K - alpha nabla5 T(sigma_x, sigma_x)``, 8 ``T``.
    sigma_x, sigma_y : float, array_like [C] or torch.Tensor [] / [C]
        Standard deviations (pixels, >= 0) along x and y; ``sigma_y=None`` means
        ``sigma_x``. Type 7 has one scale and uses ``sigma_x`` only. Values above
        ``sigma_max`` are clamped to it.
    alpha : float, array_like [C] or torch.Tensor, optional
        Weight of the Laplacian for type-7 channels (ignored elsewhere; required when a
        type-7 channel is present and ``validate``).
    size : int
        Odd kernel size k >= 3 (default 7).
    mode : str
        ``"paper"`` (docs/method.md#discretisations, #operators, #models: each 1-D kernel truncated
        at ``epsilon`` and cropped to k
        taps, not renormalised; 3-tap operators with reflect boundary, nabla5 with zero
        padding) or ``"full"`` (operators on the (k + 2)-tap kernel, then cropped), as in
        :func:`scalespace_mk.scalespace.models.model_kernel`.
    sigma_max : float
        Upper clamp of the scales (default :data:`SIGMA_MAX` = 8); fixes the FFT length.
    epsilon : float
        Relative truncation error of each 1-D Gaussian (D = 1), in (0, 1).
    dtype : torch.dtype, optional
        Output dtype; default the promoted dtype of the floating tensor inputs, else float64.
        The computation itself always runs in float64.
    validate : bool
        Check types, finiteness and signs (a host synchronisation on accelerators; skipped
        under ``torch.compile``). Pass False on hot paths whose inputs are known good.

    Returns
    -------
    torch.Tensor, shape [C, 1, k, k]
        Depthwise conv weights (rows top to bottom, y up; used with no flip), on the device
        of the tensor inputs, differentiable in ``sigma_x``, ``sigma_y`` and ``alpha``.

    Notes
    -----
    Channel c equals ``masterkey_model(types[c], sigma_x[c], sigma_y[c], alpha=alpha[c],
    size=k, mode=mode)`` to rounding (tested to 1e-12 in float64). All channels' 1-D
    Gaussians come from one batched FFT; the operators of
    :mod:`scalespace_mk.scalespace.operators` are
    applied as small matrices and selected per channel by a gather (no loop over channels
    or types). The derivative in sigma is the exact one of
    :func:`scalespace_mk.scalespace.kernels.discrete_gaussian`; at ``sigma = 0`` (the delta)
    it is 0.
    Autocast is disabled inside, so the kernels keep float64 precision under mixed
    precision.

    Examples
    --------
    >>> import torch
    >>> w = analytic_basis_kernels([5, 8], [1.0, 0.0])
    >>> w.shape
    torch.Size([2, 1, 7, 7])
    >>> w[1, 0, 3].tolist()  # type 8 at sigma 0: the delta
    [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    >>> # type 5 is odd in x; as a correlation kernel it is negative at x > 0 (its
    >>> # convolution response to the monomial x is +1)
    >>> bool(w[0, 0, 3, 4] == -w[0, 0, 3, 2]) and bool(w[0, 0, 3, 4] < 0)
    True
    """
    values = (sigma_x, sigma_y, alpha)
    out = _out_dtype(dtype, values)
    t, sx, sy, al, size, sigma_max, eps1d, _ = _prepare(
        types, sigma_x, sigma_y, alpha, size, mode, sigma_max, epsilon, validate
    )
    with _no_autocast(sx.device):
        basis = _basis64(t, sx, sy, al, size, mode, sigma_max, eps1d)
    return basis.to(out)[:, None]


def analytic_depthwise_kernels(
    types: Any,
    sigma_x: Any,
    sigma_y: Any = None,
    alpha: Any = None,
    gain: Any = 1.0,
    offset: Any = 0.0,
    *,
    size: int = 7,
    mode: str = "paper",
    sigma_max: float = SIGMA_MAX,
    epsilon: float = 1e-8,
    dtype: torch.dtype | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Kernels ``gain * g + offset`` of every channel, ``[C, 1, k, k]``, in one step.

    ``g`` is the channel's model (:func:`analytic_basis_kernels`); ``gain`` and ``offset``
    are the ``a`` and ``b`` of the linear shift ``a * g + b`` (docs/method.md#networks): the offset
    is added
    to every tap.

    Parameters
    ----------
    types, sigma_x, sigma_y, alpha
        As in :func:`analytic_basis_kernels`.
    gain, offset : float, array_like [C] or torch.Tensor [] / [C]
        Per-channel amplitude ``a`` and constant ``b`` (default 1 and 0).
    size, mode, sigma_max, epsilon, dtype, validate
        As in :func:`analytic_basis_kernels` (``validate`` also checks gain and offset).

    Returns
    -------
    torch.Tensor, shape [C, 1, k, k]
        Depthwise conv weights (cross-correlation kernels, y up), differentiable in
        ``sigma_x``, ``sigma_y``, ``alpha``, ``gain`` and ``offset``.

    Examples
    --------
    >>> w = analytic_depthwise_kernels([8], 0.0, gain=2.0, offset=0.5)
    >>> w[0, 0, 3].tolist()
    [0.5, 0.5, 0.5, 2.5, 0.5, 0.5, 0.5]
    """
    values = (sigma_x, sigma_y, alpha, gain, offset)
    out = _out_dtype(dtype, values)
    t = _as_types(types) if validate else _types_unchecked(types)
    device = next((v.device for v in values if isinstance(v, torch.Tensor)), t.device)
    g = _channel_values("gain", gain, t.shape[0], device)
    b = _channel_values("offset", offset, t.shape[0], device)
    if validate:
        _check_finite("gain", g)
        _check_finite("offset", b)
    basis = analytic_basis_kernels(
        t,
        sigma_x,
        sigma_y,
        alpha,
        size=size,
        mode=mode,
        sigma_max=sigma_max,
        epsilon=epsilon,
        dtype=torch.float64,
        validate=validate,
    )
    with _no_autocast(basis.device):
        return _affine64(basis[:, 0], g, b).to(out)[:, None]


# --------------------------------------------------------------------------------------
# modules


def _tensor_key(tensors: Sequence[torch.Tensor]) -> tuple:
    # the detached aliases keep the storages alive, so a pointer cannot be reused meanwhile
    return tuple((t.detach(), t._version) for t in tensors)


def _key_matches(key: tuple, tensors: Sequence[torch.Tensor]) -> bool:
    if len(key) != len(tensors):
        return False
    for (alias, version), t in zip(key, tensors, strict=True):
        if (
            t.data_ptr() != alias.data_ptr()
            or t._version != version
            or t.dtype != alias.dtype
            or t.device != alias.device
            or t.shape != alias.shape
        ):
            return False
    return True


class _CachedDepthwise(nn.Module):
    """Shared machinery: depthwise conv with a generated kernel, cached when safe."""

    channels: int
    kernel_size: int
    bias: nn.Parameter | None

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[str, tuple[tuple, torch.Tensor]] = {}

    def _setup(
        self, channels: Any, kernel_size: Any, mode: str, sigma_max: Any, epsilon: float
    ) -> int:
        """Check and store the options shared by the generated-kernel layers; returns C."""
        channels = _check_channels(channels)
        kernel_size = check_size(kernel_size, "kernel_size", allow_none=False)
        if kernel_size < 3:
            raise ValueError(f"kernel_size must be an odd integer >= 3; got {kernel_size}")
        self.channels, self.kernel_size = channels, kernel_size
        self.mode = check_choice("mode", mode, MODES)
        self.sigma_max = _check_sigma_max(sigma_max)
        self.epsilon = float(epsilon)
        self._eps1d = _kernels.truncation_error_1d(epsilon, 1)
        return channels

    # -- subclass interface --------------------------------------------------------------
    def _basis_tensors(self) -> list[torch.Tensor]:  # tensors the model part depends on
        raise NotImplementedError

    def _affine_tensors(self) -> list[torch.Tensor]:  # gain, offset
        return [self.gain, self.offset]

    def _basis(self) -> torch.Tensor:  # float64 [C, k, k]
        raise NotImplementedError

    def _combine(self, basis: torch.Tensor) -> torch.Tensor:  # model part -> float64 kernel
        return _affine64(basis, self.gain, self.offset)

    def _full(self) -> torch.Tensor:  # float64 [C, k, k], differentiable
        return self._combine(self._basis())

    _finite_names: tuple[str, ...] = ("gain", "offset")

    def _check_buffers(self) -> None:
        """Raise on index buffers out of range (subclasses; CPU only)."""

    def _check_params(self) -> None:
        """Raise on NaN/Inf kernel parameters (CPU only: elsewhere it would synchronise)."""
        if _compiling() or self._affine_tensors()[0].device.type != "cpu":
            return
        self._check_buffers()
        tensors = [getattr(self, n) for n in self._finite_names]
        with torch.no_grad():
            if bool(torch.isfinite(torch.cat([t.reshape(-1) for t in tensors])).all()):
                return
        for name, t in zip(self._finite_names, tensors, strict=True):
            _check_finite(name, t)

    # -- cache ---------------------------------------------------------------------------
    def clear_cache(self) -> None:
        """Forget cached kernels (needed only after edits through ``.data``)."""
        self._cache.clear()

    def _cached(self, slot: str, tensors: list[torch.Tensor], build) -> torch.Tensor:
        entry = self._cache.get(slot)
        inference = torch.is_inference_mode_enabled()
        if entry is not None and _key_matches(entry[0], tensors):
            value = entry[1]
            if inference or not value.is_inference():
                return value
        with torch.no_grad():
            value = build()
        self._cache[slot] = (_tensor_key(tensors), value)
        return value

    def _param_dtype(self) -> torch.dtype:
        return self._affine_tensors()[0].dtype

    def kernel(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The current depthwise weight ``[C, 1, k, k]`` (cached when safe).

        Parameters
        ----------
        dtype : torch.dtype, optional
            Output dtype (default the parameters' dtype). The kernel is built in float64
            and cast at the end.

        Returns
        -------
        torch.Tensor, shape [C, 1, k, k]
            Cross-correlation kernels (y up, no flip), differentiable in every kernel
            parameter that requires grad.
        """
        dtype = dtype or self._param_dtype()
        if _compiling():
            return self._full().to(dtype)[:, None]
        grad = torch.is_grad_enabled()
        basis_t = self._basis_tensors()
        affine_t = self._affine_tensors()
        basis_grad = grad and any(t.requires_grad for t in basis_t)
        affine_grad = grad and any(t.requires_grad for t in affine_t)
        if basis_grad:
            self._check_params()
            return self._finite_kernel(self._full().to(dtype))[:, None]

        def basis() -> torch.Tensor:
            self._check_params()
            return self._basis()

        if affine_grad:  # frozen model part, learnable gain/offset
            self._check_params()
            g = self._cached("basis", basis_t, basis)
            return self._finite_kernel(self._combine(g).to(dtype))[:, None]
        return self._cached(
            f"weight:{dtype}",
            basis_t + affine_t,
            lambda: self._combine(self._cached("basis", basis_t, basis)).to(dtype)[:, None],
        )

    def _finite_kernel(self, kernel: torch.Tensor) -> torch.Tensor:
        """``kernel`` if finite; else a ValueError naming the parameters (CPU only)."""
        if _compiling() or kernel.device.type != "cpu":
            return kernel
        with torch.no_grad():
            if bool(torch.isfinite(kernel).all()):
                return kernel
            sizes = ", ".join(
                f"{n} up to {float(p.detach().abs().max()):.3g}"
                for n, p in self.named_parameters(recurse=False)
                if p.numel() and p.is_floating_point()
            )
        raise ValueError(
            f"{type(self).__name__}: the kernel is not finite in {kernel.dtype} ({sizes}); "
            "the parameters left the float range, e.g. under a far too large learning rate: "
            "lower it (or clip gradients) and restart from a good checkpoint"
        )

    @property
    def weight(self) -> torch.Tensor:
        """The current kernel ``[C, 1, k, k]`` (read-only view of :meth:`kernel`)."""
        return self.kernel()

    # -- module hooks that invalidate the cache -----------------------------------------
    #: options the kernel depends on: setting one after construction is validated and drops
    #: the cached kernel (it used to keep the stale one)
    _KERNEL_OPTIONS = ("mode", "sigma_max", "epsilon", "normalized", "gamma")

    def __setattr__(self, name: str, value: Any) -> None:  # noqa: D105
        if name in self._KERNEL_OPTIONS and "_cache" in self.__dict__:
            if name == "mode":
                value = check_choice("mode", value, MODES)
            elif name == "sigma_max":
                value = _check_sigma_max(value)
            elif name == "epsilon":
                self.__dict__["_eps1d"] = _kernels.truncation_error_1d(value, 1)
                value = float(value)
            super().__setattr__(name, value)
            self.clear_cache()
            if (
                "_n_fft" in self.__dict__
                and name in ("mode", "sigma_max")
                and hasattr(self, "order")
            ):
                k = self.kernel_size
                taps = k + (4 if self.order >= 3 else 2) if self.mode == "full" else k
                self.__dict__["_n_fft"] = _kernels.fft_length(self.sigma_max, taps)
            return
        super().__setattr__(name, value)

    def train(self, mode: bool = True) -> _CachedDepthwise:  # noqa: D102
        self.clear_cache()
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):  # noqa: D102
        self.clear_cache()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # noqa: D102
        self.clear_cache()
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:  # noqa: D105
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    # -- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Depthwise cross-correlation with the generated kernels.

        Parameters
        ----------
        x : torch.Tensor, shape [B, C, H, W]
            Any memory format (channels_last included), any floating dtype; under
            autocast the convolution runs in the autocast dtype.

        Returns
        -------
        torch.Tensor, shape [B, C, H, W]
            ``F.conv2d(x, kernel, bias, padding=k // 2, groups=C)``.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"input must be a tensor [B, C, H, W] with C = {self.channels}; got "
                f"{type(x).__name__}"
            )
        if not x.is_floating_point():
            raise TypeError(
                f"input must be a floating tensor (float16/bfloat16/float32/float64); got dtype "
                f"{x.dtype} (convert with x.float(); integer input would truncate the kernel)"
            )
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"input must have shape [B, C, H, W] with C = {self.channels}; "
                f"got shape {tuple(x.shape)}"
            )
        weight = self.kernel(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.conv2d(x, weight, bias, padding=self.kernel_size // 2, groups=self.channels)


def _init_bias(
    bias: Any, channels: int, factory: dict[str, Any], learn: bool
) -> nn.Parameter | None:
    if bias is None or bias is False:
        return None
    if bias is True:
        value = torch.zeros(channels, **factory)
    else:
        value = _channel_values("bias", bias, channels, None).to(**factory)
        _check_finite("bias", value)
    return nn.Parameter(value.detach().clone(), requires_grad=learn)


def _param(name: str, value: Any, channels: int, factory: dict[str, Any], learn: bool):
    t = _channel_values(name, value, channels, None)
    _check_finite(name, t)
    return nn.Parameter(t.detach().clone().to(**factory), requires_grad=learn)


def _factory(device: Any, dtype: Any) -> dict[str, Any]:
    dtype = dtype or torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype; got {dtype}")
    # None: the default device, which follows ``with torch.device(...)`` (e.g. "meta")
    return {"device": check_device(device, torch.get_default_device()), "dtype": dtype}


def _check_channels(channels: Any) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int | np.integer) or channels < 1:
        raise ValueError(f"channels must be a positive integer; got {channels!r}")
    return int(channels)


def _default_types(channels: int) -> list[int]:
    return [c % 8 + 1 for c in range(channels)]


class AnalyticDepthwiseConv2d(_CachedDepthwise):
    """Depthwise conv whose kernels are master-key models with per-channel scales.

    Channel c has the kernel ``gain[c] * g_c + offset[c]`` with ``g_c`` the model of type
    ``types[c]`` (1-8, docs/method.md#models) at scales ``sigma_x[c]``, ``sigma_y[c]`` (and
    ``alpha[c]``
    for type 7), followed by a per-channel ``bias``. A drop-in for
    ``nn.Conv2d(C, C, k, padding=k // 2, groups=C)``.

    Parameters
    ----------
    channels : int
        Number of channels C (input and output).
    kernel_size : int
        Odd kernel size k >= 3 (default 7).
    types : sequence of int [C], optional
        Type of each channel (1..8); default cyclic ``1, 2, ..., 8, 1, ...``.
    sigma_x, sigma_y : float or sequence [C], optional
        Initial standard deviations (pixels, >= 0). Default: the docs/method.md#fitting method-B
        values of
        each channel's type (:data:`DEFAULT_SCALES`). ``sigma_y=None`` with ``sigma_x``
        given means ``sigma_y = sigma_x``. Type-7 channels use ``sigma_x`` only.
    alpha : float or sequence [C], optional
        Laplacian weight of type-7 channels; default :data:`DEFAULT_ALPHA` (unused by the
        other types).
    gain, offset : float or sequence [C]
        Initial ``a`` and ``b`` of the kernel ``a * g + b`` (default 1 and 0).
    bias : bool or float or sequence [C]
        Output bias: True (zeros), False/None (no bias) or initial values.
    learn_scales : bool
        Train ``sigma_x``/``sigma_y`` (default True).
    learn_alpha : bool, optional
        Train ``alpha`` (default: as ``learn_scales``).
    learn_gain, learn_offset, learn_bias : bool
        Train gain, offset, bias (default True). Frozen ones are ``nn.Parameter`` with
        ``requires_grad=False``, so state dicts have the same keys in every configuration.
    mode : str
        ``"paper"`` (default) or ``"full"``; see :func:`analytic_basis_kernels`.
    sigma_max : float
        Upper clamp of the scales (default 8).
    epsilon : float
        Truncation error of the 1-D Gaussians (paper mode: 1e-8).
    device, dtype
        Where and in which floating dtype the parameters live (kernels are computed in
        float64 regardless, then cast to the input's dtype).

    Attributes
    ----------
    sigma_x_raw, sigma_y_raw : nn.Parameter [C]
        Raw scale parameters; the scales are ``|raw|`` clamped to ``sigma_max``
        (properties :attr:`sigma_x`, :attr:`sigma_y`). Because the kernel depends on
        ``s = sigma**2 = raw**2`` only, this parametrisation is smooth everywhere, keeps
        the scales >= 0 and represents sigma = 0 exactly.
    alpha, gain, offset : nn.Parameter [C]
    bias : nn.Parameter [C] or None
    types : buffer, int64 [C]

    Notes
    -----
    The scale gradient ``dL/draw = 2 raw dL/ds`` vanishes at ``raw = 0``: a channel whose
    scale reaches exactly 0 stays there. Exclude the raw scales and alpha from weight decay
    (they are 1-D, like biases, which the usual ``no_weight_decay`` rules already do).

    Examples
    --------
    >>> import torch
    >>> layer = AnalyticDepthwiseConv2d(16)
    >>> layer(torch.randn(2, 16, 8, 8)).shape
    torch.Size([2, 16, 8, 8])
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        *,
        types: Any = None,
        sigma_x: Any = None,
        sigma_y: Any = None,
        alpha: Any = None,
        gain: Any = 1.0,
        offset: Any = 0.0,
        bias: Any = True,
        learn_scales: bool = True,
        learn_alpha: bool | None = None,
        learn_gain: bool = True,
        learn_offset: bool = True,
        learn_bias: bool = True,
        mode: str = "paper",
        sigma_max: float = SIGMA_MAX,
        epsilon: float = 1e-8,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        channels = self._setup(channels, kernel_size, mode, sigma_max, epsilon)
        factory = _factory(device, dtype)
        t = _as_types(_default_types(channels) if types is None else types).cpu()
        if t.shape[0] != channels:
            raise ValueError(f"types must have length channels = {channels}; got {t.shape[0]}")
        is7 = (t == 7).numpy()
        if sigma_x is None:
            sx = np.array([DEFAULT_SCALES[int(k)][0] for k in t])
            sy = np.array([DEFAULT_SCALES[int(k)][1] for k in t]) if sigma_y is None else sigma_y
        else:
            sx, sy = sigma_x, sigma_x if sigma_y is None else sigma_y
        cpu = torch.device("cpu")
        sx = _channel_values("sigma_x", sx, channels, cpu).detach()
        sy = _channel_values("sigma_y", sy, channels, cpu).detach()
        check_nonneg("sigma_x", sx)
        check_nonneg("sigma_y", sy)
        sy = torch.where(torch.from_numpy(is7), sx, sy)  # type 7: one sigma
        if alpha is None:
            alpha = np.where(is7, DEFAULT_ALPHA, 0.0)
        learn_alpha = learn_scales if learn_alpha is None else learn_alpha
        self.register_buffer("types", t.to(factory["device"]))
        self.sigma_x_raw = _param("sigma_x", sx, channels, factory, learn_scales)
        self.sigma_y_raw = _param("sigma_y", sy, channels, factory, learn_scales)
        self.alpha = _param("alpha", alpha, channels, factory, learn_alpha)
        self.gain = _param("gain", gain, channels, factory, learn_gain)
        self.offset = _param("offset", offset, channels, factory, learn_offset)
        self.bias = _init_bias(bias, channels, factory, learn_bias)

    @property
    def sigma_x(self) -> torch.Tensor:
        """Effective scales along x, ``|sigma_x_raw|`` clamped to ``sigma_max``, [C]."""
        return self.sigma_x_raw.abs().clamp(max=self.sigma_max)

    @property
    def sigma_y(self) -> torch.Tensor:
        """Effective scales along y (type 7: equal to :attr:`sigma_x`), [C]."""
        sy = self.sigma_y_raw.abs().clamp(max=self.sigma_max)
        return torch.where(self.types == 7, self.sigma_x, sy)

    def _basis_tensors(self) -> list[torch.Tensor]:
        return [self.types, self.sigma_x_raw, self.sigma_y_raw, self.alpha]

    def _check_buffers(self) -> None:
        _as_types(self.types, "types buffer")

    _finite_names = ("sigma_x_raw", "sigma_y_raw", "alpha", "gain", "offset")

    def _basis(self) -> torch.Tensor:
        # the module-level name is looked up at call time (tests count the calls)
        return analytic_basis_kernels(
            self.types,
            self.sigma_x_raw.abs(),
            self.sigma_y_raw.abs(),
            self.alpha,
            size=self.kernel_size,
            mode=self.mode,
            sigma_max=self.sigma_max,
            epsilon=self.epsilon,
            dtype=torch.float64,
            validate=False,
        )[:, 0]

    def extra_repr(self) -> str:  # noqa: D102
        counts = torch.bincount(self.types.detach().cpu(), minlength=9)[1:].tolist()
        learn = [
            n for n in ("sigma_x_raw", "alpha", "gain", "offset") if getattr(self, n).requires_grad
        ]
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, mode={self.mode!r}, "
            f"types per 1..8={counts}, bias={self.bias is not None}, "
            f"learnable={[n.replace('_raw', '') for n in learn]}"
        )

    # -- conversion ----------------------------------------------------------------------
    @classmethod
    def from_census(
        cls,
        result: Any,
        *,
        bias: Any = None,
        kernel_size: int | None = None,
        **kwargs: Any,
    ) -> AnalyticDepthwiseConv2d:
        """Build a layer from a census of trained depthwise filters.

        Parameters
        ----------
        result : census result, mapping of arrays, or sequence of records
            The output of :func:`scalespace_mk.analysis.census.census` (an object with ``records()``
            or per-field array attributes), a mapping ``{"type": [C], "sigma_x": [C],
            "sigma_y": [C], "alpha": [C], "a": [C], "b": [C]}``, or a sequence of C such
            records (dicts or objects). ``a`` and ``b`` are the shift ``a * g + b`` of
            the raw model ``g`` (:func:`scalespace_mk.scalespace.models.masterkey_model`);
            alpha may be
            NaN/None for types other than 7 and sigma_y for type 7.
        bias : float, sequence [C] or tensor, optional
            Output bias of the layer (e.g. the trained conv's bias); default zeros.
        kernel_size : int, optional
            Kernel size (default: from the result if it says, else 7).
        **kwargs
            Further :class:`AnalyticDepthwiseConv2d` options (``learn_scales``, ``mode``,
            ``device``, ...).

        Returns
        -------
        AnalyticDepthwiseConv2d
            With ``types``, ``sigma_x``, ``sigma_y``, ``alpha``, ``gain = a``,
            ``offset = b`` from the census.
        """
        fields = _census_fields(result)
        size = kernel_size or fields.pop("size", None) or 7
        fields.pop("size", None)
        channels = len(fields["types"])
        return cls(
            channels,
            size,
            types=fields["types"],
            sigma_x=fields["sigma_x"],
            sigma_y=fields["sigma_y"],
            alpha=fields["alpha"],
            gain=fields["a"],
            offset=fields["b"],
            bias=True if bias is None else bias,
            **kwargs,
        )

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        *,
        layer_kwargs: Mapping[str, Any] | None = None,
        **census_kwargs: Any,
    ) -> AnalyticDepthwiseConv2d:
        """Fit every filter of a trained depthwise conv (census) and build the layer.

        Parameters
        ----------
        conv : nn.Conv2d
            Depthwise conv: ``groups == in_channels == out_channels``, square odd kernel,
            padding ``k // 2``, stride 1, dilation 1.
        layer_kwargs : mapping, optional
            Options passed to :meth:`from_census` / the constructor.
        **census_kwargs
            Options of :func:`scalespace_mk.analysis.census.census` (``types`` among 1..8,
            ``mode``, ``epsilon``, ``sigma_max``, ``device``, ...). ``method`` must be
            ``"discgauss"``, the only discretisation the layer builds; ``mode`` and
            ``epsilon`` are passed on to the layer.

        Returns
        -------
        AnalyticDepthwiseConv2d
            Its output approximates ``conv`` (exactly where the filters are exact models);
            the conv's bias is kept; same device and dtype as the conv.
        """
        w = _check_depthwise_conv(conv)
        from scalespace_mk.analysis.census import census

        if census_kwargs.get("method", "discgauss") != "discgauss":
            raise ValueError(
                "method must be 'discgauss' (the layer builds discrete Gaussians only); "
                f"got {census_kwargs['method']!r}"
            )
        census_kwargs.setdefault("on_invalid", "raise")  # every channel needs a model
        result = census(w[:, 0].detach().to(torch.float64).cpu().numpy(), **census_kwargs)
        kw = _conv_layer_kwargs(conv, layer_kwargs)
        for key in ("mode", "epsilon"):
            if key in census_kwargs:
                kw.setdefault(key, census_kwargs[key])
        return cls.from_census(result, kernel_size=w.shape[-1], **kw)


_FIELD_NAMES = {
    "types": ("type", "types", "best_type", "filter_type"),
    "sigma_x": ("sigma_x", "sx"),
    "sigma_y": ("sigma_y", "sy"),
    "alpha": ("alpha",),
    "a": ("a", "gain"),
    "b": ("b", "offset"),
}


def _lookup(obj: Any, names: tuple[str, ...]) -> Any:
    for n in names:
        if isinstance(obj, Mapping) and n in obj:
            return obj[n]
        if not isinstance(obj, Mapping) and hasattr(obj, n):
            return getattr(obj, n)
    return None


def _census_fields(result: Any) -> dict[str, Any]:
    """Normalise a census result into per-channel float64 arrays (``types``, ..., ``b``)."""
    columns: dict[str, Any] = {}
    size = None
    is_columns = isinstance(result, Mapping) or (
        not isinstance(result, Sequence)
        and _lookup(result, _FIELD_NAMES["types"]) is not None
        and _lookup(result, _FIELD_NAMES["sigma_x"]) is not None
    )
    if not is_columns and hasattr(result, "records") and callable(result.records):
        result = result.records()
    if is_columns:
        for key, names in _FIELD_NAMES.items():
            columns[key] = _lookup(result, names)
        size = _lookup(result, ("kernel_size", "size"))
    elif isinstance(result, Sequence) and not isinstance(result, str) and len(result) > 0:
        for key, names in _FIELD_NAMES.items():
            vals = [_lookup(rec, names) for rec in result]
            columns[key] = None if all(v is None for v in vals) else vals
    else:
        raise TypeError(
            "result must be a census result, a mapping of per-channel arrays or a non-empty "
            f"sequence of records; got {type(result).__name__}"
        )
    missing = [k for k in ("types", "sigma_x", "a", "b") if columns.get(k) is None]
    if missing:
        names = {k: _FIELD_NAMES[k] for k in missing}
        raise ValueError(f"census result lacks the fields {missing} (accepted names: {names})")

    def floats(key: str) -> np.ndarray:
        flat = np.asarray(columns[key], dtype=object).reshape(-1)
        try:
            return np.array([np.nan if v is None else float(v) for v in flat], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"census field {key} must hold numbers") from None

    raw_types = np.asarray(columns["types"], dtype=object).reshape(-1)
    if not all(
        isinstance(t, int | np.integer) and not isinstance(t, bool) and 1 <= int(t) <= 8
        for t in raw_types
    ):
        bad = next(t for t in raw_types if not (isinstance(t, int | np.integer) and 1 <= t <= 8))
        raise ValueError(
            "an AnalyticDepthwiseConv2d holds master-key types 1..8 only; the census result "
            f"has type {bad!r} (fit with types=range(1, 9))"
        )
    types = raw_types.astype(np.int64)
    sx = floats("sigma_x")
    sy = sx.copy() if columns["sigma_y"] is None else floats("sigma_y")
    alpha = np.zeros_like(sx) if columns["alpha"] is None else floats("alpha")
    is7 = types == 7
    out = {
        "types": types,
        "sigma_x": sx,
        "sigma_y": np.where(is7, sx, sy) if len(sy) == len(sx) else sy,
        "alpha": np.where(is7, alpha, 0.0) if len(alpha) == len(sx) else alpha,
        "a": floats("a"),
        "b": floats("b"),
    }
    for key in ("sigma_x", "sigma_y", "alpha", "a", "b"):
        if len(out[key]) != len(types):
            raise ValueError(
                f"census field {key} has {len(out[key])} entries; types has {len(types)}"
            )
        bad = ~np.isfinite(out[key])
        if bad.any():
            raise ValueError(
                f"census field {key} is NaN or infinite at channel {int(np.flatnonzero(bad)[0])}"
            )
    if size is not None:
        out["size"] = int(size)
    return out


def _check_depthwise_conv(conv: Any) -> torch.Tensor:
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv must be an nn.Conv2d; got {type(conv).__name__}")
    c, k = conv.in_channels, conv.kernel_size
    ok = (
        conv.groups == c == conv.out_channels
        and k[0] == k[1]
        and k[0] % 2 == 1
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and conv.padding_mode == "zeros"
        and tuple(conv.padding) == (k[0] // 2, k[0] // 2)
    )
    if not ok:
        raise ValueError(
            "conv must be a depthwise nn.Conv2d(C, C, k, padding=k // 2, groups=C) with odd k, "
            f"stride 1, dilation 1, zero padding; got {conv}"
        )
    return conv.weight


def _conv_layer_kwargs(conv: nn.Conv2d, layer_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Constructor options of a layer replacing ``conv``: its device, dtype and bias."""
    kw = dict(layer_kwargs or {})
    kw.setdefault("device", conv.weight.device)
    kw.setdefault("dtype", conv.weight.dtype)
    if conv.bias is None:
        kw.setdefault("bias", False)
    else:
        kw["bias"] = conv.bias.detach()
    return kw


class MasterKeyDepthwiseConv2d(_CachedDepthwise):
    """Depthwise conv whose channels are frozen filters with a per-channel ``a * x + b``.

    Channel c uses the kernel ``gain[c] * filters[assignment[c]] + offset[c]``
    (docs/method.md#networks,
    experiment 2), followed by a per-channel bias.

    Parameters
    ----------
    channels : int
        Number of channels C.
    filters : array_like or torch.Tensor, shape [M, k, k]
        The frozen filters (e.g. the 8 master key filters, made zero-mean and unit-l2 by
        :func:`make_dwconv`); stored as a buffer. Rows top to bottom, y up, no flip.
    assignment : sequence of int [C], optional
        Index into ``filters`` (0-based) for each channel; default cyclic ``c % M``.
    gain, offset : float or sequence [C]
        Initial ``a`` and ``b`` (default 1 and 0).
    bias : bool or float or sequence [C]
        Output bias: True (zeros), False/None, or initial values.
    variant : str
        ``"ab"``: gain and offset learnable; ``"f+b"``: the frozen kernel
        ``gain * filter`` plus a learnable per-channel constant added to every tap (gain
        frozen); ``"frozen"``: neither (only the bias trains).
    learn_gain, learn_offset : bool, optional
        Override the variant's choice.
    learn_bias : bool
        Train the bias (default True).
    device, dtype
        Placement and floating dtype of the parameters and buffers.

    Examples
    --------
    >>> import torch
    >>> layer = MasterKeyDepthwiseConv2d(4, torch.eye(3)[None].repeat(2, 1, 1), variant="f+b")
    >>> layer(torch.randn(1, 4, 5, 5)).shape
    torch.Size([1, 4, 5, 5])
    """

    VARIANTS = ("ab", "f+b", "frozen")

    def __init__(
        self,
        channels: int,
        filters: Any,
        assignment: Any = None,
        *,
        gain: Any = 1.0,
        offset: Any = 0.0,
        bias: Any = True,
        variant: str = "ab",
        learn_gain: bool | None = None,
        learn_offset: bool | None = None,
        learn_bias: bool = True,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        from scalespace_mk._checks import check_filters

        channels = _check_channels(channels)
        check_choice("variant", variant, self.VARIANTS)
        factory = _factory(device, dtype)
        f = torch.as_tensor(check_filters(filters, "filters"), device="cpu")
        if f.shape[-1] < 3:
            raise ValueError(f"filters must be at least 3x3; got shape {tuple(f.shape)}")
        m = f.shape[0]
        if assignment is None:
            a = torch.arange(channels, device="cpu") % m
        else:
            a = torch.as_tensor(np.asarray(assignment), device="cpu")
            if a.is_floating_point() or a.dtype == torch.bool or a.ndim != 1:
                raise ValueError(
                    "assignment must be a 1-D sequence of integer filter indices; "
                    f"got {assignment!r}"
                )
            if a.shape[0] != channels:
                raise ValueError(
                    f"assignment must have length channels = {channels}; got {a.shape[0]}"
                )
            if bool(((a < 0) | (a >= m)).any()):
                raise ValueError(
                    f"assignment must hold filter indices 0..{m - 1} (0-based, one per filter); "
                    f"got values from {int(a.min())} to {int(a.max())}"
                )
        self.channels, self.kernel_size, self.variant = channels, int(f.shape[-1]), variant
        defaults = {"ab": (True, True), "f+b": (False, True), "frozen": (False, False)}[variant]
        lg = defaults[0] if learn_gain is None else learn_gain
        lo = defaults[1] if learn_offset is None else learn_offset
        self.register_buffer("filters", f.to(**factory))
        self.register_buffer("assignment", a.to(torch.int64).to(factory["device"]))
        self.gain = _param("gain", gain, channels, factory, lg)
        self.offset = _param("offset", offset, channels, factory, lo)
        self.bias = _init_bias(bias, channels, factory, learn_bias)

    def _basis_tensors(self) -> list[torch.Tensor]:
        return [self.filters, self.assignment]

    def _check_buffers(self) -> None:
        n = self.filters.shape[0]
        bad = (self.assignment < 0) | (self.assignment >= n)
        if bool(bad.any()):
            c = int(torch.nonzero(bad)[0, 0])
            raise ValueError(
                f"assignment buffer must hold filter indices 0..{n - 1}; got "
                f"{int(self.assignment[c])} at channel {c}"
            )

    def _basis(self) -> torch.Tensor:
        return self.filters.to(torch.float64)[self.assignment]

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"{self.channels}, filters={self.filters.shape[0]}x{self.kernel_size}x"
            f"{self.kernel_size}, variant={self.variant!r}, bias={self.bias is not None}"
        )


def _family_options(result: Any, family: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Layer options carried over from a family census (mode, normalisation, epsilon)."""
    if getattr(result, "family", None) != family:
        raise ValueError(
            f"result must be a family census with family={family!r} (from "
            "scalespace_mk.analysis.jets.family_census); got "
            f"{getattr(result, 'family', type(result).__name__)!r}"
        )
    opts = result.options
    kw = {key: opts[key] for key in ("mode", "normalized", "gamma", "epsilon") if key in opts}
    kw.update(kwargs)
    return kw


class _JetBase(_CachedDepthwise):
    """Shared machinery of the jet layers: per-channel scales and the batched N-jet basis."""

    def _setup_jet(
        self,
        order: Any,
        accepted: tuple[int, ...],
        sigma_x: Any,
        sigma_y: Any,
        anisotropic: bool | None,
        normalized: bool,
        gamma: float,
        learn_scales: bool,
        factory: dict[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Check the order, store the jet options and the raw scales; returns (sx, sy)."""
        if isinstance(order, bool) or order not in accepted:
            raise ValueError(f"order must be one of {accepted}; got {order!r}")
        self.order = int(order)
        self.normalized, self.gamma = bool(normalized), float(gamma)
        self.anisotropic = (sigma_y is not None) if anisotropic is None else bool(anisotropic)
        k = self.kernel_size
        taps = k + (4 if order >= 3 else 2) if self.mode == "full" else k
        self._n_fft = _kernels.fft_length(self.sigma_max, taps)
        cpu = torch.device("cpu")
        sx = _channel_values("sigma_x", sigma_x, self.channels, cpu).detach()
        sy = sx if sigma_y is None else _channel_values("sigma_y", sigma_y, self.channels, cpu)
        check_nonneg("sigma_x", sx)
        check_nonneg("sigma_y", sy)
        self.sigma_x_raw = _param("sigma_x", sx, self.channels, factory, learn_scales)
        self.sigma_y_raw = _param(
            "sigma_y", sy, self.channels, factory, learn_scales and self.anisotropic
        )
        return sx.to(torch.float64), sy.to(torch.float64)

    @property
    def sigma_x(self) -> torch.Tensor:
        """Effective scales along x, ``|sigma_x_raw|`` clamped to ``sigma_max``, [C]."""
        return self.sigma_x_raw.abs().clamp(max=self.sigma_max)

    @property
    def sigma_y(self) -> torch.Tensor:
        """Effective scales along y (:attr:`sigma_x` unless anisotropic), [C]."""
        raw = self.sigma_y_raw if self.anisotropic else self.sigma_x_raw
        return raw.abs().clamp(max=self.sigma_max)

    def _basis_at(self, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
        """The jet members ``[C, M, k, k]`` (float64) at scales ``sx, sy`` [C]."""
        from scalespace_mk.scalespace.jets import jet_basis_rows

        return jet_basis_rows(
            sx.clamp(0.0, self.sigma_max),
            sy.clamp(0.0, self.sigma_max),
            self.order,
            self.kernel_size,
            mode=self.mode,
            n_fft=self._n_fft,
            eps1d=self._eps1d,
            normalized=self.normalized,
            gamma=self.gamma,
        )

    def _basis_tensors(self) -> list[torch.Tensor]:
        return [self.sigma_x_raw, self.sigma_y_raw]

    def _basis(self) -> torch.Tensor:  # float64 [C, M, k, k]
        return self._basis_at(self.sigma_x_raw.abs(), self.sigma_y.to(torch.float64))


class NJetDepthwiseConv2d(_JetBase):
    """Depthwise conv whose kernels are discrete N-jets with per-channel scales.

    Channel c has the kernel ``sum_m coefficients[c, m] B_m(sigma_x[c], sigma_y[c]) +
    offset[c]`` with ``B_m = delta_x^i delta_y^j T`` the members ``i + j <= order`` of
    :func:`scalespace_mk.scalespace.jets.jet_basis` (order ``T, dx, dy, dxx, dxy, dyy,
    ...``), followed by a per-channel ``bias``. A drop-in for
    ``nn.Conv2d(C, C, k, padding=k // 2, groups=C)``; the kernels of all channels are built
    in one batched step (one FFT batch, a few matrix products), in float64, with the exact
    scale derivative of the discrete Gaussian, and cached when the scales are frozen (only
    the coefficient sum is then recomputed).

    Parameters
    ----------
    channels : int
        Number of channels C.
    kernel_size : int
        Odd kernel size k >= 3 (default 7).
    order : int
        N, 1 to 4 (default 2: 6 members).
    sigma_x, sigma_y : float or sequence [C]
        Initial standard deviations (>= 0, pixels; default 1). ``sigma_y=None``: one scale
        per channel (``sigma_y`` follows ``sigma_x``) unless ``anisotropic=True``.
    anisotropic : bool
        Separate learnable ``sigma_y`` (default: True when ``sigma_y`` is given).
    coefficients : array_like [C, M], optional
        Initial coefficients; default random normal (torch's generator) scaled so that every
        member contributes about equally and the kernel's l2 norm is about that of
        ``nn.Conv2d``'s default initialisation (~0.58 for 7x7).
    offset : float or sequence [C]
        Constant added to every tap (the census' ``b``; default 0).
    bias : bool or float or sequence [C]
        Output bias: True (zeros), False/None, or initial values.
    normalized, gamma : bool, float
        Scale-normalised members ``sigma**(gamma (i + j))`` (default True, gamma 1): the
        coefficients of different orders have comparable sizes, which helps optimisers.
    learn_scales, learn_coefficients, learn_offset, learn_bias : bool
        Which parameters train (default all). Frozen ones stay ``nn.Parameter`` with
        ``requires_grad=False``.
    mode, sigma_max, epsilon, device, dtype
        As in :class:`AnalyticDepthwiseConv2d`.

    Attributes
    ----------
    sigma_x_raw, sigma_y_raw : nn.Parameter [C]
        Raw scales; effective scales are ``|raw|`` clamped to ``sigma_max``
        (:attr:`sigma_x`, :attr:`sigma_y`).
    coefficients : nn.Parameter [C, M]
    offset : nn.Parameter [C]
    bias : nn.Parameter [C] or None

    Examples
    --------
    >>> import torch
    >>> layer = NJetDepthwiseConv2d(8, order=2)
    >>> layer(torch.randn(2, 8, 9, 9)).shape
    torch.Size([2, 8, 9, 9])
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        order: int = 2,
        *,
        sigma_x: Any = 1.0,
        sigma_y: Any = None,
        anisotropic: bool | None = None,
        coefficients: Any = None,
        offset: Any = 0.0,
        bias: Any = True,
        normalized: bool = True,
        gamma: float = 1.0,
        learn_scales: bool = True,
        learn_coefficients: bool = True,
        learn_offset: bool = True,
        learn_bias: bool = True,
        mode: str = "paper",
        sigma_max: float = SIGMA_MAX,
        epsilon: float = 1e-8,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        from scalespace_mk.scalespace.jets import JET_ORDERS, jet_indices

        channels = self._setup(channels, kernel_size, mode, sigma_max, epsilon)
        factory = _factory(device, dtype)
        args = (sigma_x, sigma_y, anisotropic, normalized, gamma, learn_scales, factory)
        sx, sy = self._setup_jet(order, JET_ORDERS, *args)
        m = len(jet_indices(self.order))
        self.offset = _param("offset", offset, channels, factory, learn_offset)
        if coefficients is None:
            with torch.no_grad():
                basis = self._basis_at(sx, sy)
                norms = basis.flatten(2).norm(dim=2).clamp(min=1e-12)  # [C, M]
                coef = torch.randn(channels, m, dtype=torch.float64) * (0.58 / math.sqrt(m) / norms)
        else:
            coef = torch.as_tensor(np.asarray(coefficients, dtype=np.float64))
            if coef.shape != (channels, m):
                raise ValueError(
                    f"coefficients must have shape [C, M] = [{channels}, {m}] for order "
                    f"{order}; got {tuple(coef.shape)}"
                )
        _check_finite("coefficients", coef.reshape(-1))
        self.coefficients = nn.Parameter(coef.to(**factory), requires_grad=learn_coefficients)
        self.bias = _init_bias(bias, channels, factory, learn_bias)

    def _affine_tensors(self) -> list[torch.Tensor]:
        return [self.coefficients, self.offset]

    _finite_names = ("sigma_x_raw", "sigma_y_raw", "coefficients", "offset")

    def _combine(self, basis: torch.Tensor) -> torch.Tensor:
        coef = self.coefficients.to(torch.float64)
        kernel = torch.einsum("cm,cmhw->chw", coef, basis)
        return kernel + self.offset.to(torch.float64)[:, None, None]

    def extra_repr(self) -> str:  # noqa: D102
        learn = [
            n
            for n in ("sigma_x_raw", "sigma_y_raw", "coefficients", "offset")
            if getattr(self, n).requires_grad
        ]
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, order={self.order}, "
            f"mode={self.mode!r}, normalized={self.normalized}, anisotropic={self.anisotropic}, "
            f"bias={self.bias is not None}, learnable={[n.replace('_raw', '') for n in learn]}"
        )

    # -- conversion ----------------------------------------------------------------------
    @classmethod
    def from_census(
        cls, result: Any, *, bias: Any = None, kernel_size: int | None = None, **kwargs: Any
    ) -> NJetDepthwiseConv2d:
        """Build a layer from an N-jet family census of trained depthwise filters.

        Parameters
        ----------
        result : FamilyCensusResult
            Output of :func:`scalespace_mk.analysis.jets.family_census` with
            ``family="njet"`` (its order, scales, coefficients ``c_*`` and offsets ``b``;
            its ``normalized``/``gamma``/``mode``/``epsilon`` options carry over).
        bias : float, sequence [C] or tensor, optional
            Output bias (e.g. the trained conv's bias); default zeros.
        kernel_size : int, optional
            Default: from the result (``taps``).
        **kwargs
            Further constructor options (``learn_scales``, ``device``, ``dtype``, ...).

        Returns
        -------
        NJetDepthwiseConv2d
            Its kernels equal the census' fitted models ``sum_m c_m B_m + b``.
        """
        kw = _family_options(result, "njet", kwargs)
        size = kernel_size or int(round(math.sqrt(result.taps)))
        aniso = bool(result.options.get("anisotropic", False))
        return cls(
            len(result),
            size,
            result.order,
            sigma_x=result.sigma_x,
            sigma_y=result.sigma_y if aniso else None,
            anisotropic=aniso,
            coefficients=result.coefficients,
            offset=result.b,
            bias=True if bias is None else bias,
            **kw,
        )

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        order: int = 2,
        *,
        layer_kwargs: Mapping[str, Any] | None = None,
        **census_kwargs: Any,
    ) -> NJetDepthwiseConv2d:
        """Fit an N-jet to every filter of a trained depthwise conv and build the layer.

        Parameters
        ----------
        conv : nn.Conv2d
            Depthwise conv ``nn.Conv2d(C, C, k, padding=k // 2, groups=C)``.
        order : int
            N of the N-jet (default 2).
        layer_kwargs : mapping, optional
            Options for the constructor (``learn_scales``, ...).
        **census_kwargs
            Options of :func:`scalespace_mk.analysis.jets.family_census` (``anisotropic``,
            ``mode``, ``normalized``, ``allow_saturated``, ...).

        Returns
        -------
        NJetDepthwiseConv2d
            With the conv's bias, device and dtype. Constant filters (no variance) get
            zero coefficients and their constant as offset.
        """
        from scalespace_mk.analysis.jets import family_census

        w = _check_depthwise_conv(conv)[:, 0].detach().to(torch.float64).cpu().numpy()
        flat = w.reshape(w.shape[0], -1)
        const = np.all(flat == flat[:, :1], axis=1)
        safe = w.copy()
        safe[const] = np.eye(w.shape[-1])[None]  # fitted, then overwritten below
        result = family_census(safe, family="njet", order=order, **census_kwargs)
        result.coefficients[const] = 0.0
        result.b[const] = flat[const, 0]
        kw = _conv_layer_kwargs(conv, layer_kwargs)
        return cls.from_census(result, kernel_size=w.shape[-1], **kw)


class OrientedDepthwiseConv2d(_JetBase):
    """Depthwise conv whose kernels are steered directional derivatives of the Gaussian.

    Channel c has the kernel ``gain[c] * delta_phi^order T(sigma[c]) + offset[c]`` at the
    learnable angle ``theta[c]`` (radians, counter-clockwise from +x, y up): order 1
    ``cos delta_x + sin delta_y``, order 2 ``cos^2 delta_xx + 2 cos sin delta_xy +
    sin^2 delta_yy`` (:func:`scalespace_mk.scalespace.jets.oriented_kernel`), then a bias.
    Same machinery as :class:`NJetDepthwiseConv2d` (batched basis, exact scale gradient,
    basis cached when the scales are frozen; theta, gain and offset only weight it).

    Parameters
    ----------
    channels, kernel_size : int
        As for :class:`NJetDepthwiseConv2d`.
    order : int
        1 or 2.
    sigma : float or sequence [C]
        Initial standard deviations (default 1; one scale per channel).
    theta : float or sequence [C], optional
        Initial angles; default evenly spread over ``[0, 2 pi / order)``.
    gain, offset : float or sequence [C]
        Initial gain (default 1) and constant on every tap (default 0).
    bias : bool or float or sequence [C]
        Output bias.
    normalized, gamma, learn_scales, learn_theta, learn_gain, learn_offset, learn_bias
        Scale normalisation (default True) and which parameters train (default all).
    mode, sigma_max, epsilon, device, dtype
        As in :class:`AnalyticDepthwiseConv2d`.

    Examples
    --------
    >>> import torch
    >>> layer = OrientedDepthwiseConv2d(8, order=1)
    >>> layer(torch.randn(1, 8, 9, 9)).shape
    torch.Size([1, 8, 9, 9])
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        order: int = 1,
        *,
        sigma: Any = 1.0,
        theta: Any = None,
        gain: Any = 1.0,
        offset: Any = 0.0,
        bias: Any = True,
        normalized: bool = True,
        gamma: float = 1.0,
        learn_scales: bool = True,
        learn_theta: bool = True,
        learn_gain: bool = True,
        learn_offset: bool = True,
        learn_bias: bool = True,
        mode: str = "paper",
        sigma_max: float = SIGMA_MAX,
        epsilon: float = 1e-8,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        from scalespace_mk.scalespace.jets import ORIENTED_ORDERS

        channels = self._setup(channels, kernel_size, mode, sigma_max, epsilon)
        factory = _factory(device, dtype)
        self._setup_jet(
            order, ORIENTED_ORDERS, sigma, None, False, normalized, gamma, learn_scales, factory
        )
        if theta is None:
            theta = np.arange(channels) * (2 * math.pi / self.order / channels)
        self.theta = _param("theta", theta, channels, factory, learn_theta)
        self.gain = _param("gain", gain, channels, factory, learn_gain)
        self.offset = _param("offset", offset, channels, factory, learn_offset)
        self.bias = _init_bias(bias, channels, factory, learn_bias)

    def _affine_tensors(self) -> list[torch.Tensor]:
        return [self.gain, self.theta, self.offset]

    _finite_names = ("sigma_x_raw", "theta", "gain", "offset")

    def _basis(self) -> torch.Tensor:  # float64 [C, order + 1, k, k]: this order's members
        lo = self.order * (self.order + 1) // 2
        return super()._basis()[:, lo:]

    def _combine(self, basis: torch.Tensor) -> torch.Tensor:
        from scalespace_mk.scalespace.jets import oriented_weights

        w = oriented_weights(self.order, self.theta.to(torch.float64))  # [C, order + 1]
        kernel = torch.einsum("cm,cmhw->chw", w * self.gain.to(torch.float64)[:, None], basis)
        return kernel + self.offset.to(torch.float64)[:, None, None]

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, order={self.order}, "
            f"mode={self.mode!r}, normalized={self.normalized}, bias={self.bias is not None}"
        )

    @classmethod
    def from_census(
        cls, result: Any, *, bias: Any = None, **kwargs: Any
    ) -> OrientedDepthwiseConv2d:
        """Build a layer from an oriented family census (``family="oriented"``).

        Parameters
        ----------
        result : FamilyCensusResult
            From :func:`scalespace_mk.analysis.jets.family_census` with
            ``family="oriented"``: its order, scales, ``theta``, ``gain`` and ``b``.
        bias : optional
            Output bias (default zeros).
        **kwargs
            Further constructor options.

        Returns
        -------
        OrientedDepthwiseConv2d
            Its kernels equal ``result.models()``.
        """
        kw = _family_options(result, "oriented", kwargs)
        return cls(
            len(result),
            int(round(math.sqrt(result.taps))),
            result.order,
            sigma=result.sigma_x,
            theta=result.theta,
            gain=result.gain,
            offset=result.b,
            bias=True if bias is None else bias,
            **kw,
        )


# --------------------------------------------------------------------------------------
# export and factory


def to_conv2d(layer: nn.Module) -> nn.Conv2d:
    """Export a depthwise layer to a plain ``nn.Conv2d`` with identical output.

    Parameters
    ----------
    layer : AnalyticDepthwiseConv2d, MasterKeyDepthwiseConv2d or nn.Conv2d
        The layer to export (an ``nn.Conv2d`` is copied).

    Returns
    -------
    nn.Conv2d
        ``nn.Conv2d(C, C, k, padding=k // 2, groups=C, bias=...)`` whose weight is the
        layer's current kernel and whose bias is the layer's bias, on the layer's device and
        in its parameter dtype; nothing in it depends on :mod:`scalespace_mk` (deployment,
        ONNX, TorchScript).
    """
    if isinstance(layer, nn.Conv2d):
        import copy

        return copy.deepcopy(layer)
    if not isinstance(layer, _CachedDepthwise):
        raise TypeError(
            "layer must be an AnalyticDepthwiseConv2d, MasterKeyDepthwiseConv2d, "
            "NJetDepthwiseConv2d, OrientedDepthwiseConv2d or nn.Conv2d; "
            f"got {type(layer).__name__}"
        )
    with torch.no_grad():
        weight = layer.kernel().detach().clone()
        conv = nn.Conv2d(
            layer.channels,
            layer.channels,
            layer.kernel_size,
            padding=layer.kernel_size // 2,
            groups=layer.channels,
            bias=layer.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        conv.weight.copy_(weight)
        if layer.bias is not None:
            conv.bias.copy_(layer.bias)
    return conv.train(layer.training)


def _zero_mean_unit(f: torch.Tensor) -> torch.Tensor:
    flat = f.reshape(f.shape[0], -1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    norm = flat.norm(dim=1, keepdim=True)
    if bool((norm == 0).any()):
        raise ValueError("a filter is constant: it has no shape after removing its mean")
    return (flat / norm).reshape(f.shape)


def make_dwconv(kind: str, channels: int, kernel_size: int = 7, **kwargs: Any) -> nn.Module:
    """Build the depthwise conv of a network block (the factory of :mod:`~.networks`).

    Parameters
    ----------
    kind : str
        - ``"learned"``: a plain trainable ``nn.Conv2d(C, C, k, padding=k // 2, groups=C)``
          (kwargs: ``bias``, ``device``, ``dtype``);
        - ``"masterkey"``: :class:`MasterKeyDepthwiseConv2d` with the published 8 filters
          (or ``filters=``, anything :func:`scalespace_mk.analysis.filters.load_filters`
          accepts), each
          made zero-mean and unit-l2 (``normalize=False`` keeps them as they are); channel
          c gets filter ``c % 8`` unless ``assignment`` is given;
        - ``"idealized"``: :class:`AnalyticDepthwiseConv2d` with frozen scales
          (``learn_scales=False``) at the given or default (method B) values, types cyclic
          1..8 unless ``types`` is given;
        - ``"learnable"``: the same with ``learn_scales=True``.
        - ``"njet"``: :class:`NJetDepthwiseConv2d` (kwargs: ``order`` (default 2),
          ``sigma_x``, ``learn_scales``, ...): learnable scales and coefficients of the
          discrete N-jet.
    channels : int
        Number of channels C.
    kernel_size : int
        Odd kernel size (default 7; the published filters are 7x7).
    **kwargs
        Options of the chosen layer. For ``"idealized"``/``"learnable"`` also ``sigma``
        (one isotropic scale for every channel) and ``normalize`` (default True: gain and
        offset start at values that make every kernel zero-mean with unit l2 norm, like the
        master key filters; explicit ``gain``/``offset`` win).

    Returns
    -------
    nn.Module
        The layer, input and output ``[B, C, H, W]``.

    Examples
    --------
    >>> import torch
    >>> conv = make_dwconv("idealized", 16)
    >>> k = conv.kernel().detach()
    >>> round(float(k[3].sum()), 6), round(float(k[3].norm()), 6)
    (0.0, 1.0)
    """
    check_choice("kind", kind, DWCONV_KINDS)
    channels = _check_channels(channels)
    kernel_size = check_size(kernel_size, "kernel_size", allow_none=False)
    kw = dict(kwargs)
    if kind == "learned":
        allowed = {"bias", "device", "dtype"}
        extra = sorted(set(kw) - allowed)
        if extra:
            raise ValueError(f"kind 'learned' accepts only {sorted(allowed)}; got {extra}")
        return nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, **kw
        )
    if kind == "njet":
        return NJetDepthwiseConv2d(channels, kernel_size, **kw)
    normalize = kw.pop("normalize", True)
    if kind == "masterkey":
        from scalespace_mk.analysis.filters import load_filters

        f = torch.as_tensor(
            load_filters(kw.pop("filters", None)), dtype=torch.float64, device="cpu"
        )
        if f.shape[-1] != kernel_size:
            raise ValueError(
                f"the filters are {f.shape[-1]}x{f.shape[-1]} but kernel_size is {kernel_size}; "
                "pass filters of the layer's size"
            )
        if normalize:
            f = _zero_mean_unit(f)
        assignment = kw.pop("assignment", None)
        types = kw.pop("types", None)
        if types is not None:
            if assignment is not None:
                raise ValueError("pass either assignment (0-based) or types (1-based), not both")
            assignment = _as_types(types).cpu().numpy() - 1
        return MasterKeyDepthwiseConv2d(channels, f, assignment, **kw)
    # idealized / learnable
    if "learn_scales" in kw:
        raise ValueError(
            f"kind {kind!r} fixes learn_scales; use kind 'idealized' (frozen) or 'learnable'"
        )
    sigma = kw.pop("sigma", None)
    if sigma is not None:
        if "sigma_x" in kw or "sigma_y" in kw:
            raise ValueError("pass either sigma or sigma_x/sigma_y, not both")
        kw["sigma_x"] = kw["sigma_y"] = sigma
    device = kw.pop("device", None)
    device = torch.get_default_device() if device is None else torch.device(device)
    # built on the CPU (the normalisation needs values), then moved (also to "meta")
    layer = AnalyticDepthwiseConv2d(
        channels, kernel_size, learn_scales=(kind == "learnable"), device="cpu", **kw
    )
    if normalize and "gain" not in kw and "offset" not in kw:
        with torch.no_grad():
            g = layer._basis()
            flat = g.reshape(channels, -1)
            mean = flat.mean(dim=1)
            norm = (flat - mean[:, None]).norm(dim=1)
            if bool((norm == 0).any()):
                raise ValueError(
                    "a channel's model is constant, so it cannot be made zero-mean and "
                    "unit-norm; pass gain/offset or normalize=False"
                )
            layer.gain.copy_(1.0 / norm)
            layer.offset.copy_(-mean / norm)
    return layer.to(device)
