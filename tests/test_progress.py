"""Progress output: plain lines off a terminal, nothing when disabled, items unchanged."""

from __future__ import annotations

import io

import pytest

from scalespace_mk._progress import log_line, progress, stream_is_terminal


def test_plain_lines_off_a_terminal(monkeypatch):
    clock = iter(range(0, 1000, 10))  # every call advances 10 s
    monkeypatch.setattr("scalespace_mk._progress.time.monotonic", lambda: next(clock))
    buf = io.StringIO()
    out = list(progress(range(5), desc="census", unit="filter", every=25, stream=buf))
    assert out == [0, 1, 2, 3, 4]
    lines = buf.getvalue().splitlines()
    assert lines[0] == "census: 0/5 filters"
    assert lines[-1].startswith("census: done, 5 filters in")
    middle = lines[1:-1]
    assert middle and all("ETA" in line and "filter/s" in line for line in middle)
    assert not stream_is_terminal(buf)


def test_disabled_and_unknown_total():
    buf = io.StringIO()
    assert list(progress(iter("ab"), desc="x", enabled=False, stream=buf)) == ["a", "b"]
    assert buf.getvalue() == ""
    list(progress(iter("ab"), desc="x", stream=buf))
    assert buf.getvalue().splitlines()[0] == "x: 0 its"


def test_bad_every_and_log_line():
    with pytest.raises(ValueError, match="every"):
        list(progress([1], desc="x", every=0, stream=io.StringIO()))
    buf = io.StringIO()
    log_line("epoch 1\n", stream=buf)
    assert buf.getvalue() == "epoch 1\n"
