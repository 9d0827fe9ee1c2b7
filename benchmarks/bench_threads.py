"""Thread settings on an idle and on a busy CPU: the package's default against the best count.

Two workloads, each timed in a fresh subprocess (so that the OpenMP settings take effect):

* ``analyze``: :func:`scalespace_mk.networks.checkpoint.analyze` of a ConvNeXt-T-sized
  checkpoint (``convnext_tiny`` at initialisation: 18 depthwise layers, 6,624 7x7 filters);
* ``train``: 20 optimizer steps (AdamW, forward + backward, batch 32, synthetic 64x64
  images, 10 classes) of ``convnextv2_atto``, after 2 warm-up steps.

Settings: ``torch default`` (no ``OMP_WAIT_POLICY``, torch's thread count: the behaviour
before the policy), ``package default`` (what the command line does: ``OMP_WAIT_POLICY=PASSIVE``
and torch's own thread count, one per core), and ``N threads`` (passive,
``--threads N``) for N = 1 .. cores. Conditions: ``idle`` (no process of ours competing;
other users' load is printed) and ``busy`` (a competing pure-Python busy loop that this
script starts, bounded to ``--busy-limit`` seconds and stopped at the end). Printed: seconds
per run, the best of ``--repeat`` runs per setting and condition (the settings alternate
run by run), and the ratio of the package default to the best explicit count
(target <= 1.2).

Usage::

    python benchmarks/bench_threads.py [--repeat 1] [--json threads.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time, json
work, threads, ckpt = sys.argv[1], sys.argv[2], sys.argv[3]
import torch
if threads not in ("torch", "default"):  # default: torch's own count, as the CLI leaves it
    from scalespace_mk._threads import set_threads
    set_threads(int(threads))
if work == "analyze":
    from scalespace_mk.networks.checkpoint import analyze
    t0 = time.perf_counter()
    res = analyze(ckpt, progress=False)
    dt = time.perf_counter() - t0
    n = len(res.filters)
else:
    from scalespace_mk.networks.convnext import create_model
    torch.manual_seed(0)
    model = create_model("convnextv2_atto", num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(32, 3, 64, 64)
    y = torch.randint(0, 10, (32,))
    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(20):
        step()
    dt = time.perf_counter() - t0
    n = 20
print(json.dumps({"seconds": dt, "n": n, "threads": torch.get_num_threads()}))
"""


def make_checkpoint(path: Path) -> None:
    import torch

    from scalespace_mk.networks.convnext import create_model

    torch.manual_seed(0)
    torch.save(create_model("convnext_tiny").state_dict(), path)


def run(work: str, setting: str, ckpt: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY"):
        env.pop(var, None)
    if setting != "torch":
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # what the command line sets before torch loads
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, work, setting, str(ckpt)],
        env=env,
        cwd=ckpt.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{work} / {setting} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs per setting (best is kept)")
    ap.add_argument("--busy-limit", type=float, default=900.0, help="busy process cap, s")
    ap.add_argument("--work", nargs="+", default=["analyze", "train"], help="workloads")
    ap.add_argument(
        "--no-torch-default",
        action="store_true",
        help="skip the 'torch default' runs (slow on a busy machine)",
    )
    ap.add_argument("--json", help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    settings = ["torch", "default", *[str(n) for n in range(1, cores + 1)]]
    if args.no_torch_default:
        settings.remove("torch")
    label = {"torch": "torch default", "default": "package default"}
    figures: dict = {"cores": cores, "load_before": load(), "runs": {}}
    print(f"{cores} usable cores; load average before: {figures['load_before']}")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "convnext_tiny.pt"
        make_checkpoint(ckpt)
        for condition in ("idle", "busy"):
            busy = None
            if condition == "busy":
                loop = (
                    f"import time\nt = time.time()\nwhile time.time() - t < {args.busy_limit}: pass"
                )
                busy = subprocess.Popen([sys.executable, "-c", loop])
            try:
                for work in args.work:
                    runs: dict[str, list[float]] = {s: [] for s in settings}
                    for _ in range(args.repeat):  # settings alternate: load drifts
                        for s in settings:
                            runs[s].append(run(work, s, ckpt)["seconds"])
                            print(
                                f"  {condition:<5} {work:<8} {label.get(s, s + ' threads'):<16} "
                                f"{runs[s][-1]:7.2f} s   (load {load()})"
                            )
                    times = {s: min(v) for s, v in runs.items()}
                    explicit = {s: t for s, t in times.items() if s.isdigit()}
                    best_s = min(explicit, key=explicit.get)
                    ratio = times["default"] / explicit[best_s]
                    before = times["torch"] / explicit[best_s] if "torch" in times else None
                    figures["runs"][f"{condition}/{work}"] = {
                        "seconds": times,
                        "all_runs": runs,
                        "best_explicit": best_s,
                        "default_over_best": ratio,
                        "torch_default_over_best": before,
                    }
                    extra = f"; torch default / best = {before:.2f}" if before else ""
                    print(
                        f"{condition:<5} {work:<8}: package default / best ({best_s} threads) = "
                        f"{ratio:.2f} [target <= 1.2]{extra}"
                    )
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    figures["load_after"] = load()
    print(f"load average after: {figures['load_after']}")
    if args.json:
        from scalespace_mk._io import atomic_path

        with atomic_path(args.json) as tmp_path:
            Path(tmp_path).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
