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
    # one node, 8 GPUs, ImageNet, the ConvNeXt-V2 fine-tuning recipe of SPEC §9
    torchrun --nproc_per_node 8 -m scalespace_mk.cli train --preset convnextv2-finetune \\
        --model convnextv2_tiny --dwconv idealized --replace-from learned.pt \\
        --data imagenet:/data/imagenet --batch-size 512 --out runs/in1k-ideal
    # several nodes: add --nnodes N --node_rank R --rdzv_endpoint HOST:PORT to torchrun
    # CPU, 2 processes (gloo), as the test suite does
    torchrun --nproc_per_node 2 -m scalespace_mk.cli train --model convnextv2_test ...

Depthwise variants (``--dwconv``), SPEC §9:

- ``learned``: ordinary depthwise convolutions (the baseline);
- ``masterkey``: every channel one of 8 frozen master key filters with learnable ``a``, ``b``;
- ``idealized``: every channel one of the 8 frozen idealised models (fitting ``--method``);
- ``learnable``: every channel keeps its model type and learns its own scales.

With ``--replace-from CKPT`` the per-channel choice (and ``a``, ``b``) comes from the least-
squares replacement of that checkpoint's depthwise filters (experiment 1) and every other
weight starts afresh; with ``--init CKPT`` all weights start from the checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from scalespace_mk._checks import check_choice
from scalespace_mk._io import atomic_path

__all__ = [
    "PRESETS",
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

DWCONV = ("learned", "masterkey", "idealized", "learnable")
AMP = ("none", "bf16", "fp16")
AUGMENT = ("imagenet", "light", "none")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in every checkpoint).

    Attributes
    ----------
    model : str
        A name from :func:`scalespace_mk.networks.list_models`.
    dwconv : str
        ``learned``, ``masterkey``, ``idealized`` or ``learnable`` (module docstring).
    method : str
        Fitting method whose idealised models are the candidates for ``idealized`` and
        ``learnable`` (SPEC §8; default ``B``).
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
    max_steps_per_epoch : int
        Cap the optimizer steps per epoch (0: no cap); for smoke runs.
    grad_clip : float
        Clip the gradient norm (0: no clipping).
    strict_data : bool
        Fail on an unreadable image instead of skipping it with a warning.
    """

    model: str = "convnextv2_atto"
    dwconv: str = "learned"
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
    max_steps_per_epoch: int = 0
    grad_clip: float = 0.0
    strict_data: bool = False

    def __post_init__(self) -> None:
        check_choice("dwconv", self.dwconv, DWCONV)
        check_choice("amp", self.amp, AMP)
        check_choice("augment", self.augment, AUGMENT)
        for name in ("image_size", "epochs", "batch_size", "accum_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        for name in ("lr", "min_lr", "warmup_epochs", "weight_decay", "ema_decay", "grad_clip"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must lie in (0, 1]; got {self.layer_decay!r}")
        if not 0 <= self.drop_path < 1:
            raise ValueError(f"drop_path must lie in [0, 1); got {self.drop_path!r}")
        if self.ema_decay >= 1:
            raise ValueError(f"ema_decay must lie in [0, 1); got {self.ema_decay!r}")
        if self.init and self.replace_from:
            raise ValueError("pass either init or replace_from, not both")
        if self.dwconv == "learned" and self.replace_from:
            raise ValueError(
                "replace_from needs an analytic dwconv (masterkey, idealized, "
                "learnable); use init to start learned filters from a checkpoint"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping, rejecting unknown keys with their names."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; known: {sorted(known)}")
        return cls(**dict(values))


#: Named recipes; command-line options override them.
PRESETS: dict[str, dict[str, Any]] = {
    # Official ConvNeXt-V2 ImageNet-1k fine-tuning (SPEC §9); base lr per 256 samples.
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


def _setup_distributed() -> tuple[_Dist, torch.device]:
    """Read torchrun's variables; NCCL on GPUs, gloo on CPU."""
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
    """Replace every learned depthwise conv of ``model`` by an analytic one.

    The per-channel choice comes from the least-squares replacement (SPEC §9, experiment 1)
    of the depthwise weights ``source[name + '.conv_dw.weight']`` by ``a x_j + b``:
    ``masterkey`` uses the master key filters as candidates ``x_j`` and ``idealized`` the
    idealised models of ``cfg.method`` (both frozen, with trainable ``a``, ``b`` and bias);
    ``learnable`` starts each channel at the model of its chosen type, with the scales of
    ``cfg.method``, and learns the scales too. Biases are taken from ``source``.

    Returns
    -------
    dict
        Per layer, the number of channels per candidate (1-based, as strings).
    """
    from scalespace_mk.networks import layers as snn
    from scalespace_mk.networks.checkpoint import (
        candidate_filters,
        candidate_models,
        linear_shift_replace,
    )

    kind = cfg.dwconv
    summary: dict[str, dict[str, int]] = {}
    cache: dict[int, tuple[np.ndarray, np.ndarray, list[Any]]] = {}
    for name, module in list(model.named_modules()):
        conv = getattr(module, "conv_dw", None)
        if not isinstance(conv, nn.Conv2d):
            continue
        key = f"{name}.conv_dw.weight"
        if key not in source:
            raise ValueError(f"{key} is missing from the checkpoint to replace from")
        w = source[key].detach().to(torch.float64).cpu().numpy()[:, 0]
        k = w.shape[-1]
        if k not in cache:
            if kind == "masterkey":
                cache[k] = (candidate_filters("masterkey", filters=cfg.filters), None, [])
            else:
                raw, fits = candidate_models(cfg.method, filters=cfg.filters, size=k)
                cache[k] = (candidate_filters(cfg.method, filters=cfg.filters, size=k), raw, fits)
        cands, raw, fits = cache[k]
        _, choice, a, b = linear_shift_replace(w, cands)
        bias = source.get(f"{name}.conv_dw.bias")
        if kind == "learnable":
            # a x_j + b with x_j = (g_j - m_j) / n_j is (a / n_j) g_j + (b - a m_j / n_j)
            mean = raw.reshape(len(raw), -1).mean(axis=1)
            norm = np.linalg.norm(raw.reshape(len(raw), -1) - mean[:, None], axis=1)
            pick = [fits[j] for j in choice]
            new = snn.AnalyticDepthwiseConv2d(
                w.shape[0],
                k,
                types=[f.filter_type for f in pick],
                sigma_x=[f.sigma_x for f in pick],
                sigma_y=[f.sigma_y for f in pick],
                alpha=[f.alpha if f.alpha is not None else 0.0 for f in pick],
                gain=a / norm[choice],
                offset=b - a * mean[choice] / norm[choice],
                bias=bias.detach().double().numpy() if bias is not None else True,
                learn_scales=True,
            )
        else:
            new = snn.MasterKeyDepthwiseConv2d(
                w.shape[0],
                torch.from_numpy(cands),
                torch.from_numpy(choice),
                gain=torch.from_numpy(a),
                offset=torch.from_numpy(b),
                bias=bias.detach().double() if bias is not None else True,
            )
        module.conv_dw = new.to(conv.weight.device)
        summary[name] = {str(j + 1): int((choice == j).sum()) for j in range(len(cands))}
    return summary


