"""Training pipeline: metrics, resumption after a kill, distributed run, evaluation."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scalespace_mk.cli import main
from scalespace_mk.networks.checkpoint import load_checkpoint_file
from scalespace_mk.training.train import TrainConfig, cosine_lr, param_groups

DATA = "synthetic:96"
BASE = [
    "train",
    "--model",
    "convnextv2_test",
    "--data",
    DATA,
    "--image-size",
    "32",
    "--batch-size",
    "16",
    "--epochs",
    "2",
    "--augment",
    "light",
    "--mixup",
    "0.2",
    "--drop-path",
    "0.1",
    "--ema-decay",
    "0.9",
    "--no-progress",
    "--seed",
    "3",
]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = (
        str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    )
    return env


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_file(path)["model"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "full"
    assert main([*BASE, "--out", str(out)]) == 0
    return out


def test_metrics_and_checkpoint(uninterrupted):
    lines = (uninterrupted / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert {"epoch", "train_loss", "val_loss", "val_acc", "val_acc_ema"} <= set(r)
        assert math.isfinite(r["train_loss"]) and 0.0 <= r["val_acc"] <= 1.0
    ckpt = load_checkpoint_file(uninterrupted / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["step_in_epoch"] == 0
    assert TrainConfig.from_dict(ckpt["config"]).model == "convnextv2_test"
    summary = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["final"]["epoch"] == 2


def test_killed_run_resumes_to_identical_weights(uninterrupted, tmp_path):
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "scalespace_mk.cli",
        *BASE,
        "--out",
        str(out),
        "--save-every-steps",
        "1",
    ]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "last.pt"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # kill it in the middle of the second epoch
            if ckpt.exists():
                try:
                    state = load_checkpoint_file(ckpt)
                except ValueError:
                    state = None
                if state and state["epoch"] == 1 and state["step_in_epoch"] >= 2:
                    break
            if proc.poll() is not None:
                pytest.fail("the run finished before it could be killed")
            time.sleep(0.05)
        else:
            pytest.fail("no mid-epoch checkpoint appeared")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "summary.json").exists()
    assert main([*BASE, "--out", str(out), "--save-every-steps", "1", "--resume"]) == 0
    full, resumed = _weights(uninterrupted / "last.pt"), _weights(ckpt)
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    a = [json.loads(x) for x in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss", "val_acc", "val_acc_ema"):
            assert ra[key] == rb[key], key


def test_resume_refuses_other_config_and_overwrite(uninterrupted):
    with pytest.raises(FileExistsError):
        from scalespace_mk.training.train import train

        train(TrainConfig(model="convnextv2_test", data=DATA), uninterrupted)
    assert (
        main([*BASE, "--out", str(uninterrupted), "--resume", "--epochs", "3", "--lr", "1e-3"]) == 2
    )


def test_eval_cli(uninterrupted, capsys):
    assert main(["eval", str(uninterrupted / "last.pt"), "--data", DATA, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    last = json.loads((uninterrupted / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["acc"] == pytest.approx(last["val_acc"], abs=1e-12)
    # float32 logits summed over other batch sizes (128 here, 16 in training)
    assert result["loss"] == pytest.approx(last["val_loss"], rel=1e-5)
    assert main(["eval", str(uninterrupted / "last.pt"), "--data", DATA, "--ema"]) == 0


def test_two_process_gloo(tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "scalespace_mk.cli",
        "train",
        "--model",
        "convnextv2_test",
        "--data",
        DATA,
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1
    from scalespace_mk.training.datasets import build_dataset

    val_set, _ = build_dataset(DATA, split="val", image_size=32)
    assert records[0]["val_images"] == len(val_set)  # each image once over both ranks
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    # only rank 0 wrote: one checkpoint, no stray temporary files
    names = sorted(p.name for p in out.iterdir())
    assert names == [".lock", "last.pt", "metrics.jsonl", "summary.json"]


def test_schedule_and_groups():
    lrs = [cosine_lr(s, total=100, warmup=10, peak=1.0, floor=0.01) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.01, abs=1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    from scalespace_mk.networks import create_model

    cfg = TrainConfig(model="convnextv2_test", layer_decay=0.9)
    model = create_model("convnextv2_test", num_classes=10)
    groups = param_groups(model, cfg)
    for g in groups:
        for p in g["params"]:
            assert (g["weight_decay"] == 0) == (p.ndim <= 1)
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales[-1] == 1.0 and scales[0] == pytest.approx(0.9**13)


def test_config_errors():
    with pytest.raises(ValueError, match="dwconv"):
        TrainConfig(dwconv="magic")
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"modle": "x"})
    with pytest.raises(ValueError, match="replace_from"):
        TrainConfig(replace_from="x.pt")


@pytest.mark.parametrize("kind", ["masterkey", "idealized", "learnable"])
def test_convert_depthwise_reproduces_replacement(kind):
    from scalespace_mk.networks import create_model
    from scalespace_mk.networks.checkpoint import replace
    from scalespace_mk.training.train import convert_depthwise, deploy_state_dict

    torch.manual_seed(0)
    learned = create_model("convnextv2_test", num_classes=10)
    source = learned.state_dict()
    cfg = TrainConfig(model="convnextv2_test", dwconv=kind, replace_from="unused.pt")
    model = create_model("convnextv2_test", num_classes=10)
    summary = convert_depthwise(model, source, cfg)
    assert len(summary) == 4 and all(sum(v.values()) > 0 for v in summary.values())
    expected = replace(source, candidates="masterkey" if kind == "masterkey" else "B").checkpoint
    deployed = deploy_state_dict(model)
    for key, value in expected.items():
        if key.endswith("conv_dw.weight"):
            torch.testing.assert_close(deployed[key], value, atol=1e-6, rtol=0)
        if key.endswith("conv_dw.bias"):
            assert torch.equal(deployed[key], value)
    # the deployed state loads into an all-Conv2d network with the same outputs
    plain = create_model("convnextv2_test", num_classes=10)
    plain.load_state_dict(deployed)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    plain.eval()
    torch.testing.assert_close(model(x), plain(x), atol=1e-5, rtol=1e-5)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and "conv_dw" in n}
    if kind == "learnable":
        assert any("sigma" in n for n in trainable)
    else:
        assert not any(n.endswith("conv_dw.filters") for n in trainable)
