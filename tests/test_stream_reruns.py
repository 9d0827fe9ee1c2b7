"""Reruns of the streamed census (analysis.stream): a finished census rerun with the same
input and options computes nothing; other options, a changed input or --restart compute it
anew; one failing or killed rank of two stops both (no hang) naming the rank and the chunk,
and the same command then resumes from the chunks written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_stream import _env, _free_port  # the same child environment and port as there

from scalespace_mk.analysis import stream
from scalespace_mk.analysis.stream import census_stream, read_census

ROOT = Path(__file__).resolve().parents[1]


def _filters(n: int = 300, k: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, k, k))


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def _no_fitting(monkeypatch) -> None:
    def fail(*a, **k):
        raise AssertionError("a chunk was fitted")

    monkeypatch.setattr(stream, "_chunk_columns", fail)


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_rerun_of_a_finished_census_is_a_noop(tmp_path, monkeypatch, capsys, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    np.save(tmp_path / "f.npy", _filters())
    out = tmp_path / f"r{suffix}"
    first = census_stream(tmp_path / "f.npy", out, chunk_rows=100, null="iid", seed=3)
    assert not first.up_to_date and first.fitted_here == 3
    stamp, before = _stamp(out), read_census(out)
    capsys.readouterr()
    with monkeypatch.context() as m:
        _no_fitting(m)
        again = census_stream(tmp_path / "f.npy", out, chunk_rows=100, null="iid", seed=3)
    assert again.up_to_date and (again.fitted_here, again.resumed, again.rows) == (0, 3, 300)
    assert _stamp(out) == stamp  # not rewritten
    assert "already the census of this input with these options" in capsys.readouterr().err
    assert not (tmp_path / f"r{suffix}.parts").exists()
    # the manifest is stored with the columns, and reading the result is unchanged by it
    meta = stream._read_meta(out)
    assert meta["manifest"]["selection"] == [0, 300] and meta["manifest"]["seed"] == 3
    assert np.array_equal(read_census(out).r2_all, before.r2_all, equal_nan=True)
    assert before.manifest == meta["manifest"]
    assert before.manifest["input"]["files"][0]["path"] == str((tmp_path / "f.npy").resolve())


def test_other_options_or_a_changed_input_compute_anew(tmp_path, capsys):
    y = _filters()
    src, out = tmp_path / "f.npy", tmp_path / "r.npz"
    np.save(src, y)
    census_stream(src, out, chunk_rows=100)
    # other options: computed anew, and the log names what differs
    other = census_stream(src, out, chunk_rows=100, types=(1, 2, 3))
    assert not other.up_to_date and other.fitted_here == 3
    assert read_census(out).types == (1, 2, 3)
    err = capsys.readouterr().err
    assert "will be replaced" in err and "options.types" in err
    assert census_stream(src, out, chunk_rows=100, types=(1, 2, 3)).up_to_date
    # the same size and modification time, another value in the last chunk: the SHA-256 of
    # the first and last chunks tells
    st = src.stat()
    y2 = y.copy()
    y2[-1, 0, 0] += 1.0
    np.save(src, y2)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert src.stat().st_size == st.st_size and src.stat().st_mtime_ns == st.st_mtime_ns
    capsys.readouterr()
    changed = census_stream(src, out, chunk_rows=100, types=(1, 2, 3))
    assert not changed.up_to_date and changed.fitted_here == 3
    assert "input.sample_sha256" in capsys.readouterr().err
    r2_new = read_census(out).r2_all[-1]
    from scalespace_mk.analysis.census import census

    np.testing.assert_allclose(r2_new, census(y2[-1:], types=(1, 2, 3)).r2_all[0], atol=1e-12)
    # a touched input (other modification time) computes anew too
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert census_stream(src, out, chunk_rows=100, types=(1, 2, 3)).fitted_here == 3
    # --restart computes a finished census again
    forced = census_stream(src, out, chunk_rows=100, types=(1, 2, 3), restart=True)
    assert not forced.up_to_date and forced.fitted_here == 3
    # another selection of the same input
    part = census_stream(src, out, chunk_rows=100, types=(1, 2, 3), limit=150)
    assert part.fitted_here == 2 and len(read_census(out)) == 150


def test_a_result_without_a_manifest_is_computed_anew(tmp_path, capsys):
    src, out = tmp_path / "f.npy", tmp_path / "r.npz"
    np.save(src, _filters(120))
    np.savez(out, r2=np.zeros(3))  # some other .npz at the output path
    s = census_stream(src, out, chunk_rows=60)
    assert not s.up_to_date and s.fitted_here == 2 and len(read_census(out)) == 120
    assert "holds no record of its input and options" in capsys.readouterr().err


def test_cli_rerun_says_up_to_date(tmp_path, capsys):
    from scalespace_mk.cli import main

    np.save(tmp_path / "f.npy", _filters(80))
    cmd = ["census", str(tmp_path / "f.npy"), "--out", str(tmp_path / "r.npz"), "--null", "none"]
    assert main(cmd) == 0
    assert "written to" in capsys.readouterr().out
    assert main(cmd) == 0
    assert "is up to date" in capsys.readouterr().out
    assert main(cmd + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["up_to_date"] is True
    assert main(cmd + ["--json", "--restart"]) == 0
    assert json.loads(capsys.readouterr().out)["up_to_date"] is False


def test_one_process_failure_names_the_chunk_and_keeps_the_rest(tmp_path, monkeypatch, capsys):
    from scalespace_mk.analysis.sources import FilterSource

    y = _filters(250)
    np.save(tmp_path / "f.npy", y)
    out = tmp_path / "r.npz"
    read = FilterSource.read

    def broken(self, start, stop):
        if start == 150:
            raise OSError(5, "Input/output error")
        return read(self, start, stop)

    with monkeypatch.context() as m:
        m.setattr(FilterSource, "read", broken)
        with pytest.raises(OSError, match="Input/output"):
            census_stream(tmp_path / "f.npy", out, chunk_rows=50)
    err = capsys.readouterr().err
    assert "chunk 4 of 5 (rows 150..199) failed" in err and "3 of 5 chunk(s) are written" in err
    s = census_stream(tmp_path / "f.npy", out, chunk_rows=50)
    assert (s.resumed, s.fitted_here) == (3, 2)
    census_stream(tmp_path / "f.npy", tmp_path / "u.npz", chunk_rows=50)
    assert np.array_equal(read_census(out).r2_all, read_census(tmp_path / "u.npz").r2_all, True)


# --------------------------------------------------------------------------------------
# two gloo ranks, one of which fails

#: runs the CLI in a child; on rank 1, reading rows K_FAIL_ROW.. fails as K_FAIL_MODE says
_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from scalespace_mk.analysis import sources, stream
    mode, row = os.environ.get("K_FAIL_MODE", ""), int(os.environ.get("K_FAIL_ROW", "-1"))
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID"))
    if mode and rank == "1":
        read = sources.FilterSource.read
        def broken(self, start, stop):
            if start == row:
                if mode == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise OSError(5, "Input/output error")
            return read(self, start, stop)
        sources.FilterSource.read = broken
        if mode == "open":
            def cannot_open(*a, **k):
                raise OSError(2, "No such file or directory: the shard is not mounted here")
            stream.open_filters = cannot_open
    from scalespace_mk.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _two_ranks(tmp_path: Path, args: list[str], **extra: str) -> list[tuple[int, str, str]]:
    """Run the child on 2 gloo ranks (torchrun's variables); (returncode, stdout, stderr)."""
    child = tmp_path / "child.py"
    child.write_text(_CHILD)
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = _env(WORLD_SIZE="2", RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(child)] + args,
                env=dict(env, **extra),
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        outs = [p.communicate(timeout=90) for p in procs]  # a hang fails here
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p.returncode, o, e) for p, (o, e) in zip(procs, outs, strict=True)]


