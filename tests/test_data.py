"""Tests of scalespace_mk.analysis.filters: the filter text format, array formats and fetching."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scalespace_mk.analysis import filters as data
from scalespace_mk.analysis.filters import (
    CACHE_ENV,
    OFFLINE_ENV,
    REGISTRY,
    ChecksumError,
    DownloadError,
    cache_dir,
    fetch,
    file_sha256,
    load_filters,
    published_path,
    read_filter_text,
    save_filters,
    write_filter_text,
)

SHARED = Path(__file__).resolve().parents[1] / "scalespace_mk" / "data_files"  # shipped copy
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "masterkey"
PUBLISHED_SHA256 = "b48e20624d5089caa7a5bfcacf12d7a43f32aab5571f3a02e6583514c3506fcc"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Downloads allowed, a private cache, and no proxies for 127.0.0.1."""
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return tmp_path / "cache"


def _register(monkeypatch, name: str, url: str, sha: str) -> None:
    monkeypatch.setitem(REGISTRY, name, (url, sha))


# ------------------------------------------------------------------ the published file


def test_registry_pins_the_published_file():
    url, sha = REGISTRY["8Filters.txt"]
    assert url.startswith("https://raw.githubusercontent.com/tonylindeberg/masterfiltmodel/")
    assert "af051cb0667895cb479e15a3a1367b6a524362fe" in url
    assert sha == PUBLISHED_SHA256
    assert file_sha256(SHARED / "8Filters.txt") == PUBLISHED_SHA256
    assert hashlib.sha256((SHARED / "8Filters.txt").read_bytes()).hexdigest() == sha


def test_parse_shared_file():
    h = read_filter_text(SHARED / "8Filters.txt")
    assert h.shape == (8, 7, 7)
    assert h.dtype == np.float64
    # SPEC §1: sum ~ 0, l2 norm 1 (to the 6 printed decimals).
    np.testing.assert_allclose(h.sum(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.sqrt((h**2).sum(axis=(1, 2))), 1.0, atol=1e-6)
    # spot values: first and last numbers of the file, and filter 1's centre column peak
    assert h[0, 0, 0] == -0.010366
    assert h[7, 6, 6] == -0.043075
    assert h[0, 4, 3] == 0.936427
    assert h[1, 3, 4] == 0.848257


def test_load_filters_default_is_the_shipped_copy(monkeypatch, tmp_path):
    """No network, no setting: the published 8 come from the package itself."""
    monkeypatch.setenv(OFFLINE_ENV, "1")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "empty-cache"))
    monkeypatch.delenv("SCALESPACE_MK_DATA", raising=False)
    h = load_filters()
    np.testing.assert_array_equal(h, read_filter_text(SHARED / "8Filters.txt"))
    np.testing.assert_array_equal(load_filters("masterkey"), h)
    np.testing.assert_array_equal(load_filters(SHARED), h)  # a directory with 8Filters.txt
    assert published_path() == SHARED / "8Filters.txt"
    assert file_sha256(published_path()) == PUBLISHED_SHA256
    assert not (tmp_path / "empty-cache").exists()  # nothing fetched


def test_shipped_copy_has_attribution_and_licence():
    text = (SHARED / "8Filters.md").read_text()
    for needed in ("Lindeberg", "Babaiee", "Kiasari", "CC BY 4.0", PUBLISHED_SHA256):
        assert needed in text
    assert "af051cb0667895cb479e15a3a1367b6a524362fe" in text


@pytest.mark.skipif(
    not (REFERENCE / "8Filters.txt").is_file(), reason="no reference copy in ../shared"
)
def test_shipped_copy_equals_the_reference_copy():
    assert (SHARED / "8Filters.txt").read_bytes() == (REFERENCE / "8Filters.txt").read_bytes()


def test_altered_shipped_copy_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "pkg"
    (fake / "data_files").mkdir(parents=True)
    text = (SHARED / "8Filters.txt").read_bytes().replace(b"-0.010366", b"-0.010367", 1)
    (fake / "data_files" / "8Filters.txt").write_bytes(text)
    monkeypatch.setattr(data.importlib.resources, "files", lambda _: fake)
    with pytest.raises(ChecksumError, match="expected " + PUBLISHED_SHA256):
        load_filters()


# ------------------------------------------------------------------ fetching


def test_fetch_downloads_verifies_and_caches(isolated, server, monkeypatch):
    root, base, hits = server
    payload = b"Filter 1:\n0 1 0\n1 -4 1\n0 1 0\n"
    (root / "f.txt").write_bytes(payload)
    _register(monkeypatch, "f.txt", f"{base}/f.txt", hashlib.sha256(payload).hexdigest())
    path = fetch("f.txt")
    assert path == isolated / "f.txt"
    assert path.read_bytes() == payload
    assert hits == ["/f.txt"]
    assert sorted(p.name for p in isolated.iterdir()) == ["f.txt"]  # no temp files left
    assert fetch("f.txt") == path
    assert hits == ["/f.txt"]  # second call served from the cache


