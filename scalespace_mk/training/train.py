"""Train and evaluate ConvNeXt networks with learned or analytic depthwise filters.

One readable loop (:func:`train`) configured by a frozen :class:`TrainConfig`; DDP comes
from torchrun's environment variables; checkpoints are complete (model, EMA, optimizer,
scaler, step, sampler position and every RNG state) and written atomically, so a killed run
resumed with ``--resume`` ends, on CPU with a fixed seed, with the same weights as an
uninterrupted one.

Launch commands::

    # laptop / CI smoke run on the built-in natural-image patches
    scalespace-mk train --model convnextv2_test --data builtin --epochs 2 --batch-size 32 \\
        --out runs/smoke
    # one node, 8 GPUs, ImageNet, the ConvNeXt-V2 fine-tuning recipe of docs/method.md#networks
    torchrun --nproc_per_node 8 -m scalespace_mk.cli train --preset convnextv2-finetune \\
        --model convnextv2_tiny --dwconv idealized --replace-from learned.pt \\
        --data imagenet:/data/imagenet --batch-size 512 --out runs/in1k-ideal
    # several nodes: add --nnodes N --node_rank R --rdzv_endpoint HOST:PORT to torchrun
    # CPU, 2 processes (gloo), as the test suite does
    torchrun --nproc_per_node 2 -m scalespace_mk.cli train --model convnextv2_test ...

Depthwise variants (``--dwconv``), docs/method.md#networks:

- ``learned``: ordinary depthwise convolutions (the baseline);
- ``masterkey``: every channel one of 8 frozen master key filters with learnable ``a``, ``b``;
- ``idealized``: every channel one of the 8 frozen idealised models (fitting ``--method``);
- ``learnable``: every channel keeps its model type and learns its own scales.
- ``njet``: every channel a learnable discrete N-jet (``--njet-order``, default 2): scales
  and coefficients learn (:class:`scalespace_mk.networks.layers.NJetDepthwiseConv2d`).

With ``--replace-from CKPT`` the per-channel choice (and ``a``, ``b``) comes from the least-
squares replacement of that checkpoint's depthwise filters (experiment 1) and every other
weight starts afresh; with ``--init CKPT`` all weights start from the checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from scalespace_mk import _json
from scalespace_mk._checks import check_choice
from scalespace_mk._io import atomic_path
from scalespace_mk._progress import format_duration, log_line, progress, stream_is_terminal
from scalespace_mk.networks.layers import DWCONV_KINDS

__all__ = [
    "PRESETS",
    "RESUME_MAY_CHANGE",
    "ModelEma",
    "TrainConfig",
    "build_model",
    "convert_depthwise",
    "cosine_lr",
    "deploy_state_dict",
    "evaluate",
    "evaluate_checkpoint",
    "load_training_checkpoint",
    "param_groups",
    "train",
]

#: ``--dwconv`` choices: the kinds of :func:`scalespace_mk.networks.layers.make_dwconv`
DWCONV = DWCONV_KINDS
AMP = ("none", "bf16", "fp16")
AUGMENT = ("imagenet", "light", "none")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in every checkpoint).

    Attributes
    ----------
    model : str
        A name from :func:`scalespace_mk.networks.list_models` (used when ``arch`` is
        ``convnext``).
    arch : str
        Network family (:data:`scalespace_mk.networks.ARCHS`): ``convnext`` (default) or
        ``mobilenet_v2`` (torchvision layout; an analytic ``dwconv`` needs ``replace_from``
        or ``init``, whose depthwise filters are substituted).
    dwconv : str
        ``learned``, ``masterkey``, ``idealized``, ``learnable`` or ``njet`` (module
        docstring); the replacement goes through
        :func:`scalespace_mk.networks.substitute.substitute_depthwise`.
    method : str
        Fitting method whose idealised models are the candidates for ``idealized`` and
        ``learnable`` (docs/method.md#fitting; default ``B``).
    filters : str, optional
        Master key filter source (default: the published 8; or a filter file).
    init, replace_from : str, optional
        Checkpoint to start all weights from / to take the depthwise replacement from.
    data : str
        Dataset specification (:func:`scalespace_mk.training.datasets.build_dataset`).
    image_size : int
        Training and evaluation resolution.
    epochs, batch_size, accum_steps : int
        Epochs, samples per process and step, micro-batches per optimizer step.
    lr : float
        Base learning rate per 256 samples; the peak rate is ``lr * global_batch / 256``.
    min_lr, warmup_epochs, weight_decay, layer_decay : float
        Cosine floor, linear warm-up length, AdamW weight decay (not on norms, biases and
        scales: every 1-D parameter), layer-wise decay factor (1 = off).
    drop_path : float
        Final stochastic-depth rate.
    augment : str
        ``imagenet`` (the full recipe), ``light`` (small data) or ``none`` (flip only).
    mixup, cutmix, label_smoothing, rand_magnitude, random_erasing : float
        Augmentation strengths (``imagenet`` preset values by default).
    ema_decay : float
        Decay of the parameter EMA (0 disables it).
    amp : str
        ``none``, ``bf16`` or ``fp16`` autocast.
    channels_last, compile : bool
        Memory format and ``torch.compile``.
    workers : int
        DataLoader workers per process.
    seed : int
        Seed of every random number generator.
    save_every_steps : int
        Also checkpoint every N optimizer steps (0: only at the end of epochs).
    max_steps_per_epoch : int, optional
        Cap the optimizer steps per epoch (None: no cap); for smoke runs.
    grad_clip : float
        Clip the gradient norm (0: no clipping).
    strict_data : bool
        Fail on an unreadable image instead of skipping it with a warning.
    log_every : int
        Also write a progress line every N optimizer steps (0: one line per epoch only).

    Options outside the documented ranges raise a one-line ``ValueError`` naming the option:
    ``image_size`` lies in [32, 1024] (ConvNeXt downsamples by 32), ``seed`` in
    [0, 2**32 - 1] (numpy's range), the augmentation strengths are finite with
    ``label_smoothing`` in [0, 1), ``random_erasing`` in [0, 1] and ``rand_magnitude`` in
    [0, 10].
    """

    model: str = "convnextv2_atto"
    arch: str = "convnext"
    dwconv: str = "learned"
    njet_order: int = 2
    method: str = "B"
    filters: str | None = None
    init: str | None = None
    replace_from: str | None = None
    data: str = "builtin"
    image_size: int = 32
    epochs: int = 10
    batch_size: int = 64
    accum_steps: int = 1
    lr: float = 8e-4
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    layer_decay: float = 1.0
    drop_path: float = 0.0
    augment: str = "light"
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.1
    rand_magnitude: float = 5.0
    random_erasing: float = 0.0
    ema_decay: float = 0.0
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    workers: int = 0
    seed: int = 0
    save_every_steps: int = 0
    max_steps_per_epoch: int | None = None
    grad_clip: float = 0.0
    strict_data: bool = False
    log_every: int = 0

    def __post_init__(self) -> None:
        from scalespace_mk.analysis.fit import METHODS
        from scalespace_mk.networks.registry import ARCHS

        check_choice("arch", self.arch, ARCHS)
        check_choice("dwconv", self.dwconv, DWCONV)
        if isinstance(self.njet_order, bool) or self.njet_order not in (1, 2, 3, 4):
            raise ValueError(f"njet_order must be 1, 2, 3 or 4; got {self.njet_order!r}")
        check_choice("amp", self.amp, AMP)
        check_choice("augment", self.augment, AUGMENT)
        check_choice("method", self.method, METHODS)
        from scalespace_mk import limits

        _check_int("epochs", self.epochs, 1, limits.EPOCHS_MAX, why=" (limits.EPOCHS_MAX)")
        _check_int(
            "batch_size", self.batch_size, 1, limits.BATCH_SIZE_MAX, why=" (limits.BATCH_SIZE_MAX)"
        )
        _check_int("accum_steps", self.accum_steps, 1, 1 << 20)
        _check_int("workers", self.workers, 0, limits.WORKERS_MAX, why=" (limits.WORKERS_MAX)")
        for name in ("save_every_steps", "log_every"):
            _check_int(name, getattr(self, name), 0, 1 << 62)
        _check_int("image_size", self.image_size, 32, 1024, why=" (ConvNeXt downsamples by 32)")
        _check_int("seed", self.seed, 0, 2**32 - 1)
        if self.max_steps_per_epoch is not None:
            _check_int(
                "max_steps_per_epoch", self.max_steps_per_epoch, 1, 1 << 62, why=" (None: no cap)"
            )
        for name in ("lr", "min_lr", "warmup_epochs", "weight_decay", "ema_decay", "grad_clip"):
            _check_float(name, getattr(self, name), 0.0, math.inf)
        for name in ("mixup", "cutmix"):
            _check_float(name, getattr(self, name), 0.0, math.inf)
        _check_float("label_smoothing", self.label_smoothing, 0.0, 1.0, closed=False)
        _check_float("random_erasing", self.random_erasing, 0.0, 1.0)
        _check_float("rand_magnitude", self.rand_magnitude, 0.0, 10.0)
        for name in ("model", "data"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string; got {getattr(self, name)!r}")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must lie in (0, 1]; got {self.layer_decay!r}")
        if not 0 <= self.drop_path < 1:
            raise ValueError(f"drop_path must lie in [0, 1); got {self.drop_path!r}")
        if self.ema_decay >= 1:
            raise ValueError(f"ema_decay must lie in [0, 1); got {self.ema_decay!r}")
        if self.init and self.replace_from:
            raise ValueError("pass either init or replace_from, not both")
        if self.filters is not None and self.dwconv in ("learned", "njet"):
            raise ValueError(
                f"filters is used only by the masterkey, idealized and learnable depthwise "
                f"convs; --dwconv {self.dwconv} would ignore it: drop --filters or choose "
                "another --dwconv"
            )
        if self.dwconv == "learned" and self.replace_from:
            raise ValueError(
                "replace_from needs an analytic dwconv (masterkey, idealized, "
                "learnable); use init to start learned filters from a checkpoint"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, legacy: bool = True) -> TrainConfig:
        """Build from a mapping, rejecting unknown keys with their names.

        With ``legacy`` (default), values of configurations stored before 0.2.0 are read as
        they were meant (``max_steps_per_epoch`` 0: no cap).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; known: {sorted(known)}")
        values = dict(values)
        if legacy and values.get("max_steps_per_epoch") == 0:
            values["max_steps_per_epoch"] = None
        return cls(**values)


def _check_int(name: str, value: Any, low: int, high: int | None = None, *, why: str = "") -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        span = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {span}{why}; got {value!r}")


def _check_float(name: str, value: Any, low: float, high: float, *, closed: bool = True) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and low <= value
        and (value <= high if closed else value < high)
    )
    if not ok:
        span = (
            f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}{']' if closed else ')'}"
        )
        raise ValueError(f"{name} must be a finite number {span}; got {value!r}")


#: Named recipes; command-line options override them.
PRESETS: dict[str, dict[str, Any]] = {
    # Official ConvNeXt-V2 ImageNet-1k fine-tuning (docs/method.md#networks); base lr per 256
    # samples.
    "convnextv2-finetune": dict(
        image_size=224,
        epochs=300,
        warmup_epochs=40,
        lr=8e-4,
        min_lr=1e-6,
        weight_decay=0.05,
        layer_decay=0.9,
        drop_path=0.2,
        label_smoothing=0.1,
        augment="imagenet",
        mixup=0.8,
        cutmix=1.0,
        rand_magnitude=9.0,
        random_erasing=0.25,
        ema_decay=0.9999,
        amp="bf16",
        channels_last=True,
        workers=10,
        batch_size=512,
    ),
    # Small natural-image patches on a laptop CPU (the experiment of experiments/).
    "builtin-cpu": dict(
        image_size=32,
        epochs=10,
        warmup_epochs=1,
        lr=2e-3,
        min_lr=1e-5,
        weight_decay=0.05,
        drop_path=0.0,
        augment="light",
        label_smoothing=0.1,
        batch_size=64,
    ),
}


# --------------------------------------------------------------------------------------
# distributed set-up


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _first_host(nodelist: str) -> str | None:
    """The first host of a SLURM node list (``node[03-05,9],gpu1`` -> ``node03``)."""
    text = nodelist.strip()
    if not text:
        return None
    depth, end = 0, len(text)
    for i, ch in enumerate(text):  # the first entry: up to a comma outside brackets
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            end = i
            break
    first = text[:end]
    if "[" not in first:
        return first
    prefix, _, ranges = first.partition("[")
    return prefix + ranges.rstrip("]").split(",")[0].split("-")[0]


def slurm_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """torchrun's variables for a task started by ``srun`` without torchrun.

    Parameters
    ----------
    env : mapping, optional
        The environment (default ``os.environ``).

    Returns
    -------
    dict
        ``{}`` when torchrun's ``WORLD_SIZE`` is set or this is no ``srun`` task (no
        ``SLURM_PROCID``, or no ``SLURM_STEP_NUM_TASKS``: a batch script or an ``salloc``
        shell, whose ``SLURM_NTASKS`` counts tasks that are not running). Else ``RANK`` =
        ``SLURM_PROCID``, ``WORLD_SIZE`` = ``SLURM_STEP_NUM_TASKS``, ``LOCAL_RANK`` =
        ``SLURM_LOCALID`` and, for two or more tasks, ``MASTER_ADDR`` (kept when set, else
        the first host of ``SLURM_STEP_NODELIST`` / ``SLURM_JOB_NODELIST``) and
        ``MASTER_PORT`` (kept when set, else ``29500 + SLURM_JOB_ID % 1000``, so that two
        jobs sharing a node do not collide).
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env or "SLURM_PROCID" not in env or "SLURM_STEP_NUM_TASKS" not in env:
        return {}
    out = {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": env["SLURM_STEP_NUM_TASKS"],
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
    }
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        if not out[name].strip().isdigit():
            raise ValueError(f"SLURM gave {name} = {out[name]!r}; expected an integer")
    if int(out["WORLD_SIZE"]) > 1:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
        out["MASTER_ADDR"] = env.get("MASTER_ADDR") or _first_host(nodes) or "127.0.0.1"
        job = env.get("SLURM_JOB_ID", "0")
        port = 29500 + (int(job) % 1000 if job.isdigit() else 0)
        out["MASTER_PORT"] = env.get("MASTER_PORT") or str(port)
    return out


