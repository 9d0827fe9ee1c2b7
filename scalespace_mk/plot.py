"""Matplotlib figures for scalespace_mk.

matplotlib is imported lazily inside each function (the Agg backend is used when there is
no display), so importing this module is cheap. Every function returns the
:class:`matplotlib.figure.Figure` and, given ``path``, also writes it atomically (a
temporary file in the same directory, then ``os.replace``).

Arrays are shown as stored depthwise weights ``h[r, c]``: row 0 at the top, so y points up
on the page as in the coordinates ``x = c - m``, ``y = m - r``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

__all__ = [
    "plot_analysis",
    "plot_bank",
    "plot_census",
    "plot_comparison",
    "plot_filter_grid",
    "plot_filters",
    "plot_fit",
    "plot_gallery",
    "plot_family_analysis",
    "plot_population",
    "plot_jet_basis",
    "plot_r2_per_layer",
    "plot_scales_by_depth",
    "plot_steering_error",
    "plot_substitution",
    "plot_substitution_progressive",
    "plot_substitution_recovery",
    "plot_substitution_sensitivity",
    "type_label",
    "plot_types_per_layer",
]


def _pyplot() -> Any:
    """Import pyplot, choosing the Agg backend when no display is available."""
    import matplotlib

    if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_atomic(fig: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write ``fig`` to ``path`` via a temporary file in the same directory."""
    from scalespace_mk._io import atomic_path

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)
    return path


#: axis label of every figure of filter images (one pixel per tap, as stored)
_GRID_AXES = "pixels as stored: x = column - m to the right, y = m - row up"


def _short(text: str, width: int = 28, lines: int = 4) -> str:
    """Wrap ``text`` into at most ``lines`` lines of ``width`` characters for a small cell."""
    import textwrap

    wrapped = textwrap.wrap(str(text), width) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: width - 3] + "..."
    return "\n".join(wrapped)


def _empty_cell(ax: Any, label: str) -> None:
    """An empty, framed cell with a centred label (a missing or failed entry)."""
    ax.set_facecolor("0.95")
    ax.text(0.5, 0.5, label, ha="center", va="center", fontsize=5.5, transform=ax.transAxes)


def type_label(t: Any) -> str:
    """A type's name for legends and headers: ``"type 1 (dy+)"`` for master key type 1..8
    (:data:`scalespace_mk.scalespace.models.MASTERKEY_MODELS`), the model's own name
    (``"dxx"``, ``"lap"``) for other census model types."""
    from scalespace_mk.scalespace.models import MASTERKEY_MODELS

    text = str(t).strip()
    if text.isdigit() and int(text) in MASTERKEY_MODELS:
        return f"type {int(text)} ({MASTERKEY_MODELS[int(text)]})"
    return text


def plot_fit(
    result: Any,
    *,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    cmap: str = "RdBu_r",
    dpi: int = 150,
) -> Any:
    """Learned (normalised), model and residual side by side for every fitted filter.

    Parameters
    ----------
    result : scalespace_mk.analysis.fit.FitResult
        Output of :func:`scalespace_mk.analysis.fit.fit_filters` (or a sequence of
        :class:`scalespace_mk.analysis.fit.FilterFit`).
    path : str or path-like, optional
        If given, the figure is also written there (format from the suffix, e.g. ``.png``,
        ``.pdf``), atomically.
    title : str, optional
        Figure title; default names the method.
    cmap : str
        Diverging matplotlib colormap; each column (a filter and its model) shares one
        symmetric colour range ``[-a, a]`` with ``a`` the largest ``|h~|`` or ``|g|`` of the
        pair, so the model, the filter and the residual are directly comparable.
    dpi : int
        Resolution used when writing ``path``.

    Returns
    -------
    matplotlib.figure.Figure
        Three rows (normalised filter ``h~``, model ``g``, residual ``g - h~``) and one
        column per filter, titled with index, model name and the fitted scales. A filter
        without a fit (:attr:`FilterFit.error`) gets labelled empty model and residual cells
        ("no fit: reason").

    Notes
    -----
    Pixels are drawn as stored (row 0 on top), so y points up on the page.
    """
    fits = list(getattr(result, "fits", result))
    if not fits:
        raise ValueError("result holds no fits; nothing to plot")
    for f in fits:
        if not all(hasattr(f, a) for a in ("normalized", "fitted", "sigma_x", "model")):
            raise TypeError(
                "result must be a FitResult or a sequence of FilterFit from "
                "scalespace_mk.analysis.fit; "
                f"got an item of type {type(f).__name__}"
            )
    import numpy as np

    plt = _pyplot()
    n = len(fits)
    fig, axes = plt.subplots(
        3, n, figsize=(1.55 * n + 0.9, 6.0), squeeze=False, layout="constrained"
    )
    rows = ("normalised h~", "model g", "residual g - h~")
    for j, f in enumerate(fits):
        learned = np.asarray(f.normalized, dtype=np.float64)
        model = np.asarray(f.fitted, dtype=np.float64)
        error = getattr(f, "error", None)
        failed = error is not None or not np.isfinite(model).all()
        pair = np.abs(learned) if failed else np.abs(np.concatenate([learned, model]))
        vmax = float(np.nanmax(pair)) if np.isfinite(pair).any() else 1.0
        vmax = vmax or 1.0
        im = None
        for i, img in enumerate((learned, model, model - learned)):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(rows[i], fontsize=8)
            if i > 0 and failed:
                reason = re.sub(r"^method '[^']+': filter \d+ \(type \d+\): ", "", error or "")
                _empty_cell(ax, _short("no fit: " + (reason or "non-finite model")))
                continue
            shown = ax.imshow(img, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
            im = shown if im is None else im
        if failed:
            scales = "no fit"
        elif f.alpha is not None:
            scales = f"σ={f.sigma_x:.3f}\nα={f.alpha:.3f}"
        elif f.sigma_x == f.sigma_y:
            scales = f"σ={f.sigma_x:.3f}\n"
        else:
            scales = f"σx={f.sigma_x:.3f}\nσy={f.sigma_y:.3f}"
        axes[0, j].set_title(f"{f.index}: {f.model}\n{scales}", fontsize=8)
        if not failed:
            axes[2, j].set_title(f"l1 {f.l1:.3f}, l2 {f.l2:.3f}", fontsize=7)
        bar = fig.colorbar(im, ax=axes[2, j], location="bottom", shrink=0.9, aspect=12)
        bar.ax.tick_params(labelsize=6)
    fig.supxlabel(_GRID_AXES, fontsize=8)
    method = getattr(result, "method", None)
    fig.suptitle(title if title is not None else f"fit by method {method}", fontsize=10)
    if path is not None:
        _save_atomic(fig, path, dpi=dpi)
    return fig


def plot_bank(
    kernels: Any,
    sigma: Any,
    models: Any,
    *,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    cmap: str = "RdBu_r",
    dpi: int = 100,
) -> Any:
    """Grid of model kernels: one row per sigma, one column per model.

    Parameters
    ----------
    kernels : array_like or torch.Tensor, shape [n_sigma, n_models, size, size]
        Stored weights (rows top to bottom, y up), e.g. ``make_bank(...).kernels`` from
        :mod:`scalespace_mk.scalespace.bank`.
    sigma : sequence of float, length n_sigma
        Standard deviations (pixels), used as row labels.
    models : sequence of str, length n_models
        Model names, used as column titles.
    path : str or path-like, optional
        If given, the figure is also written there (format from the suffix), atomically.
    title : str, optional
        Figure title; default names the number of models and scales.
    cmap : str
        Diverging matplotlib colormap; each panel is centred at 0 with the symmetric range
        ``[-a, a]``, ``a = max |h|`` of that panel (printed under it).
    dpi : int
        Resolution used when writing ``path``.

    Returns
    -------
    matplotlib.figure.Figure
        ``n_sigma x n_models`` panels (close with ``matplotlib.pyplot.close(fig)``).
    """
    import numpy as np

    if hasattr(kernels, "detach"):
        kernels = kernels.detach().cpu().numpy()
    k = np.asarray(kernels, dtype=np.float64)
    sig = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    names = [str(m) for m in ([models] if isinstance(models, str) else models)]
    if k.ndim != 4 or k.shape[0] != sig.size or k.shape[1] != len(names):
        raise ValueError(
            "kernels must have shape [n_sigma, n_models, size, size] matching sigma and "
            f"models ([{sig.size}, {len(names)}, k, k]); got shape {k.shape}"
        )
    if not np.isfinite(k).all():
        raise ValueError("kernels hold NaN or infinite values; nothing to draw")
    plt = _pyplot()
    n_rows, n_cols = k.shape[:2]
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(1.35 * n_cols + 0.6, 1.45 * n_rows + 0.5), squeeze=False
    )
    for i in range(n_rows):
        for j in range(n_cols):
            ax = axes[i, j]
            vmax = float(np.abs(k[i, j]).max()) or 1.0
            ax.imshow(k[i, j], cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"max {vmax:.3g}", fontsize=7, labelpad=2)
            if i == 0:
                ax.set_title(names[j], fontsize=9)
            if j == 0:
                ax.set_ylabel(f"σ = {sig[i]:.3g}", fontsize=9)
    if title is None:
        title = f"{n_cols} models at {n_rows} scales σ (pixels)"
    fig.suptitle(title, fontsize=10)
    fig.supxlabel(_GRID_AXES, fontsize=8)
    fig.tight_layout()
    if path is not None:
        _save_atomic(fig, path, dpi=dpi)
    return fig


