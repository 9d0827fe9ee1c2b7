"""Data-loading throughput of scalespace_mk.training.datasets + scalespace_mk.training.augment.

Writes a JPEG image folder (default 2,000 ImageNet-sized images, 500 x 375 pixels, quality 90,
in 10 classes) into a temporary directory and measures, in images per second and with no
model step:

* ``per core``: images per CPU-second of one process, Pillow decode against the training
  loader's work (decode + random resized crop + collate) and the evaluation loader's
  (decode + centre crop + collate), alternating batch by batch (robust on a shared CPU);
  where simplejpeg is installed (the loader's default JPEG decoder then) also the training
  loader with ``decoder='pillow'`` and a plain simplejpeg decode
  (``simplejpeg.decode_jpeg(open(p, 'rb').read())``) in the same alternation;

* ``pil-decode``: baseline, a plain Python loop of ``Image.open(p).convert('RGB')`` +
  ``np.asarray`` (one process);
* ``loader``: the training DataLoader of :func:`scalespace_mk.training.datasets.build_dataset`
  (decode + random resized crop to ``--image-size`` + uint8 collation) for each
  ``--workers`` value (also per worker);
* ``transform``: the batched :class:`scalespace_mk.training.augment.TrainTransform` alone (flip,
  RandAugment, normalise, random erasing, Mixup/CutMix) on ``--device``, with its default of
  one intra-op thread on the CPU, and ``transform_torch_N_threads`` the same at torch's
  thread count ``N`` (``cpu_threads=None``);
* ``loader+transform``: both, as a training loop would see them.

Each figure is also printed as a ratio to the ``pil-decode`` baseline measured in the same run.

Usage::

    python benchmarks/bench_loader.py                       # defaults, CPU
    python benchmarks/bench_loader.py --images 500 --workers 0 2 --device cuda
    python benchmarks/bench_loader.py --workers 0 --photos /usr/share/backgrounds/mate/nature
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def make_jpeg_folder(
    root: Path, *, images: int, size: int, classes: int, seed: int = 0, height: int | None = None
) -> None:
    """Write ``images`` smooth random JPEGs (quality 90, ``size`` wide, ``height`` high,
    default square) into ``root/train/<class>/``; ``root/val`` links to the same files."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : height or size, 0:size] / size
    for i in range(images):
        d = root / "train" / f"class{i % classes:02d}"
        d.mkdir(parents=True, exist_ok=True)
        f = rng.uniform(1, 8, 6)
        img = np.stack(
            [np.sin(f[2 * c] * 6.28 * xx + f[2 * c + 1] * 6.28 * yy) for c in range(3)], -1
        )
        img = (127.5 + 100 * img + rng.normal(0, 12, img.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"{i:05d}.JPEG", quality=90)
    if not (root / "val").exists():
        (root / "val").symlink_to(root / "train", target_is_directory=True)


def make_photo_folder(
    root: Path,
    photos: Path,
    *,
    images: int,
    size: int,
    height: int,
    classes: int,
    seed: int = 0,
) -> list[str]:
    """Write ``images`` JPEGs (quality 90, ``size`` x ``height``) cut from the JPEG
    photographs in ``photos`` (a random window of the photo's aspect ``size / height`` and
    30-100 % of its largest width, resized with Pillow's Lanczos filter) into
    ``root/train/<class>/``; ``root/val`` links to the same files. Returns the photos used."""
    from PIL import Image

    files = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"--photos {photos}: no .jpg files there")
    rng = np.random.default_rng(seed)
    opened = []
    for f in files:
        with Image.open(f) as im:
            opened.append(im.convert("RGB"))
    for i in range(images):
        img = opened[i % len(opened)]
        w_max = min(img.width, img.height * size / height)
        w = w_max * rng.uniform(0.3, 1.0)
        h = w * height / size
        x0, y0 = rng.uniform(0, img.width - w), rng.uniform(0, img.height - h)
        out = img.resize((size, height), Image.Resampling.LANCZOS, box=(x0, y0, x0 + w, y0 + h))
        d = root / "train" / f"class{i % classes:02d}"
        d.mkdir(parents=True, exist_ok=True)
        out.save(d / f"{i:05d}.JPEG", quality=90)
    if not (root / "val").exists():
        (root / "val").symlink_to(root / "train", target_is_directory=True)
    return [str(f) for f in files]


