"""The ceiling of each null model: what perfect scale-space filters reach against it.

A null's median R^2 is not the whole story: how far learned filters *could* rise above it
depends on k. Perfect scale-space filters (the models themselves, R^2 = 1) turned into null
filters the same way reach only part of the way down. So every null contrast is read
against its ceiling. Two ceilings are computed, never typed in:

- **matched** (:func:`matched_ceiling`, what ``analyze`` and ``census`` report): the ideal
  versions of the very filters analysed -- each filter replaced by its fitted model
  ``a g + b`` (:func:`fitted_models`; R^2 = 1 by construction) -- turned into the same null
  with the same seed and fitted the same way. Its median is the ceiling; the attainable gap
  is ``1 - ceiling`` and the gap share ``(median learned - median null) / (1 - ceiling)``:
  how far the learned filters stand above the null, as a share of how far their own ideal
  versions would. It depends on the population (types, scales, gains), which is the point:
  a generic population of ideal filters can have a very different null (e.g. its
  covariance null scores about 0.97, far above a real layer's).
- **generic** (:func:`null_ceiling`): a fixed seeded population of ideal filters per k:

  **ideal filters** (:func:`ideal_filters`): N model filters of size k, the census's types in
  turn, scales ``sigma_x, sigma_y`` uniform in ``[0.5, min(2, k / 2)]`` (standard
  deviations), type 7's ``alpha`` uniform in ``[0.5, 3]``, gain ``+-exp(N(0, 0.5^2))`` with
  a random sign, no offset; seeded;
- **ceiling** (:func:`null_ceiling`): the census of the null filters made from the ideal
  ones (the same null kind, the same census), its median R^2 ``c_null``; the ideal filters'
  own median R^2 ``c_ideal`` (1 up to the fit's precision) is computed too;
- **attainable gap** ``c_ideal - c_null`` and the **gap share**
  ``(median learned - median null) / (c_ideal - c_null)`` (:func:`gap_share`): the
  learned-minus-null gap as a share of the gap perfect scale-space filters would show. 1:
  as far above this null as ideal filters; 0: no better than the null.

The ceilings are computed (cached per (k, kind, types, mode, n, seed)), never typed in.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from scalespace_mk.analysis.null import canonical_kind, null_filters, r2_summary
from scalespace_mk.analysis.types import DEFAULT_TYPES, parse_model_types
from scalespace_mk.scalespace.models import model_kernel

__all__ = [
    "CEILING_SIZE",
    "fitted_models",
    "gap_share",
    "ideal_filters",
    "matched_ceiling",
    "null_ceiling",
]

#: ideal filters per ceiling (the median of 512 null R^2 is known to about +-0.02)
CEILING_SIZE = 512


def ideal_filters(
    size: int,
    n: int = CEILING_SIZE,
    *,
    types: Any = DEFAULT_TYPES,
    seed: int = 0,
    mode: str = "paper",
) -> tuple[np.ndarray, np.ndarray]:
    """Perfect scale-space filters of size k: the census's types in turn, random scales.

    Parameters
    ----------
    size : int
        Odd kernel size k >= 3.
    n : int
        Number of filters.
    types : sequence of int or str
        Census types (default the 8 master key types), used in turn.
    seed : int
        Seed of the scales, alphas and gains.
    mode : str
        Model construction (``"paper"`` or ``"full"``).

    Returns
    -------
    filters : numpy.ndarray [n, k, k]
        ``gain * g(sigma_x, sigma_y[, alpha])`` in the stored-weight layout (y up).
    labels : numpy.ndarray of object [n]
        The type of each filter.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 3 or size % 2 == 0:
        raise ValueError(f"size must be an odd integer >= 3; got {size!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    tps = parse_model_types(types)
    rng = np.random.default_rng(np.random.SeedSequence([seed, size, 17]))
    hi = min(2.0, size / 2.0)
    sx = rng.uniform(0.5, hi, n)
    sy = rng.uniform(0.5, hi, n)
    al = rng.uniform(0.5, 3.0, n)
    gain = rng.choice([-1.0, 1.0], n) * np.exp(rng.normal(0.0, 0.5, n))
    which = np.arange(n) % len(tps)
    out = np.zeros((n, size, size))
    for j, tp in enumerate(tps):
        m = which == j
        if not m.any():
            continue
        if tp.kind == "mk7":
            g = model_kernel(tp.name, sx[m], alpha=al[m], size=size, mode=mode)
        elif tp.kind == "iso":
            g = model_kernel(tp.name, sx[m], size=size, mode=mode)
        else:
            g = model_kernel(tp.name, sx[m], sy[m], size=size, mode=mode)
        out[m] = np.asarray(g).reshape(-1, size, size)
    labels = np.array([tps[j].label for j in which], dtype=object)
    return out * gain[:, None, None], labels


@functools.lru_cache(maxsize=64)
def _ceiling(size: int, kind: str, types: tuple, mode: str, n: int, seed: int) -> dict:
    from scalespace_mk.analysis.census import census

    ideal, _ = ideal_filters(size, n, types=types, seed=seed, mode=mode)
    own = census(ideal, types=types, mode=mode, progress=False).r2
    null = null_filters(ideal, kind, seed)
    r2 = census(null, types=types, mode=mode, progress=False, on_invalid="record").r2
    s, o = r2_summary(r2), r2_summary(own)
    return {
        "kind": kind,
        "kernel_size": size,
        "n": n,
        "seed": seed,
        "ideal_median_r2": o["median_r2"],
        "ceiling_median_r2": s["median_r2"],
        "ceiling_share_r2_gt_0_8": s["share_r2_gt_0_8"],
        "attainable_gap": o["median_r2"] - s["median_r2"],
    }


def null_ceiling(
    size: int,
    kind: str,
    *,
    types: Any = DEFAULT_TYPES,
    mode: str = "paper",
    n: int = CEILING_SIZE,
    seed: int = 0,
) -> dict[str, Any]:
    """The median R^2 that ideal model filters of size k reach on their own ``kind`` null.

    Parameters
    ----------
    size : int
        Odd kernel size k.
    kind : str
        Null kind (:func:`scalespace_mk.analysis.null.null_filters`; ``"phase"`` is
        ``"position"``).
    types : sequence of int or str
        Census types (the ideal filters are made from them and fitted with them).
    mode : str
        Model construction.
    n, seed : int
        Ideal filters and their seed (:func:`ideal_filters`).

    Returns
    -------
    dict
        ``kind``, ``kernel_size``, ``n``, ``seed``, ``ideal_median_r2`` (the ideal
        filters' own median R^2, ~1), ``ceiling_median_r2`` (their null's median R^2),
        ``ceiling_share_r2_gt_0_8``, ``attainable_gap`` (ideal minus ceiling).

    Examples
    --------
    >>> c = null_ceiling(3, "position", n=256)
    >>> 0.4 < c["ceiling_median_r2"] < 0.8, round(c["ideal_median_r2"], 6)
    (True, 1.0)
    """
    kind = canonical_kind(kind)
    labels = tuple(t.label for t in parse_model_types(types))
    return dict(_ceiling(int(size), kind, labels, mode, int(n), int(seed)))


def gap_share(median_r2: Any, null_median_r2: Any, ceiling: dict[str, Any]) -> float | None:
    """``(median learned - median null) / attainable gap`` (None when undefined).

    Parameters
    ----------
    median_r2, null_median_r2 : float or None
        Medians of the learned filters and of their null.
    ceiling : dict
        :func:`null_ceiling` of the same kind and k.

    Returns
    -------
    float or None
        1: learned filters stand as far above this null as ideal scale-space filters do;
        0: no better than the null; None where a median is missing or the attainable gap
        is not positive.
    """
    gap = ceiling.get("attainable_gap")
    if median_r2 is None or null_median_r2 is None or gap is None or not gap > 1e-9:
        return None
    out = (float(median_r2) - float(null_median_r2)) / float(gap)
    return out if math.isfinite(out) else None


def fitted_models(
    result: Any, size: int, *, mode: str = "paper", method: str = "discgauss"
) -> np.ndarray:
    """The fitted models ``a g + b`` of a census (the ideal versions of its filters).

    Parameters
    ----------
    result : CensusResult
        :func:`scalespace_mk.analysis.census.census` of k x k filters.
    size : int
        k.
    mode, method : str
        The census's model construction.

    Returns
    -------
    numpy.ndarray [N, k, k]
        ``a g(theta) + b`` at the fitted type and parameters (stored-weight layout, y up);
        NaN for filters not fitted.
    """
    labels = np.asarray(result.type, dtype=object)
    out = np.full((len(labels), size, size), np.nan)
    sx, sy, al = result.sigma_x, result.sigma_y, result.alpha
    kw = dict(size=size, mode=mode, method=method)
    for tp in parse_model_types(result.types):
        m = np.flatnonzero(labels == tp.label)
        if not m.size:
            continue
        if tp.kind == "mk7":
            g = model_kernel(tp.name, sx[m], alpha=al[m], **kw)
        elif tp.kind == "iso":
            g = model_kernel(tp.name, sx[m], **kw)
        else:
            g = model_kernel(tp.name, sx[m], sy[m], **kw)
        g = np.asarray(g, dtype=np.float64).reshape(-1, size, size)
        out[m] = result.a[m, None, None] * g + result.b[m, None, None]
    return out


def matched_ceiling(
    models: np.ndarray, kinds: Any, seed: int, **census_kwargs: Any
) -> dict[str, np.ndarray]:
    """R^2 of the nulls of ideal filters (:func:`fitted_models`), fitted like the learned.

    Parameters
    ----------
    models : numpy.ndarray [N, k, k]
        The fitted models of the analysed filters (finite rows only).
    kinds : sequence of str
        Null kinds.
    seed : int
        The seed of the learned filters' null (the same random numbers are used).
    **census_kwargs
        Options of :func:`scalespace_mk.analysis.census.census`.

    Returns
    -------
    dict
        ``{kind: R^2 [N]}``; the ceiling is its median (:func:`gap_share` with
        ``{"attainable_gap": 1 - median}``).
    """
    from scalespace_mk.analysis.census import null_r2

    return null_r2(np.asarray(models, dtype=np.float64), tuple(kinds), seed, **census_kwargs)
