"""Census of learned filters by model *families*: discrete N-jets and oriented derivatives.

Where :mod:`scalespace_mk.analysis.census` asks which of the 8 master-key types explains a
filter, this module asks how much of it a whole family explains
(:mod:`scalespace_mk.scalespace.jets`):

- ``family="njet"``, order N: ``y ~ sum_{i+j<=N} c_ij delta_x^i delta_y^j T(sigma) + b``,
  one scale (default) or ``sigma_x, sigma_y`` (``anisotropic=True``);
- ``family="oriented"``, order 1: ``y ~ gain delta_phi T(sigma) + b`` and order 2:
  ``y ~ gain delta_phiphi T(sigma) + b`` with ``phi`` at angle ``theta`` (counter-clockwise
  from +x, y up) and one scale.

For given scales the coefficients and the offset are a linear least-squares problem with a
closed form: with the filter and the members centred (``y_c``, ``B_c``),
``c = G^-1 p`` with ``G = B_c B_c^T`` and ``p = B_c y_c``, ``b = mean(y) - c . mean(B)``
and ``R^2 = p^T G^-1 p / ||y_c||^2``. Only the scales are searched, for all filters at
once. The members are separable, ``B_ij = v_j (x) u_i``, so ``G`` and ``p`` come from 1-D
products: ``<B_a, B_b> = <v_a, v_b> <u_a, u_b>`` (minus the mean term) and
``p_a = v_a^T Y u_a``; ``R^2 = ||L^-1 p||^2`` with the Cholesky factor ``L L^T = G``. The
scales are searched by :mod:`scalespace_mk.analysis.jets_search`: cubic tables of the 1-D
factors in sigma (built once, cached), all filters against a grid of scales in one float32
matrix product, then a trust-region Newton ascent with the exact gradient and Hessian of
the interpolated R^2, stopped on convergence; the exact members are built only at the
final scales. Chunks of filters run on a thread pool (one intra-op thread each; the result
does not depend on the number of threads). No Python loop over filters.

Oriented order 1 is the jet restricted to ``(dx, dy)``: ``theta = atan2(c_y, c_x)`` and
``gain = hypot(c_x, c_y)`` in closed form. Oriented order 2 is not linear in theta:
``R^2(sigma, theta) = (w.p)^2 / (w^T G w)`` with ``w = (cos^2, 2 cos sin, sin^2)`` is
searched jointly in (sigma, theta) (grid of 64 angles on ``[0, pi)``, then Newton); at the
final scale theta is found again on the exact members (the 64 angles and parabolic
refinement).

**Fair comparison.** More parameters always fit better, so next to ``R^2`` every filter gets
the adjusted ``R^2_adj = 1 - (1 - R^2) (P - 1) / (P - q)`` with ``P`` taps and ``q`` free
parameters (coefficients or gain and theta, scales, and the offset); the same statistic on
null filters (structureless filters with the same marginal statistics,
:func:`family_null`) is the baseline. A family with ``q >= P - 1`` is refused (it fits any
filter exactly) unless ``allow_saturated=True``. Why adjusted R^2 rather than BIC: it is on
the same scale as R^2 (the fraction of variance explained), needs no noise model, and is
per filter; see ``docs/theory.md``.

Conventions: filters are stored depthwise weights ``h[r, c]`` (rows top to bottom) with
``x = c - m`` and ``y = m - r`` (y up) for ``m = k // 2``; ``sigma`` is a standard deviation
(``s = sigma**2``); scales lie in ``[0, sigma_max]``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from scalespace_mk._checks import (
    check_batch_size,
    check_choice,
    check_epsilon,
    check_filters,
    check_num_threads,
    check_sigma_max,
)
from scalespace_mk._display import Tabular
from scalespace_mk._json import number as _json_number
from scalespace_mk.analysis.jets_search import Search, run_chunks
from scalespace_mk.scalespace import kernels as _kernels
from scalespace_mk.scalespace.jets import (
    JET_ORDERS,
    ORIENTED_ORDERS,
    coefficient_names,
    jet_axis_rows,
    jet_basis_rows,
    jet_indices,
    oriented_weights,
)
from scalespace_mk.scalespace.models import MODES

__all__ = [
    "FAMILIES",
    "FamilyCensusResult",
    "family_census",
    "family_null",
    "family_parameters",
]

#: Families accepted by :func:`family_census` (``"masterkey"`` is the 8-type census).
FAMILIES = ("njet", "oriented")

_GRID_STEP_1 = 0.05  # grid step in sigma, one scale
_GRID_STEP_2 = 0.125  # grid step per axis, two scales
_N_THETA = 64  # grid of theta on [0, pi) for oriented order 2
_JITTER = 1e-13  # relative ridge on the Gram matrices (collinear members at large sigma)


# --------------------------------------------------------------------------------------
# parameters and checks


def _check_family(family: str, order: Any) -> tuple[str, int]:
    check_choice("family", family, FAMILIES)
    accepted = JET_ORDERS if family == "njet" else ORIENTED_ORDERS
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or order not in accepted:
        raise ValueError(f"order must be one of {accepted} for family {family!r}; got {order!r}")
    return family, int(order)


def family_parameters(family: str, order: int, *, anisotropic: bool = False) -> int:
    """Free parameters of a family member fitted to one filter (the offset b included).

    Parameters
    ----------
    family : str
        ``"njet"`` or ``"oriented"``.
    order : int
        N (1-4) for ``"njet"``, 1 or 2 for ``"oriented"``.
    anisotropic : bool
        Two scales (``sigma_x``, ``sigma_y``) instead of one (N-jet only).

    Returns
    -------
    int
        ``(N + 1)(N + 2) / 2`` coefficients + offset + scales for the N-jet; gain, theta,
        offset and one scale (4) for the oriented derivatives.
    """
    family, order = _check_family(family, order)
    if family == "oriented":
        return 4
    return len(jet_indices(order)) + 1 + (2 if anisotropic else 1)


def _members(family: str, order: int) -> tuple[int, ...]:
    """Indices of the jet members the family combines."""
    if family == "njet":
        return tuple(range(len(jet_indices(order))))
    lo = order * (order + 1) // 2
    return tuple(range(lo, lo + order + 1))


# --------------------------------------------------------------------------------------
# the explained variance for given scales


class _Family:
    """Members of one family at trial scales and the R^2 they explain (float64 torch)."""

    def __init__(
        self,
        family: str,
        order: int,
        k: int,
        mode: str,
        eps1d: float,
        sigma_max: float,
        normalized: bool,
        gamma: float,
        device: torch.device,
    ) -> None:
        self.family, self.order, self.k = family, order, k
        self.jet_order = order
        self.members = torch.tensor(_members(family, order), device=device)
        idx = torch.tensor(jet_indices(order), dtype=torch.int64, device=device)[self.members]
        self.ii, self.jj = idx[:, 0], idx[:, 1]
        taps = k + 2 * (2 if order >= 3 else 1) if mode == "full" else k
        self.kw = dict(
            mode=mode,
            n_fft=_kernels.fft_length(sigma_max, taps),
            eps1d=eps1d,
            normalized=normalized,
            gamma=gamma,
        )
        theta = torch.arange(_N_THETA, dtype=torch.float64, device=device) * (math.pi / _N_THETA)
        self.theta_grid = theta
        self.w_grid = oriented_weights(2, theta) if (family, order) == ("oriented", 2) else None

    def basis(self, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
        """Members at scale pairs ``[S]``: ``[S, M, k * k]``."""
        b = jet_basis_rows(sx, sy, self.jet_order, self.k, **self.kw)
        return b.index_select(1, self.members).reshape(sx.shape[0], -1, self.k * self.k)

    def axes(self, sx: torch.Tensor, sy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """1-D factors ``u`` (along x) and ``v`` (rows) at scales ``[...]``: ``[..., N+1, k]``."""
        u, v = jet_axis_rows(sx.reshape(-1), sy.reshape(-1), self.jet_order, self.k, **self.kw)
        return u.reshape(*sx.shape, *u.shape[1:]), v.reshape(*sy.shape, *v.shape[1:])

    def gram(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Cholesky factor of the centred members' Gram matrix from the 1-D factors.

        ``<B_a, B_b> = <v_ja, v_jb> <u_ia, u_ib>`` and the mean of member a is
        ``sum(u_ia) sum(v_ja) / P``; a small ridge keeps nearly collinear members (large
        sigma on small filters) factorable. ``u`` and ``v`` broadcast: ``[..., N+1, k]``.
        """
        ii, jj = self.ii, self.jj
        uu, vv = u @ u.transpose(-1, -2), v @ v.transpose(-1, -2)
        mean = u.sum(-1)[..., ii] * v.sum(-1)[..., jj]  # [..., M] (sums, not means)
        g = vv[..., jj[:, None], jj[None, :]] * uu[..., ii[:, None], ii[None, :]]
        g = g - mean[..., :, None] * mean[..., None, :] / (self.k * self.k)
        tr = torch.diagonal(g, dim1=-2, dim2=-1).sum(-1).clamp(min=1e-300)
        eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
        chol, _ = torch.linalg.cholesky_ex(g + (_JITTER * tr)[..., None, None] * eye)
        return chol

    def project(self, w: torch.Tensor, v: torch.Tensor, spec: str) -> torch.Tensor:
        """``p_a = v_ja^T Z u_ia`` from ``w = Z u`` (``spec``: the einsum of w and v)."""
        p2 = torch.einsum(spec, w, v)  # [..., N+1 (i), N+1 (j)]
        return p2[..., self.ii, self.jj]

    def explained(self, p: torch.Tensor, chol: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """R^2 of unit centred filters from ``p = B_c z`` ``[..., M]``; theta for oriented 2."""
        if self.w_grid is None:
            q = torch.linalg.solve_triangular(chol, p[..., None], upper=False)[..., 0]
            return (q * q).sum(-1), None
        g = chol @ chol.transpose(-1, -2)
        return self._best_theta(p, g)

    def _theta_value(self, p, g, theta):
        w = oriented_weights(2, theta)  # [..., 3]
        num = (w * p).sum(-1)
        den = torch.einsum("...i,...ij,...j->...", w, g, w)
        return num * num / den

    def _best_theta(self, p: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.w_grid  # [T, 3]
        num = torch.einsum("tm,...m->...t", w, p)
        den = torch.einsum("tm,...mk,tk->...t", w, g, w)
        vals = num * num / den
        best, arg = vals.max(-1)
        theta = self.theta_grid[arg]
        h = torch.full_like(theta, math.pi / _N_THETA / 2)
        for _ in range(8):  # parabolic refinement on the circle of period pi
            fm = self._theta_value(p, g, theta - h)
            fp = self._theta_value(p, g, theta + h)
            curv = fp - 2 * best + fm
            step = torch.where(curv < 0, (h * (fm - fp) / (2 * curv)).clamp(-h, h), 0 * h)
            cand = theta + step
            fc = self._theta_value(p, g, cand)
            stack = torch.stack([best, fm, fp, fc], -1)
            best, pick = stack.max(-1)
            theta = torch.stack([theta, theta - h, theta + h, cand], -1).gather(
                -1, pick[..., None]
            )[..., 0]
            h = h / 2
        return best, torch.remainder(theta, math.pi)

    def at(self, z3: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor):
        """R^2 of unit filters ``z3`` [n, k, k] at their own scales ``sx, sy`` [n, S]."""
        u, v = self.axes(sx, sy)  # [n, S, N+1, k]
        p = self.project(torch.einsum("nrc,nsic->nsir", z3, u), v, "nsir,nsjr->nsij")
        return self.explained(p, self.gram(u, v))


# --------------------------------------------------------------------------------------
# result


@dataclass(repr=False)
class FamilyCensusResult(Tabular):
    """Result of :func:`family_census` (numpy arrays, N filters).

    Attributes
    ----------
    family : str
        ``"njet"`` or ``"oriented"``.
    order : int
        N of the N-jet, or the order of the oriented derivative.
    names : tuple of str
        Names of the columns of ``coefficients``: ``c_0, c_x, c_y, c_xx, ...`` for the
        N-jet (:func:`scalespace_mk.scalespace.jets.coefficient_names`), ``theta, gain`` for
        the oriented family.
    sigma_x, sigma_y : numpy.ndarray [N]
        Fitted standard deviations (``sigma_y = sigma_x`` with one scale).
    coefficients : numpy.ndarray [N, len(names)]
        Coefficients of the raw (or scale-normalised, when asked) members, or ``theta``
        (radians, counter-clockwise from +x, y up; order 1 in ``(-pi, pi]`` with gain >= 0,
        order 2 in ``[0, pi)``) and the gain.
    b, r2, rss, tss, r2_adjusted : numpy.ndarray [N]
        Offset, ``R^2 = 1 - RSS / TSS``, residual and total sums of squares, and
        ``R^2_adj = 1 - (1 - R^2) (P - 1) / (P - q)`` (NaN when ``q >= P``).
    n_params : int
        Free parameters q per filter (offset included).
    taps : int
        P = k * k.
    options : dict
        The options of the fit (mode, normalized, gamma, anisotropic, sigma_max).
    """

    family: str
    order: int
    names: tuple[str, ...]
    sigma_x: np.ndarray
    sigma_y: np.ndarray
    coefficients: np.ndarray
    b: np.ndarray
    r2: np.ndarray
    rss: np.ndarray
    tss: np.ndarray
    r2_adjusted: np.ndarray
    n_params: int
    taps: int
    options: dict[str, Any] = field(default_factory=dict)
    reason: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.reason is None:
            self.reason = np.full(len(self.r2), None, dtype=object)

    def __len__(self) -> int:
        return int(self.r2.shape[0])

    @property
    def valid(self) -> np.ndarray:
        """[N] bool: the filter was fitted (its ``reason`` is None)."""
        return np.equal(self.reason, None)

    def invalid_counts(self) -> dict[str, int]:
        """Filters not fitted, per reason: ``{"zero": n, "constant": n, "non_finite": n}``."""
        return {
            r.replace("-", "_"): int(np.sum(self.reason == r))
            for r in ("zero", "constant", "non-finite")
        }

    def _expand(self, keep: np.ndarray, reason: np.ndarray) -> FamilyCensusResult:
        """This result (of the filters ``keep``) spread to all N filters, NaN elsewhere."""
        n = len(keep)

        def spread(a: np.ndarray) -> np.ndarray:
            out = np.full((n, *a.shape[1:]), np.nan)
            out[keep] = a
            return out

        return FamilyCensusResult(
            family=self.family,
            order=self.order,
            names=self.names,
            sigma_x=spread(self.sigma_x),
            sigma_y=spread(self.sigma_y),
            coefficients=spread(self.coefficients),
            b=spread(self.b),
            r2=spread(self.r2),
            rss=spread(self.rss),
            tss=spread(self.tss),
            r2_adjusted=spread(self.r2_adjusted),
            n_params=self.n_params,
            taps=self.taps,
            options=dict(self.options),
            reason=np.array(reason, dtype=object),
        )

    def __getattr__(self, name: str) -> np.ndarray:
        names = self.__dict__.get("names", ())
        if name in names:
            return self.coefficients[:, names.index(name)]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def _headline(self) -> str:
        s = self.summary()
        return (
            f"{self.family} (order {self.order}) census of {len(self)} filters, "
            f"{self.n_params} parameters for {self.taps} taps; median R^2 {s['median_r2']:.3f}"
        )

    def _columns(self) -> dict[str, list[Any]]:
        """The keys of :meth:`records`: index (from 0), sigma_x, sigma_y, the coefficient
        names, b, r2, r2_adjusted."""
        recs = self.records()
        keys = ["index", "sigma_x", "sigma_y", *self.names, "b", "r2", "r2_adjusted"]
        return {k: [r[k] for r in recs] for k in keys}

    def models(self) -> np.ndarray:
        """The fitted kernels ``[N, k, k]`` (members times coefficients plus ``b``; NaN for
        filters not fitted)."""
        from scalespace_mk.scalespace.jets import jet_basis

        k = int(round(math.sqrt(self.taps)))
        ok = self.valid
        if not ok.all():
            out = np.full((len(self), k, k), np.nan)
            if ok.any():
                sub = FamilyCensusResult(
                    self.family,
                    self.order,
                    self.names,
                    self.sigma_x[ok],
                    self.sigma_y[ok],
                    self.coefficients[ok],
                    self.b[ok],
                    self.r2[ok],
                    self.rss[ok],
                    self.tss[ok],
                    self.r2_adjusted[ok],
                    self.n_params,
                    self.taps,
                    self.options,
                )
                out[ok] = sub.models()
            return out
        opts = self.options
        kw = dict(size=k, mode=opts.get("mode", "paper"), epsilon=opts.get("epsilon", 1e-8))
        if self.family == "njet":
            kw.update(normalized=opts.get("normalized", False), gamma=opts.get("gamma", 1.0))
            basis = jet_basis(self.order, self.sigma_x, self.sigma_y, **kw)
            fit = np.einsum("nm,nmrc->nrc", self.coefficients, basis)
        else:
            basis = jet_basis(self.order, self.sigma_x, **kw)
            lo = self.order * (self.order + 1) // 2
            w = oriented_weights(self.order, self.coefficients[:, 0])
            fit = self.coefficients[:, 1, None, None] * np.einsum("nm,nmrc->nrc", w, basis[:, lo:])
        return fit + self.b[:, None, None]

    def records(self) -> list[dict[str, Any]]:
        """One dict per filter: index, scales, named coefficients, b, r2, r2_adjusted, reason
        (a filter not fitted has them None and its ``reason``)."""
        out = []
        for i in range(len(self)):
            if self.reason[i] is not None:
                out.append(
                    {"index": i}
                    | dict.fromkeys(("sigma_x", "sigma_y", *self.names, "b", "r2", "r2_adjusted"))
                    | {"reason": self.reason[i]}
                )
                continue
            rec: dict[str, Any] = {
                "index": i,
                "sigma_x": float(self.sigma_x[i]),
                "sigma_y": float(self.sigma_y[i]),
            }
            rec.update({n: float(self.coefficients[i, j]) for j, n in enumerate(self.names)})
            rec.update(
                b=float(self.b[i]),
                r2=float(self.r2[i]),
                r2_adjusted=_json_number(self.r2_adjusted[i]),
                reason=None,
            )
            out.append(rec)
        return out

    def summary(self) -> dict[str, Any]:
        """Medians over the fitted filters: ``{"family", "order", "n_filters", "fitted",
        "invalid", "n_params", "taps", "median_r2", "median_r2_adjusted",
        "share_r2_above_0.8"}`` (None where no filter was fitted)."""
        ok = self.valid
        r2, adj = self.r2[ok], self.r2_adjusted[ok]
        return {
            "family": self.family,
            "order": self.order,
            "n_filters": len(self),
            "fitted": int(ok.sum()),
            "invalid": self.invalid_counts(),
            "n_params": self.n_params,
            "taps": self.taps,
            "median_r2": float(np.median(r2)) if r2.size else None,
            "median_r2_adjusted": _json_number(np.median(adj)) if adj.size else None,
            "share_r2_above_0.8": float(np.mean(r2 > 0.8)) if r2.size else None,
        }


# --------------------------------------------------------------------------------------
# the census


def family_census(
    filters: Any,
    *,
    family: str = "njet",
    order: int = 2,
    anisotropic: bool = False,
    mode: str = "paper",
    normalized: bool = False,
    gamma: float = 1.0,
    epsilon: float = 1e-8,
    sigma_max: float | None = None,
    allow_saturated: bool = False,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    num_threads: int | None = None,
    invalid: Any = None,
) -> FamilyCensusResult:
    """Fit an N-jet or an oriented derivative (with offset) to every filter.

    Parameters
    ----------
    filters : array_like or torch.Tensor, shape [N, k, k] or [k, k]
        Learned filters in the stored-weight layout (rows top to bottom; ``x = c - m``,
        ``y = m - r``, y up), odd k >= 3; NaN, zero and constant filters are rejected.
    family : str
        ``"njet"`` or ``"oriented"`` (see the module docstring).
    order : int
        N = 1..4 for ``"njet"``; 1 or 2 for ``"oriented"``.
    anisotropic : bool
        N-jet with two scales ``sigma_x``, ``sigma_y`` (default one scale).
    mode : str
        ``"paper"`` or ``"full"`` construction of the members.
    normalized, gamma
        Report coefficients of scale-normalised members ``sigma**(gamma (i + j))``
        (:func:`scalespace_mk.scalespace.jets.jet_basis`); R^2 does not change.
    epsilon : float
        Truncation error of the 1-D Gaussians.
    sigma_max : float, optional
        Largest scale (standard deviation) searched; default ``k / 2``.
    allow_saturated : bool
        Fit even when the family has at least ``k * k - 1`` free parameters (it then
        explains any filter; the adjusted R^2 is NaN where undefined).
    device : str or torch.device, optional
        ``"cpu"`` (default) or ``"cuda"``; arithmetic is float64 (the grid that picks the
        start of the search: float32).
    batch_size : int, optional
        Filters per batch (default 2048 on CPU, 65536 on CUDA); on the CPU the batches run
        on ``torch.get_num_threads()`` workers at once (forked processes on Linux for at
        least 32,768 filters, threads otherwise: :mod:`scalespace_mk.analysis.workers`). The
        result does not depend on the number or kind of workers.
    progress : bool, optional
        Progress on stderr (default: for >= 20,000 filters on a terminal).
    num_threads : int, optional
        torch CPU threads during the call (restored afterwards): the batches that run at
        once, each on one intra-op thread.
    invalid : array_like of object [N], optional
        Why each filter cannot be fitted (``"zero"``, ``"constant"``, ``"non-finite"``; None
        for a filter that can), as
        :func:`scalespace_mk.analysis.census.screen_filters` gives it: those filters are
        recorded, not fitted (NaN in the arrays, their ``reason`` kept), like the 8-type
        census with ``on_invalid="record"``. None (default): such filters raise.

    Returns
    -------
    FamilyCensusResult
        Per filter the scales, named coefficients (or theta and gain), b, R^2 and adjusted
        R^2.

    Raises
    ------
    ValueError
        Bad filters (the message names the index), an unknown family or order, or a
        saturated family without ``allow_saturated=True``.

    Examples
    --------
    >>> from scalespace_mk.scalespace.jets import jet_basis
    >>> B = jet_basis(2, 1.2)
    >>> y = 0.5 * B[1] - 0.3 * B[4] + 0.2 * B[5] + 0.01
    >>> res = family_census(y, family="njet", order=2)
    >>> round(float(res.sigma_x[0]), 4), round(float(res.c_xy[0]), 4), round(float(res.r2[0]), 8)
    (1.2, -0.3, 1.0)
    """
    family, order = _check_family(family, order)
    if family == "oriented" and anisotropic:
        raise ValueError("anisotropic applies to family 'njet' only (oriented: one scale)")
    check_choice("mode", mode, MODES)
    epsilon = check_epsilon(epsilon)
    reason = None
    if invalid is not None:
        y_all = check_filters(filters, "filters", values=False)
        reason = np.asarray(invalid, dtype=object).reshape(-1)
        if reason.shape != (y_all.shape[0],):
            raise ValueError(
                f"invalid must hold one reason (or None) per filter ({y_all.shape[0]}); got "
                f"shape {reason.shape}"
            )
        keep = np.equal(reason, None)
        if not keep.any():
            raise ValueError("no filter can be fitted: every one is zero, constant or non-finite")
        if not keep.all():
            sub = family_census(
                y_all[keep],
                family=family,
                order=order,
                anisotropic=anisotropic,
                mode=mode,
                normalized=normalized,
                gamma=gamma,
                epsilon=epsilon,
                sigma_max=sigma_max,
                allow_saturated=allow_saturated,
                device=device,
                batch_size=batch_size,
                progress=progress,
                num_threads=num_threads,
            )
            return sub._expand(keep, reason)
        filters = y_all
    y = np.ascontiguousarray(check_filters(filters, "filters"))
    n_filters, k = y.shape[0], y.shape[1]
    if k < 3:
        raise ValueError(f"filters must be at least 3x3 to fit a model; got k = {k}")
    taps = k * k
    q = family_parameters(family, order, anisotropic=anisotropic)
    if q >= taps - 1 and not allow_saturated:
        raise ValueError(
            f"family {family!r} of order {order} has {q} free parameters for {taps} taps "
            f"({k}x{k} filters): at least taps - 1 = {taps - 1}, so it fits any filter "
            "(saturated); use smaller orders or larger filters, or pass allow_saturated=True "
            "(--allow-saturated)"
        )
    flat = y.reshape(n_filters, -1)
    yc = flat - flat.mean(axis=1, keepdims=True)
    tss = (yc * yc).sum(axis=1)
    const = tss <= 1e-24 * (flat * flat).sum(axis=1)
    if const.any():
        idx = int(np.flatnonzero(const)[0])
        raise ValueError(
            f"filters[{idx}] is constant: it has no variance to explain, so R^2 is undefined; "
            "drop constant filters first"
        )
    # no SIGMA_LIMIT bound here (census() has one): kept as it was
    sigma_max = check_sigma_max(sigma_max, k, bounded=False)
    gamma = float(gamma)
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0; got {gamma!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available; use 'cpu'")
    if batch_size is None:
        batch_size = 65536 if dev.type == "cuda" else 2048
    check_batch_size(batch_size)
    check_num_threads(num_threads)

    two = family == "njet" and anisotropic
    fam = _Family(
        family,
        order,
        k,
        mode,
        _kernels.truncation_error_1d(epsilon, 1),
        sigma_max,
        bool(normalized),
        gamma,
        dev,
    )
    search = Search(
        family,
        order,
        [jet_indices(order)[m] for m in _members(family, order)],
        k,
        two,
        mode,
        fam.kw["eps1d"],
        sigma_max,
        fam.kw["n_fft"],
        _GRID_STEP_2 if two else _GRID_STEP_1,
        dev,
    )
    names = ("theta", "gain") if family == "oriented" else coefficient_names(order)
    out_s = np.zeros((n_filters, 2))
    out_c = np.zeros((n_filters, len(names)))
    out_b = np.zeros(n_filters)
    out_rss = np.zeros(n_filters)

    def work(start: int, stop: int) -> tuple:  # returns arrays: it may run in a fork
        yt = torch.as_tensor(flat[start:stop], device=dev)
        zc = yt - yt.mean(1, keepdim=True)
        z = (zc / zc.norm(dim=1, keepdim=True)).reshape(-1, k, k)
        sx, sy = search.search(z)
        res = _exact(fam, yt, sx, sy)
        cols = {key: res[key].cpu().numpy() for key in ("coef", "b", "rss")}
        return start, stop, sx.cpu().numpy(), sy.cpu().numpy(), cols

    show = progress if progress is not None else n_filters >= 20_000 and sys.stderr.isatty()
    from scalespace_mk._progress import progress as _progress

    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        with torch.no_grad():
            search.grid_models()  # once, before the threads share it
        chunks = run_chunks(n_filters, int(batch_size), work, dev)
        n_chunks = -(-n_filters // int(batch_size))
        for start, stop, sx, sy, cols in _progress(
            chunks, desc=f"{family} census", total=n_chunks, unit="batch", enabled=show
        ):
            out_s[start:stop, 0], out_s[start:stop, 1] = sx, sy
            for key, arr in (("coef", out_c), ("b", out_b), ("rss", out_rss)):
                arr[start:stop] = cols[key]
    finally:
        if num_threads is not None:
            torch.set_num_threads(threads_before)
    r2 = np.clip(1.0 - out_rss / tss, 0.0, 1.0)
    dof = taps - q
    r2_adj = 1.0 - (1.0 - r2) * (taps - 1) / dof if dof > 0 else np.full(n_filters, np.nan)
    return FamilyCensusResult(
        family=family,
        order=order,
        names=names,
        sigma_x=out_s[:, 0],
        sigma_y=out_s[:, 1],
        coefficients=out_c,
        b=out_b,
        r2=r2,
        rss=out_rss,
        tss=tss,
        r2_adjusted=r2_adj,
        n_params=q,
        taps=taps,
        options={
            "mode": mode,
            "normalized": bool(normalized),
            "gamma": gamma,
            "anisotropic": bool(anisotropic),
            "sigma_max": sigma_max,
            "epsilon": epsilon,
        },
    )


def _exact(fam: _Family, y: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor) -> dict:
    """Closed-form coefficients, offset and RSS of raw filters ``y`` [n, P] at their scales."""
    u, v = fam.axes(sx, sy)  # [n, N+1, k]: the exact 1-D factors, once
    basis = (v[:, fam.jj, :, None] * u[:, fam.ii, None, :]).reshape(y.shape[0], -1, y.shape[1])
    chol = fam.gram(u, v)
    ym = y.mean(1, keepdim=True)
    p = torch.einsum("nmp,np->nm", basis, y - ym)
    if fam.w_grid is not None:  # oriented order 2: theta from the unit filters, then (gain, b)
        norm = (y - ym).norm(dim=1, keepdim=True)
        _, theta = fam.explained(p / norm, chol)
        w = oriented_weights(2, theta)
        g = torch.einsum("nm,nmp->np", w, basis)
        gc = g - g.mean(1, keepdim=True)
        gain = (gc * (y - ym)).sum(1) / (gc * gc).sum(1).clamp(min=1e-300)
        coef_m = gain[:, None] * w
        coef = torch.stack([theta, gain], 1)
    else:
        coef_m = torch.cholesky_solve(p[:, :, None], chol)[:, :, 0]
        coef = coef_m
        if fam.family == "oriented":  # order 1: (c_x, c_y) -> theta, gain
            coef = torch.stack(
                [torch.atan2(coef_m[:, 1], coef_m[:, 0]), torch.hypot(coef_m[:, 0], coef_m[:, 1])],
                1,
            )
    b = ym[:, 0] - (coef_m * basis.mean(-1)).sum(1)
    fit = torch.einsum("nm,nmp->np", coef_m, basis) + b[:, None]
    rss = ((fit - y) ** 2).sum(1)
    return {"coef": coef, "b": b, "rss": rss}


# --------------------------------------------------------------------------------------
# null baseline


def family_null(
    filters: Any, *, kind: str = "iid", seed: int = 0, **options: Any
) -> FamilyCensusResult:
    """The same family census on null filters made from ``filters``.

    Parameters
    ----------
    filters : array_like, shape [N, k, k]
        The real filters.
    kind : str
        A null kind of :func:`scalespace_mk.analysis.null.null_filters`: ``"iid"``,
        ``"position"`` (alias ``"phase"``), ``"shape"`` or ``"covariance"``.
    seed : int
        Seed of the null filters.
    **options
        Options of :func:`family_census` (family, order, ...).

    Returns
    -------
    FamilyCensusResult
        The census of the null filters: its ``summary()["median_r2"]`` is the baseline
        ``"null_median_r2"``.

    Raises
    ------
    ValueError
        If the null-model module is not available in this installation.
    """
    try:
        from scalespace_mk.analysis.null import canonical_kind, null_filters
    except ImportError:
        raise ValueError(
            "null filters need scalespace_mk.analysis.null (null_filters), which this "
            "installation lacks; run without --null / null=..., or update scalespace_mk"
        ) from None
    kind = canonical_kind(kind)
    y = check_filters(filters, "filters")
    return family_census(null_filters(y, kind, seed), **options)
