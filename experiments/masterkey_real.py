"""The master-key experiment on real data: the runs and their analysis (no report text).

On Fashion-MNIST (Debian's ``dataset-fashion-mnist``, read offline by
:class:`scalespace_mk.training.datasets.FashionMNISTDataset`), upscaled so that the first
ConvNeXt stage works on maps of at least 14 px, for several seeds:

1. train a small ConvNeXt-V2 (``convnextv2_zepto``) with learned 7x7 depthwise filters
   (``learned``);
2. train, with the same budget and seed, networks whose depthwise filters are replaced per
   channel by the least-squares ``a x_j + b`` of the learned run (:func:`~scalespace_mk.
   training.train.convert_depthwise`): frozen idealised models of method B (``idealized``),
   the same with learnable scales (``learnable``), the frozen published master key filters
   (``masterkey``) and, as a control, 8 frozen i.i.d. Gaussian random filters (``random``);
   the learnable N-jet of order 2 (``njet``) when the library has it;
3. run the census on the learned filters of every stage and on the two null models of the
   same filters (i.i.d. Gaussian and phase-randomised), per seed;
4. read the scales the ``learnable`` runs moved to, extract 8 master filters from the
   learned runs and fit them by every fitting method.

Everything the report shows is returned by :func:`run_experiment` and written to
``<out>/results.json`` (and the arrays of the figures to ``<out>/figure_data.npz``);
``experiments/report.py`` renders them. Usage::

    python experiments/masterkey_real.py                      # full run -> runs/masterkey_real
    python experiments/masterkey_real.py --publish            # ... and docs/results.{md,json}
    python experiments/masterkey_real.py --smoke --out /tmp/mk  # CI version, < 60 s

Every run is seeded and uses one torch thread: on the same machine a rerun gives identical
numbers. Conventions: filters are stored depthwise weights ``h[r, c]`` (y up: ``x = c - m``,
``y = m - r``), ``sigma`` is a standard deviation in pixels (the theory's scale is
``s = sigma**2``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:  # report.py
    sys.path.insert(0, str(HERE))

__all__ = [
    "FULL",
    "SMOKE",
    "VARIANTS",
    "Setup",
    "interval",
    "main",
    "feature_side",
    "null_filters",
    "order_like_published",
    "pooled_filters",
    "run_experiment",
]

#: The variants: name -> TrainConfig fields. All but ``learned`` (and ``njet``) take their
#: per-channel choice and a, b from the learned run of the same seed.
VARIANTS: dict[str, dict[str, Any]] = {
    "learned": {"dwconv": "learned"},
    "idealized": {"dwconv": "idealized", "method": "B"},
    "learnable": {"dwconv": "learnable", "method": "B"},
    "masterkey": {"dwconv": "masterkey"},
    "random": {"dwconv": "masterkey"},  # filters: 8 i.i.d. Gaussian filters per seed
    "njet": {"dwconv": "njet"},  # learnable N-jet of order 2, when the library has it
}

DESCRIPTION = {
    "learned": "learned 7x7 filters (baseline)",
    "idealized": "frozen idealised models (method B of the published 8), per-channel a, b",
    "learnable": "idealised models with learnable scales (start: method B), a, b",
    "masterkey": "frozen published master key filters, per-channel a, b",
    "random": "frozen i.i.d. Gaussian random filters (8 per seed), per-channel a, b",
    "njet": "learnable N-jet of order 2",
}


@dataclass(frozen=True)
class Setup:
    """Budget of one experiment run (every variant gets the same).

    Attributes
    ----------
    name : str
        ``"full"`` or ``"smoke"``.
    model : str
        Registered ConvNeXt (7x7 depthwise filters).
    data : str
        Dataset specification (:func:`scalespace_mk.training.datasets.build_dataset`).
    image_size : int
        Training resolution (pixels); the first stage works on ``image_size / 4`` px maps.
    epochs, batch_size, max_steps_per_epoch : int
        Training budget (``max_steps_per_epoch`` 0: whole epochs).
    lr, warmup_epochs, weight_decay : float
        Base learning rate per 256 samples, warm-up length, AdamW weight decay.
    augment : str
        Augmentation recipe of :class:`~scalespace_mk.training.train.TrainConfig`.
    seeds : tuple of int
        Training seeds (each variant runs once per seed).
    min_side : int
        Smallest feature-map side (px) of the stages whose filters are analysed.
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
    weight_decay: float
    augment: str
    seeds: tuple[int, ...]
    min_side: int


