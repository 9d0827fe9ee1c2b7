"""The MobileNetV2 figures of docs/results.md cannot drift: each generated block of the page
is the rendering of docs/statistics.json (experiments/statistics_real.py), and the
random-network check's recorded numbers come back from a fresh analysis of one layer."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "experiments"))

import statistics_real  # noqa: E402

STATS = json.loads((DOCS / "statistics.json").read_text())
PAGE = (DOCS / "results.md").read_text()


def test_results_md_blocks_are_the_rendering_of_the_json():
    blocks = statistics_real.results_blocks(STATS)
    assert set(blocks) == set(re.findall(r"^<!-- generated: ([\w-]+) -->$", PAGE, re.M))
    assert statistics_real.fill_blocks(PAGE, blocks) == PAGE


def test_the_per_layer_table_quotes_every_layer_of_the_json():
    """An independent reading of the table: one row per recorded layer, its numbers those of
    the JSON rounded as printed."""
    rows = [la for la in PAGE.splitlines() if la.startswith("| features.")]
    layers = STATS["runs"][0]["layers"]
    assert len(rows) == len(layers) == 17
    for row, la in zip(rows, layers, strict=True):
        nums = [float(x) for x in re.findall(r"\d+\.\d+", row)]
        pos = la["nulls"]["position"]
        assert nums == [
            round(la["median_r2"], 3),
            round(la["nulls"]["iid"]["null_median_r2"], 3),
            round(pos["null_median_r2"], 3),
            round(100 * la["share_r2_gt_0_8"], 1),
            round(100 * pos["null_share_r2_gt_0_8"], 1),
        ]
    assert sum(sum(la["types"].values()) for la in layers) == STATS["runs"][0]["filters"]


def test_fill_blocks_names_a_missing_marker():
    with pytest.raises(ValueError, match="generated: nowhere"):
        statistics_real.fill_blocks("text", {"nowhere": "x"})
    text = "a\n<!-- generated: b -->\nold\n<!-- end generated -->\nc\n"
    assert statistics_real.fill_blocks(text, {"b": "new"}) == text.replace("old", "new")


@pytest.mark.skipif(statistics_real.weights_path() is None, reason="MobileNetV2 weights absent")
def test_a_fresh_random_layer_gives_the_recorded_numbers():
    """Each random layer is drawn from (seed, index) alone: redrawing and analysing the
    first reproduces its recorded median R^2 and position-null median."""
    import torch

    from scalespace_mk.networks.checkpoint import analyze

    rc = STATS["random_check"]
    row = rc["networks"]["random"]["layers"][0]
    sd = torch.load(statistics_real.weights_path(), map_location="cpu", weights_only=True)
    w = statistics_real.random_layer(sd[row["name"]], 0, rc["seed"])
    res = analyze({row["name"]: w}, null="both", seed=rc["seed"], null_size=None, progress=False)
    la = res.layers[0]
    assert la["median_r2"] == pytest.approx(row["median_r2"], rel=1e-9)
    assert la["nulls"]["position"]["null_median_r2"] == pytest.approx(
        row["position_null_median_r2"], rel=1e-9
    )
    # and the random layer sits on its null, the trained one above it
    trained = rc["networks"]["trained"]["layers"][0]
    assert abs(row["median_r2"] - row["position_null_median_r2"]) < 0.15
    assert trained["median_r2"] > trained["position_null_median_r2"]


def test_the_fashion_mnist_part_is_the_rendering_of_results_json():
    """The top part of the page (everything before the MobileNetV2 section) is what
    experiments/report.py renders from docs/results.json (``publish`` without figures)."""
    import report

    res = json.loads((DOCS / "results.json").read_text())
    command = PAGE.splitlines()[2].split("`")[1]
    top = report.render_markdown(res, dict(report.FIGURES), "figures", command)
    assert PAGE == top + "\n" + report._kept_sections(PAGE)
    assert command.startswith("python experiments/masterkey_real.py")


def test_the_reading_holds_for_the_recorded_numbers():
    """What the reading says of the generated figures: every layer's median above both of
    its nulls; type 8 the most frequent type in the stride-2 layers and the last; the random
    network on its null, the trained one above it."""
    layers = STATS["runs"][0]["layers"]
    for la in layers:
        assert la["median_r2"] > la["nulls"]["iid"]["null_median_r2"], la["name"]
        assert la["median_r2"] > la["nulls"]["position"]["null_median_r2"], la["name"]
    s2 = [la for la in layers if la["name"].split(".conv")[0] in statistics_real.STRIDE2]
    assert len(s2) == 4
    for la in [*s2, layers[-1]]:
        assert max(la["types"], key=la["types"].get) == "8", la["name"]
    rc = STATS["random_check"]["networks"]
    for st in rc["random"]["stages"]:
        assert abs(st["median_r2"] - st["position_null_median_r2"]) < 0.02
    for st in rc["trained"]["stages"]:
        assert st["median_r2"] - st["position_null_median_r2"] > 0.2
