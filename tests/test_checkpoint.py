"""Checkpoint tools: finding, replacing, extracting and analysing depthwise filters."""

from __future__ import annotations

import json
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from scalespace_mk.analysis.filters import load_filters
from scalespace_mk.cli import main
from scalespace_mk.networks.checkpoint import (
    analyze,
    candidate_filters,
    extract,
    find_depthwise,
    linear_shift_replace,
    load_checkpoint_file,
    replace,
    save_checkpoint_file,
)
from scalespace_mk.scalespace.models import masterkey_model


def _state(rng: np.random.Generator, channels=(6, 10)) -> OrderedDict:
    sd = OrderedDict()
    sd["stem.0.weight"] = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    for i, c in enumerate(channels):
        w = rng.normal(size=(c, 1, 7, 7)).astype(np.float32)
        sd[f"stages.{i}.blocks.0.conv_dw.weight"] = torch.from_numpy(w)
        sd[f"stages.{i}.blocks.0.conv_dw.bias"] = torch.zeros(c)
        sd[f"stages.{i}.blocks.0.mlp.fc1.weight"] = torch.ones(4 * c, c)
    sd["head.fc.weight"] = torch.ones(10, 4)
    return sd


def test_find_depthwise_nested_and_only_depthwise():
    sd = _state(np.random.default_rng(0))
    found = find_depthwise({"model": sd, "epoch": 3})
    assert list(found) == [
        "model.stages.0.blocks.0.conv_dw.weight",
        "model.stages.1.blocks.0.conv_dw.weight",
    ]
    assert found["model.stages.1.blocks.0.conv_dw.weight"].shape == (10, 1, 7, 7)


def test_replacement_is_least_squares_optimum():
    rng = np.random.default_rng(1)
    cands = candidate_filters("masterkey")
    np.testing.assert_allclose(cands.reshape(8, -1).mean(1), 0, atol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(cands.reshape(8, -1), axis=1), 1, atol=1e-14)
    w = rng.normal(size=(40, 7, 7))
    new, choice, a, b = linear_shift_replace(w, cands)
    for i in range(len(w)):
        y = w[i].ravel()
        best = np.inf
        for j in range(8):
            design = np.stack([cands[j].ravel(), np.ones(49)], axis=1)
            coef, *_ = np.linalg.lstsq(design, y, rcond=None)
            res = np.sum((design @ coef - y) ** 2)
            if res < best:
                best, best_j, best_coef = res, j, coef
        assert choice[i] == best_j
        np.testing.assert_allclose([a[i], b[i]], best_coef, atol=1e-12)
        np.testing.assert_allclose(np.sum((new[i].ravel() - y) ** 2), best, rtol=1e-10)


def test_replace_keeps_layout_and_round_trips(tmp_path):
    sd = _state(np.random.default_rng(2))
    path = tmp_path / "ckpt.pt"
    save_checkpoint_file({"model": sd, "epoch": 7}, path)
    out = tmp_path / "new.pt"
    result = replace(path, out=out)
    new = load_checkpoint_file(out)
    assert list(new) == ["model", "epoch"] and new["epoch"] == 7
    assert list(new["model"]) == list(sd)
    for key, t in sd.items():
        assert new["model"][key].dtype == t.dtype and new["model"][key].shape == t.shape
        if "conv_dw.weight" not in key:
            assert torch.equal(new["model"][key], t)
    # every new depthwise filter is a * x_j + b of a master key filter
    cands = candidate_filters("masterkey")
    w_new = new["model"]["stages.1.blocks.0.conv_dw.weight"][:, 0].double().numpy()
    centred = w_new - w_new.mean(axis=(1, 2), keepdims=True)
    cos = np.abs(centred.reshape(10, -1) @ cands.reshape(8, -1).T) / np.linalg.norm(
        centred.reshape(10, -1), axis=1, keepdims=True
    )
    np.testing.assert_allclose(cos.max(axis=1), 1.0, atol=1e-6)
    assert sum(result.totals().values()) == 16
    # the input object is untouched
    assert not torch.equal(
        sd["stages.1.blocks.0.conv_dw.weight"], new["model"]["stages.1.blocks.0.conv_dw.weight"]
    )


def test_replace_safetensors(tmp_path):
    sd = _state(np.random.default_rng(3))
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint_file(dict(sd), path)
    replace(path, out=tmp_path / "new.safetensors")
    new = load_checkpoint_file(tmp_path / "new.safetensors")
    assert set(new) == set(sd)


def test_replace_with_fitted_candidates_differs_from_masterkey():
    sd = _state(np.random.default_rng(4), channels=(5,))
    learned = replace(sd, candidates="masterkey").checkpoint
    ideal = replace(sd, candidates="B").checkpoint
    key = "stages.0.blocks.0.conv_dw.weight"
    assert not torch.allclose(learned[key], ideal[key])
    # idealised type-8 candidate is the normalised model of filter 8 fitted by method B
    cands = candidate_filters("B")
    g = masterkey_model(8, 0.6095, 0.6012)
    g = (g - g.mean()) / np.linalg.norm(g - g.mean())
    assert np.abs(cands[7] - g).max() < 2e-3


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_untrusted_checkpoint_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint_file(path)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="safetensors"):
        load_checkpoint_file(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError):
        load_checkpoint_file(tmp_path / "missing.pt")


