"""The substitution study: for each kind of idealised filter (and the two controls), substitute
the depthwise convs of a trained network, measure agreement with the original on held-out
photos, then recover by BatchNorm re-estimation and by distillation, over seeds.

:func:`run_study` returns a JSON-ready dict (schema :data:`SCHEMA`, documented in
docs/substitution.md); ``scalespace-mk substitute`` and ``experiments/substitution_study.py``
call it. Per kind:

- ``direct``: all selected layers substituted, original BatchNorm statistics;
- ``recalibrated``: the same after BatchNorm re-estimation (:mod:`..recovery`)
  on the calibration crops;
- ``distilled``: after ``distill_steps`` of distillation from the recalibrated network, with the
  curve at ``distill_eval`` steps (one run per seed);
- ``sensitivity``: each layer alone (original statistics), beside the layer's median R^2;
- ``progressive``: the first / last ``n`` layers substituted (original statistics).

A kind whose substitute involves random draws (``noise``, ``random``) is drawn anew per seed;
the fitted kinds give the same network for every seed, so ``direct`` and ``recalibrated``
are computed once and only distillation (batch order, flips) varies with the seed.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from scalespace_mk.substitution.measures import (
    compare,
    layer_sensitivity,
    predict,
    progressive,
)
from scalespace_mk.substitution.recovery import distill, recalibrate_batchnorm

__all__ = [
    "DEFAULT_KINDS",
    "SCHEMA",
    "StudyConfig",
    "run_study",
    "seeded_kind",
    "format_summary",
    "summary_rows",
]

#: identifies the layout of the study's JSON (docs/substitution.md, "JSON schema")
SCHEMA = "scalespace_mk.substitution/1"

#: the kinds of the default study: the fitted models, then the two controls
DEFAULT_KINDS = (
    "census",
    "njet:1",
    "njet:2",
    "method:A",
    "method:B",
    "method:C1",
    "method:D1",
    "masterkey",
    "noise",
    "random",
)

Substituter = Callable[..., tuple[nn.Module, Any]]


def seeded_kind(kind: str) -> bool:
    """Whether the substitute of ``kind`` depends on the seed (the controls)."""
    return kind.split(":", 1)[0] in ("noise", "random")


@dataclass
class StudyConfig:
    """Settings of :func:`run_study` (recorded in the JSON as ``config``).

    Attributes
    ----------
    kinds : tuple of str
        Kinds passed to ``substitute_depthwise``.
    layers : str, list or None
        Which depthwise layers (``substitute_depthwise(layers=...)``); None: all.
    seeds : tuple of int
        Seeds of the controls' draws and of distillation.
    recalibrate : bool
        Measure after BatchNorm re-estimation too.
    distill_steps : int
        Distillation steps per (kind, seed); 0: none.
    distill_eval : tuple of int
        Steps at which the distilled network is evaluated (0 and ``distill_steps`` added).
    distill_kinds : tuple of str or None
        Kinds that are distilled (None: all).
    lr, distill_batch, temperature : float, int, float
        Distillation settings (:func:`~scalespace_mk.substitution.recovery.distill`).
    sensitivity, progressive : bool
        Compute per-layer sensitivity and progressive curves (seed ``seeds[0]``).
    sensitivity_kinds, progressive_kinds : tuple of str or None
        The kinds that get them (None: all).
    progressive_counts : tuple of int or None
        ``n`` of the progressive curves (None: every n from 0 to the number of layers).
    batch_size : int
        Evaluation batch size.
    n_boot : int
        Bootstrap replicates of every interval.
    options : dict
        Extra keyword options per kind, e.g. ``{"census": {"learnable": True}}``.
    """

    kinds: tuple[str, ...] = DEFAULT_KINDS
    layers: Any = None
    seeds: tuple[int, ...] = (0, 1, 2)
    recalibrate: bool = True
    distill_steps: int = 0
    distill_eval: tuple[int, ...] = ()
    distill_kinds: tuple[str, ...] | None = None
    lr: float = 1e-4
    distill_batch: int = 32
    temperature: float = 1.0
    sensitivity: bool = True
    progressive: bool = True
    sensitivity_kinds: tuple[str, ...] | None = None
    progressive_kinds: tuple[str, ...] | None = None
    progressive_counts: tuple[int, ...] | None = None
    batch_size: int = 64
    n_boot: int = 2000
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kinds = tuple(self.kinds)
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.kinds:
            raise ValueError("kinds: give at least one kind")
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be non-negative integers; got {self.seeds!r}")
        if isinstance(self.distill_steps, bool) or int(self.distill_steps) < 0:
            raise ValueError(f"distill_steps must be >= 0; got {self.distill_steps!r}")
        self.distill_steps = int(self.distill_steps)
        marks = {int(s) for s in self.distill_eval}
        if any(s < 0 or s > self.distill_steps for s in marks):
            raise ValueError(
                f"distill_eval steps must lie in 0..{self.distill_steps}; got {sorted(marks)}"
            )
        self.distill_eval = tuple(sorted(marks | {0, self.distill_steps}))


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - platform without load averages
        return None


def _layer_rows(report: Any) -> list[dict[str, Any]]:
    rows = []
    for layer in report.layers:
        med = layer.median_r2
        rows.append(
            {
                "name": layer.name,
                "index": int(layer.index),
                "kernel_size": int(layer.kernel_size),
                "stride": list(layer.stride),
                "channels": int(layer.channels),
                "median_r2": None if not np.isfinite(med) else float(med),
            }
        )
    return rows


def _median(report: Any) -> float | None:
    med = report.median_r2
    return None if not np.isfinite(med) else float(med)


def _ticker(
    say: Callable[[str], None], kind: str, seed: int, steps: int
) -> Callable[[int, float], None]:
    """A progress callback for distillation: one line every 30 s and at the last step."""
    t0 = time.perf_counter()
    last = [t0]

    def tick(step: int, loss: float) -> None:
        now = time.perf_counter()
        if now - last[0] >= 30 or step == steps:
            last[0] = now
            say(
                f"substitute: {kind} seed {seed}: distillation step {step}/{steps}, "
                f"loss {loss:.4f}, {now - t0:.0f} s"
            )

    return tick


def run_study(
    original: nn.Module,
    photos: Any,
    config: StudyConfig | None = None,
    *,
    substitute: Substituter | None = None,
    log: Callable[[str], None] | None = None,
    network: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the study of ``config`` on ``original`` with the crops of ``photos``.

    Parameters
    ----------
    original : nn.Module
        The trained network (not modified), mapping ``[n, 3, H, W]`` images to logits.
    photos : PhotoSet
        :func:`scalespace_mk.training.photos.build_photo_set`: calibration crops for
        recovery, evaluation crops (other photos) for every measure.
    config : StudyConfig, optional
    substitute : callable, optional
        ``substitute(model, kind, layers=..., seed=..., **options) -> (model, report)``;
        default :func:`scalespace_mk.networks.substitute.substitute_depthwise`.
    log : callable, optional
        Receives one progress line at a time.
    network : dict, optional
        Description of the network recorded as ``network`` (arch, checkpoint, ...).

    Returns
    -------
    dict
        The study (schema :data:`SCHEMA`).
    """
    config = StudyConfig() if config is None else config
    if substitute is None:
        from scalespace_mk.networks.substitute import substitute_depthwise as substitute
    say = log or (lambda line: None)
    original = original.eval()
    calib, evaluation = photos.calibration, photos.evaluation
    t_start = time.perf_counter()
    reference = predict(original, evaluation.images, batch_size=config.batch_size)
    kw = {"n_boot": config.n_boot}

    def against_original(model: nn.Module, **seed: int) -> dict:
        """The agreement measures of ``model`` with the original on the evaluation crops."""
        logits = predict(model, evaluation.images, batch_size=config.batch_size)
        return compare(
            reference, logits, evaluation.photo, evaluation.labels, **seed, **kw
        ).to_dict()

    base = {
        "accuracy": None,
        "crops": len(evaluation),
        "photos": evaluation.num_photos,
    }
    if evaluation.labels is not None:
        acc = compare(reference, reference, evaluation.photo, evaluation.labels, **kw)
        base["accuracy"] = acc.accuracy_original.to_dict()
    if config.recalibrate:
        # the control of re-estimation itself: the ORIGINAL network with its BatchNorm
        # statistics re-estimated on the calibration crops (no substitution)
        import copy

        own = recalibrate_batchnorm(
            copy.deepcopy(original), calib.images, batch_size=config.batch_size
        )
        base["recalibrated"] = against_original(own)
    else:
        base["recalibrated"] = None
    say(
        f"substitute: reference logits on {len(evaluation)} evaluation crops of "
        f"{evaluation.num_photos} photos ({time.perf_counter() - t_start:.1f} s)"
    )
    kinds_out = []
    for kind in config.kinds:
        t_kind = time.perf_counter()
        options = dict(config.options.get(kind, {}))
        seeded = seeded_kind(kind)
        entry: dict[str, Any] = {"kind": kind, "seeded": seeded, "options": options, "runs": []}
        subs: dict[int, tuple[nn.Module, Any]] = {}
        for seed in config.seeds if seeded else config.seeds[:1]:
            subs[seed] = substitute(original, kind, layers=config.layers, seed=seed, **options)
        report0 = next(iter(subs.values()))[1]
        entry["layers"] = _layer_rows(report0)
        entry["skipped"] = [dict(s) for s in report0.skipped]
        entry["median_r2"] = _median(report0)
        entry["filters"] = int(sum(layer.channels for layer in report0.layers))
        names = list(report0.names)
        say(
            f"substitute: {kind}: {len(names)} layers, {entry['filters']} filters, median R^2 "
            f"{entry['median_r2'] if entry['median_r2'] is None else round(entry['median_r2'], 4)}"
            f", {len(entry['skipped'])} skipped ({time.perf_counter() - t_kind:.1f} s)"
        )
        if not names:
            entry["sensitivity"] = entry["progressive"] = None
            entry["seconds"] = time.perf_counter() - t_kind
            kinds_out.append(entry)
            continue
        distil_this = config.distill_steps > 0 and (
            config.distill_kinds is None or kind in config.distill_kinds
        )
        cache: dict[int, tuple[dict, dict | None, nn.Module | None]] = {}
        for seed in config.seeds:
            model, report = subs[seed if seeded else config.seeds[0]]
            key = seed if seeded else config.seeds[0]
            run: dict[str, Any] = {"seed": seed}
            if key not in cache:
                direct = against_original(model, seed=seed)
                recal, recal_model = None, None
                if config.recalibrate or distil_this:
                    import copy

                    recal_model = recalibrate_batchnorm(
                        copy.deepcopy(model), calib.images, batch_size=config.batch_size
                    )
                    recal = against_original(recal_model, seed=seed)
                cache[key] = (direct, recal if config.recalibrate else None, recal_model)
            direct, recal, recal_model = cache[key]
            run["median_r2"] = _median(report)
            run["direct"] = direct
            run["recalibrated"] = recal
            say(
                f"substitute: {kind} seed {seed}: top-1 agreement "
                f"{direct['top1_agreement']['value']:.3f} direct"
                + (f", {recal['top1_agreement']['value']:.3f} recalibrated" if recal else "")
            )
            if distil_this:
                _tick = _ticker(say, kind, seed, config.distill_steps)

                _, result = distill(
                    recal_model,
                    original,
                    calib.images,
                    steps=config.distill_steps,
                    substituted=names,
                    seed=seed,
                    lr=config.lr,
                    batch_size=config.distill_batch,
                    temperature=config.temperature,
                    eval_images=evaluation.images,
                    eval_photo=evaluation.photo,
                    eval_reference=reference,
                    eval_at=config.distill_eval,
                    n_boot=config.n_boot,
                    on_step=_tick,
                )
                run["distilled"] = result.to_dict()
                final = result.curve[-1][1].top1.value
                say(f"substitute: {kind} seed {seed}: top-1 agreement {final:.3f} distilled")
            else:
                run["distilled"] = None
            entry["runs"].append(run)
        model0 = subs[config.seeds[0]][0]
        r2_of = {row["name"]: row["median_r2"] for row in entry["layers"]}
        if config.sensitivity and (
            config.sensitivity_kinds is None or kind in config.sensitivity_kinds
        ):
            sens = layer_sensitivity(
                original,
                model0,
                names,
                evaluation.images,
                evaluation.photo,
                reference=reference,
                batch_size=config.batch_size,
                seed=config.seeds[0],
                **kw,
            )
            for row in sens:
                row["median_r2"] = r2_of.get(row["name"])
            entry["sensitivity"] = sens
            say(f"substitute: {kind}: per-layer sensitivity of {len(names)} layers done")
        else:
            entry["sensitivity"] = None
        if config.progressive and (
            config.progressive_kinds is None or kind in config.progressive_kinds
        ):
            counts = config.progressive_counts
            if counts is not None:
                counts = sorted({min(int(c), len(names)) for c in counts} | {0, len(names)})
            entry["progressive"] = {
                order: progressive(
                    original,
                    model0,
                    names,
                    evaluation.images,
                    evaluation.photo,
                    order=order,
                    counts=counts,
                    reference=reference,
                    batch_size=config.batch_size,
                    seed=config.seeds[0],
                    **kw,
                )
                for order in ("first", "last")
            }
            say(f"substitute: {kind}: progressive curves done")
        else:
            entry["progressive"] = None
        entry["seconds"] = time.perf_counter() - t_kind
        kinds_out.append(entry)
    cfg = asdict(config)
    cfg["layers"] = None if config.layers is None else str(config.layers)
    return {
        "schema": SCHEMA,
        "network": dict(network or {}),
        "photos": photos.manifest(),
        "config": cfg,
        "reference": base,
        "kinds": kinds_out,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_end": _load(),
            "argv": list(sys.argv),
        },
        "seconds": time.perf_counter() - t_start,
    }


