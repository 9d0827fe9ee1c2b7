"""The master-key experiment on real data (smoke version): runs, analysis and report."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
VARIANTS = ("learned", "idealized", "learnable", "masterkey", "random")


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


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    pytest.importorskip("skimage")  # the smoke data: the builtin photographs
    out = tmp_path_factory.mktemp("masterkey_real")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, str(EXPERIMENTS / "masterkey_real.py"), "--smoke", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0 and "8Filters.txt" in proc.stderr:
        pytest.skip("the published filters are not available offline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_smoke_results_have_the_documented_fields(smoke):
    res = json.loads((smoke / "results.json").read_text())
    # the CI budget: under a minute of CPU (wall time depends on the machine's load)
    assert res["cpu_s"] <= 60.0, f"smoke experiment used {res['cpu_s']:.1f} s of CPU"
    assert isinstance(res["dataset"], str) and res["image_size"] == 32 and res["epochs"] == 1
    assert res["seeds"] == [0, 1]
    for name in VARIANTS:
        block = res["variants"][name]
        assert len(block["val_acc"]) == 2 and all(0 <= a <= 1 for a in block["val_acc"])
        assert block["mean"] == pytest.approx(np.mean(block["val_acc"]))
    assert "njet" in res["variants"]
    if res["variants"]["njet"] is None:
        assert "N-jet" in res["njet_reason"]
    for key in ("learned", "null_iid", "null_phase"):
        assert 0 <= res["census"][key]["median_r2"] <= 1
        assert 0 <= res["census"][key]["share_r2_gt_0_8"] <= 1
    md = (smoke / "results.md").read_text()
    for section in ("## Setup", "## Accuracy of the variants", "## Census of the learned"):
        assert section in md
    for name in ("accuracy", "census", "learned_vs_models", "extracted"):
        data = (smoke / "figures" / f"results_{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        assert f"(figures/results_{name}.png)" in md


def test_accuracy_table_matches_the_runs(smoke):
    res = json.loads((smoke / "results.json").read_text())
    md = (smoke / "results.md").read_text()
    rows = {r[0]: r for r in _table_rows(md, "| variant | depthwise filters")}
    for name in VARIANTS:
        accs = []
        for seed in (0, 1):
            lines = (smoke / f"{name}-seed{seed}" / "metrics.jsonl").read_text().splitlines()
            accs.append(json.loads(lines[-1])["val_acc"])
        assert res["variants"][name]["val_acc"] == accs
        cells = [float(c) for c in rows[name][2].split(",")]
        np.testing.assert_allclose(cells, 100 * np.array(accs), atol=5e-3)
    # the analytic variants freeze the depthwise kernels: fewer trainable parameters
    params = {n: res["variants"][n]["runs"][0]["trainable_parameters"] for n in VARIANTS}
    assert params["idealized"] < params["learned"] and params["masterkey"] < params["learned"]


def test_census_matches_a_recomputation(smoke):
    from scalespace_mk.analysis.census import census
    from scalespace_mk.networks.checkpoint import find_depthwise, load_checkpoint_file

    mk = _module("masterkey_real")
    res = json.loads((smoke / "results.json").read_text())
    state = load_checkpoint_file(smoke / "learned-seed1" / "last.pt")["model"]
    w = [v for k, v in find_depthwise(state).items() if k.startswith("stages.0.")]
    filters = np.concatenate([t.double().numpy()[:, 0] for t in w])
    stage0 = res["census"]["stages"]["0"]
    assert stage0["side"] == 8 and stage0["analysed"]
    got = stage0["seeds"]["1"]
    assert got["learned"]["filters"] == len(filters) == 8  # convnextv2_test: 8 channels
    assert got["learned"]["median_r2"] == pytest.approx(np.median(census(filters).r2), abs=1e-12)
    null, _ = mk.null_filters(filters, "phase", 10_000 * 1 + 1)
    assert got["null_phase"]["median_r2"] == pytest.approx(np.median(census(null).r2), abs=1e-12)
    # stages 1-3 (4, 2 and 1 px maps) are reported but not analysed
    assert not res["census"]["stages"]["3"]["analysed"]


def test_same_seed_same_machine_gives_identical_runs(smoke, tmp_path):
    """Retraining a run of the smoke experiment reproduces its weights bit for bit."""
    import torch

    from scalespace_mk.networks.checkpoint import load_checkpoint_file

    mk = _module("masterkey_real")
    for variant in ("learned", "learnable"):
        cfg = mk.train_config(mk.SMOKE, variant, 0, smoke)
        again = tmp_path / variant
        mk._train_one(asdict(cfg), str(again), False, False)
        a = load_checkpoint_file(smoke / f"{variant}-seed0" / "last.pt")["model"]
        b = load_checkpoint_file(again / "last.pt")["model"]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
        m1 = (smoke / f"{variant}-seed0" / "metrics.jsonl").read_text().splitlines()
        m2 = (again / "metrics.jsonl").read_text().splitlines()
        assert json.loads(m1[-1])["val_acc"] == json.loads(m2[-1])["val_acc"]


def test_publish_keeps_the_sections_of_other_analyses(smoke, tmp_path):
    report = _module("report")
    res = json.loads((smoke / "results.json").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    other = "## A real network: MobileNetV2 (ImageNet)\n\nTheir table.\n"
    (docs / "results.md").write_text("# old results\n\nstale text\n\n" + other)
    report.publish(smoke, res, docs, command="python experiments/masterkey_real.py --publish")
    text = (docs / "results.md").read_text()
    assert text.startswith("# Results: the master-key experiment on real data")
    assert "stale text" not in text and text.rstrip().endswith("Their table.")
    assert json.loads((docs / "results.json").read_text()) == res
    assert (docs / "figures" / "results_census.png").is_file()


# ------------------------------------------------------------------ pieces, no training


def test_interval_is_the_t_interval():
    from scipy import stats

    mk = _module("masterkey_real")
    x = [0.81, 0.84, 0.80]
    got = mk.interval(x)
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(x), scale=stats.sem(x))
    assert got["n"] == 3 and got["std"] == pytest.approx(np.std(x, ddof=1))
    np.testing.assert_allclose(got["ci95"], [lo, hi], rtol=1e-12)
    assert mk.separated({"ci95": [0.1, 0.2]}, {"ci95": [0.25, 0.3]})
    assert not mk.separated({"ci95": [0.1, 0.26]}, {"ci95": [0.25, 0.3]})


@pytest.mark.parametrize("k", [7, 8])
def test_null_filters_fallback_definitions(k):
    mk = _module("masterkey_real")
    h = np.random.default_rng(3).standard_normal((40, k, k)).cumsum(axis=1)  # smooth-ish
    iid = mk._null_filters_fallback(h, "iid", 5)
    assert iid.shape == h.shape
    assert abs(iid.mean()) < 0.1 and abs(iid.std() - 1) < 0.1
    phase = mk._null_filters_fallback(h, "phase", 5)
    assert phase.shape == h.shape and phase.dtype == np.float64
    # the power spectrum of every filter is kept exactly, the filter itself is not
    np.testing.assert_allclose(np.abs(np.fft.fft2(phase)), np.abs(np.fft.fft2(h)), atol=1e-9)
    assert np.abs(phase - h).max() > 0.1
    np.testing.assert_array_equal(phase, mk._null_filters_fallback(h, "phase", 5))
    assert not np.array_equal(phase, mk._null_filters_fallback(h, "phase", 6))
    with pytest.raises(ValueError, match="kind"):
        mk._null_filters_fallback(h, "shuffle", 0)


def test_feature_side():
    mk = _module("masterkey_real")
    assert mk.feature_side("stages.0.blocks.1.conv_dw.weight", 56) == 14
    assert mk.feature_side("model.stages.2.blocks.0.conv_dw.weight", 32) == 2
    assert mk.feature_side("stages.3.blocks.0.conv_dw.weight", 224) == 7
    with pytest.raises(ValueError, match="stages"):
        mk.feature_side("conv_dw.weight", 32)


def test_order_like_published_recovers_a_shuffled_copy():
    mk = _module("masterkey_real")
    pub = np.random.default_rng(1).standard_normal((8, 7, 7))
    perm = np.array([3, 0, 7, 5, 1, 6, 2, 4])
    gains = np.array([2.0, -0.5, 1.5, -3.0, 0.7, 1.0, -1.2, 0.9])
    shuffled = gains[:, None, None] * pub[perm] + 0.25
    ordered, got, corr = mk.order_like_published(shuffled, pub)
    np.testing.assert_array_equal(perm[got], np.arange(8))
    np.testing.assert_allclose(corr, 1.0, atol=1e-12)
    unit = pub.reshape(8, -1) - pub.reshape(8, -1).mean(axis=1, keepdims=True)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    np.testing.assert_allclose(ordered.reshape(8, -1), unit, atol=1e-12)


def test_builtin_decision_needs_structure_and_every_fit():
    mk = _module("masterkey_real")
    ok = {"census_r2": [0.9] * 8, "all_methods_fit": True, "fits": {"B": ["ok"] * 8}}
    assert mk.builtin_decision({"target_met": True}, ok) == {"replace": True, "reasons": []}
    bad = dict(ok, census_r2=[0.9] * 7 + [0.5], all_methods_fit=False)
    bad["fits"] = {"B": ["ok"] * 7 + ["no root"], "C1": ["ok"] * 8}
    got = mk.builtin_decision({"target_met": False}, bad)
    assert not got["replace"] and len(got["reasons"]) == 3
    assert "[8]" in got["reasons"][1] and "['B']" in got["reasons"][2]
