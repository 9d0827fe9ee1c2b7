"""The command line starts fast: building every parser imports no torch, numpy, scipy or
sympy; the names the parsers read from the source match the imported ones; the thread
policy of ``scalespace_mk._threads``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from scalespace_mk import _threads
from scalespace_mk.cli import build_parser
from scalespace_mk.cli._args import source_constant, source_fields

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "scipy", "sympy", "matplotlib", "PIL")

PROBE = """
import json, sys
import scalespace_mk.cli as cli
parser = cli.build_parser()
for args in (["census", "--help"], ["train", "--help"], ["census"], ["fit", "--types", "9", "f"]):
    try:
        parser.parse_args(args)
    except SystemExit:
        pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_building_the_parsers_imports_no_heavy_module():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "scalespace_mk" in loaded
    assert not loaded & set(HEAVY), f"--help / argument errors import {loaded & set(HEAVY)}"


def test_source_names_match_the_imported_ones():
    from scalespace_mk.analysis.fit import METHODS as FIT_METHODS
    from scalespace_mk.scalespace.bank import DEFAULT_MODELS
    from scalespace_mk.scalespace.kernels import METHODS
    from scalespace_mk.training.train import PRESETS, TrainConfig

    assert source_constant("analysis.fit", "METHODS") == FIT_METHODS
    assert source_constant("scalespace.kernels", "METHODS") == METHODS
    assert source_constant("scalespace.bank", "DEFAULT_MODELS") == DEFAULT_MODELS
    assert list(source_constant("training.train", "PRESETS")) == list(PRESETS)
    assert source_fields("training.train", "TrainConfig") == tuple(
        (f.name, str(f.type)) for f in fields(TrainConfig)
    )
    with pytest.raises(LookupError, match="NO_SUCH"):
        source_constant("analysis.fit", "NO_SUCH")


def test_every_command_has_threads():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"census", "analyze", "train", "fit"} <= set(commands)
    for name, command in commands.items():
        assert any("--threads" in a.option_strings for a in command._actions), name
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--out", "x", "--threads", "0"])


def test_thread_policy(monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert _threads.default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert _threads.default_threads() == _threads.usable_cores() >= 1
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    _threads.prepare_environment()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    _threads.prepare_environment()  # a user's choice stays
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    before = torch.get_num_threads()
    try:
        assert _threads.set_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        _threads.set_threads(0)