def deploy_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the equivalent all-``nn.Conv2d`` network (analytic layers exported).

    Every depthwise module that is not an ``nn.Conv2d`` is exported with
    :func:`scalespace_mk.networks.layers.to_conv2d`; its parameters are replaced by the exported
    ``conv_dw.weight`` and ``conv_dw.bias``, so the result loads into
    ``create_model(name, dwconv="learned")``.
    """
    from scalespace_mk.networks import layers as snn

    state = dict(model.state_dict())
    for name, module in model.named_modules():
        conv = getattr(module, "conv_dw", None)
        if conv is None or isinstance(conv, nn.Conv2d):
            continue
        prefix = f"{name}.conv_dw."
        for key in [k for k in state if k.startswith(prefix)]:
            del state[key]
        exported = snn.to_conv2d(conv)
        state[prefix + "weight"] = exported.weight.detach().clone()
        if exported.bias is not None:
            state[prefix + "bias"] = exported.bias.detach().clone()
    return state


def build_model(cfg: TrainConfig, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """The network of ``cfg``, with its depthwise convolutions set up (see module docs)."""
    from scalespace_mk.networks import checkpoint_filter_fn, create_model, load_checkpoint
    from scalespace_mk.networks.checkpoint import load_checkpoint_file

    source_path = cfg.init or cfg.replace_from
    dwconv = "learned" if (source_path and cfg.dwconv != "learned") else cfg.dwconv
    kwargs: dict[str, Any] = {}
    if dwconv == "masterkey" and cfg.filters is not None:
        kwargs["dwconv_kwargs"] = {"filters": cfg.filters}
    model = create_model(
        cfg.model, num_classes=num_classes, drop_path_rate=cfg.drop_path, dwconv=dwconv, **kwargs
    )
    info: dict[str, Any] = {}
    if source_path:
        raw = load_checkpoint_file(source_path)
        if isinstance(raw, Mapping) and "config" in raw and "model" in raw:
            raw = raw["model"]  # a checkpoint written by this trainer
        state = checkpoint_filter_fn(raw, model)
        if cfg.init:
            result = load_checkpoint(model, state, strict=False)
            info["missing_keys"], info["unexpected_keys"] = (
                list(result.missing_keys),
                list(result.unexpected_keys),
            )
        if cfg.dwconv != "learned":
            info["replacement"] = convert_depthwise(model, state, cfg)
    return model, info


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
) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy over ``loader`` (summed over ranks)."""
    from scalespace_mk.training.augment import EvalTransform

    transform = EvalTransform(image_size)
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    for images, labels in loader:
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