def summary_rows(study: dict[str, Any], measure: str = "top1_agreement") -> list[dict[str, Any]]:
    """One row per kind: median R^2, ``measure`` direct / recalibrated / distilled.

    Seeded kinds give the mean over seeds with the smallest low and the largest high of the
    per-seed intervals; distilled values are at the last step, likewise over seeds.
    """

    def _pool(items: Sequence[dict | None]) -> dict[str, float] | None:
        items = [i for i in items if i is not None]
        if not items:
            return None
        return {
            "value": float(np.mean([i["value"] for i in items])),
            "low": float(min(i["low"] for i in items)),
            "high": float(max(i["high"] for i in items)),
            "n": len(items),
        }

    rows = []
    for entry in study["kinds"]:
        runs = entry["runs"]
        unique = runs if entry["seeded"] else runs[:1]
        rows.append(
            {
                "kind": entry["kind"],
                "layers": len(entry["layers"]),
                "skipped": len(entry["skipped"]),
                "median_r2": entry["median_r2"],
                "direct": _pool([r["direct"][measure] for r in unique]),
                "recalibrated": _pool(
                    [r["recalibrated"][measure] if r["recalibrated"] else None for r in unique]
                ),
                "distilled": _pool(
                    [r["distilled"]["curve"][-1][measure] if r["distilled"] else None for r in runs]
                ),
            }
        )
    return rows


def _fmt(est: dict[str, float] | None) -> str:
    if est is None:
        return "-"
    return f"{est['value']:.3f} [{est['low']:.3f}, {est['high']:.3f}]"


def format_summary(study: dict[str, Any], measure: str = "top1_agreement") -> str:
    """A plain-text table of :func:`summary_rows` (one line per kind)."""
    head = (
        f"{'kind':<12} {'layers':>6} {'median R^2':>10}  {'direct':<23} {'recalibrated':<23} "
        f"distilled"
    )
    lines = [f"{measure} with the original (95 % bootstrap interval over photos)", head]
    lines.append("-" * len(head))
    for row in summary_rows(study, measure):
        r2 = "-" if row["median_r2"] is None else f"{row['median_r2']:.3f}"
        lines.append(
            f"{row['kind']:<12} {row['layers']:>6} {r2:>10}  {_fmt(row['direct']):<23} "
            f"{_fmt(row['recalibrated']):<23} {_fmt(row['distilled'])}"
        )
    return "\n".join(lines)
