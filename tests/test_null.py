"""Null models: matched structureless filters and the learned-minus-null contrast."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scalespace_mk.analysis.census import null_r2
from scalespace_mk.analysis.null import (
    R2_GOOD,
    _boot_median,
    derive_seed,
    null_contrast,
    null_filters,
    null_kinds,
    r2_summary,
)


@settings(max_examples=30, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 4), st.sampled_from([3, 5, 7])).map(lambda t: (t[0], t[1], t[1])),
        elements=st.floats(-1e3, 1e3, allow_nan=False),
    ),
    st.integers(0, 2**32),
)
def test_phase_null_keeps_the_power_spectrum(y, seed):
    z = null_filters(y, "phase", seed)
    assert z.shape == y.shape and z.dtype == np.float64 and np.isrealobj(z)
    # scipy's FFT as the independent reference: same magnitude at every frequency
    np.testing.assert_allclose(
        np.abs(scipy.fft.fft2(z)), np.abs(scipy.fft.fft2(y)), atol=1e-9 * (1 + np.abs(y).max())
    )
    # hence the same sum of squares (Parseval)
    np.testing.assert_allclose(
        (z**2).sum(axis=(1, 2)), (y**2).sum(axis=(1, 2)), rtol=1e-9, atol=1e-9
    )


def test_phase_null_randomises_the_phases():
    y = np.random.default_rng(0).normal(size=(200, 5, 5))
    z = null_filters(y, "phase", 3)
    # the phases are new: the null is not the filter (nor its negative or a mirror)
    corr = np.einsum("nij,nij->n", y, z) / np.einsum("nij,nij->n", y, y)
    assert np.median(np.abs(corr)) < 0.5
    # a smooth filter stays smooth: same share of energy at the lowest frequencies
    g = np.exp(-((np.arange(7) - 3.0) ** 2) / 4.0)
    smooth = np.outer(g, g)[None].repeat(50, axis=0)
    zs = null_filters(smooth, "phase", 1)
    low = np.abs(np.fft.fft2(zs))[:, :2, :2].sum() / np.abs(np.fft.fft2(zs)).sum()
    low_y = np.abs(np.fft.fft2(smooth))[:, :2, :2].sum() / np.abs(np.fft.fft2(smooth)).sum()
    assert low == pytest.approx(low_y, rel=1e-9)


def test_iid_null_is_seeded_gaussian():
    y = np.zeros((4000, 3, 3))  # only the shape is used
    z = null_filters(y, "iid", 5)
    assert z.shape == y.shape
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.02
    np.testing.assert_array_equal(z, null_filters(y, "iid", 5))
    assert not np.array_equal(z, null_filters(y, "iid", 6))
    # the two kinds draw from different streams
    yy = np.random.default_rng(0).normal(size=(20, 3, 3))
    phase = null_filters(yy, "phase", 5)
    assert np.array_equal(phase, null_filters(yy, "phase", 5))
    assert not np.allclose(phase, null_filters(yy, "iid", 5))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros((2, 3, 3)), "gauss", 0), "kind must be one of"),
        ((np.zeros((2, 3, 3)), "iid", -1), "seed must be an integer"),
        ((np.zeros((2, 3, 3)), "iid", 1.5), "seed must be an integer"),
        ((np.zeros((3, 3)), "iid", 0), r"shape \[N, k, k\]"),
        ((np.full((2, 3, 3), np.nan), "phase", 0), "NaN"),
    ],
)
def test_null_filters_errors(args, match):
    with pytest.raises(ValueError, match=match):
        null_filters(*args)


def test_null_kinds():
    assert null_kinds("both") == ("iid", "phase")
    assert null_kinds("none") == () and null_kinds(None) == ()
    assert null_kinds("phase") == ("phase",)
    with pytest.raises(ValueError, match="null must be one of"):
        null_kinds("all")


def test_derive_seed_is_stable_per_key():
    assert derive_seed(0, "a.weight") == derive_seed(0, "a.weight")
    assert derive_seed(0, "a.weight") != derive_seed(0, "b.weight")
    assert derive_seed(0, "a.weight") != derive_seed(1, "a.weight")
    assert 0 <= derive_seed(7, "x") < 2**63


@pytest.mark.parametrize("n", [5, 6, 40])
def test_boot_median_matches_resampling(n):
    """The O(1) draw of a resample's median has the distribution of brute-force resampling."""
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    fast = _boot_median(x, 40000, np.random.default_rng(1))
    idx = np.random.default_rng(2).integers(0, n, size=(40000, n))
    slow = np.median(x[idx], axis=1)
    qs = (5, 25, 50, 75, 95)
    spread = np.percentile(slow, 95) - np.percentile(slow, 5)
    np.testing.assert_allclose(np.percentile(fast, qs), np.percentile(slow, qs), atol=0.05 * spread)
    assert fast.mean() == pytest.approx(slow.mean(), abs=0.02 * spread)


def test_null_contrast_values():
    rng = np.random.default_rng(0)
    learned = np.clip(rng.normal(0.85, 0.1, 2000), 0, 1)
    null = np.clip(rng.normal(0.45, 0.15, 2000), 0, 1)
    learned[:10] = np.nan  # filters not fitted are left out
    c = null_contrast(learned, null, seed=1)
    x = learned[np.isfinite(learned)]
    assert c["n"] == 1990 and c["null_n"] == 2000
    assert c["median_r2"] == pytest.approx(np.median(x))
    assert c["null_median_r2"] == pytest.approx(np.median(null))
    assert c["median_diff"] == pytest.approx(np.median(x) - np.median(null))
    assert c["share_r2_gt_0_8"] == pytest.approx(np.mean(x > R2_GOOD))
    assert c["share_diff"] == pytest.approx(np.mean(x > 0.8) - np.mean(null > 0.8))
    lo, hi = c["median_diff_ci"]
    assert lo < c["median_diff"] < hi and hi - lo < 0.05
    lo, hi = c["share_diff_ci"]
    assert lo < c["share_diff"] < hi
    assert null_contrast(learned, null, seed=1) == c  # seeded
    empty = null_contrast([], null)
    assert empty["median_r2"] is None and empty["median_diff"] is None
    assert null_contrast(x, null, n_boot=0)["median_diff_ci"] is None
    with pytest.raises(ValueError, match="n_boot"):
        null_contrast(x, null, n_boot=-1)
    with pytest.raises(ValueError, match="level"):
        null_contrast(x, null, level=1.5)
    assert r2_summary([np.nan]) == {"n": 0, "median_r2": None, "share_r2_gt_0_8": None}


def test_null_r2_fits_null_filters_like_the_learned():
    from scalespace_mk.analysis.census import census

    y = np.random.default_rng(3).normal(size=(30, 5, 5))
    got = null_r2(y, ("iid", "phase"), 4, types=(5, 8))
    for kind in ("iid", "phase"):
        ref = census(null_filters(y, kind, 4), types=(5, 8)).r2
        np.testing.assert_array_equal(got[kind], ref)
    assert null_r2(y[:0], ("iid",), 0)["iid"].shape == (0,)
