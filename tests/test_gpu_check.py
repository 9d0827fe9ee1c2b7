"""CI smoke test of ``benchmarks/gpu_check.py --device cpu --quick`` (toy sizes, no CUDA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_check(tmp_path, *extra: str) -> tuple[Path, subprocess.CompletedProcess]:
    """``gpu_check.py --device cpu --quick [extra] --out tmp_path/check`` on one thread; it
    must succeed. Returns the --out stem and the finished process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = tmp_path / "check"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick"]
        + [*extra, "--out", str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def test_gpu_check_quick_on_cpu(tmp_path):
    out, _ = _run_check(tmp_path)
    report = json.loads(out.with_suffix(".json").read_text())
    rows = report["rows"]
    assert {r["section"] for r in rows} == {
        "tests",
        "kernels",
        "census",
        "stream",
        "substitution",
        "layers",
        "training",
        "loader",
    }
    assert not [r for r in rows if r["value"] in ("error", "FAIL")]
    stream = {r["item"]: r["value"] for r in rows if r["section"] == "stream"}
    assert stream["rows written"] == 3000
    same = [r for r in rows if r["item"].endswith("same best type")]
    assert same and same[0]["value"] == 1.0  # cpu against cpu: identical
    # the substitution study ran (on the CPU only here): agreements with their intervals
    sub = {r["item"]: r for r in rows if r["section"] == "substitution"}
    agreements = [r for k, r in sub.items() if k.endswith("top-1 agreement, cpu")]
    assert len(agreements) == 4  # census and njet:1, direct and recalibrated
    for r in agreements:
        low, high = (float(t) for t in r["note"].split("[")[1].rstrip("]").split(","))
        assert 0.0 <= low <= r["value"] <= high <= 1.0, r
    assert sub["study wall time, cpu"]["value"] > 0
    assert sub["cpu vs cpu: same top-1 of the original"]["value"] == 1.0
    assert sub["cpu vs cpu: max |top-1 agreement difference|"]["value"] == 0.0
    rates = [r for r in rows if r["unit"] in ("kernels/s", "filters/s", "images/s")]
    assert len(rates) >= 8 and all(r["value"] > 0 for r in rates)
    md = out.with_suffix(".md").read_text()
    assert md.count("\n|") == len(rows) + 2  # header, rule, one line per row


def test_gpu_check_budget_skips_what_would_start_after_it(tmp_path):
    out, _ = _run_check(tmp_path, "--budget", "1e-9")
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert len(rows) == 9 and all(r["value"] == "skipped" for r in rows)
    assert all("--budget" in r["note"] for r in rows)