#: The full experiment: 5 variants x 3 seeds, 2 epochs of 8,000 images each (about an hour
#: for 2 workers on a 2-core CPU shared with other jobs). The base lr 1.6e-2 (peak 4e-3 at
#: batch 64) lets the depthwise filters leave their initialisation in ~300 steps (a pilot at
#: 4e-3: stage-0 census median 0.14, as for noise; at 1.6e-2: 0.28).
FULL = Setup(
    name="full",
    model="convnextv2_zepto",
    data="fashion-mnist:,train=8000,val=2000",
    image_size=56,
    epochs=2,
    batch_size=64,
    max_steps_per_epoch=0,
    lr=1.6e-2,
    warmup_epochs=0.5,
    weight_decay=0.05,
    augment="none",
    seeds=(0, 1, 2),
    min_side=14,
)
#: The CI version: the 4-stage test network on the builtin photographs (no optional data),
#: a few optimizer steps, two seeds (the least that gives an interval).
SMOKE = Setup(
    name="smoke",
    model="convnextv2_test",
    data="builtin:train=96,val=48",
    image_size=32,
    epochs=1,
    batch_size=32,
    max_steps_per_epoch=2,
    lr=2e-3,
    warmup_epochs=0.5,
    weight_decay=0.05,
    augment="none",
    seeds=(0, 1),
    min_side=8,
)


# --------------------------------------------------------------------------------------
# null models


