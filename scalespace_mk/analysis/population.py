"""Population measures of a layer's filters, for any odd k, beside the census and its nulls.

Large filter studies (CNN Filter DB, Gavrikov & Keuper, CVPR 2022) describe *populations*
of trained filters, not only single fits. This module computes their measures per layer,
each with a reference from our own i.i.d. null for the same (k, n), and two of ours:

- **sparsity** (:func:`sparsity`): share of filters whose largest ``|tap|`` is below
  ``eps = 0.01`` times the largest ``|tap|`` of the layer (CNN Filter DB's definition:
  filters that contribute nothing beyond noise; all-zero filters count).
- **variance entropy** (:func:`variance_entropy`): with ``lambda_i`` the variances of the
  layer's principal components (filters as k*k-vectors, minus the layer mean),
  ``H = -sum p_i log p_i / log(k*k)`` with ``p_i = lambda_i / sum lambda``: 0 when every
  filter lies on one direction, 1 when the variance is spread evenly (white noise).
  CNN Filter DB divides by a fitted threshold for 3x3; here the **randomness threshold** is
  the 5 % quantile of ``H`` over 200 seeded layers of ``n`` i.i.d. Gaussian k x k filters
  (:func:`entropy_threshold`): a layer with ``H`` at or above it is indistinguishable from
  random in this statistic.
- **orthogonality** (:func:`orthogonality`): ``1 - mean |cos|`` over all pairs of distinct
  filters (raw taps); beside it the exact value for i.i.d. Gaussian filters,
  ``1 - Gamma(P/2) / (sqrt(pi) Gamma((P + 1)/2))`` with ``P = k*k``.
- **PCA bound** (:func:`pca_r2`): the R^2 that the best m-dimensional linear basis for the
  layer reaches (each filter minus its mean, as the census fits ``a g + b``; the basis is
  the top-m right singular vectors of the centred filters; R^2 per filter
  ``||P_m y_c||^2 / ||y_c||^2``, median over filters) -- an in-sample bound for any family
  with m free parameters besides the offset. :data:`FAMILY_DIMENSIONS` matches m to each
  family's free parameters, so a family's R^2 is read against what any basis of its size
  reaches.
- **drift** (:func:`drift`): between two sets of filters (layers or networks), both
  centred and scaled to unit norm (shape only, as the census sees them) and projected on the
  principal components of the two pooled; per component the symmetric Kullback-Leibler
  divergence ``sum (p - q) log(p / q)`` of histograms of the coefficients (CNN Filter DB's
  measure of distribution shift; 32 common bins, half a count added to every bin so that
  empty bins stay finite), and the 1-D Wasserstein-1 distance of the coefficients; both
  averaged over components weighted by their share of the pooled variance. The distance has
  a bootstrap percentile interval (filters resampled within each set) and a permutation
  reference (the same distance between random halves of the pooled filters).

Conventions: filters ``[N, k, k]`` in the stored-weight layout (rows top to bottom; ``x = c
- m``, ``y = m - r``, y up); measures do not depend on the orientation convention.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

__all__ = [
    "FAMILY_DIMENSIONS",
    "SPARSITY_EPS",
    "drift",
    "entropy_threshold",
    "layer_population",
    "orthogonality",
    "pca_r2",
    "sparsity",
    "variance_entropy",
]

#: threshold of :func:`sparsity`, relative to the layer's largest |tap| (CNN Filter DB: 1 %)
SPARSITY_EPS = 0.01
#: basis dimension m matched to each family's free parameters besides the offset: the 8
#: types (gain, two scales, the choice of type), the N-jets ((N + 1)(N + 2) / 2
#: coefficients and a scale) and the oriented derivatives (gain, angle, scale)
FAMILY_DIMENSIONS: dict[str, int] = {
    "masterkey": 4,
    "njet1": 4,
    "njet2": 7,
    "oriented1": 3,
    "oriented2": 3,
}
_N_NULL = 200
_BINS = 32
_ORTH_MAX = 4096  # filters compared pairwise at most (a seeded subset beyond)


def _flat(filters: Any) -> np.ndarray:
    arr = np.asarray(filters, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[1] % 2 == 0:
        raise ValueError(f"filters must have shape [N, k, k] with odd k; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("filters hold NaN or infinite values; drop them first")
    return arr.reshape(arr.shape[0], -1)


def sparsity(filters: Any, eps: float = SPARSITY_EPS) -> float:
    """Share of filters whose largest ``|tap|`` is below ``eps`` times the layer's largest.

    Parameters
    ----------
    filters : array_like [N, k, k]
        One layer's filters (finite).
    eps : float
        Relative threshold (default 0.01).

    Returns
    -------
    float
        In [0, 1]; 1 for an all-zero layer.
    """
    y = np.abs(_flat(filters))
    top = y.max() if y.size else 0.0
    if top == 0:
        return 1.0
    return float(np.mean(y.max(1) < eps * top))


def _entropy(flat: np.ndarray) -> float:
    n, p = flat.shape
    if n < 2:
        return math.nan
    c = flat - flat.mean(0)
    lam = np.clip(np.linalg.eigvalsh(c.T @ c), 0.0, None)  # squared singular values
    if lam.sum() <= 0:
        return math.nan
    q = lam / lam.sum()
    q = q[q > 0]
    return float(-(q * np.log(q)).sum() / math.log(p))


def variance_entropy(filters: Any) -> float:
    """Normalised entropy of the layer's principal-component variances, in [0, 1].

    Parameters
    ----------
    filters : array_like [N, k, k]
        One layer's filters (finite, N >= 2).

    Returns
    -------
    float
        ``-sum p_i log p_i / log(k*k)`` (NaN for fewer than 2 filters or no variance).
    """
    return _entropy(_flat(filters))


@functools.lru_cache(maxsize=256)
def _iid_reference(n: int, k: int, n_null: int, seed: int) -> tuple[float, float]:
    """(entropy threshold, orthogonality of i.i.d. filters). The second is exact: for
    i.i.d. Gaussian vectors in P dimensions ``E |cos| = Gamma(P/2) / (sqrt(pi)
    Gamma((P + 1)/2))`` (the cosine of two uniform directions), so no sampling is needed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, n, k, 23]))
    ent = [_entropy(rng.standard_normal((n, k * k))) for _ in range(n_null)]
    p = k * k
    mean_abs_cos = math.exp(math.lgamma(p / 2) - math.lgamma((p + 1) / 2)) / math.sqrt(math.pi)
    return float(np.quantile(ent, 0.05)), 1.0 - mean_abs_cos


