"""Speed of the N-jet family census and the N-jet depthwise layer, against named baselines.

Three measurements, side by side in one run (1 torch thread by default):

1. **Family census vs the 8-type census**: ``family_census(family="njet", order=2)`` of N
   learned-like 7x7 filters (``bench_fit.make_bank``, seed 0) against
   ``census(filters)`` (the 8 master-key types) on the same filters. Target: <= 2x.
2. **Family census vs scipy.optimize per filter**: the same model (one sigma, 6
   coefficients, an offset) fitted filter by filter with ``scipy.optimize.least_squares``
   over all 8 parameters (trust-region reflective, model from
   :func:`scalespace_mk.scalespace.jets.jet_basis` at every evaluation, finite-difference
   Jacobian, start sigma = 1 and zero coefficients). Only ``--scipy-n`` filters are
   fitted; their time is extrapolated to N (said in the output). Target: >= 50x.
3. **Layer**: forward + backward of ``NJetDepthwiseConv2d(96, 7, order=2)`` at the
   ConvNeXt-T stage-1 shape ``[32, 96, 56, 56]`` (channels_last) against
   ``nn.Conv2d(96, 96, 7, padding=3, groups=96)``, interleaved repetitions (medians).
   Variants: learnable (scales and coefficients), frozen scales (coefficients learn: the
   basis is cached), frozen (everything cached). Targets: <= 1.10x, <= 1.02x, <= 1.02x.
   Also timed: the learnable layer's kernel generation alone (forward + backward), the
   overhead that the ratios measure, which is robust to a noisy machine.

Usage::

    python benchmarks/bench_jets.py                    # N = 100,000
    python benchmarks/bench_jets.py --n 20000 --scipy-n 100
    python benchmarks/bench_jets.py --quick            # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fit import make_bank  # noqa: E402
from bench_layers import _interleaved  # noqa: E402

from scalespace_mk.analysis.census import census  # noqa: E402
from scalespace_mk.analysis.jets import family_census  # noqa: E402
from scalespace_mk.networks.layers import NJetDepthwiseConv2d, make_dwconv  # noqa: E402
from scalespace_mk.scalespace.jets import jet_basis  # noqa: E402


def scipy_fit(y: np.ndarray, order: int = 2) -> tuple[float, float]:
    """One filter, all parameters (sigma, coefficients, b) by least_squares; (R^2, nfev)."""
    from scipy.optimize import least_squares

    m = (order + 1) * (order + 2) // 2
    flat = y.reshape(-1)

    def resid(p: np.ndarray) -> np.ndarray:
        basis = jet_basis(order, abs(p[0]), size=y.shape[-1]).reshape(m, -1)
        return p[1 : 1 + m] @ basis + p[-1] - flat

    p0 = np.zeros(m + 2)
    p0[0] = 1.0
    sol = least_squares(resid, p0, method="trf")
    tss = ((flat - flat.mean()) ** 2).sum()
    return 1.0 - 2.0 * sol.cost / tss, sol.nfev


def bench_census(n: int, scipy_n: int) -> dict:
    y, _ = make_bank(n, seed=0)
    out: dict = {"n": n}
    t0 = time.perf_counter()
    res = family_census(y, family="njet", order=2, progress=False)
    out["njet_s"] = time.perf_counter() - t0
    out["njet_median_r2"] = float(np.median(res.r2))
    t0 = time.perf_counter()
    mk = census(y, progress=False)
    out["masterkey_s"] = time.perf_counter() - t0
    out["masterkey_median_r2"] = float(np.median(mk.r2))
    t0 = time.perf_counter()
    r2 = [scipy_fit(y[i])[0] for i in range(scipy_n)]
    per = (time.perf_counter() - t0) / scipy_n
    out.update(scipy_n=scipy_n, scipy_s_per_filter=per, scipy_extrapolated_s=per * n)
    # the batched census is the global optimum on the grid: at least as good as scipy
    out["scipy_median_r2_subset"] = float(np.median(r2))
    out["njet_median_r2_subset"] = float(np.median(res.r2[:scipy_n]))
    out["ratio_vs_masterkey"] = out["njet_s"] / out["masterkey_s"]
    out["speedup_vs_scipy"] = out["scipy_extrapolated_s"] / out["njet_s"]
    return out


def bench_layer(batch: int, channels: int, size: int, reps: int) -> dict:
    torch.manual_seed(0)
    fmt = torch.channels_last
    x = torch.randn(batch, channels, size, size).to(memory_format=fmt).requires_grad_(True)
    grad = torch.randn(batch, channels, size, size).to(memory_format=fmt)
    layers = {
        "conv": make_dwconv("learned", channels),
        "njet learnable": NJetDepthwiseConv2d(channels, 7, 2),
        "njet frozen scales": NJetDepthwiseConv2d(channels, 7, 2, learn_scales=False),
        "njet frozen": NJetDepthwiseConv2d(
            channels, 7, 2, learn_scales=False, learn_coefficients=False, learn_offset=False
        ),
    }

    def step(m):
        def run() -> None:
            x.grad = None
            m.zero_grad(set_to_none=True)
            m(x).backward(grad)

        return run

    def build(m):  # the kernel alone: forward and backward of its generation
        def run() -> None:
            m.zero_grad(set_to_none=True)
            m.kernel().sum().backward()

        return run

    runs = {k: step(m) for k, m in layers.items()}
    runs["njet kernel build only"] = build(layers["njet learnable"])
    res = _interleaved(runs, reps, 1, torch.device("cpu"))
    base = res["conv"]["median"]
    return {k: {"median_s": v["median"], "ratio": v["median"] / base} for k, v in res.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print the figures (JSON lines)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="filters in the census (7x7)")
    p.add_argument("--scipy-n", type=int, default=200, help="filters fitted by scipy")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-layer", action="store_true")
    p.add_argument("--skip-census", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.n, args.scipy_n, args.batch, args.reps = 2000, 10, 2, 3
    info = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_start": os.getloadavg(),
    }
    print(json.dumps(info), flush=True)
    out: dict = {"info": info}
    if not args.skip_census:
        out["census"] = bench_census(args.n, args.scipy_n)
        print(json.dumps({"census": out["census"]}), flush=True)
    if not args.skip_layer:
        out["layer"] = bench_layer(args.batch, 96, 56, args.reps)
        print(json.dumps({"layer": out["layer"]}), flush=True)
    info["load_average_end"] = os.getloadavg()
    print(json.dumps({"load_average_end": info["load_average_end"]}))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
