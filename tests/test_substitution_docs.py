"""docs/substitution.md is rendered from docs/substitution.json (every number), the JSON has the
documented schema, and the renderer's comparisons are computed, not typed."""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DOC_JSON = REPO / "docs" / "substitution.json"
DOC_MD = REPO / "docs" / "substitution.md"


def _script():
    path = str(REPO / "experiments")
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("substitution_study")


def _check_schema(study, mod):
    assert set(study) == set(mod.SCHEMA_DOC), set(study) ^ set(mod.SCHEMA_DOC)
    assert study["schema"] == "scalespace_mk.substitution/1"
    agreements = []
    for entry in study["kinds"]:
        assert set(entry) == set(mod.KIND_DOC), set(entry) ^ set(mod.KIND_DOC)
        for run in entry["runs"]:
            agreements += [run["direct"]] + ([run["recalibrated"]] if run["recalibrated"] else [])
            if run["distilled"]:
                agreements += [
                    {k: v for k, v in p.items() if k != "step"} for p in run["distilled"]["curve"]
                ]
        for row in entry["sensitivity"] or []:
            agreements.append(
                {k: v for k, v in row.items() if k not in ("name", "index", "median_r2")}
            )
        for rows in (entry["progressive"] or {}).values():
            agreements += [{k: v for k, v in r.items() if k != "n"} for r in rows]
    assert agreements
    for a in agreements:
        assert set(a) == set(mod.AGREEMENT_DOC), set(a) ^ set(mod.AGREEMENT_DOC)
        for key in ("top1_agreement", "top5_overlap", "kl"):
            e = a[key]
            assert e["low"] <= e["value"] + 1e-12 and e["value"] <= e["high"] + 1e-12


@pytest.fixture(scope="module")
def tiny_study():
    from scalespace_mk.substitution.study import StudyConfig, run_study
    from scalespace_mk.training.photos import CropSet

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 1),
        nn.BatchNorm2d(6),
        nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 7),
    ).eval()

    class Photos:
        g = torch.Generator().manual_seed(0)
        calibration = CropSet(
            torch.randn(8, 3, 10, 10, generator=g), torch.arange(8) // 2, None, [None] * 4
        )
        evaluation = CropSet(
            torch.randn(8, 3, 10, 10, generator=g), torch.arange(8) // 2, None, [None] * 4
        )

        def manifest(self):
            return {
                "settings": {"seed": 0, "size": 10, "scales": [1.0], "grid": 1},
                "calibration": {"photos": 4, "crops": 8},
                "evaluation": {"photos": 4, "crops": 8},
                "photos": [],
            }

    cfg = StudyConfig(
        kinds=("njet:1", "masterkey", "noise", "random"),
        seeds=(0, 1),
        distill_steps=2,
        distill_batch=4,
        distill_kinds=("njet:1", "random"),
        n_boot=100,
        progressive_counts=(1,),
        options={"noise": {"fit": "njet:1"}},  # the census fit's tables take seconds
    )
    study = run_study(net, Photos(), cfg)
    study["run"] = {
        "command": "test",
        "equivalent_cli": "test",
        "wall_seconds": 1.0,
        "load_start": [0, 0, 0],
        "load_end": [0, 0, 0],
        "threads": 1,
        "cpu_count": 2,
    }
    return study


def test_tiny_study_has_the_documented_schema(tiny_study):
    _check_schema(tiny_study, _script())
    mk = next(e for e in tiny_study["kinds"] if e["kind"] == "masterkey")
    assert mk["layers"] == [] and len(mk["skipped"]) == 2  # 3x3: the master keys are 7x7


def test_rendered_numbers_come_from_the_json(tiny_study):
    mod = _script()
    md = mod.render(tiny_study)
    rows = [line for line in md.splitlines() if line.startswith("| noise |")]
    runs = next(e for e in tiny_study["kinds"] if e["kind"] == "noise")["runs"]
    vals = [r["direct"]["top1_agreement"]["value"] for r in runs]
    assert f"{sum(vals) / 2:.3f} (seeds {min(vals):.3f}-{max(vals):.3f})" in rows[0]
    assert "all layers skipped" in md  # masterkey on 3x3
    # a changed number changes the page
    changed = json.loads(json.dumps(tiny_study))
    changed["kinds"][0]["runs"][0]["direct"]["top1_agreement"]["value"] = 0.123456
    assert mod.render(changed) != md


@pytest.mark.skipif(not DOC_JSON.is_file(), reason="docs/substitution.json not published yet")
def test_published_page_is_the_rendering_of_the_published_json():
    mod = _script()
    study = json.loads(DOC_JSON.read_text())
    _check_schema(study, mod)
    figures = {
        n: c for n, c in mod.FIGURE_NAMES.items() if (REPO / "docs" / "figures" / n).is_file()
    }
    assert DOC_MD.read_text() == mod.render(study, figures)
    assert study["network"]["arch"] == "mobilenet_v2"
    assert len(study["config"]["seeds"]) >= 3
    # every figure the page shows exists
    for name in re.findall(r"\]\(figures/([^)]+)\)", DOC_MD.read_text()):
        assert (REPO / "docs" / "figures" / name).is_file()


def test_page_and_json_come_together():
    assert DOC_MD.is_file() == DOC_JSON.is_file()
