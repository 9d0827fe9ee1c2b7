"""Census of arbitrary learned filters: the best linear shift ``a g + b`` of every model.

For each filter ``y`` (any odd size k) and each model type ``g(theta)`` (the 8 master key
types of docs/method.md#models, optionally other derivative models), the census finds the scales
``theta`` and the gain and offset ``(a, b)`` that minimise ``||a g(theta) + b - y||_2``,
the linear shift ``a x + b`` of the master-key literature with the scales fitted too.

For fixed ``g`` the optimum is closed-form (:func:`linear_shift`): with ``y_c = y - mean y``
and ``g_c = g - mean g``,

    a = <y_c, g_c> / <g_c, g_c>,   b = mean(y) - a mean(g),
    RSS = ||y_c||^2 - <y_c, g_c>^2 / ||g_c||^2,

so the fraction of the filter's variance explained, ``R^2 = 1 - RSS / TSS`` with
``TSS = ||y_c||^2``, is the squared correlation of ``y`` and ``g``. The search maximises
that over the scales, for all filters at once (torch, CPU or CUDA, float64):

1. **Tables.** The models are tabulated once per call (and cached) at knots
   ``sigma = 0, d, 2d, ...`` (``d`` ~ 0.001) with
   :func:`scalespace_mk.scalespace.models.model_kernel`.
   Separable models ``g = v(sigma_y) (x) u(sigma_x)`` are stored as their two 1-D
   factors, so any pair of scales costs two 1-D interpolations. Between knots the factors
   are interpolated by 4-point cubic Lagrange interpolation (error ~1e-12 where the kernel
   is smooth in sigma; the truncation of the discrete Gaussian at ``epsilon`` makes the
   kernel itself jump by ~1e-9 at a few small scales).
2. **Coarse grid.** Every type is evaluated on a grid of scales (step ~0.1 for two scales,
   ~0.02 for one). For the separable types the correlation of a centred unit filter with
   every grid model ``v (x) u`` is ``v^T Z u / ||g_c||``: two float32 products of the 1-D
   factors (``Z^T V`` for all row factors at once, then one product per type), about a
   seventh of the multiply-adds of the grid models as one matrix (the grid only picks the
   start of the refinement, at the vertex of the quadratic through the 3x3 grid
   neighbourhood of the maximum).
3. **Refinement.** A batched trust-region Newton iteration on the squared correlation with
   exact first and second derivatives of the cubic tables (quadratic convergence: most
   filters need two evaluations; a full Newton step under ``3e-4`` is taken without
   evaluating it). One-scale types use the same iteration (their derivatives carried as
   second-order jets through the closed form in alpha). The few fits where Newton does
   not converge in 5 steps (saddles, sigma = 0 of an even objective, flat ridges) continue
   by a batched stencil search (finite-difference Newton on a 3x3 or 3-point stencil
   whose width shrinks from half a grid step to 1e-4) from both the grid point and the
   Newton's best point, the better end kept. There is no Python loop over filters; on the
   CPU, chunks of filters run on ``num_threads`` workers with one intra-op thread each
   (forked processes for large inputs on Linux, threads otherwise).
4. **Exact values.** At the final scales every model is recomputed exactly with
   ``model_kernel`` and ``a``, ``b``, ``R^2`` come from :func:`linear_shift`.

Model 7 (``K - alpha nabla5 T(sigma)``, one sigma) is linear in ``alpha`` and the gain, so
for each sigma the pair (gain, alpha) is solved in closed form as a two-regressor least
squares problem, with ``alpha`` held in ``alpha_range`` (default :data:`ALPHA_RANGE`); only
sigma is searched.

Conventions: filters are stored depthwise weights ``h[r, c]`` (rows top to bottom), with
``x = c - m`` and ``y = m - r`` (**y up**) for the centre index ``m = k // 2``; models are
built in the same index space and used with no flip. ``sigma`` is a standard deviation
(the theory's scale parameter is ``s = sigma**2``); scales lie in ``[0, sigma_max]``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from scalespace_mk._checks import (
    check_batch_size,
    check_choice,
    check_device,
    check_epsilon,
    check_filters,
    check_num_threads,
    check_sigma_max,
    check_size,
)
from scalespace_mk._threads import intra_op_threads
from scalespace_mk.analysis.census_result import CensusResult, scale_statistics
from scalespace_mk.analysis.linear_shift import LinearShift, _check_tss, _shift_t, linear_shift
from scalespace_mk.analysis.null import null_filters
from scalespace_mk.analysis.scale_objectives import ALPHA_RANGE, _objectives
from scalespace_mk.analysis.scale_search import _check_census_memory, _fit_all
from scalespace_mk.analysis.screening import (
    INVALID_REASONS,
    ON_INVALID,
    _invalid_message,
    _screen_input,
    screen_filters,
)
from scalespace_mk.analysis.types import DEFAULT_TYPES, parse_model_types
from scalespace_mk.scalespace.kernels import METHODS
from scalespace_mk.scalespace.models import MODES, model_kernel

__all__ = [
    "ALPHA_RANGE",
    "DEFAULT_TYPES",
    "INVALID_REASONS",
    "ON_INVALID",
    "CensusResult",
    "LinearShift",
    "census",
    "linear_shift",
    "null_r2",
    "reference_fit",
    "scale_statistics",
    "screen_filters",
]


# --------------------------------------------------------------------------------------
# the census


def _resolve_device(device: Any) -> torch.device:
    return check_device(device, torch.device("cpu"))


def _check_alpha_range(alpha_range: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in alpha_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"alpha_range must be a pair (low, high) of numbers; got {alpha_range!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"alpha_range must be finite with low <= high; got {alpha_range!r}")
    return lo, hi


def census(
    filters: Any,
    *,
    types: Sequence[int | str] | int | str = DEFAULT_TYPES,
    size: int | None = None,
    method: str = "discgauss",
    mode: str = "paper",
    epsilon: float = 1e-8,
    sigma_max: float | None = None,
    alpha_range: tuple[float, float] = ALPHA_RANGE,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    num_threads: int | None = None,
    on_invalid: str = "record",
    family: str = "masterkey",
    order: int = 2,
    allow_saturated: bool = False,
) -> CensusResult:
    """Best linear shift ``a g(theta) + b`` of every model type for every filter.

    Parameters
    ----------
    filters : array_like or torch.Tensor, shape [N, k, k] or [k, k]
        Learned filters in the stored-weight layout (rows top to bottom; ``x = c - m``,
        ``y = m - r``, y up), any odd k >= 3. NaN/infinite, all-zero and constant filters
        are not fitted (see ``on_invalid``).
    types : sequence of int or str
        Model types to fit: master key types 1..8 (docs/method.md#models; also
        ``"mk1"``..``"mk8"``) and
        any model name of :func:`scalespace_mk.scalespace.models.parse_model`, e.g. ``"dxx"``,
        ``"dxy"``, ``"dyy"`` (two scales) or ``"lap"`` (fitted here with one scale,
        ``sigma_y = sigma_x``). Default: 1..8.
    size : int, optional
        Model size; must equal k when given (the models are built at the filter's size).
    method : str
        1-D Gaussian discretisation (:data:`scalespace_mk.scalespace.kernels.METHODS`).
    mode : str
        ``"paper"`` or ``"full"`` (:func:`scalespace_mk.scalespace.models.model_kernel`).
    epsilon : float
        Truncation error of the 1-D kernels, in (0, 1).
    sigma_max : float, optional
        Largest scale searched (standard deviation); default ``k / 2`` (3.5 for 7x7), beyond
        which a cropped Gaussian is nearly flat. A fitted scale equal to ``sigma_max`` means
        the fit wants a flatter model.
    alpha_range : (float, float)
        Range of the Laplacian weight ``alpha`` of type 7 (default :data:`ALPHA_RANGE`,
        ``alpha >= 0`` keeps the centre-surround form ``K - alpha nabla5 T``).
    device : str or torch.device, optional
        ``"cpu"`` (default) or ``"cuda"``; all arithmetic is float64.
    batch_size : int, optional
        Filters processed at once (memory bound); default 8192 on CPU, 131072 on CUDA.
    progress : bool, optional
        Show a tqdm progress bar on stderr; default: only for >= 20,000 filters when
        stderr is a terminal.
    num_threads : int, optional
        CPU threads during this call: chunks of ``batch_size`` filters run on this many
        workers, each with one torch intra-op thread (``torch.set_num_threads``, restored
        afterwards; it is process-wide). On Linux a census of at least 32,768 filters
        forks its workers as processes (they inherit the filters and tables; Python
        threads would share one interpreter lock), otherwise they are threads; 1 runs
        everything in the calling thread. Default: torch's setting. The results do not
        depend on it.
    on_invalid : {"record", "raise"}
        What to do with a filter that has nothing to fit (:func:`screen_filters`: a NaN or
        infinite tap, all taps zero, or all taps equal): ``"record"`` (default) fits the
        others and gives it ``type`` None, NaN fit values and its ``reason`` (``"zero"``,
        ``"constant"``, ``"non-finite"``); ``"raise"`` raises a ValueError naming the first
        such filter. The default records because trained networks routinely hold dead or
        pruned channels, and one of them should not stop the census of thousands.
    family : str
        ``"masterkey"`` (default: the types above), or a model family fitted as a whole by
        :func:`scalespace_mk.analysis.jets.family_census`: ``"njet"`` (all discrete
        derivatives up to ``order`` at one scale) or ``"oriented"`` (a directional
        derivative of ``order`` 1 or 2 at angle theta); ``types`` and ``alpha_range`` are
        then unused and a :class:`~scalespace_mk.analysis.jets.FamilyCensusResult` is
        returned.
    order : int
        Order of the family (N = 1..4 for ``"njet"``, 1 or 2 for ``"oriented"``).
    allow_saturated : bool
        Fit a family with at least ``k * k - 1`` free parameters (refused by default).

    Returns
    -------
    CensusResult
        Per filter the best type and its ``sigma_x``, ``sigma_y``, ``alpha`` (type 7, else
        NaN), ``a``, ``b``, ``r2``; per filter and type the same in ``*_all`` ``[N, T]``;
        ``reason`` per filter (None when fitted).

    Raises
    ------
    ValueError
        Bad filters (wrong shape, even size; with ``on_invalid="raise"`` NaN, all zero,
        constant: the message names the filter's index), unknown types, bad options.

    Notes
    -----
    ``R^2 = 1 - RSS / TSS`` with ``TSS = sum (y - mean y)^2`` is the squared correlation of
    the filter and the model: the fraction of the filter's variance explained. If no model
    correlates with a filter (e.g. a filter odd in both x and y against the 8 types), every
    R^2 is 0, ``a = 0``, ``b = mean(y)`` and the first type is reported. Scales lie in
    ``[0, sigma_max]``; sigma is a standard deviation (``s = sigma**2``). The search is
    global on a coarse grid and local after it: a filter whose correlation has two maxima
    closer than the grid step may end on the lower one. See the module docstring. Each
    filter is divided by its largest ``|tap|`` before the fit (``a``, ``b``, ``rss`` and
    ``tss`` are scaled back), so the result does not depend on the filter's scale even near
    the limits of float64.

    Examples
    --------
    >>> from scalespace_mk.scalespace.models import masterkey_model
    >>> y = 2.0 * masterkey_model(5, 1.1, 0.9) + 0.01
    >>> res = census(y)
    >>> int(res.type[0]), round(float(res.sigma_x[0]), 6), round(float(res.sigma_y[0]), 6)
    (5, 1.1, 0.9)
    >>> round(float(res.a[0]), 6), round(float(res.r2[0]), 9)
    (2.0, 1.0)
    """
    if check_choice("family", family, ("masterkey", "njet", "oriented")) != "masterkey":
        from scalespace_mk.analysis.jets import family_census

        opts = dict(mode=mode, epsilon=epsilon, sigma_max=sigma_max, device=device)
        opts.update(batch_size=batch_size, progress=progress, num_threads=num_threads)
        check_choice("on_invalid", on_invalid, ON_INVALID)
        if on_invalid == "record":  # recorded like the 8-type census, not fitted
            opts["invalid"] = screen_filters(check_filters(filters, "filters", values=False))
        return family_census(
            filters, family=family, order=order, allow_saturated=allow_saturated, **opts
        )
    check_choice("on_invalid", on_invalid, ON_INVALID)
    y_in, reason, max_tap, css, y_scaled = _screen_input(filters, "filters", normalise=True)
    n_filters, k = y_in.shape[0], y_in.shape[1]
    if k < 3:
        raise ValueError(f"filters must be at least 3x3 to fit a model; got k = {k}")
    if size is not None and check_size(size) != k:
        raise ValueError(f"size must equal the filter size k = {k} (or be None); got {size!r}")
    tps = parse_model_types(types)
    check_choice("method", method, METHODS)
    check_choice("mode", mode, MODES)
    epsilon = check_epsilon(epsilon)
    lo_hi = _check_alpha_range(alpha_range)
    sigma_max = check_sigma_max(sigma_max, k)
    dev = _resolve_device(device)
    chosen = batch_size is not None
    if batch_size is None:
        batch_size = 131072 if dev.type == "cuda" else 8192
    check_batch_size(batch_size)
    valid = np.equal(reason, None)
    if on_invalid == "raise" and not valid.all():
        idx = int(np.flatnonzero(~valid)[0])
        raise ValueError(_invalid_message("filters", idx, reason[idx], y_in))
    n_all, n_filters = n_filters, int(valid.sum())
    # each filter divided by its max |tap| (from the screening; > 0 and finite for valid
    # filters); no copy when every filter is valid
    scale = max_tap[valid]
    y = y_scaled if valid.all() else y_scaled[valid]
    del y_scaled
    batch_size = _check_census_memory(tps, k, sigma_max, n_filters, int(batch_size), chosen)

    show = progress
    if show is None:
        show = n_filters >= 20_000 and sys.stderr.isatty()
    check_num_threads(num_threads)
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_filters * len(tps), unit="fit", desc="census", file=sys.stderr)
    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)

    try:
        with intra_op_threads(1):  # small ops on the tables: OpenMP only waits here
            objectives = _objectives(tps, k, method, mode, epsilon, sigma_max, lo_hi, dev)
        args = (k, method, mode, epsilon, sigma_max, lo_hi)
        theta, out = _fit_all(y, tps, objectives, args, dev, int(batch_size), bar)
    finally:
        if bar is not None:
            bar.close()
        if num_threads is not None:
            torch.set_num_threads(threads_before)
    # back to the filters' own scale; invalid filters get NaN rows and best = -1
    tss_valid = css[valid]  # centred sum of squares of y, from the screening
    with np.errstate(over="ignore"):  # filters near 1e300: a, b and sums of squares may be inf
        out["a"] *= scale[:, None]
        out["b"] *= scale[:, None]
        out["rss"] *= scale[:, None] * scale[:, None]  # 0 stays 0
        tss_valid *= scale * scale

    def full(values: np.ndarray) -> np.ndarray:
        if n_filters == n_all:  # every filter fitted: no copy
            return values
        arr = np.full((n_all,) + values.shape[1:], np.nan)
        arr[valid] = values
        return arr

    r2 = full(out["r2"])
    best = np.full(n_all, -1, dtype=np.int64)
    if n_filters:
        best[valid] = np.argmax(out["r2"], axis=1)
    tss = full(tss_valid)
    finite_invalid = ~valid & (reason != "non-finite")
    tss[finite_invalid] = 0.0  # zero and constant filters: nothing to explain
    return CensusResult(
        types=tuple(t.label for t in tps),
        best=best,
        sigma_x_all=full(theta[:, :, 0]),
        sigma_y_all=full(theta[:, :, 1]),
        alpha_all=full(out["alpha"]),
        a_all=full(out["a"]),
        b_all=full(out["b"]),
        r2_all=r2,
        rss_all=full(out["rss"]),
        tss=tss,
        alpha_range=lo_hi,
        sigma_max=sigma_max,
        reason=reason,
    )


# --------------------------------------------------------------------------------------
# a slow per-filter reference on the same objective (for tests and benchmarks)


def reference_fit(
    y: Any,
    filter_type: int | str,
    *,
    x0: Sequence[float] | None = None,
    method: str = "discgauss",
    mode: str = "paper",
    epsilon: float = 1e-8,
    sigma_max: float | None = None,
    alpha_range: tuple[float, float] = ALPHA_RANGE,
) -> dict[str, Any]:
    """Fit one filter and one type with ``scipy.optimize`` (L-BFGS-B), as a reference.

    Minimises the same objective as :func:`census`, ``RSS(theta) = ||a g(theta) + b - y||^2``
    with the closed-form ``a, b`` of :func:`linear_shift`, over the scales (and, for type 7,
    over ``(sigma, alpha)`` jointly) within the same bounds, from one starting point, with
    the exact gradient from autograd through :func:`scalespace_mk.scalespace.models.model_kernel`.
    It is slow (one optimisation per filter and type) and finds a local optimum only.

    Parameters
    ----------
    y : array_like, shape [k, k]
        One filter (stored-weight layout, y up).
    filter_type : int or str
        A type accepted by :func:`census` (1..8 or a model name).
    x0 : sequence of float, optional
        Start: ``(sigma_x, sigma_y)``, ``(sigma,)`` for ``"lap"``, ``(sigma, alpha)`` for
        type 7. Default ``(1, 1)``, ``(1,)``, ``(1, 0.5)``.
    method, mode, epsilon, sigma_max, alpha_range
        As in :func:`census`.

    Returns
    -------
    dict
        ``sigma_x``, ``sigma_y``, ``alpha`` (None unless type 7), ``a``, ``b``, ``r2``,
        ``rss`` (floats) and ``nfev`` (objective evaluations).
    """
    from scipy.optimize import minimize

    yy = np.ascontiguousarray(check_filters(y, "y", allow_single=True))
    if yy.shape[0] != 1:
        raise ValueError(f"y must be one filter of shape [k, k]; got shape {np.shape(y)}")
    _check_tss(yy, "y")
    k = yy.shape[1]
    (tp,) = parse_model_types((filter_type,))
    lo_hi = _check_alpha_range(alpha_range)
    smax = k / 2.0 if sigma_max is None else float(sigma_max)
    kw = dict(size=k, method=method, mode=mode, epsilon=epsilon)
    yt = torch.as_tensor(yy.reshape(1, -1))
    if tp.kind == "sep":
        start, bounds = (1.0, 1.0), [(0.0, smax), (0.0, smax)]
    elif tp.kind == "iso":
        start, bounds = (1.0,), [(0.0, smax)]
    else:
        start, bounds = (1.0, 0.5), [(0.0, smax), lo_hi]
    start = tuple(float(v) for v in (x0 if x0 is not None else start))
    if len(start) != len(bounds):
        raise ValueError(f"x0 must have {len(bounds)} values for type {filter_type!r}; got {x0!r}")

    def model(p: torch.Tensor) -> torch.Tensor:
        if tp.kind == "sep":
            return model_kernel(tp.name, p[0:1], p[1:2], **kw)
        if tp.kind == "iso":
            return model_kernel(tp.name, p[0:1], **kw)
        return model_kernel(tp.name, p[0:1], alpha=p[1:2], **kw)

    def fun(x: np.ndarray) -> float:
        p = torch.tensor(x, dtype=torch.float64)
        p[0] = p[0].clamp(min=0.0)  # L-BFGS-B keeps to the bounds; guard rounding
        if tp.kind == "sep":
            p[1] = p[1].clamp(min=0.0)
        with torch.no_grad():
            return float(_shift_t(yt, model(p).reshape(1, -1)).rss[0])

    opt = minimize(
        fun,
        np.array(start),
        jac="3-point",
        method="L-BFGS-B",
        bounds=bounds,
        options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 500},
    )
    p = torch.tensor(opt.x, dtype=torch.float64)
    with torch.no_grad():
        res = _shift_t(yt, model(p).reshape(1, -1))
    sx = float(opt.x[0])
    sy = float(opt.x[1]) if tp.kind == "sep" else sx
    return {
        "sigma_x": sx,
        "sigma_y": sy,
        "alpha": float(opt.x[1]) if tp.kind == "mk7" else None,
        "a": float(res.a[0]),
        "b": float(res.b[0]),
        "r2": float(res.r2[0]),
        "rss": float(res.rss[0]),
        "nfev": int(opt.nfev),
    }


def null_r2(
    filters: np.ndarray, kinds: tuple[str, ...], seed: int, **census_kwargs: Any
) -> dict[str, np.ndarray]:
    """R^2 of the best model for the null filters of each kind.

    The null filters are :func:`scalespace_mk.analysis.null.null_filters`.

    Parameters
    ----------
    filters : numpy.ndarray, shape [N, k, k]
        The learned filters that were fitted (finite; leave out zero, constant and
        non-finite ones).
    kinds : tuple of str
        Null kinds (:func:`scalespace_mk.analysis.null.null_kinds`).
    seed : int
        Seed (>= 0) of the null filters.
    **census_kwargs
        Options of :func:`census` (``types``, ``device``,
        ...), the same as for the learned filters so that both are fitted alike.

    Returns
    -------
    dict
        ``{kind: R^2 [N]}`` (NaN where a null filter could not be fitted, e.g. the phase
        copy of a constant filter).
    """
    out: dict[str, np.ndarray] = {}
    for kind in kinds:
        if len(filters) == 0:
            out[kind] = np.zeros(0)
            continue
        if kind == "covariance" and len(filters) < 2:  # no covariance of one filter
            out[kind] = np.full(len(filters), np.nan)
            continue
        z = null_filters(filters, kind, seed)
        out[kind] = census(z, on_invalid="record", **census_kwargs).r2
    return out
