"""Idealised 2-D receptive-field models: Gaussians, their differences, and the 8 types.

Every kernel returned here is an array in the index space of a stored depthwise weight,
``h[r, c]`` with rows top to bottom and columns left to right, and is used as a
``conv2d`` weight directly, with no flip (PyTorch's conv2d is a cross-correlation). Its
coordinates are ``x = c - m`` (right) and ``y = m - r`` (**up**) for the centre index
``m = size // 2`` (docs/method.md#coordinates).

Models (docs/method.md#models). Separable ones are outer products
``(D_y T_y)(y) (D_x T_x)(x)`` of 1-D discrete Gaussians with standard deviations ``sigma_x``
and ``sigma_y`` and difference operators from :mod:`scalespace_mk.scalespace.operators`:

- ``"T"``: the Gaussian itself;
- ``"d" + a string of x/y`` of total order 1-4 (``"dx"``, ``"dyy"``, ``"dxxy"``, ...):
  central differences; letters may come in any order;
- ``"dx+"``, ``"dx-"``, ``"dy+"``, ``"dy-"``: half-grid forward/backward differences
  (``"dy+"`` is centred at y = -1/2, i.e. half a pixel *below* the centre row);
- ``"lap"``: the five-point Laplacian of T;
- ``"mk1"`` ... ``"mk8"``: the models of the 8 master key filters (:data:`MASTERKEY_MODELS`);
  ``"mk7"`` is ``K - alpha * lap`` with K the Kronecker delta and one sigma.

Two modes:

- ``"paper"`` (docs/method.md#discretisations, #operators, #models exactly): each 1-D kernel is
  truncated at ``epsilon`` and cropped to ``size`` (not renormalised); the 3-tap operators are
  then applied to the cropped kernel with reflect boundary handling; the Laplacian of
  ``"lap"``/``"mk7"`` uses zero padding.
- ``"full"``: each operator acts on the full-support kernel, and the result is cropped.
  Differences from paper mode sit only in the outermost rows/columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from scalespace_mk._checks import check_choice, check_size
from scalespace_mk.scalespace.kernels import METHODS, gaussian_kernel
from scalespace_mk.scalespace.operators import apply_1d, compose

__all__ = [
    "MASTERKEY_MODELS",
    "MODES",
    "ModelSpec",
    "derivative_model",
    "dog",
    "gaussian_2d",
    "masterkey_model",
    "model_kernel",
    "parse_model",
]

MODES = ("paper", "full")

#: Model name of each of the 8 master key filters (docs/method.md#models).
MASTERKEY_MODELS = {1: "dy+", 2: "dx-", 3: "dy-", 4: "dx+", 5: "dx", 6: "dy", 7: "mk7", 8: "T"}

_DERIV = re.compile(r"^d([xy]{1,4})$")
_HALF = re.compile(r"^d([xy])([+-])$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model name: operators along x and y, or a Laplacian form."""

    name: str
    ops_x: tuple[str, ...] = ()
    ops_y: tuple[str, ...] = ()
    laplacian: bool = False  # "lap"
    centre_surround: bool = False  # "mk7": K - alpha * lap

    @property
    def order(self) -> tuple[int, int]:
        """Differentiation order ``(along x, along y)`` (2, 2 for the Laplacian forms)."""
        if self.laplacian or self.centre_surround:
            return (2, 2)

        def count(ops):
            return sum(2 if op == "xx" else 1 for op in ops)

        return (count(self.ops_x), count(self.ops_y))