def plot_census(
    result: Any,
    *,
    null: Any = None,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    bins: int = 40,
    dpi: int = 120,
) -> Any:
    """Histograms of a census: best-type counts, R^2 and the fitted scales.

    Parameters
    ----------
    result : scalespace_mk.analysis.census.CensusResult
        Output of :func:`scalespace_mk.analysis.census.census`.
    null : mapping of str to array_like, optional
        ``{kind: R^2 of the null filters}`` (:func:`scalespace_mk.analysis.census.null_r2`,
        e.g. ``"iid"``, ``"phase"``), drawn on the R^2 panel beside the learned filters (as
        densities, with each median), so that the R^2 reads against what chance gives.
    path : str or path-like, optional
        If given, the figure is also written there (format from the suffix), atomically.
    title : str, optional
        Figure title; default gives the number of filters.
    bins : int
        Number of bins of the R^2 and scale histograms.
    dpi : int
        Resolution used when writing ``path``.

    Returns
    -------
    matplotlib.figure.Figure
        Four panels: count of filters per best type; R^2 of the best fit (in [0, 1]);
        ``sigma_x`` and ``sigma_y`` of the best fit (standard deviations in pixels, stacked
        by type); ``alpha`` of the filters whose best type is 7 (when there are any).
    """
    import numpy as np

    needed = ("types", "best", "r2", "sigma_x", "sigma_y", "alpha")
    if not all(hasattr(result, a) for a in needed):
        raise TypeError(
            "result must be a CensusResult from scalespace_mk.analysis.census.census; "
            f"got {type(result).__name__}"
        )
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer; got {bins!r}")
    types = [str(t) for t in result.types]
    best = np.asarray(result.best)
    n = best.size
    fitted = best >= 0  # filters not fitted (zero, constant, non-finite) have best = -1
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(15.0, 3.4), layout="constrained")
    counts = np.bincount(best[fitted], minlength=len(types))
    names = [type_label(t).replace("type ", "").replace(" (", "\n").rstrip(")") for t in types]
    axes[0].bar(names, counts, color="C0")
    axes[0].set_title("best type per filter", fontsize=9)
    axes[0].set_xlabel("best type (model)")
    axes[0].set_ylabel("filters")
    axes[0].tick_params(axis="x", labelsize=7)
    for x, c in enumerate(counts):
        axes[0].annotate(f"{c}", (x, c), ha="center", va="bottom", fontsize=7)
    r2 = np.asarray(result.r2, dtype=np.float64)[fitted]
    if null:
        axes[1].hist(
            r2,
            bins=bins,
            range=(0.0, 1.0),
            color="C1",
            density=True,
            label=f"learned (median {np.median(r2):.2f})" if r2.size else "learned",
        )
        for j, (kind, values) in enumerate(null.items()):
            z = np.asarray(values, dtype=np.float64)
            z = z[np.isfinite(z)]
            axes[1].hist(
                z,
                bins=bins,
                range=(0.0, 1.0),
                histtype="step",
                density=True,
                color=f"C{5 + j}",
                linewidth=1.5,
                label=f"null: {kind} (median {np.median(z):.2f})" if z.size else kind,
            )
        axes[1].set_ylabel("density")
        axes[1].legend(fontsize=7, loc="upper right")
        axes[1].set_title("goodness of fit, learned against null filters", fontsize=9)
    else:
        axes[1].hist(r2, bins=bins, range=(0.0, 1.0), color="C1")
        axes[1].set_ylabel("filters")
        axes[1].set_title("goodness of fit (no null computed)", fontsize=9)
    axes[1].set_xlabel("R² of the best fit")
    sx, sy = np.asarray(result.sigma_x)[fitted], np.asarray(result.sigma_y)[fitted]
    top = float(max(sx.max(initial=0.0), sy.max(initial=0.0), 1e-3))
    axes[2].hist([sx, sy], bins=bins, range=(0.0, top), label=["σx", "σy"], color=["C2", "C3"])
    axes[2].set_title("scales of the best fit", fontsize=9)
    axes[2].set_xlabel("scale of the best fit (σ, pixels)")
    axes[2].set_ylabel("filters")
    axes[2].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.2)
    alpha = np.asarray(result.alpha, dtype=np.float64)
    alpha = alpha[np.isfinite(alpha)]
    if alpha.size:
        axes[3].hist(alpha, bins=bins, color="C4")
    else:
        axes[3].text(0.5, 0.5, "no type-7 fits", ha="center", va="center")
        axes[3].set_xticks([])
        axes[3].set_yticks([])
    axes[3].set_title("Laplacian weight of type 7", fontsize=9)
    axes[3].set_xlabel("α of type-7 fits")
    axes[3].set_ylabel("filters")
    fig.suptitle(title if title is not None else f"census of {n} filters", fontsize=10)
    if path is not None:
        _save_atomic(fig, path, dpi=dpi)
    return fig


