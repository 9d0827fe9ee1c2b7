"""Census throughput against the machine's peak, and the streamed census against the in-memory one.

In one run (same process, same threads, load average printed before and after):

1. **peak**: a float32 matrix product ``[2048, 2048] @ [2048, 2048]`` (torch, default
   threads), best of 5: multiply-adds per second, the machine's measured peak;
2. **work per filter**: the matrix-product multiply-adds per filter of the census as
   implemented, counted by ``torch.utils.flop_counter.FlopCounterMode`` on one chunk of
   ``--count-n`` filters fitted in the main thread (element-wise operations, e.g. of the
   refinement, are not counted: the figure is a floor of the work);
3. **census**: ``--n`` filters of the benchmark's half-planted set
   (:func:`bench_census.planted_filters`) and ``--n`` white-noise filters, 7x7, 8 types: wall
   and CPU seconds, filters/s, and the share of the peak that filters/s x multiply-adds per
   filter makes; the time of 1,000,000 filters extrapolated;
4. **stream**: :func:`scalespace_mk.analysis.stream.census_stream` of the half-planted set
   from a ``.npy`` file to an ``.npz`` (chunks of 65,536), against (3): the ratio of wall
   times (the cost of reading, writing and merging) and the peak resident memory of this
   process.

Usage::

    python benchmarks/bench_census_peak.py                 # 200,000 + 200,000 filters
    python benchmarks/bench_census_peak.py --n 20000 --json peak.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _cpu() -> float:
    """CPU seconds of this process and of its joined children (the census's forked workers)."""
    t = os.times()
    return t[0] + t[1] + t[2] + t[3]


sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_census import planted_filters  # noqa: E402

from scalespace_mk.analysis.census import census  # noqa: E402


def matmul_peak(size: int = 2048, repeat: int = 5) -> float:
    """Best float32 multiply-adds per second of one ``size``-square matrix product."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, size**3 / (time.perf_counter() - t))
    return best


def macs_per_filter(y: np.ndarray) -> float:
    """Matrix-product multiply-adds per filter of the census of ``y`` (FlopCounterMode / 2).

    The chunk is fitted in this thread (the counter does not see the census's worker
    threads) by the census's own chunk function; the tables and the coarse-grid matrix,
    built once per call, are left out.
    """
    from torch.utils.flop_counter import FlopCounterMode

    import scalespace_mk.analysis.scale_objectives as O
    import scalespace_mk.analysis.scale_search as C
    from scalespace_mk.analysis.types import DEFAULT_TYPES, parse_model_types

    k, smax = y.shape[1], y.shape[1] / 2.0
    tps = parse_model_types(DEFAULT_TYPES)
    dev = torch.device("cpu")
    objs = O._objectives(tps, k, "discgauss", "paper", 1e-8, smax, O.ALPHA_RANGE, dev)
    yn = y / np.abs(y).reshape(len(y), -1).max(axis=1)[:, None, None]
    yf = torch.as_tensor(yn).reshape(len(y), -1)
    args = (k, "discgauss", "paper", 1e-8, smax, O.ALPHA_RANGE)
    with torch.no_grad():
        grid = C._grid_models(objs, smax, dev)
        with FlopCounterMode(display=False) as counter:
            C._fit_chunk(tps, objs, yf, *args, grid=grid)
    return counter.get_total_flops() / 2.0 / len(y)


def timed(y: np.ndarray) -> tuple[float, float]:
    t, c = time.perf_counter(), _cpu()
    census(y)
    return time.perf_counter() - t, _cpu() - c


def peak_rss_mb() -> float:
    status = open("/proc/self/status").read().split("VmHWM:")
    return int(status[1].split()[0]) / 1024.0 if len(status) > 1 else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="filters per set (default 2e5)")
    ap.add_argument("--count-n", type=int, default=4096, help="filters of the MAC count")
    ap.add_argument("--json", help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    fig: dict = {
        "load_before": os.getloadavg(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "n": args.n,
    }
    print(f"load average before {fig['load_before']}, {fig['threads']} torch threads")
    peak = matmul_peak()
    fig["peak_macs_per_s"] = peak
    print(f"peak: float32 matmul 2048^2, {peak / 1e9:.1f} GMAC/s")
    planted, _ = planted_filters(args.n, seed=0)
    noise = np.random.default_rng(1).standard_normal((args.n, 7, 7))
    macs = macs_per_filter(planted[: args.count_n])
    fig["macs_per_filter"] = macs
    print(f"matrix-product multiply-adds per filter (8 types, 7x7): {macs:,.0f}")
    census(planted[:64])
    for name, y in (("half-planted", planted), ("white noise", noise)):
        wall, cpu = timed(y)
        rate = args.n / wall
        share = rate * macs / peak
        fig[name] = {"wall": wall, "cpu": cpu, "filters_per_s": rate, "share_of_peak": share}
        print(
            f"{name}: {args.n:,} filters in {wall:.2f} s wall, {cpu:.2f} s CPU: "
            f"{rate:,.0f} filters/s = {100 * share:.2f} % of the matmul peak; "
            f"1,000,000 in {1e6 / rate:.0f} s (CPU {cpu * 1e6 / args.n:.0f} s)   "
            f"[targets, idle 2 cores: planted <= 30 s, noise <= 60 s]"
        )
    from scalespace_mk.analysis.stream import census_stream

    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "f.npy", planted)
        t = time.perf_counter()
        census_stream(Path(tmp) / "f.npy", Path(tmp) / "r.npz", progress=False)
        wall = time.perf_counter() - t
    ratio = wall / fig["half-planted"]["wall"]
    fig["stream"] = {"wall": wall, "ratio_to_in_memory": ratio, "peak_rss_mb": peak_rss_mb()}
    print(
        f"streamed census of the half-planted set: {wall:.2f} s = {ratio:.2f}x the in-memory "
        f"census; peak resident memory of this process {fig['stream']['peak_rss_mb']:.0f} MB"
    )
    fig["load_after"] = os.getloadavg()
    print(f"load average after {fig['load_after']}")
    if args.json:
        from scalespace_mk._io import atomic_path

        with atomic_path(args.json) as p:
            p.write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
