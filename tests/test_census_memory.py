"""The census's memory estimate against measured peaks (VmHWM over the imports, in a fresh
process): never below the measurement, and not far above it, for several kernel sizes and
sigma_max; an input whose tables alone pass the budget is refused before any work."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
import numpy as np, torch
from scalespace_mk.analysis.census import census
def hwm():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
k, smax, n = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
base = hwm()
census(np.random.default_rng(0).standard_normal((n, k, k)), sigma_max=smax)
print(json.dumps({"used": hwm() - base, "threads": torch.get_num_threads()}))
"""


@pytest.mark.slow  # three fresh processes building census tables
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("k, smax, n", [(7, 3.5, 4000), (11, 5.5, 1500), (9, 8.0, 800)])
def test_estimate_holds_against_measured_peak(k, smax, n):
    from scalespace_mk.analysis.scale_search import _census_memory
    from scalespace_mk.analysis.types import DEFAULT_TYPES, parse_model_types

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(k), str(smax), str(n)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    rows = min(8192, n)
    threads = min(got["threads"], math.ceil(n / rows))
    fixed, per = _census_memory(parse_model_types(DEFAULT_TYPES), k, smax, n, rows, threads)
    est = fixed + per * rows
    print(k, smax, n, "estimate MB", est / 2**20, "measured MB", got["used"] / 2**20)
    assert est >= got["used"], (est / 2**20, got["used"] / 2**20)
    assert est <= 2.5 * got["used"] + 150 * 2**20, (est / 2**20, got["used"] / 2**20)


def test_refused_up_front(monkeypatch):
    from scalespace_mk import limits
    from scalespace_mk.analysis.census import census

    monkeypatch.setenv(limits.MEMORY_BUDGET_ENV, "200M")
    y = np.random.default_rng(0).standard_normal((4, 31, 31))
    with pytest.raises(ValueError, match="sigma_max"):
        census(y)  # the 31x31 tables need more than 200 MB: refused before they are built
