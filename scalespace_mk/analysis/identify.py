"""Which fitted scales the data can determine: the rank of the model's scale derivative.

The census fits ``y ~ a g(theta) + b``; R^2 depends on the scales ``theta`` only through the
*normalised* model ``n(theta) = g_c / ||g_c||`` (``g_c = g - mean g``). A scale that does
not move ``n`` cannot be read off any filter: at k = 3 in paper mode, ``delta_x T`` is
``(t0 - t1)/2 [1, 0, -1]`` for every ``sigma_x``, so the scale along the derivative axis of
types 1-6 has no effect, and the census returns whatever the search met first (0.0).

This module decides it from the model itself, never from a table of special cases. For a
fitted filter of type ``g`` (size k, mode, discretisation) at its fitted parameters
``theta`` -- ``(s_x, s_y)`` for the separable types, ``s`` for the Laplacian, ``(s, alpha)``
for type 7, with the variance ``s = sigma**2`` (the scale-space parameter: the derivative
with respect to ``sigma`` vanishes at ``sigma = 0`` for every model, the one with respect to
``s`` does not) -- it forms the Jacobian

    J = d n / d theta      (P x d; central differences of step :data:`STEP` in s and alpha,
                            one-sided at s = 0),

and its singular value decomposition ``J = U S V^T``. Directions ``v_j`` with
``S_j <= TOL`` (:data:`TOL` = 1e-3: a unit change of ``s`` or ``alpha`` along them moves the
unit-norm model by less than 1e-3 in l2, i.e. changes R^2 by less than 1e-6) are flat: the
model does not change along them. A parameter ``i`` is **undetermined** when the flat
directions hold more than :data:`SHARE` = 1e-6 of its unit vector (``||V_flat[i]|| > 1e-6``;
a parameter untouched by the flat directions, e.g. ``sigma_y`` of type 5 at 3x3, has a share
at the level of rounding, ~1e-12, and a curved trade-off can bend away from the tangent, so
any real share means the parameter moves along it):
then moving it and compensating with the others leaves the fit unchanged, even if it moves
less than the others along the curve. Its fitted value is
reported as None with a reason; the others keep theirs. The number of **determined scale
parameters** is the rank ``r`` of ``J`` (singular values above :data:`TOL`), and the
effective parameter count of the fit is ``q = 2 + r`` (gain, offset, determined scales) plus
the charge for choosing the best of T types (:func:`effective_parameters`).

Conventions: filters are stored depthwise weights (rows top to bottom; ``x = c - m``,
``y = m - r``, y up); ``sigma`` is a standard deviation, ``s = sigma**2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from scalespace_mk.analysis.types import parse_model_types
from scalespace_mk.scalespace.models import model_kernel

__all__ = [
    "CHOICE_CHARGE",
    "SHARE",
    "STEP",
    "TOL",
    "Identifiability",
    "adjusted_r2",
    "annotate_records",
    "effective_parameters",
    "identify",
    "identify_census",
    "scale_jacobian",
]

#: Finite-difference step in ``s = sigma**2`` and in ``alpha``.
STEP = 1e-4
#: Singular values of ``d n / d theta`` at or below this are flat directions.
TOL = 1e-3
#: A parameter whose unit vector has more than this share in the flat directions is
#: undetermined (any real participation in a flat curve; rounding gives ~1e-12).
SHARE = 1e-6
#: Parameters charged for picking the best of several types (the choice is one discrete
#: parameter; see :func:`effective_parameters`).
CHOICE_CHARGE = 1


def _param_names(kind: str) -> tuple[str, ...]:
    return {"sep": ("sigma_x", "sigma_y"), "iso": ("sigma_x",), "mk7": ("sigma_x", "alpha")}[kind]


def _unit(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = g.reshape(g.shape[0], -1)
    c = flat - flat.mean(1, keepdims=True)
    norm = np.linalg.norm(c, axis=1)
    return c / np.where(norm > 0, norm, 1.0)[:, None], norm


def scale_jacobian(
    model: int | str,
    sigma_x: Any,
    sigma_y: Any = None,
    alpha: Any = None,
    *,
    size: int,
    mode: str = "paper",
    method: str = "discgauss",
    epsilon: float = 1e-8,
    step: float = STEP,
) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """Jacobian of the normalised model with respect to its parameters (``s``, ``alpha``).

    Parameters
    ----------
    model : int or str
        Census type: 1..8 or a model name (:func:`scalespace_mk.analysis.types.parse_model_types`).
    sigma_x, sigma_y, alpha : array_like [N]
        Fitted standard deviations (``s = sigma**2``; ``sigma_y`` only for two-scale types)
        and type 7's Laplacian weight.
    size : int
        Odd kernel size k.
    mode, method, epsilon
        Construction of the model (:func:`scalespace_mk.scalespace.models.model_kernel`).
    step : float
        Finite-difference step in ``s`` and ``alpha``.

    Returns
    -------
    jacobian : numpy.ndarray [N, k*k, d]
        ``d n / d theta`` of the unit-norm, zero-mean model ``n`` (row-major taps), with
        ``theta = (s_x, s_y)``, ``(s,)`` or ``(s, alpha)``.
    names : tuple of str
        The record fields of the d parameters (``"sigma_x"``, ``"sigma_y"``, ``"alpha"``).
    norm : numpy.ndarray [N]
        ``||g_c||`` at the fit (0: the model is constant there).
    """
    tp = parse_model_types((model,))[0]
    names = _param_names(tp.kind)
    sx = np.atleast_1d(np.asarray(sigma_x, dtype=np.float64))
    n = sx.size
    theta = [sx**2]
    if tp.kind == "sep":
        sy = sx if sigma_y is None else np.atleast_1d(np.asarray(sigma_y, dtype=np.float64))
        theta.append(sy**2)
    elif tp.kind == "mk7":
        theta.append(np.atleast_1d(np.asarray(alpha, dtype=np.float64)))
    kw = dict(size=size, mode=mode, method=method, epsilon=epsilon)

    def unit(th: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        s = [np.sqrt(np.maximum(t, 0.0)) for t in th]
        if tp.kind == "sep":
            g = model_kernel(tp.name, s[0], s[1], **kw)
        elif tp.kind == "mk7":
            g = model_kernel(tp.name, s[0], alpha=th[1], **kw)
        else:
            g = model_kernel(tp.name, s[0], **kw)
        return _unit(np.asarray(g, dtype=np.float64).reshape(n, size, size))

    _, norm = unit(theta)
    jac = np.zeros((n, size * size, len(theta)))
    for j in range(len(theta)):
        lo_t, hi_t = list(theta), list(theta)
        lo = np.maximum(theta[j] - step, 0.0) if names[j] != "alpha" else theta[j] - step
        hi = theta[j] + step
        lo_t[j], hi_t[j] = lo, hi
        jac[:, :, j] = (unit(hi_t)[0] - unit(lo_t)[0]) / (hi - lo)[:, None]
    return jac, names, norm


@dataclass
class Identifiability:
    """Which fitted parameters of each filter are determined (:func:`identify`).

    Attributes
    ----------
    rank : numpy.ndarray of int [N]
        Determined scale parameters (rank of ``d n / d theta``; -1 for filters not fitted).
    n_scale_params : numpy.ndarray of int [N]
        Scale parameters of the fitted type (d; 0 for filters not fitted).
    singular_values : list of numpy.ndarray
        Per filter the singular values of ``d n / d theta``, largest first.
    undetermined : list of dict
        Per filter ``{field: reason}`` for the undetermined parameters (``"sigma_x"``,
        ``"sigma_y"``, ``"alpha"``); empty when all are determined.
    """

    rank: np.ndarray
    n_scale_params: np.ndarray
    singular_values: list[np.ndarray]
    undetermined: list[dict[str, str]]

    def mask(self, name: str) -> np.ndarray:
        """[N] bool: the parameter ``name`` is undetermined for this filter."""
        return np.array([name in u for u in self.undetermined], dtype=bool)

    def counts(self) -> dict[str, int]:
        """Filters per undetermined parameter: ``{"sigma_x": n, "sigma_y": n, "alpha": n}``."""
        return {p: int(self.mask(p).sum()) for p in ("sigma_x", "sigma_y", "alpha")}


def identify(
    types: Any,
    sigma_x: Any,
    sigma_y: Any,
    alpha: Any,
    *,
    size: int,
    mode: str = "paper",
    method: str = "discgauss",
    epsilon: float = 1e-8,
    tol: float = TOL,
    share: float = SHARE,
) -> Identifiability:
    """Decide for each fitted filter which of its scales (and alpha) the data determine.

    Parameters
    ----------
    types : array_like [N]
        Fitted type per filter (1..8 or model names; None for filters not fitted).
    sigma_x, sigma_y, alpha : array_like of float [N]
        Fitted standard deviations (``s = sigma**2``) and type 7's Laplacian weight (NaN
        elsewhere).
    size : int
        Odd kernel size k of the filters.
    mode, method, epsilon
        The census's model construction.
    tol : float
        Singular values at or below ``tol`` are flat directions (see the module docstring).
    share : float
        Share of a parameter's unit vector in the flat directions above which it is
        undetermined.

    Returns
    -------
    Identifiability

    Examples
    --------
    >>> ident = identify([5, 5], [1.2, 1.2], [0.8, 0.8], [np.nan, np.nan], size=3)
    >>> ident.undetermined[0]["sigma_x"][:36], "sigma_y" in ident.undetermined[0]
    ('has no effect on the normalised mode', False)
    """
    if not (isinstance(tol, float | int) and tol > 0):
        raise ValueError(f"tol must be a number > 0; got {tol!r}")
    if not (isinstance(share, float | int) and 0 < share < 1):
        raise ValueError(f"share must be a number in (0, 1); got {share!r}")
    labels = np.asarray(types, dtype=object).reshape(-1)
    sx = np.asarray(sigma_x, dtype=np.float64).reshape(-1)
    sy = np.asarray(sigma_y, dtype=np.float64).reshape(-1)
    al = np.asarray(alpha, dtype=np.float64).reshape(-1)
    n = labels.size
    if not (sx.size == sy.size == al.size == n):
        raise ValueError(
            "types, sigma_x, sigma_y and alpha must have one value per filter; got "
            f"{n}, {sx.size}, {sy.size}, {al.size}"
        )
    rank = np.full(n, -1, dtype=np.int64)
    dof = np.zeros(n, dtype=np.int64)
    svals: list[np.ndarray] = [np.zeros(0)] * n
    undet: list[dict[str, str]] = [{} for _ in range(n)]
    for label in {lab for lab in labels.tolist() if lab is not None}:
        rows = np.flatnonzero(labels == label)
        rows = rows[np.isfinite(sx[rows])]
        if not rows.size:
            continue
        jac, names, norm = scale_jacobian(
            label,
            sx[rows],
            sy[rows],
            al[rows],
            size=size,
            mode=mode,
            method=method,
            epsilon=epsilon,
        )
        u, s, vt = np.linalg.svd(jac, full_matrices=False)
        for i, row in enumerate(rows.tolist()):
            dof[row] = len(names)
            svals[row] = s[i]
            if norm[i] <= 1e-12:
                rank[row] = 0
                undet[row] = dict.fromkeys(names, "the fitted model is constant: no scale is seen")
                continue
            flat = s[i] <= tol
            rank[row] = int((~flat).sum())
            if not flat.any():
                continue
            v_flat = vt[i][flat]  # [f, d] flat directions
            weight = np.sqrt((v_flat**2).sum(0))  # share of each parameter in them
            bad = [j for j in range(len(names)) if weight[j] > share]
            for j in bad:
                others = [names[o] for o in bad if o != j]
                if others:
                    why = (
                        f"trades off with {', '.join(others)}: the normalised model is "
                        f"unchanged along a curve through the fit (k={size}, {mode} mode, "
                        f"singular value {s[i][flat].max():.1e} <= {tol:g})"
                    )
                else:
                    why = (
                        f"has no effect on the normalised model at this fit (k={size}, "
                        f"{mode} mode: |dn/d{'s' if names[j] != 'alpha' else 'alpha'}| = "
                        f"{np.linalg.norm(jac[i][:, j]):.1e} <= {tol:g})"
                    )
                undet[row][names[j]] = why
            if "sigma_x" in undet[row] and names == ("sigma_x",):
                undet[row]["sigma_y"] = undet[row]["sigma_x"]
            if names[0] == "sigma_x" and len(names) == 2 and names[1] == "alpha":
                if "sigma_x" in undet[row]:
                    undet[row]["sigma_y"] = undet[row]["sigma_x"]
    return Identifiability(rank, dof, svals, undet)


def identify_census(
    result: Any, *, size: int | None = None, mode: str = "paper", **kw: Any
) -> Identifiability:
    """:func:`identify` for a :class:`~scalespace_mk.analysis.census.CensusResult`.

    Parameters
    ----------
    result : CensusResult
        The census (its best type and scales per filter).
    size : int
        Kernel size k of the census's filters (required).
    mode : str
        The census's ``mode`` (default ``"paper"``).
    **kw
        ``method``, ``epsilon``, ``tol``, ``share`` of :func:`identify`.

    Returns
    -------
    Identifiability
    """
    if size is None:
        raise ValueError("size (the kernel size k of the census's filters) is required")
    return identify(
        result.type, result.sigma_x, result.sigma_y, result.alpha, size=size, mode=mode, **kw
    )


def effective_parameters(rank: Any, n_types: int, *, charge: int = CHOICE_CHARGE) -> np.ndarray:
    """Effective free parameters of each census fit: ``2 + rank + charge`` (or NaN).

    Gain ``a`` and offset ``b`` are always free; each determined scale parameter (the rank
    of ``d n / d theta``) adds one; undetermined ones add nothing (they do not change the
    fit). Picking the best of ``n_types > 1`` types is charged as ``charge`` more
    parameters (default :data:`CHOICE_CHARGE` = 1: the choice is one discrete parameter; a
    census of one type is not charged).

    Parameters
    ----------
    rank : array_like of int [N]
        :attr:`Identifiability.rank` (-1: not fitted, giving NaN).
    n_types : int
        Types the census chose from.
    charge : int
        Parameters charged for the choice.

    Returns
    -------
    numpy.ndarray of float [N]
    """
    r = np.asarray(rank, dtype=np.float64)
    q = 2.0 + r + (charge if n_types > 1 else 0)
    return np.where(r >= 0, q, np.nan)


def adjusted_r2(r2: Any, n_params: Any, taps: int) -> np.ndarray:
    """``R^2_adj = 1 - (1 - R^2) (P - 1) / (P - q)`` (NaN where ``q >= P`` or R^2 is NaN).

    Parameters
    ----------
    r2 : array_like [N]
        R^2 of the fits.
    n_params : array_like [N]
        Effective free parameters q (offset included), e.g. :func:`effective_parameters`.
    taps : int
        P = k * k.

    Returns
    -------
    numpy.ndarray of float [N]
    """
    r2 = np.asarray(r2, dtype=np.float64)
    q = np.asarray(n_params, dtype=np.float64)
    dof = taps - q
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 1.0 - (1.0 - r2) * (taps - 1) / dof
    return np.where(dof > 0, out, np.nan)


def annotate_records(
    records: list[dict[str, Any]],
    ident: Identifiability,
    *,
    n_types: int,
    taps: int,
) -> list[dict[str, Any]]:
    """Write identifiability into census records (in place, also returned).

    Undetermined ``sigma_x`` / ``sigma_y`` / ``alpha`` become None and their reasons go into
    ``"undetermined"`` (``{field: reason}``, empty when all are determined); ``"n_params"``
    (the effective count, :func:`effective_parameters`) and ``"r2_adjusted"`` are added.
    Filters not fitted get ``"undetermined": {}``, ``"n_params"`` and ``"r2_adjusted"``
    None.

    Parameters
    ----------
    records : list of dict
        :meth:`CensusResult.records` (same order as ``ident``).
    ident : Identifiability
    n_types : int
        Types the census chose from (the choice is charged, :func:`effective_parameters`).
    taps : int
        P = k * k.

    Returns
    -------
    list of dict
    """
    if len(records) != len(ident.rank):
        raise ValueError(
            f"records ({len(records)}) and ident ({len(ident.rank)}) must describe the same filters"
        )
    q = effective_parameters(ident.rank, n_types)
    for i, rec in enumerate(records):
        if rec.get("r2") is None:
            rec.update(undetermined={}, n_params=None, r2_adjusted=None)
            continue
        und = ident.undetermined[i]
        for name in und:
            rec[name] = None
        adj = float(adjusted_r2(rec["r2"], q[i], taps))
        rec.update(
            undetermined=dict(und),
            n_params=int(q[i]),
            r2_adjusted=adj if math.isfinite(adj) else None,
        )
    return records
