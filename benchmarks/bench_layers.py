"""Speed of the analytic depthwise layers against a plain depthwise ``nn.Conv2d``.

Two measurements, each in one process with the variants interleaved (every repetition runs
every variant once, in a shuffled order) and the median time per variant reported:

1. **Layer**: forward + backward (input gradient and parameter gradients) of one depthwise
   layer at the ConvNeXt-T stage-1 shape ``[B, 96, 56, 56]``, channels_last, against
   ``nn.Conv2d(96, 96, 7, padding=3, groups=96)``; and the forward alone under
   ``torch.no_grad()`` in eval mode. Variants: ``learnable`` (scales, alpha, gain, offset
   learn), ``idealized`` (scales frozen, gain/offset learn), ``masterkey`` (frozen filters,
   ``a x + b`` learn), ``frozen`` (every kernel parameter frozen: cached kernel, no weight
   gradient). Targets: learnable <= 1.10x, frozen/idealized and eval <= 1.02x the time of
   the plain conv.
2. **Model**: one whole training step (forward, cross-entropy, backward, AdamW step) of
   ConvNeXt-T (``scalespace_mk.networks.create_model``) with each ``dwconv`` kind against
   the learned baseline. Target: <= 1.05x.

On a CUDA device both run in bf16 autocast with synchronised timings; without one the GPU
part is skipped with a message.

Usage::

    python benchmarks/bench_layers.py                 # CPU: B=32 layer, B=8 at 224 model
    python benchmarks/bench_layers.py --quick         # a smoke run in seconds
    python benchmarks/bench_layers.py --device cuda   # GPU, bf16 autocast
    python benchmarks/bench_layers.py --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from scalespace_mk.networks.layers import make_dwconv


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved(
    runs: dict[str, Callable[[], None]], reps: int, warmup: int, device: torch.device, seed=0
) -> dict[str, dict[str, float]]:
    """Median, min and all times (s) of each callable, repetitions interleaved."""
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    rng = np.random.default_rng(seed)
    names = list(runs)
    for _ in range(reps):
        for i in rng.permutation(len(names)):
            name = names[i]
            _sync(device)
            t0 = time.perf_counter()
            runs[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {
        n: {"median": statistics.median(t), "min": min(t), "times": t} for n, t in times.items()
    }


def bench_layer(
    batch: int,
    channels: int,
    size: int,
    reps: int,
    warmup: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> dict[str, dict[str, float]]:
    """Forward+backward and eval forward of the depthwise variants."""
    torch.manual_seed(0)
    fmt = torch.channels_last
    x = torch.randn(batch, channels, size, size, device=device).to(memory_format=fmt)
    x.requires_grad_(True)
    grad = torch.randn(batch, channels, size, size, device=device).to(memory_format=fmt)
    layers = {
        "conv": make_dwconv("learned", channels),
        "learnable": make_dwconv("learnable", channels),
        "idealized": make_dwconv("idealized", channels),  # frozen scales, a and b learnable
        "masterkey": make_dwconv("masterkey", channels),
        # every kernel parameter frozen: cached kernel, no weight gradient at all
        "frozen": make_dwconv("idealized", channels, learn_gain=False, learn_offset=False),
    }
    layers = {k: m.to(device) for k, m in layers.items()}
    ctx = (
        (lambda: torch.autocast(device.type, dtype=autocast_dtype))
        if autocast_dtype is not None
        else nullcontext
    )

    def train_step(m: nn.Module) -> Callable[[], None]:
        def run() -> None:
            x.grad = None
            m.zero_grad(set_to_none=True)
            with ctx():
                y = m(x)
            y.backward(grad.to(y.dtype))

        return run

    def eval_step(m: nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), ctx():
                m(x)

        return run

    runs = {f"{k} fwd+bwd": train_step(m.train()) for k, m in layers.items()}
    # separate eval copies: switching one module between train and eval would clear its
    # kernel cache and time the rebuild
    for k in ("conv", "learnable"):
        runs[f"{k} eval fwd"] = eval_step(copy.deepcopy(layers[k]).eval())
    return _interleaved(runs, reps, warmup, device)


def bench_model(
    name: str,
    kinds: tuple[str, ...],
    batch: int,
    image: int,
    reps: int,
    warmup: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> dict[str, dict[str, float]]:
    """One AdamW training step of a whole network per dwconv kind."""
    from scalespace_mk.networks import create_model

    torch.manual_seed(0)
    x = torch.randn(batch, 3, image, image, device=device).to(memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (batch,), device=device)
    runs = {}
    for kind in kinds:
        torch.manual_seed(0)
        model = create_model(name, dwconv=kind).to(device).to(memory_format=torch.channels_last)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)

        def run(model=model, opt=opt) -> None:
            opt.zero_grad(set_to_none=True)
            ctx = (
                torch.autocast(device.type, dtype=autocast_dtype)
                if autocast_dtype is not None
                else nullcontext()
            )
            with ctx:
                loss = nn.functional.cross_entropy(model(x), target)
            loss.backward()
            opt.step()

        runs[kind] = run
    return _interleaved(runs, reps, warmup, device)


def _ratios(res: dict[str, dict[str, float]], base: str, others: dict[str, float]) -> list:
    rows = []
    for name, target in others.items():
        if name in res:
            r = res[name]["median"] / res[base]["median"]
            r_min = res[name]["min"] / res[base]["min"]
            rows.append((name, base, r, r_min, target, r <= target))
    return rows


def _print_table(title: str, res: dict, rows: list) -> None:
    print(f"\n{title}")
    for name, t in res.items():
        print(f"  {name:24s} median {t['median'] * 1e3:9.2f} ms   min {t['min'] * 1e3:9.2f} ms")
    for name, base, r, r_min, target, ok in rows:
        verdict = "ok" if ok else "MISSED"
        print(
            f"  {name:24s} / {base:16s} = {r:6.3f}x median, {r_min:6.3f}x min "
            f"(target <= {target:.2f}x on medians: {verdict})"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print medians and ratios (and write JSON if asked)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: bf16 autocast)")
    p.add_argument("--batch", type=int, default=None, help="layer batch (CPU 32, GPU 128)")
    p.add_argument("--channels", type=int, default=96)
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--reps", type=int, default=None, help="interleaved repetitions (layer)")
    p.add_argument("--model", default="convnext_tiny")
    p.add_argument("--model-batch", type=int, default=None, help="CPU 8, GPU 64")
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--model-reps", type=int, default=None)
    p.add_argument("--skip-model", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: the GPU (bf16) benchmark is skipped")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    autocast_dtype = torch.bfloat16 if gpu else None
    batch = args.batch or (128 if gpu else 32)
    reps = args.reps or (50 if gpu else 15)
    model_batch = args.model_batch or (64 if gpu else 8)
    model_reps = args.model_reps or (20 if gpu else 9)
    image = args.image
    warmup = 3 if gpu else 1
    if args.quick:
        batch, reps, model_batch, model_reps, image = 2, 3, 2, 2, 64
        args.size = 16
    info = {
        "device": torch.cuda.get_device_name(device) if gpu else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "layer_shape": [batch, args.channels, args.size, args.size],
        "model": args.model,
        "model_batch": model_batch,
        "image": image,
        "dtype": "bf16 autocast" if gpu else "float32",
    }
    print(json.dumps(info))
    out: dict = {"info": info}

    res = bench_layer(batch, args.channels, args.size, reps, warmup, device, autocast_dtype)
    rows = _ratios(
        res,
        "conv fwd+bwd",
        {
            "learnable fwd+bwd": 1.10,
            "idealized fwd+bwd": 1.02,
            "masterkey fwd+bwd": 1.02,
            "frozen fwd+bwd": 1.02,
        },
    )
    rows += _ratios(res, "conv eval fwd", {"learnable eval fwd": 1.02})
    _print_table(f"layer {info['layer_shape']} channels_last, {reps} interleaved reps", res, rows)
    out["layer"] = {"times": res, "ratios": rows}

    if not args.skip_model:
        try:
            import scalespace_mk.networks  # noqa: F401
        except ImportError as exc:
            print(f"\nmodel benchmark skipped: scalespace_mk.networks unavailable ({exc})")
        else:
            name = "convnext_test" if args.quick else args.model
            kinds = ("learned", "learnable", "idealized", "masterkey")
            res_m = bench_model(
                name, kinds, model_batch, image, model_reps, warmup, device, autocast_dtype
            )
            rows_m = _ratios(res_m, "learned", {k: 1.05 for k in kinds[1:]})
            _print_table(
                f"{name} training step, batch {model_batch} at {image}x{image}, "
                f"{model_reps} interleaved reps",
                res_m,
                rows_m,
            )
            out["model"] = {"times": res_m, "ratios": rows_m}
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(out, fh, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
