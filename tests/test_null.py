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
        ((np.ones((1, 3, 3)), "covariance", 0), "at least 2 filters"),
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
    assert null_kinds("both") == ("iid", "position")
    assert null_kinds("none") == () and null_kinds(None) == ()
    assert null_kinds("phase") == ("position",)  # the old name, reported by the honest one
    assert null_kinds("default") == ("iid", "shape", "covariance")
    assert null_kinds("all") == ("iid", "position", "shape", "covariance")
    assert null_kinds("covariance,iid") == ("iid", "covariance")
    with pytest.raises(ValueError, match="null must be one of"):
        null_kinds("gauss")


def test_cli_reads_the_null_names_from_the_source():
    from scalespace_mk.analysis import null
    from scalespace_mk.cli._args import null_arg, source_constant

    assert source_constant("analysis.null", "NULL_KINDS") == null.NULL_KINDS
    assert set(source_constant("analysis.null", "NULL_ALIASES")) == set(null.NULL_ALIASES)
    assert set(source_constant("analysis.null", "NULL_SETS")) == set(null.NULL_SETS)
    assert null_arg("phase,shape") == "phase,shape"
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="null kinds"):
        null_arg("gauss")


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


# ----------------------------------------------------------------- what each null keeps


@settings(max_examples=30, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 4), st.sampled_from([3, 5, 7])).map(lambda t: (t[0], t[1], t[1])),
        elements=st.floats(-1e3, 1e3, allow_nan=False),
    ),
    st.integers(0, 2**32),
)
def test_shape_null_keeps_spectrum_and_centring(y, seed):
    """The shape null keeps |F| exactly and puts every filter's largest |tap| at the centre."""
    z = null_filters(y, "shape", seed)
    k = y.shape[1]
    np.testing.assert_allclose(
        np.abs(scipy.fft.fft2(z)), np.abs(scipy.fft.fft2(y)), atol=1e-9 * (1 + np.abs(y).max())
    )
    # centred: no tap is larger in size than the centre one
    centre = np.abs(z[:, k // 2, k // 2])
    assert np.all(np.abs(z).reshape(len(z), -1).max(1) <= centre + 1e-9 * (1 + np.abs(y).max()))
    # it is the position null circularly shifted
    p = null_filters(y, "position", seed)
    for zi, pi in zip(z, p, strict=True):
        assert any(
            np.allclose(zi, np.roll(pi, (a, b), axis=(0, 1))) for a in range(k) for b in range(k)
        )


def test_position_null_is_the_old_phase_null_and_not_centred():
    y = np.random.default_rng(0).normal(size=(300, 3, 3))
    y[:, 1, 1] += 4.0  # centred learned-like filters
    np.testing.assert_array_equal(null_filters(y, "phase", 2), null_filters(y, "position", 2))
    z = null_filters(y, "position", 2)
    at_centre = np.mean(np.abs(z).reshape(300, -1).argmax(1) == 4)
    assert at_centre < 0.4  # position randomised: the peak is no longer at the centre
    s = null_filters(y, "shape", 2)
    assert np.mean(np.abs(s).reshape(300, -1).argmax(1) == 4) == 1.0
    # shape is random beyond spectrum and centring: not the filter itself
    corr = np.einsum(
        "nij,nij->n", y - y.mean((1, 2), keepdims=True), s - s.mean((1, 2), keepdims=True)
    )
    assert np.median(np.abs(corr) / np.einsum("nij,nij->n", y, y)) < 0.9


def test_covariance_null_keeps_mean_and_covariance():
    """Gaussian filters with the group's mean and covariance: exact in expectation, within
    sampling error for N filters; randomises which filter is which."""
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(4, 9))
    y = (rng.normal(size=(4000, 4)) @ basis + np.linspace(0, 1, 9)).reshape(-1, 3, 3)
    z = null_filters(y, "covariance", 7)
    fy, fz = y.reshape(len(y), -1), z.reshape(len(z), -1)
    scale = np.abs(np.cov(fy.T)).max()
    np.testing.assert_allclose(fz.mean(0), fy.mean(0), atol=0.1 * np.sqrt(scale))
    np.testing.assert_allclose(np.cov(fz.T), np.cov(fy.T), atol=0.1 * scale)
    # it stays in the span of the population (rank 4 around the mean) ...
    sv = np.linalg.svd(fz - fy.mean(0), compute_uv=False)
    assert sv[4] < 1e-8 * sv[0]
    # ... but the filters are new ones (not a permutation of the learned)
    assert np.abs(np.corrcoef(fy[:, 0], fz[:, 0])[0, 1]) < 0.1
    np.testing.assert_array_equal(z, null_filters(y, "covariance", 7))


def test_ceilings_are_computed_not_typed():
    """The ceiling is the census of the null of ideal filters: recompute it independently."""
    from scalespace_mk.analysis.ceiling import gap_share, ideal_filters, null_ceiling
    from scalespace_mk.analysis.census import census

    c = null_ceiling(5, "phase", n=64, seed=3)
    ideal, labels = ideal_filters(5, 64, seed=3)
    assert np.median(census(ideal).r2) == pytest.approx(c["ideal_median_r2"], abs=1e-12)
    again = np.median(census(null_filters(ideal, "position", 3)).r2)
    assert c["ceiling_median_r2"] == pytest.approx(again, abs=1e-12)
    assert c["kind"] == "position" and c["attainable_gap"] == pytest.approx(
        c["ideal_median_r2"] - c["ceiling_median_r2"]
    )
    assert sorted(set(labels)) == list(range(1, 9))
    assert gap_share(0.9, 0.5, {"attainable_gap": 0.8}) == pytest.approx(0.5)
    assert gap_share(None, 0.5, {"attainable_gap": 0.8}) is None
    assert gap_share(0.9, 0.5, {"attainable_gap": 0.0}) is None
    # ideal filters beat their own nulls: the floor's ceiling lies below the position one
    iid = null_ceiling(5, "iid", n=64, seed=3)
    assert iid["ceiling_median_r2"] < c["ceiling_median_r2"] < 1.0


def test_matched_ceiling_is_the_null_of_the_fitted_models():
    """The ceiling analyze reports: the same null (same seed) of the ideal versions a g + b."""
    from scalespace_mk.analysis.ceiling import fitted_models, matched_ceiling
    from scalespace_mk.analysis.census import census

    rng = np.random.default_rng(5)
    y = rng.normal(size=(60, 5, 5))
    res = census(y)
    models = fitted_models(res, 5)
    # the models are the fits: explained exactly, and y's residual is what is left over
    np.testing.assert_allclose(census(models).r2, 1.0, atol=1e-7)
    resid = ((y - models) ** 2).sum((1, 2))
    np.testing.assert_allclose(resid, res.rss, rtol=1e-6)
    z = matched_ceiling(models, ("iid", "shape"), 3)
    # the iid null ignores the filters: its ceiling is the learned filters' own iid null
    np.testing.assert_array_equal(z["iid"], null_r2(y, ("iid",), 3)["iid"])
    np.testing.assert_array_equal(z["shape"], census(null_filters(models, "shape", 3)).r2)