def plot_filter_grid(
    panels: Any,
    *,
    row_labels: Any = None,
    col_titles: Any = None,
    notes: Any = None,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    cmap: str = "RdBu_r",
    share_column_scale: bool = False,
    vmax: float | None = None,
    colorbar: str | None = None,
    dpi: int = 120,
) -> Any:
    """Grid of filters, e.g. learned filters above their fitted models.

    Parameters
    ----------
    panels : array_like, shape [rows, cols, k, k]
        Stored weights (rows top to bottom, y up). A panel that is entirely NaN is drawn as
        a labelled empty cell (a missing entry; its note, e.g. ``"no fit: reason"``, or
        ``"missing"``).
    row_labels : sequence of str, optional
        One label per row (left of the row).
    col_titles : sequence of str, optional
        One title per column (above the first row).
    notes : array_like of str, shape [rows, cols], optional
        Small text under each panel (e.g. ``"R² 0.93"``); default: the colour range.
    path : str or path-like, optional
        If given, the figure is also written there (format from the suffix), atomically.
    title : str, optional
        Figure title; default names the grid's size.
    cmap : str
        Diverging matplotlib colormap, centred at 0.
    share_column_scale : bool
        If True, every column uses one symmetric range ``[-a, a]`` (``a`` the largest
        ``|h|`` of the column), so a filter and its model are directly comparable;
        otherwise each panel is scaled on its own.
    vmax : float, optional
        One colour range ``[-vmax, vmax]`` for every panel (overrides the per-panel and
        per-column scales).
    colorbar : str, optional
        With ``vmax``: draw one colour bar shared by all panels, labelled with this text.
    dpi : int
        Resolution used when writing ``path``.

    Returns
    -------
    matplotlib.figure.Figure
        ``rows x cols`` panels (close with ``matplotlib.pyplot.close(fig)``).
    """
    import numpy as np

    if hasattr(panels, "detach"):
        panels = panels.detach().cpu().numpy()
    p = np.asarray(panels, dtype=np.float64)
    if p.ndim != 4 or p.shape[-1] != p.shape[-2]:
        raise ValueError(f"panels must have shape [rows, cols, k, k]; got shape {p.shape}")
    n_rows, n_cols = p.shape[:2]
    blank = np.isnan(p).all(axis=(2, 3))
    if not np.isfinite(p[~blank]).all():
        raise ValueError("panels hold NaN or infinite values outside blank panels")
    for name, seq, n in (("row_labels", row_labels, n_rows), ("col_titles", col_titles, n_cols)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} must have {n} entries; got {len(seq)}")
    if notes is not None:
        notes = np.asarray(notes, dtype=object)
        if notes.shape != (n_rows, n_cols):
            raise ValueError(f"notes must have shape {(n_rows, n_cols)}; got {notes.shape}")
    plt = _pyplot()
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(1.3 * n_cols + 1.0, 1.4 * n_rows + 0.6), squeeze=False
    )
    col_max = np.array(
        [np.nanmax(np.abs(p[:, j])) if not blank[:, j].all() else 1.0 for j in range(n_cols)]
    )
    for i in range(n_rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0 and col_titles is not None:
                ax.set_title(str(col_titles[j]), fontsize=8)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(str(row_labels[i]), fontsize=8)
            if blank[i, j]:
                label = notes[i, j] if notes is not None and notes[i, j] else "missing"
                _empty_cell(ax, _short(label, width=18))
                continue
            if vmax is not None:
                lim = float(vmax)
            else:
                lim = col_max[j] if share_column_scale else float(np.abs(p[i, j]).max())
            lim = lim or 1.0
            image = ax.imshow(p[i, j], cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
            note = notes[i, j] if notes is not None else f"±{lim:.2g}"
            if note:
                ax.set_xlabel(str(note), fontsize=7, labelpad=2)
    if title is None:
        title = f"{n_rows} x {n_cols} filters" if n_rows > 1 else f"{n_cols} filters"
    fig.suptitle(title, fontsize=10)
    fig.supxlabel(_GRID_AXES, fontsize=8)
    fig.tight_layout()
    if vmax is not None and colorbar and not blank.all():
        fig.subplots_adjust(right=0.82)
        cax = fig.add_axes((0.85, 0.15, 0.02, 0.7))
        bar = fig.colorbar(image, cax=cax)
        bar.set_label(colorbar, fontsize=7)
        bar.ax.tick_params(labelsize=7)
    if path is not None:
        _save_atomic(fig, path, dpi=dpi)
    return fig


def plot_filters(
    filters: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    titles: Any = None,
    cmap: str = "RdBu_r",
    dpi: int = 120,
) -> Any:
    """One row of filters (e.g. extracted master filters), each scaled on its own.

    Parameters
    ----------
    filters : array_like, shape [N, k, k]
        Stored weights (rows top to bottom, y up).
    path : str or path-like, optional
        If given, the figure is also written there, atomically.
    titles : sequence of str, optional
        One title per filter (default ``1 .. N``).
    cmap : str
        Diverging colormap centred at 0.
    dpi : int
        Resolution used when writing ``path``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import numpy as np

    f = np.asarray(
        filters.detach().cpu().numpy() if hasattr(filters, "detach") else filters, dtype=np.float64
    )
    if f.ndim != 3:
        raise ValueError(f"filters must have shape [N, k, k]; got shape {f.shape}")
    titles = list(titles) if titles is not None else [str(i) for i in range(1, len(f) + 1)]
    return plot_filter_grid(f[None], col_titles=titles, path=path, cmap=cmap, dpi=dpi)


def plot_analysis(result: Any, directory: str | os.PathLike[str], *, dpi: int = 120) -> list[Path]:
    """Figures of :func:`scalespace_mk.networks.checkpoint.analyze`.

    Parameters
    ----------
    result : scalespace_mk.networks.checkpoint.AnalyzeResult
        The analysis.
    directory : str or path-like
        Folder to write into (created if missing): ``types_per_layer.png``
        (:func:`plot_types_per_layer`), ``r2.png`` (histogram of R^2, learned and null),
        ``r2_per_layer.png`` (:func:`plot_r2_per_layer`), ``scales.png``
        (:func:`plot_scales_by_depth`) and ``gallery.png`` (:func:`plot_gallery`).
    dpi : int
        Resolution.

    Returns
    -------
    list of pathlib.Path
        The written files.
    """
    import numpy as np

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    paths = []
    for name, func in (
        ("types_per_layer.png", plot_types_per_layer),
        ("r2_per_layer.png", plot_r2_per_layer),
        ("scales.png", plot_scales_by_depth),
    ):
        fig = func(result, path=directory / name, dpi=dpi)
        paths.append(directory / name)
        plt.close(fig)
    r2 = np.array([f["r2"] for f in result.filters if f["r2"] is not None], dtype=float)
    fig, ax = plt.subplots(figsize=(5.6, 3.4), layout="constrained")
    ax.hist(r2, bins=40, range=(0, 1), color="C0", alpha=0.8, label="learned")
    for j, kind in enumerate(result.null):
        z = np.concatenate([v[kind] for v in result.null_r2.values()])
        ax.hist(
            z[np.isfinite(z)],
            bins=40,
            range=(0, 1),
            histtype="step",
            lw=1.5,
            color=f"C{j + 1}",
            label=f"null: {kind}",
        )
    ax.set_xlabel("R² of the best idealised model (a g + b)")
    ax.set_ylabel("filters")
    med = f"{np.median(r2):.3f}" if r2.size else "-"
    ax.set_title(f"R² of {len(r2)} fitted filters (median {med})", fontsize=9)
    if result.null:
        _legend_outside(ax)
    paths.append(_save_atomic(fig, directory / "r2.png", dpi=dpi))
    plt.close(fig)
    if all("population" in la for la in result.layers) and result.layers:
        fig = plot_population(result, path=directory / "population.png", dpi=dpi)
        paths.append(directory / "population.png")
        plt.close(fig)
    if any(f["r2"] is not None for f in result.filters):
        fig = plot_gallery(result.gallery(), path=directory / "gallery.png", dpi=dpi)
        paths.append(directory / "gallery.png")
        plt.close(fig)
    return paths


def _legend_outside(ax: Any) -> None:
    """The legend to the right of the axes, never over the data."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _finish(fig: Any, path: Any, dpi: int, legend: Any = None) -> Any:
    """Put ``legend``'s legend outside, write ``fig`` to ``path`` (if given), return it."""
    if legend is not None:
        _legend_outside(legend)
    if path is not None:
        _save_atomic(fig, path, dpi=dpi)
    return fig


def _layer_axis(ax: Any, layers: list[dict[str, Any]]) -> None:
    """x axis of per-layer figures: layer number in network order, kernel size marked."""
    ax.set_xlabel("depthwise layer, input to output (k: kernel size)")
    n = len(layers)
    step = max(1, n // 20)
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{i + 1}\nk{layers[i]['kernel_size']}" for i in ticks], fontsize=6)
    ax.set_xlim(-0.6, n - 0.4)


def plot_types_per_layer(
    result: Any, *, path: str | os.PathLike[str] | None = None, dpi: int = 120
) -> Any:
    """Share of channels per best type in each depthwise layer (stacked bars).

    Parameters
    ----------
    result : scalespace_mk.networks.checkpoint.AnalyzeResult
        The analysis.
    path : str or path-like, optional
        If given, the figure is also written there, atomically.
    dpi : int
        Resolution used when writing ``path``.

    Returns
    -------
    matplotlib.figure.Figure
        Bars per layer (network order), one colour per type, a grey part for filters not
        fitted; the median R^2 per layer as a black line; the legend outside the axes.
    """
    import numpy as np

    layers = result.layers
    types = [str(t) for t in result.types]
    counts = np.array([[layer["types"].get(t, 0) for t in types] for layer in layers], float)
    channels = np.array([layer["channels"] for layer in layers], dtype=float)
    invalid = channels - counts.sum(axis=1)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(layers) + 3.0), 3.8), layout="constrained")
    x = np.arange(len(layers))
    bottom = np.zeros(len(layers))
    cmap = plt.get_cmap("tab10")
    for j, t in enumerate(types):
        share = counts[:, j] / np.maximum(channels, 1)
        ax.bar(x, share, bottom=bottom, color=cmap(j % 10), label=type_label(t), width=0.85)
        bottom += share
    if invalid.any():
        ax.bar(
            x,
            invalid / np.maximum(channels, 1),
            bottom=bottom,
            color="white",
            edgecolor="0.3",
            hatch="///",
            label="not fitted",
            width=0.85,
        )
    med = [np.nan if layer["median_r2"] is None else layer["median_r2"] for layer in layers]
    ax.plot(x, med, "k.-", label="median R²")
    _layer_axis(ax, layers)
    ax.set_ylabel("share of channels (bars); median R² (line)")
    ax.set_ylim(0, 1.02)
    ax.set_title("best idealised type per channel, per depthwise layer", fontsize=10)
    return _finish(fig, path, dpi, legend=ax)


