"""Census throughput: a million 7x7 filters against today's census and a per-filter scipy fit.

In one run, on seeded filters:

1. **this census** on ``--n`` filters (default 1,000,000, all 8 types) of two sets, the
   half-planted set below and white noise, in a subprocess with the default threads
   (``torch.get_num_threads()``), for each ``--workers`` kind (``auto``: the census's own
   choice, forked processes on Linux for large inputs; ``threads``; ``processes``), and the
   baseline census on ``--baseline-n`` filters of each set when asked: wall seconds and per
   million (targets: 30 s half-planted, 60 s white noise), CPU seconds (user + system of the
   process and its joined workers), filters per CPU-second, peak resident memory of the
   process and of its largest worker;
2. **equality** on a reference set (the first ``--ref-n`` filters, default 20,000): this
   census against the **baseline census** (the package at ``--baseline-ref``, default
   ``f4b0623``, release 0.3.0, extracted with ``git archive`` into a
   temporary folder and run in a subprocess with that folder first on ``PYTHONPATH``):
   same best type, R^2 of every filter and type within ``1e-6``; and both timed on that
   set on one thread, which gives the per-core speed-up;
3. **scipy**: :func:`scalespace_mk.analysis.census.reference_fit` (L-BFGS-B per filter and
   type, the same objective) on ``--scipy-n`` filters (default 12), extrapolated per filter.

Planted filters: a master key model (types 1-8, sigma in [0.4, 2.5], alpha in [0.2, 2]) of
unit norm plus 2 % white noise, times a gain in [0.5, 3] plus an offset. The machine is
shared: ``uptime`` is printed before and after; compare CPU-second rates when it is loaded.

Usage::

    python benchmarks/bench_census.py                     # 1,000,000 filters
    python benchmarks/bench_census.py --baseline-n 1000000  # the baseline on the million too
    python benchmarks/bench_census.py --n 100000 --ref-n 5000 --scipy-n 4
    python benchmarks/bench_census.py --json census.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: run in a subprocess: census of the filters in argv[1], results to argv[2], stats on stdout
CHILD = r"""
import json, os, resource, sys, time
import numpy as np, torch
threads, workers = int(sys.argv[3]), sys.argv[4]
if threads:
    torch.set_num_threads(threads)
from scalespace_mk.analysis.census import census
if workers != "auto":
    try:  # this package: force threads or forked processes
        import scalespace_mk.analysis.scale_search as search
        search._PROCESSES = workers == "processes"
    except ImportError:  # a baseline from before the workers: threads only
        pass
y = np.load(sys.argv[1], mmap_mode="r")
census(np.ascontiguousarray(y[:64]))  # tables, caches
t0, c0 = time.perf_counter(), os.times()
res = census(np.ascontiguousarray(y))
wall, c1 = time.perf_counter() - t0, os.times()
# CPU of this process and of its (joined) worker processes
cpu = sum(c1[i] - c0[i] for i in range(4))
np.savez(sys.argv[2], best=res.best, r2=res.r2_all)
# VmHWM: the peak resident set of this program (ru_maxrss would keep the parent's
# high-water mark across fork + exec); the largest worker's peak (shares the parent's pages)
status = open("/proc/self/status").read().split("VmHWM:")
peak = int(status[1].split()[0]) / 1024.0 if len(status) > 1 else float("nan")
worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": peak, "worker_peak_mb": worker,
                  "threads": torch.get_num_threads()}))
"""


def planted_filters(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``[n, 7, 7]`` filters: even rows planted (types 1-8, returned; 0 = white noise)."""
    import torch

    from scalespace_mk.scalespace.models import masterkey_model

    rng = np.random.default_rng(seed)
    kind = rng.integers(1, 9, n)
    kind[1::2] = 0
    sx, sy = rng.uniform(0.4, 2.5, n), rng.uniform(0.4, 2.5, n)
    alpha = rng.uniform(0.2, 2.0, n)
    g = rng.standard_normal((n, 7, 7))
    with torch.no_grad():
        for t in range(1, 9):
            m = kind == t
            if t == 7:
                g[m] = masterkey_model(7, sx[m], alpha=alpha[m])
            else:
                g[m] = masterkey_model(t, sx[m], sy[m])
    planted = kind > 0
    g[planted] /= np.linalg.norm(g[planted].reshape(-1, 49), axis=1)[:, None, None]
    g[planted] += 0.02 * rng.standard_normal(g[planted].shape)
    gain = rng.uniform(0.5, 3.0, n)[:, None, None]
    return gain * g + rng.normal(0.0, 0.1, n)[:, None, None], kind


def run_child(path: Path, out: Path, threads: int, pythonpath: str, workers: str = "auto") -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(out), str(threads), workers],
        env=env,
        cwd=path.parent,  # not the checkout: `-c` puts the working directory first on sys.path
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"census subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def extract_baseline(ref: str, dest: Path) -> None:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "scalespace_mk"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def uptime() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def finish(fig: dict, json_path: str | None) -> int:
    """Record and print the load average after the run; write ``fig`` to ``json_path``
    (atomically) when given. Returns 0, the exit status."""
    fig["load_after"] = uptime()
    print(f"load average after: {fig['load_after']}")
    if json_path:
        from scalespace_mk._io import atomic_path

        with atomic_path(json_path) as tmp_path:
            Path(tmp_path).write_text(json.dumps(fig, indent=2))
    return 0