def per_core(
    paths: list[str], train_ds, val_ds, *, batch_size: int, rounds: int, train_pillow_ds=None
) -> dict:
    """Images per CPU-second of this process (one core): Pillow decode vs the two loaders.

    ``pil``: ``np.asarray(Image.open(p).convert("RGB"))``; ``train`` / ``val``: the
    dataset's decode-time crop (random resized / centre) of each image plus the loader's
    collation of each batch; with ``train_pillow_ds`` also ``train_pillow`` (that dataset,
    the training loader with ``decoder='pillow'``) and ``simplejpeg`` (a plain decode). The
    cases alternate batch by batch (so that the load of other processes, which changes by
    the second, falls on all alike), ``rounds`` times over all images; CPU time of this
    process.
    """
    from PIL import Image

    from scalespace_mk.training.datasets import _collate

    def pil(idx: range) -> None:
        for i in idx:
            with Image.open(paths[i]) as im:
                np.asarray(im.convert("RGB"))

    def loader(ds) -> Callable[[range], None]:
        def go(idx: range) -> None:
            _collate([ds[(i, 0)] for i in idx])

        return go

    cases = {"pil": pil, "train": loader(train_ds), "val": loader(val_ds)}
    if train_pillow_ds is not None:
        import simplejpeg

        def sj(idx: range) -> None:
            for i in idx:
                with open(paths[i], "rb") as f:
                    simplejpeg.decode_jpeg(f.read(), colorspace="RGB")

        cases["train_pillow"] = loader(train_pillow_ds)
        cases["simplejpeg"] = sj
    cpu = dict.fromkeys(cases, 0.0)
    per_round: list[dict[str, float]] = []
    n = len(paths)
    for _ in range(rounds):
        this = dict.fromkeys(cases, 0.0)
        for start in range(0, n, batch_size):
            idx = range(start, min(start + batch_size, n))
            for name, fn in cases.items():
                t = time.process_time()
                fn(idx)
                this[name] += time.process_time() - t
        per_round.append(this)
        for name in cases:
            cpu[name] += this[name]
    out: dict = {name: rounds * n / sec for name, sec in cpu.items()}
    # ratio to the Pillow decode in each round: their spread says how much the load of
    # other processes moved the figure
    out["ratio_per_round"] = {
        name: [r["pil"] / r[name] for r in per_round] for name in cases if name != "pil"
    }
    return out


def bench_pil(paths: list[str]) -> float:
    from PIL import Image

    t = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            np.asarray(im.convert("RGB"))
    return len(paths) / (time.perf_counter() - t)


def bench_loader(
    ds, *, batch_size: int, workers: int, transform=None, device="cpu", max_batches=None
) -> float:
    from scalespace_mk.training.datasets import build_loader

    loader, sampler = build_loader(
        ds, batch_size=batch_size, shuffle=True, num_workers=workers, seed=0, drop_last=True
    )
    gen = torch.Generator().manual_seed(0)
    it = iter(loader)
    x, y = next(it)  # start the workers outside the timed region
    n = 0
    t = time.perf_counter()
    for i, (x, y) in enumerate(it):
        if max_batches is not None and i >= max_batches:
            break
        if transform is not None:
            x, y = transform(x.to(device, non_blocking=True), y.to(device), generator=gen)
            if device != "cpu":
                torch.cuda.synchronize()
        n += x.shape[0]
    rate = n / (time.perf_counter() - t)
    del it, loader
    return rate