def _setup_distributed() -> tuple[_Dist, torch.device]:
    """Read torchrun's variables (or SLURM's, under ``srun``); NCCL on GPUs, gloo on CPU."""
    os.environ.update(slurm_environment())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    d = _Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        device = torch.device("cuda", d.local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return d, device


# --------------------------------------------------------------------------------------
# model


def convert_depthwise(
    model: nn.Module, source: Mapping[str, torch.Tensor], cfg: TrainConfig
) -> dict[str, dict[str, int]]:
    """Replace every depthwise conv of ``model`` by an analytic one fitted to ``source``.

    Works on any network (ConvNeXt, MobileNetV2, ...): the depthwise convs are those of
    :func:`scalespace_mk.networks.substitute.depthwise_convs`, their trained weights are
    ``source[name + '.weight']`` (and ``'.bias'``), and the replacement is made by
    :func:`~scalespace_mk.networks.substitute.substitute_depthwise`, the one substitution
    mechanism of the package, with trainable kinds: ``masterkey`` and ``idealized`` are the
    least-squares replacement (docs/method.md#networks, experiment 1) by ``a x_j + b`` of the
    master key filters or of the idealised models of ``cfg.method`` (frozen ``x_j``,
    trainable ``a``, ``b`` and bias); ``learnable`` starts each channel at the model of its
    chosen type, with the scales of ``cfg.method``, and learns the scales too; ``njet`` is
    the N-jet census of each filter (``cfg.njet_order``) with trainable scales and
    coefficients. The modules are replaced in place.

    Returns
    -------
    dict
        Per depthwise layer (its module name), the number of channels per candidate
        (1-based, as strings; ``{"njet": C}`` for N-jets).
    """
    from scalespace_mk.networks.substitute import depthwise_convs, substitute_depthwise

    kind, options = {
        "masterkey": ("masterkey", {"learnable": True, "filters": cfg.filters}),
        "idealized": (f"method:{cfg.method}", {"learnable": True, "filters": cfg.filters}),
        "learnable": (f"method:{cfg.method}", {"learn_scales": True, "filters": cfg.filters}),
        "njet": (f"njet:{cfg.njet_order}", {"learnable": True}),
    }[cfg.dwconv]
    found = depthwise_convs(model)
    if not found:
        raise ValueError(f"model {cfg.model} has no depthwise nn.Conv2d to replace")
    with torch.no_grad():
        for name, conv in found:
            key = f"{name}.weight"
            if key not in source:
                raise ValueError(f"{key} is missing from the checkpoint to replace from")
            conv.weight.copy_(source[key])
            if conv.bias is not None and f"{name}.bias" in source:
                conv.bias.copy_(source[f"{name}.bias"])
    new, report = substitute_depthwise(model, kind, **options)
    if report.skipped:
        first = report.skipped[0]
        raise ValueError(
            f"--dwconv {cfg.dwconv} cannot replace {len(report.skipped)} depthwise layer(s), "
            f"e.g. {first['name']}: {first['reason']}"
        )
    modules = dict(model.named_modules())
    new_modules = dict(new.named_modules())
    for layer in report.layers:
        parent, _, child = layer.name.rpartition(".")
        setattr(modules[parent] if parent else model, child, new_modules[layer.name])
    return {layer.name: dict(layer.counts) for layer in report.layers}


def deploy_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the equivalent all-``nn.Conv2d`` network (analytic layers exported).

    Every depthwise module that is not an ``nn.Conv2d`` (a substitute of
    :mod:`scalespace_mk.networks.substitute`, or an analytic ``conv_dw`` of a ConvNeXt built
    with ``dwconv=``) is exported as a plain conv; its parameters are replaced by the
    exported ``weight`` and ``bias``, so the result loads into the same network built with
    learned depthwise convs (``create_model(name, dwconv="learned")``, ``mobilenet_v2()``).
    """
    from scalespace_mk.networks import layers as snn
    from scalespace_mk.networks.substitute import SubstitutedDepthwiseConv2d

    state = dict(model.state_dict())
    for name, module in model.named_modules():
        if isinstance(module, SubstitutedDepthwiseConv2d):
            exported = module.to_conv2d()
        elif name.rpartition(".")[2] == "conv_dw" and isinstance(module, snn._CachedDepthwise):
            exported = snn.to_conv2d(module)
        else:
            continue
        prefix = f"{name}."
        for key in [k for k in state if k.startswith(prefix)]:
            del state[key]
        state[prefix + "weight"] = exported.weight.detach().clone()
        if exported.bias is not None:
            state[prefix + "bias"] = exported.bias.detach().clone()
    return state


def build_model(cfg: TrainConfig, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """The network of ``cfg``, with its depthwise convolutions set up (see module docs)."""
    from scalespace_mk.networks import checkpoint_filter_fn, create_model, load_checkpoint
    from scalespace_mk.networks.checkpoint import load_checkpoint_file

    source_path = cfg.init or cfg.replace_from
    if cfg.arch != "convnext":
        return _build_other(cfg, num_classes, source_path)
    dwconv = "learned" if (source_path and cfg.dwconv != "learned") else cfg.dwconv
    kwargs: dict[str, Any] = {}
    if dwconv == "masterkey" and cfg.filters is not None:
        kwargs["dwconv_kwargs"] = {"filters": cfg.filters}
    if dwconv == "njet":
        kwargs["dwconv_kwargs"] = {"order": cfg.njet_order}
    model = create_model(
        cfg.model, num_classes=num_classes, drop_path_rate=cfg.drop_path, dwconv=dwconv, **kwargs
    )
    info: dict[str, Any] = {}
    if source_path:
        raw = load_checkpoint_file(source_path)
        if isinstance(raw, Mapping) and "config" in raw and "model" in raw:
            # a checkpoint written by this trainer: analytic networks through their
            # all-Conv2d equivalent
            raw = raw.get("deploy") or raw["model"]
        state = checkpoint_filter_fn(raw, model)
        _check_source(state, model, cfg)
        if cfg.init:
            result = load_checkpoint(model, state, strict=False)
            info["missing_keys"], info["unexpected_keys"] = (
                list(result.missing_keys),
                list(result.unexpected_keys),
            )
        if cfg.dwconv != "learned":
            info["replacement"] = convert_depthwise(model, state, cfg)
    return model, info


def _build_other(
    cfg: TrainConfig, num_classes: int, source_path: str | None
) -> tuple[nn.Module, dict[str, Any]]:
    """``build_model`` for the architectures other than ConvNeXt (``cfg.arch``)."""
    from scalespace_mk.networks.checkpoint import load_checkpoint_file
    from scalespace_mk.networks.registry import build_network

    model = build_network(cfg.arch, num_classes=num_classes)
    info: dict[str, Any] = {}
    if not source_path:
        if cfg.dwconv != "learned":
            raise ValueError(
                f"--dwconv {cfg.dwconv} with --arch {cfg.arch} fits the analytic filters to "
                "trained ones: pass --replace-from or --init (a checkpoint of this network)"
            )
        return model, info
    raw = load_checkpoint_file(source_path)
    if isinstance(raw, Mapping) and "config" in raw and "model" in raw:
        raw = raw.get("deploy") or raw["model"]
    for key in ("state_dict", "model"):
        if isinstance(raw, Mapping) and isinstance(raw.get(key), Mapping):
            raw = raw[key]
    state = {k.removeprefix("module."): v for k, v in raw.items()}
    _check_source(state, model, cfg)
    if cfg.init:
        target = model.state_dict()
        fits = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
        result = model.load_state_dict(fits, strict=False)
        info["missing_keys"] = list(result.missing_keys)
        info["unexpected_keys"] = sorted(set(state) - set(fits))
    if cfg.dwconv != "learned":
        info["replacement"] = convert_depthwise(model, state, cfg)
    return model, info


def _check_source(state: Mapping[str, Any], model: nn.Module, cfg: TrainConfig) -> None:
    """One line when the checkpoint of ``init`` / ``replace_from`` does not fit ``model``.

    ``init`` must supply every tensor but the classifier (``head.fc``, which may have another
    number of classes); ``replace_from`` every depthwise weight.
    """
    from scalespace_mk.networks.substitute import depthwise_convs

    option, path = ("init", cfg.init) if cfg.init else ("replace_from", cfg.replace_from)
    target = model.state_dict()
    depthwise = {f"{n}.weight" for n, _ in depthwise_convs(model)}
    head = ("head.fc.", "classifier.")  # the classifier may have another number of classes
    keys = [k for k in target if (not k.startswith(head) if cfg.init else k in depthwise)]
    missing = [k for k in keys if k not in state]
    other = [
        k
        for k in keys
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(target[k].shape)
    ]
    if missing or other:
        first = (
            f"{other[0]} is {list(getattr(state[other[0]], 'shape', []))}, the model needs "
            f"{list(target[other[0]].shape)}"
            if other
            else f"{missing[0]} is missing"
        )
        raise ValueError(
            f"{option} {path} does not fit model {cfg.model}: {len(missing)} tensors "
            f"missing, {len(other)} of another shape ({first}); was it trained with another "
            "--model?"
        )


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW parameter groups: no decay on 1-D parameters, layer-wise lr scales."""
    from scalespace_mk.networks import layer_id

    num_layers = 12
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.endswith(".bias")
        lid = layer_id(name, num_layers) if cfg.layer_decay < 1 else num_layers + 1
        scale = cfg.layer_decay ** (num_layers + 1 - lid)
        g = groups.setdefault(
            (lid, no_decay),
            {
                "params": [],
                "weight_decay": 0.0 if no_decay else cfg.weight_decay,
                "lr_scale": scale,
            },
        )
        g["params"].append(p)
    return list(groups.values())


def cosine_lr(step: int, *, total: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup`` steps, then cosine to ``floor``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


class ModelEma:
    """Exponential moving average of a model's parameters and buffers (timm's ModelEmaV2)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        import copy

        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``ema = decay * ema + (1 - decay) * model`` for floating tensors."""
        for e, m in zip(
            self.module.state_dict().values(), model.state_dict().values(), strict=True
        ):
            if e.is_floating_point():
                e.mul_(self.decay).add_(m.detach(), alpha=1 - self.decay)
            else:
                e.copy_(m)


# --------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    *,
    device: torch.device,
    image_size: int,
    amp: str = "none",
    channels_last: bool = False,
    distributed: bool = False,
    show_progress: bool = False,
) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy over ``loader`` (summed over ranks).

    With ``show_progress`` the batches are counted on stderr (a bar on a terminal, a plain
    line every 30 s otherwise).
    """
    from scalespace_mk.training.augment import EvalTransform

    transform = EvalTransform(image_size)
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    batches = progress(loader, desc="eval", unit="batch", enabled=show_progress, leave=False)
    for images, labels in batches:
        images = transform(images.to(device, non_blocking=True))
        labels = labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        totals += torch.stack(
            [
                loss.double(),
                (logits.argmax(1) == labels).sum().double(),
                torch.tensor(float(len(labels)), device=device, dtype=torch.float64),
            ]
        )
    if distributed:
        dist.all_reduce(totals)
    loss, correct, count = totals.tolist()
    return {"loss": loss / max(count, 1), "acc": correct / max(count, 1), "count": int(count)}


def _augment_config(cfg: TrainConfig, num_classes: int, *, crop: bool) -> Any:
    """The :class:`~scalespace_mk.training.augment.AugmentConfig` of ``cfg.augment``."""
    from scalespace_mk.training.augment import AugmentConfig

    if cfg.augment == "none":  # flip and label smoothing only
        return AugmentConfig(
            image_size=cfg.image_size,
            num_classes=num_classes,
            random_resized_crop=False,
            rand_augment_ops=0,
            random_erasing=0,
            mixup_alpha=0,
            cutmix_alpha=0,
            label_smoothing=cfg.label_smoothing,
        )
    options = dict(
        random_resized_crop=crop,
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        label_smoothing=cfg.label_smoothing,
        rand_augment_magnitude=cfg.rand_magnitude,
        random_erasing=cfg.random_erasing,
    )
    if cfg.augment == "light":
        return AugmentConfig.light(cfg.image_size, num_classes, **options)
    return AugmentConfig(image_size=cfg.image_size, num_classes=num_classes, **options)


def _val_loader(dataset: Any, d: _Dist, *, batch_size: int, workers: int) -> Any:
    """Validation loader; under DDP each rank takes every world-th sample, so the summed
    counts cover each image exactly once (a DistributedSampler would pad with repeats)."""
    from torch.utils.data import Subset

    from scalespace_mk.training.datasets import build_loader

    if d.world > 1:
        dataset = Subset(dataset, range(d.rank, len(dataset), d.world))
    loader, _ = build_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    return loader


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------------------
# checkpoints


def _rng_state(aug_gen: torch.Generator) -> dict[str, Any]:
    """Every RNG state, as tensors and plain containers (loadable with weights_only)."""
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global RNG is what libraries use)
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            *map(float, np_state[2:]),
        ],
        "python": list(random.getstate()),
        "augment": aug_gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any], aug_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached))
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    aug_gen.set_state(state["augment"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _load_state_checked(model: nn.Module, state: Any, origin: str) -> None:
    """``model.load_state_dict(state)`` with one-line errors and finite weights only.

    Raises
    ------
    ValueError
        Naming ``origin`` and up to three missing, unexpected or wrongly shaped keys (torch's
        multi-line text never reaches the user), or the first entry holding NaN/Inf.
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"{origin}: expected a state dict, got {type(state).__name__}")
    own = model.state_dict()

    def few(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state
        and isinstance(state[k], torch.Tensor)
        and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    wrong = [k for k in own if k in state and not isinstance(state[k], torch.Tensor)]
    problems = []
    if missing:
        problems.append(f"missing keys {few(missing)}")
    if extra:
        problems.append(f"unexpected keys {few(extra)}")
    if shaped:
        problems.append(f"wrongly shaped (stored vs model) {few(shaped)}")
    if wrong:
        problems.append(f"not tensors {few(wrong)}")
    if problems:
        raise ValueError(
            f"{origin} does not fit the model {type(model).__name__}: {'; '.join(problems)}; "
            "was it written for another --model or --dwconv?"
        )
    for k, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"{origin}: weight {k!r} holds NaN or Inf; the checkpoint cannot be evaluated "
                "(an earlier run diverged: lower --lr or --weight-decay)"
            )
    model.load_state_dict(state)


