"""The streamed census (analysis.stream): chunked inputs, column files, resume after SIGKILL,
two gloo ranks, and CensusResult's columns, table and DataFrame."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scalespace_mk.analysis.census import CensusResult, census
from scalespace_mk.analysis.stream import census_stream, open_filters, read_census

ROOT = Path(__file__).resolve().parents[1]


def _filters(n: int = 600, k: int = 5, seed: int = 0) -> np.ndarray:
    y = np.random.default_rng(seed).standard_normal((n, k, k))
    y[3] = 0.0  # zero
    y[4] = 1.5  # constant
    y[5, 1, 1] = np.nan  # non-finite
    return y


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_"))}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)
    return env


def _columns(path: Path) -> dict[str, np.ndarray]:
    return read_census(path, columns=None).to_columns() | {"index": read_census(path).index}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), key


def test_stream_equals_in_memory_census(tmp_path):
    y = _filters()
    np.save(tmp_path / "f.npy", y)
    s = census_stream(tmp_path / "f.npy", tmp_path / "r.npz", chunk_rows=250)
    assert (s.rows, s.chunks, s.fitted_here, s.resumed) == (600, 3, 3, 0)
    assert not (tmp_path / "r.npz.parts").exists()  # parts removed after the merge
    got, ref = read_census(tmp_path / "r.npz"), census(y)
    assert got.types == ref.types and np.array_equal(got.index, np.arange(600))
    assert np.array_equal(got.best, ref.best)
    assert list(got.reason[3:6]) == ["zero", "constant", "non-finite"]
    for name in ("sigma_x_all", "sigma_y_all", "alpha_all", "tss"):
        assert np.array_equal(getattr(got, name), getattr(ref, name), equal_nan=True), name
    for name in ("r2_all", "a_all", "b_all", "rss_all"):  # last-bit rounding of the batch
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-12, atol=1e-12)
    # the file is plain numpy: no pickles
    with np.load(tmp_path / "r.npz", allow_pickle=False) as z:
        assert z["r2"].shape == (600,) and z["type"].dtype.kind == "U"


def test_parquet_npz_shards_and_hdf5_agree(tmp_path):
    pytest.importorskip("pyarrow")
    y = _filters(300)
    np.save(tmp_path / "f.npy", y)
    census_stream(tmp_path / "f.npy", tmp_path / "a.npz", chunk_rows=100, null="iid")
    census_stream(tmp_path / "f.npy", tmp_path / "a.parquet", chunk_rows=100, null="iid")
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, (lo, hi) in enumerate(((0, 70), (70, 230), (230, 300))):  # not chunk-aligned
        np.save(shards / f"part-{[2, 10, 11][i]}.npy", y[lo:hi].astype(np.float64))
    assert open_filters(shards).shape == (300, 5, 5)
    census_stream(shards, tmp_path / "b.npz", chunk_rows=100, null="iid")
    a, b, p = (_columns(tmp_path / n) for n in ("a.npz", "b.npz", "a.parquet"))
    _same(a, b)
    _same(a, p)
    nulls = read_census(tmp_path / "a.parquet").null_r2["iid"]
    assert nulls.shape == (300,) and np.isnan(nulls[3:6]).all() and (nulls[6:] > 0).all()
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "f.h5", "w") as fh:
        fh["filters"] = y.reshape(300, 25)  # flattened rows, as CNN Filter DB stores 3x3
    census_stream(tmp_path / "f.h5", tmp_path / "h.npz", chunk_rows=100, null="iid")
    _same(a, _columns(tmp_path / "h.npz"))


def test_selection_offset_rows_limit(tmp_path):
    y = _filters(400)
    np.save(tmp_path / "f.npy", y)
    s = census_stream(tmp_path / "f.npy", tmp_path / "s.npz", offset=150, rows=200, limit=120)
    assert s.rows == 120
    got = read_census(tmp_path / "s.npz")
    assert np.array_equal(got.index, np.arange(150, 270))
    ref = census(y[150:270])
    assert np.array_equal(got.best, ref.best)
    np.testing.assert_allclose(got.r2_all, ref.r2_all, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="offset"):
        census_stream(tmp_path / "f.npy", tmp_path / "t.npz", offset=401)
    with pytest.raises(ValueError, match=r"\.parquet or \.npz"):
        census_stream(tmp_path / "f.npy", tmp_path / "t.csv")


def test_resume_after_sigkill_is_identical(tmp_path):
    y = _filters(960, seed=3)
    np.save(tmp_path / "f.npy", y)
    out = tmp_path / "r.npz"
    cmd = [sys.executable, "-m", "scalespace_mk.cli", "census", str(tmp_path / "f.npy")]
    cmd += ["--out", str(out), "--chunk-rows", "60", "--null", "iid"]
    proc = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stderr=subprocess.DEVNULL)
    parts = tmp_path / "r.npz.parts"
    deadline = time.monotonic() + 120
    while len(list(parts.glob("chunk-*.npz"))) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, "the census ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("chunk-*.npz")))
    assert 2 <= done < 16 and not out.exists()
    # the same command again: resumes
    r = subprocess.run(cmd + ["--json"], env=_env(), cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads(r.stdout)
    assert info["resumed"] == done and info["chunks"] == 16
    # an uninterrupted run in this process
    census_stream(tmp_path / "f.npy", tmp_path / "u.npz", chunk_rows=60, null="iid")
    _same(_columns(out), _columns(tmp_path / "u.npz"))
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert not parts.exists()  # merged: the parts and the killed writer's temporary are gone


def test_other_options_refuse_to_resume(tmp_path):
    y = _filters(300)
    np.save(tmp_path / "f.npy", y)
    out = tmp_path / "r.npz"
    census_stream(tmp_path / "f.npy", out, chunk_rows=100, keep_parts=True)
    again = census_stream(tmp_path / "f.npy", out, chunk_rows=100, keep_parts=True)
    assert again.resumed == 3 and again.fitted_here == 0
    with pytest.raises(ValueError, match="other input or options.*chunk_rows.*restart"):
        census_stream(tmp_path / "f.npy", out, chunk_rows=150)
    fresh = census_stream(tmp_path / "f.npy", out, chunk_rows=150, restart=True)
    assert fresh.resumed == 0 and fresh.fitted_here == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("launcher", ["torchrun", "srun"])
def test_two_gloo_ranks_equal_one_process(tmp_path, launcher):
    pytest.importorskip("torch.distributed")
    y = _filters(250)
    np.save(tmp_path / "f.npy", y)
    cmd = [sys.executable, "-m", "scalespace_mk.cli", "census", str(tmp_path / "f.npy")]
    cmd += ["--out", str(tmp_path / "d.npz"), "--chunk-rows", "50", "--null", "phase"]
    port = str(_free_port())
    procs = []
    for rank in range(2):
        if launcher == "torchrun":
            extra = dict(WORLD_SIZE="2", RANK=str(rank), MASTER_ADDR="127.0.0.1")
            extra["MASTER_PORT"] = port
        else:  # srun without MASTER_ADDR: file rendezvous in the parts folder
            extra = dict(SLURM_NTASKS="2", SLURM_PROCID=str(rank), SLURM_JOB_ID=port)
        procs.append(
            subprocess.Popen(
                cmd,
                env=_env(**extra),
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    assert "2 rank(s)" in outs[0][0] and outs[1][0] == ""  # rank 0 reports, rank 1 is quiet
    census_stream(tmp_path / "f.npy", tmp_path / "s.npz", chunk_rows=50, null="phase")
    d, s = read_census(tmp_path / "d.npz"), read_census(tmp_path / "s.npz")
    _same(_columns(tmp_path / "d.npz"), _columns(tmp_path / "s.npz"))
    # "phase" is accepted and reported under its honest name, "position" (analysis.null)
    assert np.array_equal(d.null_r2["position"], s.null_r2["position"], equal_nan=True)


def test_family_census_streams(tmp_path):
    from scalespace_mk.analysis.jets import family_census

    y = np.random.default_rng(2).standard_normal((240, 5, 5))
    y[3] = 0.0  # recorded, not fatal (the family census itself stops at it)
    y[150, 2, 2] = np.inf
    np.save(tmp_path / "f.npy", y)
    census_stream(tmp_path / "f.npy", tmp_path / "j.npz", chunk_rows=100, family="njet", order=1)
    got = read_census(tmp_path / "j.npz")
    ok = np.ones(240, dtype=bool)
    ok[[3, 150]] = False
    ref = family_census(y[ok], family="njet", order=1)
    assert got.names == ref.names and got.family == "njet"
    assert got.reason[3] == "zero" and got.reason[150] == "non-finite"
    assert np.isnan(got.r2[[3, 150]]).all() and np.isnan(got.coefficients[3]).all()
    np.testing.assert_allclose(got.r2[ok], ref.r2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.sigma_x[ok], ref.sigma_x, rtol=1e-12, atol=1e-12)


def test_census_result_columns_table_and_pandas():
    y = _filters(60, seed=5)
    res = census(y)
    cols = res.to_columns()
    back = CensusResult.from_columns(cols, res.types, sigma_max=res.sigma_max)
    for name in ("r2_all", "sigma_x_all", "a_all", "tss"):
        assert np.array_equal(getattr(back, name), getattr(res, name), equal_nan=True)
    assert list(back.reason) == list(res.reason)
    assert np.array_equal(cols["r2_5"], res.r2_all[:, 4], equal_nan=True)
    assert list(cols["type"][:3]) == [str(t) for t in res.type[:3]]
    table = res.format_table().splitlines()
    counts = res.counts()
    for j, t in enumerate(res.types):  # one line per type, with its count
        assert table[1 + j].split()[:2] == [str(t), str(counts[t])]
    assert table[-1] == "not fitted: 1 zero, 1 constant, 1 non-finite"
    text = repr(res)
    assert text.startswith("CensusResult(60 filters, 8 types") and "57 fitted" in text
    assert len(text.splitlines()) <= 24  # one screen
    pd = pytest.importorskip("pandas")
    df = res.to_pandas()
    assert isinstance(df, pd.DataFrame) and len(df) == 60
    assert df["type"].iloc[0] == res.type[0] and df["type"].iloc[3] is None
    assert df["reason"].iloc[5] == "non-finite"
    np.testing.assert_array_equal(df["r2"].to_numpy(), res.r2)
    assert list(res.to_pandas(per_type=False).columns)[:4] == ["index", "type", "best", "sigma_x"]


def test_cli_stream_options(tmp_path, capsys):
    from scalespace_mk.cli import main

    y = _filters(40)
    np.save(tmp_path / "f.npy", y)
    base = ["census", str(tmp_path / "f.npy"), "--null", "none"]
    assert main(base + ["--chunk-rows", "5"]) == 2
    assert "--chunk-rows works with --out" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "x.csv")]) == 2
    assert "--out must end in .parquet, .npz or .json" in capsys.readouterr().err
    # --offset/--limit without --out: the selection, in memory, with 0-based input rows
    assert main(base + ["--offset", "10", "--limit", "5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["filters"]) == 5
    assert doc["filters"][0]["r2"] == pytest.approx(float(census(y[10:15]).r2[0]), abs=1e-12)
    assert main(base + ["--out", str(tmp_path / "r.json"), "--rows", "3"]) == 0
    assert len(json.loads((tmp_path / "r.json").read_text())["filters"]) == 3


@pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="needs CUDA (the census on the GPU)"
)
def test_census_on_cuda_equals_cpu(tmp_path):
    from scalespace_mk.scalespace.models import masterkey_model

    rng = np.random.default_rng(7)
    pairs = [(1, 0.6, 1.4), (3, 0.8, 1.2), (5, 1.1, 0.9), (6, 1.3, 0.7)]
    planted = np.stack([masterkey_model(t, sx, sy) for t, sx, sy in pairs]) * 2.0 + 0.1
    noise = rng.standard_normal((3000, 7, 7))
    for y in (planted, noise):
        a, b = census(y, device="cuda"), census(y, device="cpu")
        same = a.best == b.best
        assert same.mean() >= (1.0 if y is planted else 0.99)
        close = np.abs(a.r2 - b.r2) <= 1e-6
        assert close.mean() >= (1.0 if y is planted else 0.99)
    np.save(tmp_path / "f.npy", noise[:500])
    census_stream(tmp_path / "f.npy", tmp_path / "g.npz", chunk_rows=200, device="cuda")
    got, ref = read_census(tmp_path / "g.npz"), census(noise[:500], device="cpu")
    assert np.mean(got.best == ref.best) >= 0.99
