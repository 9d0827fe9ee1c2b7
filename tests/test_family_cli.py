"""``census --family`` and ``analyze --family``: invalid filters recorded, mixed kernel sizes
fitted where the family is not saturated, pooled summaries, --plot/--strict/--null-size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scalespace_mk.analysis.census import census
from scalespace_mk.analysis.jets import family_census
from scalespace_mk.cli import main
from scalespace_mk.scalespace.jets import jet_basis


def _jets(rng, n, k, order=1):
    sig = rng.uniform(0.7, 1.5, n)
    basis = jet_basis(order, sig, size=k)
    coef = rng.normal(size=(n, basis.shape[1]))
    return np.einsum("nm,nmrc->nrc", coef, basis) + 0.002 * rng.normal(size=(n, k, k))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    rng = np.random.default_rng(3)
    w3 = _jets(rng, 12, 3)
    w5 = _jets(rng, 16, 5)
    w5[4] = 0.0  # a dead channel
    path = tmp_path_factory.mktemp("fam") / "mixed.pt"
    torch.save(
        {
            "a.conv_dw.weight": torch.from_numpy(w3[:, None]).float(),
            "b.conv_dw.weight": torch.from_numpy(w5[:, None]).float(),
        },
        path,
    )
    return path, w3, w5


def test_census_family_records_invalid_filters(tmp_path, capsys):
    y = _jets(np.random.default_rng(0), 10, 5)
    y[3] = 0.0
    y[6] = 2.5
    path = tmp_path / "f.npy"
    np.save(path, y)
    assert main(["census", str(path), "--family", "njet", "--order", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    recs = out["filters"]
    assert recs[3]["reason"] == "zero" and recs[3]["r2"] is None
    assert recs[6]["reason"] == "constant" and recs[6]["c_x"] is None
    assert all(r["reason"] is None and r["r2"] > 0.9 for i, r in enumerate(recs) if i not in (3, 6))
    assert out["summary"]["fitted"] == 8 and out["summary"]["invalid"]["zero"] == 1
    # the API records too (census(family=...), default on_invalid="record") ...
    res = census(y, family="njet", order=1)
    assert np.isnan(res.r2[3]) and res.reason[6] == "constant" and np.isnan(res.models()[3]).all()
    # ... and --strict / on_invalid="raise" / family_census without reasons refuse
    assert main(["census", str(path), "--family", "njet", "--order", "1", "--strict"]) == 2
    assert "filters[3] is zero" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"filters\[3\]"):
        family_census(y, family="njet", order=1)


def test_analyze_family_mixed_sizes(mixed, tmp_path, capsys):
    path, w3, w5 = mixed
    figs = tmp_path / "figs"
    argv = ["analyze", str(path), "--family", "njet", "--order", "2", "--json"]
    assert main([*argv, "--null", "iid", "--plot", str(figs), "--null-size", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    # 3x3 is saturated for the 2-jet (8 parameters, 9 taps): skipped with the reason
    assert [s["name"] for s in out["skipped"]] == ["a.conv_dw.weight"]
    assert "saturated" in out["skipped"][0]["reason"]
    assert set(out["by_kernel_size"]) == {"5"} and out["summary"]["kernel_sizes"] == [5]
    layer = out["layers"][0]
    assert layer["fitted"] == 15 and layer["invalid"]["zero"] == 1
    assert out["summary"]["null_iid_median_r2"] < out["summary"]["median_r2"]
    for name in ("family_r2.png", "family_r2_per_layer.png"):
        assert (figs / name).read_bytes()[:4] == b"\x89PNG", name
    # order 1 fits both sizes; the summary pools them with each size beside
    assert (
        main(["analyze", str(path), "--family", "njet", "--order", "1", "--json", "--null", "none"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["skipped"] == [] and out["summary"]["kernel_sizes"] == [3, 5]
    assert out["summary"]["n_filters"] == 28 and out["summary"]["fitted"] == 27
    r2 = np.concatenate(
        [census(w3, family="njet", order=1).r2, census(w5, family="njet", order=1).r2]
    )
    assert out["summary"]["median_r2"] == pytest.approx(np.nanmedian(r2), abs=1e-6)
    # the table prints every size and the pooled line
    assert main(["analyze", str(path), "--family", "njet", "--order", "1", "--null", "none"]) == 0
    text = capsys.readouterr().out
    assert "3x3:" in text and "5x5:" in text and "all sizes:" in text


def test_analyze_family_strict_and_refusals(mixed, capsys, tmp_path):
    path, w3, _ = mixed
    base = ["analyze", str(path), "--family", "njet", "--order", "1", "--null", "none"]
    assert main([*base, "--strict"]) == 2
    err = capsys.readouterr().err
    assert "b.conv_dw.weight" in err and "filters[4]" in err
    assert main([*base, "--types", "5,6"]) == 2
    assert "--types" in capsys.readouterr().err
    only3 = tmp_path / "three.pt"
    torch.save({"a.conv_dw.weight": torch.from_numpy(w3[:, None]).float()}, only3)
    assert main(["analyze", str(only3), "--family", "njet", "--order", "2", "--null", "none"]) == 2
    assert "saturated at every kernel size" in capsys.readouterr().err


def test_oriented_order_1_with_its_smoothing_term_is_the_1_jet():
    """Why oriented order 1 has no order-0 term: with it, it is the 1-jet reparametrised
    ((c_x, c_y) -> gain, theta), so the fair comparison is --family njet --order 1."""
    y = _jets(np.random.default_rng(1), 40, 5)
    jet = family_census(y, family="njet", order=1)
    ori = family_census(y, family="oriented", order=1)
    assert np.all(jet.r2 >= ori.r2 - 1e-9)
    # where the 1-jet's c_0 vanishes the two agree, with theta = atan2(c_y, c_x)
    pure = np.einsum("nm,nmrc->nrc", np.array([[0.0, 1.0, 0.5]]), jet_basis(1, [1.1], size=5))
    j1, o1 = (
        family_census(pure, family="njet", order=1),
        family_census(pure, family="oriented", order=1),
    )
    assert o1.r2[0] == pytest.approx(j1.r2[0], abs=1e-9)
    assert o1.theta[0] == pytest.approx(np.arctan2(j1.c_y[0], j1.c_x[0]), abs=1e-6)