def plot_r2_per_layer(
    result: Any, *, path: str | os.PathLike[str] | None = None, dpi: int = 120
) -> Any:
    """Median R^2 per depthwise layer with its quartiles, beside each null model's band.

    Parameters
    ----------
    result : scalespace_mk.networks.checkpoint.AnalyzeResult
        The analysis (with ``r2`` and ``null_r2`` per layer).
    path : str or path-like, optional
        If given, the figure is also written there, atomically.
    dpi : int
        Resolution used when writing ``path``.

    Returns
    -------
    matplotlib.figure.Figure
        Learned filters: median (line) and 25-75 % band; each null: median (dashed) and
        25-75 % band; the legend outside the axes.
    """
    import numpy as np

    layers = result.layers
    names = [layer["name"] for layer in layers]

    def band(arrays: list[np.ndarray]) -> np.ndarray:
        out = np.full((len(arrays), 3), np.nan)
        for i, a in enumerate(arrays):
            a = a[np.isfinite(a)]
            if a.size:
                out[i] = np.percentile(a, (25, 50, 75))
        return out

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(layers) + 3.0), 3.6), layout="constrained")
    x = np.arange(len(layers))
    for j, kind in enumerate(result.null):
        q = band([result.null_r2[n][kind] for n in names])
        ax.fill_between(x, q[:, 0], q[:, 2], color=f"C{j + 1}", alpha=0.2, lw=0)
        ax.plot(x, q[:, 1], "--", color=f"C{j + 1}", label=f"null: {kind} (median, 25-75 %)")
    q = band([result.r2[n] for n in names])
    ax.fill_between(x, q[:, 0], q[:, 2], color="C0", alpha=0.25, lw=0)
    ax.plot(x, q[:, 1], "o-", color="C0", ms=3, label="learned (median, 25-75 %)")
    _layer_axis(ax, layers)
    ax.set_ylabel("R² of the best model")
    ax.set_ylim(0, 1.0)
    ax.set_title("R² per depthwise layer: learned filters against null models", fontsize=10)
    return _finish(fig, path, dpi, legend=ax)


