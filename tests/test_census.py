"""Tests of scalespace_mk.analysis.census (vectorised a*g + b fits) and the ``census`` command."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scalespace_mk.analysis import scale_objectives as objectives_mod
from scalespace_mk.analysis import scale_search as search_mod
from scalespace_mk.analysis.census import (
    ALPHA_RANGE,
    CensusResult,
    census,
    linear_shift,
    reference_fit,
)
from scalespace_mk.analysis.filters import load_filters
from scalespace_mk.analysis.types import parse_model_types
from scalespace_mk.cli import main
from scalespace_mk.scalespace.models import masterkey_model, model_kernel

TYPES = tuple(range(1, 9))


def planted_bank(
    rng: np.random.Generator,
    n: int,
    noise: float,
    *,
    types: tuple = TYPES,
    lo: float = 0.4,
    hi: float = 2.0,
    alpha: tuple[float, float] = (0.2, 2.0),
) -> dict[str, np.ndarray]:
    """Filters ``A (g + noise) + B`` from the models at random scales (g of unit l2 norm)."""
    kind = rng.integers(0, len(types), n)
    sx, sy = rng.uniform(lo, hi, n), rng.uniform(lo, hi, n)
    al = rng.uniform(*alpha, n)
    g = np.empty((n, 7, 7))
    for j, t in enumerate(types):  # one batched model_kernel call per type
        m = kind == j
        if not m.any():
            continue
        if t == 7:
            g[m] = masterkey_model(7, sx[m], alpha=al[m])
            sy[m] = sx[m]
        elif t == "lap":
            g[m] = model_kernel("lap", sx[m])
            sy[m] = sx[m]
        elif isinstance(t, str):
            g[m] = model_kernel(t, sx[m], sy[m])
        else:
            g[m] = masterkey_model(int(t), sx[m], sy[m])
    norm = np.linalg.norm(g.reshape(n, -1), axis=1)
    g /= norm[:, None, None]
    gain = rng.uniform(0.5, 2.0, n) * rng.choice([-1.0, 1.0], n)
    offset = rng.normal(0.0, 0.1, n)
    y = gain[:, None, None] * (g + noise * rng.normal(size=g.shape)) + offset[:, None, None]
    labels = np.array([types[j] for j in kind], dtype=object)
    # "a" is the gain on the model as model_kernel returns it (census reports that one)
    return {"y": y, "type": labels, "sx": sx, "sy": sy, "alpha": al, "a": gain / norm, "b": offset}


@pytest.fixture(scope="module")
def published() -> np.ndarray:
    return load_filters("masterkey")


@pytest.fixture(scope="module")
def noisy() -> tuple[dict[str, np.ndarray], CensusResult]:
    bank = planted_bank(np.random.default_rng(0), 400, 0.01)
    return bank, census(bank["y"])


# --------------------------------------------------------------------------- linear shift


def test_linear_shift_matches_lstsq():
    rng = np.random.default_rng(1)
    y, g = rng.normal(size=(20, 5, 5)), rng.normal(size=(20, 5, 5))
    s = linear_shift(y, g)
    for i in range(20):
        design = np.stack([g[i].ravel(), np.ones(25)], axis=1)
        (a, b), rss, *_ = np.linalg.lstsq(design, y[i].ravel(), rcond=None)
        tss = ((y[i] - y[i].mean()) ** 2).sum()
        assert s.a[i] == pytest.approx(a, abs=1e-12)
        assert s.b[i] == pytest.approx(b, abs=1e-12)
        assert s.rss[i] == pytest.approx(rss[0], rel=1e-12)
        assert s.r2[i] == pytest.approx(1.0 - rss[0] / tss, abs=1e-12)
        # R^2 is the squared correlation
        assert s.r2[i] == pytest.approx(np.corrcoef(y[i].ravel(), g[i].ravel())[0, 1] ** 2)


def test_linear_shift_exact_and_degenerate_cases():
    g = masterkey_model(5, 1.0, 0.8)
    s = linear_shift(-2.5 * g + 0.3, g)
    assert (s.a, s.b, s.r2) == (pytest.approx(-2.5, abs=1e-13), pytest.approx(0.3), 1.0)
    assert s.rss < 1e-28
    # a constant model explains nothing: a = 0, b = mean(y)
    y = np.random.default_rng(2).normal(size=(7, 7))
    s = linear_shift(y, np.full((7, 7), 3.0))
    assert (s.a, s.r2) == (0.0, 0.0) and s.b == pytest.approx(y.mean(), abs=1e-15)
    # y orthogonal to g (odd in x against even in x): a = 0, R^2 = 0
    s = linear_shift(model_kernel("dx", 1.0), model_kernel("T", 1.0))
    assert abs(s.a) < 1e-15 and s.r2 < 1e-28
    # torch in, torch out
    t = linear_shift(torch.as_tensor(-2.5 * g + 0.3), g)
    assert isinstance(t.a, torch.Tensor) and float(t.a) == pytest.approx(-2.5)


def test_linear_shift_errors():
    with pytest.raises(ValueError, match=r"y\[1\] is constant"):
        linear_shift(np.stack([np.eye(3), np.full((3, 3), 2.0)]), np.eye(3))
    with pytest.raises(ValueError, match="g must have shape"):
        linear_shift(np.eye(3), np.eye(5))
    with pytest.raises(ValueError, match="NaN"):
        linear_shift(np.eye(3), np.full((3, 3), np.nan))


# --------------------------------------------------------------------------- the search


def test_interpolated_objective_equals_exact_models():
    """The tables (1-D factors read off model_kernel, cubic in sigma) give the exact R^2."""
    rng = np.random.default_rng(3)
    y = torch.as_tensor(rng.normal(size=(40, 7, 7))).reshape(40, -1)
    zc = y - y.mean(dim=1, keepdim=True)
    zf = zc / zc.norm(dim=1, keepdim=True)
    types = parse_model_types((1, 2, 3, 4, 5, 6, 7, 8, "dxy", "dyy", "lap"))
    objs = objectives_mod._objectives(
        types, 7, "discgauss", "paper", 1e-8, 3.5, ALPHA_RANGE, torch.device("cpu")
    )
    theta = torch.as_tensor(rng.uniform(0.3, 3.5, (40, 2)))
    for tp, obj in zip(types, objs, strict=True):
        th = theta if obj.dim == 2 else theta[:, :1]
        fast = obj.point(zf.reshape(-1, 7, 7) if obj.dim == 2 else zf, th)
        exact = search_mod._exact(tp, th, y, 7, "discgauss", "paper", 1e-8, ALPHA_RANGE)["r2"]
        np.testing.assert_allclose(fast.numpy(), exact.numpy(), rtol=0, atol=1e-11)


def test_noise_free_recovery_is_exact():
    bank = planted_bank(np.random.default_rng(4), 64, 0.0)
    res = census(bank["y"])
    assert np.all(res.type == bank["type"].astype(np.int64))
    assert res.r2.min() > 1.0 - 1e-12
    np.testing.assert_allclose(res.a, bank["a"], rtol=1e-5)
    np.testing.assert_allclose(res.b, bank["b"], atol=1e-6)
    two = bank["type"] != 7
    np.testing.assert_allclose(res.sigma_x[two], bank["sx"][two], atol=1e-6)
    np.testing.assert_allclose(res.sigma_y[two], bank["sy"][two], atol=1e-6)
    # type 7: sigma and alpha trade off (flat direction when alpha nabla5 T is small), so
    # positions are pinned less tightly than the objective
    seven = ~two
    np.testing.assert_allclose(res.sigma_x[seven], bank["sx"][seven], atol=1e-5)
    np.testing.assert_allclose(res.alpha[seven], bank["alpha"][seven], atol=3e-5)
    assert np.all(np.isnan(res.alpha[two]))


def test_noisy_planted_bank_is_recovered(noisy):
    bank, res = noisy
    truth = bank["type"].astype(np.int64)
    assert np.mean(res.type == truth) > 0.95
    hit = res.type == truth
    err = np.maximum(np.abs(res.sigma_x - bank["sx"]), np.abs(res.sigma_y - bank["sy"]))
    two = hit & (truth != 7)
    assert np.median(err[two]) < 0.03 and np.quantile(err[two], 0.95) < 0.08
    seven = hit & (truth == 7)
    assert np.median(err[seven]) < 0.06
    assert np.median(np.abs(res.a - bank["a"])[hit] / np.abs(bank["a"][hit])) < 0.02
    assert res.r2[hit].min() > 0.95


def test_r2_in_unit_interval_and_consistent(noisy):
    _, res = noisy
    assert np.all((res.r2_all >= 0.0) & (res.r2_all <= 1.0))
    np.testing.assert_allclose(res.r2_all, 1.0 - res.rss_all / res.tss[:, None], atol=1e-12)
    assert np.array_equal(res.r2, res.r2_all.max(axis=1))
    assert np.all(res.sigma_x_all >= 0) and np.all(res.sigma_x_all <= res.sigma_max)


def test_invariant_to_gain_and_offset():
    bank = planted_bank(np.random.default_rng(5), 48, 0.03)
    y = bank["y"]
    r1, r2 = census(y), census(3.0 * y + 0.1)
    assert np.array_equal(r1.best, r2.best)
    # scales agree to the precision of the search (type 7 has a flat sigma-alpha direction)
    np.testing.assert_allclose(r2.sigma_x_all, r1.sigma_x_all, atol=1e-5)
    np.testing.assert_allclose(r2.sigma_y_all, r1.sigma_y_all, atol=1e-5)
    np.testing.assert_allclose(r2.alpha_all, r1.alpha_all, atol=1e-4)
    np.testing.assert_allclose(r2.r2_all, r1.r2_all, atol=1e-10)
    np.testing.assert_allclose(r2.a_all, 3.0 * r1.a_all, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(r2.b_all, 3.0 * r1.b_all + 0.1, atol=1e-7)


@functools.cache
def _property_base() -> tuple[np.ndarray, CensusResult]:
    y = planted_bank(np.random.default_rng(14), 3, 0.05)["y"]
    return y, census(y)


@settings(max_examples=5, deadline=None)
@given(gain=st.floats(-50, 50).filter(lambda v: abs(v) > 1e-3), offset=st.floats(-5, 5))
def test_invariance_property(gain, offset):
    y, r1 = _property_base()
    r2 = census(gain * y + offset)
    assert np.array_equal(r1.best, r2.best)
    np.testing.assert_allclose(r2.r2_all, r1.r2_all, atol=1e-9)
    np.testing.assert_allclose(r2.sigma_x, r1.sigma_x, atol=1e-5)
    np.testing.assert_allclose(r2.a, gain * r1.a, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(r2.b, gain * r1.b + offset, rtol=1e-6, atol=1e-6)


def test_mirror_symmetry_of_half_grid_types():
    """Flipping columns swaps types 2 and 4 (x = +-1/2), rows swap 1 and 3 (y up)."""
    bank = planted_bank(np.random.default_rng(6), 24, 0.02, types=(1, 2, 3, 4))
    y = bank["y"]
    r, rx, ry = census(y), census(y[:, :, ::-1]), census(y[:, ::-1, :])
    swap_x, swap_y = {1: 1, 2: 4, 3: 3, 4: 2}, {1: 3, 2: 2, 3: 1, 4: 4}
    assert [swap_x[t] for t in r.type] == list(rx.type)
    assert [swap_y[t] for t in r.type] == list(ry.type)
    np.testing.assert_allclose(rx.r2, r.r2, atol=1e-10)
    np.testing.assert_allclose(rx.sigma_x, r.sigma_x, atol=1e-6)
    np.testing.assert_allclose(ry.sigma_y, r.sigma_y, atol=1e-6)
    # the flip of a half-grid difference is minus the other one: a changes sign
    xs = np.isin(r.type, (2, 4))
    np.testing.assert_allclose(rx.a[xs], -r.a[xs], rtol=1e-6)


def test_matches_per_filter_scipy():
    """Same objective, per-filter L-BFGS-B: the census residual is never larger."""
    bank = planted_bank(np.random.default_rng(7), 7, 0.05)
    y = np.concatenate([bank["y"], np.random.default_rng(8).normal(size=(2, 7, 7))])
    res = census(y)
    worse = 0
    for i in range(len(y)):
        for j, t in enumerate(res.types):
            ref = reference_fit(y[i], t)
            worse += res.rss_all[i, j] > ref["rss"] + 1e-10 * res.tss[i]
    assert worse <= 0.01 * res.r2_all.size


def test_closed_form_alpha_is_optimal():
    rng = np.random.default_rng(9)
    y = masterkey_model(7, 0.8, alpha=0.6) + 0.05 * rng.normal(size=(7, 7))
    res = census(y, types=(7,))
    sigma, alpha = res.sigma_x[0], res.alpha[0]
    best = linear_shift(y, masterkey_model(7, sigma, alpha=alpha)).r2
    assert best == pytest.approx(res.r2[0], abs=1e-12)
    for a in np.linspace(0.0, 3.0, 61):
        assert linear_shift(y, masterkey_model(7, sigma, alpha=a)).r2 <= best + 1e-12
    # the range is respected: alpha pinned at 0 gives the delta model
    pinned = census(y, types=(7,), alpha_range=(0.0, 0.0))
    assert pinned.alpha[0] == 0.0 and pinned.r2[0] < res.r2[0]


def test_published_filters_are_their_own_type(published):
    res = census(published)
    assert list(res.type) == list(TYPES)
    own = res.r2_all[np.arange(8), np.arange(8)]
    # R^2 of each published filter under its own model, recorded to 1e-3
    expected = [0.719, 0.894, 0.840, 0.824, 0.885, 0.910, 0.995, 0.995]
    np.testing.assert_allclose(own, expected, atol=2e-3)
    # the learned filters 2 and 3 have the opposite sign of the models (SPEC §5)
    assert np.all(res.a[[1, 2]] < 0) and np.all(np.delete(res.a, [1, 2]) > 0)


def test_general_derivative_models():
    types = ("dxx", "dxy", "dyy", "lap")
    bank = planted_bank(np.random.default_rng(10), 40, 0.0, types=types, lo=0.5, hi=1.8)
    res = census(bank["y"], types=types)
    assert list(res.type) == list(bank["type"])
    np.testing.assert_allclose(res.sigma_x, bank["sx"], atol=1e-5)
    np.testing.assert_allclose(res.sigma_y, bank["sy"], atol=1e-5)
    mixed = census(bank["y"][:4], types=(8, "dxx", "mk5"))
    assert mixed.types == (8, "dxx", 5)
    assert mixed.type.dtype == object


def test_orthogonal_filter_gives_zero_fit():
    """A filter odd in x and in y is orthogonal to every master key type at every scale."""
    xs = np.arange(-3, 4, dtype=np.float64)
    y = np.outer(xs, xs) * np.exp(-np.add.outer(xs**2, xs**2) / 4.0) + 0.2
    res = census(y)
    assert np.all(res.r2_all < 1e-25)
    assert np.all(np.abs(res.a_all) < 1e-12)
    np.testing.assert_allclose(res.b_all, 0.2, atol=1e-15)
    assert res.type[0] == 1  # first type on ties, as documented


def test_batching_and_other_kernels():
    bank = planted_bank(np.random.default_rng(11), 30, 0.02)
    whole, parts = census(bank["y"]), census(bank["y"], batch_size=7)
    np.testing.assert_array_equal(whole.best, parts.best)
    np.testing.assert_allclose(whole.r2_all, parts.r2_all, rtol=0, atol=1e-14)
    np.testing.assert_allclose(whole.sigma_x_all, parts.sigma_x_all, rtol=0, atol=1e-5)
    # other discretisations and the full mode: a noise-free model of their own is found
    for method, mode in (("intgauss", "paper"), ("discgauss", "full")):
        g = model_kernel("dx+", 0.9, 1.3, method=method, mode=mode)
        res = census(-g + 0.2, method=method, mode=mode, types=(2, 4, 5))
        assert res.type[0] == 4 and res.r2[0] > 1 - 1e-12
        assert (res.sigma_x[0], res.sigma_y[0]) == (pytest.approx(0.9), pytest.approx(1.3))


def test_larger_filters():
    g = masterkey_model(6, 2.2, 1.7, size=11)
    res = census(4.0 * g - 1.0, types=(1, 5, 6, 8))
    assert res.type[0] == 6 and res.sigma_max == 5.5
    assert res.sigma_x[0] == pytest.approx(2.2, abs=1e-6)
    assert res.sigma_y[0] == pytest.approx(1.7, abs=1e-6)


def test_records_and_counts():
    bank = planted_bank(np.random.default_rng(12), 12, 0.02)
    res = census(bank["y"])
    recs = json.loads(json.dumps(res.records()))
    assert [r["index"] for r in recs] == list(range(12))
    for r, t, a in zip(recs, res.type, res.alpha, strict=True):
        assert set(r) == {"index", "type", "sigma_x", "sigma_y", "alpha", "a", "b", "r2", "reason"}
        assert r["reason"] is None
        assert r["type"] == t
        assert (r["alpha"] is None) == (t != 7)
        if t == 7:
            assert r["alpha"] == a and r["sigma_x"] == r["sigma_y"]
    assert sum(res.counts().values()) == 12 and len(res) == 12


@pytest.mark.parametrize(
    ("filters", "kwargs", "match"),
    [
        (np.full((2, 7, 7), np.nan), {"on_invalid": "raise"}, r"filters\[0\] holds NaN"),
        (np.zeros((2, 7, 7)), {"on_invalid": "raise"}, "identically zero"),
        (np.eye(7), {"on_invalid": "skip"}, "on_invalid must be one of"),
        (np.full((2, 6, 6), np.nan), {}, "odd size"),
        (np.ones((3, 7, 5)), {}, "shape"),
        (np.ones((6, 6)), {}, "odd size"),
        (np.ones((4, 4, 4, 4)), {}, "shape"),
        (
            np.stack([np.eye(7), np.full((7, 7), 0.5)]),
            {"on_invalid": "raise"},
            r"filters\[1\] is constant",
        ),
        (np.eye(7), {"types": (9,)}, "unknown type 9"),
        (np.eye(7), {"types": ("foo",)}, "unknown type 'foo'"),
        (np.eye(7), {"types": (True,)}, "types must hold"),
        (np.eye(7), {"types": ()}, "types is empty"),
        (np.eye(7), {"types": (5, "mk5")}, "listed twice"),
        (np.eye(7), {"alpha_range": (2.0, 1.0)}, "alpha_range"),
        (np.eye(7), {"sigma_max": -1.0}, "sigma_max"),
        (np.eye(7), {"size": 5}, "size must equal"),
        (np.eye(7), {"batch_size": 0}, "batch_size"),
        (np.eye(7), {"method": "gauss"}, "method must be one of"),
        (np.eye(7), {"device": "tpu:x"}, "device"),
        (np.eye(7), {"num_threads": 0}, "num_threads"),
    ],
)
def test_bad_input(filters, kwargs, match):
    with pytest.raises(ValueError, match=match):
        census(filters, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    bank = planted_bank(np.random.default_rng(13), 200, 0.02)
    cpu, gpu = census(bank["y"]), census(bank["y"], device="cuda")
    assert np.mean(cpu.best == gpu.best) > 0.99
    np.testing.assert_allclose(gpu.r2, cpu.r2, atol=1e-9)
    same = cpu.best == gpu.best
    np.testing.assert_allclose(gpu.sigma_x[same], cpu.sigma_x[same], atol=1e-5)


# --------------------------------------------------------------------------- plot and CLI


def test_plot_census(tmp_path, noisy):
    from scalespace_mk.plot import plot_census

    _, res = noisy
    fig = plot_census(res, path=tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert len(fig.axes) >= 4
    import matplotlib.pyplot as plt

    plt.close(fig)
    with pytest.raises(TypeError, match="CensusResult"):
        plot_census(object())


def test_cli_json(capsys):
    assert main(["census", "masterkey", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"seconds", "filters", "invalid", "null"} and out["seconds"] > 0
    assert set(out["null"]) == {"iid", "shape", "covariance"}  # the default nulls
    assert out["null"]["shape"]["median_r2"] > out["null"]["shape"]["null_median_r2"]
    for c in out["null"].values():  # every null with its computed ceiling
        assert 0 < c["ceiling_median_r2"] < 1 and c["attainable_gap"] > 0
    assert [f["index"] for f in out["filters"]] == list(range(8))
    assert [f["type"] for f in out["filters"]] == list(TYPES)
    assert [f["alpha"] is None for f in out["filters"]] == [True] * 6 + [False, True]
    # 7x7: every scale is determined; effective parameters 2 + scales + 1 for the choice
    assert all(f["undetermined"] == {} for f in out["filters"])
    assert [f["n_params"] for f in out["filters"]] == [5] * 8
    assert all(f["r2_adjusted"] < f["r2"] for f in out["filters"])
    assert all(0.7 < f["r2"] <= 1.0 for f in out["filters"])


def test_cli_summary_types_and_plot(capsys, tmp_path):
    png = tmp_path / "census.png"
    argv = ["census", "masterkey", "--types", "5,6,dxx", "--plot", str(png), "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "median R^2" in out and "dxx" in out and png.is_file()
    assert "all        8" in out


def test_cli_errors(capsys, tmp_path):
    assert main(["census", "masterkey", "--types", "12"]) == 2
    assert "unknown type 12" in capsys.readouterr().err
    assert main(["census", str(tmp_path / "missing.npy")]) == 2
    capsys.readouterr()
    bad = tmp_path / "const.npy"
    np.save(bad, np.ones((2, 7, 7)))
    assert main(["census", str(bad), "--json", "--strict"]) == 2
    err = capsys.readouterr().err
    assert "filters[0] is constant (all taps equal 1.0" in err and "--strict" in err
    assert len(err.splitlines()) == 1
    # without --strict the constant filters are recorded, and the run succeeds
    assert main(["census", str(bad), "--json", "--null", "none"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [f["reason"] for f in out["filters"]] == ["constant", "constant"]
    assert out["invalid"] == {"zero": 0, "constant": 2, "non_finite": 0} and out["null"] == {}


def test_progress_bar(capsys):
    y = planted_bank(np.random.default_rng(15), 6, 0.02)["y"]
    census(y, progress=True, batch_size=4)
    err = capsys.readouterr().err
    assert "census" in err and "48/48" in err
    before = torch.get_num_threads()
    quiet = census(y, progress=False, num_threads=1)
    assert capsys.readouterr().err == "" and torch.get_num_threads() == before
    np.testing.assert_allclose(quiet.r2_all, census(y).r2_all, atol=1e-14)
