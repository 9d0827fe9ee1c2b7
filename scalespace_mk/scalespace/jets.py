"""Scale-space N-jets and oriented derivatives of the discrete Gaussian.

The **N-jet** at scales ``(sigma_x, sigma_y)`` is the set of discrete derivative kernels

    delta_x^i delta_y^j T(.; sigma_x, sigma_y),   i + j <= N,   N = 1 .. 4,

with ``T`` the separable discrete analogue of the Gaussian
(:func:`scalespace_mk.scalespace.kernels.discrete_gaussian`) and ``delta`` the central
differences of :mod:`scalespace_mk.scalespace.operators` (``delta_x^3 = delta_x delta_xx``,
``delta_x^4 = delta_xx delta_xx``). Member ``(i, j)`` equals
``model_kernel("d" + "x" * i + "y" * j, sigma_x, sigma_y)`` of
:mod:`scalespace_mk.scalespace.models` (``"T"`` for ``(0, 0)``) in both modes, paper and
full; the members are ordered by total order, then by the power of y:
``T, dx, dy, dxx, dxy, dyy, dxxx, ...`` (:func:`jet_indices`). Each 1-D kernel is computed
once per scale and axis and every operator is a constant matrix (:func:`axis_operators`),
so a whole jet for many scales is one FFT batch and a few matrix products.

**Scale normalisation** (Lindeberg): with ``normalized=True`` member ``(i, j)`` is multiplied
by ``sigma_x**(gamma i) sigma_y**(gamma j)`` (``gamma = 1`` by default), i.e.
``t**(gamma |alpha| / 2)`` with ``t = s = sigma**2``, so that coefficients of filters at
different scales are comparable (for ``gamma = 1`` the responses of the normalised
derivatives to a pattern scaled with sigma are scale-independent).

**Oriented derivatives** at angle ``theta`` (radians, counter-clockwise from +x, y **up**):

    delta_phi       = cos(theta) delta_x + sin(theta) delta_y,
    delta_phiphi    = cos^2 delta_xx + 2 cos sin delta_xy + sin^2 delta_yy,

built from the jet members with :func:`oriented_weights`. For the continuous isotropic
Gaussian these equal the rotated axis derivatives exactly (the steering identity,
:func:`scalespace_mk.scalespace.symbolic.steering_identity`); for the discrete Gaussian and
differences they do so only approximately
(:func:`scalespace_mk.scalespace.symbolic.steering_error`, ``docs/theory.md``).

Conventions: kernels are stored depthwise weights ``h[r, c]`` used by ``F.conv2d`` with no
flip, ``x = c - m`` and ``y = m - r`` for the centre index ``m = size // 2``; ``sigma`` is a
standard deviation (``s = sigma**2``). numpy in gives float64 numpy out; any tensor in
gives a tensor out, differentiable in the scales (exact derivative of the diffusion
equation) and in theta.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from scalespace_mk._checks import check_choice, check_size
from scalespace_mk.scalespace import kernels as _kernels
from scalespace_mk.scalespace.models import MODES
from scalespace_mk.scalespace.operators import apply_1d, compose

__all__ = [
    "JET_ORDERS",
    "ORIENTED_ORDERS",
    "axis_operators",
    "coefficient_names",
    "jet_basis",
    "jet_axis_rows",
    "jet_basis_rows",
    "jet_indices",
    "jet_names",
    "oriented_kernel",
    "oriented_weights",
]

#: Orders N of the N-jets offered.
JET_ORDERS = (1, 2, 3, 4)
#: Orders of the oriented derivatives offered.
ORIENTED_ORDERS = (1, 2)


def _check_order(order: Any, accepted: tuple[int, ...] = JET_ORDERS, name: str = "order") -> int:
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or order not in accepted:
        raise ValueError(f"{name} must be one of {accepted}; got {order!r}")
    return int(order)


def jet_indices(order: int) -> tuple[tuple[int, int], ...]:
    """Derivative orders ``(i, j)`` (along x, along y) of the N-jet members.

    Parameters
    ----------
    order : int
        N, 1 to 4.

    Returns
    -------
    tuple of (int, int)
        All ``i + j <= N``, by total order and then by j: ``(0, 0), (1, 0), (0, 1), (2, 0),
        (1, 1), (0, 2), ...``; ``(N + 1)(N + 2) / 2`` members.
    """
    order = _check_order(order)
    return tuple((n - j, j) for n in range(order + 1) for j in range(n + 1))


def jet_names(order: int) -> tuple[str, ...]:
    """Model names of the members (``"T", "dx", "dy", "dxx", ...``), as in ``models``."""
    return tuple("d" + "x" * i + "y" * j if i + j else "T" for i, j in jet_indices(order))


def coefficient_names(order: int) -> tuple[str, ...]:
    """Names of the members' coefficients: ``"c_0", "c_x", "c_y", "c_xx", "c_xy", ...``."""
    return tuple("c_" + ("x" * i + "y" * j or "0") for i, j in jet_indices(order))