def test_extract_recovers_planted_clusters():
    rng = np.random.default_rng(5)
    k = 8
    planted = rng.normal(size=(k, 49))
    planted -= planted.mean(1, keepdims=True)
    planted /= np.linalg.norm(planted, axis=1, keepdims=True)
    sizes = np.array([300, 250, 200, 150, 120, 100, 80, 50])
    labels = np.repeat(np.arange(k), sizes)
    a = rng.choice([-1, 1], size=len(labels)) * rng.uniform(0.2, 3, size=len(labels))
    b = rng.normal(size=len(labels))
    data = a[:, None] * planted[labels] + b[:, None] + 0.02 * rng.normal(size=(len(labels), 49))
    result = extract(data.reshape(-1, 7, 7), k=k, seed=0)
    got = result.filters.reshape(k, -1)
    cos = np.abs(got @ planted.T)
    assert np.all(cos.max(axis=0) > 0.995)
    # ordered by share, and the shares are the planted proportions
    np.testing.assert_allclose(result.share, sizes / sizes.sum(), atol=1e-12)
    match = np.argmax(cos, axis=1)
    assert np.array_equal(match, np.arange(k))
    assert result.explained > 0.95  # the added noise is up to a third of a weak filter


def test_extract_errors():
    with pytest.raises(ValueError, match="k"):
        extract(np.random.default_rng(0).normal(size=(3, 7, 7)), k=8)
    bad = np.random.default_rng(0).normal(size=(20, 7, 7))
    bad[4, 1, 1] = np.nan
    with pytest.raises(ValueError, match="filter 4"):
        extract(bad, k=2)


def _planted_checkpoint(rng):
    types = np.tile(np.arange(1, 9), 6)
    sx = rng.uniform(0.5, 1.5, size=len(types))
    sy = rng.uniform(0.5, 1.5, size=len(types))
    alpha = rng.uniform(0.3, 0.8, size=len(types))
    w = []
    for t, x, y, al in zip(types, sx, sy, alpha, strict=True):
        g = masterkey_model(int(t), x, None if t == 7 else y, alpha=al if t == 7 else None)
        w.append(rng.uniform(0.5, 2.0) * g + rng.normal() * 0.01)
    w = torch.tensor(np.stack(w))[:, None]
    return {"stages.0.blocks.0.conv_dw.weight": w, "head.fc.weight": torch.ones(3, 3)}, types


def test_analyze_recovers_planted_types():
    ckpt, types = _planted_checkpoint(np.random.default_rng(6))
    result = analyze(ckpt, progress=False)
    assert len(result.layers) == 1
    layer = result.layers[0]
    assert layer["channels"] == len(types)
    assert layer["types"] == {str(t): 6 for t in range(1, 9)}
    got = np.array([r["type"] for r in result.filters])
    assert np.array_equal(got, types)
    assert layer["median_r2"] > 0.999 and layer["share_r2_above_0.8"] == 1.0


def test_cli_analyze_replace_extract(tmp_path, capsys):
    ckpt, _ = _planted_checkpoint(np.random.default_rng(7))
    path = tmp_path / "c.pt"
    save_checkpoint_file(ckpt, path)
    assert main(["analyze", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["layers"][0]["name"] == "stages.0.blocks.0.conv_dw.weight"
    assert out["layers"][0]["channels"] == 48
    assert {"layer", "type", "r2", "a", "b"} <= set(out["filters"][0])
    assert main(["replace", str(path), "--out", str(tmp_path / "r.pt")]) == 0
    assert "candidate" in capsys.readouterr().out
    assert (tmp_path / "r.pt").is_file()
    assert main(["extract", str(path), "-k", "8", "--out", str(tmp_path / "m.npy")]) == 0
    m = np.load(tmp_path / "m.npy")
    assert m.shape == (8, 7, 7)
    np.testing.assert_allclose(np.linalg.norm(m.reshape(8, -1), axis=1), 1, atol=1e-12)
    # extracted filters can be used as masterkey candidates
    assert np.allclose(load_filters(str(tmp_path / "m.npy")), m)
    assert (
        main(
            [
                "replace",
                str(path),
                "--filters",
                str(tmp_path / "m.npy"),
                "--out",
                str(tmp_path / "r2.pt"),
            ]
        )
        == 0
    )
    assert main(["analyze", str(tmp_path / "missing.pt")]) == 2


def test_cli_plots(tmp_path, capsys):
    ckpt, _ = _planted_checkpoint(np.random.default_rng(8))
    path = tmp_path / "c.safetensors"
    save_checkpoint_file(ckpt, path)
    assert main(["analyze", str(path), "--plot", str(tmp_path / "figs")]) == 0
    table = capsys.readouterr().out
    assert "stages.0.blocks.0.conv_dw.weight" in table and "48 filters" in table
    for name in ("types_per_layer.png", "r2.png"):
        assert (tmp_path / "figs" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        main(
            [
                "extract",
                str(path),
                "-k",
                "4",
                "--out",
                str(tmp_path / "m.npy"),
                "--plot",
                str(tmp_path / "m.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
