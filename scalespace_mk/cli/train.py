"""``scalespace-mk train`` and ``scalespace-mk eval``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import Any

__all__ = ["add_parser"]

_HELP = {
    "model": "network name (scalespace_mk.networks.list_models())",
    "dwconv": "depthwise filters: learned | masterkey | idealized | learnable",
    "method": "fitting method of the idealised candidates (A, A-exact, B, C1, C2, D1, D2)",
    "filters": "master key filter source (default: the published 8; or a filter file)",
    "init": "start every weight from this checkpoint",
    "replace_from": "take the per-channel depthwise replacement from this checkpoint",
    "data": "dataset: builtin[:opts] | fashion-mnist[:PATH] | imagenet:PATH | cifar10:PATH | "
    "cifar100:PATH | synthetic:N",
    "save_every_steps": "also checkpoint every N optimizer steps",
    "max_steps_per_epoch": "cap optimizer steps per epoch (smoke runs)",
}


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
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=None, help=_HELP.get(f.name))
    p.set_defaults(_run=_run_train)

    p = subparsers.add_parser(
        "eval",
        help="evaluate a training checkpoint",
        description="Top-1 accuracy and loss of a checkpoint written by 'train' on the "
        "validation split of --data.",
    )
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--json", action="store_true")
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

    result = evaluate_checkpoint(
        args.checkpoint, args.data, ema=args.ema, batch_size=args.batch_size, workers=args.workers
    )
    if args.json:
        json.dump(result, sys.stdout)
        print()
    else:
        print(f"top-1 {result['acc']:.4f}  loss {result['loss']:.4f}  ({result['count']} images)")
    return 0