def parse_model(name: str) -> ModelSpec:
    """Parse a model name into its operators.

    Parameters
    ----------
    name : str
        ``"T"``, ``"d"`` + x/y letters (total order 1-4), ``"dx+"``, ``"dx-"``, ``"dy+"``,
        ``"dy-"``, ``"lap"``, or ``"mk1"`` ... ``"mk8"``.

    Returns
    -------
    ModelSpec
    """
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string; got {name!r}")
    if (
        name.startswith("mk")
        and name[2:].isascii()
        and name[2:].isdigit()
        and int(name[2:]) in MASTERKEY_MODELS
    ):
        base = MASTERKEY_MODELS[int(name[2:])]
        if base == "mk7":
            return ModelSpec(name, centre_surround=True)
        spec = parse_model(base)
        return ModelSpec(name, spec.ops_x, spec.ops_y)
    if name == "T":
        return ModelSpec(name)
    if name == "lap":
        return ModelSpec(name, laplacian=True)
    m = _HALF.match(name)
    if m:
        op = ("x" + m.group(2),)
        return ModelSpec(name, op if m.group(1) == "x" else (), op if m.group(1) == "y" else ())
    m = _DERIV.match(name)
    if m:
        letters = m.group(1)
        return ModelSpec(name, compose(letters.count("x")), compose(letters.count("y")))
    raise ValueError(
        f"unknown model name {name!r}; accepted: 'T', 'd' followed by 1-4 letters x/y "
        "(e.g. 'dx', 'dyy', 'dxxy'), 'dx+', 'dx-', 'dy+', 'dy-', 'lap', 'mk1' ... 'mk8'"
    )


# --------------------------------------------------------------------------------------


def _gather(*values: Any) -> tuple[list[torch.Tensor | None], bool, torch.dtype, int | None]:
    """Convert scalars/arrays/tensors to float64 tensors; find the output type and batch."""
    tensors, from_torch, dtype, batch, device = [], False, None, None, None
    for v in values:
        if v is None:
            tensors.append(None)
            continue
        if isinstance(v, torch.Tensor):
            from_torch = True
            if v.is_floating_point():
                dtype = v.dtype if dtype is None else torch.promote_types(dtype, v.dtype)
            device = v.device
            t = v.to(torch.float64)
        else:
            try:
                t = torch.as_tensor(np.array(v, dtype=np.float64, copy=True))
            except (TypeError, ValueError):
                raise TypeError(
                    f"scales and alpha must be numbers or 1-D arrays; got {v!r}"
                ) from None
        if t.ndim > 1:
            raise ValueError(
                f"scales and alpha must be scalars or 1-D batches; got shape {tuple(t.shape)}"
            )
        if t.ndim == 1:
            if batch not in (None, t.shape[0]) and t.shape[0] != 1:
                raise ValueError(f"batch lengths differ: {batch} and {t.shape[0]}")
            batch = max(batch or 1, t.shape[0])
        tensors.append(t)
    if device is not None:
        tensors = [t.to(device) if t is not None else None for t in tensors]
    return tensors, from_torch, dtype or torch.float64, batch


