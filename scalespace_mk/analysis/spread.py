"""Spread measures of filters: mean, covariance and a separability index (docs/method.md#spread).

For a filter ``h`` with the weight ``w = |h|`` (or ``|h| * weights``), in centred y-up
coordinates ``p = (x, y)`` with ``x = c - m`` and ``y = m - r`` for the centre index
``m = (k - 1) // 2``:

- mean ``M = sum(p w) / sum(w)``;
- covariance ``V = sum((p - M)(p - M)^T w) / sum(w)`` (the same as
  ``sum(p p^T w) / sum(w) - M M^T``, computed in the centred form for accuracy);
- separability index ``|V_xy| / sqrt(V_xx V_yy)``, the absolute correlation coefficient of
  the weight: 0 when the principal axes of ``V`` are the grid axes (as for every separable
  outer product), 1 when all weight lies on one diagonal line.

The weighted measures of the paper use ``w = |h| * |g|``, with ``g`` the idealised model of
the same master key filter type at a reference scale (:func:`reference_weights`).

All functions are vectorised over the ``N`` filters of a ``[N, k, k]`` stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from scalespace_mk._checks import check_filters
from scalespace_mk._display import Tabular
from scalespace_mk.analysis.types import resolve_filter_types, resolve_sigma_ref

__all__ = [
    "SpreadResult",
    "centred_coordinates",
    "reference_weights",
    "spread",
    "weighted_spread",
]


@dataclass(frozen=True, repr=False)
class SpreadResult(Tabular):
    """Spread measures of ``N`` filters.

    Attributes
    ----------
    mean : numpy.ndarray
        ``[N, 2]`` mean position ``(m_x, m_y)`` in pixels, y up.
    cov : numpy.ndarray
        ``[N, 2, 2]`` covariance ``[[V_xx, V_xy], [V_xy, V_yy]]`` in pixels squared.
    l1 : numpy.ndarray
        ``[N]`` total weight ``sum(w)`` (the l1 norm of ``h`` for the unweighted measures).
    separability : numpy.ndarray
        ``[N]`` index ``|V_xy| / sqrt(V_xx V_yy)`` in [0, 1]; 0 means axis-aligned
        (separable) spread, and it is set to 0 where ``V_xx V_yy = 0`` (then ``V_xy = 0``).
    """

    mean: np.ndarray
    cov: np.ndarray
    l1: np.ndarray
    separability: np.ndarray

    def __len__(self) -> int:
        return int(self.l1.shape[0])

    def _headline(self) -> str:
        return f"spread of {len(self)} filters (pixels, y up; index from 1)"

    def _columns(self) -> dict[str, list[Any]]:
        """index (from 1), m_x, m_y, V_xx, V_xy, V_yy, l1, separability."""
        return {
            "index": list(range(1, len(self) + 1)),
            "m_x": self.mean[:, 0].tolist(),
            "m_y": self.mean[:, 1].tolist(),
            "V_xx": self.cov[:, 0, 0].tolist(),
            "V_xy": self.cov[:, 0, 1].tolist(),
            "V_yy": self.cov[:, 1, 1].tolist(),
            "l1": self.l1.tolist(),
            "separability": self.separability.tolist(),
        }

    def to_records(self, *, start: int = 1) -> list[dict[str, Any]]:
        """Return one JSON-ready dict per filter.

        Parameters
        ----------
        start : int, optional
            Index of the first filter (default 1, the paper's numbering of the published 8).

        Returns
        -------
        list of dict
            ``{"index", "mean": [mx, my], "cov": [[vxx, vxy], [vxy, vyy]], "l1",
            "separability"}`` with Python floats.
        """
        return [
            {
                "index": start + i,
                "mean": [float(v) for v in self.mean[i]],
                "cov": [[float(v) for v in row] for row in self.cov[i]],
                "l1": float(self.l1[i]),
                "separability": float(self.separability[i]),
            }
            for i in range(len(self))
        ]


def centred_coordinates(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the centred y-up coordinates of a ``size x size`` grid.

    Parameters
    ----------
    size : int
        Odd grid size k.

    Returns
    -------
    x, y : numpy.ndarray
        float64 ``[k, k]`` arrays with ``x[r, c] = c - m`` and ``y[r, c] = m - r`` for
        ``m = (k - 1) // 2`` (x right, y up).
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"size must be a positive odd integer; got {size!r}")
    if size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer; got {size!r}")
    m = (size - 1) // 2
    idx = np.arange(size, dtype=np.float64)
    x = np.broadcast_to(idx[None, :] - m, (size, size)).copy()
    y = np.broadcast_to(m - idx[:, None], (size, size)).copy()
    return x, y


def _moments(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean ``[..., 2]``, covariance ``[..., 2, 2]`` and total ``[...]`` of weights ``[..., k, k]``.

    The caller guarantees a positive total. Each filter's weights are first scaled by an
    exact power of two that brings the largest to [1, 2) (mean and covariance do not depend
    on it), so taps near the float maximum or minimum give finite moments; the total is
    scaled back (and is ``inf`` only when the sum itself exceeds the float range).
    """
    x, y = centred_coordinates(w.shape[-1])
    peak = w.max(axis=(-2, -1), keepdims=True)
    with np.errstate(divide="ignore"):
        exponent = np.where(peak > 0, -np.floor(np.log2(np.where(peak > 0, peak, 1.0))), 0.0)
    w = np.ldexp(w, exponent.astype(np.int64))
    with np.errstate(over="ignore"):
        total_scaled = w.sum(axis=(-2, -1))
        full_total = np.ldexp(total_scaled, -exponent[..., 0, 0].astype(np.int64))
    total = total_scaled
    mx = (w * x).sum(axis=(-2, -1)) / total
    my = (w * y).sum(axis=(-2, -1)) / total
    dx = x - mx[..., None, None]
    dy = y - my[..., None, None]
    vxx = (w * dx * dx).sum(axis=(-2, -1)) / total
    vyy = (w * dy * dy).sum(axis=(-2, -1)) / total
    vxy = (w * dx * dy).sum(axis=(-2, -1)) / total
    mean = np.stack([mx, my], axis=-1)
    cov = np.stack([np.stack([vxx, vxy], axis=-1), np.stack([vxy, vyy], axis=-1)], axis=-2)
    return mean, cov, full_total


def spread(h: Any, *, weights: Any = None) -> SpreadResult:
    """Mean, covariance and separability of ``|h|`` (optionally times ``weights``).

    Parameters
    ----------
    h : array_like or torch.Tensor
        Filters ``[N, k, k]`` or one filter ``[k, k]`` (odd k), stored weights ``h[r, c]``.
    weights : array_like or torch.Tensor, optional
        Nonnegative weights broadcastable to ``[N, k, k]`` (e.g. ``[k, k]`` for all filters,
        or ``[N, k, k]``). The measures are of ``w = |h| * weights``; default ``w = |h|``.

    Returns
    -------
    SpreadResult
        ``mean [N, 2]``, ``cov [N, 2, 2]``, ``l1 [N]`` (``sum(w)``), ``separability [N]``.
        A single ``[k, k]`` filter gives ``N = 1``.

    Raises
    ------
    ValueError
        If ``h`` is not a valid filter stack, ``weights`` do not broadcast, hold negative or
        non-finite values, or are zero wherever a filter is nonzero.

    Notes
    -----
    Coordinates are centred and y points up: ``x = c - m``, ``y = m - r``. The mean moves by
    +1 in x when the filter content moves one column right, and by +1 in y when it moves one
    row up (to a smaller row index). The covariance is computed in centred form,
    ``V = sum((p - M)(p - M)^T w) / sum(w)``.

    Examples
    --------
    >>> import numpy as np
    >>> h = np.zeros((7, 7)); h[3, 4] = 1.0; h[2, 4] = -1.0
    >>> r = spread(h)
    >>> r.mean[0].tolist(), r.cov[0].tolist()
    ([1.0, 0.5], [[0.0, 0.0], [0.0, 0.25]])
    """
    arr = check_filters(h, "h")
    w = np.abs(arr)
    if weights is not None:
        if isinstance(weights, torch.Tensor):
            weights = weights.detach().cpu().numpy()
        try:
            wts = np.asarray(weights, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"weights must be a numeric array broadcastable to {arr.shape}; "
                f"got {type(weights).__name__}"
            ) from None
        try:
            wts = np.broadcast_to(wts, arr.shape)
        except ValueError:
            raise ValueError(
                f"weights must broadcast to the filters' shape {arr.shape} ([k, k] or "
                f"[N, k, k]); got shape {wts.shape}"
            ) from None
        if not np.isfinite(wts).all() or (wts < 0).any():
            raise ValueError("weights must be finite and >= 0 (e.g. |g| of a model filter)")
        w = w * wts
    with np.errstate(over="ignore"):  # taps near the float maximum: the sum may be inf
        total = w.sum(axis=(1, 2))
    if not (total > 0).all():
        idx = int(np.argwhere(~(total > 0))[0, 0])
        raise ValueError(
            f"filter {idx} has zero total weight: weights are zero wherever h[{idx}] is "
            "nonzero, so its mean and covariance are undefined"
        )
    mean, cov, total = _moments(w)
    vxx, vyy, vxy = cov[:, 0, 0], cov[:, 1, 1], cov[:, 0, 1]
    denom = np.sqrt(np.clip(vxx, 0.0, None) * np.clip(vyy, 0.0, None))
    safe = np.where(denom > 0, denom, 1.0)
    separability = np.where(denom > 0, np.clip(np.abs(vxy) / safe, 0.0, 1.0), 0.0)
    return SpreadResult(mean=mean, cov=cov, l1=total, separability=separability)


def reference_weights(
    filter_types: Sequence[int] | np.ndarray | None,
    sigma_ref: Any = None,
    *,
    size: int = 7,
) -> np.ndarray:
    """Return the weights ``|g|`` of the weighted spread measures, one per filter.

    Parameters
    ----------
    filter_types : None or sequence of int
        Master key type (1..8) of each filter; None means ``1..8``.
    sigma_ref : None, float or sequence of float, optional
        Reference scale (standard deviation, pixels, >= 0) per filter or for all. Default:
        :data:`scalespace_mk.analysis.types.DEFAULT_SIGMA_REF` (1 for types 1-6 and 8,
        1/sqrt(2) for type 7).
    size : int, optional
        Odd filter size k (default 7).

    Returns
    -------
    numpy.ndarray
        float64 ``[N, size, size]``: ``|masterkey_model(t, s, s)|`` in paper mode for the
        types 1-6 and 8, and the 2-D discrete Gaussian ``T(.; s, s)`` (paper mode, 7 taps
        cropped, not renormalised) for type 7, as docs/method.md#spread prescribes.
    """
    from scalespace_mk.scalespace import models

    n = 8 if filter_types is None else len(np.atleast_1d(np.asarray(filter_types)))
    types = resolve_filter_types(filter_types, n)
    sigmas = resolve_sigma_ref(sigma_ref, types)
    out = np.empty((types.shape[0], size, size), dtype=np.float64)
    # One model per distinct (type, sigma): a handful of calls, whatever N is.
    keys = np.stack([types.astype(np.float64), sigmas], axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    for j, (t, s) in enumerate(uniq):
        if int(t) == 7:
            g = models.gaussian_2d(float(s), float(s), size=size, mode="paper")
        else:
            g = models.masterkey_model(int(t), float(s), float(s), size=size, mode="paper")
        out[inverse == j] = np.abs(np.asarray(g, dtype=np.float64))
    return out


def weighted_spread(
    h: Any,
    *,
    sigma_ref: Any = None,
    filter_types: Any = None,
) -> SpreadResult:
    """Weighted spread measures: M and V of ``|h| * |g|`` (docs/method.md#spread).

    Parameters
    ----------
    h : array_like or torch.Tensor
        Filters ``[N, k, k]`` (or ``[k, k]``).
    sigma_ref : None, float or sequence of float, optional
        Reference scale of the weight (standard deviation in pixels, >= 0), for all filters
        or one per filter. Default: 1 for types 1-6 and 8, 1/sqrt(2) for type 7.
    filter_types : None, int or sequence of int, optional
        Master key type (1..8) of each filter; default ``1..8`` for 8 filters (the published
        order), required otherwise.
    Returns
    -------
    SpreadResult
        Measures of ``w = |h| * |g|`` where ``g`` is :func:`reference_weights`: the paper-mode
        model of the same type at ``sigma_ref`` (``sigma_x = sigma_y = sigma_ref``), and for
        type 7 the Gaussian ``T`` at ``sigma_ref``.

    Notes
    -----
    Coordinates are centred and y up (``x = c - m``, ``y = m - r``). The paper's weighted
    measures are those of the normalised filters: pass
    ``normalize_filters(h, filter_types=types).filters``
    (:func:`scalespace_mk.analysis.normalize.normalize_filters`). The measures do not depend
    on a rescaling of ``h`` (types 1-6), but they do on the constant subtracted for types 7-8.
    """
    arr = check_filters(h, "h")
    types = resolve_filter_types(filter_types, arr.shape[0])
    weights = reference_weights(types, sigma_ref, size=arr.shape[1])
    return spread(arr, weights=weights)
