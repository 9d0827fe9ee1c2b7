"""Figures name what they show (issue 19): type names in legends and headers, the gallery
labelled by layer and channel with one shared colour bar, the census beside its null."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import scalespace_mk as sk  # noqa: E402
from scalespace_mk import plot  # noqa: E402
from scalespace_mk.analysis.census import census, null_r2  # noqa: E402
from scalespace_mk.cli import main  # noqa: E402


def test_type_label_names_the_model():
    assert plot.type_label(1) == "type 1 (dy+)"
    assert plot.type_label("7") == "type 7 (mk7)"
    assert plot.type_label("dxx") == "dxx"


@pytest.fixture(scope="module")
def analysis():
    torch.manual_seed(0)
    sd = sk.create_model("convnextv2_atto", num_classes=10).state_dict()
    return sk.analyze(sd, progress=False, null="iid", null_size=64)


def test_types_per_layer_legend_has_type_names(analysis):
    fig = plot.plot_types_per_layer(analysis)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "type 1 (dy+)" in labels and "type 8 (T)" in labels
    assert not any(label.strip() == "type 1" for label in labels)
    plt.close(fig)


def test_gallery_names_layer_and_channel_and_shares_one_colour_bar(analysis):
    gallery = analysis.gallery(n=3)
    fig = plot.plot_gallery(gallery)
    panels = [ax for ax in fig.axes if ax.images and ax.get_xlabel()]
    bars = [ax for ax in fig.axes if "max |tap|" in ax.get_ylabel()]
    assert len(bars) == 1  # one colour bar for every panel
    first = gallery["worst"][0]
    layer = first["layer"].removesuffix(".weight")
    texts = " ".join(ax.get_xlabel().replace("\n", "") for ax in panels)
    assert f"ch {first['index']}" in texts
    assert layer[:10] in texts
    assert "type " in texts and "(" in texts  # models named: "type 3 (dy-)"
    limits = {im.get_clim() for ax in panels for im in ax.images}
    assert limits == {(-1.0, 1.0)}  # the shared range the colour bar shows
    plt.close(fig)


def test_census_figure_shows_the_null():
    h = np.random.default_rng(0).normal(size=(40, 7, 7))
    res = census(h, progress=False)
    nulls = null_r2(h, ("iid",), 0)
    fig = plot.plot_census(res, null=nulls)
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels[0].startswith("learned (median") and labels[1].startswith("null: iid (median")
    med = float(np.median(nulls["iid"]))
    assert f"{med:.2f}" in labels[1]
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "1\ndy+" in ticks
    plt.close(fig)


def test_census_cli_plot_passes_its_null(tmp_path, monkeypatch):
    seen = {}

    def fake(result, *, null=None, path=None, **kw):
        seen["null"] = null
        return plt.figure()

    monkeypatch.setattr(plot, "plot_census", fake)
    path = tmp_path / "f.npy"
    np.save(path, np.random.default_rng(1).normal(size=(12, 7, 7)))
    assert main(["census", str(path), "--null", "iid", "--plot", str(tmp_path / "c.png")]) == 0
    assert set(seen["null"]) == {"iid"} and len(seen["null"]["iid"]) > 0
