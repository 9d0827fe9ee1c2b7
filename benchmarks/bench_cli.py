"""Start-up time of the command line against ``python -c pass``, in one run.

Times (median of ``--repeat`` runs after one warm-up, wall clock, each a fresh
interpreter, byte-code cached as in an installed package) ``python -c pass``
(the baseline: interpreter start and site packages), ``scalespace-mk --help``, every
``SUBCOMMAND --help`` and an argument error (``census`` with no file: exit 2), run as
``python -m scalespace_mk.cli`` from this checkout and, when installed, through the
``scalespace-mk`` console script next to the interpreter. Prints each time, its excess
over the baseline and whether it meets the 0.5 s target; also lists the heavy modules
(torch, numpy, scipy, sympy, matplotlib) that building all parsers imports (none expected).

Usage::

    python benchmarks/bench_cli.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.5
HEAVY = ("torch", "numpy", "scipy", "sympy", "matplotlib")
#: the CLI's own share of the start: timed inside a fresh interpreter
INNER = """
import time
t = time.perf_counter()
import scalespace_mk.cli as cli
parser = cli.build_parser()
parser.format_help()
for command in parser._subparsers._group_actions[0].choices.values():
    command.format_help()
print(time.perf_counter() - t)
"""


def timed(cmd: list[str], repeat: int, env: dict[str, str]) -> tuple[float, int]:
    times, rc = [], 0
    subprocess.run(cmd, env=env, capture_output=True, check=False, cwd=ROOT)  # warm-up
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, check=False, cwd=ROOT)
        times.append(time.perf_counter() - t0)
        rc = proc.returncode
    return statistics.median(times), rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per command (median)")
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # as installed: byte-code cached (the first run of each command writes it)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.path.insert(0, str(ROOT))
    from scalespace_mk.cli import build_parser

    parser = build_parser()
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
    commands = sorted(parser._subparsers._group_actions[0].choices)  # noqa: SLF001

    py = sys.executable
    cases: list[tuple[str, list[str]]] = [("python -c pass (baseline)", [py, "-c", "pass"])]
    cli = [py, "-m", "scalespace_mk.cli"]
    cases.append(("scalespace-mk --help", [*cli, "--help"]))
    cases += [(f"{c} --help", [*cli, c, "--help"]) for c in commands]
    cases.append(("census (no file: exit 2)", [*cli, "census"]))
    script = Path(py).parent / "scalespace-mk"
    if script.exists():
        cases.append(("console script --help", [str(script), "--help"]))

    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"heavy modules imported by building every parser: {loaded or 'none'}")
    base = None
    worst = 0.0
    print(f"{'command':<34} {'median s':>9} {'- baseline':>11} {'rc':>3}  target <= {TARGET_S} s")
    for name, cmd in cases:
        t, rc = timed(cmd, args.repeat, env)
        if base is None:
            base = t
            print(f"{name:<34} {t:>9.3f} {'':>11} {rc:>3}")
            continue
        worst = max(worst, t)
        ok = "ok" if t <= TARGET_S else "OVER"
        print(f"{name:<34} {t:>9.3f} {t - base:>+11.3f} {rc:>3}  {ok}")
    inner = []
    for _ in range(args.repeat):
        proc = subprocess.run([py, "-c", INNER], env=env, capture_output=True, text=True, cwd=ROOT)
        inner.append(float(proc.stdout.split()[-1]))
    print(
        f"inside the interpreter (import scalespace_mk.cli, build every parser, format every "
        f"help; median of {args.repeat}): {statistics.median(inner) * 1e3:.0f} ms"
    )
    print(
        f"slowest: {worst:.3f} s ({worst / base:.2f}x python -c pass); "
        f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
