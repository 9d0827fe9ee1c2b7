"""Speed of the family census (N-jet, oriented) against its own baseline in the same run.

On ``--n`` seeded white-noise 7x7 filters (default 8,192; ``default_rng(--seed)``) and as
many planted ones (``family_reference._planted``: order-2 N-jets, half with two scales,
plus 2 % noise), each family in ``--families`` is timed

- with **this** package (the working tree), and
- with the **baseline** (the package at ``--baseline-ref``, default ``f4b0623``, the last
  commit before the family census moved to cubic tables and Newton steps, extracted with
  ``git archive`` as ``bench_census.extract_baseline`` does),

each in a subprocess with ``--threads`` torch threads (default: 1 and 2), after a warm-up
call on 64 filters (tables, caches). Printed per family and thread count: seconds, seconds
per million filters, the ratio baseline / this, and on the same filters the R^2 of this
census minus the baseline's (filters lower by > 1e-6, higher by > 1e-6). The machine is
shared: the load average is printed before and after; compare ratios, which are measured
side by side.

Usage::

    python benchmarks/bench_family_census.py
    python benchmarks/bench_family_census.py --n 2048 --threads 1 --families njet1 oriented2
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

from bench_census import extract_baseline, finish, uptime  # noqa: E402
from family_reference import _planted  # noqa: E402

#: name -> family_census options
FAMILIES = {
    "njet1": {"family": "njet", "order": 1},
    "njet2": {"family": "njet", "order": 2},
    "njet4": {"family": "njet", "order": 4},
    "njet2a": {"family": "njet", "order": 2, "anisotropic": True},
    "oriented1": {"family": "oriented", "order": 1},
    "oriented2": {"family": "oriented", "order": 2},
}

#: run in a subprocess: argv = filters.npy, out.npz, threads, options (JSON)
CHILD = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
from scalespace_mk.analysis.jets import family_census
opts = json.loads(sys.argv[4])
y = np.load(sys.argv[1])
family_census(y[:64], progress=False, **opts)
t0, c0 = time.perf_counter(), time.process_time()
res = family_census(y, progress=False, **opts)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
np.savez(sys.argv[2], r2=res.r2)
print(json.dumps({"wall": wall, "cpu": cpu, "threads": torch.get_num_threads()}))
"""


def run_child(data: Path, out: Path, threads: int, opts: dict, pythonpath: str) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(data), str(out), str(threads), json.dumps(opts)],
        env=env,
        cwd=data.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"family census subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8192, help="white-noise filters (and as many planted)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--baseline-ref", default="f4b0623", help="git ref of the baseline")
    ap.add_argument("--json", help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    fig: dict = {"load_before": uptime(), "cpus": os.cpu_count(), "n": args.n, "rows": []}
    print(f"load average (1, 5, 15 min) before: {fig['load_before']} on {os.cpu_count()} CPUs")
    rng = np.random.default_rng(args.seed)
    sets = {
        "white": rng.standard_normal((args.n, 7, 7)),
        "planted": _planted(rng, args.n, 7, 0.5, 2.5),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        base = tmpd / "baseline"
        base.mkdir()
        extract_baseline(args.baseline_ref, base)
        for name, y in sets.items():
            np.save(tmpd / f"{name}.npy", y)
        print(
            f"{'family':10s} {'filters':8s} {'thr':>3s} {'this s':>8s} {'base s':>8s} "
            f"{'this s/M':>9s} {'base s/M':>9s} {'ratio':>6s}  R^2 this - base"
        )
        for fam in args.families:
            for name in sets:
                for threads in args.threads:
                    data = tmpd / f"{name}.npy"
                    new = run_child(data, tmpd / "new.npz", threads, FAMILIES[fam], str(ROOT))
                    old = run_child(data, tmpd / "old.npz", threads, FAMILIES[fam], str(base))
                    d = np.load(tmpd / "new.npz")["r2"] - np.load(tmpd / "old.npz")["r2"]
                    row = {
                        "family": fam,
                        "filters": name,
                        "threads": threads,
                        "this_s": new["wall"],
                        "baseline_s": old["wall"],
                        "this_cpu_s": new["cpu"],
                        "baseline_cpu_s": old["cpu"],
                        "ratio": old["wall"] / new["wall"],
                        "lower_1e-6": int((d < -1e-6).sum()),
                        "higher_1e-6": int((d > 1e-6).sum()),
                        "max_lower": float(max(-d.min(), 0.0)),
                    }
                    fig["rows"].append(row)
                    per = 1e6 / args.n
                    print(
                        f"{fam:10s} {name:8s} {threads:3d} {new['wall']:8.2f} {old['wall']:8.2f} "
                        f"{new['wall'] * per:9.1f} {old['wall'] * per:9.1f} "
                        f"{row['ratio']:5.1f}x  lower by >1e-6: {row['lower_1e-6']}, higher: "
                        f"{row['higher_1e-6']} (largest drop {row['max_lower']:.1e})",
                        flush=True,
                    )
    return finish(fig, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