def entropy_threshold(n: int, k: int, *, n_null: int = _N_NULL, seed: int = 0) -> float:
    """Randomness threshold of :func:`variance_entropy` for a layer of n filters of size k.

    The 5 % quantile of the variance entropy over ``n_null`` seeded layers of ``n`` i.i.d.
    standard Gaussian k x k filters (cached).

    Parameters
    ----------
    n : int
        Filters in the layer (>= 2).
    k : int
        Odd kernel size.
    n_null, seed : int
        Null layers drawn and their seed.

    Returns
    -------
    float
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (filters in the layer); got {n!r}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1 or k % 2 == 0:
        raise ValueError(f"k must be an odd positive integer; got {k!r}")
    return _iid_reference(int(n), int(k), int(n_null), int(seed))[0]


def _orth(flat: np.ndarray) -> float:
    n = flat.shape[0]
    if n < 2:
        return math.nan
    norm = np.linalg.norm(flat, axis=1)
    u = flat[norm > 0] / norm[norm > 0, None]
    m = u.shape[0]
    if m < 2:
        return math.nan
    if m > _ORTH_MAX:  # all pairs of a seeded subset: the mean of |cos| within ~1e-3
        u = u[np.sort(np.random.default_rng(m).choice(m, _ORTH_MAX, replace=False))]
        m = _ORTH_MAX
    c = np.abs(u @ u.T)
    return float(1.0 - (c.sum() - np.trace(c)) / (m * (m - 1)))


def orthogonality(filters: Any) -> float:
    """``1 - mean |cos|`` over all pairs of distinct (nonzero) filters, in [0, 1].

    Parameters
    ----------
    filters : array_like [N, k, k]
        One layer's filters (finite).

    Returns
    -------
    float
        1: mutually orthogonal filters; 0: all on one line (NaN for fewer than 2).
    """
    return _orth(_flat(filters))


def pca_r2(filters: Any, m: Any = None) -> np.ndarray:
    """Median per-filter R^2 of the best m-dimensional linear basis of the layer.

    Parameters
    ----------
    filters : array_like [N, k, k]
        One layer's filters (finite; constant ones are left out).
    m : int or sequence of int, optional
        Basis dimensions (default 1 .. k*k - 1).

    Returns
    -------
    numpy.ndarray of float [len(m)]
        Median over filters of ``||P_m y_c||^2 / ||y_c||^2`` with ``y_c`` each filter minus
        its mean and ``P_m`` the projection on the top-m right singular vectors of the
        centred filters (NaN when no filter has variance).
    """
    flat = _flat(filters)
    p = flat.shape[1]
    dims = np.arange(1, p) if m is None else np.atleast_1d(np.asarray(m, dtype=np.int64))
    if dims.size and (dims.min() < 1 or dims.max() > p):
        raise ValueError(f"m must lie in 1..{p}; got {dims.tolist()}")
    yc = flat - flat.mean(1, keepdims=True)
    tss = (yc * yc).sum(1)
    yc = yc[tss > 1e-24 * max(float(tss.max(initial=0.0)), 1e-300)]
    if not len(yc):
        return np.full(dims.size, np.nan)
    _, _, vt = np.linalg.svd(yc, full_matrices=False)
    coef2 = (yc @ vt.T) ** 2  # [n, r]
    cum = np.cumsum(coef2, axis=1) / (yc * yc).sum(1, keepdims=True)
    cols = np.minimum(dims, cum.shape[1]) - 1
    return np.median(cum[:, cols], axis=0)


def layer_population(filters: Any, *, seed: int = 0, n_null: int = _N_NULL) -> dict[str, Any]:
    """All per-layer population measures of one layer's filters (see the module docstring).

    Parameters
    ----------
    filters : array_like [N, k, k]
        The layer's finite filters (zero ones included: they count in the sparsity).
    seed, n_null : int
        Seed and size of the i.i.d. null behind the thresholds.

    Returns
    -------
    dict
        ``n``, ``kernel_size``, ``sparsity``, ``variance_entropy``, ``entropy_threshold``,
        ``random_like`` (entropy at or above the threshold), ``orthogonality``,
        ``orthogonality_iid``, ``pca_r2`` (list for m = 1 .. k*k - 1) and ``pca_bound``
        (``{family: R^2 at m = FAMILY_DIMENSIONS[family]}``). Statistics that need two
        filters are None for a layer of one.
    """
    flat = _flat(filters)
    n, p = flat.shape
    k = int(round(math.sqrt(p)))

    def num(v: float) -> float | None:
        return None if v is None or not math.isfinite(v) else float(v)

    out: dict[str, Any] = {"n": int(n), "kernel_size": k, "sparsity": sparsity(filters)}
    if n >= 2:
        thr, orth_iid = _iid_reference(int(n), k, int(n_null), int(seed))
        ent = _entropy(flat)
    else:
        thr = orth_iid = ent = math.nan
    curve = pca_r2(filters) if n else np.zeros(0)
    out.update(
        variance_entropy=num(ent),
        entropy_threshold=num(thr),
        random_like=bool(ent >= thr) if math.isfinite(ent) and math.isfinite(thr) else None,
        orthogonality=num(_orth(flat)),
        orthogonality_iid=num(orth_iid),
        pca_r2=[num(v) for v in curve.tolist()],
        pca_bound={
            fam: num(curve[min(m, p - 1) - 1]) if curve.size else None
            for fam, m in FAMILY_DIMENSIONS.items()
        },
    )
    return out


def _shapes(flat: np.ndarray) -> np.ndarray:
    yc = flat - flat.mean(1, keepdims=True)
    norm = np.linalg.norm(yc, axis=1)
    keep = norm > 1e-12 * max(float(norm.max(initial=0.0)), 1e-300)
    return yc[keep] / norm[keep, None]


def _w1(a: np.ndarray, b: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Wasserstein-1 per column by quantile functions on the grid ``q``: [..., c]."""
    return np.abs(np.quantile(a, q, axis=-2) - np.quantile(b, q, axis=-2)).mean(axis=-2)