def _null_filters_fallback(filters: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """FALLBACK, used only when ``scalespace_mk.analysis.null`` is not importable.

    Same definitions as the library's null models: ``"iid"``: i.i.d. standard Gaussian
    filters of the same shape and count; ``"phase"``: each filter's 2-D power spectrum with
    uniformly random phases, taken from the FFT of real white noise so that the spectrum is
    Hermitian-symmetric and the output real.
    """
    h = np.asarray(filters, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if kind == "iid":
        return rng.standard_normal(h.shape)
    if kind == "phase":
        amp = np.abs(np.fft.fft2(h))
        phase = np.angle(np.fft.fft2(rng.standard_normal(h.shape)))
        return np.fft.ifft2(amp * np.exp(1j * phase)).real
    raise ValueError(f"kind must be 'iid' or 'phase'; got {kind!r}")


def null_filters(filters: np.ndarray, kind: str, seed: int) -> tuple[np.ndarray, str]:
    """Null filters of ``kind`` for ``filters [N, k, k]``, and where they came from.

    Uses :func:`scalespace_mk.analysis.null.null_filters` when the library has it, else the
    marked fallback :func:`_null_filters_fallback` (same definitions).
    """
    try:
        from scalespace_mk.analysis.null import null_filters as library_null
    except ImportError:
        return _null_filters_fallback(filters, kind, seed), "experiments (fallback)"
    return np.asarray(library_null(filters, kind, seed), dtype=np.float64), "library"


# --------------------------------------------------------------------------------------
# statistics


def interval(values: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean, sample standard deviation and the t-interval of the mean over seeds."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else float("nan")
    std = float(x.std(ddof=1)) if n > 1 else float("nan")
    if n > 1:
        half = float(stats.t.ppf(0.5 + level / 2, n - 1) * std / np.sqrt(n))
    else:
        half = float("nan")
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def separated(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two 95 % intervals do not overlap."""
    lo_a, hi_a = a["ci95"]
    lo_b, hi_b = b["ci95"]
    return bool(hi_a < lo_b or hi_b < lo_a)


# --------------------------------------------------------------------------------------
# runs


def njet_available() -> tuple[bool, str]:
    """Whether the library trains a learnable N-jet (``dwconv="njet"``), and why not."""
    try:
        from scalespace_mk.networks.layers import DWCONV_KINDS
        from scalespace_mk.training.train import DWCONV
    except ImportError as exc:  # pragma: no cover - the package is broken
        return False, str(exc)
    if "njet" in DWCONV_KINDS and "njet" in DWCONV:
        return True, ""
    return False, (
        "the learnable N-jet layer (make_dwconv('njet'), TrainConfig dwconv 'njet') has not "
        "landed in the library yet; this slot is filled when it has"
    )


def _random_filters(out: Path, seed: int) -> Path:
    """8 i.i.d. Gaussian 7x7 filters for the ``random`` control of ``seed`` (a .npy file)."""
    from scalespace_mk._io import atomic_path

    path = out / f"random_filters_seed{seed}.npy"
    if not path.exists():
        filters = np.random.default_rng([seed, 7, 7]).standard_normal((8, 7, 7))
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, filters)
    return path


def train_config(setup: Setup, variant: str, seed: int, out: Path) -> Any:
    """The :class:`~scalespace_mk.training.train.TrainConfig` of one run."""
    from scalespace_mk.training.train import TrainConfig

    values: dict[str, Any] = dict(
        model=setup.model,
        data=setup.data,
        image_size=setup.image_size,
        epochs=setup.epochs,
        batch_size=setup.batch_size,
        max_steps_per_epoch=setup.max_steps_per_epoch,
        lr=setup.lr,
        min_lr=1e-5,
        warmup_epochs=setup.warmup_epochs,
        weight_decay=setup.weight_decay,
        augment=setup.augment,
        label_smoothing=0.1,
        drop_path=0.0,
        seed=seed,
        **VARIANTS[variant],
    )
    if variant not in ("learned", "njet"):
        values["replace_from"] = str(run_dir(out, "learned", seed) / "last.pt")
    if variant == "random":
        values["filters"] = str(_random_filters(out, seed))
    return TrainConfig.from_dict(values)


def run_dir(out: Path, variant: str, seed: int) -> Path:
    """Folder of one training run."""
    return out / f"{variant}-seed{seed}"


def _train_one(cfg_values: dict[str, Any], folder: str, reuse: bool, progress: bool) -> dict:
    """Train one run (also in a worker process): reuse a finished run of the same config."""
    import torch

    from scalespace_mk.training.train import TrainConfig, load_training_checkpoint, train

    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict(cfg_values)
    out = Path(folder)
    summary, ckpt = out / "summary.json", out / "last.pt"
    if ckpt.exists():
        if not reuse:
            raise FileExistsError(
                f"{ckpt} exists: pass --reuse to reuse (or resume) runs of the same "
                "configuration, or choose another --out"
            )
        stored = TrainConfig.from_dict(load_training_checkpoint(ckpt)["config"])
        if stored != cfg:
            raise ValueError(
                f"--reuse: {out} holds a run of another configuration; remove it or drop --reuse"
            )
        if summary.exists():
            return json.loads(summary.read_text())
        return train(cfg, out, resume=True, progress=progress)
    return train(cfg, out, progress=progress)


def _train_all(
    jobs: list[tuple[str, int]],
    setup: Setup,
    out: Path,
    *,
    workers: int,
    reuse: bool,
    progress: bool,
) -> dict[tuple[str, int], float]:
    """Train ``jobs`` (variant, seed), ``workers`` at a time; seconds per run.

    A replacement variant starts once the learned run of its seed has finished; with
    ``workers > 1`` the runs go to spawned processes (one torch thread each).
    """
    from scalespace_mk._progress import log_line as log

    seconds: dict[tuple[str, int], float] = {}

    def needs(job: tuple[str, int]) -> tuple[str, int] | None:
        return None if job[0] in ("learned", "njet") else ("learned", job[1])

    def args(job: tuple[str, int]) -> tuple:
        cfg = train_config(setup, job[0], job[1], out)
        return asdict(cfg), str(run_dir(out, *job)), reuse, progress and workers == 1

    # learned runs first, then the others in seed order
    jobs = sorted(jobs, key=lambda j: (needs(j) is not None, j[1]))
    if workers <= 1:
        for job in jobs:
            start = time.perf_counter()
            _train_one(*args(job))
            seconds[job] = time.perf_counter() - start
            log(f"trained {job[0]} seed {job[1]} in {seconds[job]:.0f} s")
        return seconds
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    done: set[tuple[str, int]] = set()
    waiting = list(jobs)
    running: dict[Any, tuple[tuple[str, int], float]] = {}
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        while waiting or running:
            ready = [j for j in waiting if needs(j) is None or needs(j) in done]
            for job in ready[: max(0, workers - len(running))]:
                waiting.remove(job)
                running[pool.submit(_train_one, *args(job))] = (job, time.perf_counter())
            if not running:
                raise RuntimeError(f"runs {waiting} wait for learned runs that were not queued")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                job, start = running.pop(fut)
                fut.result()
                done.add(job)
                seconds[job] = time.perf_counter() - start
                log(f"trained {job[0]} seed {job[1]} in {seconds[job]:.0f} s")
    return seconds


def _metrics(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# --------------------------------------------------------------------------------------
# filters of a run


_STAGE = re.compile(r"(?:^|\.)stages\.(\d+)\.")


def feature_side(name: str, image_size: int) -> int:
    """Side (pixels) of the feature map a ConvNeXt depthwise layer works on.

    ``image_size // 4 // 2**stage`` for a parameter name such as
    ``stages.2.blocks.0.conv_dw.weight`` (the stem has stride 4, every later stage starts
    with a stride-2 downsampling); ValueError if the name has no ``stages.<i>.``.
    """
    match = _STAGE.search(name)
    if match is None:
        raise ValueError(f"name must contain 'stages.<i>.' (a ConvNeXt layer); got {name!r}")
    return int(image_size) // 4 // 2 ** int(match.group(1))


def _stage(name: str) -> int:
    match = _STAGE.search(name)
    if match is None:
        raise ValueError(f"name must contain 'stages.<i>.' (a ConvNeXt layer); got {name!r}")
    return int(match.group(1))


def pooled_filters(source: Any, *, image_size: int, min_side: int) -> np.ndarray:
    """The depthwise filters ``[N, k, k]`` (float64) of the layers of ``source`` (state dict
    or checkpoint) whose feature maps are at least ``min_side`` pixels wide."""
    from scalespace_mk.networks.checkpoint import find_depthwise

    kept = [
        w.detach().double().cpu().numpy()[:, 0]
        for name, w in find_depthwise(source).items()
        if feature_side(name, image_size) >= min_side
    ]
    if not kept:
        raise ValueError(
            f"no depthwise layer works on maps of at least {min_side} px at image size "
            f"{image_size}; lower min_side"
        )
    return np.concatenate(kept)


def _unit(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return (flat / np.linalg.norm(flat, axis=1, keepdims=True)).reshape(x.shape)


def order_like_published(
    filters: np.ndarray, published: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order and sign 8 extracted filters like the published ones.

    Returns ``ordered`` (zero-mean, unit-l2; ``ordered[j]`` is the filter matched to
    ``published[j]``, signed so that their correlation is positive), ``perm``
    (``ordered[j] = sign[j] * unit(filters[perm[j]])``) and ``corr`` (each slot's
    correlation with its partner). The matching maximises the summed ``|correlation|``
    over one-to-one assignments (:func:`scipy.optimize.linear_sum_assignment`).
    """
    from scipy.optimize import linear_sum_assignment

    a, b = _unit(np.asarray(filters, float)), _unit(np.asarray(published, float))
    if a.shape != b.shape:
        raise ValueError(
            f"filters and published must have the same shape; got {a.shape} and {b.shape}"
        )
    c = b.reshape(len(b), -1) @ a.reshape(len(a), -1).T  # [published j, extracted i]
    rows, cols = linear_sum_assignment(-np.abs(c))
    perm = cols[np.argsort(rows)]
    signs = np.sign(c[np.arange(len(b)), perm])
    signs[signs == 0] = 1.0
    return a[perm] * signs[:, None, None], perm, np.abs(c[np.arange(len(b)), perm])


# --------------------------------------------------------------------------------------
# analysis


def _summary(r2: np.ndarray) -> dict[str, float]:
    return {
        "median_r2": float(np.median(r2)),
        "share_r2_gt_0_8": float(np.mean(r2 > 0.8)),
        "filters": int(len(r2)),
    }


def _stage_filters(state: dict[str, Any]) -> dict[int, tuple[np.ndarray, list[str]]]:
    """Depthwise filters per stage: ``[N, k, k]`` and their layer names."""
    from scalespace_mk.networks.checkpoint import find_depthwise

    by_stage: dict[int, tuple[list[np.ndarray], list[str]]] = {}
    for name, weight in find_depthwise(state).items():
        w = weight.detach().double().cpu().numpy()[:, 0]
        filters, names = by_stage.setdefault(_stage(name), ([], []))
        filters.append(w)
        names.extend([name] * len(w))
    return {s: (np.concatenate(f), n) for s, (f, n) in sorted(by_stage.items())}


def census_against_nulls(
    states: dict[int, dict[str, Any]], setup: Setup
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Census of the learned filters of every stage and of both nulls, per seed and pooled.

    Returns the JSON-ready census block and, for the figures, the learned records of the
    analysed stages (seed of the first run) with their filters.
    """
    from scalespace_mk.analysis.census import census

    per_stage: dict[str, Any] = {}
    pooled: dict[str, list[np.ndarray]] = {"learned": [], "null_iid": [], "null_phase": []}
    source = ""
    first: dict[str, Any] = {}
    for seed, state in states.items():
        for stage, (filters, names) in _stage_filters(state).items():
            side = feature_side(f"stages.{stage}.blocks.0.conv_dw.weight", setup.image_size)
            analysed = side >= setup.min_side
            entry = per_stage.setdefault(
                str(stage), {"side": side, "analysed": analysed, "seeds": {}}
            )
            res = census(filters)
            r2 = {"learned": np.asarray(res.r2)}
            scale = np.sqrt(np.asarray(res.sigma_x) * np.asarray(res.sigma_y))
            entry.setdefault("fitted_sigma_seeds", []).append(float(np.median(scale)))
            for kind in ("iid", "phase"):
                null, source = null_filters(filters, kind, 10_000 * seed + 100 * stage + 1)
                r2[f"null_{kind}"] = np.asarray(census(null).r2)
            entry["seeds"][str(seed)] = {k: _summary(v) for k, v in r2.items()}
            if analysed:
                for k, v in r2.items():
                    pooled[k].append(v)
                if seed == min(states):
                    first.setdefault("filters", []).append(filters)
                    first.setdefault("records", []).extend(
                        dict(rec, layer=names[i], stage=stage)
                        for i, rec in enumerate(res.records())
                    )
    for entry in per_stage.values():
        entry["fitted_sigma"] = interval(entry.pop("fitted_sigma_seeds"))
        seeds = entry["seeds"].values()
        for k in ("learned", "null_iid", "null_phase"):
            entry[k] = interval([s[k]["median_r2"] for s in seeds])
        learned, iid, phase = entry["learned"], entry["null_iid"], entry["null_phase"]
        entry["target_met"] = bool(
            learned["mean"] >= 2 * iid["mean"]
            and learned["ci95"][0] > phase["ci95"][1]
            and learned["ci95"][0] > iid["ci95"][1]
        )
    block: dict[str, Any] = {
        k: _summary(np.concatenate(v)) if v else None for k, v in pooled.items()
    }
    block["stages"] = per_stage
    block["null_source"] = source
    block["target"] = (
        "per analysed stage: mean over seeds of the median R^2 of the learned filters >= 2x "
        "that of the i.i.d. null, and its 95 % interval above those of both nulls"
    )
    block["target_met"] = all(e["target_met"] for e in per_stage.values() if e["analysed"])
    return block, first


def learnable_scales(out: Path, setup: Setup, census_block: dict[str, Any]) -> dict[str, Any]:
    """Per stage: the scales the ``learnable`` runs started at and ended at (medians).

    The start is the method-B fit of the published filter of each channel's type; the
    geometric mean ``sqrt(sigma_x sigma_y)`` summarises a channel's two scales.
    """
    from scalespace_mk.networks.checkpoint import candidate_models
    from scalespace_mk.training.train import load_training_checkpoint

    _, fits = candidate_models("B", size=7)
    start_of = {f.filter_type: np.sqrt(f.sigma_x * f.sigma_y) for f in fits}
    stages: dict[str, dict[str, list[float]]] = {}
    for seed in setup.seeds:
        path = run_dir(out, "learnable", seed) / "last.pt"
        if not path.exists():
            continue
        state = load_training_checkpoint(path)["model"]
        for key, raw_x in state.items():
            if not key.endswith("conv_dw.sigma_x_raw"):
                continue
            prefix = key[: -len("sigma_x_raw")]
            types = state[prefix + "types"].numpy()
            sx = raw_x.double().abs().numpy()
            sy = state[prefix + "sigma_y_raw"].double().abs().numpy()
            sy = np.where(types == 7, sx, sy)
            end = np.sqrt(sx * sy)
            start = np.array([start_of[int(t)] for t in types])
            entry = stages.setdefault(str(_stage(key)), {"start": [], "end": []})
            entry["start"].append(float(np.median(start)))
            entry["end"].append(float(np.median(end)))
            entry.setdefault("moved", []).append(float(np.median(np.abs(end - start))))
    result: dict[str, Any] = {}
    for stage, entry in sorted(stages.items()):
        result[stage] = {k: interval(v) for k, v in entry.items()}
        fitted = census_block["stages"].get(stage, {}).get("fitted_sigma")
        if fitted is not None:
            result[stage]["learned_census"] = fitted
    return result


def extracted_filters(
    states: dict[int, dict[str, Any]], setup: Setup, published: np.ndarray
) -> tuple[dict[str, Any], np.ndarray]:
    """8 master filters from the learned runs (analysed stages, all seeds), fitted by every
    method of :data:`scalespace_mk.analysis.fit.METHODS`."""
    from scalespace_mk.analysis.census import census
    from scalespace_mk.analysis.fit import METHODS, fit_filters
    from scalespace_mk.networks.checkpoint import extract

    pooled = np.concatenate(
        [
            pooled_filters(s, image_size=setup.image_size, min_side=setup.min_side)
            for s in states.values()
        ]
    )
    result = extract(pooled, k=8, seed=0)
    ordered, perm, corr = order_like_published(result.filters, published)
    fits: dict[str, list[str]] = {}
    for method in METHODS:
        try:
            fit = fit_filters(ordered, method=method, on_error="record")
            fits[method] = [
                "ok" if getattr(f, "error", None) is None else str(f.error)[:80] for f in fit
            ]
        except ValueError as exc:  # the method cannot run on these filters at all
            fits[method] = [str(exc).splitlines()[0][:80]] * 8
    cen = census(ordered)
    info = {
        "count": int(pooled.shape[0]),
        "explained": float(result.explained),
        "share": result.share[perm].tolist(),
        "corr_published": corr.tolist(),
        "census_type": [int(t) for t in cen.type],
        "census_r2": [float(r) for r in cen.r2],
        "fits": fits,
        "all_methods_fit": all(v == "ok" for row in fits.values() for v in row),
    }
    return info, ordered


def builtin_decision(census_block: dict[str, Any], extraction: dict[str, Any]) -> dict:
    """Whether the extracted filters may replace the package's ``builtin`` filters.

    Only if they are clearly structured (the census target is met in every analysed stage
    and each extracted filter has census R^2 >= 0.8) and every fitting method fits all 8.
    """
    reasons = []
    if not census_block["target_met"]:
        reasons.append("the learned filters do not beat both null models in every analysed stage")
    low = [j + 1 for j, r in enumerate(extraction["census_r2"]) if r < 0.8]
    if low:
        reasons.append(f"extracted filters {low} have census R^2 < 0.8")
    if not extraction["all_methods_fit"]:
        failing = sorted(m for m, row in extraction["fits"].items() if any(v != "ok" for v in row))
        reasons.append(f"methods {failing} do not fit all 8")
    return {"replace": not reasons, "reasons": reasons}


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


def _figure_picks(first: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per type the best and the median learned filter of the analysed stages and their
    census models: arrays ``[4, 8, k, k]`` (rows: best, its model, median, its model)."""
    filters = np.concatenate(first["filters"])
    records = first["records"]
    size = filters.shape[-1]
    panels = np.full((4, 8, size, size), np.nan)
    r2 = np.full((2, 8), np.nan)
    counts = np.zeros(8, dtype=np.int64)
    for t in range(1, 9):
        of_t = sorted(
            (i for i, r in enumerate(records) if r["type"] == t), key=lambda i: -records[i]["r2"]
        )
        counts[t - 1] = len(of_t)
        for k, i in enumerate([of_t[0], of_t[len(of_t) // 2]] if of_t else []):
            panels[2 * k, t - 1] = filters[i]
            panels[2 * k + 1, t - 1] = _model_of(records[i], size)
            r2[k, t - 1] = records[i]["r2"]
    return {"panels": panels, "r2": r2, "counts": counts}


# --------------------------------------------------------------------------------------
# the experiment


def run_experiment(
    setup: Setup,
    out: Path,
    *,
    variants: tuple[str, ...] = tuple(VARIANTS),
    workers: int = 1,
    reuse: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Train every variant for every seed, analyse, and write ``out/results.json``.

    Parameters
    ----------
    setup : Setup
        :data:`FULL` or :data:`SMOKE` (or a variant of them).
    out : Path
        Run folder: ``out/<variant>-seed<s>/`` per run, ``results.json``,
        ``figure_data.npz``, ``extracted_filters.npy``.
    variants : tuple of str
        Variants to train (``learned`` is always trained first).
    workers : int
        Runs trained at once (one torch thread each).
    reuse : bool
        Reuse finished runs of the same configuration (resume unfinished ones).
    progress : bool
        Progress bars (only with ``workers == 1``).

    Returns
    -------
    dict
        The results (``results.json``).
    """
    import torch

    from scalespace_mk._io import atomic_path
    from scalespace_mk._progress import log_line as log
    from scalespace_mk.analysis.filters import load_filters
    from scalespace_mk.training.train import load_training_checkpoint

    started, cpu_start = time.perf_counter(), time.process_time()
    load_start = os.getloadavg()
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    has_njet, why_not = njet_available()
    trained = ["learned"] + [v for v in variants if v != "learned" and (v != "njet" or has_njet)]
    jobs = [(v, s) for s in setup.seeds for v in trained]
    _train_all(jobs, setup, out, workers=workers, reuse=reuse, progress=progress)
    train_s = time.perf_counter() - started

    log("analysing")
    runs: dict[str, Any] = {}
    for variant in trained:
        per_seed = []
        for seed in setup.seeds:
            history = _metrics(run_dir(out, variant, seed))
            summary = json.loads((run_dir(out, variant, seed) / "summary.json").read_text())
            per_seed.append(
                {
                    "seed": seed,
                    "val_acc": float(history[-1]["val_acc"]),
                    "val_loss": float(history[-1]["val_loss"]),
                    "history": [float(h["val_acc"]) for h in history],
                    "trainable_parameters": summary.get("trainable_parameters"),
                    # time inside train() (epochs and evaluation), also for reused runs
                    "seconds": round(sum(float(h.get("seconds", 0.0)) for h in history), 1),
                    "images_per_s": round(
                        float(np.mean([h.get("images_per_s", np.nan) for h in history])), 1
                    ),
                }
            )
        runs[variant] = per_seed
    states = {
        s: load_training_checkpoint(run_dir(out, "learned", s) / "last.pt")["model"]
        for s in setup.seeds
    }
    census_block, first = census_against_nulls(states, setup)
    published = load_filters()
    extraction, extracted = extracted_filters(states, setup, published)
    picks = _figure_picks(first)

    variants_block: dict[str, Any] = {}
    for variant in VARIANTS:
        if variant not in variants:
            continue
        if variant not in runs:
            variants_block[variant] = None
            continue
        acc = [r["val_acc"] for r in runs[variant]]
        variants_block[variant] = {
            "description": DESCRIPTION[variant],
            "val_acc": acc,
            **{k: v for k, v in interval(acc).items() if k != "n"},
            "runs": runs[variant],
        }
    base = variants_block["learned"]
    findings = []
    for variant, block in variants_block.items():
        if block is None or variant == "learned":
            continue
        block["separated_from_learned"] = separated({"ci95": block["ci95"]}, {"ci95": base["ci95"]})
        block["difference_to_learned"] = block["mean"] - base["mean"]
        if block["separated_from_learned"]:
            findings.append(variant)

    results: dict[str, Any] = {
        "dataset": setup.data.split(":")[0],
        "data_spec": setup.data,
        "image_size": setup.image_size,
        "epochs": setup.epochs,
        "seeds": list(setup.seeds),
        "setup": asdict(setup),
        "variants": variants_block,
        "njet_reason": None if has_njet else why_not,
        "separated_from_learned": findings,
        "census": census_block,
        "learnable_scales": learnable_scales(out, setup, census_block),
        "extraction": extraction,
        "builtin": builtin_decision(census_block, extraction),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": 1,
            "workers": workers,
            "load_start": [round(v, 2) for v in load_start],
            "load_end": [round(v, 2) for v in os.getloadavg()],
        },
        # sum of the runs' own times, and the wall time of this invocation (small on --reuse)
        "run_s_total": round(sum(r["seconds"] for rs in runs.values() for r in rs), 1),
        "train_s": round(train_s, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        # CPU seconds of this process (all of the work when workers == 1)
        "cpu_s": round(time.process_time() - cpu_start, 1),
    }
    if not has_njet and "njet" in variants:
        results["variants"]["njet"] = None
    with atomic_path(out / "figure_data.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, published=published, extracted=extracted, **picks)
    with atomic_path(out / "extracted_filters.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, extracted)
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1, default=float) + "\n")
    return results


def longer_training(folder: Path) -> dict[str, Any]:
    """The accuracy and per-stage census of a longer learned-only run (its results.json)."""
    other = json.loads((Path(folder) / "results.json").read_text())
    stages = {
        st: {
            k: e[k] for k in ("side", "analysed", "learned", "null_iid", "null_phase", "target_met")
        }
        for st, e in other["census"]["stages"].items()
    }
    learned = other["variants"]["learned"]
    return {
        "epochs": other["epochs"],
        "seeds": other["seeds"],
        "val_acc": learned["val_acc"],
        "mean": learned["mean"],
        "std": learned["std"],
        "ci95": learned["ci95"],
        "run_s_total": other.get("run_s_total"),
        "census_stages": stages,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: run the experiment, then render the report (experiments/report.py)."""
    import report

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="the CI version (< 60 s)")
    p.add_argument("--out", type=Path, help="run folder (default runs/masterkey_real[_smoke])")
    p.add_argument("--data", help="dataset spec overriding the setup's (e.g. fashion-mnist:PATH)")
    p.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the setup's)")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="variants to train (learned is always trained)",
    )
    p.add_argument("--workers", type=int, default=1, help="runs trained at once (1 thread each)")
    p.add_argument("--reuse", action="store_true", help="reuse finished runs of the same config")
    p.add_argument(
        "--publish",
        action="store_true",
        help="also write docs/results.md, docs/results.json and docs/figures/results_*.png",
    )
    p.add_argument("--progress", action="store_true", help="progress bars (with --workers 1)")
    p.add_argument(
        "--longer",
        type=Path,
        help="run folder of a longer learned-only run (--variants learned --epochs N) whose "
        "accuracy and census the report shows beside the main ones",
    )
    args = p.parse_args(argv)
    setup = SMOKE if args.smoke else FULL
    if args.data:
        setup = replace(setup, data=args.data)
    if args.seeds:
        setup = replace(setup, seeds=tuple(args.seeds))
    if args.epochs:
        setup = replace(setup, epochs=args.epochs)
    out = args.out or REPO / "runs" / f"masterkey_real{'_smoke' if args.smoke else ''}"
    results = run_experiment(
        setup,
        out,
        variants=tuple(args.variants),
        workers=args.workers,
        reuse=args.reuse,
        progress=args.progress,
    )
    if args.longer:
        results["longer_training"] = longer_training(args.longer)
    command = "python experiments/masterkey_real.py " + " ".join(argv or sys.argv[1:])
    report.render(out, results, out / "results.md", out / "figures", command=command.strip())
    if args.publish:
        report.publish(out, results, REPO / "docs", command=command.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