def _args(tmp_path: Path) -> list[str]:
    return ["census", str(tmp_path / "f.npy"), "--out", str(tmp_path / "d.npz")] + [
        "--chunk-rows",
        "50",
        "--null",
        "iid",
    ]


def _chunks(tmp_path: Path) -> dict[str, tuple[int, int]]:
    return {p.name: _stamp(p) for p in (tmp_path / "d.npz.parts").glob("chunk-*.npz")}


@pytest.mark.parametrize("mode", ["error", "kill"])
def test_a_failing_rank_stops_both_and_the_rerun_resumes(tmp_path, mode):
    pytest.importorskip("torch.distributed")
    np.save(tmp_path / "f.npy", _filters(250, seed=4))
    # chunk 4 of 5 (rows 150..199) belongs to rank 1 (chunks i with i % 2 == 1)
    runs = _two_ranks(tmp_path, _args(tmp_path), K_FAIL_MODE=mode, K_FAIL_ROW="150")
    codes = [r[0] for r in runs]
    assert all(c != 0 for c in codes), codes
    if mode == "error":  # both ranks say which rank failed, at which chunk, and what to do
        assert codes == [2, 2]
        for _, _, err in runs:
            line = err.strip().splitlines()[-1]
            assert "census failed on rank 1 of 2 at chunk 4 of 5 (rows 150..199)" in line
            assert "Input/output error" in line and "4 of 5 chunk(s) are written" in line
            assert "rerun the same command to resume" in line
    else:  # rank 1 died (SIGKILL): rank 0 says it lost it and what rank 1 left unfinished
        assert codes[1] == -9
        line = runs[0][2].strip().splitlines()[-1]
        assert "rank 0 of 2 lost contact with the other ranks" in line
        assert "rank 1 did not finish chunk 4 of 5 (rows 150..199)" in line
        assert "4 of 5 chunk(s) are written" in line
    written = _chunks(tmp_path)
    assert sorted(written) == [f"chunk-{s:012d}.npz" for s in (0, 50, 100, 200)]
    assert not (tmp_path / "d.npz").exists()
    if mode == "kill":  # resuming is the same after either (below, after the error)
        return
    # the cause fixed, the same command: resumes (the chunks written are not recomputed)
    runs = _two_ranks(tmp_path, _args(tmp_path) + ["--json", "--keep-parts"])
    assert [r[0] for r in runs] == [0, 0], [r[2][-1500:] for r in runs]
    info = json.loads(runs[0][1])
    assert info["resumed"] == 3 and info["chunks"] == 5  # rank 0's three were all done
    after = _chunks(tmp_path)
    assert {k: after[k] for k in written} == written and len(after) == 5
    census_stream(tmp_path / "f.npy", tmp_path / "s.npz", chunk_rows=50, null="iid")
    a, b = read_census(tmp_path / "d.npz"), read_census(tmp_path / "s.npz")
    for name in ("best", "r2_all", "sigma_x_all", "sigma_y_all", "a_all", "b_all"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    assert np.array_equal(a.null_r2["iid"], b.null_r2["iid"], equal_nan=True)
    # finished: the same command on two ranks again computes nothing
    stamp = _stamp(tmp_path / "d.npz")
    runs = _two_ranks(tmp_path, _args(tmp_path) + ["--json"])
    assert [r[0] for r in runs] == [0, 0], [r[2][-1500:] for r in runs]
    assert json.loads(runs[0][1])["up_to_date"] is True
    assert _stamp(tmp_path / "d.npz") == stamp


def test_a_rank_that_cannot_open_the_input_stops_both(tmp_path):
    # before the ranks joined first, rank 0 waited forever for a rank that had failed here
    pytest.importorskip("torch.distributed")
    np.save(tmp_path / "f.npy", _filters(100))
    runs = _two_ranks(tmp_path, _args(tmp_path), K_FAIL_MODE="open")
    assert [r[0] for r in runs] == [2, 2]
    for _, _, err in runs:
        line = err.strip().splitlines()[-1]
        assert "census failed on rank 1 of 2 opening the input" in line
        assert "not mounted here" in line
