"""``scalespace-mk substitute`` end to end on a small MobileNetV2 and tiny photos, its errors,
and the study's figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scalespace_mk.cli import main

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from scalespace_mk.networks.mobilenet import MobileNetV2

    root = tmp_path_factory.mktemp("sub")
    torch.manual_seed(0)
    net = MobileNetV2(num_classes=10)
    torch.save(net.state_dict(), root / "net.pth")
    rng = np.random.default_rng(0)
    for i in range(4):
        arr = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
        PIL.fromarray(arr).save(root / f"p{i}.png")
    return root


def test_substitute_command_writes_json_and_figures(setup, capsys):
    out, plots = setup / "study.json", setup / "figs"
    code = main(
        [
            "substitute",
            str(setup / "net.pth"),
            "--arch",
            "mobilenet_v2",
            "--kind",
            "census,random",
            "--photos",
            f"folder:{setup}",
            "--crop-size",
            "32",
            "--scales",
            "1.0",
            "--seeds",
            "0,1",
            "--distill-steps",
            "2",
            "--distill-batch",
            "2",
            "--distill-kinds",
            "random",
            "--sensitivity-kinds",
            "census",
            "--progressive-kinds",
            "census",
            "--progressive-counts",
            "8",
            "--n-boot",
            "100",
            "--layers",
            "0:3",
            "--out",
            str(out),
            "--plot",
            str(plots),
            "--threads",
            "1",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    study = json.loads(out.read_text())
    assert study["schema"] == "scalespace_mk.substitution/1"
    census, rand = study["kinds"]
    assert len(census["layers"]) == 3  # --layers 0:3
    assert census["runs"][0]["distilled"] is None
    assert [r["seed"] for r in rand["runs"]] == [0, 1]
    assert rand["runs"][1]["distilled"]["curve"][-1]["step"] == 2
    assert [r["n"] for r in census["progressive"]["first"]] == [0, 3]  # 8 capped at 3
    assert rand["sensitivity"] is None and len(census["sensitivity"]) == 3
    assert study["photos"]["calibration"]["photos"] == 2
    assert {p.name for p in plots.iterdir()} == {
        "progressive.png",
        "sensitivity.png",
        "recovery.png",
    }
    assert "top1_agreement" in captured.out and "census" in captured.out
    assert "substitute: census" in captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "bogus"], "kind must be one of"),
        (["--distill-steps", "2", "--distill-eval", "5"], "--distill-eval"),
        (["--scales", "0,1"], "--scales"),
        (["--eval-fraction", "1.5"], "--eval-fraction"),
    ],
)
def test_substitute_errors_name_the_option(setup, capsys, args, message):
    code = main(["substitute", str(setup / "net.pth"), "--arch", "mobilenet_v2", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_bad_option_values_are_parser_errors(setup, capsys):
    with pytest.raises(SystemExit):
        main(["substitute", "x", "--arch", "mobilenet_v2", "--seeds", "a"])
    assert "--seeds" in capsys.readouterr().err