def plot_scales_by_depth(
    result: Any, *, path: str | os.PathLike[str] | None = None, dpi: int = 120
) -> Any:
    """Fitted scales against depth: sigma_x, sigma_y (median, 5-95 %) and alpha of type 7.

    Parameters
    ----------
    result : scalespace_mk.networks.checkpoint.AnalyzeResult
        The analysis (``sigma`` statistics per layer).
    path : str or path-like, optional
        If given, the figure is also written there, atomically.
    dpi : int
        Resolution used when writing ``path``.

    Returns
    -------
    matplotlib.figure.Figure
        Left: median and 5-95 % band of ``sigma_x`` and ``sigma_y`` (standard deviations in
        pixels) per layer; right: median and 5-95 % of ``alpha`` of the type-7 filters.
    """
    import numpy as np

    layers = result.layers

    def series(get: Any) -> np.ndarray:
        out = np.full((len(layers), 3), np.nan)
        for i, layer in enumerate(layers):
            q = get(layer["sigma"])
            if q:
                out[i] = (q["p5"], q["median"], q["p95"])
        return out

    plt = _pyplot()
    width = max(8.0, 0.45 * len(layers) + 4.0)
    fig, axes = plt.subplots(1, 2, figsize=(width, 3.6), layout="constrained")
    x = np.arange(len(layers))
    for j, key in enumerate(("sigma_x", "sigma_y")):
        q = series(lambda s, key=key: s[key])
        axes[0].fill_between(x + 0.1 * j, q[:, 0], q[:, 2], color=f"C{j}", alpha=0.2, lw=0)
        axes[0].plot(
            x + 0.1 * j,
            q[:, 1],
            "o-",
            ms=3,
            color=f"C{j}",
            label=f"{'σx' if j == 0 else 'σy'} (median, 5-95 %)",
        )
    axes[0].set_ylabel("fitted scale σ (pixels, standard deviation)")
    axes[0].set_title(
        "scales of the best models against depth\n(undetermined scales left out)", fontsize=10
    )
    _legend_outside(axes[0])
    q = series(lambda s: (s["by_type"].get("7") or {}).get("alpha"))
    axes[1].fill_between(x, q[:, 0], q[:, 2], color="C4", alpha=0.2, lw=0)
    axes[1].plot(x, q[:, 1], "o-", ms=3, color="C4")
    axes[1].set_ylabel("α of type-7 fits (median, 5-95 %)")
    axes[1].set_title("Laplacian weight of centre-surround filters", fontsize=10)
    for ax in axes:
        _layer_axis(ax, layers)
    if path is not None:
        _save_atomic(fig, path, dpi=dpi)
    return fig


def plot_gallery(
    gallery: Any, *, path: str | os.PathLike[str] | None = None, dpi: int = 120
) -> Any:
    """The worst- and best-explained filters beside their fitted models.

    Parameters
    ----------
    gallery : dict
        :meth:`scalespace_mk.networks.checkpoint.AnalyzeResult.gallery`: ``kernel_size``,
        ``worst`` and ``best`` entries with ``filter``, ``model``, ``type``, ``r2``,
        ``layer``, ``index``.
    path : str or path-like, optional
        If given, the figure is also written there, atomically.
    dpi : int
        Resolution used when writing ``path``.

    Returns
    -------
    matplotlib.figure.Figure
        Four rows (worst filters, their models, best filters, their models), one column per
        filter; filter and model share one colour range (stored layout, y up).
    """
    import numpy as np

    worst, best = list(gallery["worst"]), list(gallery["best"])
    n = max(len(worst), len(best))
    k = int(gallery["kernel_size"])
    blank = np.full((k, k), np.nan)
    panels = np.full((4, n, k, k), np.nan)
    notes = np.full((4, n), "", dtype=object)
    titles = []
    for j in range(n):
        titles.append(f"#{j + 1}")
        for row, entries in ((0, worst), (2, best)):
            if j < len(entries):
                e = entries[j]
                vmax = max(float(np.abs(e["filter"]).max()), float(np.abs(e["model"]).max()))
                panels[row, j] = e["filter"] / (vmax or 1.0)
                panels[row + 1, j] = e["model"] / (vmax or 1.0)
                layer = str(e.get("layer", "?")).removesuffix(".weight")
                where = f"{_short(layer, width=22)}\nch {e.get('index', '?')}"
                notes[row, j] = f"{where}, R² {e['r2']:.2f}"
                notes[row + 1, j] = type_label(e["type"])
            else:
                panels[row, j] = panels[row + 1, j] = blank
    fig = plot_filter_grid(
        panels,
        row_labels=["worst: filter", "its model", "best: filter", "its model"],
        col_titles=titles,
        notes=notes,
        share_column_scale=False,
        title=f"worst- and best-explained {k}x{k} filters\nbeside their models a g + b "
        "(layer, channel from 0)",
        vmax=1.0,
        colorbar="tap / max |tap| of the filter and its model",
    )
    for ax in fig.axes:
        ax.set_xlabel(ax.get_xlabel(), fontsize=6)
    if path is not None:
        _save_atomic(fig, path, dpi=dpi)
    return fig


