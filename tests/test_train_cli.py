"""Training options, logs off a terminal, resume to extend, damaged checkpoints, DDP errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from scalespace_mk.cli import build_parser, main
from scalespace_mk.networks.checkpoint import load_checkpoint_file
from scalespace_mk.training.train import TrainConfig, cosine_lr, train

CFG = TrainConfig(
    model="convnextv2_test",
    data="synthetic:64",
    image_size=32,
    batch_size=16,
    epochs=1,
    seed=1,
    log_every=1,
    ema_decay=0.5,
)


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    """A 1-epoch run (progress lines on a non-terminal stderr), then resumed to 2 epochs."""
    out = tmp_path_factory.mktemp("extend") / "run"
    logs = []
    for cfg, resume in ((CFG, False), (replace(CFG, epochs=2), True)):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            train(cfg, out, resume=resume, progress=True)
        logs.append(err.getvalue())
        if not resume:
            first = load_checkpoint_file(out / "last.pt")
    return out, logs, first


def test_log_lines_off_a_terminal(extended):
    out, (first, second), _ = extended
    lines = first.splitlines()
    assert " start: model convnextv2_test (--dwconv learned), device cpu" in lines[0]
    assert "4 steps per epoch x 1 epochs" in lines[0]  # the start line first (issue 19)
    lines = lines[1:]
    assert len(lines) == 5  # 4 steps (log_every 1) and the epoch line
    assert [line.split()[2:6] for line in lines[:4]] == [
        ["epoch", "1/1", "step", f"{s}/4"] for s in range(1, 5)
    ]
    assert all("images/s ETA" in line and "train_loss" in line for line in lines)
    assert "val_loss" in lines[-1] and "val_acc" in lines[-1] and "val_acc_ema" in lines[-1]
    assert "\r" not in first  # no bar off a terminal
    # train.log keeps the same lines, appended on resume
    assert (out / "train.log").read_text() == first + second
    assert "epochs 1 -> 2: the schedule now ends at step 8" in second


def test_resume_with_more_epochs_extends_the_run(extended):
    out, _, first = extended
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0] == json.loads(first["history"][0])  # epoch 1 kept as it was
    ckpt = load_checkpoint_file(out / "last.pt")
    assert ckpt["global_step"] == 8 and ckpt["epoch"] == 2
    assert TrainConfig.from_dict(ckpt["config"]).epochs == 2
    # the schedule of a 2-epoch run from step 4 on: warm-up over the first epoch (4 steps),
    # then the cosine to min_lr over 8 steps; the last step (7) used this rate
    peak = CFG.lr * CFG.batch_size / 256
    assert records[0]["lr"] == pytest.approx(peak)  # end of the 1-epoch warm-up
    assert records[1]["lr"] == pytest.approx(
        cosine_lr(7, total=8, warmup=4, peak=peak, floor=CFG.min_lr), rel=1e-12
    )
    # fewer epochs than already run, or another option that changes the run: refused
    with pytest.raises(ValueError, match="fewer than the 2 epochs"):
        train(replace(CFG, epochs=1), out, resume=True, progress=False)
    with pytest.raises(ValueError, match=r"--lr .*--mixup|--mixup.*--lr"):
        train(replace(CFG, epochs=3, lr=1e-3, mixup=0.1), out, resume=True, progress=False)


def test_eval_progress_off_a_terminal(extended, capsys):
    out, _, _ = extended
    assert main(["eval", str(out / "last.pt"), "--data", CFG.data, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["count"] == 64
    assert captured.err.splitlines()[0] == "eval: 0/1 batchs"
    assert captured.err.splitlines()[-1].startswith("eval: done, 1 batchs in")


@pytest.mark.parametrize(
    ("entry", "value", "message"),
    [
        ("rng", None, "'rng' is missing or damaged"),
        ("history", ["{not json"], "'history' is missing or damaged"),
        ("global_step", 3, "'global_step' .* do not fit"),
        ("optimizer", {"state": {}, "param_groups": []}, "'optimizer' is missing or damaged"),
        ("config", {"modle": "x"}, "'config' is missing or damaged"),
    ],
)
def test_resume_names_a_missing_or_damaged_entry(extended, tmp_path, entry, value, message):
    out, _, first = extended
    state = dict(first)
    if value is None:
        del state[entry]
    else:
        state[entry] = value
    (tmp_path / "run").mkdir()
    torch.save(state, tmp_path / "run" / "last.pt")
    with pytest.raises(ValueError, match=message) as info:
        train(CFG, tmp_path / "run", resume=True, progress=False)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max-steps-per-epoch", "-1"),
        ("max-steps-per-epoch", "0"),
        ("image-size", "3"),
        ("image-size", "100000"),
        ("seed", "99999999999999999999"),
        ("seed", "-1"),
        ("cutmix", "nan"),
        ("mixup", "-1"),
        ("label-smoothing", "1"),
        ("save-every-steps", "-1"),
        ("log-every", "-2"),
        ("workers", "-1"),
    ],
)
def test_cli_option_errors_are_one_line(tmp_path, capsys, option, value):
    argv = ["train", "--model", "convnextv2_test", "--data", "synthetic:16", "--epochs", "1"]
    argv += ["--out", str(tmp_path / "o")]
    assert main([*argv, f"--{option}", value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--{option} must be" in err, err
    assert not (tmp_path / "o").exists()


def test_api_option_errors_and_empty_out(tmp_path, capsys):
    for name, value in [
        ("max_steps_per_epoch", -1),
        ("image_size", 100000),
        ("seed", 10**20),
        ("cutmix", float("nan")),
        ("save_every_steps", -1),
    ]:
        with pytest.raises(ValueError, match=f"^{name} must be"):
            replace(CFG, **{name: value})
    with pytest.raises(ValueError, match="method must be one of"):
        replace(CFG, method="Z")
    # checkpoints written before 0.2.0 stored 0 for "no cap"
    assert TrainConfig.from_dict({"max_steps_per_epoch": 0}).max_steps_per_epoch is None
    with pytest.raises(ValueError, match="out must name the run folder"):
        train(CFG, "", progress=False)
    with pytest.raises(SystemExit) as info:  # argparse choices
        main(["train", "--method", "Z", "--out", str(tmp_path)])
    assert info.value.code == 2
    capsys.readouterr()
    assert main(["train", "--model", "convnextv2_test", "--out", ""]) == 2
    assert "out must name the run folder" in capsys.readouterr().err


def test_replace_from_a_checkpoint_of_another_model(tmp_path):
    from scalespace_mk.networks import create_model
    from scalespace_mk.training.train import build_model

    torch.save(create_model("convnextv2_test", num_classes=10).state_dict(), tmp_path / "a.pt")
    for kw in (
        dict(dwconv="masterkey", replace_from=str(tmp_path / "a.pt")),
        dict(init=str(tmp_path / "a.pt")),
    ):
        cfg = TrainConfig(model="convnextv2_atto", **kw)
        with pytest.raises(ValueError, match="does not fit model convnextv2_atto") as info:
            build_model(cfg, 10)
        assert "\n" not in str(info.value) and "another --model" in str(info.value)


def test_every_train_and_eval_option_has_help_with_default():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for command in ("train", "eval"):
        for action in sub.choices[command]._actions:
            if action.dest == "help":
                continue
            assert action.help, (command, action.option_strings)
            takes_value = action.nargs != 0 and not action.option_strings == []
            if takes_value and not action.required:
                assert "default" in action.help, (command, action.option_strings)


def test_distributed_errors_one_line_on_rank_zero(monkeypatch, capsys):
    from scalespace_mk.cli.train import _distributed_errors

    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, printed in (("0", 1), ("1", 0)):
        monkeypatch.setenv("RANK", rank)
        with pytest.raises(SystemExit) as info, _distributed_errors("train"):
            raise FileNotFoundError("no image folder /x")
        assert info.value.code == 2
        assert len(capsys.readouterr().err.splitlines()) == printed
    monkeypatch.setenv("RANK", "1")  # unexpected: one line on other ranks, exit 1
    with pytest.raises(SystemExit) as info, _distributed_errors("train"):
        raise KeyError("bug")
    assert info.value.code == 1 and "KeyError" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")  # ... and the traceback on rank 0
    with pytest.raises(KeyError), _distributed_errors("train"):
        raise KeyError("bug")


def test_two_process_gloo_data_error(tmp_path):
    """A missing data folder under torchrun: one line from rank 0, no traceback of ours."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    launch = "torch.distributed.run --nproc_per_node 2 --master_port 29519 -m scalespace_mk.cli"
    cmd = [sys.executable, "-m", *launch.split(), "train", "--model", "convnextv2_test"]
    cmd += ["--data", f"imagenet:{tmp_path / 'missing'}", "--out", str(tmp_path / "out")]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    ours = [line for line in res.stderr.splitlines() if line.startswith("scalespace-mk train")]
    assert len(ours) == 1 and "does not exist" in ours[0], res.stderr[-3000:]
    # torchrun's own summary follows: every rank exited with 2 (or was stopped by torchrun
    # once the first had); no frame of our code
    codes = re.findall(r"^\s*exitcode\s+:\s*(-?\d+)", res.stderr, re.MULTILINE)
    assert len(codes) == 2 and "2" in codes and set(codes) <= {"2", "-15"}, res.stderr[-3000:]
    assert "scalespace_mk/" not in res.stderr.replace("scalespace_mk.cli", "")


def test_a_failure_on_one_rank_is_raised_on_every_rank(monkeypatch):
    """Set-up failing on rank 1 only: rank 0 raises a ValueError naming it, waits for nothing."""
    import scalespace_mk.training.train as T

    def gather(into, value, failures=(None, "FileNotFoundError: no folder /data")):
        into[:] = list(failures)

    monkeypatch.setattr(T.dist, "all_gather_object", gather)
    with pytest.raises(ValueError, match=r"^rank 1 failed: FileNotFoundError: no folder /data$"):
        T._on_every_rank(T._Dist(rank=0, world=2), lambda: "built")

    def fail():
        raise FileNotFoundError("no folder /data")

    with pytest.raises(FileNotFoundError):  # the failing rank raises its own error
        T._on_every_rank(T._Dist(rank=1, world=2), fail)
    monkeypatch.setattr(T.dist, "all_gather_object", lambda into, value: None)
    assert T._on_every_rank(T._Dist(rank=0, world=2), lambda: "built") == "built"
