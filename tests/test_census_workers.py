"""The censuses' CPU workers: forked processes for large inputs, threads otherwise.

Processes and threads give identical results; a worker that dies is reported, not waited
for; Ctrl-C stops the workers with the census.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _interrupt import interrupt_when_ready

import scalespace_mk.analysis.census as C
import scalespace_mk.analysis.scale_search as S
import scalespace_mk.analysis.workers as W

REPO = Path(__file__).resolve().parents[1]
FORK = sys.platform == "linux"
pytestmark = pytest.mark.skipif(not FORK, reason="forked census workers run on Linux only")


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _filters(n: int, k: int = 5, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, k, k))


def test_processes_equal_threads_and_one_thread(monkeypatch, two_threads):
    y = _filters(1100)
    monkeypatch.setattr(W, "_PROCESSES", True)
    procs = C.census(y, batch_size=256)
    monkeypatch.setattr(W, "_PROCESSES", False)
    threads = C.census(y, batch_size=256)
    one = C.census(y, batch_size=256, num_threads=1)
    for name in ("best", "r2_all", "sigma_x_all", "sigma_y_all", "alpha_all", "a_all", "b_all"):
        a, b, c = (getattr(r, name) for r in (procs, threads, one))
        assert np.array_equal(a, b, equal_nan=True), name
        assert np.array_equal(a, c, equal_nan=True), name


def test_the_choice_of_workers(monkeypatch):
    monkeypatch.setattr(W, "_PROCESSES", None)
    assert not W.use_processes(10**6, 1)  # one thread: in this process
    assert not W.use_processes(W.PROCESS_MIN_ROWS - 1, 2)  # small: threads
    assert W.use_processes(W.PROCESS_MIN_ROWS, 2)
    monkeypatch.setattr(W, "_PROCESSES", False)
    assert not W.use_processes(10**6, 2)


def test_a_worker_that_dies_is_reported_not_waited_for(monkeypatch, two_threads):
    original = S._fit_chunk

    def dying(tps, objs, yf, *args, **kw):
        if os.getpid() != parent and yf.shape[0] < 256:  # the last (short) chunk
            os.kill(os.getpid(), signal.SIGKILL)
        return original(tps, objs, yf, *args, **kw)

    parent = os.getpid()
    monkeypatch.setattr(S, "_fit_chunk", dying)
    monkeypatch.setattr(W, "_PROCESSES", True)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="worker process died"):
        C.census(_filters(700), batch_size=256)
    assert time.monotonic() - t0 < 60


def _alive(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_ctrl_c_stops_the_workers(tmp_path):
    marker = f"census-workers-test-{os.getpid()}-{time.monotonic_ns()}"
    code = textwrap.dedent(
        f"""
        # {marker}
        import numpy as np, torch
        import scalespace_mk.analysis.census as C
        import scalespace_mk.analysis.workers as W
        torch.set_num_threads(2)
        W._PROCESSES = True
        y = np.random.default_rng(0).standard_normal((400000, 7, 7))
        print("ready", flush=True)
        try:
            C.census(y, batch_size=4096)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """
    )

    def workers_busy() -> None:
        time.sleep(3.0)  # the workers are forked and busy
        assert len(_alive(marker)) >= 2

    _, out, err = interrupt_when_ready(code, tmp_path, before=workers_busy)
    assert "interrupted" in out, err
    deadline = time.monotonic() + 10
    while _alive(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(marker) == []


@pytest.mark.parametrize("family, order", [("njet", 2), ("oriented", 2)])
def test_family_census_processes_equal_threads(monkeypatch, two_threads, family, order):
    y = _filters(700, k=7, seed=4)
    monkeypatch.setattr(W, "_PROCESSES", True)
    procs = C.census(y, family=family, order=order, batch_size=256)
    monkeypatch.setattr(W, "_PROCESSES", False)
    threads = C.census(y, family=family, order=order, batch_size=256)
    for name in ("sigma_x", "sigma_y", "coefficients", "b", "r2"):
        assert np.array_equal(getattr(procs, name), getattr(threads, name)), name


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork")
def test_shared_zeros_are_written_by_forked_workers():
    """Arrays of shared_zeros start at zero and carry what forked workers write (the 8-type
    census's results travel this way); without processes they are plain arrays."""
    shape = (5000, 3, 2)
    a = W.shared_zeros(shape, True)
    assert a.shape == shape and a.dtype == np.float64 and not a.any()

    def fill(i: int) -> int:
        a[i * 1000 : (i + 1) * 1000] = i + 1.5
        return i

    with W.Workers([fill], 2, True) as pool:
        assert list(pool.map(fill, ((i,) for i in range(5)))) == list(range(5))
    assert np.array_equal(a[:, 0, 0], np.repeat(np.arange(5) + 1.5, 1000))
    plain = W.shared_zeros((3, 4), False)
    assert type(plain) is np.ndarray and plain.shape == (3, 4) and not plain.any()
