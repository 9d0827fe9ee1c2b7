"""Census speed and accuracy against a per-filter ``scipy.optimize`` loop.

Builds a seeded bank of learned-like 7x7 filters, by default 6,624 of them (the number of
depthwise filters in ConvNeXt-T: 3*96 + 3*192 + 9*384 + 3*768): about 97 % are idealised
models of the 8 master key types (docs/method.md#models) at random scales (sigma in [0.3, 2], alpha
in
[0.2, 2]), times a random gain of either sign, plus an offset and Gaussian noise of a
random level (5-40 % of the model's norm), and the rest are white noise. Then, in one run:

* ``census``: :func:`scalespace_mk.analysis.census.census` on all filters, all 8 types, timed
  cold (first call of the process: includes building the interpolation tables) and warm;
* ``scipy``: for each filter of a random subset (default 300) and each of the 8 types,
  ``scipy.optimize.minimize(method="L-BFGS-B")`` of the same objective,
  ``RSS(theta) = ||a g(theta) + b - y||^2`` with the closed-form ``a, b``, over the scales
  (type 7: over ``(sigma, alpha)``) within the same bounds (sigma in [0, 3.5], alpha in
  [0, 10]) from the start ``(1, 1)`` (type 7: ``(1, 0.5)``), with finite-difference
  gradients. Its model is a lean numpy version of the paper-mode discrete-Gaussian models
  (``scipy.special.ive`` + 3-tap operators; checked against ``model_kernel`` to 1e-8, it
  leaves out only the 1e-8 truncation) so that the loop is not slowed by torch's per-call
  overhead; the scales it finds are then scored with the exact models. Its time per
  filter is extrapolated to the whole bank (printed as such).

Printed: census seconds, scipy seconds per filter, the speed-up, and the share of filters
whose census residual is at most scipy's plus ``1e-12 * TSS`` (best type per filter, and
over all filter-type pairs). ``--n 1000000 --device cuda`` times the census on a GPU (the
scipy loop is skipped with ``--subset 0``); without CUDA it says so and exits.

Usage::

    python benchmarks/bench_fit.py                        # 6,624 filters, CPU, 300 for scipy
    python benchmarks/bench_fit.py --threads 1 --subset 100
    python benchmarks/bench_fit.py --n 1000000 --device cuda --subset 0

On a CPU shared with other busy processes, OpenMP's default spin-waiting makes every
multi-threaded torch op slow (here 6-10 s instead of 1.6 s for the census of 6,624
filters): run with ``OMP_WAIT_POLICY=PASSIVE`` (or ``--threads 1``) there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import ive

from scalespace_mk.analysis.census import ALPHA_RANGE, census, linear_shift
from scalespace_mk.scalespace.models import masterkey_model

CONVNEXT_T_FILTERS = 3 * 96 + 3 * 192 + 9 * 384 + 3 * 768  # 6,624
SIGMA_MAX = 3.5


def make_bank(n: int, *, seed: int = 0, random_share: float = 0.03, device: str = "cpu"):
    """Seeded learned-like filters ``[n, 7, 7]`` and their planted types (0 = random)."""
    rng = np.random.default_rng(seed)
    types = rng.integers(1, 9, n)
    types[rng.random(n) < random_share] = 0
    sx, sy = rng.uniform(0.3, 2.0, n), rng.uniform(0.3, 2.0, n)
    alpha = rng.uniform(0.2, 2.0, n)
    g = np.empty((n, 7, 7))
    for t in range(1, 9):
        m = types == t
        if m.any():
            sxt = torch.as_tensor(sx[m], device=device)
            if t == 7:
                out = masterkey_model(7, sxt, alpha=torch.as_tensor(alpha[m], device=device))
            else:
                out = masterkey_model(t, sxt, torch.as_tensor(sy[m], device=device))
            g[m] = out.cpu().numpy()
    g[types == 0] = rng.normal(size=(int((types == 0).sum()), 7, 7))
    g /= np.linalg.norm(g.reshape(n, -1), axis=1)[:, None, None]
    noise = rng.uniform(0.05, 0.4, n)[:, None, None] * rng.normal(size=g.shape) / 7.0
    gain = rng.uniform(0.3, 3.0, n) * rng.choice([-1.0, 1.0], n)
    y = gain[:, None, None] * (g + noise) + rng.normal(0.0, 0.05, n)[:, None, None]
    return y, types


# ------------------------------------------------------------------ lean numpy models

_OPS = {
    "x": (-0.5, 0.0, 0.5),
    "xx": (1.0, -2.0, 1.0),
    "x+": (0.0, -1.0, 1.0),
    "x-": (-1.0, 1.0, 0.0),
}
#: (ops along x, ops along y) of the separable master key types (docs/method.md#models)
_SEP = {1: ("", "x+"), 2: ("x-", ""), 3: ("", "x-"), 4: ("x+", ""), 5: ("x", ""), 6: ("", "x")}
_SEP[8] = ("", "")
_N = np.arange(-3, 4)


def _gauss(sigma: float) -> np.ndarray:
    return ive(np.abs(_N), sigma * sigma)


def _op(v: np.ndarray, op: str, boundary: str) -> np.ndarray:
    if not op:
        return v
    p = np.pad(v, 1, mode="edge" if boundary == "reflect" else "constant")
    c = _OPS[op]
    return c[0] * p[:-2] + c[1] * p[1:-1] + c[2] * p[2:]


def lean_model(t: int, p: np.ndarray) -> np.ndarray:
    """Paper-mode discgauss model of type ``t`` (no 1e-8 truncation), numpy, [7, 7]."""
    if t == 7:
        g = _gauss(p[0])
        lap = np.outer(g[::-1], _op(g, "xx", "zero")) + np.outer(_op(g, "xx", "zero")[::-1], g)
        out = -p[1] * lap
        out[3, 3] += 1.0
        return out
    ox, oy = _SEP[t]
    u = _op(_gauss(p[0]), ox, "reflect")
    v = _op(_gauss(p[1]), oy, "reflect")[::-1]  # increasing y -> rows top to bottom
    return np.outer(v, u)


def scipy_fit(y: np.ndarray, t: int) -> tuple[np.ndarray, int]:
    """Per-filter L-BFGS-B on RSS with the closed-form gain and offset."""
    yf = y.ravel()
    yc = yf - yf.mean()

    def rss(p: np.ndarray) -> float:
        g = lean_model(t, p).ravel()
        gc = g - g.mean()
        gg = gc @ gc
        return float(yc @ yc - (yc @ gc) ** 2 / gg) if gg > 0 else float(yc @ yc)

    if t == 7:
        x0, bounds = np.array([1.0, 0.5]), [(0.0, SIGMA_MAX), ALPHA_RANGE]
    else:
        x0, bounds = np.array([1.0, 1.0]), [(0.0, SIGMA_MAX), (0.0, SIGMA_MAX)]
    opt = minimize(rss, x0, method="L-BFGS-B", bounds=bounds)
    return opt.x, int(opt.nfev)


def exact_rss(y: np.ndarray, t: int, p: np.ndarray) -> float:
    """RSS of the best linear shift of the exact model (``model_kernel``) at ``p``."""
    g = masterkey_model(7, p[0], alpha=p[1]) if t == 7 else masterkey_model(t, p[0], p[1])
    return float(linear_shift(y, g).rss)


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=CONVNEXT_T_FILTERS, help="number of filters")
    ap.add_argument("--subset", type=int, default=300, help="filters for the scipy loop")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available on this machine: GPU census skipped.")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch "
        f"threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"torch {torch.__version__}, device {args.device}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    gen_dev = args.device
    y, planted = make_bank(args.n, seed=args.seed, device=gen_dev)
    n_rand = int((planted == 0).sum())
    print(
        f"filters: {args.n} (7x7, seed {args.seed}; {args.n - n_rand} model-based, {n_rand} random)"
    )

    # lean models agree with the package's models
    rng = np.random.default_rng(args.seed + 1)
    for t in range(1, 9):
        p = np.array([rng.uniform(0.2, 3.0), rng.uniform(0.2, 3.0) if t != 7 else 0.7])
        ref = masterkey_model(7, p[0], alpha=p[1]) if t == 7 else masterkey_model(t, *p)
        err = np.abs(lean_model(t, p) - ref).max()
        if err > 1e-8:
            raise RuntimeError(f"lean model {t} differs from model_kernel by {err:.2e}")

    def sync() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    sync()
    t0 = time.perf_counter()
    res = census(y, device=args.device)
    sync()
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = census(y, device=args.device)
    sync()
    warm = time.perf_counter() - t0
    hit = planted > 0
    acc = float(np.mean(res.type[hit] == planted[hit]))
    print(f"census: {cold:.3f} s cold (first call, incl. tables), {warm:.3f} s warm")
    print(f"census type accuracy on model-based filters: {100 * acc:.2f} %")
    out = {"n": args.n, "device": args.device, "census_cold_s": cold, "census_warm_s": warm}
    out["type_accuracy"] = acc
    if args.subset > 0:
        sub = np.sort(rng.choice(args.n, size=min(args.subset, args.n), replace=False))
        rss_scipy = np.empty((len(sub), 8))
        nfev = 0
        t0 = time.perf_counter()
        params = []
        for i in sub:
            for t in range(1, 9):
                p, nf = scipy_fit(y[i], t)
                params.append(p)
                nfev += nf
        scipy_s = time.perf_counter() - t0
        per_filter = scipy_s / len(sub)
        k = 0
        for a, i in enumerate(sub):
            for j, t in enumerate(range(1, 9)):
                rss_scipy[a, j] = exact_rss(y[i], t, params[k])
                k += 1
        tol = 1e-12 * res.tss[sub]
        pair_ok = res.rss_all[sub] <= rss_scipy + tol[:, None]
        best_ok = res.rss_all[sub].min(axis=1) <= rss_scipy.min(axis=1) + tol
        better = res.rss_all[sub] < rss_scipy - 1e-9 * res.tss[sub][:, None]
        speedup = per_filter * args.n / cold
        print(
            f"scipy L-BFGS-B loop: {scipy_s:.1f} s for {len(sub)} filters x 8 types "
            f"({nfev / (8 * len(sub)):.0f} evaluations per fit) = {per_filter:.4f} s per filter; "
            f"extrapolated to {args.n} filters: {per_filter * args.n:.0f} s"
        )
        print(f"speed-up (extrapolated scipy / cold census): {speedup:.0f}x")
        print(
            f"census RSS <= scipy RSS + 1e-12 TSS: {100 * best_ok.mean():.2f} % of filters "
            f"(best type), {100 * pair_ok.mean():.2f} % of filter-type pairs; census lower by "
            f"more than 1e-9 TSS in {100 * better.mean():.2f} % of pairs"
        )
        worst = (res.rss_all[sub] - rss_scipy) / res.tss[sub][:, None]
        print(f"largest (census - scipy) RSS / TSS: {worst.max():.3e}")
        out.update(
            scipy_subset=len(sub),
            scipy_s_per_filter=per_filter,
            speedup=speedup,
            share_filters_ok=float(best_ok.mean()),
            share_pairs_ok=float(pair_ok.mean()),
            share_pairs_better=float(better.mean()),
        )
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
