"""The batched augmentations of scalespace_mk.training.augment against kornia's equivalents.

For each component the module keeps, times this module's batched op and kornia's closest
equivalent on the same batch and prints the ratio (kornia time / ours; > 1: ours is faster).
kornia is the named baseline. Pairs (what each computes differs where the docstring of
``scalespace_mk.training.augment`` says so; the timing compares the work, not the result):

* ``random_resized_crop``: ours (one ``grid_sample``) vs ``kornia.augmentation.RandomResizedCrop``;
* ``random_erasing``: ours (per-pixel N(0, 1)) vs ``kornia.augmentation.RandomErasing``;
* ``equalize``: ours (batched, Pillow's lookup table) vs ``kornia.enhance.equalize``;
* ``rand_augment``: ours (per image ops) vs ``kornia.augmentation.auto.RandAugment`` (one draw
  per call, as our ``backend='kornia'`` uses it with 8 groups);
* ``mixup``: ours (timm batch mode) vs ``kornia.augmentation.RandomMixUpV2``.

Usage::

    python benchmarks/bench_augment_kornia.py --batch 64 --size 128 --repeat 5 [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch


def _time(fn, repeat: int, device: torch.device) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="images per batch (default: 64)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default: 128)")
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed repeats, best kept (default: 5)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    args = parser.parse_args()

    import kornia
    import kornia.augmentation as K
    from kornia.augmentation.auto import RandAugment

    from scalespace_mk.training import augment as A

    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g).to(device)
    labels = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    s = args.size
    pairs = {
        "random_resized_crop": (
            lambda: A.random_resized_crop(x, s, generator=g),
            lambda: K.RandomResizedCrop((s, s), p=1.0)(x),
        ),
        "random_erasing": (
            lambda: A.random_erasing(x, p=1.0, generator=g),
            lambda: K.RandomErasing(p=1.0)(x),
        ),
        "equalize": (
            lambda: A._equalize(x),
            lambda: kornia.enhance.equalize(x),
        ),
        "rand_augment": (
            lambda: A.rand_augment(x, generator=g),
            lambda: torch.cat([RandAugment(n=2, m=27)(c) for c in x.chunk(8)]),
        ),
        "mixup": (
            lambda: A.mixup_cutmix(x, labels, num_classes=10, cutmix_alpha=0, generator=g),
            lambda: K.RandomMixUpV2(data_keys=["input", "class"])(x, labels),
        ),
    }
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, kornia {kornia.__version__}, threads {torch.get_num_threads()}, "
        f"load {os.getloadavg()[0]:.2f}; batch {args.batch} x 3 x {s} x {s} on {device}"
    )
    print(f"{'op':<22}{'ours ms':>10}{'kornia ms':>12}{'kornia/ours':>13}")
    for name, (ours, theirs) in pairs.items():
        t_ours = _time(ours, args.repeat, device)
        t_k = _time(theirs, args.repeat, device)
        print(f"{name:<22}{t_ours * 1e3:>10.1f}{t_k * 1e3:>12.1f}{t_k / t_ours:>13.2f}")


if __name__ == "__main__":
    main()
