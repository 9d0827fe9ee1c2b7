"""Render the results of ``experiments/masterkey_real.py``: markdown, figures, JSON.

Nothing here computes a result: :func:`render` turns the ``results.json`` dictionary and the
arrays of ``figure_data.npz`` (both written by :func:`masterkey_real.run_experiment`) into
``results.md`` and its figures; :func:`publish` writes them into ``docs/`` (the top part of
``docs/results.md``, keeping any later section such as the MobileNetV2 analysis).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FIGURES", "KEEP_SECTIONS", "publish", "render", "render_markdown"]

#: Figure file names (under the figures folder).
FIGURES = {
    "accuracy": "results_accuracy.png",
    "census": "results_census.png",
    "learned_vs_models": "results_learned_vs_models.png",
    "extracted": "results_extracted.png",
}
#: Sections of an existing docs/results.md that publishing keeps (written by other analyses).
KEEP_SECTIONS = ("## A real network: MobileNetV2 (ImageNet)",)


def _write_text(path: Path, text: str) -> None:
    from scalespace_mk._io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _pm(block: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std [lo, hi]`` of an interval block."""
    m, s = block["mean"] * scale, block["std"] * scale
    lo, hi = (v * scale for v in block["ci95"])
    if not np.isfinite(s):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {s:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


# --------------------------------------------------------------------------------------
# figures


def figures(out: Path, res: dict[str, Any], folder: Path) -> dict[str, str]:
    """Write the figures of the report into ``folder``; returns name -> file name."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from scalespace_mk.plot import plot_filter_grid

    folder.mkdir(parents=True, exist_ok=True)
    data = np.load(out / "figure_data.npz")
    load = res["machine"]["load_start"][0]
    written: dict[str, str] = {}

    # 1. accuracy per variant: seeds as dots, mean and 95 % interval as a bar
    names = [v for v, b in res["variants"].items() if b is not None]
    fig, ax = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
    for i, name in enumerate(names):
        b = res["variants"][name]
        acc = 100 * np.asarray(b["val_acc"])
        ax.plot(np.full(len(acc), i), acc, "o", color="0.55", ms=4, zorder=2)
        lo, hi = (100 * v for v in b["ci95"])
        ax.errorbar(
            i,
            100 * b["mean"],
            yerr=[[100 * b["mean"] - lo], [hi - 100 * b["mean"]]],
            fmt="s",
            color="C0",
            capsize=5,
            zorder=3,
        )
    ax.set_xticks(range(len(names)), names)
    ax.set_xlabel("depthwise filters")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(
        f"{res['dataset']} at {res['image_size']} px, {len(res['seeds'])} seeds: "
        "mean and 95 % t-interval"
    )
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(folder / FIGURES["accuracy"], dpi=120)
    plt.close(fig)
    written["accuracy"] = FIGURES["accuracy"]

    # 2. census median R^2 per stage: learned against both nulls (per seed and interval)
    stages = res["census"]["stages"]
    keys = sorted(stages, key=int)
    fig, ax = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
    width = 0.25
    for j, (kind, label) in enumerate(
        [("learned", "learned"), ("null_iid", "i.i.d. null"), ("null_phase", "phase null")]
    ):
        for i, st in enumerate(keys):
            b = stages[st][kind]
            x = i + (j - 1) * width
            seeds = [s[kind]["median_r2"] for s in stages[st]["seeds"].values()]
            ax.plot(np.full(len(seeds), x), seeds, ".", color="0.55", ms=4)
            lo, hi = b["ci95"]
            yerr = [[b["mean"] - lo], [hi - b["mean"]]] if np.isfinite(lo) else None
            ax.errorbar(
                x,
                b["mean"],
                yerr=yerr,
                fmt="s",
                color=f"C{j}",
                capsize=4,
                label=label if i == 0 else None,
            )
    ax.set_xticks(
        range(len(keys)),
        [f"stage {s}\n{stages[s]['side']} px{' *' if stages[s]['analysed'] else ''}" for s in keys],
    )
    ax.set_ylabel("census median R²")
    ax.set_ylim(0, 1)
    ax.set_title("learned filters against the nulls (* analysed stages)")
    ax.legend(loc="upper right", fontsize=8, frameon=True)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(folder / FIGURES["census"], dpi=120)
    plt.close(fig)
    written["census"] = FIGURES["census"]

    # 3. learned filters beside their census models
    r2, counts = data["r2"], data["counts"]
    notes = np.full((4, 8), "", dtype=object)
    for t in range(8):
        for k in range(2):
            if np.isfinite(r2[k, t]):
                notes[2 * k, t] = f"R² {r2[k, t]:.2f}"
    fig = plot_filter_grid(
        data["panels"],
        row_labels=["best R²", "its model", "median R²", "its model"],
        col_titles=[f"type {t + 1} (n={counts[t]})" for t in range(8)],
        notes=notes,
        title=f"learned filters (maps >= {res['setup']['min_side']} px, seed "
        f"{res['seeds'][0]}) beside their census models a·g + b",
        path=folder / FIGURES["learned_vs_models"],
    )
    plt.close(fig)
    written["learned_vs_models"] = FIGURES["learned_vs_models"]

    # 4. extracted master filters beside the published 8
    pub = data["published"]
    flat = pub.reshape(8, -1) - pub.reshape(8, -1).mean(axis=1, keepdims=True)
    pub = (flat / np.linalg.norm(flat, axis=1, keepdims=True)).reshape(pub.shape)
    ex = res["extraction"]
    fig = plot_filter_grid(
        np.stack([pub, data["extracted"]]),
        row_labels=["published 8", "extracted"],
        col_titles=[
            f"{j + 1}: r={ex['corr_published'][j]:.2f}, {100 * ex['share'][j]:.0f}%"
            for j in range(8)
        ],
        title=f"8 master filters extracted from the learned runs (load {load:.1f})",
        path=folder / FIGURES["extracted"],
    )
    plt.close(fig)
    written["extracted"] = FIGURES["extracted"]
    return written


# --------------------------------------------------------------------------------------
# markdown


def _accuracy_table(res: dict[str, Any]) -> list[str]:
    lines = [
        "| variant | depthwise filters | val. accuracy % per seed | mean ± std [95 % CI] | "
        "vs learned |",
        "|---|---|---|---|---|",
    ]
    for name, b in res["variants"].items():
        if b is None:
            lines.append(f"| {name} | - | not run: {res.get('njet_reason') or 'n/a'} | - | - |")
            continue
        per_seed = ", ".join(f"{100 * a:.2f}" for a in b["val_acc"])
        if name == "learned":
            verdict = "baseline"
        else:
            d = 100 * b["difference_to_learned"]
            verdict = f"{d:+.1f} points, " + (
                "intervals separate" if b["separated_from_learned"] else "intervals overlap"
            )
        lines.append(
            f"| {name} | {b['description']} | {per_seed} | {_pm(b, digits=2)} | {verdict} |"
        )
    return lines


def _census_table(res: dict[str, Any]) -> list[str]:
    stages = res["census"]["stages"]
    lines = [
        "| stage | map | filters/seed | learned | i.i.d. null | phase null | "
        "learned / i.i.d. | share R² > 0.8 (learned) | target met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for st in sorted(stages, key=int):
        e = stages[st]
        first = next(iter(e["seeds"].values()))
        share = np.mean([s["learned"]["share_r2_gt_0_8"] for s in e["seeds"].values()])
        ratio = e["learned"]["mean"] / e["null_iid"]["mean"]
        met = ("yes" if e["target_met"] else "**no**") if e["analysed"] else "(not analysed)"
        lines.append(
            f"| {st} | {e['side']} px | {first['learned']['filters']} | "
            f"{_pm(e['learned'], 1, 3)} | {_pm(e['null_iid'], 1, 3)} | "
            f"{_pm(e['null_phase'], 1, 3)} | {ratio:.2f} | {100 * share:.1f} % | {met} |"
        )
    return lines


def _scales_table(res: dict[str, Any]) -> list[str]:
    sc = res["learnable_scales"]
    if not sc:
        return ["(no learnable run)"]
    lines = [
        "| stage | start (method B) | end (learnable) | median abs. change | "
        "census of the learned run |",
        "|---|---|---|---|---|",
    ]
    for st in sorted(sc, key=int):
        e = sc[st]
        fit = e.get("learned_census")
        lines.append(
            f"| {st} | {_pm(e['start'], 1, 3)} | {_pm(e['end'], 1, 3)} | "
            f"{_pm(e['moved'], 1, 3)} | {_pm(fit, 1, 3) if fit else '-'} |"
        )
    return lines


def _fits_table(res: dict[str, Any]) -> list[str]:
    ex = res["extraction"]
    lines = ["| method | " + " | ".join(str(j) for j in range(1, 9)) + " |"]
    lines.append("|---|" + "---|" * 8)
    for method, row in ex["fits"].items():
        cells = ["ok" if v == "ok" else "fails" for v in row]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _longer_text(res: dict[str, Any]) -> list[str]:
    lt = res.get("longer_training")
    if not lt:
        return []
    lines = [
        "### Longer training (learned filters only)",
        "",
        f"The learned variant alone, {lt['epochs']} epochs instead of {res['epochs']} (same "
        f"data, seeds {', '.join(map(str, lt['seeds']))}): validation accuracy "
        f"{_pm(lt, digits=2)} %. Census per stage:",
        "",
        "| stage | map | learned | i.i.d. null | phase null | target met |",
        "|---|---|---|---|---|---|",
    ]
    for st in sorted(lt["census_stages"], key=int):
        e = lt["census_stages"][st]
        met = ("yes" if e["target_met"] else "**no**") if e["analysed"] else "(not analysed)"
        lines.append(
            f"| {st} | {e['side']} px | {_pm(e['learned'], 1, 3)} | {_pm(e['null_iid'], 1, 3)} "
            f"| {_pm(e['null_phase'], 1, 3)} | {met} |"
        )
    return [*lines, ""]


def _builtin_text(res: dict[str, Any]) -> list[str]:
    b = res["builtin"]
    if b["replace"]:
        return [
            "These filters are clearly structured and fitted by every method: they may replace "
            "the package's `builtin` filters.",
            "",
        ]
    return [
        "The package no longer ships the `builtin` filters (extracted from the earlier "
        "32-px run, whose filters were not structured either): these would not be better "
        "because " + "; ".join(b["reasons"]) + ". The published 8 ship with the package, so "
        "the fitting commands work offline without them.",
        "",
    ]


def _data_text(res: dict[str, Any]) -> str:
    s = res["setup"]
    if res["dataset"] != "fashion-mnist":
        return f"{res['dataset']} at {s['image_size']} px."
    return (
        "Fashion-MNIST (Zalando Research, MIT licence; Debian package "
        "`dataset-fashion-mnist`, read offline from its idx files, checksums verified): the "
        "first training images for training, the first official test images for validation, "
        f"upscaled from 28 to {s['image_size']} px so that the 4x4 stem leaves maps of "
        f"{s['image_size'] // 4} px in stage 0."
    )


def _why_data(res: dict[str, Any]) -> list[str]:
    if res["dataset"] != "fashion-mnist":
        return []
    return [
        "Why Fashion-MNIST: real labelled photographs that install offline as a Debian "
        "package (MIT licence; nothing is downloaded at run time), small enough that a "
        "shared CPU trains several seeds of every variant in about an hour. Its images are "
        "grey-level product photos on a plain background, not natural scenes, so what the "
        "filters learn here is not what ImageNet teaches; natural photographs (scikit-image's, "
        "the `builtin` patches) were not used for the main experiment because at the sizes a "
        "CPU can train their task is solved by colour and texture statistics.",
        "",
    ]


def render_markdown(res: dict[str, Any], figs: dict[str, str], fig_rel: str, command: str) -> str:
    """The results page (top part of ``docs/results.md``) as markdown."""
    s = res["setup"]
    m = res["machine"]
    c = res["census"]
    analysed = [st for st, e in c["stages"].items() if e["analysed"]]
    n_runs = sum(len(b["val_acc"]) for b in res["variants"].values() if b is not None)
    speeds = [
        r.get("images_per_s", float("nan"))
        for b in res["variants"].values()
        if b is not None
        for r in b["runs"]
    ]
    lines = [
        "# Results: the master-key experiment on real data",
        "",
        f"Generated by `{command}`; every number below is read from `results.json` "
        "(published as `docs/results.json`).",
        "",
        "## Setup",
        "",
        f"- Data: `{s['data']}`: {_data_text(res)}",
        f"- Network: `{s['model']}` (ConvNeXt-V2, 7x7 depthwise filters); "
        f"{'stages' if len(analysed) > 1 else 'stage'} {', '.join(analysed)} "
        f"{'work' if len(analysed) > 1 else 'works'} on maps of at least {s['min_side']} px "
        f"and only {'they are' if len(analysed) > 1 else 'it is'} analysed (at 7 px and below a "
        "7x7 filter mostly sees padding).",
        f"- Budget per run: {s['epochs']} epochs, batch {s['batch_size']}, AdamW, base lr "
        f"{s['lr']:g} per 256 samples (cosine, warm-up {s['warmup_epochs']:g} epoch), "
        f"weight decay {s['weight_decay']:g}, augmentation `{s['augment']}`, label smoothing "
        "0.1, one torch thread.",
        f"- Seeds: {', '.join(map(str, res['seeds']))} (every variant once per seed; the "
        "replacement variants start from the learned run of the same seed).",
        f"- Compute: {n_runs} runs taking {res['run_s_total'] / 60:.0f} min of run time in "
        f"all, {m['workers']} at a time with one thread each, on {m['processor']} "
        f"({m['cpus']} cores shared with other jobs); training throughput "
        f"{min(speeds):.0f}-{max(speeds):.0f} images/s per run (mean over its epochs), which "
        "measures the load the runs met; load average "
        f"{m['load_start'][0]:.1f} when this analysis started, which took "
        f"{(res['wall_s'] - res['train_s']) / 60:.1f} min.",
        "",
        *_why_data(res),
        "## Accuracy of the variants",
        "",
        f"Validation accuracy after the last epoch; 95 % t-interval over the "
        f"{len(res['seeds'])} seeds. A difference is stated only where the intervals of "
        "the two variants do not overlap.",
        "",
        *_accuracy_table(res),
        "",
        f"![accuracy]({fig_rel}/{figs['accuracy']})",
        "",
        "## Census of the learned filters against the null models",
        "",
        "Median R² of the best `a g + b` of the 8 master-key types (fitted scales) per "
        "stage, mean ± std over seeds [95 % CI]. The i.i.d. null replaces every filter by "
        "Gaussian noise of the same shape; the phase null keeps each filter's 2-D power "
        "spectrum and randomises its phases (nulls from "
        f"{c['null_source']}). Target: {c['target']}.",
        "",
        *_census_table(res),
        "",
        f"Pooled over the analysed stages and seeds: learned median R² "
        f"{c['learned']['median_r2']:.3f} (share > 0.8: "
        f"{100 * c['learned']['share_r2_gt_0_8']:.1f} %), i.i.d. null "
        f"{c['null_iid']['median_r2']:.3f}, phase null {c['null_phase']['median_r2']:.3f}. "
        f"Target {'met' if c['target_met'] else 'NOT met'} in every analysed stage.",
        "",
        f"![census]({fig_rel}/{figs['census']})",
        "",
        f"![learned filters beside their models]({fig_rel}/{figs['learned_vs_models']})",
        "",
        *_longer_text(res),
        "## Scales of the learnable variant",
        "",
        "Median per layer of `sqrt(sigma_x sigma_y)` (pixels, standard deviations) at the "
        "start (method-B fit of the published filter of the channel's type) and after "
        "training, against the median census scale of the learned run's filters; mean ± std "
        "[95 % CI] over the layers of the stage and the seeds (learnable) or over the seeds "
        "(census).",
        "",
        *_scales_table(res),
        "",
        "## Master filters extracted from the learned runs",
        "",
        f"Sign- and scale-invariant k-means of the {res['extraction']['count']} learned "
        "filters of the analysed stages (all seeds) into 8 clusters "
        f"({100 * res['extraction']['explained']:.1f} % of their variance explained), "
        "ordered like the published 8 (r: correlation with the published partner; %: "
        "cluster share). Census R² of each: "
        + ", ".join(f"{r:.2f}" for r in res["extraction"]["census_r2"])
        + ". Fitted by every method (type j to filter j):",
        "",
        *_fits_table(res),
        "",
        f"![extracted]({fig_rel}/{figs['extracted']})",
        "",
        *_builtin_text(res),
    ]
    lines += ["## Reading", "", *_reading(res), ""]
    return "\n".join(lines)


def _reading(res: dict[str, Any]) -> list[str]:
    """A short reading of the numbers, every statement computed from ``res``."""
    c = res["census"]
    out = []
    analysed = {st: e for st, e in c["stages"].items() if e["analysed"]}
    for st, e in sorted(analysed.items(), key=lambda kv: int(kv[0])):
        lr, iid, ph = e["learned"], e["null_iid"], e["null_phase"]
        above_iid = lr["ci95"][0] > iid["ci95"][1]
        above_phase = lr["ci95"][0] > ph["ci95"][1]
        out.append(
            f"- Stage {st} ({e['side']} px): the learned filters' median R² "
            f"{lr['mean']:.3f} is {lr['mean'] / iid['mean']:.1f}x the i.i.d. null "
            f"({'interval above it' if above_iid else 'intervals overlap'}) and "
            f"{'above' if above_phase else 'not above'} the phase-randomised null "
            f"{ph['mean']:.3f}. "
            + (
                "The filters are structured, and the structure is more than their power "
                "spectrum: the master-key models fit the learned filters better than "
                "filters with the same spectrum and random phases."
                if e["target_met"]
                else (
                    "The filters have more structure than noise, but a filter with the same "
                    "power spectrum and random phases is fitted about as well: what the "
                    "census sees here is the filters' smoothness (their spectrum), not the "
                    "specific shapes of the master key types."
                    if above_iid
                    else "The filters are not distinguishable from noise by the census."
                )
            )
        )
    base = res["variants"]["learned"]
    sep = [v for v in res["separated_from_learned"]]
    same = [
        v for v, b in res["variants"].items() if b is not None and v != "learned" and v not in sep
    ]
    if same:
        diffs = [100 * res["variants"][v]["difference_to_learned"] for v in same]
        out.append(
            f"- Accuracy: {', '.join(same)} cannot be told apart from the learned filters "
            f"({100 * base['mean']:.1f} %) with {len(res['seeds'])} seeds: their 95 % "
            f"intervals overlap (mean differences {min(diffs):+.1f} to {max(diffs):+.1f} "
            "points; no finding is stated)."
        )
    for v in sep:
        b = res["variants"][v]
        out.append(
            f"- Accuracy: {v} is {'below' if b['difference_to_learned'] < 0 else 'above'} the "
            f"learned filters by {abs(100 * b['difference_to_learned']):.1f} points, with "
            "non-overlapping 95 % intervals."
        )
    if res["variants"].get("random") is not None and "random" not in sep:
        out.append(
            "- The random-filter control does not collapse at this budget: with per-channel "
            "a, b, a bias and trainable 1x1 convolutions around it, the network compensates "
            "for arbitrary fixed 7x7 filters on this task, so equal accuracy of the "
            "master-key variants is weak evidence for the hypothesis here."
        )
    sc = res["learnable_scales"]
    if sc:
        moved = max(e["moved"]["mean"] for e in sc.values())
        out.append(
            f"- The learnable scales moved little (largest per-stage median change "
            f"{moved:.3f} px) from their method-B start; the learned run's census scales are "
            "listed beside them for comparison."
        )
    ex = res["extraction"]
    out.append(
        f"- The 8 master filters extracted from the learned runs correlate "
        f"{min(ex['corr_published']):.2f}-{max(ex['corr_published']):.2f} with the published "
        f"8; {'every' if ex['all_methods_fit'] else 'not every'} fitting method fits all of "
        "them."
    )
    lt = res.get("longer_training")
    if lt:
        e = lt["census_stages"]["0"] if "0" in lt["census_stages"] else None
        if e is not None:
            out.append(
                f"- With {lt['epochs']} epochs the stage-0 median R² is {e['learned']['mean']:.3f} "
                f"against {e['null_phase']['mean']:.3f} for the phase null: the target is "
                f"{'met' if e['target_met'] else 'still not met'}."
            )
    out.append(
        "- Reproducibility: a rerun with the same seed on the same machine gives identical "
        "weights and numbers (tested by the smoke test). The spread across machines was not "
        "measured: no second machine was available for this run. With 3 seeds the t-intervals "
        "are wide (t = 4.30), so only large differences can separate."
    )
    out.append(
        "- What this does not show: anything about ImageNet-scale training, where the "
        "published filters come from. The budget (a few hundred optimizer steps per run) is "
        "that of a shared 2-core CPU."
    )
    return out


def render(
    out: Path, res: dict[str, Any], markdown: Path, figure_dir: Path, *, command: str
) -> None:
    """Write ``markdown`` and the figures (in ``figure_dir``) of the run folder ``out``."""
    figs = figures(out, res, figure_dir)
    rel = Path(figure_dir).resolve().relative_to(Path(markdown).resolve().parent)
    _write_text(markdown, render_markdown(res, figs, rel.as_posix(), command))


def _kept_sections(text: str) -> str:
    """The sections of an existing results page that other analyses own."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() in KEEP_SECTIONS:
            return "\n".join(lines[i:]).rstrip() + "\n"
    return ""


def publish(out: Path, res: dict[str, Any], docs: Path, *, command: str) -> None:
    """Write ``docs/results.md`` (keeping :data:`KEEP_SECTIONS`), ``docs/results.json`` and
    the figures under ``docs/figures``."""
    page = docs / "results.md"
    kept = _kept_sections(page.read_text()) if page.exists() else ""
    figs = figures(out, res, docs / "figures")
    text = render_markdown(res, figs, "figures", command)
    _write_text(page, text + ("\n" + kept if kept else ""))
    _write_text(docs / "results.json", json.dumps(res, indent=1, default=float) + "\n")
