"""Figures: titles and labelled axes, legends outside the data, common colour scales for a
filter and its model, failed fits drawn as labelled empty cells."""

from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from scalespace_mk import plot  # noqa: E402
from scalespace_mk.analysis.census import census  # noqa: E402
from scalespace_mk.analysis.filters import load_filters  # noqa: E402
from scalespace_mk.analysis.fit import fit_filters  # noqa: E402
from scalespace_mk.scalespace.models import masterkey_model  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _labelled(fig) -> None:
    """The figure has a title, and every axes a title or an axis label."""
    assert fig._suptitle is not None and fig._suptitle.get_text()
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.get_title() or ax.get_xlabel() or ax.get_ylabel() or fig._supxlabel, ax


def _legend_outside(ax) -> None:
    fig = ax.figure
    fig.canvas.draw()
    legend = ax.get_legend()
    assert legend is not None
    box = legend.get_window_extent()
    axes_box = ax.get_window_extent()
    assert box.x0 >= axes_box.x1 - 1 or box.y0 >= axes_box.y1 - 1  # beside or above the data


def test_plot_fit_common_scale_and_labels():
    fig = plot.plot_fit(fit_filters(load_filters(), method="D1"))
    _labelled(fig)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    n = 8
    assert len(images) == 3 * n
    axes = np.array([ax for ax in fig.axes if ax.images]).reshape(3, n)
    for j in range(n):
        limits = {axes[i, j].images[0].get_clim() for i in range(3)}
        assert len(limits) == 1  # filter, model and residual on one scale
        vmin, vmax = limits.pop()
        assert vmin == -vmax > -np.inf
        pair = np.concatenate(
            [np.abs(axes[0, j].images[0].get_array()), np.abs(axes[1, j].images[0].get_array())]
        )
        assert vmax == pytest.approx(float(pair.max()))


def test_plot_fit_small_model_is_not_blank():
    """A model far larger than the filter sets the shared scale; the filter stays visible."""
    h = np.stack([masterkey_model(8, 0.6), masterkey_model(5, 0.9, 0.7)])
    res = fit_filters(h, [8, 5], method="D1")
    fig = plot.plot_fit(res)
    ims = [ax.images[0] for ax in fig.axes if ax.images]
    assert ims[0].get_clim() == ims[2].get_clim()  # column 1: filter and model share limits


def test_plot_fit_failed_fit_is_a_labelled_empty_cell():
    res = fit_filters(load_filters(), method="B", sigma_max=0.5, on_error="record")
    failed = [f.index for f in res.fits if f.error is not None]
    assert failed
    fig = plot.plot_fit(res)
    _labelled(fig)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert sum(t.startswith("no fit: ") for t in texts) == 2 * len(failed)
    assert any("sigma" in t for t in texts)


def test_plot_census_labels_and_legend_outside():
    h = np.stack([masterkey_model(t, 0.7, alpha=0.5 if t == 7 else None) for t in range(1, 9)])
    fig = plot.plot_census(census(h, progress=False))
    _labelled(fig)
    for ax in fig.axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    _legend_outside(fig.axes[2])


def test_plot_bank_and_grid_have_titles_and_labelled_empty_cells():
    kernels = np.stack([[masterkey_model(t, s) for t in (1, 8)] for s in (0.5, 1.0)])
    _labelled(plot.plot_bank(kernels, [0.5, 1.0], ["dy+", "T"]))
    panels = np.full((2, 2, 7, 7), np.nan)
    panels[0] = kernels[0]
    notes = np.array([["a", "b"], ["no fit: reason", ""]], dtype=object)
    fig = plot.plot_filter_grid(panels, notes=notes)
    _labelled(fig)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["no fit: reason", "missing"]


def test_plot_analysis_legend_outside(tmp_path):
    import torch

    from scalespace_mk.networks.checkpoint import analyze

    gen = torch.Generator().manual_seed(0)
    models = torch.as_tensor(
        np.stack([masterkey_model(t, 0.8, alpha=0.5 if t == 7 else None) for t in range(1, 9)])
    )
    state = {
        f"stage{i}.conv_dw.weight": (models + 0.05 * torch.randn(8, 7, 7, generator=gen))
        .float()
        .unsqueeze(1)
        for i in range(3)
    }
    result = analyze(state, null="iid", n_boot=50, null_size=None)
    captured = []
    real = plot._save_atomic
    plot_save = lambda fig, path, **kw: (captured.append(fig), real(fig, path, **kw))[1]  # noqa: E731
    try:
        plot._save_atomic = plot_save
        paths = plot.plot_analysis(result, tmp_path)
    finally:
        plot._save_atomic = real
    assert paths and all(p.is_file() for p in paths)
    assert "types_per_layer.png" in [p.name for p in paths]
    for fig in captured:
        for ax in fig.axes:
            if ax.images:  # a filter panel of the gallery: titled, pixels need no axis labels
                assert ax.get_title() or fig.get_suptitle()
            elif hasattr(ax, "_colorbar"):  # a colour bar: labelled along its length
                assert ax.get_ylabel() or ax.get_xlabel()
            elif ax.has_data():
                assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    _legend_outside(captured[0].axes[0])
