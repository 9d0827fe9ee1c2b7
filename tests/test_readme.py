"""The README works on a fresh machine with no network: its first command and its Python
snippet run in a subprocess with no data setting, an empty HOME and unreachable proxies."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
UNROUTABLE = "http://10.255.255.1:9"  # a reserved address: any download attempt fails


def _offline_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SCALESPACE_MK_") and k not in ("XDG_CACHE_HOME", "no_proxy")
    }
    home.mkdir()
    env.update(
        HOME=str(home),
        http_proxy=UNROUTABLE,
        https_proxy=UNROUTABLE,
        HTTP_PROXY=UNROUTABLE,
        HTTPS_PROXY=UNROUTABLE,
        PYTHONPATH=str(REPO),
        MPLBACKEND="Agg",
    )
    return env


def _run_offline(tmp_path: Path, argv: list[str]) -> subprocess.CompletedProcess:
    env = _offline_env(tmp_path / "home")
    kw = {"env": env, "cwd": tmp_path, "capture_output": True, "text": True, "timeout": 300}
    return subprocess.run([sys.executable, *argv], **kw)


def test_readme_has_exactly_two_setup_commands_first():
    block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(block) == 2
    assert block[0].endswith("scalespace-mk fit")


@pytest.mark.slow
def test_readme_first_command_offline(tmp_path):
    """``scalespace-mk fit`` prints the method-B table of the published 8, fully offline."""
    out = _run_offline(tmp_path, ["-m", "scalespace_mk.cli", "fit"])
    assert out.returncode == 0, out.stderr
    assert "method B" in out.stdout
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == [str(i) for i in range(1, 9)]
    assert rows[0][3:5] == ["0.6445", "0.5829"]  # the paper's method-B values of filter 1
    assert not any((tmp_path / "home").rglob("*"))  # nothing fetched or cached


@pytest.mark.slow
def test_readme_python_snippet_offline(tmp_path):
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    out = _run_offline(tmp_path, ["-c", code])
    assert out.returncode == 0, out.stderr
    assert "method C1" in out.stdout and len(out.stdout.splitlines()) >= 10