def test_fetch_checksum_mismatch_keeps_nothing(isolated, server, monkeypatch):
    root, base, _ = server
    (root / "f.txt").write_bytes(b"tampered")
    _register(monkeypatch, "f.txt", f"{base}/f.txt", "0" * 64)
    with pytest.raises(ChecksumError, match="0{64}"):
        fetch("f.txt")
    assert list(isolated.iterdir()) == []


def test_fetch_replaces_corrupt_cache(isolated, server, monkeypatch):
    root, base, hits = server
    payload = b"good content"
    (root / "f.txt").write_bytes(payload)
    _register(monkeypatch, "f.txt", f"{base}/f.txt", hashlib.sha256(payload).hexdigest())
    isolated.mkdir(parents=True)
    (isolated / "f.txt").write_bytes(b"bad content")
    path = fetch("f.txt")
    assert path.read_bytes() == payload
    assert hits == ["/f.txt"]


def test_fetch_http_error(isolated, server, monkeypatch):
    _, base, _ = server
    _register(monkeypatch, "missing.txt", f"{base}/missing.txt", "0" * 64)
    with pytest.raises(DownloadError, match="404"):
        fetch("missing.txt")
    assert not isolated.exists() or list(isolated.iterdir()) == []


def test_fetch_offline_connection_refused(isolated, monkeypatch):
    with socket.socket() as sock:  # find a port on which nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/8Filters.txt"
    _register(monkeypatch, "8Filters.txt", url, PUBLISHED_SHA256)
    with pytest.raises(DownloadError) as info:
        fetch(timeout=5)
    message = str(info.value)
    assert url in message
    assert str(isolated) in message
    assert CACHE_ENV in message
    assert list(isolated.iterdir()) == []


def test_fetch_offline_env_never_downloads(isolated, monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, "1")
    _register(monkeypatch, "8Filters.txt", "http://127.0.0.1:9/never", PUBLISHED_SHA256)
    with pytest.raises(DownloadError, match=OFFLINE_ENV):
        fetch()


def test_fetch_unknown_name(isolated):
    with pytest.raises(ValueError, match="'8Filters.txt'"):
        fetch("9Filters.txt")


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert cache_dir() == tmp_path / "xdg" / "scalespace_mk"


# ------------------------------------------------------------------ formats


@pytest.mark.parametrize("suffix", [".txt", ".npy", ".npz", ".pt", ".pth", ".safetensors"])
def test_save_load_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(1)
    h = rng.normal(size=(3, 5, 5))
    path = save_filters(tmp_path / f"f{suffix}", h)
    back = load_filters(path)
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, h)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"f{suffix}"]


def test_foreign_layouts(tmp_path):
    rng = np.random.default_rng(2)
    h = rng.normal(size=(4, 7, 7))
    np.savez(tmp_path / "k.npz", kernels=h, other=np.zeros(3))
    np.testing.assert_array_equal(load_filters(tmp_path / "k.npz"), h)
    np.savez(tmp_path / "one.npz", whatever=h)
    np.testing.assert_array_equal(load_filters(tmp_path / "one.npz"), h)
    np.save(tmp_path / "single.npy", h[0])
    np.testing.assert_array_equal(load_filters(tmp_path / "single.npy"), h[:1])
    # depthwise weights [C, 1, k, k] in float32, in a dict
    w = torch.from_numpy(h).float()[:, None]
    torch.save({"filters": w, "step": torch.tensor(3)}, tmp_path / "dw.pt")
    np.testing.assert_array_equal(load_filters(tmp_path / "dw.pt"), w[:, 0].double().numpy())
    torch.save({"only": w}, tmp_path / "only.pth")
    assert load_filters(str(tmp_path / "only.pth")).shape == (4, 7, 7)
    from safetensors.torch import save_file

    save_file({"w": w.to(torch.bfloat16).contiguous()}, str(tmp_path / "bf.safetensors"))
    back = load_filters(tmp_path / "bf.safetensors")
    np.testing.assert_allclose(back, h, rtol=1e-2, atol=1e-2)
    # arrays and tensors pass straight through
    np.testing.assert_array_equal(load_filters(torch.from_numpy(h)), h)


