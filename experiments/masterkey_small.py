"""The master-key experiment at small scale, on a CPU, offline (docs/method.md#networks).

On the ``builtin`` natural-image patches (scikit-image photographs, nothing downloaded):

1. train a small ConvNeXt-V2 with learned 7x7 depthwise filters (``learned``);
2. run the census (best ``a g + b`` of the 8 master-key types, with fitted scales) on all its
   depthwise filters and on Gaussian i.i.d. random filters of the same shapes;
3. extract 8 master filters from the learned filters, order them like the published 8 and
   fit the idealised models to them and to the published 8 (fitting methods of
   docs/method.md#fitting);
4. train, with the same budget, networks whose depthwise filters are replaced per channel
   (least-squares linear shift of docs/method.md#networks, from the learned run) by frozen
   idealised models
   of method B (``idealized-B``), by the same models with learnable scales
   (``learnable-B``) and by the frozen published master key filters (``masterkey``);
5. write ``docs/results.md`` (accuracy table, census table, extracted filters, fit tables)
   and its figures under ``docs/figures/``.

Usage::

    python experiments/masterkey_small.py                 # full run, <= 20 min on 2 cores
    python experiments/masterkey_small.py --smoke --out /tmp/mk   # CI version, < 60 s

The full run writes its training runs under ``runs/masterkey_small`` (``--out``), the
report to ``docs/results.md`` (``--results``) and figures to ``docs/figures`` (``--figures``);
the smoke run writes everything under ``--out``. Afterwards
``python experiments/make_builtin_filters.py`` turns the learned run into the packaged
``builtin`` filters. The published filters are read with
:func:`scalespace_mk.analysis.filters.load_filters` (the copy shipped in the package).

Everything is seeded (``--seed``): on the same machine and thread count a rerun gives the
same numbers. Conventions: filters are stored depthwise weights ``h[r, c]`` (y up:
``x = c - m``, ``y = m - r``), ``sigma`` is a standard deviation in pixels.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:  # the shared helpers of make_builtin_filters.py
    sys.path.insert(0, str(HERE))

from make_builtin_filters import (  # noqa: E402
    MIN_SIDE,
    feature_side,
    master_filters,
    pooled_filters,
)

__all__ = ["FULL", "SMOKE", "VARIANTS", "Setup", "main", "run_experiment"]

#: The training variants: name -> TrainConfig fields (all but ``learned`` replace from it).
VARIANTS: dict[str, dict[str, Any]] = {
    "learned": {"dwconv": "learned"},
    "idealized-B": {"dwconv": "idealized", "method": "B"},
    "learnable-B": {"dwconv": "learnable", "method": "B"},
    "masterkey": {"dwconv": "masterkey"},
}

_DESCRIPTION = {
    "learned": "learned 7x7 filters (baseline)",
    "idealized-B": "frozen idealised models (method B of the published 8), per-channel a, b",
    "learnable-B": "idealised models with learnable scales (start: method B), a, b",
    "masterkey": "frozen published master key filters, per-channel a, b",
}


@dataclass(frozen=True)
class Setup:
    """Budget of one experiment run.

    Attributes
    ----------
    name : str
        ``"full"`` or ``"smoke"``.
    model : str
        Registered ConvNeXt-V2 (7x7 depthwise filters).
    data : str
        Dataset specification (``builtin[:options]``).
    image_size : int
        Training resolution (pixels).
    epochs, batch_size, max_steps_per_epoch : int
        Training budget of every variant (``max_steps_per_epoch`` 0: whole epochs).
    lr, warmup_epochs : float
        Base learning rate per 256 samples and warm-up length.
    fit_methods : tuple of str
        Fitting methods (docs/method.md#fitting) applied to the extracted and the published filters.
    """

    name: str
    model: str
    data: str
    image_size: int
    epochs: int
    batch_size: int
    max_steps_per_epoch: int
    lr: float
    warmup_epochs: float
    fit_methods: tuple[str, ...]


#: The full experiment: convnextv2_atto at 32 x 32 px, 4 variants x 10 epochs (about 15 min
#: on 2 cores with one torch thread). The base lr 1e-2 (peak 2.5e-3 at batch 64) is above
#: the preset's 2e-3: in so few steps the depthwise filters barely leave their random
#: initialisation at the lower rate (measured: census median R^2 0.11, as for random filters).
FULL = Setup(
    name="full",
    model="convnextv2_atto",
    data="builtin",
    image_size=32,
    epochs=10,
    batch_size=64,
    max_steps_per_epoch=0,
    lr=1e-2,
    warmup_epochs=1.0,
    fit_methods=("B", "C1"),
)
#: The CI version: the 4-stage test network, a few optimizer steps (< 60 s on 2 cores).
SMOKE = Setup(
    name="smoke",
    model="convnextv2_test",
    data="builtin:train=192,val=96",
    image_size=32,
    epochs=1,
    batch_size=32,
    max_steps_per_epoch=3,
    lr=2e-3,
    warmup_epochs=0.5,
    fit_methods=("B",),
)


# --------------------------------------------------------------------------------------
# training


def _train_config(setup: Setup, variant: str, seed: int, source: Path | None) -> Any:
    from scalespace_mk.training.train import PRESETS, TrainConfig

    values = dict(PRESETS["builtin-cpu"])
    values.update(
        model=setup.model,
        data=setup.data,
        image_size=setup.image_size,
        epochs=setup.epochs,
        batch_size=setup.batch_size,
        max_steps_per_epoch=setup.max_steps_per_epoch,
        lr=setup.lr,
        warmup_epochs=setup.warmup_epochs,
        seed=seed,
        **VARIANTS[variant],
    )
    if variant != "learned":
        values["replace_from"] = str(source)
    return TrainConfig.from_dict(values)


def _train(cfg: Any, out: Path, *, reuse: bool, progress: bool) -> dict[str, Any]:
    """Train ``cfg`` into ``out``, or reuse/resume a run of the same configuration."""
    from scalespace_mk.training.train import TrainConfig, load_training_checkpoint, train

    summary = out / "summary.json"
    ckpt = out / "last.pt"
    if reuse and ckpt.exists():
        stored = TrainConfig.from_dict(load_training_checkpoint(ckpt)["config"])
        if stored != cfg:
            raise ValueError(
                f"--reuse: {out} holds a run of another configuration; remove it or drop --reuse"
            )
        if summary.exists():
            return json.loads(summary.read_text())
        return train(cfg, out, resume=True, progress=progress)
    if ckpt.exists():
        raise FileExistsError(
            f"{ckpt} exists: pass --reuse to reuse (or resume) runs of the same configuration, "
            "--overwrite to train afresh, or choose another --out"
        )
    return train(cfg, out, progress=progress)


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# --------------------------------------------------------------------------------------
# census


def _stage(name: str) -> int:
    return int(name.split("stages.")[1].split(".")[0])


def _summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Share with R^2 > 0.8, median R^2 and type counts of census records."""
    r2 = np.array([r["r2"] for r in records], dtype=float)
    counts = {str(t): int(sum(r["type"] == t for r in records)) for t in range(1, 9)}
    return {
        "filters": len(records),
        "share_r2_above_0.8": float(np.mean(r2 > 0.8)) if len(r2) else float("nan"),
        "median_r2": float(np.median(r2)) if len(r2) else float("nan"),
        "mean_r2": float(np.mean(r2)) if len(r2) else float("nan"),
        "types": counts,
    }


def _census_groups(
    records: list[dict[str, Any]], image_size: int, min_side: int
) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {"all layers": _summarise(records)}
    trained = [r for r in records if feature_side(r["layer"], image_size) >= min_side]
    groups[f"maps >= {min_side} px"] = _summarise(trained)
    for stage in sorted({_stage(r["layer"]) for r in records}):
        sub = [r for r in records if _stage(r["layer"]) == stage]
        side = feature_side(sub[0]["layer"], image_size)
        groups[f"stage {stage} ({side}x{side} px)"] = _summarise(sub)
    return groups


def _random_state(layers: dict[str, Any], seed: int) -> dict[str, Any]:
    """Gaussian i.i.d. filters with the shapes of the learned depthwise layers."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1000)
    return {
        name: torch.randn(tuple(w.shape), generator=gen, dtype=torch.float64)
        for name, w in layers.items()
    }


def _model_of(rec: dict[str, Any], size: int) -> np.ndarray:
    """The census model ``a g + b`` of one record (paper mode, as the census fits it)."""
    from scalespace_mk.scalespace.models import masterkey_model

    t = int(rec["type"])
    g = masterkey_model(
        t,
        rec["sigma_x"],
        None if t == 7 else rec["sigma_y"],
        alpha=rec["alpha"] if t == 7 else None,
        size=size,
    )
    return rec["a"] * np.asarray(g, dtype=float) + rec["b"]


# --------------------------------------------------------------------------------------
# fits


def _fits(filters: np.ndarray, method: str) -> list[dict[str, Any]]:
    """Fit type j + 1 to filter j by ``method``; failures are recorded, not raised."""
    from scalespace_mk.analysis.fit import fit_filter

    rows = []
    for j, h in enumerate(filters):
        try:
            fit = fit_filter(h, j + 1, method=method)
        except ValueError as exc:  # e.g. method B: no scale matches the filter's variance
            text = str(exc).splitlines()[0]
            text = text.split("): ", 1)[-1].split(";")[0]
            rows.append({"type": j + 1, "error": text[:120]})
            continue
        fit = dataclasses.replace(fit, index=j + 1)  # its position in the set, 1-based
        rows.append({"type": j + 1, **fit.to_dict(), "_fit": fit})
    return rows


# --------------------------------------------------------------------------------------
# report


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _write_text(path: Path, text: str) -> None:
    from scalespace_mk._io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _figures(
    res: dict[str, Any],
    learned_records: list[dict[str, Any]],
    learned_layers: dict[str, Any],
    published: np.ndarray,
    extracted: np.ndarray,
    fits: dict[str, dict[str, list[dict[str, Any]]]],
    figures: Path,
    setup: Setup,
) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from scalespace_mk.plot import plot_filter_grid, plot_fit

    figures.mkdir(parents=True, exist_ok=True)
    size = published.shape[-1]
    out: dict[str, str] = {}
    # 1. learned filters of the fully trained layers beside their census models
    trained = [r for r in learned_records if feature_side(r["layer"], setup.image_size) >= MIN_SIDE]
    nan = np.full((size, size), np.nan)
    panels = np.empty((4, 8, size, size))
    notes = np.full((4, 8), "", dtype=object)
    titles = []
    for t in range(1, 9):
        of_t = sorted((r for r in trained if r["type"] == t), key=lambda r: -r["r2"])
        titles.append(f"type {t} (n={len(of_t)})")
        picks = [of_t[0], of_t[len(of_t) // 2]] if of_t else [None, None]
        for k, rec in enumerate(picks):
            if rec is None:
                panels[2 * k, t - 1] = panels[2 * k + 1, t - 1] = nan
                continue
            w = learned_layers[rec["layer"]].detach().double().numpy()[rec["index"], 0]
            panels[2 * k, t - 1] = w
            panels[2 * k + 1, t - 1] = _model_of(rec, size)
            notes[2 * k, t - 1] = f"R² {rec['r2']:.2f}"
            sy = "" if t == 7 else f",{rec['sigma_y']:.2f}"
            al = f" α{rec['alpha']:.2f}" if t == 7 else ""
            notes[2 * k + 1, t - 1] = f"σ {rec['sigma_x']:.2f}{sy}{al}"
    fig = plot_filter_grid(
        panels,
        row_labels=["best R²", "its model", "median R²", "its model"],
        col_titles=titles,
        notes=notes,
        share_column_scale=False,
        title=f"learned filters (maps >= {MIN_SIDE} px) beside their census models a·g + b",
        path=figures / "learned_vs_models.png",
    )
    plt.close(fig)
    out["learned_vs_models"] = "learned_vs_models.png"
    # 2. extracted master filters beside the published 8 and their method-B models
    rows = [published / np.linalg.norm(published.reshape(8, -1), axis=1)[:, None, None]]
    labels = ["published 8", "extracted (builtin)"]
    rows.append(extracted)
    fb = fits.get("B", {}).get("extracted")
    if fb is not None:
        rows.append(np.stack([r["_fit"].fitted if "_fit" in r else nan for r in fb]))
        labels.append("method-B model")
    corr = res["extraction"]["corr_published"]
    share = res["extraction"]["share"]
    fig = plot_filter_grid(
        np.stack(rows),
        row_labels=labels,
        col_titles=[f"{j + 1}: r={corr[j]:.2f}, {100 * share[j]:.0f}%" for j in range(8)],
        title="master filters: published vs extracted from the learned run",
        path=figures / "master_filters.png",
    )
    plt.close(fig)
    out["master_filters"] = "master_filters.png"
    # 3. the fit figures of fit.py (normalised filter, model, residual)
    for method, by_set in fits.items():
        for which in ("extracted", "published"):
            ok = [r["_fit"] for r in by_set[which] if "_fit" in r]
            if not ok:
                continue
            name = f"fit_{which}_{method}.png"
            fig = plot_fit(
                ok,
                path=figures / name,
                title=f"method {method}: {which} filters (normalised h~, model g, g - h~)",
            )
            plt.close(fig)
            out[f"fit_{which}_{method}"] = name
    return out


def _summary(res: dict[str, Any]) -> list[str]:
    """Bullet points with the main numbers of the report (computed, not hand-written)."""
    v = res["variants"]
    base = v["learned"]["val_acc"]
    se = 100 * np.sqrt(base * (1 - base) / res["data"]["val"])
    diffs = ", ".join(
        f"{name} {v[name]['val_acc']:.3f} ({100 * (v[name]['val_acc'] - base):+.1f} points)"
        for name in v
        if name != "learned"
    )
    out = [
        f"- Accuracy: learned filters {base:.3f}; {diffs}. One seed each; the standard "
        f"error of one accuracy is about {se:.1f} points.",
    ]
    c = res["census"]
    groups = list(c["learned"])
    first = next((g for g in groups if g.startswith("stage 0")), groups[0])

    def share8(which: str) -> float:
        g = c[which][first]
        return g["types"]["8"] / max(1, g["filters"])

    out.append(
        "- Census: median R^2 of the learned filters "
        + "; ".join(
            f"{g} {c['learned'][g]['median_r2']:.3f} (random {c['random'][g]['median_r2']:.3f})"
            for g in (groups[0], groups[1], first)
        )
        + f". Best type 8 (Gaussian) in {first}: {_pct(share8('learned'))} of the learned "
        f"filters, {_pct(share8('random'))} of the random ones."
    )
    ex = res["extraction"]
    same = sum(int(t) == j + 1 for j, t in enumerate(ex["census_type"]))
    out.append(
        f"- Extraction: 8 master filters explain {_pct(ex['explained'])} of the pooled learned "
        f"filters' variance ({_pct(ex['explained_random'])} for random filters); their "
        f"correlation with the matched published filter is {min(ex['corr_published']):.2f} to "
        f"{max(ex['corr_published']):.2f}, and for {same} of the 8 slots the census picks the "
        "slot's own type."
    )
    failed = [
        f"{m} (slot {r['type']})"
        for m, by_set in res["fits"].items()
        for r in by_set["extracted"]
        if "error" in r
    ]
    out.append(
        "- Fits to the extracted filters: "
        + (("failed for " + ", ".join(failed)) if failed else "every method fits all 8")
        + "; their l1/l2 distances are larger than those of the published 8 (tables below)."
    )
    return out


def _report(res: dict[str, Any], fig_rel: str) -> str:
    s = res["setup"]
    m = res["machine"]
    lines = [
        "# Results: the master-key experiment on the builtin patches",
        "",
        f"Generated by `{res['command']}` on {res['date']} "
        f"({'smoke version' if s['name'] == 'smoke' else 'full run'}); do not edit by hand.",
        "",
        "## Setup",
        "",
        "| | |",
        "|---|---|",
        f"| model | `{s['model']}` ({res['parameters']:,} parameters), 7x7 depthwise filters |",
        f"| data | `{s['data']}`: {res['data']['train']} training / {res['data']['val']} "
        f"validation patches, {res['data']['classes']} classes (chance "
        f"{_pct(1 / res['data']['classes'])}), {s['image_size']} x {s['image_size']} px |",
        f"| training (every variant) | {s['epochs']} epochs x {res['steps_per_epoch']} steps, "
        f"batch {s['batch_size']}, AdamW lr {s['lr']} per 256 samples, cosine, warm-up "
        f"{s['warmup_epochs']} epoch, preset `builtin-cpu` otherwise |",
        f"| seed | {res['seed']} (training, random filters, k-means) |",
        f"| machine | {m['cpus']}-core container CPU ({m['processor']}), torch "
        f"{m['torch']}, {m['threads']} torch thread(s); load average "
        f"{m['load_start']:.1f} at the start, {m['load_end']:.1f} at the end |",
        f"| wall time | {res['wall_s']:.0f} s in all; "
        + ", ".join(f"{k} {v:.0f} s" for k, v in res["timings"].items())
        + " |",
        "",
        "## Summary",
        "",
        *_summary(res),
        "",
        "## Accuracy of the variants",
        "",
        "Top-1 accuracy on the validation patches after the last epoch (and the best epoch).",
        "Every variant trains with the same budget; the analytic variants take their per-channel",
        "choice and `a`, `b` from the least-squares replacement of the learned run's filters",
        "([method: networks](method.md#networks)) and train every other weight afresh.",
        "",
        "| variant | depthwise filters | trainable params | val acc | best val acc "
        "| val loss | train loss | train s | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in res["variants"].items():
        lines.append(
            f"| {name} | {_DESCRIPTION[name]} | {v['trainable_parameters']:,} | "
            f"{v['val_acc']:.4f} | {v['best_val_acc']:.4f} | {v['val_loss']:.4f} | "
            f"{v['train_loss']:.4f} | {v['seconds']:.1f} | {v['wall_s']:.1f} |"
        )
    n_val = res["data"]["val"]
    lines += [
        "",
        f"With {n_val} validation patches the standard error of an accuracy p is "
        f"sqrt(p (1 - p) / {n_val}), {100 * np.sqrt(0.25 / n_val):.1f} points at p = 0.5; one "
        "seed per variant.",
        "",
    ]
    reps = {k: v["replacement"] for k, v in res["variants"].items() if v.get("replacement")}
    if reps:
        lines += [
            "Channels per candidate type chosen by the replacement:",
            "",
            "| variant | " + " | ".join(f"type {t}" for t in range(1, 9)) + " |",
            "|---|" + "---|" * 8,
        ]
        for name, counts in reps.items():
            total = sum(counts.values()) or 1
            lines.append(
                f"| {name} | "
                + " | ".join(_pct(counts.get(str(t), 0) / total) for t in range(1, 9))
                + " |"
            )
        lines.append("")
    lines += [
        "## Census: learned filters against random filters",
        "",
        "Best linear shift `a g + b` of the 8 master-key types with fitted scales for every",
        "depthwise filter; R^2 is the share of a filter's variance that the best model explains.",
        "Random: Gaussian i.i.d. filters of the same shapes (the network's initialisation,",
        "a truncated normal, is the same up to scale, to which R^2 is blind). At",
        f"{s['image_size']} px the stages work on maps of "
        + ", ".join(f"{s['image_size'] // 4 // 2**i} px" for i in range(4))
        + "; in a map of side n only the taps within n - 1 of the centre ever see image",
        "content, the others keep their initial values (shrunk by weight decay), so the",
        "stages are also listed separately.",
        "",
        "| filters | set | count | R^2 > 0.8 | median R^2 | "
        + " | ".join(f"type {t}" for t in range(1, 9))
        + " |",
        "|---|---|---|---|---|" + "---|" * 8,
    ]
    for group in res["census"]["learned"]:
        for which in ("learned", "random"):
            g = res["census"][which][group]
            n = max(g["filters"], 1)
            lines.append(
                f"| {group} | {which} | {g['filters']} | {_pct(g['share_r2_above_0.8'])} | "
                f"{g['median_r2']:.3f} | "
                + " | ".join(_pct(g["types"][str(t)] / n) for t in range(1, 9))
                + " |"
            )
    ex = res["extraction"]
    lines += [
        "",
        "## Master filters extracted from the learned run",
        "",
        f"The {ex['count']} filters of the layers with maps >= {ex['min_side']} px, clustered",
        "into 8 master filters invariant to `a y + b` (`checkpoint.extract`), then ordered",
        "and signed like the published 8 (one-to-one matching of largest summed |correlation|).",
        f"The best `a x_j + b` explains {_pct(ex['explained'])} of the pooled filters' variance",
        f"(the same extraction on as many random filters: {_pct(ex['explained_random'])}).",
        f"sha256 of the ordered array: `{ex['sha256']}`; "
        "`python experiments/make_builtin_filters.py` writes the same array (same code, same "
        "seed) to `scalespace_mk/data_files/builtin_filters.npy`, the filters of "
        '`load_filters("builtin")` and `--filters builtin`.',
        "",
        "| slot | corr. with published | share | mean abs cos | census best type (R^2) "
        "| R^2 of the slot's type |",
        "|---|---|---|---|---|---|",
    ]
    for j in range(8):
        lines.append(
            f"| {j + 1} | {ex['corr_published'][j]:.3f} | {_pct(ex['share'][j])} | "
            f"{ex['mean_abs_cosine'][j]:.3f} | {ex['census_type'][j]} "
            f"({ex['census_r2'][j]:.3f}) | {ex['r2_own_type'][j]:.3f} |"
        )
    lines += [
        "",
        "## Idealised fits: extracted filters beside the published 8",
        "",
        "Type j + 1 fitted to slot j (paper-mode normalisation, "
        "[method: normalisation](method.md#normalisation), [method: fitting](method.md#fitting)). "
        "sigma in pixels;",
        "l1, l2: distances between the model g and the normalised filter h~.",
        "",
    ]
    for method, by_set in res["fits"].items():
        lines += [
            f"### Method {method}",
            "",
            "| type | published sigma_x | sigma_y | alpha | l1 | l2 "
            "| extracted sigma_x | sigma_y | alpha | l1 | l2 |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for pub, ext in zip(by_set["published"], by_set["extracted"], strict=True):
            cells = []
            for r in (pub, ext):
                if "error" in r:
                    cells.append(f"failed: {r['error']} | | | |")
                else:
                    cells.append(
                        f"{_fmt(r['sigma_x'])} | {_fmt(r['sigma_y'])} | {_fmt(r['alpha'])} | "
                        f"{_fmt(r['l1'])} | {_fmt(r['l2'])}"
                    )
            lines.append(f"| {pub['type']} | {cells[0]} | {cells[1]} |")
        lines.append("")
    if res.get("learnable_scales"):
        lines += [
            "## Scales learned by the learnable-B variant",
            "",
            "Per type: the start value (the method-B fit of the published filter the replacement",
            "picked), and over the channels after training the median with the 5-95 % range",
            "and the mean absolute change of sigma_x and sigma_y.",
            "",
            "| type | channels | sigma_x start | sigma_x end (5-95 %) | sigma_y start "
            "| sigma_y end (5-95 %) | mean abs change |",
            "|---|---|---|---|---|---|---|",
        ]
        for t, v in res["learnable_scales"].items():
            lines.append(
                f"| {t} | {v['channels']} | {v['sigma_x_start']:.3f} | {v['sigma_x_end']:.3f} "
                f"({v.get('sigma_x_q05', float('nan')):.3f}-"
                f"{v.get('sigma_x_q95', float('nan')):.3f}) | {v['sigma_y_start']:.3f} | "
                f"{v['sigma_y_end']:.3f} ({v.get('sigma_y_q05', float('nan')):.3f}-"
                f"{v.get('sigma_y_q95', float('nan')):.3f}) | "
                f"{v.get('mean_abs_change', float('nan')):.3f} |"
            )
        seven = res["learnable_scales"].get("7", {})
        if "alpha_start" in seven:
            lines += [
                "",
                f"Type 7 (one sigma): alpha {seven['alpha_start']:.3f} at the start, median "
                f"{seven['alpha_end']:.3f} after training.",
            ]
        lines.append("")
    lines += ["## Figures", ""]
    captions = {
        "learned_vs_models": f"Learned filters of the layers with maps >= {MIN_SIDE} px (rows 1 "
        "and 3: the best and the median R^2 of each type) above their census models `a g + b`.",
        "master_filters": "The published 8, the 8 filters extracted from the learned run "
        "(slot j matched to published j; r: correlation, %: share) and their method-B models.",
    }
    for key, name in res["figures"].items():
        cap = captions.get(key, f"{key.replace('_', ' ')}: normalised filter, model, residual.")
        lines += [f"![{key}]({fig_rel}/{name})", "", cap, ""]
    lines += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# the experiment


def run_experiment(
    setup: Setup,
    *,
    out: Path,
    results: Path,
    figures: Path,
    seed: int = 0,
    variants: tuple[str, ...] = tuple(VARIANTS),
    reuse: bool = False,
    progress: bool = True,
    command: str = "python experiments/masterkey_small.py",
) -> dict[str, Any]:
    """Run the whole experiment and write the report.

    Parameters
    ----------
    setup : Setup
        :data:`FULL` or :data:`SMOKE` (or a variant of them).
    out : Path
        Folder of the training runs (``out/<variant>``) and of ``results.json``.
    results : Path
        Markdown report (written atomically).
    figures : Path
        Folder of the PNG figures.
    seed : int
        Seed of training, random filters and k-means.
    variants : tuple of str
        Training variants; ``learned`` is always trained first.
    reuse : bool
        Reuse finished runs of the same configuration in ``out`` (resume unfinished ones).
    progress : bool
        Show tqdm progress bars.
    command : str
        Command line recorded in the report.

    Returns
    -------
    dict
        Everything the report shows (also written to ``out/results.json``).
    """
    import torch
    from tqdm.auto import tqdm

    from scalespace_mk.analysis.census import census
    from scalespace_mk.analysis.filters import load_filters, save_filters
    from scalespace_mk.networks.checkpoint import analyze, extract, find_depthwise
    from scalespace_mk.training.train import load_training_checkpoint

    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    timings: dict[str, float] = {}
    variants = ("learned",) + tuple(v for v in variants if v != "learned")
    published = load_filters()
    out.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=len(variants) + 3, desc="masterkey_small", disable=not progress)

    # 1. the learned run
    t0 = time.perf_counter()
    learned_dir = out / "learned"
    _train(_train_config(setup, "learned", seed, None), learned_dir, reuse=reuse, progress=progress)
    timings["learned"] = time.perf_counter() - t0
    steps.update(1)
    ckpt = load_training_checkpoint(learned_dir / "last.pt")
    state = ckpt["model"]
    layers = find_depthwise(state)

    # 2. census, learned vs random
    t0 = time.perf_counter()
    learned_an = analyze(state, progress=False)
    random_an = analyze(_random_state(layers, seed), progress=False)
    census_res = {
        "learned": _census_groups(learned_an.filters, setup.image_size, MIN_SIDE),
        "random": _census_groups(random_an.filters, setup.image_size, MIN_SIDE),
    }
    timings["census"] = time.perf_counter() - t0
    steps.update(1)

    # 3. extraction and fits
    t0 = time.perf_counter()
    masters = master_filters(
        state, image_size=setup.image_size, published=published, min_side=MIN_SIDE, seed=seed
    )
    pooled, _ = pooled_filters(state, image_size=setup.image_size, min_side=MIN_SIDE)
    rng = np.random.default_rng(seed + 2000)
    random_explained = extract(rng.standard_normal(pooled.shape), k=8, seed=seed).explained
    ext_census = census(masters.filters)
    extracted_path = out / "extracted_filters.npy"
    save_filters(extracted_path, masters.filters)
    fits: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for method in setup.fit_methods:
        fits[method] = {
            "published": _fits(published, method),
            "extracted": _fits(masters.filters, method),
        }
    timings["extraction and fits"] = time.perf_counter() - t0
    steps.update(1)

    # 4. the replacement variants, same budget
    var_res: dict[str, dict[str, Any]] = {}
    for name in variants:
        run_dir = out / name
        if name != "learned":
            t0 = time.perf_counter()
            cfg = _train_config(setup, name, seed, learned_dir / "last.pt")
            _train(cfg, run_dir, reuse=reuse, progress=progress)
            timings[name] = time.perf_counter() - t0
            steps.update(1)
        summary = json.loads((run_dir / "summary.json").read_text())
        hist = _metrics(run_dir)
        rep_path = run_dir / "replacement.json"
        totals: dict[str, int] = {}
        if rep_path.exists():
            for counts in json.loads(rep_path.read_text()).values():
                for key, n in counts.items():
                    totals[key] = totals.get(key, 0) + int(n)
        var_res[name] = {
            "val_acc": hist[-1]["val_acc"],
            "best_val_acc": max(h["val_acc"] for h in hist),
            "val_loss": hist[-1]["val_loss"],
            "train_loss": hist[-1]["train_loss"],
            "seconds": sum(h["seconds"] for h in hist),
            "wall_s": timings[name],
            "epochs": len(hist),
            "trainable_parameters": summary["trainable_parameters"],
            "parameters": summary["parameters"],
            "replacement": totals,
        }
    learnable = {}
    if "learnable-B" in variants:
        learnable = _learnable_scales(out / "learnable-B" / "last.pt")

    # 5. figures and report
    t0 = time.perf_counter()
    digest = hashlib.sha256(extracted_path.read_bytes()).hexdigest()
    r2_all = ext_census.r2_all
    type_col = [list(ext_census.types).index(t) for t in range(1, 9)]
    res: dict[str, Any] = {
        "command": command,
        "date": datetime.date.today().isoformat(),
        "seed": seed,
        "setup": asdict(setup),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_start": load_start,
        },
        "parameters": var_res["learned"]["parameters"],
        "data": _data_facts(ckpt),
        "steps_per_epoch": _steps_per_epoch(ckpt),
        "variants": var_res,
        "census": census_res,
        "extraction": {
            "count": masters.count,
            "min_side": masters.min_side,
            "layers": masters.layers,
            "explained": masters.explained,
            "explained_random": float(random_explained),
            "share": masters.share.tolist(),
            "mean_abs_cosine": masters.mean_abs_cosine.tolist(),
            "corr_published": masters.corr_published.tolist(),
            "census_type": [int(t) for t in ext_census.type],
            "census_r2": ext_census.r2.tolist(),
            "r2_own_type": [float(r2_all[j, type_col[j]]) for j in range(8)],
            "sha256": digest,
            "path": str(extracted_path),
        },
        "fits": {
            m: {
                k: [{kk: vv for kk, vv in r.items() if kk != "_fit"} for r in rows]
                for k, rows in by_set.items()
            }
            for m, by_set in fits.items()
        },
        "learnable_scales": learnable,
        "timings": timings,
    }
    res["figures"] = _figures(
        res,
        learned_an.filters,
        layers,
        published,
        masters.filters,
        fits,
        figures,
        setup,
    )
    timings["figures and report"] = time.perf_counter() - t0
    res["wall_s"] = time.perf_counter() - started
    res["machine"]["load_end"] = os.getloadavg()[0]
    res["notes"] = _notes(res, setup)
    _write_text(out / "results.json", json.dumps(res, indent=2) + "\n")
    rel = os.path.relpath(figures, results.parent).replace(os.sep, "/")
    _write_text(results, _report(res, rel))
    steps.update(1)
    steps.close()
    return res


def _data_facts(ckpt: dict[str, Any]) -> dict[str, int]:
    from scalespace_mk.training.datasets import build_dataset

    cfg = ckpt["config"]
    tr, classes = build_dataset(cfg["data"], split="train", image_size=cfg["image_size"])
    va, _ = build_dataset(cfg["data"], split="val", image_size=cfg["image_size"])
    return {"train": len(tr), "val": len(va), "classes": int(classes)}


def _steps_per_epoch(ckpt: dict[str, Any]) -> int:
    cfg = ckpt["config"]
    return int(ckpt["global_step"]) // int(cfg["epochs"])


def _learnable_scales(path: Path) -> dict[str, dict[str, float]]:
    """Start and end scales per type of a learnable run.

    The start values are the method-B fits of the published filters (the candidates the
    replacement picked from); the end values are summarised by their median and 5 / 95 %
    quantiles over the channels of each type, with the mean absolute change.
    """
    from scalespace_mk.analysis.filters import load_filters
    from scalespace_mk.analysis.fit import fit_filters
    from scalespace_mk.networks.checkpoint import load_checkpoint_file

    state = load_checkpoint_file(path)["model"]
    cols: dict[str, list[np.ndarray]] = {"t": [], "x": [], "y": [], "alpha": []}
    for key, value in state.items():
        if key.endswith("conv_dw.types"):
            prefix = key[: -len("types")]
            cols["t"].append(value.numpy())
            cols["x"].append(state[prefix + "sigma_x_raw"].abs().double().numpy())
            cols["y"].append(state[prefix + "sigma_y_raw"].abs().double().numpy())
            cols["alpha"].append(state[prefix + "alpha"].double().numpy())
    if not cols["t"]:
        return {}
    start = fit_filters(load_filters(), method="B")
    t, x, y, alpha = (np.concatenate(cols[k]) for k in ("t", "x", "y", "alpha"))
    out = {}
    for k in range(1, 9):
        sel = t == k
        if not sel.any():
            continue
        fit = start[k - 1]
        ys = x[sel] if k == 7 else y[sel]
        row = {
            "channels": int(sel.sum()),
            "sigma_x_start": float(fit.sigma_x),
            "sigma_x_end": float(np.median(x[sel])),
            "sigma_x_q05": float(np.percentile(x[sel], 5)),
            "sigma_x_q95": float(np.percentile(x[sel], 95)),
            "sigma_y_start": float(fit.sigma_y),
            "sigma_y_end": float(np.median(ys)),
            "sigma_y_q05": float(np.percentile(ys, 5)),
            "sigma_y_q95": float(np.percentile(ys, 95)),
            "mean_abs_change": float(
                np.mean(np.abs(x[sel] - fit.sigma_x) + np.abs(ys - fit.sigma_y)) / 2
            ),
        }
        if k == 7:
            row["alpha_start"] = float(fit.alpha)
            row["alpha_end"] = float(np.median(alpha[sel]))
        out[str(k)] = row
    return out


def _notes(res: dict[str, Any], setup: Setup) -> list[str]:
    notes = []
    if setup.name == "smoke":
        notes.append(
            "Smoke version: a few optimizer steps of the test network; the numbers only show "
            "that the pipeline runs."
        )
    if setup.name == "full":
        notes.append(
            f"The base learning rate is {setup.lr} per 256 samples (the `builtin-cpu` preset "
            "has 2e-3): in a budget this short the depthwise filters otherwise stay at their "
            "random initialisation (measured while tuning: after 4 epochs at 2e-3 the census "
            "median R^2 of all 1840 filters was 0.110 against 0.109 for random filters)."
        )
        notes.append(
            "The budget is tiny next to the ImageNet recipe the published filters come from "
            "(300 epochs of 1.28 M images): the learned filters are only beginning to form, "
            "and much of their variance is still the random initialisation."
        )
    low = [j + 1 for j, c in enumerate(res["extraction"]["corr_published"]) if c < 0.7]
    if low:
        notes.append(
            "Slots whose extracted filter correlates below 0.7 with its published partner: "
            f"{low}; their fits describe filters that differ from the published type."
        )
    failed = sorted(
        {
            f"{m}/{which}/type {r['type']}"
            for m, by_set in res["fits"].items()
            for which, rows in by_set.items()
            for r in rows
            if "error" in r
        }
    )
    if failed:
        notes.append("Fits that failed (reported, not hidden): " + ", ".join(failed) + ".")
    spread = res["machine"]["load_end"], res["machine"]["load_start"]
    if max(spread) > (res["machine"]["cpus"] or 1):
        notes.append(
            "The machine was shared with other jobs during the run (load average above the "
            "core count), so the wall times are upper bounds."
        )
    return notes


def main(argv: list[str] | None = None) -> int:
    """Command line of the experiment (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description="Train a small ConvNeXt-V2 on the builtin patches, compare its depthwise "
        "filters with the master-key models, and train replacement variants."
    )
    parser.add_argument("--smoke", action="store_true", help="CI version (< 60 s)")
    parser.add_argument("--out", help="run folder (default runs/masterkey_small[_smoke])")
    parser.add_argument("--results", help="report (default docs/results.md; smoke: OUT/results.md)")
    parser.add_argument(
        "--figures", help="figure folder (default docs/figures; smoke: OUT/figures)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="override the epochs of the setup")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="training variants (default: all)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1; 0: torch's default). On a 2-core machine shared with "
        "other jobs, 2 intra-op threads were measured up to 10x slower than 1",
    )
    parser.add_argument("--reuse", action="store_true", help="reuse/resume runs in --out")
    parser.add_argument("--overwrite", action="store_true", help="delete the runs in --out first")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the report from OUT/results.json without training (figures unchanged)",
    )
    args = parser.parse_args(argv)

    import torch

    setup = SMOKE if args.smoke else FULL
    if args.epochs is not None:
        if args.epochs < 1:
            parser.error(f"--epochs must be >= 1; got {args.epochs}")
        setup = replace(setup, epochs=args.epochs)
    if args.threads < 0:
        parser.error(f"--threads must be >= 0; got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    default_out = REPO / "runs" / ("masterkey_small_smoke" if args.smoke else "masterkey_small")
    out = Path(args.out) if args.out else default_out
    results = (
        Path(args.results)
        if args.results
        else (out / "results.md" if args.smoke else REPO / "docs" / "results.md")
    )
    figures = (
        Path(args.figures)
        if args.figures
        else (out / "figures" if args.smoke else REPO / "docs" / "figures")
    )
    if args.report_only:
        res = json.loads((out / "results.json").read_text())
        if (out / "learnable-B" / "last.pt").exists():  # refresh the derived statistics
            res["learnable_scales"] = _learnable_scales(out / "learnable-B" / "last.pt")
            _write_text(out / "results.json", json.dumps(res, indent=2) + "\n")
        rel = os.path.relpath(figures, results.parent).replace(os.sep, "/")
        _write_text(results, _report(res, rel))
        print(f"wrote {results}")
        return 0
    try:
        _run(args, setup, out, results, figures, argv)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"masterkey_small: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {results} and {out / 'results.json'}")
    return 0


def _run(
    args: argparse.Namespace,
    setup: Setup,
    out: Path,
    results: Path,
    figures: Path,
    argv: list[str] | None,
) -> None:
    """Delete old runs if asked, then :func:`run_experiment` with the parsed options."""
    if args.overwrite:
        for name in VARIANTS:
            shutil.rmtree(out / name, ignore_errors=True)
    command = "python experiments/masterkey_small.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:])
    )
    run_experiment(
        setup,
        out=out,
        results=results,
        figures=figures,
        seed=args.seed,
        variants=tuple(args.variants),
        reuse=args.reuse,
        progress=not args.no_progress and sys.stderr.isatty(),
        command=command.strip(),
    )


if __name__ == "__main__":
    sys.exit(main())