def drift(
    a: Any,
    b: Any,
    *,
    components: int | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Distribution drift between two sets of filters of the same size (layers, networks).

    Parameters
    ----------
    a, b : array_like [Na, k, k], [Nb, k, k]
        The two sets (finite; zero and constant filters are left out), Na, Nb >= 2.
    components : int, optional
        Principal components compared (default: those holding 95 % of the pooled variance,
        at most 16).
    n_boot : int
        Bootstrap resamples of the distance interval (0: none).
    level : float
        Coverage of the interval.
    seed : int
        Seed of the bootstrap and the permutation reference.

    Returns
    -------
    dict
        ``components``, ``weights`` (variance share of each), ``sym_kl`` (weighted mean
        symmetric KL of the coefficient histograms), ``sym_kl_per_component``,
        ``distance`` (weighted mean Wasserstein-1 of the coefficients), ``distance_ci``
        ([low, high] or None), ``distance_null`` (median over 20 random splits of the pooled
        filters into sets of sizes Na and Nb: the distance expected with no drift), ``n_a``,
        ``n_b``.
    """
    fa, fb = _shapes(_flat(a)), _shapes(_flat(b))
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(
            f"a and b must hold filters of the same size; got {fa.shape[1]} and {fb.shape[1]} taps"
        )
    if len(fa) < 2 or len(fb) < 2:
        raise ValueError("drift needs at least 2 non-constant filters in each set")
    pooled = np.concatenate([fa, fb])
    mu = pooled.mean(0)
    _, s, vt = np.linalg.svd(pooled - mu, full_matrices=False)
    var = s**2 / (s**2).sum()
    if components is None:
        components = int(min(16, np.searchsorted(np.cumsum(var), 0.95) + 1))
    c = max(1, min(int(components), len(var)))
    w = var[:c] / var[:c].sum()
    ca, cb = (fa - mu) @ vt[:c].T, (fb - mu) @ vt[:c].T
    kl = []
    for j in range(c):
        lo, hi = min(ca[:, j].min(), cb[:, j].min()), max(ca[:, j].max(), cb[:, j].max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, _BINS + 1)
        pa = np.histogram(ca[:, j], edges)[0] + 0.5
        pb = np.histogram(cb[:, j], edges)[0] + 0.5
        pa, pb = pa / pa.sum(), pb / pb.sum()
        kl.append(float(((pa - pb) * np.log(pa / pb)).sum()))
    q = np.linspace(0.0, 1.0, 101)
    dist = float(_w1(ca, cb, q) @ w)
    rng = np.random.default_rng(seed)
    ci = None
    if n_boot:
        boots = [
            float(
                _w1(ca[rng.integers(0, len(ca), len(ca))], cb[rng.integers(0, len(cb), len(cb))], q)
                @ w
            )
            for _ in range(int(n_boot))
        ]
        ci = np.percentile(boots, [50 * (1 - level), 50 * (1 + level)]).tolist()
    allc = np.concatenate([ca, cb])
    perm = []
    for _ in range(20):
        idx = rng.permutation(len(allc))
        perm.append(float(_w1(allc[idx[: len(ca)]], allc[idx[len(ca) :]], q) @ w))
    return {
        "components": c,
        "weights": w.tolist(),
        "sym_kl": float(np.dot(w, kl)),
        "sym_kl_per_component": kl,
        "distance": dist,
        "distance_ci": ci,
        "distance_null": float(np.median(perm)),
        "n_a": int(len(fa)),
        "n_b": int(len(fb)),
    }
