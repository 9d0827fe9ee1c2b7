"""The census against its own results at commit fb56db7 (before the issue-21 changes to its
internals), stored in tests/data/census_reference_fb56db7.npz: same best types and R^2 within
1e-6 on a seeded reference set (1,500 planted 7x7 master key filters with 2 % noise, 1,500
white-noise filters: ``bench_census.planted_filters(3000, seed=21)``; 300 white-noise 5x5
filters, ``default_rng(21)``, against types 1, 5, 7, 8, dxx, lap)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from scalespace_mk.analysis.census import census

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "data" / "census_reference_fb56db7.npz"


def test_census_equals_the_stored_reference():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_census import planted_filters

    ref = np.load(REF, allow_pickle=False)
    y, _ = planted_filters(3000, seed=21)
    res = census(y)
    assert np.array_equal(res.best, ref["best"])
    assert np.abs(res.r2_all - ref["r2"]).max() <= 1e-6
    y5 = np.random.default_rng(21).standard_normal((300, 5, 5))
    res5 = census(y5, types=(1, 5, 7, 8, "dxx", "lap"))
    assert np.array_equal(res5.best, ref["best5"])
    assert np.abs(res5.r2_all - ref["r2_5"]).max() <= 1e-6
