"""docs/large_studies.md runs as written (at a smaller size): every command of its code blocks,
in order, in an empty folder; the multi-process result equals the single-process one."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "large_studies.md"


def _commands() -> list[str]:
    blocks = re.findall(r"```\n(.*?)```", DOC.read_text(), flags=re.S)
    lines = [ln.strip() for b in blocks for ln in b.splitlines()]
    return [ln for ln in lines if ln.startswith(("python ", "scalespace-mk ", "torchrun "))]


@pytest.mark.slow  # seven subprocesses (torch imports), torchrun with 2 ranks
def test_doc_commands_run(tmp_path):
    pytest.importorskip("pyarrow")
    cmds = _commands()
    assert len(cmds) >= 5 and any(c.startswith("torchrun") for c in cmds)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_"))}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    seen = set()
    for cmd in cmds:
        argv = shlex.split(cmd.replace("200000", "2000"))  # the doc's size, smaller
        again = cmd in seen  # the same census command again: a no-op that says so
        seen.add(cmd)
        if argv[0] == "scalespace-mk":
            argv = [sys.executable, "-m", "scalespace_mk.cli"] + argv[1:]
        elif argv[0] == "torchrun":
            argv = [sys.executable, "-m", "torch.distributed.run"] + argv[1:]
        else:
            argv[0] = sys.executable
        r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert r.returncode == 0, (cmd, r.stderr[-2000:])
        if argv[1:3] == ["-m", "scalespace_mk.cli"]:
            up_to_date = "is up to date" in r.stdout and "nothing computed" in r.stdout
            assert up_to_date == again, (cmd, r.stdout)
    from scalespace_mk.analysis.stream import read_census

    one, two = read_census(tmp_path / "big.parquet"), read_census(tmp_path / "big2.parquet")
    assert len(one) == 2000
    for name in ("best", "r2_all", "sigma_x_all", "sigma_y_all", "a_all", "b_all", "tss"):
        assert np.array_equal(getattr(one, name), getattr(two, name), equal_nan=True), name
