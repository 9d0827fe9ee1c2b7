"""docs/statistics.md cannot drift: it is the rendering of docs/statistics.json, the numbers
of that file come back from a fresh analysis, and the MobileNetV2 numbers quoted in
docs/results.md are those of the file."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "experiments"))

import statistics_real  # noqa: E402

STATS = json.loads((DOCS / "statistics.json").read_text())


def test_markdown_is_the_rendering_of_the_json():
    assert (DOCS / "statistics.md").read_text() == statistics_real.render_markdown(STATS)


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


@pytest.mark.skipif(statistics_real.weights_path() is None, reason="MobileNetV2 weights absent")
def test_a_fresh_analysis_gives_the_recorded_numbers():
    """Each layer's nulls, ceilings, identifiability and population measures depend only on
    the seed and the layer's name: analysing the first layer alone reproduces its row."""
    import torch

    sd = torch.load(statistics_real.weights_path(), map_location="cpu", weights_only=True)
    row = STATS["runs"][0]["layers"][0]
    fresh = statistics_real.analyse({row["name"]: sd[row["name"]]}, STATS["runs"][0]["seed"])
    _close(fresh["layers"][0], row)


def _quoted(text: str, label: str) -> list[float]:
    line = next(la for la in text.splitlines() if la.startswith(f"| {label}"))
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+", line)]


def test_results_md_quotes_the_recorded_mobilenet_numbers():
    text = (DOCS / "results.md").read_text()
    run = {r["seed"]: r for r in STATS["runs"]}
    s0 = run[0]
    assert _quoted(text, "learned filters") == [
        round(s0["median_r2"], 3),
        round(100 * s0["share_r2_gt_0_8"], 1),
    ]
    for label, kind in (("iid null", "iid"), ("position null", "position")):
        c = s0["nulls"][kind]
        assert _quoted(text, label) == [
            round(c["null_median_r2"], 3),
            round(100 * c["null_share_r2_gt_0_8"], 1),
        ]
    # the seed-1 line
    s1 = run[1]["nulls"]
    line = next(la for la in text.splitlines() if "With seed 1 the nulls are" in la)
    nums = [float(x) for x in re.findall(r"\d+\.\d+", line)]
    assert nums[:4] == [
        round(s1["iid"]["null_median_r2"], 3),
        round(s1["position"]["null_median_r2"], 3),
        round(100 * s1["iid"]["null_share_r2_gt_0_8"], 1),
        round(100 * s1["position"]["null_share_r2_gt_0_8"], 1),
    ]
    assert np.isfinite(nums).all()
