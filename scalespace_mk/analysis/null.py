"""Null models: structureless filters matched to learned ones, and the learned-minus-null contrast.

R^2 of the best idealised model says little on its own: the 8 master key types reach a median
R^2 of about 0.45 on *random* 3x3 filters and about 0.2 on random 5x5 ones, simply because a
few parameters fit a few taps. Every statistic of a census is therefore reported beside the
same statistic for filters with no scale-space structure, fitted the same way. Each null is
named for what it randomises:

``"iid"`` (the floor)
    i.i.d. standard Gaussian filters of the same shape and count. R^2 is invariant to the
    filter's gain and offset, so the noise level does not matter. Randomises everything.
``"position"`` (formerly ``"phase"``, still accepted)
    each learned filter's 2-D power spectrum ``|F(y)|^2`` (discrete Fourier transform over the
    k x k taps) kept exactly, with the phases replaced by those of white noise. Random phases
    include random linear phase ramps, i.e. random *circular translations*: this null mainly
    tests where the energy sits (position), not shape -- its R^2 is within a few hundredths of
    shifting each learned filter circularly, and its largest tap lands at the centre at chance
    rate. Keeps smoothness; randomises position and shape.
``"shape"``
    the position null re-centred: each phase-randomised filter circularly shifted so that its
    largest tap (in absolute value) sits at the centre. A circular shift keeps ``|F|``, so the
    spectrum is still exact and the filter is centred like most learned ones; only the shape
    beyond smoothness and centring is random.
``"covariance"`` (the second-order null)
    Gaussian filters with the group's own mean and covariance (the k*k-dimensional mean
    ``mu`` and covariance ``Sigma`` of the filters passed in, e.g. one layer):
    ``z = mu + A^T w / sqrt(n - 1)`` with ``A`` the centred filters and ``w ~ N(0, I_n)``,
    so ``E z = mu`` and ``Cov z = Sigma`` exactly. Keeps every first- and second-order
    statistic of the population (smoothness, centring, typical orientations, the power
    spectrum on average); randomises everything beyond that. The honest test of "a few
    specific types beyond smooth random structure".

All are seeded (:func:`null_filters`); :func:`null_contrast` compares the R^2 of learned and
null filters with a bootstrap interval of the difference. The ceiling of each null (the same
null on ideal model filters) is in :mod:`scalespace_mk.analysis.ceiling`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_NULLS",
    "NULL_ALIASES",
    "NULL_KINDS",
    "NULL_SETS",
    "R2_GOOD",
    "canonical_kind",
    "derive_seed",
    "null_contrast",
    "null_filters",
    "null_kinds",
    "r2_summary",
]

#: the null models :func:`null_filters` builds
NULL_KINDS: tuple[str, ...] = ("iid", "position", "shape", "covariance")
#: old names still accepted, mapped to the honest ones
NULL_ALIASES: dict[str, str] = {"phase": "position", "second-order": "covariance"}
#: the nulls of a default analysis: the floor and the two nulls that keep smoothness and
#: centring (shape) or the whole second-order structure (covariance); see docs/analysis.md
DEFAULT_NULLS: tuple[str, ...] = ("iid", "shape", "covariance")
#: named sets of null kinds accepted by :func:`null_kinds`
NULL_SETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "both": ("iid", "position"),
    "default": DEFAULT_NULLS,
    "all": NULL_KINDS,
}
_STREAM = {"iid": 0, "position": 1, "shape": 1, "covariance": 3}  # shape = position re-centred
#: R^2 above which a filter counts as well explained (the share reported beside the median)
R2_GOOD = 0.8


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0 (e.g. seed=0); got {seed!r}")
    return int(seed)


def canonical_kind(kind: Any) -> str:
    """The honest name of a null kind (``"phase"`` -> ``"position"``); ValueError if unknown."""
    if isinstance(kind, str):
        kind = NULL_ALIASES.get(kind, kind)
        if kind in NULL_KINDS:
            return kind
    accepted = ", ".join(map(repr, NULL_KINDS + tuple(NULL_ALIASES)))
    raise ValueError(f"kind must be one of {accepted}; got {kind!r}")


def null_kinds(null: Any) -> tuple[str, ...]:
    """The null models named by ``null``, by their honest names.

    Parameters
    ----------
    null : str, sequence of str or None
        ``"none"`` (or None), a kind (``"iid"``, ``"position"`` (alias ``"phase"``),
        ``"shape"``, ``"covariance"``), a comma-separated list of kinds, or a set:
        ``"default"`` (iid, shape, covariance), ``"both"`` (iid, position: the old default),
        ``"all"``.

    Returns
    -------
    tuple of str
        Kinds for :func:`null_filters`, in the order of :data:`NULL_KINDS`, no repeats.
    """
    if null is None:
        return ()
    if isinstance(null, str) and null in NULL_SETS:
        return NULL_SETS[null]
    items = null.split(",") if isinstance(null, str) else null
    try:
        kinds = {canonical_kind(str(k).strip()) for k in items}
    except (TypeError, ValueError):
        sets = ", ".join(map(repr, NULL_SETS))
        kinds_ = ", ".join(map(repr, NULL_KINDS + tuple(NULL_ALIASES)))
        raise ValueError(
            f"null must be one of {sets}, a kind ({kinds_}) or a comma-separated list of "
            f"kinds; got {null!r}"
        ) from None
    if not kinds:
        raise ValueError(f"null names no null kind; got {null!r} (use 'none' for no null)")
    return tuple(k for k in NULL_KINDS if k in kinds)


def null_filters(filters: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """Structureless filters matched to ``filters``.

    Parameters
    ----------
    filters : numpy.ndarray, shape [N, k, k]
        Learned filters (stored-weight layout: rows top to bottom, ``x = c - m``,
        ``y = m - r``, y up), finite.
    kind : {"iid", "position", "shape", "covariance"} (``"phase"``: ``"position"``)
        ``"iid"``: i.i.d. standard Gaussian taps, N filters of size k x k (only the shape of
        ``filters`` is used). ``"position"``: for each filter ``y`` the real filter
        ``ifft2(|fft2(y)| exp(i phi))`` whose phases ``phi`` are those of ``fft2`` of a
        Gaussian white-noise filter: same 2-D power spectrum ``|fft2(y)|^2`` as ``y``
        (hence the same sum of squares), random phases (random shape and position).
        ``"shape"``: the ``"position"`` filter circularly shifted so that its largest
        ``|tap|`` sits at the centre ``(k // 2, k // 2)`` (same spectrum, centred).
        ``"covariance"``: N Gaussian filters with the mean and covariance of ``filters``
        (over the N filters, as k*k-vectors; needs N >= 2).
    seed : int
        Seed (>= 0) of the random numbers; the same ``(filters, kind, seed)`` give the same
        output on every machine (numpy's PCG64). The kinds draw from different streams,
        except ``"shape"``, which is exactly the ``"position"`` null of the same seed
        re-centred; ``"position"`` draws what ``"phase"`` drew before it was renamed.

    Returns
    -------
    numpy.ndarray of float64, shape [N, k, k]
        The null filters.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.random.default_rng(0).normal(size=(4, 5, 5))
    >>> z = null_filters(y, "shape", seed=1)
    >>> bool(np.allclose(np.abs(np.fft.fft2(z)), np.abs(np.fft.fft2(y))))
    True
    >>> [divmod(int(np.abs(f).argmax()), 5) for f in z]
    [(2, 2), (2, 2), (2, 2), (2, 2)]
    """
    kind = canonical_kind(kind)
    seed = _check_seed(seed)
    try:
        arr = np.asarray(filters, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"filters must be a numeric array of shape [N, k, k]; got {type(filters)}"
        ) from None
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"filters must have shape [N, k, k]; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("filters hold NaN or infinite values; drop them before building a null")
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM[kind]]))
    if kind == "covariance":
        n, k = arr.shape[0], arr.shape[1]
        if n < 2:
            raise ValueError(
                f"the covariance null needs at least 2 filters (their mean and covariance); got {n}"
            )
        flat = arr.reshape(n, -1)
        mu = flat.mean(0)
        w = rng.standard_normal((n, n))
        return (mu + w @ (flat - mu) / math.sqrt(n - 1)).reshape(n, k, k)
    noise = rng.standard_normal(arr.shape)
    if kind == "iid":
        return noise
    spectrum = np.fft.fft2(noise)
    size = np.abs(spectrum)
    phase = np.where(size > 0, spectrum / np.where(size > 0, size, 1.0), 1.0)
    out = np.fft.ifft2(np.abs(np.fft.fft2(arr)) * phase).real
    if kind == "shape":
        n, k = out.shape[0], out.shape[1]
        peak = np.abs(out.reshape(n, -1)).argmax(1)
        dr, dc = k // 2 - peak // k, k // 2 - peak % k
        idx = np.arange(k)
        rows = (idx[None, :] - dr[:, None]) % k  # out[r] moves to r + dr
        cols = (idx[None, :] - dc[:, None]) % k
        out = out[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out


def _finite(r2: Any) -> np.ndarray:
    arr = np.asarray(r2, dtype=np.float64).reshape(-1)
    return arr[np.isfinite(arr)]


def r2_summary(r2: Any) -> dict[str, Any]:
    """Median R^2 and share with R^2 > :data:`R2_GOOD` of the fitted filters.

    Parameters
    ----------
    r2 : array_like, shape [N]
        R^2 per filter; NaN (filters not fitted) are left out.

    Returns
    -------
    dict
        ``{"n": fitted filters, "median_r2": float or None, "share_r2_gt_0_8": float or
        None}`` (None when no filter was fitted).
    """
    x = _finite(r2)
    if not x.size:
        return {"n": 0, "median_r2": None, "share_r2_gt_0_8": None}
    return {
        "n": int(x.size),
        "median_r2": float(np.median(x)),
        "share_r2_gt_0_8": float(np.mean(x > R2_GOOD)),
    }


def null_contrast(
    r2: Any,
    null_r2: Any,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Learned against null R^2: medians, shares > 0.8, their differences and intervals.

    Parameters
    ----------
    r2, null_r2 : array_like
        R^2 of the learned filters and of their null filters (NaN are left out).
    n_boot : int
        Bootstrap resamples of the differences (0: no interval). Learned and null R^2 are
        resampled independently, with replacement; the medians and shares of the resamples
        are drawn from their exact distributions (order statistics, binomial counts), so a
        resample costs O(1) whatever the number of filters.
    level : float
        Coverage of the percentile interval, in (0, 1).
    seed : int
        Seed (>= 0) of the resampling.

    Returns
    -------
    dict
        ``median_r2``, ``null_median_r2``, ``median_diff`` (learned minus null),
        ``median_diff_ci`` ([low, high] or None), ``share_r2_gt_0_8``,
        ``null_share_r2_gt_0_8``, ``share_diff``, ``share_diff_ci``, ``n``, ``null_n``.
        Values are None where a side has no fitted filter.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 0:
        raise ValueError(f"n_boot must be an integer >= 0; got {n_boot!r}")
    if not (isinstance(level, float | int) and 0.0 < level < 1.0):
        raise ValueError(f"level must be a number in (0, 1); got {level!r}")
    seed = _check_seed(seed)
    x, z = _finite(r2), _finite(null_r2)
    sx, sz = r2_summary(x), r2_summary(z)
    out: dict[str, Any] = {
        "n": sx["n"],
        "null_n": sz["n"],
        "median_r2": sx["median_r2"],
        "null_median_r2": sz["median_r2"],
        "median_diff": None,
        "median_diff_ci": None,
        "share_r2_gt_0_8": sx["share_r2_gt_0_8"],
        "null_share_r2_gt_0_8": sz["share_r2_gt_0_8"],
        "share_diff": None,
        "share_diff_ci": None,
    }
    if not (x.size and z.size):
        return out
    out["median_diff"] = sx["median_r2"] - sz["median_r2"]
    out["share_diff"] = sx["share_r2_gt_0_8"] - sz["share_r2_gt_0_8"]
    if n_boot:
        rng = np.random.default_rng(seed)
        q = [50.0 * (1.0 - level), 50.0 * (1.0 + level)]
        med = _boot_median(x, n_boot, rng) - _boot_median(z, n_boot, rng)
        share = (
            rng.binomial(x.size, sx["share_r2_gt_0_8"], n_boot) / x.size
            - rng.binomial(z.size, sz["share_r2_gt_0_8"], n_boot) / z.size
        )
        out["median_diff_ci"] = np.percentile(med, q).tolist()
        out["share_diff_ci"] = np.percentile(share, q).tolist()
    return out


def _boot_median(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of ``n_boot`` bootstrap resamples of ``x``, drawn in O(n_boot).

    A resample is n indices drawn uniformly from 0..n-1, ``floor(n U_i)`` for i.i.d. uniform
    ``U_i``; its k-th smallest index is ``floor(n U_(k))`` with ``U_(k) ~ Beta(k, n + 1 - k)``,
    and given ``U_(k) = u`` the next one is ``u + (1 - u) Beta(1, n - k)``. So the resample's
    median, ``x_sorted`` at the middle order statistic(s), is drawn exactly without drawing
    the resample.
    """
    n = x.size
    xs = np.sort(x)
    k = (n + 1) // 2  # 1-based middle (lower middle for even n)
    u = rng.beta(k, n + 1 - k, n_boot)
    lo = xs[np.minimum((n * u).astype(np.int64), n - 1)]
    if n % 2:
        return lo
    v = u + (1.0 - u) * rng.beta(1, n - k, n_boot)
    return 0.5 * (lo + xs[np.minimum((n * v).astype(np.int64), n - 1)])


def derive_seed(seed: int, key: str) -> int:
    """A seed for one part of a run (e.g. one layer), from the run's ``seed`` and a name.

    The same ``(seed, key)`` always gives the same value, whatever else is analysed in the
    run, so a layer's null does not change when other layers are added or removed.

    Parameters
    ----------
    seed : int
        The run's seed (>= 0).
    key : str
        The part's name (e.g. the layer's dotted name).

    Returns
    -------
    int
        A seed in [0, 2**63).
    """
    import zlib

    seed = _check_seed(seed)
    words = np.random.SeedSequence([seed, zlib.crc32(str(key).encode())]).generate_state(2)
    return int((int(words[0]) << 31) ^ int(words[1]))