def test_text_format_tolerance_and_fmt(tmp_path):
    text = (
        "# comment\r\n\r\nFilter 1:\r\n 1  2 3\r\n4 5 6\r\n\r\n7 8 9\r\n"
        "\nFILTER 2\n-1 -2 -3\n-4 -5 -6\n-7 -8 -9.5e-1\n"
    )
    (tmp_path / "f.txt").write_text(text, newline="")
    h = read_filter_text(tmp_path / "f.txt")
    assert h.shape == (2, 3, 3)
    assert h[0].tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert h[1, 2, 2] == -0.95
    write_filter_text(tmp_path / "g.txt", h / 3, fmt="%.6f")
    lines = (tmp_path / "g.txt").read_text().splitlines()
    assert lines[0] == "Filter 1:"
    assert lines[1] == "0.333333 0.666667 1.000000"
    np.testing.assert_allclose(read_filter_text(tmp_path / "g.txt"), h / 3, atol=5e-7)
    # the published file survives a write/read round trip exactly
    pub = read_filter_text(SHARED / "8Filters.txt")
    write_filter_text(tmp_path / "p.txt", pub, fmt="%.6f")
    np.testing.assert_array_equal(read_filter_text(tmp_path / "p.txt"), pub)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("Filter 1:\n1 2 3\n4 5\n7 8 9\n", r":3: ragged row .* 2 numbers .* 3"),
        ("Filter 1:\n1 2 3\n4 x 6\n7 8 9\n", r":3: .*numbers"),
        ("Filter 1:\n1 2 3\n4 5 6\n", r":1: .*square"),
        ("1 2 3\n", r":1: expected a header"),
        ("Filter 1:\n1\nFilter 2:\n1 2 3\n4 5 6\n7 8 9\n", r":3: .*same size"),
        ("Filter 1:\n1\n\nFilter 3:\n2\n", r":4: .*consecutively .*'Filter 2:'"),
        ("Filter 1:\n", r":1: .*no rows"),
        ("\n\n", r"no 'Filter k:' blocks"),
    ],
)
def test_text_format_errors(tmp_path, text, pattern):
    (tmp_path / "bad.txt").write_text(text)
    with pytest.raises(ValueError, match=pattern):
        read_filter_text(tmp_path / "bad.txt")


class _Evil:
    """Unpickling this would call print: weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("unpickled an arbitrary object",))


def test_pt_with_arbitrary_pickle_is_refused(tmp_path, capsys):
    torch.save({"filters": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refusing to load .*weights_only=True"):
        load_filters(tmp_path / "evil.pt")
    assert "unpickled" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "content", "exc", "pattern"),
    [
        ("g.npy", b"garbage", ValueError, "cannot read .* .npy"),
        ("g.npz", b"garbage", ValueError, "cannot read .* .npz"),
        ("g.pt", b"garbage", ValueError, "cannot read .* torch"),
        ("g.safetensors", b"garbage", ValueError, "cannot read .* .safetensors"),
        ("g.bin", b"garbage", ValueError, "unknown filter file type '.bin'"),
    ],
)
def test_corrupt_files(tmp_path, name, content, exc, pattern):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(exc, match=pattern):
        load_filters(tmp_path / name)


def test_invalid_contents(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickled objects are refused"):
        load_filters(tmp_path / "obj.npy")
    np.savez(tmp_path / "many.npz", a=np.ones((7, 7)), b=np.ones((7, 7)))
    with pytest.raises(ValueError, match="holds 2 arrays .*'filters' or 'kernels'"):
        load_filters(tmp_path / "many.npz")
    np.save(tmp_path / "c3.npy", np.ones((2, 3, 7, 7)))
    with pytest.raises(ValueError, match=r"\[C, 1, k, k\]"):
        load_filters(tmp_path / "c3.npy")
    bad = np.ones((2, 7, 7))
    bad[1, 2, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"\[1\] holds NaN"):
        load_filters(tmp_path / "nan.npy")
    np.save(tmp_path / "even.npy", np.ones((2, 6, 6)))
    with pytest.raises(ValueError, match="odd size"):
        load_filters(tmp_path / "even.npy")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(TypeError, match="tensor"):
        load_filters(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="neither an existing file"):
        load_filters(tmp_path / "nope.npy")
    with pytest.raises(FileNotFoundError, match="no 8Filters.txt"):
        load_filters(tmp_path)
    with pytest.raises(TypeError, match="source must be"):
        load_filters(3.5)


def test_builtin_filters_are_no_longer_shipped():
    with pytest.raises(ValueError, match="no longer shipped.*masterkey"):
        load_filters("builtin")


def test_atomic_write_leaves_no_temp_file_on_error(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(ValueError):
        write_filter_text(target, np.full((1, 3, 3), np.nan))
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


# ------------------------------------------------------------------ scalespace-mk data verify


def test_cli_data_verify_offline(capsys):
    from scalespace_mk.cli import main

    assert main(["data", "verify", "--offline"]) == 0
    assert PUBLISHED_SHA256 in capsys.readouterr().out


def test_cli_data_verify_downloads_and_compares(isolated, server, monkeypatch, capsys):
    from scalespace_mk.cli import main

    root, base, hits = server
    (root / "8Filters.txt").write_bytes((SHARED / "8Filters.txt").read_bytes())
    _register(monkeypatch, "8Filters.txt", f"{base}/8Filters.txt", PUBLISHED_SHA256)
    assert main(["data", "verify", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shipped_ok"] and report["same"] and hits == ["/8Filters.txt"]
    assert report["downloaded_sha256"] == PUBLISHED_SHA256


def test_cli_data_verify_download_failure_is_one_line(isolated, monkeypatch, capsys):
    from scalespace_mk.cli import main

    monkeypatch.setenv(OFFLINE_ENV, "1")
    assert main(["data", "verify"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scalespace-mk data verify: error:")