def bench_transform(transform, *, batch_size: int, image_size: int, steps: int, device) -> float:
    x = torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8)
    x = x.to(device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    gen = torch.Generator().manual_seed(0)
    transform(x, y, generator=gen)
    if device != "cpu":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        transform(x, y, generator=gen)
    if device != "cpu":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and return the figures (also printed)."""
    from scalespace_mk.training.augment import AugmentConfig, TrainTransform
    from scalespace_mk.training.datasets import build_dataset
    from scalespace_mk.training.decoding import simplejpeg_available

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=500, help="width of the written JPEGs")
    ap.add_argument("--height", type=int, default=375, help="height of the written JPEGs")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved per-core rounds")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--image-size", type=int, default=224, help="crop side of the loader")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--transform-steps", type=int, default=5)
    ap.add_argument(
        "--transform-batches",
        type=int,
        default=8,
        help="batches timed for loader+transform (the CPU transform is slow at 224 px)",
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads in the main process"
    )
    ap.add_argument(
        "--photos",
        type=Path,
        default=None,
        help="cut the JPEGs from the .jpg photographs in this folder (e.g. Debian's "
        "/usr/share/backgrounds/mate/nature, GPL-2+) instead of synthetic patterns",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results: dict = {
        "load_average_1min_at_start": load,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}",
        "device": str(args.device),
        "images": args.images,
        "jpeg_size": args.size,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        if args.photos is None:
            make_jpeg_folder(
                root, images=args.images, size=args.size, classes=args.classes, height=args.height
            )
            results["source"] = "synthetic (smooth patterns plus noise)"
        else:
            used = make_photo_folder(
                root,
                args.photos,
                images=args.images,
                size=args.size,
                height=args.height,
                classes=args.classes,
            )
            results["source"] = f"{len(used)} photographs in {args.photos}"
        results["mean_jpeg_bytes"] = float(
            np.mean([p.stat().st_size for p in (root / "train").rglob("*.JPEG")])
        )
        results["write_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ds, k = build_dataset(str(root), split="train", image_size=args.image_size)
        results["build_dataset_header_check_s"] = time.perf_counter() - t
        paths = [p for p, _ in ds.samples]
        val_ds, _ = build_dataset(str(root), split="val", image_size=args.image_size)
        pillow_ds = None
        if simplejpeg_available():
            pillow_ds, _ = build_dataset(
                str(root), split="train", image_size=args.image_size, decoder="pillow"
            )
        results["jpeg_decoder"] = "simplejpeg" if simplejpeg_available() else "pillow"
        core = per_core(
            paths,
            ds,
            val_ds,
            batch_size=args.batch_size,
            rounds=args.rounds,
            train_pillow_ds=pillow_ds,
        )
        results["per_core_img_per_cpu_s"] = core
        base = bench_pil(paths)
        results["pil_decode_img_s"] = base
        cfg = AugmentConfig(image_size=args.image_size, num_classes=k, random_resized_crop=False)
        tt = TrainTransform(cfg)
        results["transform_img_s"] = bench_transform(
            tt,
            batch_size=args.batch_size,
            image_size=args.image_size,
            steps=args.transform_steps,
            device=args.device,
        )
        # the same transform at torch's thread count (cpu_threads=None: the behaviour before
        # TrainTransform ran on one intra-op thread on the CPU)
        results[f"transform_torch_{torch.get_num_threads()}_threads_img_s"] = bench_transform(
            TrainTransform(cfg, cpu_threads=None),
            batch_size=args.batch_size,
            image_size=args.image_size,
            steps=args.transform_steps,
            device=args.device,
        )
        for w in args.workers:
            results[f"loader_w{w}_img_s"] = bench_loader(ds, batch_size=args.batch_size, workers=w)
            results[f"loader_transform_w{w}_img_s"] = bench_loader(
                ds,
                batch_size=args.batch_size,
                workers=w,
                transform=tt,
                device=args.device,
                max_batches=args.transform_batches,
            )
    print(f"machine: {results['machine']}; transform device: {results['device']}")
    print(f"1-min load average at start: {load:.1f}")
    print(f"JPEGs from: {results['source']}; mean size {results['mean_jpeg_bytes'] / 1e3:.0f} kB")
    print(
        f"{args.images} JPEGs {args.size}x{args.height}, crop {args.image_size}, "
        f"batch {args.batch_size}; header check at build: "
        f"{results['build_dataset_header_check_s']:.2f} s"
    )
    print(f"{'what':<28}{'images/s':>10}{'x PIL decode':>14}")
    for key, value in results.items():
        if key.endswith("_img_s"):
            print(f"{key[:-6]:<28}{value:>10.0f}{value / base:>14.2f}")
            w = key.removeprefix("loader_w").removesuffix("_img_s")
            if key.startswith("loader_w") and w.isdigit() and int(w) > 0:
                print(f"{'  per worker':<28}{value / int(w):>10.0f}{value / int(w) / base:>14.2f}")
    tr, va = core["train"] / core["pil"], core["val"] / core["pil"]
    print(
        f"per core (images per CPU-second of one process, {args.rounds} rounds, alternating "
        f"batch by batch): Pillow decode {core['pil']:.0f}; train loader (decode + random resized "
        f"crop {args.image_size} + collate) {core['train']:.0f} ({tr:.2f}x); "
        f"eval loader (centre crop) {core['val']:.0f} ({va:.2f}x) [target (issue 21): >= 0.80x]"
    )
    print(f"  JPEG decoder of the loaders: {results['jpeg_decoder']}")
    if "train_pillow" in core:
        tp, sj = core["train_pillow"] / core["pil"], core["simplejpeg"] / core["pil"]
        print(
            f"  train loader with decoder='pillow' {core['train_pillow']:.0f} ({tp:.2f}x); "
            f"plain simplejpeg decode {core['simplejpeg']:.0f} ({sj:.2f}x; the train loader is "
            f"{core['train'] / core['simplejpeg']:.2f}x of it)"
        )
    spread = core["ratio_per_round"]
    print(
        "  ratio per round (min-max): "
        + ", ".join(f"{k} {min(v):.2f}-{max(v):.2f}" for k, v in spread.items())
        + "; 1-min load average at the end: "
        f"{os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan'):.1f}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
