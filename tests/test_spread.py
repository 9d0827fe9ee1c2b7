"""Tests of scalespace_mk.analysis.spread (SPEC §6) and the ``spread`` command."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scalespace_mk.analysis.filters import (
    CACHE_ENV,
    OFFLINE_ENV,
    load_filters,
    save_filters,
)
from scalespace_mk.analysis.normalize import normalize_filters
from scalespace_mk.analysis.spread import (
    centred_coordinates,
    reference_weights,
    spread,
    weighted_spread,
)
from scalespace_mk.analysis.types import DEFAULT_SIGMA_REF, resolve_filter_types
from scalespace_mk.cli.spread import add_parser
from scalespace_mk.scalespace import models

SHARED = Path(__file__).resolve().parents[1] / "scalespace_mk" / "data_files"  # shipped copy


@pytest.fixture(scope="module")
def published() -> np.ndarray:
    from scalespace_mk.analysis.filters import read_filter_text

    return read_filter_text(SHARED / "8Filters.txt")


@pytest.fixture
def data_env(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(OFFLINE_ENV, "1")


def _loop_spread(h: np.ndarray, weights: np.ndarray | None = None):
    """Independent reference: explicit Python loops over filters and pixels."""
    n, k, _ = h.shape
    m = (k - 1) // 2
    means, covs, l1s = [], [], []
    for i in range(n):
        s = sx = sy = sxx = syy = sxy = 0.0
        for r in range(k):
            for c in range(k):
                w = abs(h[i, r, c]) * (1.0 if weights is None else weights[i, r, c])
                x, y = c - m, m - r
                s += w
                sx += w * x
                sy += w * y
                sxx += w * x * x
                syy += w * y * y
                sxy += w * x * y
        mx, my = sx / s, sy / s
        vxx, vyy, vxy = sxx / s - mx * mx, syy / s - my * my, sxy / s - mx * my
        means.append([mx, my])
        covs.append([[vxx, vxy], [vxy, vyy]])
        l1s.append(s)
    return np.array(means), np.array(covs), np.array(l1s)


def test_centred_coordinates():
    x, y = centred_coordinates(7)
    assert x[0].tolist() == [-3, -2, -1, 0, 1, 2, 3]
    assert y[:, 0].tolist() == [3, 2, 1, 0, -1, -2, -3]  # row 0 is the top, y up
    assert (x[:, 4] == 1).all() and (y[5] == -2).all()
    with pytest.raises(ValueError, match="odd"):
        centred_coordinates(6)


@pytest.mark.parametrize("k", [3, 5, 7, 9])
def test_against_explicit_loop(k):
    rng = np.random.default_rng(k)
    h = rng.normal(size=(5, k, k))
    weights = rng.uniform(0.0, 2.0, size=(5, k, k))
    for wts in (None, weights):
        res = spread(h, weights=wts)
        mean, cov, l1 = _loop_spread(h, wts)
        np.testing.assert_allclose(res.mean, mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.cov, cov, rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.l1, l1, rtol=1e-13)
        rho = np.abs(cov[:, 0, 1]) / np.sqrt(cov[:, 0, 0] * cov[:, 1, 1])
        np.testing.assert_allclose(res.separability, rho, rtol=0, atol=1e-12)
    # a [k, k] weight broadcasts over the filters
    np.testing.assert_allclose(
        spread(h, weights=weights[0]).cov, _loop_spread(h, np.broadcast_to(weights[0], h.shape))[1]
    )


def test_documented_example_and_torch_input():
    h = np.zeros((7, 7))
    h[3, 4] = 1.0  # (x, y) = (1, 0)
    h[2, 4] = -1.0  # (x, y) = (1, 1): one row up
    res = spread(torch.from_numpy(h))
    assert res.mean.tolist() == [[1.0, 0.5]]
    assert res.cov.tolist() == [[[0.0, 0.0], [0.0, 0.25]]]
    assert res.l1.tolist() == [2.0]
    assert res.separability.tolist() == [0.0]  # V_xx = 0: defined as 0
    assert len(res) == 1


def test_diagonal_line_is_fully_correlated():
    h = np.eye(5)[None] * np.array([1.0, -2.0, 3.0, -1.0, 0.5])  # main diagonal: y = -x
    res = spread(h)
    assert res.cov[0, 0, 1] < 0
    assert res.separability[0] == pytest.approx(1.0, abs=1e-12)


_inner = st.integers(2, 5).flatmap(
    lambda n: arrays(
        np.float64, (n, n), elements=st.floats(-1, 1, allow_nan=False, allow_subnormal=False)
    )
)


@settings(max_examples=60, deadline=None)
@given(inner=_inner, dr=st.integers(-1, 1), dc=st.integers(-1, 1))
def test_shift_moves_the_mean_by_one(inner, dr, dc):
    assume(np.abs(inner).sum() > 1e-3)
    n = inner.shape[0]
    h = np.zeros((n + 2, n + 2))
    if n % 2 == 0:  # make the grid odd
        h = np.zeros((n + 3, n + 3))
    h[1 : n + 1, 1 : n + 1] = inner
    moved = np.roll(h, (dr, dc), axis=(0, 1))  # the zero border keeps the content inside
    a, b = spread(h), spread(moved)
    # x to the right with the column; y UP: a smaller row index (dr = -1) increases y
    np.testing.assert_allclose(b.mean[0] - a.mean[0], [dc, -dr], rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.cov, a.cov, rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    u=arrays(np.float64, 7, elements=st.floats(-1, 1, allow_subnormal=False)),
    v=arrays(np.float64, 7, elements=st.floats(-1, 1, allow_subnormal=False)),
    a=arrays(np.float64, 7, elements=st.floats(0, 1, allow_subnormal=False)),
    b=arrays(np.float64, 7, elements=st.floats(0, 1, allow_subnormal=False)),
)
def test_separable_outer_product_has_zero_vxy(u, v, a, b):
    h = np.outer(u, v)
    assume(np.abs(h).sum() > 1e-3)
    res = spread(h)
    assert abs(res.cov[0, 0, 1]) <= 1e-12
    assert res.separability[0] <= 1e-10 or res.cov[0, 0, 0] * res.cov[0, 1, 1] < 1e-12
    # a separable weight keeps the weighted product separable
    w = np.outer(a, b)
    assume((np.abs(h) * w).sum() > 1e-3)
    assert abs(spread(h, weights=w).cov[0, 0, 1]) <= 1e-12


def test_published_half_grid_offsets(published):
    """SPEC §6: |M| of filters 1-4 is 0.56-0.69 along one axis and < 0.1 along the other."""
    mean = spread(published).mean
    # (axis of the offset, its sign): 1 at y = -1/2, 2 at x = +1/2, 3 at y = +1/2, 4 at x = -1/2
    expect = {0: (1, -1), 1: (0, +1), 2: (1, +1), 3: (0, -1)}
    for i, (axis, sign) in expect.items():
        assert 0.555 <= sign * mean[i, axis] <= 0.695, (i + 1, mean[i])
        assert abs(mean[i, 1 - axis]) < 0.1, (i + 1, mean[i])
    # filters 5-8 are centred
    assert np.abs(mean[4:]).max() < 0.1
    offsets = mean[np.arange(4), [1, 0, 1, 0]]
    np.testing.assert_allclose(offsets, [-0.60215, 0.55904, 0.69323, -0.57851], atol=1e-5)


def test_published_are_nearly_separable(published):
    res = spread(published)
    assert res.separability.max() < 0.05
    assert np.abs(res.cov[:, 0, 1]).max() < 0.1


def test_weight_errors():
    h = np.ones((2, 5, 5))
    with pytest.raises(ValueError, match="broadcast"):
        spread(h, weights=np.ones((3, 3)))
    with pytest.raises(ValueError, match=">= 0"):
        spread(h, weights=-np.ones((5, 5)))
    with pytest.raises(ValueError, match=">= 0"):
        spread(h, weights=np.full((5, 5), np.nan))
    w = np.ones((2, 5, 5))
    w[1] = 0.0
    with pytest.raises(ValueError, match="filter 1 has zero total weight"):
        spread(h, weights=w)
    with pytest.raises(ValueError, match="identically zero"):
        spread(np.zeros((5, 5)))
    with pytest.raises(TypeError, match="weights"):
        spread(h, weights="heavy")


def test_resolve_filter_types():
    assert resolve_filter_types(None, 8).tolist() == list(range(1, 9))
    assert resolve_filter_types(7, 3).tolist() == [7, 7, 7]
    assert resolve_filter_types(np.array([1.0, 8.0]), 2).tolist() == [1, 8]
    with pytest.raises(ValueError, match="required unless there are exactly 8"):
        resolve_filter_types(None, 3)
    with pytest.raises(ValueError, match="1..8"):
        resolve_filter_types([0, 9], 2)
    with pytest.raises(ValueError, match="one type per filter"):
        resolve_filter_types([1, 2, 3], 2)
    with pytest.raises(ValueError, match="integers"):
        resolve_filter_types([1.5], 1)


# ------------------------------------------------------------------ weighted measures


def test_reference_weights_follow_spec():
    w = reference_weights(None)
    assert w.shape == (8, 7, 7)
    for t in (1, 2, 3, 4, 5, 6, 8):
        g = models.masterkey_model(t, 1.0, 1.0, size=7, mode="paper")
        np.testing.assert_array_equal(w[t - 1], np.abs(g))
    # type 7: the weight is the Gaussian T at 1/sqrt(2), not the mk7 model
    assert DEFAULT_SIGMA_REF[7] == 1 / math.sqrt(2)
    t7 = models.gaussian_2d(1 / math.sqrt(2), 1 / math.sqrt(2), size=7, mode="paper")
    np.testing.assert_array_equal(w[6], np.abs(t7))
    assert (w[6] >= 0).all() and w[6][3, 3] == w[6].max()
    # an explicit sigma_ref applies to every type, including 7
    w2 = reference_weights([5, 7], 0.8, size=5)
    np.testing.assert_array_equal(
        w2[0], np.abs(models.masterkey_model(5, 0.8, 0.8, size=5, mode="paper"))
    )
    np.testing.assert_array_equal(w2[1], np.abs(models.gaussian_2d(0.8, 0.8, size=5)))
    # per-filter sigmas and repeated types
    w3 = reference_weights([1, 1, 1], [0.5, 1.0, 0.5])
    np.testing.assert_array_equal(w3[0], w3[2])
    np.testing.assert_array_equal(w3[1], w[0])
    assert not np.array_equal(w3[0], w3[1])
    with pytest.raises(ValueError, match="sigma_ref"):
        reference_weights([1, 2], [-1.0, 1.0])
    with pytest.raises(ValueError, match="one value per filter"):
        reference_weights([1, 2], [1.0, 1.0, 1.0])


def test_weighted_spread_matches_direct_product(published):
    res = weighted_spread(published)
    weights = np.stack(
        [
            np.abs(
                models.gaussian_2d(1 / math.sqrt(2), size=7)
                if t == 7
                else models.masterkey_model(t, 1.0, 1.0, size=7)
            )
            for t in range(1, 9)
        ]
    )
    mean, cov, l1 = _loop_spread(published, weights)
    np.testing.assert_allclose(res.mean, mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.cov, cov, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.l1, l1, rtol=1e-13)


def test_weighted_spread_normalize_option(published):
    norm = normalize_filters(published).filters
    a = weighted_spread(normalize_filters(published).filters)
    b = weighted_spread(norm)
    np.testing.assert_allclose(a.cov, b.cov, rtol=0, atol=1e-14)
    # rescaling (and the sign flip of 2 and 3) does not change M and V of types 1-6
    raw = weighted_spread(published)
    np.testing.assert_allclose(a.mean[:6], raw.mean[:6], rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.cov[:6], raw.cov[:6], rtol=0, atol=1e-12)
    # but subtracting C changes types 7 and 8
    assert not np.allclose(a.cov[6:], raw.cov[6:], atol=1e-6)


def test_weighted_published_offsets(published):
    mean = weighted_spread(normalize_filters(published).filters).mean
    expect = {0: (1, -1), 1: (0, +1), 2: (1, +1), 3: (0, -1)}
    for i, (axis, sign) in expect.items():
        assert sign * mean[i, axis] > 0.5
        assert abs(mean[i, 1 - axis]) < 0.1


def test_weighted_spread_needs_types_for_other_counts():
    h = np.random.default_rng(0).normal(size=(3, 7, 7))
    with pytest.raises(ValueError, match="filter_types is required"):
        weighted_spread(h)
    res = weighted_spread(h, filter_types=[5, 5, 6], sigma_ref=1.2)
    w = np.abs(models.masterkey_model(5, 1.2, 1.2))
    np.testing.assert_allclose(res.cov[0], spread(h[0], weights=w).cov[0], atol=1e-14)


# ------------------------------------------------------------------ command line


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(argv)
    return args._run(args)


def test_cli_json_raw(data_env, capsys, published):
    assert _main(["spread", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["filters"]
    assert [r["index"] for r in rows] == list(range(1, 9))
    ref = spread(published)
    for i, r in enumerate(rows):
        np.testing.assert_allclose(r["mean"], ref.mean[i], atol=1e-15)
        np.testing.assert_allclose(r["cov"], ref.cov[i], atol=1e-15)
        assert r["cov"][0][1] == r["cov"][1][0]
        assert r["l1"] == pytest.approx(np.abs(published[i]).sum(), rel=1e-14)
    assert out["weighted"] is False


def test_cli_json_weighted(data_env, capsys, published):
    assert _main(["spread", "--weighted", "--json", "--sigma-ref", "0.9"]) == 0
    out = json.loads(capsys.readouterr().out)
    ref = weighted_spread(normalize_filters(published).filters, sigma_ref=0.9)
    for i, r in enumerate(out["filters"]):
        np.testing.assert_allclose(r["mean"], ref.mean[i], atol=1e-15)
        np.testing.assert_allclose(r["cov"], ref.cov[i], atol=1e-15)
        assert r["type"] == i + 1 and r["sigma_ref"] == 0.9


def test_cli_table_and_custom_file(data_env, capsys, tmp_path, published):
    assert _main(["spread"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "m_x" in lines[1] and "V_xy" in lines[1]
    assert len(lines) == 3 + 8
    assert lines[3].split()[0] == "1" and lines[-1].split()[0] == "8"
    save_filters(tmp_path / "two.npy", published[[4, 6]])
    assert _main(["spread", "--filters", str(tmp_path / "two.npy"), "--weighted",
                  "--types", "5,7", "--json"]) == 0  # fmt: skip
    rows = json.loads(capsys.readouterr().out)["filters"]
    assert [r["type"] for r in rows] == [5, 7]
    assert rows[1]["sigma_ref"] == pytest.approx(1 / math.sqrt(2))
    ref = weighted_spread(
        normalize_filters(published[[4, 6]], filter_types=[5, 7]).filters, filter_types=[5, 7]
    )
    np.testing.assert_allclose(rows[1]["cov"], ref.cov[1], atol=1e-15)
    np.testing.assert_allclose(load_filters(tmp_path / "two.npy"), published[[4, 6]])


def test_cli_errors(data_env, capsys, tmp_path):
    assert _main(["spread", "--sigma-ref", "1"]) == 2
    assert "only with --weighted" in capsys.readouterr().err
    assert _main(["spread", "--filters", str(tmp_path / "none.npy")]) == 2
    assert "neither an existing file" in capsys.readouterr().err
    np.save(tmp_path / "three.npy", np.ones((3, 7, 7)))
    assert _main(["spread", "--filters", str(tmp_path / "three.npy"), "--weighted"]) == 2
    assert "--types is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _main(["spread", "--weighted", "--types", "0,9"])
    with pytest.raises(SystemExit):
        _main(["spread", "--weighted", "--sigma-ref", "-1"])