def _factors(order: int) -> int:
    return len(compose(order))


@functools.lru_cache(maxsize=64)
def _axis_operators_cpu(order: int, size: int, mode: str) -> torch.Tensor:
    max_f = _factors(order)
    n = size + 2 * max_f if mode == "full" else size
    eye = torch.eye(n, dtype=torch.float64)
    mats = []
    for p in range(order + 1):
        m = eye
        for op in compose(p):
            m = apply_1d(m, op, boundary="reflect" if mode == "paper" else "none")
        if mode == "full":  # valid part has n - 2 f columns; keep the centre ``size``
            lo = max_f - _factors(p)
            m = m[:, lo : lo + size]
        mats.append(m)
    return torch.stack(mats)


def axis_operators(order: int, size: int, mode: str = "paper", device: Any = None) -> torch.Tensor:
    """The 1-D central differences of orders ``0 .. order`` as matrices on Gaussian taps.

    Parameters
    ----------
    order : int
        Highest derivative order along one axis (0 to 4).
    size : int
        Odd number of output taps.
    mode : str
        ``"paper"``: the operators act on the ``size``-tap cropped Gaussian with reflect
        boundary handling; ``"full"``: they act on a Gaussian of ``size + 2 f`` taps
        (``f`` = 2 for orders 3 and 4, else 1) and the valid centre is kept.
    device : torch.device, optional
        Where to put the (cached, CPU-built) matrices.

    Returns
    -------
    torch.Tensor, float64, shape [order + 1, n, size]
        ``g @ A[p]`` is the order-p difference of the 1-D Gaussian taps ``g`` ``[.., n]``
        (``n = size`` in paper mode, ``size + 2 f`` in full mode), taps in increasing
        coordinate order. Built by applying
        :func:`scalespace_mk.scalespace.operators.apply_1d` to the identity.
    """
    compose(order)  # refuses anything but an integer from 0 to 4
    size = check_size(size, allow_none=False)
    check_choice("mode", mode, MODES)
    build = _axis_operators_cpu
    if torch.compiler.is_compiling():  # dynamo traces through caches: build it plainly
        build = _axis_operators_cpu.__wrapped__
    mats = build(int(order), size, mode)
    return mats if device is None else mats.to(device)


