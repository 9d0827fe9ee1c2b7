"""Cost of the null models in ``analyze``: a ConvNeXt-V2-Tiny-sized checkpoint, with and without.

Builds a seeded synthetic state dict shaped like ConvNeXt-V2-Tiny's depthwise convs (stages of
3, 3, 9, 3 blocks with 96, 192, 384, 768 channels: 6,624 7x7 filters named
``stages.S.blocks.B.dwconv.weight``, beside a few dense weights that are skipped). The filters
are learned-like: an idealised master key model at random scales times a random gain, plus
an offset and noise (5-40 % of the model's norm); 2 % are white noise and 0.5 % dead (zero).

Then, in one run, it times :func:`scalespace_mk.networks.checkpoint.analyze` with
``null="none"`` (the baseline), ``"iid"``, ``"phase"`` and ``"both"`` with the default
``null_size`` (2048 null filters of each kind, drawn from every layer in proportion), and
``"both"`` with ``null_size=None`` (one null filter per learned filter), best of ``--repeat``
runs each after one warm-up call that builds the census tables, and prints each time and its
ratio to the baseline. The target of issue 8: ``both`` under 3x ``none``.

Usage::

    python benchmarks/bench_analyze.py                 # 6,624 filters, best of 2
    python benchmarks/bench_analyze.py --threads 1 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from scalespace_mk.networks.checkpoint import NULL_SIZE, analyze
from scalespace_mk.scalespace.models import masterkey_model

DEPTHS, DIMS = (3, 3, 9, 3), (96, 192, 384, 768)  # ConvNeXt-V2-Tiny: 6,624 depthwise filters


def make_checkpoint(seed: int = 0, k: int = 7) -> dict[str, torch.Tensor]:
    """A seeded ConvNeXt-V2-Tiny-shaped state dict with learned-like depthwise filters."""
    rng = np.random.default_rng(seed)
    sd: dict[str, torch.Tensor] = {"stem.0.weight": torch.zeros(96, 3, 4, 4)}
    for s, (depth, dim) in enumerate(zip(DEPTHS, DIMS, strict=True)):
        for b in range(depth):
            w = np.empty((dim, k, k))
            for c in range(dim):
                u = rng.random()
                if u < 0.005:
                    w[c] = 0.0
                    continue
                if u < 0.025:
                    w[c] = rng.normal(size=(k, k))
                    continue
                t = int(rng.integers(1, 9))
                sx, sy = rng.uniform(0.3, 2.0, 2)
                g = masterkey_model(
                    t,
                    sx,
                    None if t == 7 else sy,
                    alpha=rng.uniform(0.2, 2.0) if t == 7 else None,
                    size=k,
                )
                g = g * rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 2.0)
                noise = rng.normal(size=(k, k))
                noise *= rng.uniform(0.05, 0.4) * np.linalg.norm(g) / np.linalg.norm(noise)
                w[c] = g + rng.normal() * 0.01 + noise
            sd[f"stages.{s}.blocks.{b}.dwconv.weight"] = torch.from_numpy(w[:, None]).float()
            sd[f"stages.{s}.blocks.{b}.pwconv1.weight"] = torch.zeros(4 * dim, dim)
    return sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="only none, both and both-full")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sd = make_checkpoint(args.seed)
    n = sum(v.shape[0] for k, v in sd.items() if k.endswith("dwconv.weight"))
    load = os.getloadavg()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(f"checkpoint: {n} depthwise 7x7 filters in {sum(DEPTHS)} layers")
    analyze({"w.weight": sd["stages.0.blocks.0.dwconv.weight"][:8]}, null="both")  # warm-up
    times: dict[str, float] = {}
    medians: dict[str, dict[str, float | None]] = {}
    configs = [
        ("none", "none", NULL_SIZE),
        ("iid", "iid", NULL_SIZE),
        ("phase", "phase", NULL_SIZE),
        ("both", "both", NULL_SIZE),
        ("both-full", "both", None),
    ]
    for label, null, size in configs:
        if args.quick and label in ("iid", "phase"):
            continue
        best = np.inf
        for _ in range(args.repeat):
            start = time.perf_counter()
            res = analyze(sd, null=null, seed=args.seed, progress=False, null_size=size)
            best = min(best, time.perf_counter() - start)
        times[label] = best
        null_med = res.summary["null_median_r2"]
        medians[label] = {"median_r2": res.summary["median_r2"], "null_median_r2": null_med}
        n_null = {k: c["null_n"] for k, c in res.summary["nulls"].items()}
        print(
            f"null={label:<10} {best:7.2f} s  ratio to none {best / times['none']:.2f}  "
            f"median R^2 {res.summary['median_r2']:.3f} "
            f"(null {'-' if null_med is None else format(null_med, '.3f')}; "
            f"null filters {n_null or '-'})"
        )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        json.dumps(
            {
                "filters": n,
                "seconds": times,
                "ratio_both": times["both"] / times["none"],
                "ratio_both_full": times["both-full"] / times["none"],
                "medians": medians,
            }
        )
    )


if __name__ == "__main__":
    main()
