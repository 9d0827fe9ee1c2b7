"""analyze on any depthwise CNN: dead filters, any kernel size, nulls, statistics, compare."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scalespace_mk.analysis.census import census, screen_filters
from scalespace_mk.cli import main
from scalespace_mk.networks.checkpoint import (
    analyze,
    compare,
    find_depthwise,
    save_checkpoint_file,
    scan_depthwise,
)
from scalespace_mk.scalespace.models import masterkey_model


def _planted(rng: np.random.Generator, n: int, k: int, noise: float = 0.01) -> np.ndarray:
    """``n`` filters ``a g + b + noise`` of random master key types at random scales."""
    out = []
    for i in range(n):
        t = i % 8 + 1
        sx, sy = rng.uniform(0.4, min(1.6, k / 2 - 0.2), 2)
        al = rng.uniform(0.5, 3.0)
        g = masterkey_model(t, sx, None if t == 7 else sy, alpha=al if t == 7 else None, size=k)
        out.append(
            rng.uniform(0.5, 2.0) * g + rng.normal() * 0.01 + noise * rng.normal(size=g.shape)
        )
    return np.stack(out)


def _t(w: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(w, dtype=np.float32))[:, None]


# --------------------------------------------------------------------------- dead filters


def test_screen_filters_is_scale_free():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(7, 5, 5))
    y[1] = 0.0
    y[2] = -3.5
    y[3, 2, 2] = np.nan
    y[4] *= 1e-300
    y[5] *= 1e300
    y[6] = np.float32(0.1)  # constant up to float32 rounding after the cast
    assert screen_filters(y).tolist() == [
        None,
        "zero",
        "constant",
        "non-finite",
        None,
        None,
        "constant",
    ]
    # tiny and huge filters are fitted exactly like the same filter at scale 1
    res = census(
        y[[0, 4, 5]]
        / np.array([1.0, 1e-300, 1e300])[:, None, None]
        * np.array([1.0, 1e-300, 1e300])[:, None, None]
    )
    ref = census(y[[0, 0, 0]] * 0 + rng.normal(size=(1, 5, 5)))
    assert np.all(np.isfinite(res.r2))
    base = census(y[0] / 1.0)
    tiny = census(y[0] * 1e-300)
    huge = census(y[0] * 1e300)
    np.testing.assert_allclose(tiny.r2, base.r2, rtol=1e-9)
    np.testing.assert_allclose(huge.r2, base.r2, rtol=1e-9)
    np.testing.assert_allclose(tiny.a, base.a * 1e-300, rtol=1e-9)
    np.testing.assert_allclose(huge.a, base.a * 1e300, rtol=1e-9)
    assert ref is not None


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float64,
        (3, 5, 5),
        elements=st.floats(-1e3, 1e3, allow_nan=False).filter(lambda v: v == 0 or abs(v) > 1e-3),
    ),
    st.integers(-300, 300),
)
def test_screen_filters_property_scale(y, exponent):
    """The reason a filter is not fitted does not depend on its scale (1e-300 .. 1e300)."""
    y = y.copy()
    y[1] = y[1, 0, 0]  # a constant filter (zero when that tap is 0)
    scaled = y * 10.0**exponent
    assert screen_filters(scaled).tolist() == screen_filters(y).tolist()
    expected = "zero" if y[1, 0, 0] == 0 else "constant"
    assert screen_filters(y)[1] == expected


def test_census_records_invalid_filters_and_fits_the_rest():
    rng = np.random.default_rng(1)
    y = _planted(rng, 8, 5)
    bad = y.copy()
    bad[2] = 0.0
    bad[5] = 1.25
    bad[6, 0, 0] = np.inf
    res = census(bad, types=(1, 2, 3, 4, 5, 6, 7, 8))
    ref = census(y)
    ok = np.array([True, True, False, True, True, False, False, True])
    assert res.reason.tolist() == [None, None, "zero", None, None, "constant", "non-finite", None]
    assert res.valid.tolist() == ok.tolist()
    np.testing.assert_allclose(res.r2[ok], ref.r2[ok], rtol=1e-12)
    assert np.isnan(res.r2[~ok]).all() and (res.best[~ok] == -1).all()
    assert res.type.tolist() == [
        r if v else None for r, v in zip(ref.type.tolist(), ok, strict=True)
    ]
    assert res.invalid_counts() == {"zero": 1, "constant": 1, "non_finite": 1}
    assert sum(res.counts().values()) == 5
    recs = res.records()
    assert recs[2] == {
        "index": 2,
        "type": None,
        "sigma_x": None,
        "sigma_y": None,
        "alpha": None,
        "a": None,
        "b": None,
        "r2": None,
        "reason": "zero",
    }
    json.dumps(recs)  # no NaN objects that JSON cannot carry as null
    with pytest.raises(ValueError, match=r"filters\[2\] is identically zero"):
        census(bad, on_invalid="raise")
    every = census(np.zeros((3, 3, 3)))
    assert every.reason.tolist() == ["zero"] * 3 and every.counts() == dict.fromkeys(range(1, 9), 0)


# --------------------------------------------------------------------------- architectures


def _zoo(rng: np.random.Generator) -> OrderedDict:
    """Depthwise weights named as torchvision, timm, ConvNeXt and EfficientNet store them."""
    sd = OrderedDict()
    sd["features.0.0.weight"] = torch.ones(8, 3, 3, 3)  # dense stem: not depthwise
    sd["features.1.conv.0.0.weight"] = _t(_planted(rng, 8, 3))  # MobileNetV2
    sd["features.1.conv.1.weight"] = torch.ones(4, 8, 1, 1)  # pointwise
    sd["blocks.1.0.conv_dw.weight"] = _t(_planted(rng, 8, 5))  # EfficientNet (timm)
    sd["features.2.0.block.1.0.weight"] = _t(_planted(rng, 8, 5))  # EfficientNet (torchvision)
    sd["stages.0.blocks.0.conv_dw.weight"] = _t(_planted(rng, 16, 7))  # ConvNeXt
    sd["odd.weight"] = torch.ones(4, 1, 3, 5)
    sd["even.weight"] = torch.ones(4, 1, 4, 4)
    sd["scale.weight"] = torch.ones(4, 1, 1, 1)
    sd["huge.weight"] = torch.ones(4, 1, 17, 17)
    sd["quant.weight"] = torch.ones(4, 1, 3, 3, dtype=torch.int8)
    sd["stages.0.blocks.0.conv_dw.bias"] = torch.zeros(16)
    return sd


DEPTHWISE = [
    "features.1.conv.0.0.weight",
    "blocks.1.0.conv_dw.weight",
    "features.2.0.block.1.0.weight",
    "stages.0.blocks.0.conv_dw.weight",
]


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict", "ema", "model_ema"])
def test_find_depthwise_any_architecture_and_wrapper(wrapper):
    sd = _zoo(np.random.default_rng(2))
    obj = sd if wrapper is None else {wrapper: sd, "epoch": 3}
    prefix = "" if wrapper is None else f"{wrapper}."
    scan = scan_depthwise(obj)
    assert list(scan.found) == [prefix + n for n in DEPTHWISE]
    assert list(find_depthwise(obj)) == list(scan.found)
    reasons = {s["name"].removeprefix(prefix): s["reason"] for s in scan.skipped}
    assert set(reasons) == {
        "odd.weight",
        "even.weight",
        "scale.weight",
        "huge.weight",
        "quant.weight",
    }
    assert "non-square" in reasons["odd.weight"]
    assert "even" in reasons["even.weight"]
    assert "1x1" in reasons["scale.weight"]
    assert "outside 3..15" in reasons["huge.weight"]
    assert "floating" in reasons["quant.weight"]


def test_analyze_mixed_sizes_nested_safetensors(tmp_path):
    sd = _zoo(np.random.default_rng(3))
    path = tmp_path / "zoo.safetensors"
    save_checkpoint_file(dict(sd), path)
    res = analyze(path, null="none")  # safetensors stores the keys sorted
    assert [layer["name"] for layer in res.layers] == sorted(DEPTHWISE)
    sizes = {layer["name"]: layer["kernel_size"] for layer in res.layers}
    assert [sizes[n] for n in DEPTHWISE] == [3, 5, 5, 7]
    by_k = res.summary["by_kernel_size"]
    assert list(by_k) == ["3", "5", "7"]
    assert [by_k[k]["filters"] for k in by_k] == [8, 16, 16]
    assert res.summary["filters"] == 40 and res.summary["fitted"] == 40
    # planted models are recovered at every size
    assert all(layer["median_r2"] > 0.9 for layer in res.layers)
    assert res.summary["skipped"] == 5 and len(res.to_json()["skipped"]) == 5
    # the nested checkpoint gives the same numbers under prefixed names
    nested = analyze({"state_dict": {"model": sd}}, null="none")
    assert [layer["name"] for layer in nested.layers] == [
        "state_dict.model." + n for n in DEPTHWISE
    ]
    med = {layer["name"]: layer["median_r2"] for layer in res.layers}
    assert [layer["median_r2"] for layer in nested.layers] == [med[n] for n in DEPTHWISE]


def test_analyze_types_resolved_up_front():
    sd = {"a.weight": _t(_planted(np.random.default_rng(4), 16, 5))}
    res = analyze(sd, types=[5, "mk6", "dxx"], null="none")
    assert list(res.layers[0]["types"]) == ["5", "6", "dxx"]
    assert sum(res.layers[0]["types"].values()) == 16
    with pytest.raises(ValueError, match="unknown type 9"):
        analyze(sd, types=[9])


def test_no_depthwise_says_what_was_skipped():
    with pytest.raises(ValueError, match=r"even\.weight.*even kernel size 4"):
        analyze({"even.weight": torch.ones(4, 1, 4, 4)})


# --------------------------------------------------------------------------- output


LAYER_KEYS = {
    "name",
    "channels",
    "kernel_size",
    "fitted",
    "invalid",
    "constant_filters",
    "types",
    "median_r2",
    "share_r2_gt_0_8",
    "share_r2_above_0.8",
    "null_kind",
    "null_median_r2",
    "null_share_r2_gt_0_8",
    "nulls",
    "sigma",
    "sigma_x_quantiles",
    "sigma_y_quantiles",
    "undetermined",
    "median_r2_adjusted",
    "gap_share",
    "population",
}


@pytest.fixture(scope="module")
def dead():
    """A two-layer checkpoint with dead channels, analysed with both nulls."""
    rng = np.random.default_rng(5)
    w0 = _planted(rng, 24, 5)
    w0[[3, 4]] = 0.0
    w0[7] = 0.3
    w0[9, 1, 1] = np.nan
    w1 = _planted(rng, 40, 7)
    sd = {"model": {"l0.conv_dw.weight": _t(w0), "l1.conv_dw.weight": _t(w1)}}
    return sd, w0, w1, analyze(sd, seed=11, null="both")


def test_analyze_json_keys_and_invalid_counts(dead):
    _, w0, w1, res = dead
    out = json.loads(json.dumps(res.to_json()))
    assert set(out) == {"layers", "filters", "summary", "skipped"}
    l0, l1 = out["layers"]
    assert set(l0) == LAYER_KEYS
    assert l0["invalid"] == {"zero": 2, "constant": 1, "non_finite": 1}
    assert l0["fitted"] == 20 and l0["constant_filters"] == 4 and l0["kernel_size"] == 5
    assert l1["invalid"] == {"zero": 0, "constant": 0, "non_finite": 0}
    reasons = [f["reason"] for f in out["filters"] if f["layer"] == "model.l0.conv_dw.weight"]
    assert reasons[3] == reasons[4] == "zero" and reasons[7] == "constant"
    assert reasons[9] == "non-finite"
    assert all(f["r2"] is None and f["type"] is None for f in out["filters"] if f["reason"])
    s = out["summary"]
    assert {
        "filters",
        "fitted",
        "invalid",
        "median_r2",
        "null_median_r2",
        "share_r2_gt_0_8",
        "null_share_r2_gt_0_8",
        "by_kernel_size",
        "nulls",
        "sigma",
    } <= set(s)
    assert s["filters"] == 64 and s["fitted"] == 60
    assert s["invalid"] == {"zero": 2, "constant": 1, "non_finite": 1}
    assert set(s["by_kernel_size"]) == {"5", "7"}
    assert s["by_kernel_size"]["7"]["median_r2"] == l1["median_r2"]
    r2 = np.array([f["r2"] for f in out["filters"] if f["r2"] is not None])
    assert s["median_r2"] == pytest.approx(np.median(r2))
    assert s["share_r2_gt_0_8"] == pytest.approx(np.mean(r2 > 0.8))


def test_analyze_null_beside_every_statistic(dead):
    sd, _, w1, res = dead
    s = res.summary
    assert s["null_kind"] == "position" and set(s["nulls"]) == {"iid", "position"}
    assert s["null_median_r2"] == s["nulls"]["position"]["null_median_r2"]
    for layer in res.layers:
        # planted models are explained far better than structureless filters
        for kind in ("iid", "position"):
            c = layer["nulls"][kind]
            assert c["median_diff"] > 0.3 and c["median_diff_ci"][0] > 0.2
            assert layer["share_r2_gt_0_8"] > c["null_share_r2_gt_0_8"]
    # the layer's null is the census of null_filters seeded from (seed, layer name)
    from scalespace_mk.analysis.null import derive_seed, null_filters

    name = "model.l1.conv_dw.weight"
    z = null_filters(w1.astype(np.float32).astype(np.float64), "iid", derive_seed(11, name))
    np.testing.assert_array_equal(res.null_r2[name]["iid"], census(z).r2)
    # reproducible: same seed identical, another seed another null
    again = analyze(sd, seed=11, n_boot=200, null="both")
    assert again.layers[1]["null_median_r2"] == res.layers[1]["null_median_r2"]
    other = analyze(sd, seed=12, n_boot=200, null="both")
    assert other.layers[1]["null_median_r2"] != res.layers[1]["null_median_r2"]
    assert other.layers[1]["median_r2"] == res.layers[1]["median_r2"]
    none = analyze(sd, null="none")
    assert none.layers[0]["null_median_r2"] is None and none.summary["nulls"] == {}


def test_scale_statistics_against_numpy(dead):
    _, _, _, res = dead
    layer = res.layers[1]
    recs = [f for f in res.filters if f["layer"] == layer["name"]]
    sx = np.array([f["sigma_x"] for f in recs])
    sig = layer["sigma"]
    assert sig["sigma_x"]["median"] == pytest.approx(np.median(sx))
    assert sig["sigma_x"]["p5"] == pytest.approx(np.percentile(sx, 5))
    assert sig["sigma_x"]["p95"] == pytest.approx(np.percentile(sx, 95))
    t7 = np.array([f["alpha"] for f in recs if f["type"] == 7])
    assert sig["by_type"]["7"]["n"] == len(t7)
    assert sig["by_type"]["7"]["alpha"]["median"] == pytest.approx(np.median(t7))
    t5 = [f for f in recs if f["type"] == 5]
    an = np.array([(f["sigma_x"] - f["sigma_y"]) / (f["sigma_x"] + f["sigma_y"]) for f in t5])
    assert sig["by_type"]["5"]["anisotropy"]["median"] == pytest.approx(np.median(an))
    assert "anisotropy" not in sig["by_type"]["7"] and "alpha" not in sig["by_type"]["5"]


def test_gallery_worst_and_best(dead):
    _, _, _, res = dead
    g = res.gallery(3)
    assert g["kernel_size"] == 7  # the most common size
    worst, best = [e["r2"] for e in g["worst"]], [e["r2"] for e in g["best"]]
    assert worst == sorted(worst) and best == sorted(best, reverse=True)
    assert max(worst) <= min(best)
    for e in g["best"]:
        # the model a g + b is the fit: its residual is what R^2 leaves unexplained
        resid = ((e["filter"] - e["model"]) ** 2).sum()
        tss = ((e["filter"] - e["filter"].mean()) ** 2).sum()
        assert 1 - resid / tss == pytest.approx(e["r2"], abs=1e-6)


def test_on_invalid_raise_names_layer_and_filter(dead, tmp_path, capsys):
    sd, _, _, _ = dead
    with pytest.raises(ValueError, match=r"layer 'model\.l0\.conv_dw\.weight': filters\[3\]"):
        analyze(sd, on_invalid="raise", null="none")
    path = tmp_path / "dead.pt"
    save_checkpoint_file(sd, path)
    assert main(["analyze", str(path), "--strict", "--null", "none"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "model.l0.conv_dw.weight" in err and "filters[3] is identically zero" in err
    assert main(["analyze", str(path), "--null", "iid", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["invalid"]["zero"] == 2 and out["summary"]["null_kind"] == "iid"


# --------------------------------------------------------------------------- compare, CLI


def test_compare_per_stage(dead, tmp_path, capsys):
    sd, _, _, res = dead
    other = analyze({"a.weight": _t(np.random.default_rng(9).normal(size=(30, 3, 3)))}, seed=1)
    cmp = compare([res, other], names=["planted", "random"], stages=2)
    a, b = cmp["networks"]
    assert [s["layers"] for s in a["stages"]] == [
        ["model.l0.conv_dw.weight"],
        ["model.l1.conv_dw.weight"],
    ]
    assert a["stages"][1]["median_r2"] == res.layers[1]["median_r2"]
    assert a["stages"][0]["null_median_r2"] == res.layers[0]["null_median_r2"]
    # one layer in two stages: the second is empty
    assert b["stages"][0]["filters"] == 30 and b["stages"][1]["median_r2"] is None
    # random filters are no better than their null; planted ones are
    assert a["summary"]["median_r2"] - a["summary"]["null_median_r2"] > 0.3
    assert abs(b["summary"]["median_r2"] - b["summary"]["nulls"]["iid"]["null_median_r2"]) < 0.15
    with pytest.raises(ValueError, match="stages"):
        compare([res], stages=0)

    p1, p2 = tmp_path / "a.pt", tmp_path / "b.pt"
    save_checkpoint_file(sd, p1)
    save_checkpoint_file({"a.weight": _t(np.random.default_rng(9).normal(size=(30, 3, 3)))}, p2)
    figs = tmp_path / "figs"
    argv = ["analyze", str(p1), "--compare", str(p2), "--stages", "2", "--null", "none"]
    argv += ["--plot", str(figs)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "median R^2 per stage" in out and "(" in out
    assert (figs / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert (figs / "1_a" / "r2_per_layer.png").is_file()
    assert main(["analyze", str(p1), str(p2), "--json", "--null", "none"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert len(js["checkpoints"]) == 2 and js["comparison"]["stages"] == 4


def test_cli_table_and_figures(dead, tmp_path, capsys):
    sd, _, _, _ = dead
    path = tmp_path / "dead.pt"
    save_checkpoint_file(sd, path)
    figs = tmp_path / "figs"
    assert main(["analyze", str(path), "--plot", str(figs), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "median R2 (null)" in out and "model.l0.conv_dw.weight" in out
    assert "2 zero, 1 constant, 1 non-finite" in out
    assert "5x5: 24 filters" in out and "null covariance" in out and "null shape" in out
    for name in ("types_per_layer", "r2_per_layer", "scales", "gallery", "r2", "population"):
        assert (figs / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name


def test_figures_have_titles_and_labels(dead):
    import matplotlib.pyplot as plt

    from scalespace_mk.plot import plot_r2_per_layer, plot_scales_by_depth, plot_types_per_layer

    _, _, _, res = dead
    for func in (plot_types_per_layer, plot_r2_per_layer, plot_scales_by_depth):
        fig = func(res)
        for ax in fig.axes:
            assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), func.__name__
            legend = ax.get_legend()
            if legend is not None:  # legends sit outside the axes, never over data
                assert legend.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1
        plt.close(fig)


def test_fit_follows_the_same_rule():
    from scalespace_mk.analysis.fit import fit_filters

    g = [
        masterkey_model(t, 0.9, None if t == 7 else 0.7, alpha=1.0 if t == 7 else None)
        for t in range(1, 9)
    ]
    h = np.stack(g) + 0.01
    bad = h.copy()
    bad[2] = 0.0
    bad[4] = 0.5
    bad[6, 0, 0] = np.nan
    ref = fit_filters(h, method="D1")
    got = fit_filters(bad, method="D1", on_error="record")
    assert [f.error for f in got] == [
        None,
        None,
        "zero",
        None,
        "constant",
        None,
        "non-finite",
        None,
    ]
    assert [f.index for f in got] == list(range(1, 9))
    for f, r in zip(got, ref, strict=True):
        if f.error is None:
            assert f.sigma_x == r.sigma_x and f.sigma_y == r.sigma_y
        else:
            assert np.isnan(f.sigma_x) and f.to_dict()["sigma_x"] is None
    with pytest.raises(ValueError, match=r"h\[3\] is constant"):
        fit_filters(np.delete(bad, [2, 6], axis=0), [1, 2, 4, 5, 6, 8], method="D1")


def test_null_size_draws_the_same_fraction_of_every_layer():
    rng = np.random.default_rng(12)
    sd = {
        "a.weight": _t(rng.normal(size=(300, 3, 3))),
        "b.weight": _t(rng.normal(size=(100, 3, 3))),
    }
    res = analyze(sd, null="iid", null_size=200, n_boot=1)
    assert [layer["nulls"]["iid"]["null_n"] for layer in res.layers] == [150, 100]
    assert res.summary["nulls"]["iid"]["null_n"] == 250
    full = analyze(sd, null="iid", null_size=None, n_boot=1)
    assert [layer["nulls"]["iid"]["null_n"] for layer in full.layers] == [300, 100]
    # random filters: learned and null agree within sampling noise either way
    assert abs(res.summary["median_r2"] - res.summary["null_median_r2"]) < 0.1
    with pytest.raises(ValueError, match="null_size"):
        analyze(sd, null_size=0)


def test_census_cli_plot_with_dead_filters(tmp_path, capsys):
    y = _planted(np.random.default_rng(13), 16, 5)
    y[[2, 5]] = 0.0
    path = tmp_path / "f.npy"
    np.save(path, y)
    png = tmp_path / "c.png"
    assert main(["census", str(path), "--plot", str(png), "--null", "iid"]) == 0
    out = capsys.readouterr().out
    assert "not fitted: 2 zero" in out and "null   iid" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
