"""The small master-key experiment (smoke version) and the packaged builtin filters."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
DATA_FILES = REPO / "scalespace_mk" / "data_files"
VARIANTS = ("learned", "idealized-B", "learnable-B", "masterkey")


def _module(name: str):
    """Import a script of ``experiments/`` (not a package) by its file name."""
    if str(EXPERIMENTS) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS))
    return importlib.import_module(name)


def _table_rows(md: str, header_start: str) -> list[list[str]]:
    """Cells of the markdown table whose header line starts with ``header_start``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def _pct(cell: str) -> float:
    return float(cell.rstrip("%").strip()) / 100


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("masterkey_small")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        str(EXPERIMENTS / "masterkey_small.py"),
        "--smoke",
        "--out",
        str(out),
        "--no-progress",
        "--threads",
        "1",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_smoke_writes_report_within_budget(smoke):
    res = json.loads((smoke / "results.json").read_text())
    assert res["setup"]["name"] == "smoke"
    assert res["wall_s"] <= 60.0, f"smoke experiment took {res['wall_s']:.1f} s (> 60 s)"
    md = (smoke / "results.md").read_text()
    for section in ("## Setup", "## Accuracy of the variants", "## Census", "## Figures"):
        assert section in md
    for name in res["figures"].values():
        data = (smoke / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        assert f"(figures/{name})" in md


def test_accuracy_table_matches_metrics(smoke):
    md = (smoke / "results.md").read_text()
    rows = {r[0]: r for r in _table_rows(md, "| variant | depthwise filters")}
    assert set(rows) == set(VARIANTS)
    for name in VARIANTS:
        lines = (smoke / name / "metrics.jsonl").read_text().splitlines()
        history = [json.loads(line) for line in lines]
        assert len(history) == 1  # the smoke budget: one epoch
        row = rows[name]
        assert float(row[3]) == pytest.approx(history[-1]["val_acc"], abs=5e-5)
        assert float(row[4]) == pytest.approx(max(h["val_acc"] for h in history), abs=5e-5)
        assert float(row[5]) == pytest.approx(history[-1]["val_loss"], abs=5e-5)
        summary = json.loads((smoke / name / "summary.json").read_text())
        assert int(row[2].replace(",", "")) == summary["trainable_parameters"]
    # the analytic variants freeze the depthwise kernels: fewer trainable parameters
    learned = int(rows["learned"][2].replace(",", ""))
    assert int(rows["idealized-B"][2].replace(",", "")) < learned


def test_census_table_matches_recomputed_census(smoke):
    from scalespace_mk.networks.checkpoint import analyze, load_checkpoint_file

    state = load_checkpoint_file(smoke / "learned" / "last.pt")["model"]
    records = analyze(state, progress=False).filters
    r2 = np.array([r["r2"] for r in records])
    md = (smoke / "results.md").read_text()
    rows = {(r[0], r[1]): r for r in _table_rows(md, "| filters | set | count")}
    learned = rows[("all layers", "learned")]
    assert int(learned[2]) == len(records) == 8 + 16 + 32 + 64  # convnextv2_test channels
    assert _pct(learned[3]) == pytest.approx(np.mean(r2 > 0.8), abs=6e-4)
    assert float(learned[4]) == pytest.approx(np.median(r2), abs=6e-4)
    for t in range(1, 9):
        share = np.mean([r["type"] == t for r in records])
        assert _pct(learned[4 + t]) == pytest.approx(share, abs=6e-4)
    random = rows[("all layers", "random")]
    assert int(random[2]) == len(records)
    # i.i.d. Gaussian 7x7 filters: no model explains much of one (measured median ~0.11)
    assert _pct(random[3]) < 0.02 and 0.03 < float(random[4]) < 0.3
    # the first stage of the test network (8 channels, 8x8 maps) is reported on its own
    stage0 = rows[("stage 0 (8x8 px)", "learned")]
    assert int(stage0[2]) == 8


def test_extracted_filters_and_builtin_script_agree(smoke, tmp_path):
    ext = np.load(smoke / "extracted_filters.npy")
    assert ext.shape == (8, 7, 7)
    flat = ext.reshape(8, -1)
    np.testing.assert_allclose(flat.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(flat, axis=1), 1.0, atol=1e-12)
    md = (smoke / "results.md").read_text()
    digest = hashlib.sha256((smoke / "extracted_filters.npy").read_bytes()).hexdigest()
    assert f"`{digest}`" in md
    # the data-file script extracts the same filters from the same checkpoint
    make = _module("make_builtin_filters")
    ckpt = smoke / "learned" / "last.pt"
    args = ["--checkpoint", str(ckpt), "--out-dir", str(tmp_path), "--check-methods", "D1"]
    assert make.main(args) == 0
    made = np.load(tmp_path / "builtin_filters.npy")
    np.testing.assert_array_equal(made, ext)
    note = (tmp_path / "builtin_filters.md").read_text()
    sha = hashlib.sha256((tmp_path / "builtin_filters.npy").read_bytes()).hexdigest()
    assert f"`{sha}`" in note and "convnextv2_test" in note
    assert "| D1 | ok | ok |" in note  # the l2 fit always has a minimiser


def test_order_like_published_recovers_a_shuffled_copy():
    from scalespace_mk.analysis.filters import load_filters

    make = _module("make_builtin_filters")
    pub = load_filters()
    perm = np.array([3, 0, 7, 5, 1, 6, 2, 4])
    gains = np.array([2.0, -0.5, 1.5, -3.0, 0.7, 1.0, -1.2, 0.9])
    shuffled = gains[:, None, None] * pub[perm] + 0.25
    ordered, got, corr = make.order_like_published(shuffled, pub)
    np.testing.assert_array_equal(perm[got], np.arange(8))
    np.testing.assert_allclose(corr, 1.0, atol=1e-12)
    unit = pub.reshape(8, -1) - pub.reshape(8, -1).mean(axis=1, keepdims=True)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    np.testing.assert_allclose(ordered.reshape(8, -1), unit, atol=1e-12)


def test_feature_side():
    make = _module("make_builtin_filters")
    assert make.feature_side("stages.0.blocks.1.conv_dw.weight", 32) == 8
    assert make.feature_side("model.stages.2.blocks.0.conv_dw.weight", 32) == 2
    assert make.feature_side("stages.3.blocks.0.conv_dw.weight", 224) == 7
    with pytest.raises(ValueError, match="stages"):
        make.feature_side("conv_dw.weight", 32)


def test_shipped_builtin_filters():
    from scalespace_mk.analysis.filters import load_filters

    h = load_filters("builtin")
    assert h.shape == (8, 7, 7) and h.dtype == np.float64
    flat = h.reshape(8, -1)
    np.testing.assert_allclose(flat.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(flat, axis=1), 1.0, atol=1e-12)
    note = (DATA_FILES / "builtin_filters.md").read_text()
    digest = hashlib.sha256((DATA_FILES / "builtin_filters.npy").read_bytes()).hexdigest()
    assert re.search(rf"\| sha256 \| `{digest}` \|", note)
    assert "1, 2, 3, 4, 5, 6, 7, 8" in note
    # the provenance table's correlations with the published 8 are those of the file
    pub = load_filters()
    make = _module("make_builtin_filters")
    _, perm, corr = make.order_like_published(h, pub)
    np.testing.assert_array_equal(perm, np.arange(8))  # already in published order
    rows = _table_rows(note, "| slot / type")
    assert [int(r[0]) for r in rows] == list(range(1, 9))
    np.testing.assert_allclose([float(r[1]) for r in rows], corr, atol=6e-4)
