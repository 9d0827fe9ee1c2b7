"""scalespace_mk._io.atomic_path: file modes under the umask, temp naming, fsync, cleanup."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from scalespace_mk import _io
from scalespace_mk._io import atomic_path, file_mode, remove_stale_partials

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    saved = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(saved)


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX modes")
@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_outputs_get_the_mode_of_a_plain_open(tmp_path, umask, mask, expected):
    umask(mask)
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as fh:
        fh.write("x")
    out = tmp_path / "sub" / "result.npy"
    with atomic_path(out) as tmp:
        np.save(tmp, np.arange(3))
    assert stat.S_IMODE(out.stat().st_mode) == expected == stat.S_IMODE(plain.stat().st_mode)
    assert file_mode() == expected
    np.testing.assert_array_equal(np.load(out), np.arange(3))
    assert sorted(p.name for p in out.parent.iterdir()) == ["result.npy"]


def test_temp_name_is_recognisable_and_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "fit.png") as tmp:
        assert tmp.parent == tmp_path and tmp.exists()
        assert tmp.name.startswith(".fit.partial-") and tmp.suffix == ".png"
        assert _io._PARTIAL.match(tmp.name)
        tmp.write_bytes(b"png")
    assert (tmp_path / "fit.png").read_bytes() == b"png"


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    out = tmp_path / "a.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_fsync_before_rename_and_of_the_folder(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", fd)), real_fsync(fd)))
    monkeypatch.setattr(
        os, "replace", lambda a, b: (calls.append(("replace",)), real_replace(a, b))
    )
    with atomic_path(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"data")
    kinds = [c[0] for c in calls]
    assert kinds[:2] == ["fsync", "replace"]  # the file is on disk before it is renamed
    if not sys.platform.startswith("win"):
        assert kinds == ["fsync", "replace", "fsync"]  # then the folder entry


@pytest.mark.skipif(sys.platform.startswith("win"), reason="SIGKILL")
def test_killed_writer_leaves_a_temp_that_the_next_write_removes(tmp_path):
    """A writer killed mid-write leaves its .partial file; the next write cleans it up."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from scalespace_mk._io import atomic_path
        with atomic_path({str(tmp_path / "ckpt.pt")!r}) as tmp:
            tmp.write_bytes(b"half a checkpoint")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -9
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and _io._PARTIAL.match(left[0]) and not (tmp_path / "ckpt.pt").exists()
    with atomic_path(tmp_path / "other.json") as tmp:  # any write in that folder
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json"]


def test_cleanup_spares_live_writers_and_foreign_fresh_files(tmp_path):
    host = _io._host_id()
    other = "0000" if host != "0000" else "ffff"
    live = tmp_path / _io._partial_name("a", ".pt", host, os.getpid(), "abcdef")  # alive
    foreign_fresh = tmp_path / _io._partial_name("b", ".pt", other, 1, "abcdef")
    foreign_old = tmp_path / _io._partial_name("c", ".pt", other, 1, "abcdef")
    unrelated = tmp_path / ".d.partial-notours.pt"
    for p in (live, foreign_fresh, foreign_old, unrelated):
        p.write_bytes(b"x")
    old = os.path.getmtime(foreign_old) - _io.STALE_AFTER_S - 10
    os.utime(foreign_old, (old, old))
    assert remove_stale_partials(tmp_path) == [foreign_old]
    assert live.exists() and foreign_fresh.exists() and unrelated.exists()