def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train` (``weights_only=True``) and validate it."""
    from scalespace_mk.networks.checkpoint import load_checkpoint_file

    ckpt = load_checkpoint_file(path)
    required = {"model", "config", "epoch", "step_in_epoch", "global_step"}
    if not isinstance(ckpt, Mapping) or not required <= set(ckpt):
        missing = sorted(required - set(ckpt)) if isinstance(ckpt, Mapping) else required
        raise ValueError(
            f"{path} is not a scalespace_mk training checkpoint (missing {sorted(missing)}): "
            "'eval' and '--resume' read OUT/last.pt of 'scalespace-mk train'; for any other "
            "checkpoint use 'scalespace-mk analyze' (census of its depthwise layers)"
        )
    return dict(ckpt)


# --------------------------------------------------------------------------------------
# the training loop: set-up, one optimizer step, the end of an epoch, checkpoints, progress;
# then the loop itself (:func:`train`), which calls them

#: Options that may differ when a run is resumed. ``epochs`` extends (or shortens) the run:
#: the learning-rate schedule is recomputed for the new total (docs/training.md); the others
#: change neither the data order nor the arithmetic (``threads`` where the configuration has
#: it). Any other difference is refused with the differing options listed.
RESUME_MAY_CHANGE = ("epochs", "workers", "log_every", "save_every_steps", "strict_data", "threads")


@dataclass
class _EpochSums:
    """Running sums of the current epoch (kept in mid-epoch checkpoints as ``partial``)."""

    loss_sum: float = 0.0
    loss_count: int = 0
    seen: int = 0


@dataclass
class _Run:
    """Everything a run holds between steps, built by :func:`_setup`."""

    cfg: TrainConfig
    d: _Dist
    device: torch.device
    out: Path
    model: nn.Module
    net: nn.Module
    ema: ModelEma | None
    optimizer: torch.optim.Optimizer
    scaler: Any
    loader: Any
    sampler: Any
    val_loader: Any
    transform: nn.Module
    criterion: nn.Module
    aug_gen: torch.Generator
    num_classes: int
    info: dict[str, Any]
    steps_per_epoch: int
    warmup: int
    peak: float
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: _EpochSums = field(default_factory=_EpochSums)
    log: _TrainLog | None = None

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs


def train(
    cfg: TrainConfig, out: str | os.PathLike, *, resume: bool = False, progress: bool | None = None
) -> dict[str, Any]:
    """Train ``cfg`` into the folder ``out``; returns the final summary.

    ``out/metrics.jsonl`` gets one JSON object per epoch (``epoch``, ``train_loss``,
    ``val_loss``, ``val_acc``, ``lr``, ``seconds``, ``images_per_s``, and ``val_acc_ema``
    with an EMA); ``out/last.pt`` is the latest complete checkpoint, ``out/summary.json``
    the final summary, ``out/train.log`` the progress lines (appended on resume). Only
    rank 0 writes. ``progress`` None or True shows progress on rank 0 (tqdm bars on a
    terminal, plain lines otherwise, every ``cfg.log_every`` steps and once per epoch);
    False shows nothing and writes no ``train.log``.

    With ``resume`` the run in ``out`` continues from ``out/last.pt``; only the options in
    :data:`RESUME_MAY_CHANGE` may differ from the stored configuration, and a larger
    ``cfg.epochs`` extends the run (the schedule is recomputed for the new total).
    """
    from scalespace_mk.training.runlock import lock_run_folder

    lock = None
    rank = os.environ.get("RANK") or slurm_environment().get("RANK", "0")  # srun: SLURM's
    if int(rank) == 0 and str(out).strip():
        lock = lock_run_folder(out)  # one run (or --resume) per folder at a time
    try:
        summary = _train_locked(cfg, out, resume=resume, progress=progress)
    except BaseException:
        if lock is not None:
            lock.release(failed=True)
        raise
    if lock is not None:
        lock.release()
    return summary


def _train_locked(
    cfg: TrainConfig, out: str | os.PathLike, *, resume: bool, progress: bool | None
) -> dict[str, Any]:
    with _Preemption() as stop:  # from the start: a signal during set-up stops at step 1
        run = _setup(cfg, out, resume=resume, progress=progress)
        lr = _learning_rate(run)
        for epoch in range(run.epoch, cfg.epochs):
            run.sampler.set_epoch(epoch)
            run.net.train()
            started = time.perf_counter()
            sums = run.partial if run.step_in_epoch else _EpochSums()
            batches = iter(run.loader)
            for _ in range(run.step_in_epoch * cfg.accum_steps):  # resume: skip what was done
                next(batches)
            bar = run.log.bar(epoch, run.step_in_epoch, run.steps_per_epoch)
            for step in range(run.step_in_epoch, run.steps_per_epoch):
                lr = _set_learning_rate(run)
                _train_step(run, batches, sums)
                run.log.step(run, epoch, lr, sums, time.perf_counter() - started, bar)
                mid_epoch = step + 1 < run.steps_per_epoch
                every = cfg.save_every_steps
                if every and run.global_step % every == 0 and mid_epoch:
                    _save_checkpoint(run, epoch, step + 1, sums)
                if mid_epoch and (why := stop.requested(run)):
                    bar.close()
                    _save_checkpoint(run, epoch, step + 1, sums)
                    return _preempted(run, why)
            bar.close()
            run.step_in_epoch = 0
            record = _end_of_epoch(run, epoch, lr, sums, time.perf_counter() - started)
            run.history.append(record)
            _save_checkpoint(run, epoch + 1, 0)
            if run.d.main:
                _write_metrics(run.out / "metrics.jsonl", run.history)
            run.log.epoch(run, record)
            if epoch + 1 < cfg.epochs and (why := stop.requested(run)):
                return _preempted(run, why)
    return _finish(run)


# ---- pre-emption (SLURM) -----------------------------------------------------------------


class _Preemption:
    """SIGUSR1 or SIGTERM (SLURM's warning before pre-emption or the time limit): the loop
    writes a checkpoint after the current step and :func:`train` returns, so that a
    requeued job continues with ``--resume``. Under DDP the ranks agree on the step (a
    signal on any rank stops all). The handlers are installed in the main thread only and
    the previous ones restored on exit."""

    SIGNALS = ("SIGUSR1", "SIGTERM")

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[Any, Any] = {}

    def __enter__(self) -> _Preemption:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def requested(self, run: _Run) -> str | None:
        """The signal's name when a stop was asked for (on any rank), else None."""
        asked = self.received is not None
        if run.d.world > 1:
            flag = torch.tensor([1.0 if asked else 0.0], device=run.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            asked = bool(flag.item())
        if not asked:
            return None
        return self.received or "a signal on another rank"


def _preempted(run: _Run, why: str) -> dict[str, Any]:
    """The summary of a run stopped by a signal; ``last.pt`` is written, no summary.json."""
    run.log.line(
        f"stopped by {why} after step {run.global_step} of {run.total_steps}: "
        f"checkpoint {run.out / 'last.pt'} written; run the same command with --resume "
        "to continue"
    )
    if run.d.world > 1:
        dist.barrier()
    return {
        "model": run.cfg.model,
        "dwconv": run.cfg.dwconv,
        "epochs": run.cfg.epochs,
        "final": run.history[-1] if run.history else {},
        "world_size": run.d.world,
        "preempted": {"signal": why, "global_step": run.global_step, "out": str(run.out)},
    }


# ---- set-up ----------------------------------------------------------------------------


def _setup(
    cfg: TrainConfig, out: str | os.PathLike, *, resume: bool, progress: bool | None
) -> _Run:
    """Everything before the first step: data, model, optimizer, resumed state, DDP, log.

    A configuration or data error on any rank is raised on every rank (rank 0 names the
    failing rank) before the first collective operation, so no rank waits for another.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig; got {type(cfg).__name__}")
    if not str(out).strip():
        raise ValueError("out must name the run folder; got an empty string")
    d, device = _setup_distributed()
    run, state = _on_every_rank(d, lambda: _build_run(cfg, Path(out), d, device, resume))
    if d.world > 1:
        _match_grad_strides(run.model)  # no "Grad strides do not match bucket view strides"
        run.net = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        run.net = torch.compile(run.net)
    show = d.main if progress is None else (progress and d.main)
    if d.main:
        run.out.mkdir(parents=True, exist_ok=True)
        if run.info.get("replacement"):
            _write_json(run.out / "replacement.json", run.info["replacement"])
    run.log = _TrainLog(run, enabled=show)
    run.log.line(_start_line(run))  # the first line: a cluster log shows the run at once
    if cfg.amp == "bf16" and device.type == "cpu" and d.main:
        text = (
            "--amp bf16 on a CPU: bf16 autocast is emulated on CPUs without native bf16 "
            "matrix units and ran 26x slower than float32 on this project's test machine; "
            "use --amp none on a CPU"
        )
        if run.log.enabled:
            run.log.line(f"warning: {text}")
        else:
            warnings.warn(text, RuntimeWarning, stacklevel=3)
    if state is not None:
        stored = state["config"].get("epochs")
        run.log.line(
            f"resumed {run.out / 'last.pt'} at epoch {run.epoch + 1}, step {run.global_step}"
            + (
                f"; epochs {stored} -> {cfg.epochs}: the schedule now ends at step "
                f"{run.total_steps}"
                if stored != cfg.epochs
                else ""
            )
        )
    return run


def _start_line(run: _Run) -> str:
    """Model, device, world size, data sizes, steps per epoch, threads, output folder."""
    cfg, d = run.cfg, run.d
    n_train, n_val = run.info.get("data_sizes", (None, None))
    batch = cfg.batch_size * cfg.accum_steps * d.world
    return (
        f"start: model {cfg.model} (--dwconv {cfg.dwconv}), device {run.device}, world size "
        f"{d.world}, data {cfg.data}: {n_train} train / {n_val} val images, "
        f"{run.steps_per_epoch} steps per epoch x {cfg.epochs} epochs (global batch {batch}), "
        f"amp {cfg.amp}, threads {torch.get_num_threads()}, out {run.out}"
    )


def _match_grad_strides(model: nn.Module) -> None:
    """Give every gradient exactly its parameter's strides (DDP copies gradients into buckets
    laid out like the parameters, and warns on every rank when the strides differ).

    A depthwise weight ``[C, 1, k, k]`` is stored with strides ``[k*k, k*k, k, 1]``, but the
    convolution's backward returns its gradient with ``[k*k, 1, k, 1]``: the same memory
    (the axes differ only where the size is 1), which autograd accepts as the parameter's
    layout and DDP's reducer does not (issue 19). A hook re-strides such gradients as a
    view; nothing is copied, on any device.
    """

    def hook(shape: torch.Size, stride: tuple[int, ...]) -> Any:
        def restride(grad: torch.Tensor) -> torch.Tensor:
            if grad.stride() == stride or not grad.is_contiguous():
                return grad
            return grad.as_strided(shape, stride)

        return restride

    for p in model.parameters():
        if p.requires_grad and p.dim() > 1 and 1 in p.shape and p.is_contiguous():
            p.register_hook(hook(p.shape, p.stride()))


def _build_run(
    cfg: TrainConfig, out: Path, d: _Dist, device: torch.device, resume: bool
) -> tuple[_Run, dict[str, Any] | None]:
    """Data, model, optimizer and (with ``resume``) the restored state; no collectives."""
    from scalespace_mk.training.augment import SoftTargetCrossEntropy, TrainTransform
    from scalespace_mk.training.datasets import build_dataset, build_loader

    state = _resume_state(cfg, out / "last.pt", resume)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # noqa: NPY002
    random.seed(cfg.seed)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 17)

    train_set, num_classes = build_dataset(
        cfg.data, split="train", image_size=cfg.image_size, strict=cfg.strict_data, seed=cfg.seed
    )
    val_set, _ = build_dataset(
        cfg.data, split="val", image_size=cfg.image_size, strict=cfg.strict_data, seed=cfg.seed
    )
    loader, sampler = build_loader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=cfg.workers,
        distributed=d.world > 1,
        seed=cfg.seed,
        drop_last=True,
    )
    val_loader = _val_loader(val_set, d, batch_size=cfg.batch_size, workers=cfg.workers)
    if len(loader) < cfg.accum_steps:
        raise ValueError(
            f"the training set gives {len(loader)} batches per epoch, fewer than "
            f"accum_steps={cfg.accum_steps}; lower --batch-size"
        )

    model, info = build_model(cfg, num_classes)
    info["data_sizes"] = (len(train_set), len(val_set))
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=(0.9, 0.999))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    steps_per_epoch = len(loader) // cfg.accum_steps
    if cfg.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    global_batch = cfg.batch_size * cfg.accum_steps * d.world
    # folder datasets already take the random resized crop while decoding
    aug = _augment_config(cfg, num_classes, crop=not getattr(train_set, "crops_on_load", False))
    run = _Run(
        cfg=cfg,
        d=d,
        device=device,
        out=out,
        model=model,
        net=model,
        ema=ema,
        optimizer=optimizer,
        scaler=scaler,
        loader=loader,
        sampler=sampler,
        val_loader=val_loader,
        transform=TrainTransform(aug),
        criterion=SoftTargetCrossEntropy(),
        aug_gen=aug_gen,
        num_classes=num_classes,
        info=info,
        steps_per_epoch=steps_per_epoch,
        warmup=int(round(cfg.warmup_epochs * steps_per_epoch)),
        peak=cfg.lr * global_batch / 256,
    )
    if state is not None:
        _restore(run, state, out / "last.pt")
    return run, state


def _on_every_rank(d: _Dist, build: Any) -> Any:
    """``build()``; under DDP, a failure on any rank is raised on every rank.

    The failing rank raises its own exception; the others raise a ``ValueError`` naming it,
    so rank 0 can report it in one line and no rank waits in a collective operation.
    """
    failure: str | None = None
    try:
        result = build()
    except Exception as exc:
        if d.world == 1:
            raise
        failure = f"{type(exc).__name__}: {exc}"
        error: Exception | None = exc
    else:
        error = None
    if d.world > 1:
        failures: list[str | None] = [None] * d.world
        dist.all_gather_object(failures, failure)
        if error is not None:
            raise error
        first = next(((r, f) for r, f in enumerate(failures) if f), None)
        if first is not None:
            raise ValueError(f"rank {first[0]} failed: {first[1]}")
    return result


def _resume_state(cfg: TrainConfig, path: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume (None for a new run), its configuration checked."""
    if not resume:
        if path.exists():
            raise FileExistsError(
                f"{path} exists: pass --resume to continue that run or choose another --out"
            )
        return None
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    state = load_training_checkpoint(path)
    stored = _entry(path, "config", lambda: TrainConfig.from_dict(state["config"]))
    diff = [
        f"--{f.name.replace('_', '-')} {getattr(stored, f.name)!r} (stored) vs "
        f"{getattr(cfg, f.name)!r} (given)"
        for f in fields(cfg)
        if getattr(stored, f.name) != getattr(cfg, f.name) and f.name not in RESUME_MAY_CHANGE
    ]
    if diff:
        may = ", ".join(
            "--" + f.name.replace("_", "-") for f in fields(cfg) if f.name in RESUME_MAY_CHANGE
        )
        raise ValueError(
            f"--resume with a different configuration: {'; '.join(diff)}; resume with the "
            f"same options (only {may} may change)"
        )
    done = _entry(path, "epoch", lambda: _as_count(state["epoch"]))
    if cfg.epochs < done:
        raise ValueError(
            f"--epochs {cfg.epochs} is fewer than the {done} epochs already run in {path}"
        )
    return state


def _restore(run: _Run, state: Mapping[str, Any], path: Path) -> None:
    """Load the resumed state into ``run``; a missing or damaged entry is named."""
    stored = _entry(path, "num_classes", lambda: _as_count(state["num_classes"]))
    if stored != run.num_classes:
        raise ValueError(
            f"{path}: checkpoint entry 'num_classes' is {stored}, but --data gives "
            f"{run.num_classes} classes; resume with the data the run was started with"
        )
    _entry(path, "scaler", lambda: _check_scaler(state["scaler"]))
    loads = {
        "model": run.model.load_state_dict,
        "optimizer": run.optimizer.load_state_dict,
        "scaler": run.scaler.load_state_dict,
    }
    if run.ema is not None:
        loads["ema"] = run.ema.module.load_state_dict
    for name, load in loads.items():
        _entry(path, name, lambda load=load, name=name: load(state[name]))
    run.epoch = _entry(path, "epoch", lambda: _as_count(state["epoch"]))
    run.step_in_epoch = _entry(path, "step_in_epoch", lambda: _as_count(state["step_in_epoch"]))
    run.global_step = _entry(path, "global_step", lambda: _as_count(state["global_step"]))
    expected = run.epoch * run.steps_per_epoch + run.step_in_epoch
    if run.step_in_epoch >= run.steps_per_epoch or run.global_step != expected:
        raise ValueError(
            f"{path}: checkpoint entries 'epoch', 'step_in_epoch', 'global_step' "
            f"({run.epoch}, {run.step_in_epoch}, {run.global_step}) do not fit "
            f"{run.steps_per_epoch} steps per epoch; was the data changed?"
        )
    run.history = _entry(path, "history", lambda: _history(state.get("history", []), run.epoch))
    partial = _entry(path, "partial", lambda: _partial_sums(state["partial"]))
    if run.step_in_epoch:  # resumed mid-epoch: the sums so far
        run.partial = partial
    # the RNG state saved at that point already accounts for the batches done; only the
    # sampler position must be skipped
    _entry(path, "rng", lambda: _set_rng_state(state["rng"], run.aug_gen))


def _entry(path: Path, name: str, read: Any) -> Any:
    """``read()``, naming the checkpoint entry ``name`` if it is missing or damaged."""
    try:
        return read()
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        detail = str(exc).strip().splitlines()
        detail = detail[0][:200] if detail else type(exc).__name__
        if isinstance(exc, TypeError | AttributeError):  # Python's words ("'int' object is
            detail = "it has the wrong type"  # not iterable") mean nothing to the user
        elif isinstance(exc, KeyError):
            detail = f"no entry {detail}"
        raise ValueError(
            f"{path}: checkpoint entry {name!r} is missing or damaged ({detail}); "
            "the run cannot be resumed or evaluated from it"
        ) from None


def _check_scaler(value: Any) -> None:
    """A GradScaler state: empty (disabled) or finite numbers with a scale > 0."""
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a dict, got {type(value).__name__}")
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise ValueError(f"{key!r} is {item!r}, not a finite number")
    if value and not value.get("scale", 0) > 0:
        raise ValueError(f"'scale' must be > 0, got {value.get('scale')!r}")


def _partial_sums(value: Any) -> _EpochSums:
    """The running sums of a mid-epoch checkpoint: a finite loss sum and two counts."""
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ValueError(f"expected [loss_sum, loss_count, seen], got {value!r}"[:200])
    loss_sum, count, seen = value
    if isinstance(loss_sum, bool) or not isinstance(loss_sum, int | float):
        raise ValueError(f"loss_sum {loss_sum!r} is not a number")
    if not math.isfinite(loss_sum):
        raise ValueError(f"loss_sum {loss_sum!r} is not finite")
    return _EpochSums(float(loss_sum), _as_count(count), _as_count(seen))


def _as_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected an integer >= 0, got {value!r}")
    return value


def _history(lines: Any, epochs: int) -> list[dict[str, Any]]:
    history = [json.loads(line) for line in lines]
    if len(history) != epochs or not all(isinstance(h, dict) for h in history):
        raise ValueError(f"expected {epochs} JSON objects, one per epoch run")
    return history


# ---- one optimizer step ----------------------------------------------------------------


def _learning_rate(run: _Run) -> float:
    return cosine_lr(
        run.global_step,
        total=run.total_steps,
        warmup=run.warmup,
        peak=run.peak,
        floor=run.cfg.min_lr,
    )


def _set_learning_rate(run: _Run) -> float:
    """Set the scheduled rate of the coming step on every parameter group; returns it."""
    lr = _learning_rate(run)
    for g in run.optimizer.param_groups:
        g["lr"] = lr * g["lr_scale"]
    return lr


def _train_step(run: _Run, batches: Any, sums: _EpochSums) -> None:
    """One optimizer step: ``accum_steps`` micro-batches, the update, the EMA."""
    cfg = run.cfg
    for micro in range(cfg.accum_steps):
        images, labels = next(batches)
        images, targets = run.transform(
            images.to(run.device, non_blocking=True),
            labels.to(run.device, non_blocking=True),
            generator=run.aug_gen,
        )
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        last = micro == cfg.accum_steps - 1
        sync = nullcontext() if (last or run.d.world == 1) else run.net.no_sync()
        with sync, _autocast(run.device, cfg.amp):
            loss = run.criterion(run.net(images).float(), targets)
            run.scaler.scale(loss / cfg.accum_steps).backward()
        value = float(loss.detach())
        if not math.isfinite(value):  # before the update: the weights stay as they were
            _non_finite(run, f"the training loss is {value}")
        sums.loss_sum += value
        sums.loss_count += 1
        sums.seen += images.shape[0]
    if cfg.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update(run.model)
    run.global_step += 1
    if not math.isfinite(sums.loss_sum):
        _non_finite(run, f"the summed training loss is {sums.loss_sum}")
    bad = _first_non_finite(run.model)
    if bad is not None:
        _non_finite(run, f"weight {bad!r} holds NaN or Inf after the update")


def _first_non_finite(model: nn.Module) -> str | None:
    """The name of the first parameter or buffer of ``model`` holding NaN/Inf, else None."""
    tensors = [(n, t) for n, t in model.state_dict().items() if t.is_floating_point()]
    if not tensors:
        return None
    with torch.no_grad():
        ok = torch.stack([torch.isfinite(t).all() for _, t in tensors])
        if bool(ok.all()):
            return None
        return tensors[int((~ok).nonzero()[0, 0])][0]


def _non_finite(run: _Run, what: str) -> None:
    """Stop the run at the first non-finite loss or weight; the last good checkpoint stays."""
    cfg = run.cfg
    raise RuntimeError(
        f"{what} at step {run.global_step + 1} (epoch {run.epoch + 1}); training stopped, "
        f"nothing was saved over {run.out / 'last.pt'}. Likely cause: --lr {cfg.lr:g} or "
        f"--weight-decay {cfg.weight_decay:g} too large"
        + (f", or --amp {cfg.amp} (try --amp none)" if cfg.amp != "none" else "")
        + "; lower them (or set --grad-clip) and start again or --resume"
    )


# ---- the end of an epoch: evaluation, metrics --------------------------------------------


def _end_of_epoch(
    run: _Run, epoch: int, lr: float, sums: _EpochSums, seconds: float
) -> dict[str, Any]:
    """The metrics record of ``epoch``: validation (and EMA) loss and accuracy, rates."""
    cfg = run.cfg
    options = dict(
        device=run.device,
        image_size=cfg.image_size,
        amp=cfg.amp,
        channels_last=cfg.channels_last,
        distributed=run.d.world > 1,
        show_progress=run.log.terminal,
    )
    val = evaluate(run.net, run.val_loader, **options)
    train_loss = torch.tensor([sums.loss_sum, sums.loss_count], dtype=torch.float64)
    train_loss = train_loss.to(run.device)
    if run.d.world > 1:
        dist.all_reduce(train_loss)
    record = {
        "epoch": epoch + 1,
        "train_loss": float(train_loss[0] / max(train_loss[1], 1)),
        "val_loss": val["loss"],
        "val_acc": val["acc"],
        "val_images": val["count"],
        "lr": lr,
        "seconds": seconds,
        "images_per_s": sums.seen * run.d.world / max(seconds, 1e-9),
    }
    if run.ema is not None:
        val_ema = evaluate(run.ema.module, run.val_loader, **options)
        record["val_loss_ema"], record["val_acc_ema"] = val_ema["loss"], val_ema["acc"]
    return record


def _finish(run: _Run) -> dict[str, Any]:
    """The summary of the run (written by rank 0 to ``summary.json``)."""
    history, model = run.history, run.model
    summary = {
        "model": run.cfg.model,
        "dwconv": run.cfg.dwconv,
        "epochs": run.cfg.epochs,
        "final": history[-1] if history else {},
        "best_val_acc": max((h["val_acc"] for h in history), default=float("nan")),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "world_size": run.d.world,
    }
    if run.d.main:
        _write_json(run.out / "summary.json", summary)
    if run.d.world > 1:
        dist.barrier()
    return summary


# ---- checkpoints -----------------------------------------------------------------------


def _save_checkpoint(run: _Run, epoch: int, step: int, sums: _EpochSums | None = None) -> None:
    """Write ``out/last.pt`` (rank 0): at ``step`` of ``epoch``, with the epoch's sums."""
    from scalespace_mk.networks.checkpoint import save_checkpoint_file

    if not run.d.main:
        return
    for module in (run.model, run.ema.module if run.ema is not None else None):
        bad = None if module is None else _first_non_finite(module)
        if bad is not None:  # never a non-finite checkpoint over a good one
            _non_finite(run, f"weight {bad!r} holds NaN or Inf at the checkpoint")
    sums = sums or _EpochSums()
    ema, analytic = run.ema, run.cfg.dwconv != "learned"
    save_checkpoint_file(
        {
            "model": run.model.state_dict(),
            "deploy": deploy_state_dict(run.model) if analytic else None,
            "deploy_ema": deploy_state_dict(ema.module) if (ema and analytic) else None,
            "ema": ema.module.state_dict() if ema is not None else None,
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict(),
            "epoch": epoch,
            "step_in_epoch": step,
            "global_step": run.global_step,
            "rng": _rng_state(run.aug_gen),
            "config": asdict(run.cfg),
            "num_classes": run.num_classes,
            "history": [json.dumps(h) for h in run.history],
            "partial": [sums.loss_sum, sums.loss_count, sums.seen],
        },
        run.out / "last.pt",
    )


# ---- progress ----------------------------------------------------------------------------


class _TrainLog:
    """Progress of a run (rank 0): tqdm bars on a terminal, plain lines otherwise.

    One line per epoch (epoch, step, lr, train loss, validation loss and accuracy, images/s,
    ETA) on stderr, and one every ``log_every`` steps where stderr is not a terminal; both
    kinds are appended to ``out/train.log``.
    """

    def __init__(self, run: _Run, *, enabled: bool) -> None:
        self.enabled = enabled
        self.terminal = enabled and stream_is_terminal()
        self.path = run.out / "train.log" if enabled else None
        self.start_step = run.global_step
        self.started = time.monotonic()

    def bar(self, epoch: int, initial: int, total: int) -> Any:
        """The bar of one epoch's steps on a terminal, else an object doing nothing."""
        if not self.terminal:
            return _NoBar()
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}", leave=False)

    def line(self, text: str, *, on_stream: bool = True) -> None:
        """Write ``text``, time-stamped, to stderr (if ``on_stream``) and ``train.log``."""
        if not self.enabled:
            return
        text = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}"
        if on_stream:
            log_line(text, file=self.path)
        else:
            with open(self.path, "a", encoding="utf-8") as log:
                log_line(text, stream=log)

    def _position(self, run: _Run, epoch: int) -> tuple[str, str]:
        done = run.global_step - self.start_step
        left = run.total_steps - run.global_step
        eta = (time.monotonic() - self.started) / done * left if done else float("nan")
        return (
            f"epoch {epoch + 1}/{run.cfg.epochs} step {run.global_step}/{run.total_steps}",
            f"ETA {format_duration(eta) if math.isfinite(eta) else '?'}",
        )

    def step(
        self, run: _Run, epoch: int, lr: float, sums: _EpochSums, seconds: float, bar: Any
    ) -> None:
        """After a step: the bar on a terminal; every ``log_every`` steps, a line."""
        mean = sums.loss_sum / max(sums.loss_count, 1)
        bar.update(1)
        bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.2e}")
        every = run.cfg.log_every
        if self.enabled and every and run.global_step % every == 0:
            where, eta = self._position(run, epoch)
            rate = sums.seen * run.d.world / max(seconds, 1e-9)
            self.line(
                f"{where} lr {lr:.3e} train_loss {mean:.4f} {rate:.1f} images/s {eta}",
                on_stream=not self.terminal,
            )

    def epoch(self, run: _Run, record: Mapping[str, Any]) -> None:
        """After an epoch: its line."""
        where, eta = self._position(run, record["epoch"] - 1)
        ema = f" val_acc_ema {record['val_acc_ema']:.4f}" if "val_acc_ema" in record else ""
        self.line(
            f"{where} lr {record['lr']:.3e} train_loss {record['train_loss']:.4f} "
            f"val_loss {record['val_loss']:.4f} val_acc {record['val_acc']:.4f}{ema} "
            f"{record['images_per_s']:.1f} images/s {eta}"
        )


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(_json.dumps(obj, indent=2) + "\n")


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(_json.dumps(h) + "\n" for h in history))


def evaluate_checkpoint(
    path: str | os.PathLike,
    data: str,
    *,
    ema: bool = False,
    batch_size: int = 128,
    workers: int = 0,
    show_progress: bool = False,
) -> dict[str, float]:
    """Evaluate a training checkpoint on the validation split of ``data``.

    Returns ``{"loss", "acc", "count"}`` (mean cross-entropy, top-1 accuracy, images).
    With ``show_progress``, rank 0 counts the batches on stderr (a bar on a terminal, a
    plain line every 30 s otherwise).
    """
    from scalespace_mk.networks import create_model
    from scalespace_mk.training.datasets import build_dataset

    ckpt = load_training_checkpoint(path)
    cfg = _entry(Path(path), "config", lambda: TrainConfig.from_dict(ckpt["config"]))
    cfg = replace(cfg, init=None, replace_from=None)
    if "num_classes" in ckpt:
        _entry(Path(path), "num_classes", lambda: _as_count(ckpt["num_classes"]))
    d, device = _setup_distributed()
    val_set, num_classes = build_dataset(
        data, split="val", image_size=cfg.image_size, seed=cfg.seed
    )
    if num_classes != ckpt.get("num_classes", num_classes):
        raise ValueError(
            f"{data} has {num_classes} classes but the checkpoint was trained "
            f"for {ckpt['num_classes']}"
        )
    loader = _val_loader(val_set, d, batch_size=batch_size, workers=workers)
    # analytic networks are evaluated through their exported all-Conv2d equivalent
    learned = cfg.dwconv == "learned"
    key = ("ema" if learned else "deploy_ema") if ema else ("model" if learned else "deploy")
    if ckpt.get(key) is None:
        raise ValueError(
            f"{path} has no {'EMA ' if ema else ''}weights under {key!r}"
            + (" (trained with ema_decay 0)" if ema else "")
        )
    n_classes = int(ckpt.get("num_classes", num_classes))
    if cfg.arch == "convnext":
        model = create_model(cfg.model, num_classes=n_classes)
    else:
        from scalespace_mk.networks.registry import build_network

        model = build_network(cfg.arch, num_classes=n_classes)
    _load_state_checked(model, ckpt[key], f"{path} ({key!r})")
    model.to(device)
    return evaluate(
        model,
        loader,
        device=device,
        image_size=cfg.image_size,
        amp=cfg.amp,
        distributed=d.world > 1,
        show_progress=show_progress and d.main,
    )