def plot_comparison(
    comparison: Any, path: str | os.PathLike[str] | None = None, *, dpi: int = 120
) -> Any:
    """Median R^2 per stage of depth for several networks, each beside its null.

    Parameters
    ----------
    comparison : dict
        :func:`scalespace_mk.networks.checkpoint.compare`.
    path : str or path-like, optional
        If given, the figure is also written there, atomically.
    dpi : int
        Resolution used when writing ``path``.

    Returns
    -------
    matplotlib.figure.Figure
        Per network: learned median R^2 per stage (solid) and its headline null (dashed,
        same colour); the legend outside the axes.
    """
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6), layout="constrained")
    stages = np.arange(1, comparison["stages"] + 1)
    for j, net in enumerate(comparison["networks"]):
        learned = [np.nan if s["median_r2"] is None else s["median_r2"] for s in net["stages"]]
        null = [
            np.nan if s["null_median_r2"] is None else s["null_median_r2"] for s in net["stages"]
        ]
        label = Path(str(net["name"])).name
        ax.plot(stages, learned, "o-", color=f"C{j}", label=f"{label}: learned")
        kind = net["summary"].get("null_kind") or "no"
        ax.plot(stages, null, "x--", color=f"C{j}", label=f"{label}: {kind} null")
    ax.set_xticks(stages)
    ax.set_xlabel(f"stage of depth (layers cut into {comparison['stages']} equal groups)")
    ax.set_ylabel("median R² of the best model")
    ax.set_ylim(0, 1.0)
    ax.set_title("networks side by side: learned filters against their nulls", fontsize=10)
    return _finish(fig, path, dpi, legend=ax)


def plot_jet_basis(
    basis: Any,
    sigmas: Any,
    names: Any,
    *,
    path: str | os.PathLike[str] | None = None,
    title: str = "Discrete 2-jet basis",
    row_labels: Any = None,
    cmap: str = "RdBu_r",
    dpi: int = 150,
) -> Any:
    """The members of an N-jet (columns) at a few scales (rows).

    Parameters
    ----------
    basis : array_like, shape [S, M, k, k]
        Jet members at S scales (e.g. :func:`scalespace_mk.scalespace.jets.jet_basis`),
        stored-weight layout (y up on the page).
    sigmas : sequence of float [S]
        The scales (standard deviations), for the row labels.
    names : sequence of str [M]
        Member names (``T``, ``dx``, ...), for the column titles.
    path, title, cmap, dpi
        Output file (written atomically), figure title, colour map, resolution.
    row_labels : sequence of str [S], optional
        Row labels instead of ``sigma = ...`` (e.g. for oriented kernels).

    Returns
    -------
    matplotlib.figure.Figure
        Each panel on its own symmetric colour scale (red positive, blue negative).
    """
    import numpy as np

    plt = _pyplot()
    b = np.asarray(basis, dtype=float)
    s, m = b.shape[:2]
    fig, axes = plt.subplots(s, m, figsize=(1.3 * m, 1.4 * s + 0.6), squeeze=False)
    for i in range(s):
        for j in range(m):
            ax = axes[i, j]
            lim = float(np.abs(b[i, j]).max()) or 1.0
            ax.imshow(b[i, j], cmap=cmap, vmin=-lim, vmax=lim)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(str(names[j]))
            if j == 0:
                label = f"sigma = {float(sigmas[i]):g}" if row_labels is None else row_labels[i]
                ax.set_ylabel(str(label))
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        _save_atomic(fig, path, dpi=dpi)
    return fig


