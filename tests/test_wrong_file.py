"""The wrong kind of file for a command: one line naming the right command, exit 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scalespace_mk.cli import main
from scalespace_mk.cli._args import file_kind


@pytest.fixture
def files(tmp_path):
    filters = tmp_path / "filters.npy"
    np.save(filters, np.random.default_rng(0).standard_normal((3, 7, 7)))
    npz = tmp_path / "filters.npz"
    np.savez(npz, filters=np.ones((2, 3, 3)))
    ckpt = tmp_path / "net.pt"
    torch.save(
        {"stages.0.dwconv.weight": torch.randn(4, 1, 7, 7), "head.weight": torch.eye(2)}, ckpt
    )
    return {"npy": str(filters), "npz": str(npz), "ckpt": str(ckpt)}


def test_file_kind(files, tmp_path):
    assert file_kind(files["npy"]) == "filters"
    assert file_kind(files["npz"]) == "filters"
    assert file_kind(files["ckpt"]) == "checkpoint"
    assert file_kind(str(tmp_path / "missing.pt")) == "unknown"
    assert file_kind("masterkey") == "unknown"


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0]
    assert "corrupt" not in err[0] and "weights_only" not in err[0]


@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_analyze_on_filters_names_census(files, capsys, kind):
    _one_line_error(capsys, ["analyze", files[kind]], "filter array", "scalespace-mk census")


def test_replace_and_eval_on_filters(files, capsys):
    _one_line_error(capsys, ["replace", files["npy"], "--out", "x.pt"], "scalespace-mk census")
    _one_line_error(capsys, ["eval", files["npy"], "--data", "builtin"], "scalespace-mk census")


def test_census_and_fit_on_a_checkpoint_name_analyze(files, capsys):
    _one_line_error(capsys, ["census", files["ckpt"]], "network checkpoint", "analyze")
    _one_line_error(capsys, ["fit", "--filters", files["ckpt"]], "network checkpoint", "analyze")


def test_eval_on_a_non_training_checkpoint(files, capsys):
    _one_line_error(
        capsys,
        ["eval", files["ckpt"], "--data", "builtin"],
        "not a scalespace_mk training",
        "analyze",
    )
