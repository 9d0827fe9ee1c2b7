"""The null levels quoted in docs/analysis.md cannot drift: the page's blocks are the
rendering of docs/null_levels.json (experiments/null_levels.py), and a fresh census of the
same seeded random filters gives the recorded numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "experiments"))

import null_levels  # noqa: E402
import statistics_real  # noqa: E402

RES = json.loads((DOCS / "null_levels.json").read_text())


def test_analysis_md_blocks_are_the_rendering_of_the_json():
    page = (DOCS / "analysis.md").read_text()
    blocks = null_levels.render(RES)
    assert statistics_real.fill_blocks(page, blocks) == page
    for body in blocks.values():
        assert body in page


def test_a_fresh_census_gives_the_recorded_levels():
    """Every size: same seeded filters, same census, same median and interval."""
    for rec in RES["levels"]:
        fresh = null_levels.level(rec["k"], rec["n"], RES["seed"])
        assert fresh["median_r2"] == pytest.approx(rec["median_r2"], rel=1e-6)
        assert fresh["ci_half_width"] == pytest.approx(rec["ci_half_width"], rel=1e-6)


def test_fewer_taps_give_a_higher_null_level():
    """What the page says: the i.i.d. null is the higher the fewer taps a filter has."""
    med = [x["median_r2"] for x in sorted(RES["levels"], key=lambda x: x["k"])]
    assert med == sorted(med, reverse=True)
    assert 0.0 < med[-1] < med[0] < 1.0


@pytest.mark.parametrize(
    ("page", "pattern"),
    [
        ("results.md", r"iid null's median is (\d\.\d+) there \(against (\d\.\d+)\s+for 7x7\)"),
        ("analysis.md", r"\((\d\.\d+) at 3x3 against (\d\.\d+) at\s+7x7"),
    ],
)
def test_other_pages_quote_the_recorded_levels(page, pattern):
    """Prose elsewhere that quotes the 3x3 and 7x7 levels rounds the recorded ones."""
    import re

    text = (DOCS / page).read_text()
    m = re.search(pattern, text)
    assert m, f"{page}: the sentence quoting the null levels moved; update this test"
    lv = {x["k"]: x["median_r2"] for x in RES["levels"]}
    for quoted, k in zip(m.groups(), (3, 7), strict=True):
        digits = len(quoted.split(".")[1])
        assert float(quoted) == round(lv[k], digits), (page, k)
