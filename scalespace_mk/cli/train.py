"""``scalespace-mk train`` and ``scalespace-mk eval``."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

from ._args import source_constant, source_defaults, source_fields

__all__ = ["add_parser"]

#: Help of every TrainConfig option; the default (and the preset note) are added to each.
_HELP = {
    "model": "ConvNeXt name (scalespace_mk.networks.list_models()) when --arch convnext",
    "arch": "network family: convnext (--model picks the variant) or mobilenet_v2 "
    "(torchvision layout; analytic --dwconv needs --replace-from or --init)",
    "dwconv": "depthwise filters (see docs/training.md)",
    "method": "fitting method of the idealised candidates",
    "filters": "master key filter source (default: the published 8; or a filter file)",
    "init": "start every weight from this checkpoint",
    "replace_from": "take the per-channel depthwise replacement from this checkpoint",
    "njet_order": "order N (1-4) of the N-jet depthwise layers of --dwconv njet",
    "data": "dataset: builtin[:opts] | fashion-mnist[:PATH] | imagenet:PATH | cifar10:PATH | "
    "cifar100:PATH | synthetic:N",
    "image_size": "training and evaluation resolution in pixels, 32..1024",
    "epochs": "number of epochs (a larger value with --resume extends the run)",
    "batch_size": "images per process and micro-batch",
    "accum_steps": "micro-batches per optimizer step (gradient accumulation)",
    "lr": "base learning rate per 256 images; peak = lr * global batch / 256",
    "min_lr": "learning rate at the end of the cosine schedule",
    "warmup_epochs": "epochs of linear warm-up (fractions allowed)",
    "weight_decay": "AdamW weight decay (not on 1-D parameters: norms, biases, scales)",
    "layer_decay": "layer-wise learning-rate decay factor in (0, 1]; 1 = off",
    "drop_path": "final stochastic-depth rate in [0, 1)",
    "augment": "augmentation recipe: imagenet (full timm recipe), light, none (flip only)",
    "mixup": "Mixup alpha (>= 0; 0 = off)",
    "cutmix": "CutMix alpha (>= 0; 0 = off)",
    "label_smoothing": "label smoothing in [0, 1)",
    "rand_magnitude": "RandAugment magnitude on timm's scale 0..10",
    "random_erasing": "random-erasing probability in [0, 1]",
    "ema_decay": "decay of the weight EMA in [0, 1); 0 = no EMA",
    "amp": "autocast precision",
    "channels_last": "use the channels-last memory format",
    "compile": "wrap the network in torch.compile",
    "workers": "DataLoader worker processes per training process",
    "seed": "seed of every random number generator, 0..2**32-1",
    "save_every_steps": "also checkpoint every N optimizer steps (0 = at epoch ends only)",
    "max_steps_per_epoch": "cap the optimizer steps per epoch, >= 1 (smoke runs; default: no cap)",
    "grad_clip": "clip the gradient norm to this value (0 = no clipping)",
    "strict_data": "fail on an unreadable image instead of skipping it with a warning",
    "log_every": "also log a progress line every N optimizer steps (0 = once per epoch)",
}


def _option_help(name: str, default: Any, presets: dict[str, dict[str, Any]]) -> str:
    text = _HELP.get(name, name.replace("_", " "))
    if "default:" not in text:
        text += f" (default: {default}"
        set_by = [
            f"{preset}: {values[name]}"
            for preset, values in presets.items()
            if values and name in values
        ]
        text += f"; preset {', '.join(set_by)})" if set_by else ")"
    return text


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train`` and ``eval``."""
    # read from the source: importing training.train (torch) would make --help slow
    PRESETS = source_constant("training.train", "PRESETS")  # noqa: N806
    METHODS = source_constant("analysis.fit", "METHODS")  # noqa: N806
    choices = {
        "dwconv": source_constant("networks.layers", "DWCONV_KINDS"),
        "arch": source_constant("networks.registry", "ARCHS"),
        "amp": source_constant("training.train", "AMP"),
        "augment": source_constant("training.train", "AUGMENT"),
        "method": METHODS,
    }
    resume_may_change = source_constant("training.train", "RESUME_MAY_CHANGE")
    config = source_fields("training.train", "TrainConfig")
    defaults = source_defaults("training.train", "TrainConfig")

    names = {name for name, _ in config}
    may_change = ", ".join("--" + n.replace("_", "-") for n in resume_may_change if n in names)
    p = subparsers.add_parser(
        "train",
        help="train a ConvNeXt with learned or analytic depthwise filters",
        description="Train a ConvNeXt network (single process, or under torchrun for DDP). "
        "Writes OUT/metrics.jsonl (one JSON object per epoch), OUT/last.pt (the latest "
        "complete checkpoint, written atomically), OUT/train.log (the progress lines) and "
        "OUT/summary.json. Options not given come from --preset, then from the defaults. "
        f"On --resume only {may_change} may change; a larger --epochs extends the run.",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe (default: none)")
    p.add_argument("--out", required=True, help="run folder (created; required)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from OUT/last.pt"
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="show no progress (no bars, no log lines, no OUT/train.log)",
    )
    for name, annotation in config:
        flag = "--" + name.replace("_", "-")
        text = _option_help(name, defaults.get(name), PRESETS)
        if annotation == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            kind = {"int": int, "int | None": int, "float": float}.get(annotation, str)
            p.add_argument(flag, type=kind, default=None, choices=choices.get(name), help=text)
    p.set_defaults(_run=_run_train)

    p = subparsers.add_parser(
        "eval",
        help="evaluate a training checkpoint",
        description="Top-1 accuracy and loss of a checkpoint written by 'train' on the "
        "validation split of --data.",
    )
    p.add_argument("checkpoint", help="a checkpoint written by 'train' (OUT/last.pt)")
    p.add_argument(
        "--data", required=True, help="dataset, as for 'train --data' (its validation split)"
    )
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch (default: 128)")
    p.add_argument(
        "--workers", type=int, default=0, help="DataLoader worker processes (default: 0)"
    )
    p.add_argument(
        "--json", action="store_true", help="print the result as one JSON object on stdout"
    )
    p.add_argument("--no-progress", action="store_true", help="show no progress")
    p.set_defaults(_run=_run_eval)


def config_from_args(args: argparse.Namespace) -> Any:
    """The TrainConfig of parsed ``train`` arguments: defaults < preset < options."""
    from scalespace_mk.training.train import PRESETS, TrainConfig

    values: dict[str, Any] = dict(PRESETS[args.preset]) if args.preset else {}
    for f in fields(TrainConfig):
        given = getattr(args, f.name)
        if given is not None:
            values[f.name] = given
    try:
        return TrainConfig.from_dict(values, legacy=False)
    except ValueError as exc:  # name the option as it is typed: seed -> --seed
        names = {f.name for f in fields(TrainConfig)}
        message = re.sub(
            r"^(\w+)(?= )",
            lambda m: "--" + m[1].replace("_", "-") if m[1] in names else m[1],
            str(exc),
        )
        raise ValueError(message) from None


@contextmanager
def _distributed_errors(command: str) -> Iterator[None]:
    """Under torchrun: a user's error is printed once (rank 0) and every rank exits with 2.

    An unexpected exception keeps its traceback on rank 0; other ranks print one line and
    exit with 1. Outside torchrun nothing changes (``main`` reports errors).
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    if world <= 1:
        yield
        return
    try:
        yield
    except (ValueError, TypeError, OSError, RuntimeError) as exc:  # as main() reports them
        if rank == 0:
            print(f"scalespace-mk {command}: error: {exc}", file=sys.stderr, flush=True)
        _leave_process_group()
        raise SystemExit(2) from None
    except Exception as exc:
        if rank == 0:
            raise
        print(
            f"scalespace-mk {command}: rank {rank}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
            flush=True,
        )
        _leave_process_group()
        raise SystemExit(1) from None


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _run_train(args: argparse.Namespace) -> int:
    from scalespace_mk.training.train import train

    with _distributed_errors("train"):
        cfg = config_from_args(args)
        summary = train(
            cfg, args.out, resume=args.resume, progress=False if args.no_progress else None
        )
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
    with _distributed_errors("eval"):
        result = evaluate_checkpoint(
            args.checkpoint,
            args.data,
            ema=args.ema,
            batch_size=args.batch_size,
            workers=args.workers,
            show_progress=not args.no_progress,
        )
    if args.json:
        json.dump(result, sys.stdout)
        print()
    else:
        print(f"top-1 {result['acc']:.4f}  loss {result['loss']:.4f}  ({result['count']} images)")
    return 0