TARGETS = {"planted": 30.0, "noise": 60.0}  # seconds per million on the idle 2-core machine


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="filters timed (default 1e6)")
    ap.add_argument("--ref-n", type=int, default=20_000, help="reference set (default 2e4)")
    ap.add_argument("--scipy-n", type=int, default=12, help="filters fitted by scipy")
    ap.add_argument("--baseline-ref", default="f4b0623", help="git ref of the baseline")
    ap.add_argument(
        "--baseline-n", type=int, default=0, help="filters the baseline times too (0: none)"
    )
    ap.add_argument("--threads", type=int, default=0, help="threads of run 1 (0: default)")
    ap.add_argument(
        "--workers",
        default="auto,threads",
        help="comma-separated worker kinds timed: auto (the census's choice), threads, processes",
    )
    ap.add_argument("--json", help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    fig: dict = {"load_before": uptime(), "cpus": os.cpu_count(), "n": args.n, "runs": []}
    fig["baseline"] = args.baseline_ref
    print(f"load average (1, 5, 15 min) before: {fig['load_before']} on {os.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        y, kind = planted_filters(max(args.n, args.ref_n))
        sets = {
            "planted": y[: args.n],
            "noise": np.random.default_rng(6).standard_normal((args.n, 7, 7)),
        }
        for name, arr in sets.items():
            np.save(tmpd / f"{name}.npy", arr)
        np.save(tmpd / "ref.npy", y[: args.ref_n])
        ours_path = str(ROOT)
        base_dir = tmpd / "baseline"
        base_dir.mkdir()
        extract_baseline(args.baseline_ref, base_dir)

        # 1. the million, half planted and white noise, per worker kind (and the baseline)
        runs = [(w, ours_path) for w in args.workers.split(",")]
        if args.baseline_n:
            runs.append(("baseline", str(base_dir)))
        for name in sets:
            for workers, root in runs:
                path = tmpd / f"{name}.npy"
                if workers == "baseline" and args.baseline_n < args.n:
                    np.save(tmpd / f"{name}_b.npy", sets[name][: args.baseline_n])
                    path = tmpd / f"{name}_b.npy"
                kind_ = "auto" if workers == "baseline" else workers
                big = run_child(path, tmpd / "out.npz", args.threads, root, kind_)
                n = args.baseline_n if workers == "baseline" else args.n
                per_m = big["wall"] * 1e6 / n
                big.update(data=name, workers=workers, n=n, wall_per_million=per_m)
                fig["runs"].append(big)
                who = f"baseline {args.baseline_ref}" if workers == "baseline" else "this census"
                print(
                    f"{who}, {name}, {n:,} filters x 8 types, {big['threads']} threads, "
                    f"workers {workers}: {big['wall']:.1f} s wall = {per_m:.1f} s per million "
                    f"({n / big['cpu']:,.0f} filters per CPU-second); peak memory "
                    f"{big['peak_mb']:,.0f} MB (largest worker {big['worker_peak_mb']:,.0f} MB)"
                    + (
                        f"   [target <= {TARGETS[name]:.0f} s per million]"
                        if name in TARGETS
                        else ""
                    ),
                    flush=True,
                )
        # 2. equality and per-core speed on the reference set
        new = run_child(tmpd / "ref.npy", tmpd / "ref_new.npz", 1, ours_path)
        old = run_child(tmpd / "ref.npy", tmpd / "ref_old.npz", 1, str(base_dir))
        a, b = np.load(tmpd / "ref_new.npz"), np.load(tmpd / "ref_old.npz")
        d_r2 = a["r2"] - b["r2"]
        fig["reference"] = {
            "n": args.ref_n,
            "new_1thread": new,
            "baseline_1thread": old,
            "type_mismatches": int((a["best"] != b["best"]).sum()),
            "r2_lower_by_1e-6": int((d_r2 < -1e-6).sum()),
            "r2_higher_by_1e-6": int((d_r2 > 1e-6).sum()),
            "max_abs_dr2": float(np.abs(d_r2).max()),
            "planted_recovered": float(
                (a["best"] + 1 == kind[: args.ref_n])[kind[: args.ref_n] > 0].mean()
            ),
        }
        r = fig["reference"]
        print(
            f"reference set {args.ref_n:,} filters (half planted), one thread: this census "
            f"{new['cpu']:.2f} s CPU, baseline ({args.baseline_ref}) {old['cpu']:.2f} s CPU: "
            f"speed-up {old['cpu'] / new['cpu']:.2f}x per core "
            f"(wall {old['wall'] / new['wall']:.2f}x)"
        )
        print(
            f"  equality: best type differs for {r['type_mismatches']} filters; R^2 (all "
            f"filters x types) lower by > 1e-6: {r['r2_lower_by_1e-6']}, higher by > 1e-6: "
            f"{r['r2_higher_by_1e-6']}, max |dR^2| {r['max_abs_dr2']:.1e}; planted type "
            f"recovered {r['planted_recovered']:.4f}"
        )

    # 3. scipy per filter
    from scalespace_mk.analysis.census import reference_fit

    t0 = time.perf_counter()
    for i in range(args.scipy_n):
        for t in range(1, 9):
            reference_fit(y[i], t)
    per = (time.perf_counter() - t0) / max(args.scipy_n, 1)
    ours_per = fig["runs"][0]["wall"] / fig["runs"][0]["n"]
    fig["scipy_s_per_filter"] = per
    print(
        f"scipy reference_fit (L-BFGS-B, 8 types): {per * 1e3:.0f} ms per filter "
        f"({args.n * per / 3600:.1f} h for {args.n:,}); "
        f"this census is {per / ours_per:,.0f}x faster"
    )
    return finish(fig, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
