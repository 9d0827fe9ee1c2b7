"""``scalespace-mk train`` and ``scalespace-mk eval``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import Any

__all__ = ["add_parser"]

_HELP = {
    "model": "network name, one of scalespace_mk.networks.list_models()",
    "dwconv": "depthwise filters: learned | masterkey | idealized | learnable",
    "method": "fitting method of the idealised candidates (A, A-exact, B, C1, C2, D1, D2)",
    "filters": "master key filter source: 'masterkey' (the published 8), 'builtin' or a path",
    "init": "start every weight from this checkpoint (path)",
    "replace_from": "take the per-channel depthwise replacement from this checkpoint (path)",
    "data": "dataset: builtin[:opts] | imagenet:PATH | cifar10:PATH | cifar100:PATH | synthetic:N",
    "image_size": "training and evaluation resolution, pixels",
    "epochs": "number of epochs",
    "batch_size": "samples per process and micro-batch",
    "accum_steps": "micro-batches per optimizer step (gradient accumulation)",
    "lr": "base learning rate per 256 samples; the peak is lr * global batch / 256",
    "min_lr": "floor of the cosine schedule (learning rate)",
    "warmup_epochs": "linear warm-up length, epochs (fractions allowed)",
    "weight_decay": "AdamW weight decay (not on 1-D parameters: norms, biases, scales)",
    "layer_decay": "layer-wise learning-rate decay factor (1 = off)",
    "drop_path": "final stochastic-depth rate (probability)",
    "augment": "augmentation recipe: imagenet (full) | light (small data) | none (flip only)",
    "mixup": "mixup alpha (0 = off)",
    "cutmix": "cutmix alpha (0 = off)",
    "label_smoothing": "label smoothing (probability mass)",
    "rand_magnitude": "RandAugment magnitude (0-10), with --augment imagenet",
    "random_erasing": "random erasing probability",
    "ema_decay": "decay of the parameter EMA per step (0 = no EMA)",
    "amp": "mixed precision autocast: none | bf16 | fp16",
    "channels_last": "use the channels-last memory format",
    "compile": "compile the model with torch.compile",
    "workers": "DataLoader worker processes per process",
    "seed": "seed of every random number generator",
    "save_every_steps": "also checkpoint every N optimizer steps (0 = only at epoch ends)",
    "max_steps_per_epoch": "cap optimizer steps per epoch (0 = no cap; smoke runs)",
    "grad_clip": "clip the gradient norm to this value (0 = no clipping)",
    "strict_data": "fail on an unreadable image instead of skipping it with a warning",
}


def _help(f: Any) -> str:
    """Help line of a TrainConfig field: its description and its default."""
    from dataclasses import MISSING

    text = _HELP.get(f.name, f.name.replace("_", " "))
    default = f.default if f.default is not MISSING else None
    if isinstance(default, bool):
        default = "on" if default else "off"
    return f"{text} (default: {default}; a --preset may change it)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train`` and ``eval``."""
    from scalespace_mk.training.train import PRESETS, TrainConfig

    p = subparsers.add_parser(
        "train",
        help="train a ConvNeXt with learned or analytic depthwise filters",
        description="Train a ConvNeXt network (single process, or under torchrun for DDP). "
        "Writes OUT/metrics.jsonl (one JSON object per epoch), OUT/last.pt (the latest "
        "complete checkpoint, written atomically) and OUT/summary.json. Options not given "
        "come from --preset, then from the defaults.",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named recipe: its values replace the defaults below (default: none)",
    )
    p.add_argument("--out", required=True, help="run folder (required)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (default: off)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (default: shown)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=_help(f))
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=None, help=_help(f))
    p.set_defaults(_run=_run_train)

    p = subparsers.add_parser(
        "eval",
        help="evaluate a training checkpoint",
        description="Top-1 accuracy and loss of a checkpoint written by 'train' on the "
        "validation split of --data.",
    )
    p.add_argument("checkpoint", help="a checkpoint written by 'train' (OUT/last.pt)")
    p.add_argument(
        "--data",
        required=True,
        help="dataset whose validation split is measured, as for 'train --data' (required)",
    )
    p.add_argument(
        "--ema", action="store_true", help="evaluate the EMA weights (default: the raw weights)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="images per evaluation batch (default: %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="DataLoader worker processes (default: %(default)s, load in the main process)",
    )
    p.add_argument(
        "--json", action="store_true", help="print one JSON object instead of text (default: off)"
    )
    p.set_defaults(_run=_run_eval)


def config_from_args(args: argparse.Namespace) -> Any:
    """The TrainConfig of parsed ``train`` arguments: defaults < preset < options."""
    from scalespace_mk.training.train import PRESETS, TrainConfig

    values: dict[str, Any] = dict(PRESETS[args.preset]) if args.preset else {}
    for f in fields(TrainConfig):
        given = getattr(args, f.name)
        if given is not None:
            values[f.name] = given
    return TrainConfig.from_dict(values)


def _run_train(args: argparse.Namespace) -> int:
    from scalespace_mk.training.train import train

    cfg = config_from_args(args)
    summary = train(cfg, args.out, resume=args.resume, progress=False if args.no_progress else None)
    final = summary["final"]
    if final:
        print(
            f"{cfg.model} ({cfg.dwconv}) after {final['epoch']} epochs: val_acc "
            f"{final['val_acc']:.4f}, val_loss {final['val_loss']:.4f}, train_loss "
            f"{final['train_loss']:.4f}; best val_acc {summary['best_val_acc']:.4f}; "
            f"{summary['trainable_parameters']:,} of {summary['parameters']:,} parameters "
            f"trained -> {args.out}"
        )
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from scalespace_mk.training.train import evaluate_checkpoint

    from ._args import refuse_wrong_file

    refuse_wrong_file("eval", args.checkpoint, "checkpoint")
    result = evaluate_checkpoint(
        args.checkpoint, args.data, ema=args.ema, batch_size=args.batch_size, workers=args.workers
    )
    if args.json:
        json.dump(result, sys.stdout)
        print()
    else:
        print(f"top-1 {result['acc']:.4f}  loss {result['loss']:.4f}  ({result['count']} images)")
    return 0