def plot_steering_error(
    theta: Any,
    errors: Any,
    labels: Any,
    *,
    path: str | os.PathLike[str] | None = None,
    title: str = "Steering error of the discrete directional derivatives",
    dpi: int = 150,
) -> Any:
    """Relative steering error against the angle, one curve per scale and order.

    Parameters
    ----------
    theta : array_like [A]
        Angles in radians (counter-clockwise from +x, y up).
    errors : array_like [L, A]
        Errors (:func:`scalespace_mk.scalespace.symbolic.steering_error`) per curve.
    labels : sequence of str [L]
        Curve labels (legend placed outside the axes).
    path, title, dpi
        Output file, figure title, resolution.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    deg = np.degrees(np.asarray(theta, dtype=float))
    for err, label in zip(np.asarray(errors, dtype=float), labels, strict=True):
        ax.plot(deg, 100.0 * err, label=str(label))
    ax.set_xlabel("theta (degrees, counter-clockwise from +x)")
    ax.set_ylabel("relative L2 error (%)")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    fig.tight_layout()
    if path is not None:
        _save_atomic(fig, path, dpi=dpi)
    return fig


# --------------------------------------------------------------------------------------------
# substitution studies (scalespace_mk.substitution.study)

_CONTROLS = ("noise", "random")


def _kind_style(kind: str) -> dict[str, Any]:
    """Controls dashed and grey-ish, fitted kinds solid."""
    base = kind.split(":", 1)[0]
    if base in _CONTROLS:
        return {"linestyle": "--", "color": "0.35" if base == "noise" else "0.65"}
    return {"linestyle": "-"}


def _check_study(study: Any) -> list[dict[str, Any]]:
    if not isinstance(study, dict) or "kinds" not in study:
        raise TypeError(
            "study must be the dict returned by scalespace_mk.substitution.study.run_study"
        )
    return list(study["kinds"])


def plot_substitution_progressive(
    study: dict[str, Any],
    *,
    measure: str = "top1_agreement",
    path: str | os.PathLike[str] | None = None,
    dpi: int = 150,
) -> Any:
    """Agreement against the number of substituted layers, per kind, controls dashed.

    Two panels: the first ``n`` layers (input side) and the last ``n`` (output side)
    substituted, original BatchNorm statistics; the band is the 95 % bootstrap interval
    over photos (seed ``seeds[0]`` for the controls).
    """
    kinds = [k for k in _check_study(study) if k.get("progressive")]
    if not kinds:
        raise ValueError("the study holds no progressive curves (run it with progressive=True)")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0), sharey=True, layout="constrained")
    for ax, order, label in zip(
        axes,
        ("first", "last"),
        ("first n layers (input side)", "last n layers (output side)"),
        strict=True,
    ):
        for entry in kinds:
            rows = entry["progressive"][order]
            n = [r["n"] for r in rows]
            v = [r[measure]["value"] for r in rows]
            lo = [r[measure]["low"] for r in rows]
            hi = [r[measure]["high"] for r in rows]
            (line,) = ax.plot(
                n, v, marker="o", ms=3, label=entry["kind"], **_kind_style(entry["kind"])
            )
            ax.fill_between(n, lo, hi, color=line.get_color(), alpha=0.12, linewidth=0)
        ax.set_xlabel(f"substituted depthwise layers: {label}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(measure.replace("_", " ") + " with the original")
    fig.suptitle("Substituting more layers: agreement with the original network (no recovery)")
    return _finish(fig, path, dpi, legend=axes[1])


def plot_substitution_sensitivity(
    study: dict[str, Any],
    *,
    measure: str = "top1_agreement",
    path: str | os.PathLike[str] | None = None,
    dpi: int = 150,
) -> Any:
    """Per-layer sensitivity (each layer substituted alone) beside each layer's median R^2.

    Top panel: ``measure`` per layer and kind (95 % interval as error bars); bottom panel:
    the median R^2 of the substitute filters of that layer.
    """
    kinds = [k for k in _check_study(study) if k.get("sensitivity")]
    if not kinds:
        raise ValueError("the study holds no per-layer sensitivity (run it with sensitivity=True)")
    import numpy as np

    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(10.5, 6.5), sharex=True, layout="constrained")
    width = 0.8 / len(kinds)
    for j, entry in enumerate(kinds):
        rows = entry["sensitivity"]
        x = [r["index"] + (j - (len(kinds) - 1) / 2) * width for r in rows]
        v = [r[measure]["value"] for r in rows]
        err = [
            [r[measure]["value"] - r[measure]["low"] for r in rows],
            [r[measure]["high"] - r[measure]["value"] for r in rows],
        ]
        style = _kind_style(entry["kind"])
        ax.errorbar(
            x,
            v,
            yerr=err,
            fmt="o",
            ms=3,
            capsize=1.5,
            label=entry["kind"],
            color=style.get("color"),
        )
        r2 = [np.nan if r["median_r2"] is None else r["median_r2"] for r in rows]
        bx.plot(
            x, r2, marker="s", ms=3, linestyle="none", label=entry["kind"], color=style.get("color")
        )
    ax.set_ylabel(measure.replace("_", " ") + "\n(this layer alone)")
    ax.grid(alpha=0.3)
    bx.set_ylabel("median R^2 of the\nlayer's substitutes")
    bx.grid(alpha=0.3)
    low = min(
        (r["median_r2"] for e in kinds for r in e["sensitivity"] if r["median_r2"] is not None),
        default=0.0,
    )
    if low < -1.0:  # the random control's R^2 is far below 0: keep the fits readable
        bx.set_ylim(-1.05, 1.05)
        bx.text(
            0.01,
            0.03,
            f"lowest median R^2 {low:.1f}: below the axis",
            fontsize=7,
            transform=bx.transAxes,
        )
    layers = kinds[0]["layers"]
    bx.set_xticks(range(len(layers)))
    bx.set_xticklabels([f"{i + 1}\nk{r['kernel_size']}" for i, r in enumerate(layers)], fontsize=6)
    bx.set_xlabel("depthwise layer substituted alone, input to output (k: kernel size)")
    fig.suptitle("Per-layer sensitivity: one layer substituted, beside its filters' fit (R^2)")
    return _finish(fig, path, dpi, legend=ax)


def plot_substitution_recovery(
    study: dict[str, Any],
    *,
    measure: str = "top1_agreement",
    path: str | os.PathLike[str] | None = None,
    dpi: int = 150,
) -> Any:
    """Recovery against distillation steps: ``measure`` on held-out photos, one thin line per
    seed and the mean over seeds bold, per kind (controls dashed). Step 0 is the network
    after BatchNorm re-estimation."""
    kinds = [k for k in _check_study(study) if any(r.get("distilled") for r in k["runs"])]
    if not kinds:
        raise ValueError("the study holds no distillation runs (run it with distill_steps > 0)")
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.5), layout="constrained")
    for entry in kinds:
        curves = [r["distilled"]["curve"] for r in entry["runs"] if r.get("distilled")]
        steps = [p["step"] for p in curves[0]]
        values = np.array([[p[measure]["value"] for p in c] for c in curves])
        style = _kind_style(entry["kind"])
        (line,) = ax.plot(
            steps,
            values.mean(0),
            marker="o",
            ms=3,
            lw=2,
            label=f"{entry['kind']} (mean of {len(curves)} seeds)",
            **style,
        )
        for row in values:
            ax.plot(
                steps, row, lw=0.6, alpha=0.5, color=line.get_color(), linestyle=style["linestyle"]
            )
    ax.set_xlabel("distillation steps (no labels; the original network is the teacher)")
    ax.set_ylabel(measure.replace("_", " ") + " on held-out photos")
    ax.grid(alpha=0.3)
    fig.suptitle("Recovery by distillation after BatchNorm re-estimation")
    return _finish(fig, path, dpi, legend=ax)


def plot_substitution(
    study: dict[str, Any], directory: str | os.PathLike[str], *, dpi: int = 120
) -> list[Path]:
    """Write every figure the study supports into ``directory``: ``progressive.png``,
    ``sensitivity.png``, ``recovery.png`` (those without data are left out). Returns the
    paths written."""
    plt = _pyplot()
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--plot {str(directory)!r} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    kinds = _check_study(study)
    out = []
    jobs = (
        (
            "progressive.png",
            plot_substitution_progressive,
            any(k.get("progressive") for k in kinds),
        ),
        (
            "sensitivity.png",
            plot_substitution_sensitivity,
            any(k.get("sensitivity") for k in kinds),
        ),
        (
            "recovery.png",
            plot_substitution_recovery,
            any(r.get("distilled") for k in kinds for r in k["runs"]),
        ),
    )
    for name, fn, has in jobs:
        if has:
            fig = fn(study, path=folder / name, dpi=dpi)
            plt.close(fig)
            out.append(folder / name)
    return out


def plot_family_analysis(
    out: dict[str, Any], parts: dict[int, Any], directory: str | os.PathLike[str], *, dpi: int = 120
) -> list[Path]:
    """Figures of ``analyze --family``: R^2 of the family beside its nulls, and per layer.

    Parameters
    ----------
    out : dict
        The ``analyze --family --json`` object (``family``, ``order``, ``layers``).
    parts : dict
        ``{k: (FamilyCensusResult, {kind: FamilyCensusResult})}`` per fitted kernel size.
    directory : str or path-like
        Folder (created if missing): ``family_r2.png`` (histogram of R^2 per kernel size,
        learned and null filters) and ``family_r2_per_layer.png`` (median R^2 and adjusted
        R^2 per layer).
    dpi : int
        Resolution.

    Returns
    -------
    list of pathlib.Path
        The written files.
    """
    import numpy as np

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    label = f"{out['family']} order {out['order']}"
    sizes = sorted(parts)
    fig, axes = plt.subplots(
        1, len(sizes), figsize=(4.6 * len(sizes) + 1.2, 3.4), layout="constrained", squeeze=False
    )
    for ax, k in zip(axes[0], sizes, strict=True):
        result, nulls = parts[k]
        r2 = result.r2[result.valid]
        ax.hist(r2, bins=40, range=(0, 1), color="C0", alpha=0.8, label="learned")
        for j, (kind, res) in enumerate(sorted(nulls.items())):
            ax.hist(
                res.r2[res.valid],
                bins=40,
                range=(0, 1),
                histtype="step",
                lw=1.5,
                color=f"C{j + 1}",
                label=f"null: {kind}",
            )
        ax.set_xlabel(f"R² of the {label} fit")
        ax.set_ylabel("filters")
        med = f"{np.median(r2):.3f}" if r2.size else "-"
        ax.set_title(f"{k}x{k}: {r2.size} filters (median {med})", fontsize=9)
    _legend_outside(axes[0][-1])
    paths = [_save_atomic(fig, directory / "family_r2.png", dpi=dpi)]
    plt.close(fig)
    layers = out["layers"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(layers) + 3.0), 3.4), layout="constrained")
    x = np.arange(len(layers))
    for key, name, c in (
        ("median_r2", "median R²", "C0"),
        ("median_r2_adjusted", "adjusted", "C1"),
    ):
        y = [np.nan if la[key] is None else la[key] for la in layers]
        ax.plot(x, y, "o-", ms=3, color=c, label=name)
    ax.set_ylabel(f"R² of the {label} fit")
    ax.set_ylim(0, 1)
    ax.set_title(f"{label} per layer (skipped: {len(out.get('skipped', []))} layers)", fontsize=10)
    if layers:
        _layer_axis(ax, layers)
    _legend_outside(ax)
    paths.append(_save_atomic(fig, directory / "family_r2_per_layer.png", dpi=dpi))
    plt.close(fig)
    return paths


def plot_population(
    result: Any, *, path: str | os.PathLike[str] | None = None, dpi: int = 120
) -> Any:
    """Population measures per layer (:mod:`scalespace_mk.analysis.population`).

    Parameters
    ----------
    result : scalespace_mk.networks.checkpoint.AnalyzeResult
        The analysis (``population`` per layer).
    path : str or path-like, optional
        If given, the figure is also written there, atomically.
    dpi : int
        Resolution used when writing ``path``.

    Returns
    -------
    matplotlib.figure.Figure
        Left: variance entropy per layer with its i.i.d. randomness threshold, and
        orthogonality with its i.i.d. value. Right: median R^2 of the 8 types beside the PCA
        bound of a basis of the same size (m = 4) and the shape / covariance nulls.
    """
    import numpy as np

    layers = result.layers
    x = np.arange(len(layers))

    def get(fn: Any) -> np.ndarray:
        out = []
        for la in layers:
            v = fn(la)
            out.append(np.nan if v is None else v)
        return np.array(out, dtype=float)

    plt = _pyplot()
    width = max(8.0, 0.45 * len(layers) + 4.0)
    fig, axes = plt.subplots(1, 2, figsize=(width, 3.6), layout="constrained")
    pop = lambda key: get(lambda la: la["population"].get(key))  # noqa: E731
    axes[0].plot(x, pop("variance_entropy"), "o-", ms=3, color="C0", label="variance entropy")
    axes[0].plot(x, pop("entropy_threshold"), "--", color="C0", label="i.i.d. threshold (5 %)")
    axes[0].plot(x, pop("orthogonality"), "s-", ms=3, color="C1", label="orthogonality")
    axes[0].plot(x, pop("orthogonality_iid"), ":", color="C1", label="i.i.d. orthogonality")
    axes[0].plot(x, pop("sparsity"), "^-", ms=3, color="C2", label="sparsity")
    axes[0].set_ylim(0, 1.05)
    axes[0].set_ylabel("population measure")
    axes[0].set_title("population measures per layer (CNN Filter DB)", fontsize=10)
    _legend_outside(axes[0])
    axes[1].plot(x, get(lambda la: la["median_r2"]), "o-", ms=3, color="C0", label="8 types")
    axes[1].plot(
        x,
        get(lambda la: la["population"]["pca_bound"].get("masterkey")),
        "--",
        color="C3",
        label="best 4-dim. linear basis (PCA)",
    )
    for j, kind in enumerate(("shape", "covariance", "iid")):
        axes[1].plot(
            x,
            get(lambda la, kind=kind: (la["nulls"].get(kind) or {}).get("null_median_r2")),
            ":",
            color=f"C{4 + j}",
            label=f"null: {kind}",
        )
    axes[1].set_ylim(0, 1.05)
    axes[1].set_ylabel("median R²")
    axes[1].set_title("R² against a basis of its size and the nulls", fontsize=10)
    _legend_outside(axes[1])
    for ax in axes:
        _layer_axis(ax, layers)
    if path is not None:
        _save_atomic(fig, path, dpi=dpi)
    return fig
