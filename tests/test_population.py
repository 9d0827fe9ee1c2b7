"""Population measures (analysis/population.py) against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from scalespace_mk.analysis.population import (
    FAMILY_DIMENSIONS,
    drift,
    entropy_threshold,
    layer_population,
    orthogonality,
    pca_r2,
    sparsity,
    variance_entropy,
)


def test_sparsity_counts_filters_below_one_percent_of_the_layer_max():
    y = np.random.default_rng(0).normal(size=(10, 3, 3))
    y[2] = 0.0
    y[5] *= 1e-4  # below 1 % of the layer's largest tap
    assert sparsity(y) == pytest.approx(0.2)
    assert sparsity(np.zeros((4, 3, 3))) == 1.0


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 40), k=st.sampled_from([3, 5, 7]), seed=st.integers(0, 1000))
def test_variance_entropy_matches_scipy(n, k, seed):
    y = np.random.default_rng(seed).normal(size=(n, k, k))
    flat = y.reshape(n, -1)
    s = np.linalg.svd(flat - flat.mean(0), compute_uv=False)
    ref = scipy.stats.entropy(s**2) / math.log(k * k)  # scipy normalises to probabilities
    assert variance_entropy(y) == pytest.approx(ref, abs=1e-9)


def test_entropy_threshold_separates_structure_from_noise():
    rng = np.random.default_rng(1)
    thr = entropy_threshold(200, 3)
    # i.i.d. layers fall at or above the 5 % quantile about 95 % of the time
    hits = [variance_entropy(rng.normal(size=(200, 3, 3))) >= thr for _ in range(200)]
    assert 0.9 <= np.mean(hits) <= 0.99
    # a layer of a few shapes (rank 3) is far below
    basis = rng.normal(size=(3, 9))
    low = (rng.normal(size=(200, 3)) @ basis).reshape(-1, 3, 3)
    assert variance_entropy(low) < 0.6 < thr
    assert entropy_threshold(200, 3) == thr  # computed once, seeded
    with pytest.raises(ValueError, match="n must be"):
        entropy_threshold(1, 3)


def test_orthogonality_and_its_iid_reference():
    rng = np.random.default_rng(2)
    eye = np.eye(9).reshape(9, 3, 3)
    assert orthogonality(eye) == pytest.approx(1.0)
    same = np.repeat(eye[:1], 5, axis=0) * np.arange(1, 6)[:, None, None]
    assert orthogonality(same) == pytest.approx(0.0)
    pop = layer_population(rng.normal(size=(3000, 3, 3)))
    # exact reference for i.i.d. Gaussian filters against a large sample
    assert pop["orthogonality"] == pytest.approx(pop["orthogonality_iid"], abs=0.01)


def test_pca_r2_is_the_best_linear_basis():
    rng = np.random.default_rng(3)
    basis = rng.normal(size=(4, 25))
    y = (rng.normal(size=(300, 4)) @ basis + rng.normal(size=(300, 1))).reshape(-1, 5, 5)
    curve = pca_r2(y)
    assert curve.shape == (24,) and np.all(np.diff(curve) >= -1e-12)
    assert curve[3] == pytest.approx(1.0)  # 4 directions + offset explain everything
    assert curve[2] < 0.99
    # the basis is optimal: no random 4-dimensional basis does better in total
    yc = y.reshape(300, -1) - y.reshape(300, -1).mean(1, keepdims=True)
    q, _ = np.linalg.qr(rng.normal(size=(25, 3)))
    rand = np.median(((yc @ q) ** 2).sum(1) / (yc**2).sum(1))
    assert rand <= pca_r2(y, 3)[0] + 1e-9
    pop = layer_population(y)
    assert pop["pca_bound"]["masterkey"] == pytest.approx(curve[FAMILY_DIMENSIONS["masterkey"] - 1])


def test_drift_zero_for_the_same_population_large_for_a_shift():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(400, 3, 3))
    b = rng.normal(size=(400, 3, 3))
    shifted = rng.normal(size=(400, 3, 3))
    shifted[:, 1, 1] += 3.0
    same = drift(a, b, seed=1)
    far = drift(a, shifted, seed=1)
    assert same["sym_kl"] < far["sym_kl"] and same["distance"] < far["distance"]
    # no drift: within the permutation reference; a shift: far beyond, interval excludes it
    assert same["distance"] < 2 * same["distance_null"]
    assert far["distance_ci"][0] > 2 * far["distance_null"]
    ident = drift(a, a)
    assert ident["sym_kl"] == 0.0 and ident["distance"] == 0.0
    # invariant to gain and offset per filter (shape only)
    again = drift(a * 3.0 + 1.0, shifted, seed=1)
    assert again["sym_kl"] == pytest.approx(far["sym_kl"], rel=1e-9)
    with pytest.raises(ValueError, match="same size"):
        drift(a, rng.normal(size=(10, 5, 5)))


def test_layer_population_of_one_filter_is_defined():
    pop = layer_population(np.ones((1, 3, 3)) * np.arange(9).reshape(3, 3))
    assert pop["variance_entropy"] is None and pop["random_like"] is None
    with pytest.raises(ValueError, match="NaN"):
        layer_population(np.full((2, 3, 3), np.nan))