def _index_tensors(order: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.tensor(jet_indices(order), dtype=torch.int64, device=device)
    return idx[:, 0], idx[:, 1]


def jet_axis_rows(
    sigma_x: torch.Tensor,
    sigma_y: torch.Tensor,
    order: int,
    size: int,
    *,
    mode: str = "paper",
    n_fft: int,
    eps1d: float = 1e-8,
    normalized: bool = False,
    gamma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1-D factors of the N-jet: ``u[b, i] = delta_x^i T`` and ``v[b, j] = delta_y^j T``.

    Member ``(i, j)`` of :func:`jet_basis_rows` is the outer product ``v[:, j] (x) u[:, i]``
    (rows times columns). No checks, no host sync.

    Parameters
    ----------
    sigma_x, sigma_y, order, size, mode, n_fft, eps1d, normalized, gamma
        As in :func:`jet_basis_rows`.

    Returns
    -------
    (torch.Tensor, torch.Tensor), float64, shapes [B, N + 1, size] each
        ``u`` with taps left to right (x increasing) and ``v`` with taps top to bottom
        (y decreasing: already in row order), including the scale normalisation
        ``sigma_x**(gamma i)`` and ``sigma_y**(gamma j)``; differentiable in the scales.
    """
    b = sigma_x.shape[0]
    ops = axis_operators(order, size, mode, sigma_x.device)  # [N + 1, n, size]
    n = ops.shape[1]
    sig = torch.cat([sigma_x, sigma_y]).to(torch.float64)
    rows = _kernels.discrete_gaussian_rows(sig, n, n_fft=n_fft, eps1d=eps1d)
    axes = torch.einsum("bn,pns->bps", rows, ops)  # [2B, N + 1, size]
    if normalized:
        powers = gamma * torch.arange(order + 1, dtype=torch.float64, device=sig.device)
        axes = axes * (sig[:, None] ** powers)[:, :, None]
    return axes[:b], axes[b:].flip(-1)  # along y: increasing y -> rows top to bottom


def jet_basis_rows(
    sigma_x: torch.Tensor,
    sigma_y: torch.Tensor,
    order: int,
    size: int,
    *,
    mode: str = "paper",
    n_fft: int,
    eps1d: float = 1e-8,
    normalized: bool = False,
    gamma: float = 1.0,
) -> torch.Tensor:
    """N-jet bases ``[B, M, size, size]`` for B scale pairs: no checks, no host sync.

    The fast path behind :func:`jet_basis` (for layers and the family census).

    Parameters
    ----------
    sigma_x, sigma_y : torch.Tensor, shape [B]
        Standard deviations, >= 0 and within the ``n_fft``'s range (not checked).
    order : int
        N (1 to 4; not checked).
    size : int
        Odd kernel size.
    mode : str
        ``"paper"`` or ``"full"``.
    n_fft : int
        FFT length from :func:`scalespace_mk.scalespace.kernels.fft_length` for the
        largest scale and ``size + 4`` taps (full mode) or ``size`` (paper mode).
    eps1d : float
        1-D truncation error of the Gaussians.
    normalized, gamma
        Scale normalisation (see the module docstring).

    Returns
    -------
    torch.Tensor, float64, shape [B, M, size, size]
        Member m is ``delta_x^i delta_y^j T`` for ``(i, j) = jet_indices(order)[m]``,
        rows top to bottom (y up); differentiable in the scales.
    """
    ux, vy = jet_axis_rows(
        sigma_x,
        sigma_y,
        order,
        size,
        mode=mode,
        n_fft=n_fft,
        eps1d=eps1d,
        normalized=normalized,
        gamma=gamma,
    )
    ii, jj = _index_tensors(order, sigma_x.device)
    u, v = ux[:, ii], vy[:, jj]  # [B, M, size]
    return v[..., :, None] * u[..., None, :]


def _gather_scales(sigma_x: Any, sigma_y: Any) -> tuple[torch.Tensor, torch.Tensor, bool, Any]:
    """Validated float64 tensors [B] (broadcast), whether torch came in, and the batch flag."""
    outs, from_torch, dtype, batched = [], False, None, False
    for name, v in (("sigma_x", sigma_x), ("sigma_y", sigma_y)):
        if v is None:
            if name == "sigma_x":
                raise TypeError(
                    "sigma_x must be a number, a 1-D array or a tensor of scales (standard "
                    "deviations >= 0); got None"
                )
            outs.append(None)
            continue
        if isinstance(v, torch.Tensor):
            from_torch = True
            if v.is_floating_point():
                dtype = v.dtype if dtype is None else torch.promote_types(dtype, v.dtype)
        t, _, shape = _kernels._to_tensor(v)  # checks: real, >= 0, scalar or 1-D
        if not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(f"{name} must be finite; got {v!r}")
        batched = batched or len(shape) == 1
        outs.append(t)
    sx, sy = outs
    if sy is None:
        sy = sx
    if sx.numel() != sy.numel() and 1 not in (sx.numel(), sy.numel()):
        raise ValueError(
            f"sigma_x and sigma_y must have the same length; got {sx.numel()} and {sy.numel()}"
        )
    if sx.numel() == 0 or sy.numel() == 0:
        raise ValueError("sigma_x is empty; pass at least one scale")
    sx, sy = torch.broadcast_tensors(sx, sy)
    if isinstance(sigma_x, torch.Tensor):
        sx, sy = sx.to(sigma_x.device), sy.to(sigma_x.device)
    return sx, sy, from_torch, (batched, dtype or torch.float64)


def jet_basis(
    order: int,
    sigma_x: Any,
    sigma_y: Any = None,
    *,
    size: int = 7,
    mode: str = "paper",
    normalized: bool = False,
    gamma: float = 1.0,
    epsilon: float = 1e-8,
) -> Any:
    """The discrete N-jet ``delta_x^i delta_y^j T(.; sigma_x, sigma_y)``, ``i + j <= N``.

    Parameters
    ----------
    order : int
        N, 1 to 4 (:data:`JET_ORDERS`).
    sigma_x, sigma_y : float, array_like [B] or torch.Tensor [] / [B]
        Standard deviations along x and y (>= 0; ``s = sigma**2``); ``sigma_y=None``: one
        scale, ``sigma_y = sigma_x``.
    size : int
        Odd kernel size (default 7).
    mode : str
        ``"paper"`` (operators on the cropped Gaussian, reflect boundary) or ``"full"``
        (operators on the full Gaussian, then cropped); as
        :func:`scalespace_mk.scalespace.models.model_kernel`.
    normalized : bool
        Multiply member ``(i, j)`` by ``sigma_x**(gamma i) sigma_y**(gamma j)``
        (scale-normalised derivatives; default False).
    gamma : float
        Exponent of the scale normalisation (default 1).
    epsilon : float
        Truncation error of each 1-D Gaussian, in (0, 1).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``[M, size, size]``, or ``[B, M, size, size]`` for a batch of scales, with
        ``M = (N + 1)(N + 2) / 2`` members in the order of :func:`jet_indices` (names
        :func:`jet_names`). Stored-weight layout: rows top to bottom, ``x = c - m``,
        ``y = m - r`` (y up), no flip for ``conv2d``.

    Examples
    --------
    >>> from scalespace_mk.scalespace.models import model_kernel
    >>> B = jet_basis(2, 1.0, 0.8)
    >>> B.shape
    (6, 7, 7)
    >>> bool(np.allclose(B[4], model_kernel("dxy", 1.0, 0.8), atol=1e-15))
    True
    """
    order = _check_order(order)
    size = check_size(size, allow_none=False)
    check_choice("mode", mode, MODES)
    gamma = float(gamma)
    if not np.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite number >= 0; got {gamma!r}")
    eps1d = _kernels.truncation_error_1d(epsilon, 1)
    sx, sy, from_torch, (batched, dtype) = _gather_scales(sigma_x, sigma_y)
    taps = size + 2 * _factors(order) if mode == "full" else size
    n_fft = _kernels.fft_length(float(torch.cat([sx, sy]).detach().max()), taps)
    basis = jet_basis_rows(
        sx,
        sy,
        order,
        size,
        mode=mode,
        n_fft=n_fft,
        eps1d=eps1d,
        normalized=bool(normalized),
        gamma=gamma,
    )
    if not batched:
        basis = basis[0]
    return basis.to(dtype) if from_torch else basis.detach().numpy()


def oriented_weights(order: int, theta: Any) -> Any:
    """Weights of the order-``order`` jet members that steer to angle ``theta``.

    Parameters
    ----------
    order : int
        1: ``(cos, sin)`` on ``(dx, dy)``; 2: ``(cos^2, 2 cos sin, sin^2)`` on
        ``(dxx, dxy, dyy)``.
    theta : float, array_like [B] or torch.Tensor
        Angle in radians, counter-clockwise from +x with y up.

    Returns
    -------
    numpy.ndarray or torch.Tensor, shape [..., order + 1]
        Same type as ``theta`` (numpy float64 for numbers).
    """
    order = _check_order(order, ORIENTED_ORDERS)
    t = theta if isinstance(theta, torch.Tensor) else torch.as_tensor(np.asarray(theta, float))
    c, s = torch.cos(t), torch.sin(t)
    w = torch.stack([c, s], -1) if order == 1 else torch.stack([c * c, 2 * c * s, s * s], -1)
    return w if isinstance(theta, torch.Tensor) else w.numpy()


def oriented_kernel(
    order: int,
    theta: Any,
    sigma_x: Any,
    sigma_y: Any = None,
    *,
    size: int = 7,
    mode: str = "paper",
    epsilon: float = 1e-8,
) -> Any:
    """Directional derivative ``delta_phi T`` (order 1) or ``delta_phiphi T`` (order 2).

    Parameters
    ----------
    order : int
        1 or 2 (:data:`ORIENTED_ORDERS`).
    theta : float, array_like [B] or torch.Tensor
        Angle in radians, counter-clockwise from +x (y up); ``theta = 0`` gives
        ``model_kernel("dx")`` (order 1) or ``"dxx"`` (order 2), ``pi / 2`` gives the y
        derivatives.
    sigma_x, sigma_y, size, mode, epsilon
        As in :func:`jet_basis` (steering is exact only for one scale in the continuous
        theory; with ``sigma_x != sigma_y`` the kernel is still the weighted sum).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``[size, size]`` or ``[B, size, size]`` (batch from theta or the scales).
    """
    order = _check_order(order, ORIENTED_ORDERS)
    basis = jet_basis(order, sigma_x, sigma_y, size=size, mode=mode, epsilon=epsilon)
    w = oriented_weights(order, theta)
    lo = order * (order + 1) // 2  # first member of this order
    if isinstance(basis, torch.Tensor) or isinstance(w, torch.Tensor):
        bt, wt = torch.as_tensor(basis), torch.as_tensor(w)
        dtype = torch.promote_types(bt.dtype, wt.dtype)
        bt, wt = bt.to(dtype).to(wt.device), wt.to(dtype)
        return torch.einsum("...mrc,...m->...rc", bt[..., lo:, :, :], wt)
    return np.einsum("...mrc,...m->...rc", basis[..., lo:, :, :], w)
