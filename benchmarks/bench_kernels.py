"""Benchmark: discrete Gaussian kernels for many scales in one batch vs a pyscsp loop.

Run::

    python benchmarks/bench_kernels.py            # 10,000 scales, sigma ~ U[0.1, 10], seed 0
    python benchmarks/bench_kernels.py --n 2000 --repeat 5

Two rows are measured:

1. full kernels (epsilon = 1e-8): ``discrete_gaussian(sigmas)`` (one FFT-based batch; every
   row has the common radius of the largest sigma, zero beyond its own) against a Python
   loop over pyscsp's ``make1Ddiscgaussfilter`` (one ``scipy.special.ive`` call per scale);
2. paper-mode 7-tap kernels: ``discrete_gaussian(sigmas, size=7)`` against the same loop
   followed by a centre crop to 7 taps.

Before timing, the values are checked: equal to 1e-12 on the common support. pyscsp caps
the radius at ``ceil(1 + 1.5 N)`` (N its continuous radius estimate), which for sigma below
~0.23 is shorter than the accumulated-mass rule used here; on those extra taps our values are
checked against ``scipy.special.ive`` instead. Times are the best of ``--repeat`` runs.

The batch is timed with 1 torch thread and with torch's default thread count (``--threads``):
on a small machine shared with other jobs, torch's intra-op thread pool can be several times
slower than a single thread.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pyscsp.discscsp as pyscsp
import torch
from scipy.special import ive

from scalespace_mk.scalespace.kernels import discrete_gaussian


def best_time(fn, repeat: int) -> tuple[float, object]:
    """Smallest wall time of ``repeat`` calls of ``fn`` and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def pyscsp_loop(sigmas: np.ndarray) -> list[np.ndarray]:
    return [pyscsp.make1Ddiscgaussfilter(float(s)) for s in sigmas]


def pyscsp_loop_crop7(sigmas: np.ndarray) -> np.ndarray:
    out = np.zeros((sigmas.size, 7))
    for i, s in enumerate(sigmas):
        k = pyscsp.make1Ddiscgaussfilter(float(s))
        r = min(3, k.size // 2)
        mid = k.size // 2
        out[i, 3 - r : 3 + r + 1] = k[mid - r : mid + r + 1]
    return out


def check_full(ours: np.ndarray, ref: list[np.ndarray], sigmas: np.ndarray) -> float:
    """Largest deviation from pyscsp on the common support (and from ive beyond it)."""
    mid = ours.shape[1] // 2
    worst = 0.0
    for row, k, s in zip(ours, ref, sigmas, strict=True):
        r = k.size // 2
        worst = max(worst, float(np.abs(row[mid - r : mid + r + 1] - k).max()))
        beyond = row[mid + r + 1 :]  # ours only: exact values of T (or zero past our radius)
        if beyond.any():
            n = np.arange(r + 1, r + 1 + beyond.size)
            own = beyond > 0
            worst = max(worst, float(np.abs(beyond[own] - ive(n[own], s * s)).max()))
    return worst


def check_crop7(ours: np.ndarray, ref: np.ndarray, sigmas: np.ndarray) -> float:
    common = ref != 0  # pyscsp's (possibly shorter) support
    worst = float(np.abs(ours[common] - ref[common]).max())
    extra = (~common) & (ours != 0)
    if extra.any():
        n = np.abs(np.nonzero(extra)[1] - 3)
        s2 = sigmas[np.nonzero(extra)[0]] ** 2
        worst = max(worst, float(np.abs(ours[extra] - ive(n, s2)).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of scales")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 0],
        help="torch intra-op thread counts to measure (0: torch's default); default 1 0",
    )
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    sigmas = rng.uniform(0.1, 10.0, size=args.n)
    print(
        f"{args.n} scales, sigma ~ U[0.1, 10] (seed {args.seed}); torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs; best of {args.repeat}"
    )

    # the reference: a Python loop over pyscsp (single-threaded scipy), timed once
    t_ref, ref = best_time(lambda: pyscsp_loop(sigmas), args.repeat)
    t_ref7, ref7 = best_time(lambda: pyscsp_loop_crop7(sigmas), args.repeat)

    ok = True
    print(
        f"{'kernels':<26} {'threads':>7} {'batch [s]':>10} {'pyscsp loop [s]':>16} "
        f"{'max |diff|':>11}  shape"
    )
    default_threads = torch.get_num_threads()
    for threads in args.threads:
        torch.set_num_threads(threads if threads > 0 else default_threads)
        n_thr = torch.get_num_threads()
        t_ours, ours = best_time(lambda: discrete_gaussian(sigmas), args.repeat)
        t_ours7, ours7 = best_time(lambda: discrete_gaussian(sigmas, size=7), args.repeat)
        rows = [
            ("full kernels (eps 1e-8)", t_ours, t_ref, check_full(ours, ref, sigmas), ours.shape),
            ("paper mode, size 7", t_ours7, t_ref7, check_crop7(ours7, ref7, sigmas), ours7.shape),
        ]
        for name, t1, t2, e, shape in rows:
            print(f"{name:<26} {n_thr:>7} {t1:>10.4f} {t2:>16.4f} {e:>11.2e}  {list(shape)}")
            print(f"  speed-up per kernel: {t2 / t1:.1f} x")
            ok &= e <= 1e-12
    torch.set_num_threads(default_threads)
    if not ok:
        print("VALUES DIFFER by more than 1e-12")
        return 1
    print("values equal to 1e-12 on the common support (and to scipy ive beyond it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
