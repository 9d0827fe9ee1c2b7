"""Per-core census speed against a baseline commit, on planted and on white-noise filters.

In one run, alternating baseline and this checkout ``--reps`` times (best CPU time of each,
so that a loaded machine perturbs both alike): the census of ``--n`` seeded 7x7 filters
(all 8 types) on **one thread** in a subprocess, for (a) the half-planted set of
:func:`bench_census.planted_filters` (seed 5) and (b) white noise (seed 6). The baseline is
the package at ``--baseline-ref`` (``git archive`` into a temporary folder, first on
``PYTHONPATH``). Prints CPU seconds, the speed-up (baseline / this), and the equality of the
results: best type differences, largest ``|dR^2|`` over all filters and types, and how many
R^2 of this census are lower than the baseline's by more than 1e-6. The load average is
printed before and after.

Usage::

    python benchmarks/bench_census_ab.py                     # 16,384 filters, 2 reps, f4b0623
    python benchmarks/bench_census_ab.py --n 50000 --reps 3 --baseline-ref main
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_census import extract_baseline, finish, planted_filters, uptime  # noqa: E402

#: census of argv[1] on one thread, best CPU time of two calls; results to argv[2]
CHILD = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from scalespace_mk.analysis.census import census
y = np.load(sys.argv[1])
census(y[:64])  # tables, caches
best = float("inf")
for _ in range(2):
    c0 = time.process_time()
    res = census(y)
    best = min(best, time.process_time() - c0)
np.savez(sys.argv[2], best=res.best, r2=res.r2_all)
print(json.dumps({"cpu": best}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16384, help="filters per set (default 16384)")
    ap.add_argument("--reps", type=int, default=2, help="alternations (default 2)")
    ap.add_argument("--baseline-ref", default="f4b0623", help="git ref of the baseline")
    ap.add_argument("--json", help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    fig: dict = {"load_before": uptime(), "n": args.n, "baseline": args.baseline_ref}
    print(f"load average before: {fig['load_before']} on {os.cpu_count()} CPUs; one thread")
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        np.save(tmpd / "planted.npy", planted_filters(args.n, seed=5)[0])
        np.save(tmpd / "noise.npy", np.random.default_rng(6).standard_normal((args.n, 7, 7)))
        (tmpd / "base").mkdir()
        extract_baseline(args.baseline_ref, tmpd / "base")
        roots = {"baseline": str(tmpd / "base"), "this": str(ROOT)}
        cpu: dict = {}
        for _ in range(args.reps):
            for name, root in roots.items():
                for data in ("planted", "noise"):
                    env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS="1")
                    cmd = [sys.executable, "-c", CHILD, str(tmpd / f"{data}.npy")]
                    cmd.append(str(tmpd / f"{name}_{data}.npz"))
                    out = subprocess.run(cmd, env=env, cwd=tmpd, capture_output=True, text=True)
                    if out.returncode != 0:
                        raise SystemExit(f"census subprocess failed:\n{out.stderr[-3000:]}")
                    c = json.loads(out.stdout.strip().splitlines()[-1])["cpu"]
                    cpu[name, data] = min(cpu.get((name, data), float("inf")), c)
        for data in ("planted", "noise"):
            a = np.load(tmpd / f"this_{data}.npz")
            b = np.load(tmpd / f"baseline_{data}.npz")
            d = a["r2"] - b["r2"]
            row = {
                "baseline_cpu": cpu["baseline", data],
                "this_cpu": cpu["this", data],
                "speedup": cpu["baseline", data] / cpu["this", data],
                "type_mismatches": int((a["best"] != b["best"]).sum()),
                "max_abs_dr2": float(np.abs(d).max()),
                "r2_lower_by_1e-6": int((d < -1e-6).sum()),
            }
            fig[data] = row
            print(
                f"{data}: {args.n:,} filters, one thread: baseline ({args.baseline_ref}) "
                f"{row['baseline_cpu']:.2f} s CPU, this {row['this_cpu']:.2f} s CPU: speed-up "
                f"{row['speedup']:.2f}x ({args.n / row['this_cpu']:,.0f} filters per "
                f"CPU-second); best type differs {row['type_mismatches']}, max |dR^2| "
                f"{row['max_abs_dr2']:.1e}, R^2 lower by > 1e-6: {row['r2_lower_by_1e-6']}"
            )
    return finish(fig, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