def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train` (``weights_only=True``) and validate it."""
    from scalespace_mk.networks.checkpoint import load_checkpoint_file

    ckpt = load_checkpoint_file(path)
    required = {"model", "config", "epoch", "step_in_epoch", "global_step"}
    if not isinstance(ckpt, Mapping) or not required <= set(ckpt):
        missing = sorted(required - set(ckpt)) if isinstance(ckpt, Mapping) else required
        raise ValueError(
            f"{path} is not a scalespace_mk training checkpoint (missing {sorted(missing)})"
        )
    return dict(ckpt)


# --------------------------------------------------------------------------------------
# the training loop


def train(
    cfg: TrainConfig, out: str | os.PathLike, *, resume: bool = False, progress: bool | None = None
) -> dict[str, Any]:
    """Train ``cfg`` into the folder ``out``; returns the final summary.

    ``out/metrics.jsonl`` gets one JSON object per epoch (``epoch``, ``train_loss``,
    ``val_loss``, ``val_acc``, ``lr``, ``seconds``, ``images_per_s``, and ``val_acc_ema``
    with an EMA); ``out/last.pt`` is the latest complete checkpoint, ``out/summary.json``
    the final summary. Only rank 0 writes.
    """
    from tqdm.auto import tqdm

    from scalespace_mk.networks.checkpoint import save_checkpoint_file
    from scalespace_mk.training.augment import SoftTargetCrossEntropy, TrainTransform
    from scalespace_mk.training.datasets import build_dataset, build_loader

    d, device = _setup_distributed()
    out = Path(out)
    ckpt_path = out / "last.pt"
    state = None
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        state = load_training_checkpoint(ckpt_path)
        stored = TrainConfig.from_dict(state["config"])
        if stored != cfg:
            diff = {
                f.name: (getattr(stored, f.name), getattr(cfg, f.name))
                for f in fields(cfg)
                if getattr(stored, f.name) != getattr(cfg, f.name)
            }
            raise ValueError(
                f"--resume with a different configuration: {diff} "
                "(stored, given); resume with the same options"
            )
    elif ckpt_path.exists():
        raise FileExistsError(
            f"{ckpt_path} exists: pass --resume to continue that run or choose another --out"
        )

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
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    groups = param_groups(model, cfg)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    steps_per_epoch = len(loader) // cfg.accum_steps
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    global_batch = cfg.batch_size * cfg.accum_steps * d.world
    peak = cfg.lr * global_batch / 256

    epoch, step_in_epoch, global_step, history = 0, 0, 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
        epoch, step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        global_step = int(state["global_step"])
        history = [json.loads(line) for line in state.get("history", [])]
        _set_rng_state(state["rng"], aug_gen)
        # resuming mid-epoch: the RNG state saved at that point already accounts for the
        # batches done; only the sampler position must be skipped

    net = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        net = torch.compile(net)
    # folder datasets already take the random resized crop while decoding
    aug = _augment_config(cfg, num_classes, crop=not getattr(train_set, "crops_on_load", False))
    transform = TrainTransform(aug)
    criterion = SoftTargetCrossEntropy()

    def save(epoch_: int, step_: int, partial: tuple[float, int, int] = (0.0, 0, 0)) -> None:
        if not d.main:
            return
        save_checkpoint_file(
            {
                "model": model.state_dict(),
                "deploy": deploy_state_dict(model) if cfg.dwconv != "learned" else None,
                "deploy_ema": deploy_state_dict(ema.module)
                if (ema is not None and cfg.dwconv != "learned")
                else None,
                "ema": ema.module.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch_,
                "step_in_epoch": step_,
                "global_step": global_step,
                "rng": _rng_state(aug_gen),
                "config": asdict(cfg),
                "num_classes": num_classes,
                "history": [json.dumps(h) for h in history],
                "partial": list(partial),
            },
            ckpt_path,
        )

    show = d.main if progress is None else (progress and d.main)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        if info.get("replacement"):
            _write_json(out / "replacement.json", info["replacement"])
    epochs_bar = tqdm(
        range(epoch, cfg.epochs),
        desc="epochs",
        disable=not show or None,
        initial=epoch,
        total=cfg.epochs,
    )
    for epoch in epochs_bar:
        sampler.set_epoch(epoch)
        net.train()
        started, seen, loss_sum, loss_count = time.perf_counter(), 0, 0.0, 0
        if step_in_epoch and state is not None:  # resumed mid-epoch: the sums so far
            loss_sum, loss_count, seen = state.get("partial", (0.0, 0, 0))
        batches = iter(loader)
        for _ in range(step_in_epoch * cfg.accum_steps):  # resume: skip what was done
            next(batches)
        bar = tqdm(
            total=steps_per_epoch,
            initial=step_in_epoch,
            desc=f"epoch {epoch}",
            leave=False,
            disable=not show or None,
        )
        for step in range(step_in_epoch, steps_per_epoch):
            lr = cosine_lr(
                global_step, total=total_steps, warmup=warmup, peak=peak, floor=cfg.min_lr
            )
            for g in optimizer.param_groups:
                g["lr"] = lr * g["lr_scale"]
            # ---- one optimizer step: accum_steps micro-batches --------------------------
            for micro in range(cfg.accum_steps):
                images, labels = next(batches)
                images, targets = transform(
                    images.to(device, non_blocking=True),
                    labels.to(device, non_blocking=True),
                    generator=aug_gen,
                )
                if cfg.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                last = micro == cfg.accum_steps - 1
                sync = nullcontext() if (last or d.world == 1) else net.no_sync()
                with sync, _autocast(device, cfg.amp):
                    loss = criterion(net(images).float(), targets)
                    scaler.scale(loss / cfg.accum_steps).backward()
                loss_sum += float(loss.detach())
                loss_count += 1
                seen += images.shape[0]
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            global_step += 1
            # ------------------------------------------------------------------------------
            if not math.isfinite(loss_sum):
                raise RuntimeError(
                    f"the training loss became {loss_sum} at step {global_step}; "
                    "lower --lr or use --amp none"
                )
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / loss_count:.4f}", lr=f"{lr:.2e}")
            if (
                cfg.save_every_steps
                and global_step % cfg.save_every_steps == 0
                and (step + 1 < steps_per_epoch)
            ):
                save(epoch, step + 1, (loss_sum, loss_count, seen))
        bar.close()
        step_in_epoch = 0
        seconds = time.perf_counter() - started
        val = evaluate(
            net,
            val_loader,
            device=device,
            image_size=cfg.image_size,
            amp=cfg.amp,
            channels_last=cfg.channels_last,
            distributed=d.world > 1,
        )
        train_loss = torch.tensor([loss_sum, loss_count], dtype=torch.float64, device=device)
        if d.world > 1:
            dist.all_reduce(train_loss)
        record = {
            "epoch": epoch + 1,
            "train_loss": float(train_loss[0] / max(train_loss[1], 1)),
            "val_loss": val["loss"],
            "val_acc": val["acc"],
            "val_images": val["count"],
            "lr": lr,
            "seconds": seconds,
            "images_per_s": seen * d.world / max(seconds, 1e-9),
        }
        if ema is not None:
            val_ema = evaluate(
                ema.module,
                val_loader,
                device=device,
                image_size=cfg.image_size,
                amp=cfg.amp,
                channels_last=cfg.channels_last,
                distributed=d.world > 1,
            )
            record["val_loss_ema"], record["val_acc_ema"] = val_ema["loss"], val_ema["acc"]
        history.append(record)
        save(epoch + 1, 0)
        if d.main:
            _write_metrics(out / "metrics.jsonl", history)
            epochs_bar.set_postfix(val_acc=f"{val['acc']:.3f}")
    epochs_bar.close()
    summary = {
        "model": cfg.model,
        "dwconv": cfg.dwconv,
        "epochs": cfg.epochs,
        "final": history[-1] if history else {},
        "best_val_acc": max((h["val_acc"] for h in history), default=float("nan")),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "world_size": d.world,
    }
    if d.main:
        _write_json(out / "summary.json", summary)
    if d.world > 1:
        dist.barrier()
    return summary


def _write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in history))


def evaluate_checkpoint(
    path: str | os.PathLike,
    data: str,
    *,
    ema: bool = False,
    batch_size: int = 128,
    workers: int = 0,
) -> dict[str, float]:
    """Evaluate a training checkpoint on the validation split of ``data``.

    Returns ``{"loss", "acc", "count"}`` (mean cross-entropy, top-1 accuracy, images).
    """
    from scalespace_mk.networks import create_model
    from scalespace_mk.training.datasets import build_dataset

    ckpt = load_training_checkpoint(path)
    cfg = TrainConfig.from_dict(ckpt["config"])
    cfg = replace(cfg, init=None, replace_from=None)
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
    model = create_model(cfg.model, num_classes=int(ckpt.get("num_classes", num_classes)))
    model.load_state_dict(ckpt[key])
    model.to(device)
    return evaluate(
        model,
        loader,
        device=device,
        image_size=cfg.image_size,
        amp=cfg.amp,
        distributed=d.world > 1,
    )
