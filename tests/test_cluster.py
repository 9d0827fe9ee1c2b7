"""Cluster runs (issue 19): the start line comes first, one summary from rank 0, no DDP
stride warning, a warning for bf16 on a CPU, ``srun`` launches from SLURM's variables, and
SIGUSR1 / SIGTERM -> a checkpoint and a clean exit that ``--resume`` continues."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalespace_mk.training.train import TrainConfig, _first_host, slurm_environment, train

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--model", "convnextv2_test", "--image-size", "32", "--batch-size", "8"]


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SLURM_") and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    }
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_slurm_environment_maps_srun_variables():
    env = {
        "SLURM_PROCID": "3",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_NODELIST": "gpu[07-08,11],login1",
        "SLURM_JOB_ID": "123456",
    }
    got = slurm_environment(env)
    assert got == {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": str(29500 + 456),
    }
    assert (
        slurm_environment({**env, "MASTER_ADDR": "h", "MASTER_PORT": "1234"})["MASTER_PORT"]
        == "1234"
    )
    assert slurm_environment({**env, "WORLD_SIZE": "8"}) == {}  # torchrun's variables win
    batch_script = {k: v for k, v in env.items() if k != "SLURM_STEP_NUM_TASKS"}
    assert slurm_environment(batch_script) == {}  # no srun step: nothing to launch
    one = slurm_environment({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"})
    assert one == {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    with pytest.raises(ValueError, match="RANK"):
        slurm_environment({**env, "SLURM_PROCID": "x"})


@pytest.mark.parametrize(
    "nodes, first",
    [("node1", "node1"), ("a[1-3]", "a1"), ("a[09,12]", "a09"), ("x,a[1-2]", "x"), ("", None)],
)
def test_first_host_of_a_node_list(nodes, first):
    assert _first_host(nodes) == first


def test_bf16_on_cpu_warns(tmp_path):
    cfg = TrainConfig(
        model="convnextv2_test",
        data="synthetic:64",
        image_size=32,
        batch_size=8,
        epochs=1,
        amp="bf16",
        max_steps_per_epoch=1,
    )
    with pytest.warns(RuntimeWarning, match="--amp bf16 on a CPU"):
        train(cfg, tmp_path / "run", progress=False)


def _launch(rank: int, world: int, port: int, out: Path, *extra: str) -> subprocess.Popen:
    """One task as ``srun`` starts it: SLURM's variables, no torchrun."""
    env = _env(
        SLURM_PROCID=str(rank),
        SLURM_STEP_NUM_TASKS=str(world),
        SLURM_LOCALID=str(rank),
        SLURM_STEP_NODELIST="localhost",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    cmd = [sys.executable, "-m", "scalespace_mk", "train", *SMALL, "--out", str(out), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_srun_two_tasks_signal_checkpoint_and_resume(tmp_path):
    out = tmp_path / "run"
    args = ["--data", "synthetic:160", "--epochs", "2"]
    port = _free_port()
    procs = [_launch(r, 2, port, out, *args) for r in range(2)]
    log = out / "train.log"
    deadline = time.monotonic() + 240
    while not (log.exists() and "start:" in log.read_text()):  # rank 0 logs the start line
        assert time.monotonic() < deadline, "no start line"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.2)
    for p in procs:  # SLURM signals every task of the step
        p.send_signal(signal.SIGUSR1)
    results = [p.communicate(timeout=240) for p in procs]
    for p, (_stdout, stderr) in zip(procs, results, strict=True):
        assert p.returncode == 0, stderr[-3000:]
        assert "Grad strides do not match" not in stderr
    first = log.read_text().splitlines()[0]
    assert " start: model convnextv2_test" in first and "world size 2" in first
    assert "steps per epoch" in first and "threads" in first and str(out) in first
    assert "stopped by SIGUSR1" in results[0][0]
    assert results[1][0] == ""  # one summary: rank 0's
    assert (out / "last.pt").is_file() and not (out / "summary.json").exists()
    assert "stopped by SIGUSR1" in log.read_text()
    # the requeued job: the same command with --resume finishes the run
    port = _free_port()
    procs = [_launch(r, 2, port, out, *args, "--resume") for r in range(2)]
    results = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results[0][1][-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["final"]["epoch"] == 2
    assert "resumed" in log.read_text()
    assert results[0][0].count("after 2 epochs") == 1 and results[1][0] == ""


def test_sigterm_single_process_stops_cleanly(tmp_path):
    out = tmp_path / "one"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scalespace_mk",
            "train",
            *SMALL,
            "--data",
            "synthetic:160",
            "--epochs",
            "3",
            "--out",
            str(out),
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not ((out / "train.log").exists() and "start:" in (out / "train.log").read_text()):
        assert time.monotonic() < deadline and p.poll() is None, p.communicate()
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=240)
    assert p.returncode == 0, stderr[-3000:]
    assert "stopped by SIGTERM" in stdout
    assert (out / "last.pt").is_file() and not (out / "summary.json").exists()
