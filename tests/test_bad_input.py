"""Bad input and faults: one test per reported case, grouped by the item of the report
(issue 12) that found it. Add a test here for every new bad-input report.

Each case must end in a clean result or one clear error (naming the argument or the file),
in bounded time and memory; nothing non-finite is ever written. Cases that used to hang run
under an alarm, so that a regression fails instead of blocking the suite.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

import scalespace_mk.limits as limits
from scalespace_mk.analysis.census import census
from scalespace_mk.analysis.filters import load_filters, read_filter_text
from scalespace_mk.analysis.fit import fit_filter, fit_filters
from scalespace_mk.analysis.types import parse_model_types
from scalespace_mk.cli import main
from scalespace_mk.networks.checkpoint import (
    extract,
    load_checkpoint_file,
    replace,
    save_checkpoint_file,
)
from scalespace_mk.networks.layers import AnalyticDepthwiseConv2d, MasterKeyDepthwiseConv2d
from scalespace_mk.scalespace.bank import load_bank, make_bank, save_bank
from scalespace_mk.scalespace.kernels import (
    discrete_gaussian,
    fft_length,
    gaussian_kernel,
    kernel_radius,
    truncation_error_1d,
)
from scalespace_mk.scalespace.models import masterkey_model, model_kernel

RNG = np.random.default_rng(12)


@contextmanager
def _within(seconds: int):
    """Fail (instead of hanging) if the body runs longer than ``seconds``."""
    if not hasattr(signal, "SIGALRM"):  # pragma: no cover - not on Windows
        yield
        return

    def _timeout(signum, frame):
        raise TimeoutError(f"no result within {seconds} s (hang or unbounded work)")

    old = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def _one_line_error(capsys, *argv: str) -> str:
    code, err = _cli(capsys, *argv)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _state(channels: int = 4, k: int = 7, dtype=torch.float32, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "stem.weight": torch.randn(8, 3, 3, 3, generator=g).to(dtype),
        "blocks.0.dwconv.weight": torch.randn(channels, 1, k, k, generator=g).to(dtype),
    }


def _candidates() -> np.ndarray:
    return np.stack(
        [
            masterkey_model(t, 1.0, alpha=0.5) if t == 7 else masterkey_model(t, 1.0, 1.0)
            for t in range(1, 9)
        ]
    )


# ======================================================================================
# item 1: every optimiser bounded, memory refused up front


def test_item01_fit_of_random_3x3_filters_is_bounded():
    h = RNG.standard_normal((2, 3, 3))
    with _within(60):
        res = fit_filters(h, [2, 5], method="D1")
    top = max(4.0, limits.FIT_SIGMA_PER_TAP * 3)
    assert np.all((res.sigma_x >= 0) & (res.sigma_x <= top + 1e-9))
    assert np.all((res.sigma_y >= 0) & (res.sigma_y <= top + 1e-9))


def test_item01_census_sigma_max_1e6_refused_not_killed():
    y = RNG.standard_normal((4, 7, 7))
    with pytest.raises(ValueError, match="sigma_max must be <= 10000"):
        census(y, sigma_max=1e6)
    with pytest.raises(limits.MemoryBudgetError, match="lower sigma_max"):
        census(y, sigma_max=300.0)


def test_item01_census_explicit_batch_over_budget_refused(monkeypatch):
    # the tables and grid (~0.17 GB at sigma_max = 6) fit, 5,000 filters at once do not
    monkeypatch.setenv(limits.MEMORY_BUDGET_ENV, "250M")
    y = RNG.standard_normal((5000, 7, 7))
    with pytest.raises(limits.MemoryBudgetError, match="batch_size"):
        census(y, sigma_max=6.0, batch_size=5000)


def test_item01_budget_variable_is_checked(monkeypatch):
    monkeypatch.setenv(limits.MEMORY_BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match=limits.MEMORY_BUDGET_ENV):
        limits.memory_budget()
    monkeypatch.setenv(limits.MEMORY_BUDGET_ENV, "1.5G")
    assert limits.memory_budget() == int(1.5 * 2**30)


def test_item01_fit_grid_over_budget_refused():
    with pytest.raises(limits.MemoryBudgetError, match="sigma_max"):
        fit_filters(RNG.standard_normal((1, 7, 7)), [8], sigma_max=1e4, grid_step=2500.0)


# ======================================================================================
# item 2: replace never writes a non-finite value


def test_item02_replace_refuses_a_nan_filter(tmp_path):
    state = _state()
    state["blocks.0.dwconv.weight"][2, 0, 3, 3] = float("nan")
    out = tmp_path / "out.pt"
    with pytest.raises(ValueError, match=r"layer 'blocks.0.dwconv.weight', channel 2"):
        replace(state, filters=_candidates(), out=out)
    assert not out.exists()


def test_item02_replace_refuses_float16_overflow(tmp_path):
    state = _state(dtype=torch.float16)
    edge = 6.5e4 * torch.sign(3.0 - torch.arange(7.0))  # a step edge at float16's top
    state["blocks.0.dwconv.weight"][1, 0] = edge[None, :].expand(7, 7).half()
    out = tmp_path / "out.pt"
    with pytest.raises(ValueError, match=r"channel 1 .*overflows torch.float16"):
        replace(state, filters=_candidates(), out=out)
    assert not out.exists()


def test_item02_replace_cli_exits_2_on_nan(tmp_path, capsys):
    state = _state()
    state["blocks.0.dwconv.weight"][0, 0, 0, 0] = float("inf")
    src = tmp_path / "in.pt"
    torch.save(state, src)
    filt = tmp_path / "f.npy"
    np.save(filt, _candidates())
    err = _one_line_error(
        capsys, "replace", str(src), "--filters", str(filt), "--out", str(src) + "2"
    )
    assert "channel 0" in err and "blocks.0.dwconv.weight" in err


# ======================================================================================
# item 3: integer input to the layers


@pytest.mark.parametrize("make", ["analytic", "masterkey"])
def test_item03_layers_refuse_integer_input(make):
    layer = (
        AnalyticDepthwiseConv2d(8)
        if make == "analytic"
        else MasterKeyDepthwiseConv2d(8, filters=_candidates())
    )
    with pytest.raises(TypeError, match="floating"):
        layer(torch.ones(1, 8, 5, 5, dtype=torch.int64))


# ======================================================================================
# item 4: declared sizes checked before reading or allocating


def _npy_with_header(path: Path, shape: tuple[int, ...]) -> None:
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f8", "fortran_order": False, "shape": shape}
        )
        fh.write(b"\0" * 64)


def test_item04_npy_header_claiming_49e9_elements(tmp_path):
    path = tmp_path / "huge.npy"
    _npy_with_header(path, (1_000_000_000, 7, 7))
    with pytest.raises(
        ValueError, match=r"huge.npy as a .npy array: it declares an array of shape"
    ):
        load_filters(path)


def test_item04_npy_header_larger_than_the_file(tmp_path):
    path = tmp_path / "short.npy"
    _npy_with_header(path, (100, 7, 7))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_filters(path)


def test_item04_npz_zip_bomb_not_inflated(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "ARRAY_FILE_BYTES_MAX", 1 << 20)
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, filters=np.zeros((40_000, 7, 7)))  # 15 MB of zeros, ~15 KB
    assert path.stat().st_size < 100_000
    with pytest.raises(ValueError, match="bomb.npz.*member 'filters.npy'"):
        load_filters(path)


def test_item04_bank_size_1000001(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(capsys, "bank", "--size", "1000001", "--out", "never.npz")
    assert "size must be an odd integer <= 1001" in err
    assert not Path("never.npz").exists()


def test_item04_bank_over_memory_budget(monkeypatch):
    monkeypatch.setenv(limits.MEMORY_BUDGET_ENV, "1M")
    with pytest.raises(limits.MemoryBudgetError, match="fewer scales"):
        make_bank(np.linspace(0, 5, 200), size=31)


# ======================================================================================
# item 5: decoded pixels of training images capped


def _image_folder(root: Path, sizes: dict[str, tuple[int, int]]) -> None:
    from PIL import Image

    for name, (w, h) in sizes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), (10, 200, 30)).save(root / name / "a.png")


def test_item05_image_over_pixel_cap_skipped_like_corrupt(tmp_path):
    pytest.importorskip("PIL")
    from scalespace_mk.training.datasets import CorruptImageError, ImageFolderDataset

    _image_folder(tmp_path, {"big": (40, 30), "small": (8, 8)})
    with pytest.warns(RuntimeWarning, match="skipped 1 of 2"):
        ds = ImageFolderDataset(tmp_path, image_size=4, max_pixels=100)
    assert ds.skipped_files == [str(tmp_path / "big" / "a.png")]
    with pytest.raises(CorruptImageError, match="1200 pixels exceeds max_pixels = 100"):
        ImageFolderDataset(tmp_path, image_size=4, max_pixels=100, strict=True)
    ok = ImageFolderDataset(tmp_path, image_size=4, verify="none", max_pixels=100)
    with pytest.raises(ValueError, match="exceeds max_pixels"):
        ok.load(0)  # the check at decode time, for files not verified


def test_item05_decompression_bomb_warning_not_silenced(tmp_path, monkeypatch):
    PIL = pytest.importorskip("PIL")
    from PIL import Image

    from scalespace_mk.training.datasets import ImageFolderDataset

    _image_folder(tmp_path, {"a": (12, 12)})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 144 px: Pillow warns
    assert PIL.Image.MAX_IMAGE_PIXELS == 100
    ds = ImageFolderDataset(tmp_path, image_size=4, verify="none", max_pixels=None)
    with pytest.warns(RuntimeWarning, match="a.png.*decompression bomb"):
        ds.load(0)


def test_item05_default_cap_is_documented():
    from scalespace_mk.training.datasets import ImageFolderDataset

    assert limits.IMAGE_PIXELS_MAX == 64_000_000
    assert "max_pixels" in ImageFolderDataset.__doc__


# ======================================================================================
# item 6: non-regular files refused before opening


@pytest.fixture
def fifo(tmp_path):
    if not hasattr(os, "mkfifo"):  # pragma: no cover
        pytest.skip("no FIFOs on this platform")
    path = tmp_path / "pipe.npy"
    os.mkfifo(path)
    return path


def test_item06_load_filters_on_a_fifo(fifo):
    with _within(10), pytest.raises(ValueError, match="FIFO"):
        load_filters(fifo)


def test_item06_checkpoint_on_a_fifo(fifo):
    link = fifo.with_suffix(".pt")
    os.symlink(fifo, link)
    with _within(10), pytest.raises(ValueError, match="FIFO"):
        load_checkpoint_file(link)


def test_item06_census_cli_on_a_fifo(fifo, capsys):
    with _within(10):
        err = _one_line_error(capsys, "census", str(fifo))
    assert "FIFO" in err


# ======================================================================================
# item 8: supported scale range; epsilon and D


@pytest.mark.parametrize(
    "call",
    [
        lambda: kernel_radius(1e300, method="samplgauss"),
        lambda: gaussian_kernel(1e300, method="normsamplgauss", size=7),
        lambda: gaussian_kernel(1e300, method="linintgauss", size=7),
        lambda: discrete_gaussian(1e154),
        lambda: make_bank(1e300),
        lambda: model_kernel("dx", 2e4),
    ],
    ids=["radius", "normsampl", "linint", "discgauss", "bank", "model"],
)
def test_item08_sigma_above_the_limit(call):
    with pytest.raises(ValueError, match=r"must be <= 10000"):
        call()


def test_item08_sigma_at_the_limit_is_finite():
    k = gaussian_kernel(limits.SIGMA_LIMIT, method="normsamplgauss", size=7)
    assert np.all(np.isfinite(k)) and np.all(k > 0)
    assert kernel_radius(limits.SIGMA_LIMIT, method="samplgauss") > 0


def test_item08_layer_sigma_max():
    with pytest.raises(ValueError, match="sigma_max must be <= 10000"):
        AnalyticDepthwiseConv2d(8, sigma_max=1e300)


def test_item08_epsilon_and_d():
    with pytest.raises(ValueError, match=r"epsilon must be >= 1e-15"):
        discrete_gaussian(1.0, epsilon=1e-300)
    with pytest.raises(ValueError, match=r"D must be an integer from 1 to 16"):
        truncation_error_1d(1e-8, 10**9)
    with pytest.raises(ValueError, match=r"raise epsilon or lower D"):
        truncation_error_1d(1e-15, 16)


def test_item08_cli_bank_and_spread(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(capsys, "bank", "--sigma", "1e300", "--out", "never.npz")
    assert "--sigma must be <= 10000" in err
    err = _one_line_error(
        capsys, "spread", "--filters", "masterkey", "--weighted", "--sigma-ref", "1e300"
    )
    assert "--sigma-ref must be <= 10000" in err  # CLI words (issue 19)


# ======================================================================================
# item 9: writing


def test_item09_nested_checkpoint_to_safetensors(tmp_path):
    state = {"model": _state(), "epoch": 3}
    with pytest.raises(ValueError, match=r"entry 'model' is a nested container"):
        replace(state, filters=_candidates(), out=tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_item09_disk_full_says_no_space(tmp_path, monkeypatch, suffix):
    import shutil

    from safetensors import SafetensorError

    out = tmp_path / f"out{suffix}"
    out.write_bytes(b"previous")

    def full(*args, **kwargs):
        if suffix == ".pt":
            raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter")
        raise SafetensorError("Error while serializing: IoError(Os { code: 5 })")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr("safetensors.torch.save_file", full)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(OSError, match="no space left on device") as info:
        save_checkpoint_file(_state(), out)
    assert info.value.errno == errno.ENOSPC
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


# ======================================================================================
# item 11: API arguments


def test_item11_fft_length():
    with pytest.raises(ValueError, match="sigma_max"):
        fft_length(-1.0, 7)
    with pytest.raises(ValueError, match="size"):
        fft_length(1.0, 0)
    with pytest.raises(ValueError, match="n_fft must be an integer"):
        discrete_gaussian(1.0, size=7, n_fft=0)
    with pytest.raises(ValueError, match="n_fft must be an integer"):
        discrete_gaussian(1.0, n_fft=-8)


def test_item11_model_kernel_without_scales():
    with pytest.raises(ValueError, match="sigma_x must be a number"):
        model_kernel("dx", None)
    with pytest.raises(ValueError, match="empty batch"):
        model_kernel("dx", [])


def test_item11_layer_called_with_none():
    with pytest.raises(TypeError, match="input must be a tensor"):
        AnalyticDepthwiseConv2d(8)(None)


def test_item11_types_buffer_out_of_range():
    layer = AnalyticDepthwiseConv2d(8)
    with torch.no_grad():
        layer.types[3] = 9
    with pytest.raises(ValueError, match="types buffer must hold master-key types 1..8"):
        layer(torch.zeros(1, 8, 5, 5))
    mk = MasterKeyDepthwiseConv2d(8, filters=_candidates())
    with torch.no_grad():
        mk.assignment[0] = -1
    with pytest.raises(ValueError, match="assignment buffer"):
        mk(torch.zeros(1, 8, 5, 5))


def test_item11_fit_grid_step_1e_12():
    with pytest.raises(ValueError, match="grid_step = 1e-12 gives"):
        fit_filters(_candidates(), grid_step=1e-12)


def test_item11_extract_arguments():
    y = RNG.standard_normal((20, 7, 7))
    for kw, name in ((dict(n_init=0), "n_init"), (dict(max_iter=0), "max_iter")):
        with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
            extract(y, **kw)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        extract(y, seed=-1)


def test_item11_save_safetensors_shared_tensors(tmp_path):
    from safetensors.torch import load_file

    w = torch.randn(4, 1, 3, 3)
    path = save_checkpoint_file({"a.weight": w, "b.weight": w}, tmp_path / "s.safetensors")
    back = load_file(str(path))
    assert torch.equal(back["a.weight"], w) and torch.equal(back["b.weight"], w)


def test_item11_load_bank_refusals(tmp_path):
    npy = tmp_path / "b.npy"
    np.save(npy, np.zeros((1, 1, 7, 7)))
    with pytest.raises(ValueError, match="not a bank file"):
        load_bank(npy)
    bank = make_bank([1.0, 2.0], ["dx"])
    good = save_bank(tmp_path / "good.npz", bank)
    with np.load(good) as data:
        arrays = dict(data)
    bad_method = tmp_path / "m.npz"
    np.savez(bad_method, **{**arrays, "method": np.array("magic")})
    with pytest.raises(ValueError, match=r"m.npz: the stored method must be one of"):
        load_bank(bad_method)
    bad_sigma = tmp_path / "s.npz"
    np.savez(bad_sigma, **{**arrays, "sigma": np.ones((2, 1))})
    with pytest.raises(ValueError, match="sigma must be 1-D"):
        load_bank(bad_sigma)
    assert load_bank(good).kernels.shape == (2, 1, 7, 7)


# ======================================================================================
# item 12: messages that say what is wrong


def test_item12_undecodable_text_file_named(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"Filter 1:\n\x87\x00\x01\n")
    with pytest.raises(ValueError, match=r"f.txt is not a UTF-8 text file \(byte 0x87"):
        load_filters(path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo never",))


def test_item12_malicious_pt_refused_as_unsafe(tmp_path):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"x": _Evil()}, protocol=2))
    for load in (load_checkpoint_file, load_filters):
        with pytest.raises(
            ValueError, match=r"refusing to load .*evil.pt: refused as unsafe.*system"
        ):
            load(path)


def test_item12_corrupt_pt_called_corrupt(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="cannot read .*broken.pt as a torch file: it is corrupt"):
        load_checkpoint_file(path)
    path.write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(ValueError, match="cannot read .*broken.pt as a torch file: it is corrupt"):
        load_checkpoint_file(path)


def test_item12_directory_as_checkpoint(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory, not a checkpoint file"):
        load_checkpoint_file(tmp_path)


def test_item12_discrete_gaussian_none():
    with pytest.raises(TypeError, match="got None"):
        discrete_gaussian(None)


def test_item12_extract_cli_messages(tmp_path, capsys):
    src = tmp_path / "f.npy"
    np.save(src, RNG.standard_normal((20, 7, 7)))
    with pytest.raises(SystemExit) as info:  # refused by the parser (issue 20: range named)
        main(["extract", str(src), "--out", str(tmp_path / "o.npy"), "--seed=-1"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1, err
    assert "--seed: must be an integer in [0, 4294967295]" in err
    txt = tmp_path / "f.txt"
    txt.write_text("not filters\n")
    err = _one_line_error(capsys, "extract", str(txt), "--out", str(tmp_path / "o2.npy"))
    assert "f.txt" in err and "Filter 1:" in err


def test_item12_random_bytes_npy(tmp_path):
    path = tmp_path / "r.npy"
    path.write_bytes(RNG.bytes(300))
    with pytest.raises(ValueError, match=r"r.npy as a .npy array: it is neither"):
        load_filters(path)


def test_item12_nan_message_names_the_layer():
    state = _state(channels=12)
    state["blocks.0.dwconv.weight"][5, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"layer 'blocks.0.dwconv.weight', channel 5"):
        extract(state, k=2)


# ======================================================================================
# item 13: valid filters at extreme scales


@pytest.mark.parametrize("scale", [1e300, 1e-300])  # 1e300 failed ("zero sum"); 1e-300 guards
def test_item13_fit_extreme_scales_like_unit_scale(scale):
    h = masterkey_model(8, 1.2, 0.9) + 1e-3 * RNG.standard_normal((7, 7))
    ref = fit_filter(h, 8, method="A")
    got = fit_filter(h * scale, 8, method="A")
    assert got.sigma_x == pytest.approx(ref.sigma_x, rel=1e-9)
    assert got.sigma_y == pytest.approx(ref.sigma_y, rel=1e-9)


# ======================================================================================
# item 14: accepted silently before


def test_item14_empty_class_folder_is_not_a_class(tmp_path):
    pytest.importorskip("PIL")
    from scalespace_mk.training.datasets import ImageFolderDataset

    _image_folder(tmp_path, {"cat": (8, 8), "dog": (8, 8)})
    (tmp_path / "empty").mkdir()
    with pytest.warns(RuntimeWarning, match=r"ignored 1 class folder.*'empty'"):
        ds = ImageFolderDataset(tmp_path, image_size=4)
    assert ds.classes == ["cat", "dog"]


def test_item14_16_bit_grey_png(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    from scalespace_mk.training.datasets import ImageFolderDataset

    (tmp_path / "a").mkdir()
    grey = np.full((16, 16), 128 * 256, dtype=np.uint16)  # mid grey in 16 bits
    Image.fromarray(grey).save(tmp_path / "a" / "g.png")
    with Image.open(tmp_path / "a" / "g.png") as img:
        assert img.mode.startswith("I")
    ds = ImageFolderDataset(tmp_path, image_size=8)
    x, _ = ds[0]
    assert int(x.min()) >= 126 and int(x.max()) <= 130  # not clipped to white


def test_item14_bank_plot_txt_writes_nothing(tmp_path, capsys):
    out = tmp_path / "b.npz"
    err = _one_line_error(capsys, "bank", "--out", str(out), "--plot", str(tmp_path / "p.txt"))
    assert "unknown figure format 'txt'" in err
    assert not out.exists()


def test_item14_complex_input_refused():
    h = _candidates().astype(complex) * (1 + 1j)
    with pytest.raises(TypeError, match="must be real"):
        load_filters(h)
    with pytest.raises(TypeError, match="must be real"):
        census(h)
    with pytest.raises(TypeError, match="sigma must be a real number"):
        discrete_gaussian(np.array([1.0 + 1j]))


def test_item14_ascii_digits_only(tmp_path, capsys):
    path = tmp_path / "f.txt"
    rows = "\n".join(" ".join(["1_0"] + ["0.5"] * 2) for _ in range(3))
    path.write_text(f"Filter 1:\n{rows}\n")
    with pytest.raises(ValueError, match="f.txt:2: a filter row must hold"):
        read_filter_text(path)
    path.write_text("Filter \u0663:\n1 2 3\n4 5 6\n7 8 9\n")
    with pytest.raises(ValueError, match="expected a header line"):
        read_filter_text(path)
    with pytest.raises(ValueError, match="unknown type 'mk\u0663'"):
        parse_model_types(["mk\u0663"])
    with pytest.raises(SystemExit) as info:  # argparse: usage line and error, exit 2
        main(["fit", "--filters", "masterkey", "--types", "\u0663"])
    assert info.value.code == 2 and "ASCII digits" in capsys.readouterr().err


# ======================================================================================
# item 15: long fits show progress and an estimate


def test_item15_fit_shows_progress_and_estimate(capsys):
    fit_filters(_candidates(), method="A", progress=True)
    err = capsys.readouterr().err
    assert "fit (method A): 0/8 filters" in err
    assert "fit (method A): done, 8 filters" in err
    fit_filters(_candidates(), method="A")  # default: quiet below 100 filters
    assert capsys.readouterr().err == ""


def test_item15_docs_point_to_the_census():
    assert "census" in fit_filters.__doc__.split("progress :")[1].split("Returns")[0]


# ======================================================================================
# fuzzing: the filter parser and the checkpoint loader raise only clean errors

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_CLEAN = (ValueError, TypeError, OSError)


def _load_or_none(load, path: Path, data: bytes):
    """Write ``data`` to ``path`` and load it; a clean error gives None, anything else fails."""
    path.write_bytes(data)
    try:
        return load(path)
    except _CLEAN:
        return None


_token = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["Filter 1:", "Filter 2:", "filter 3", "#", "1_0", "\u0663", "nan", ""]),
    st.text(max_size=8),
)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.lists(_token, max_size=5).map(" ".join), max_size=12))
def test_fuzz_filter_text_parser(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("fuzz") / "f.txt"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    try:
        arr = read_filter_text(path)
    except _CLEAN:
        return
    assert arr.ndim == 3 and arr.shape[1] == arr.shape[2]


def _valid_array_file(suffix: str) -> bytes:
    buf = io.BytesIO()
    filters = RNG.standard_normal((2, 3, 3))
    if suffix == ".npy":
        np.save(buf, filters)
    else:
        np.savez(buf, filters=filters)
    return buf.getvalue()


_ARRAYS = {suffix: _valid_array_file(suffix) for suffix in (".npy", ".npz")}


@settings(max_examples=100, deadline=None)
@given(
    suffix=st.sampled_from([".npy", ".npz"]),
    cut=st.integers(0, 400),
    patch=st.binary(min_size=0, max_size=6),
    noise=st.booleans(),
)
def test_fuzz_filter_array_files(tmp_path_factory, suffix, cut, patch, noise):
    data = _ARRAYS[suffix]
    cut = min(cut, len(data))
    data = data[:cut] + patch + data[cut + len(patch) :] if noise else data[:cut]
    arr = _load_or_none(load_filters, tmp_path_factory.mktemp("fuzz") / f"f{suffix}", data)
    assert arr is None or (arr.ndim == 3 and np.isfinite(arr).all())


def _valid_pt() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2, 1, 3, 3)}, buf)
    return buf.getvalue()


_PT = _valid_pt()


@settings(max_examples=200, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.tuples(st.integers(0, len(_PT) - 1), st.binary(min_size=1, max_size=8)).map(
            lambda c: _PT[: c[0]] + c[1] + _PT[c[0] + len(c[1]) :]
        ),
        st.integers(1, len(_PT)).map(lambda n: _PT[:n]),
    ),
    suffix=st.sampled_from([".pt", ".safetensors"]),
)
def test_fuzz_checkpoint_loader(tmp_path_factory, data, suffix):
    obj = _load_or_none(load_checkpoint_file, tmp_path_factory.mktemp("fuzz") / f"c{suffix}", data)
    assert isinstance(obj, dict | torch.Tensor | list | tuple | int | float | str | type(None))


@pytest.mark.parametrize("offset", [1427, 1488])
def test_checkpoint_whose_zip_directory_ends_early_is_a_clean_error(tmp_path, offset):
    """Bytes found by the fuzzer: the zip's CRC check met an early end of data (EOFError);
    the loader must say the file is corrupt, naming it, like any other damage."""
    data = _PT[:offset] + b"\x00\x00\x01\x00\x03" + _PT[offset + 5 :]
    path = tmp_path / "c.pt"
    path.write_bytes(data)
    try:
        load_checkpoint_file(path)
    except ValueError as exc:
        assert str(path) in str(exc)


def test_item14_cli_type_parsing_imports_no_torch():
    """The CLI's --types parsing stays importable without torch (fast --help)."""
    code = "import scalespace_mk.cli._args, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().lower()) is False