def _axis_kernels(
    sigma: torch.Tensor,
    ops: tuple[str, ...],
    size: int,
    method: str,
    mode: str,
    epsilon: float,
    boundary: str,
    memo: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """1-D kernels ``[B, size]`` in increasing-coordinate order, operators applied.

    ``memo`` (a dict, per scale tensor ``sigma``) keeps the Gaussians by their number of
    taps, so that several operators on the same scales transform them once."""
    if mode == "full":  # operators on the full Gaussian: one extra tap per side and factor
        size, boundary = size + 2 * len(ops), "none"
    values = None if memo is None else memo.get(size)
    if values is None:
        values = gaussian_kernel(sigma, method=method, size=size, epsilon=epsilon)
        if memo is not None:
            memo[size] = values
    for op in ops:
        values = apply_1d(values, op, boundary=boundary)
    return values


def model_kernel(
    name: str,
    sigma_x: Any,
    sigma_y: Any = None,
    *,
    alpha: Any = None,
    size: int = 7,
    method: str = "discgauss",
    mode: str = "paper",
    epsilon: float = 1e-8,
) -> Any:
    """2-D idealised model kernel, as a depthwise conv weight (rows top to bottom, y up).

    Parameters
    ----------
    name : str
        Model name; see :func:`parse_model` and the module docstring.
    sigma_x, sigma_y : float, array_like [B] or torch.Tensor [] / [B]
        Standard deviations along x and y (>= 0; ``s = sigma**2``). ``sigma_y=None`` means
        ``sigma_y = sigma_x``. For ``"mk7"`` and ``"lap"``-based DoG forms only one sigma is
        used: ``sigma_y`` must be None or equal to ``sigma_x`` for ``"mk7"``.
    alpha : float, array_like [B] or torch.Tensor, optional
        Weight of the Laplacian in ``"mk7"`` (required there, rejected elsewhere).
    size : int
        Odd kernel size (default 7).
    method : str
        1-D Gaussian discretisation, one of :data:`scalespace_mk.scalespace.kernels.METHODS`.
    mode : str
        ``"paper"`` or ``"full"`` (see the module docstring).
    epsilon : float
        Relative truncation error of each 1-D kernel, in (0, 1).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``[size, size]``, or ``[B, size, size]`` when any parameter is a 1-D batch. numpy in,
        float64 numpy out; any tensor in, tensor out (differentiable in sigma and alpha).

    Notes
    -----
    The models carry the signs of Gaussian derivatives: the response of ``"dx"``,
    ``"dx+"``, ``"dx-"`` to the monomial x (and of the y models to y) is +1, computed as a
    convolution at the centre, ``sum_p h(p) * (-p_x)``.

    Examples
    --------
    >>> k = model_kernel("dx", 1.0, size=21, mode="full")
    >>> xs = np.arange(-10, 11)
    >>> round(float((k * -xs[None, :]).sum()), 6)  # convolution response to x: 1 - 1e-8
    1.0
    """
    spec = parse_model(name)
    size = check_size(size, allow_none=False)
    check_choice("method", method, METHODS)
    check_choice("mode", mode, MODES)
    if spec.centre_surround:
        if alpha is None:
            raise ValueError("model 'mk7' needs alpha (the weight of the Laplacian); got None")
    elif alpha is not None:
        raise ValueError(f"alpha is used only by model 'mk7'; got alpha for {name!r}")
    if sigma_x is None:
        raise ValueError("sigma_x must be a number >= 0 or a 1-D batch of them; got None")
    (sx, sy, al), from_torch, dtype, batch = _gather(sigma_x, sigma_y, alpha)
    if any(t is not None and t.numel() == 0 for t in (sx, sy, al)):
        raise ValueError("sigma_x, sigma_y and alpha hold an empty batch; pass at least one scale")
    if sy is None:
        sy = sx
    elif spec.centre_surround and not torch.equal(
        torch.broadcast_tensors(sx, sy)[0], torch.broadcast_tensors(sx, sy)[1]
    ):
        raise ValueError("model 'mk7' has one scale: pass sigma_y=None or equal to sigma_x")
    if al is not None and not bool(torch.isfinite(al).all()):
        raise ValueError("alpha must be finite")
    n = batch or 1
    one_scale = sy is sx  # sigma_y None: the y kernels are the x kernels
    sx, sy = sx.expand(n), sy.expand(n)
    memo_x: dict[int, torch.Tensor] = {}  # Gaussians by taps, computed once per axis
    memo_y = memo_x if one_scale else {}

    def axis(sig, ops, boundary="reflect", memo=None):
        return _axis_kernels(sig, ops, size, method, mode, epsilon, boundary, memo)

    if spec.laplacian or spec.centre_surround:
        tx, ty = axis(sx, (), memo=memo_x), axis(sy, (), memo=memo_y)
        # docs/method.md#models: nabla5 on the cropped array with zero padding ('same')
        bnd = "zero"
        dxx, dyy = axis(sx, ("xx",), bnd, memo_x), axis(sy, ("xx",), bnd, memo_y)
        kernel = (
            ty.flip(-1)[:, :, None] * dxx[:, None, :] + dyy.flip(-1)[:, :, None] * tx[:, None, :]
        )
        if spec.centre_surround:
            delta = torch.zeros(size, size, dtype=torch.float64, device=kernel.device)
            delta[size // 2, size // 2] = 1.0
            a = al.expand(n)
            kernel = delta - a[:, None, None] * kernel
    else:
        u = axis(sx, spec.ops_x)
        v = axis(sy, spec.ops_y).flip(-1)  # increasing y -> rows top to bottom
        kernel = v[:, :, None] * u[:, None, :]
    if batch is None:
        kernel = kernel[0]
    return kernel.to(dtype) if from_torch else kernel.numpy()


#: Alias of :func:`model_kernel` under the name used for derivative models.
derivative_model = model_kernel


def gaussian_2d(
    sigma_x: Any,
    sigma_y: Any = None,
    *,
    size: int = 7,
    method: str = "discgauss",
    mode: str = "paper",
    epsilon: float = 1e-8,
) -> Any:
    """Separable 2-D Gaussian ``T(x; sigma_x) T(y; sigma_y)``; see :func:`model_kernel`."""
    return model_kernel("T", sigma_x, sigma_y, size=size, method=method, mode=mode, epsilon=epsilon)


def masterkey_model(
    filter_type: int,
    sigma_x: Any,
    sigma_y: Any = None,
    *,
    alpha: Any = None,
    size: int = 7,
    method: str = "discgauss",
    mode: str = "paper",
    epsilon: float = 1e-8,
) -> Any:
    """Idealised model of master key filter ``filter_type`` (1-8), docs/method.md#models.

    Parameters
    ----------
    filter_type : int
        1: ``delta_y+ T`` (centred at y = -1/2), 2: ``delta_x- T`` (x = +1/2),
        3: ``delta_y- T`` (y = +1/2), 4: ``delta_x+ T`` (x = -1/2), 5: ``delta_x T``,
        6: ``delta_y T``, 7: ``K - alpha nabla5 T(sigma, sigma)``, 8: ``T``.
    sigma_x, sigma_y, alpha, size, method, mode, epsilon
        As in :func:`model_kernel` (type 7 has one sigma and needs ``alpha``).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``[size, size]`` or ``[B, size, size]`` (rows top to bottom, y up; no flip needed to
        use it as a conv2d weight).
    """
    if (
        isinstance(filter_type, bool)
        or not isinstance(filter_type, int | np.integer)
        or (int(filter_type) not in MASTERKEY_MODELS)
    ):
        raise ValueError(f"filter_type must be an integer from 1 to 8; got {filter_type!r}")
    return model_kernel(
        f"mk{int(filter_type)}",
        sigma_x,
        sigma_y,
        alpha=alpha,
        size=size,
        method=method,
        mode=mode,
        epsilon=epsilon,
    )


def dog(
    sigma_1: Any,
    sigma_2: Any,
    *,
    size: int = 7,
    method: str = "discgauss",
    mode: str = "paper",
    epsilon: float = 1e-8,
) -> Any:
    """Difference of two isotropic discrete Gaussians, ``T(sigma_1) - T(sigma_2)`` in 2-D.

    Parameters
    ----------
    sigma_1, sigma_2 : float, array_like [B] or torch.Tensor
        Standard deviations (>= 0) of the positive and the negative Gaussian.
    size, method, mode, epsilon
        As in :func:`model_kernel`.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``[size, size]`` or ``[B, size, size]``.

    Notes
    -----
    To first order in ``ds``, ``T(s) - T(s + ds) = -(ds / 2) nabla5 T(s)`` (the semi-discrete
    diffusion equation), which ties model 7 to a DoG; see :mod:`scalespace_mk.scalespace.symbolic`.
    """
    kw = dict(size=size, method=method, mode=mode, epsilon=epsilon)
    return gaussian_2d(sigma_1, **kw) - gaussian_2d(sigma_2, **kw)
