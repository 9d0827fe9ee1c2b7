"""Bad input and faults, second pass (issue 20): one test per reproducer, named after it.

Each case ends in a clean result or one line naming the option or file and the fix, in
bounded time; no output that is not a regular file is ever replaced, nothing is written when
a command fails, and nothing non-finite is written or printed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _interrupt import interrupt_when_ready

from scalespace_mk import _io
from scalespace_mk.cli import main
from scalespace_mk.scalespace.kernels import SAMPLGAUSS_SIGMA_MIN, gaussian_kernel

REPO = Path(__file__).resolve().parents[1]
POSIX = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"scalespace-mk {command}: error:"), err
    assert "\n" not in err and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------ 1. outputs


@POSIX
def test_bank_out_fifo_is_refused_not_replaced(tmp_path, capsys):
    fifo = tmp_path / "f.npz"
    os.mkfifo(fifo)
    assert main(["bank", "--out", str(fifo)]) == 2
    assert "FIFO" in _one_line_error(capsys, "bank")
    assert fifo.is_fifo()


@POSIX
def test_atomic_path_never_replaces_a_fifo(tmp_path):
    fifo = tmp_path / "x.npy"
    os.mkfifo(fifo)
    with pytest.raises(_io.NotRegularFileError, match="FIFO"):
        with _io.atomic_path(fifo) as tmp:
            tmp.write_bytes(b"x")
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_atomic_path_refuses_a_device_and_a_directory(tmp_path):
    if os.path.exists("/dev/null"):
        with pytest.raises(_io.NotRegularFileError, match="device"):
            with _io.atomic_path("/dev/null"):
                pass
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(_io.NotRegularFileError, match="directory"):
        with _io.atomic_path(tmp_path / "d.npz"):
            pass


def test_atomic_path_refuses_a_fifo_made_during_the_write(tmp_path):
    target = tmp_path / "late.npz"
    with pytest.raises(_io.NotRegularFileError):
        with _io.atomic_path(target) as tmp:
            tmp.write_bytes(b"data")
            target.mkdir()  # something not a regular file appeared meanwhile
    assert target.is_dir() and [p.name for p in tmp_path.iterdir()] == ["late.npz"]


@pytest.mark.parametrize(
    "argv",
    [
        ["bank", "--out", "/dev/null"],
        ["bank", "--plot", "/dev/null"],
        ["census", "F", "--plot", "/dev/null"],
        ["extract", "F", "--out", "/dev/null"],
        ["replace", "F", "--out", "/dev/null"],
    ],
)
def test_device_as_output_refused_before_work(argv, tmp_path, capsys):
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    argv = [str(tmp_path / "f.npy") if a == "F" else a for a in argv]
    np.save(tmp_path / "f.npy", np.ones((2, 3, 3)))
    assert main(argv) == 2
    assert "device" in _one_line_error(capsys, argv[0])
    assert os.path.exists("/dev/null") and not Path("/dev/null").is_file()


def test_extract_out_npy_plot_txt_writes_nothing(tmp_path, capsys):
    np.save(tmp_path / "F.npy", np.random.default_rng(0).normal(size=(20, 3, 3)))
    out, fig = tmp_path / "o.npy", tmp_path / "p.txt"
    assert (
        main(["extract", str(tmp_path / "F.npy"), "-k", "2", "--out", str(out), "--plot", str(fig)])
        == 2
    )
    assert "--plot" in _one_line_error(capsys, "extract")
    assert not out.exists() and not fig.exists()


def test_bank_out_plot_existing_dir_writes_nothing(tmp_path, capsys):
    (tmp_path / "existing_dir.png").mkdir()
    out = tmp_path / "o.npz"
    assert main(["bank", "--out", str(out), "--plot", str(tmp_path / "existing_dir.png")]) == 2
    assert "directory" in _one_line_error(capsys, "bank")
    assert not out.exists()


@pytest.mark.parametrize("target", [".", "..", "/", "DIR", "DIR/"])
def test_bank_out_dot_dotdot_root_dir(target, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DIR").mkdir()
    assert main(["bank", "--out", target]) == 2
    err = _one_line_error(capsys, "bank")
    assert "partial" not in err and "Errno" not in err and "folder" in err or "directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DIR"]


def test_read_only_folder_is_called_read_only(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["bank", "--out", str(ro / "b.npz")]) == 2
        err = _one_line_error(capsys, "bank")
        assert "read-only" in err and "space" not in err
    finally:
        ro.chmod(0o700)


def test_users_file_matching_the_temp_pattern_is_kept(tmp_path):
    """A user's file named like a temporary file of a dead writer is never deleted."""
    host = _io._host_id()
    lookalikes = [
        tmp_path / f".notes.partial-{host}-1-abcdef.txt",  # the old naming
        tmp_path / f".notes.partial-{host}-1-abcdef-000000.txt",  # marker that does not fit
    ]
    for p in lookalikes:
        p.write_text("my notes")
    ours = tmp_path / _io._partial_name("ckpt", ".pt", host, 1, "abcdef")  # pid 1 never ours
    ours.write_bytes(b"x")
    with _io.atomic_path(tmp_path / "other.json") as tmp:
        tmp.write_text("{}")
    assert all(p.read_text() == "my notes" for p in lookalikes)
    # pid 1 (init) is alive on Linux, so even our own file of pid 1 is kept
    assert ours.exists() == _io._pid_alive(1)


def test_stale_temp_of_a_dead_writer_is_removed(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(proc.stdout)
    stale = tmp_path / _io._partial_name("ckpt", ".pt", _io._host_id(), dead, "a1b2c3")
    stale.write_bytes(b"half")
    assert _io.remove_stale_partials(tmp_path) == [stale]


# ------------------------------------------------------------------ SIGINT and pipes


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "scalespace_mk.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


_SLOW_COMMAND = """
import sys, time
import scalespace_mk.cli.{module} as m
def slow(args):
    print("ready", flush=True)
    time.sleep(60)
m.{attr} = slow
from scalespace_mk.cli import main
sys.exit(main({argv!r}))
"""


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX signals")
@pytest.mark.parametrize(
    "module, attr, argv",
    [
        ("census", "run", ["census", "f.npy"]),
        ("checkpoint", "_run_analyze", ["analyze", "c.pt"]),
        ("fit", "run", ["fit"]),
        ("checkpoint", "_run_replace", ["replace", "c.pt", "--out", "r.pt"]),
        ("train", "_run_train", ["train", "--out", "run"]),
    ],
)
def test_sigint_during_a_command_one_line_exit_130(module, attr, argv, tmp_path):
    code = _SLOW_COMMAND.format(module=module, attr=attr, argv=argv)
    returncode, _, err = interrupt_when_ready(code, tmp_path)
    assert returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip() == f"scalespace-mk {argv[0]}: interrupted (Ctrl-C); exit status 130"


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX pipes")
def test_census_json_into_a_closed_pipe_is_quiet(tmp_path):
    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(size=(3000, 5, 5)))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = (
        f"{sys.executable} -m scalespace_mk.cli census {tmp_path / 'f.npy'} --null none "
        "--json | head -c 5"
    )
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], env=env, capture_output=True, text=True, timeout=120
    )
    assert "Errno 32" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0


def test_broken_pipe_in_main_is_quiet(monkeypatch, capsys):
    import scalespace_mk.cli.bank as bank_cli

    def boom(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(bank_cli, "run", boom)
    monkeypatch.setattr(_io, "check_output_path", lambda p, *a, **k: Path(p))
    monkeypatch.setattr("scalespace_mk.cli._silence_stdout", lambda: None)
    assert main(["bank", "--out", "never.npz"]) == 0
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ 2. finite or refused


@pytest.mark.parametrize("method", ["normsamplgauss", "intgauss", "linintgauss", "discgauss"])
@pytest.mark.parametrize("sigma", [5e-324, 1e-320, 1e-310, 1e-300, 1e-150])
def test_kernels_at_subnormal_sigma_are_the_unit_impulse(method, sigma):
    k = gaussian_kernel(sigma, method=method, size=5)
    assert np.isfinite(k).all()
    np.testing.assert_allclose(k, [0, 0, 1, 0, 0], atol=1e-140)


def test_samplgauss_at_subnormal_sigma_refused_or_finite():
    with pytest.raises(ValueError, match="too small for method 'samplgauss'.*sigma = 0"):
        gaussian_kernel(1e-320, method="samplgauss", size=5)
    k = gaussian_kernel(SAMPLGAUSS_SIGMA_MIN, method="samplgauss", size=3)
    assert np.isfinite(k).all() and k[1] > 1e308
    k = gaussian_kernel(1e-300, method="samplgauss", size=3)
    assert k[1] == pytest.approx(1 / (math.sqrt(2 * math.pi) * 1e-300))


def test_linintgauss_tiny_sigma_matches_its_limit():
    # for sigma -> 0 the neighbours are sigma / sqrt(2 pi) (the triangle's tails), exactly
    k = gaussian_kernel(1e-200, method="linintgauss", size=3)
    assert k[0] == pytest.approx(1e-200 / math.sqrt(2 * math.pi), rel=1e-12)
    assert k[1] == pytest.approx(1.0, abs=1e-15)


def test_bank_samplgauss_sigma_1e_320_writes_nothing(tmp_path, capsys):
    out = tmp_path / "b.npz"
    assert main(["bank", "--method", "samplgauss", "--sigma", "1e-320", "--out", str(out)]) == 2
    assert "samplgauss" in _one_line_error(capsys, "bank")
    assert not out.exists()
    assert main(["bank", "--method", "normsamplgauss", "--sigma", "1e-320", "--out", str(out)]) == 0
    with np.load(out) as z:
        assert np.isfinite(z["kernels"]).all()


def test_float32_kernel_overflow_refused():
    with pytest.raises(ValueError, match="overflows"):
        gaussian_kernel(torch.tensor(1e-40, dtype=torch.float32), method="samplgauss", size=3)


# ------------------------------------------------------------------ training: lock, NaN, resume

from dataclasses import replace as _replace  # noqa: E402

from scalespace_mk.networks.checkpoint import load_checkpoint_file  # noqa: E402
from scalespace_mk.training.runlock import RunFolderLockedError, lock_run_folder  # noqa: E402
from scalespace_mk.training.train import TrainConfig, train  # noqa: E402

CFG = TrainConfig(
    model="convnextv2_test",
    data="synthetic:32",
    image_size=32,
    batch_size=16,
    epochs=1,
    seed=1,
    ema_decay=0.5,
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    train(CFG, out, progress=False)
    return out, load_checkpoint_file(out / "last.pt")


def test_two_train_runs_same_out_second_refused(tmp_path):
    out = tmp_path / "run"
    held = lock_run_folder(out)  # a live run (this process) holds the folder
    try:
        with pytest.raises(RunFolderLockedError, match=f"pid {os.getpid()}"):
            train(CFG, out, progress=False)
        with pytest.raises(RunFolderLockedError, match="in use by another training run"):
            train(CFG, out, resume=True, progress=False)
    finally:
        held.release()
    assert not (out / "last.pt").exists()


def test_train_cli_beside_a_live_run_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    with lock_run_folder(out):
        argv = ["train", "--model", "convnextv2_test", "--data", "synthetic:16", "--out", str(out)]
        assert main(argv) == 2
        assert "in use by another training run (pid" in _one_line_error(capsys, "train")


def test_lock_is_dropped_when_the_holder_dies(tmp_path):
    out = tmp_path / "run"
    code = (
        f"from scalespace_mk.training.runlock import lock_run_folder\n"
        f"lock_run_folder({str(out)!r}); import os; os._exit(0)"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=True,
        timeout=60,
    )
    lock_run_folder(out).release()  # a dead holder never blocks


def test_failed_start_leaves_no_run_folder(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ValueError):
        train(_replace(CFG, data="synthetic:0"), out, progress=False)
    assert not out.exists()


@pytest.mark.parametrize("option", [{"lr": 1e308}, {"weight_decay": 1e308, "lr": 1.0}])
def test_train_lr_1e308_stops_naming_the_step_and_option(tmp_path, option):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match=r"at step \d+ .*--lr .*--weight-decay") as info:
        train(_replace(CFG, **option), out, progress=False)
    assert "\n" not in str(info.value)
    assert not (out / "last.pt").exists()  # nothing non-finite saved


def test_non_finite_checkpoint_never_saved_over_a_good_one(finished_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    before = (out / "last.pt").read_bytes()
    from scalespace_mk.training import train as train_mod

    real = train_mod._train_step

    def poisoned(run, batches, sums):
        real(run, batches, sums)
        with torch.no_grad():
            next(run.model.parameters()).fill_(float("nan"))

    import unittest.mock

    with unittest.mock.patch.object(train_mod, "_train_step", poisoned):
        with pytest.raises(RuntimeError, match="training stopped, nothing was saved"):
            train(_replace(CFG, epochs=2), out, resume=True, progress=False)
    assert (out / "last.pt").read_bytes() == before


@pytest.mark.parametrize(
    ("entry", "value", "message"),
    [
        ("num_classes", 0, "'num_classes' is 0"),
        ("num_classes", "ten", "'num_classes' is missing or damaged"),
        ("scaler", "damaged", "'scaler' is missing or damaged"),
        ("scaler", {"scale": float("nan")}, "'scaler' is missing or damaged"),
        ("partial", [1.0], "'partial' is missing or damaged"),
        ("partial", [float("inf"), 1, 1], "'partial' is missing or damaged"),
    ],
)
def test_resume_checkpoint_field_damaged(finished_run, tmp_path, entry, value, message):
    state = dict(finished_run[1])
    state[entry] = value
    (tmp_path / "run").mkdir()
    torch.save(state, tmp_path / "run" / "last.pt")
    with pytest.raises(ValueError, match=message) as info:
        train(_replace(CFG, epochs=2), tmp_path / "run", resume=True, progress=False)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ 3. our words

import struct  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from scalespace_mk.networks.checkpoint import (  # noqa: E402
    NESTING_MAX,
    check_nesting,
    find_depthwise,
)


def _safetensors_with_header(path: Path, header, body: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    return path


def _good_header():
    return {
        "blocks.0.dwconv.weight": {"dtype": "F32", "shape": [4, 1, 3, 3], "data_offsets": [0, 144]}
    }


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda h: h["blocks.0.dwconv.weight"].update(dtype="Q99"), "unknown dtype 'Q99'"),
        (lambda h: h.update(__metadata__="a string"), "'__metadata__' must be an object"),
        (lambda h: h["blocks.0.dwconv.weight"].update(shape=[4, 1, 3, 4]), "needs 192 bytes"),
        (lambda h: h["blocks.0.dwconv.weight"].update(data_offsets=[0, 10**6]), "outside"),
        (lambda h: h.update(x=[1, 2]), "described by a list"),
    ],
)
@pytest.mark.parametrize("command", ["analyze", "census", "replace"])
def test_safetensors_corrupt_header_in_our_words(tmp_path, capsys, change, words, command):
    header = _good_header()
    change(header)
    path = _safetensors_with_header(tmp_path / "c.safetensors", header, bytes(144))
    argv = [command, str(path)] + (
        ["--out", str(tmp_path / "r.pt")] if command == "replace" else []
    )
    assert main(argv) == 2
    err = _one_line_error(capsys, command)
    assert words in err and "c.safetensors" in err
    assert "variant" not in err and "AttributeError" not in err and "deserializ" not in err


def test_safetensors_header_a_list_or_truncated(tmp_path):
    path = _safetensors_with_header(tmp_path / "l.safetensors", [1, 2])
    with pytest.raises(ValueError, match="header is a JSON list"):
        load_checkpoint_file(path)
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(ValueError, match="header declares"):
        load_checkpoint_file(path)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.one_of(
        _JSON,
        st.dictionaries(
            st.sampled_from(["w", "__metadata__", "blocks.0.dwconv.weight"]),
            st.fixed_dictionaries(
                {},
                optional={
                    "dtype": st.sampled_from(["F32", "F64", "Q9", 3]),
                    "shape": _JSON,
                    "data_offsets": _JSON,
                },
            )
            | _JSON,
            max_size=3,
        ),
    ),
    body=st.binary(max_size=64),
)
def test_fuzz_safetensors_headers(tmp_path_factory, header, body):
    """Any JSON header: a mapping of tensors or one ValueError naming the file."""
    path = _safetensors_with_header(tmp_path_factory.mktemp("st") / "f.safetensors", header, body)
    try:
        state = load_checkpoint_file(path)
    except ValueError as exc:
        assert "f.safetensors" in str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(state, dict) and all(isinstance(t, torch.Tensor) for t in state.values())


def test_self_referencing_checkpoint(tmp_path, capsys):
    state = {"w": torch.randn(4, 1, 3, 3)}
    state["self"] = state
    torch.save(state, tmp_path / "s.pt")
    with pytest.raises(ValueError, match="'self' contains itself"):
        load_checkpoint_file(tmp_path / "s.pt")
    with pytest.raises(ValueError, match="contains itself"):
        find_depthwise(state)
    assert main(["analyze", str(tmp_path / "s.pt")]) == 2
    assert "contains itself" in _one_line_error(capsys, "analyze")


@settings(max_examples=30, deadline=None)
@given(depth=st.integers(0, 3 * NESTING_MAX), cycle=st.booleans(), as_list=st.booleans())
def test_fuzz_checkpoint_nesting(depth, cycle, as_list):
    leaf = {"blocks.0.dwconv.weight": torch.zeros(2, 1, 3, 3)}
    obj: object = leaf
    for _ in range(depth):
        obj = [obj] if as_list else {"m": obj}
    if cycle:
        leaf["loop"] = obj
    if cycle or depth >= NESTING_MAX:
        with pytest.raises(ValueError, match="contains itself|nested more than"):
            check_nesting(obj)
    else:
        check_nesting(obj)


@pytest.mark.parametrize("payload", [5, None, [1, 2, 3], "text"])
def test_checkpoint_that_is_not_a_mapping(tmp_path, capsys, payload):
    torch.save(payload, tmp_path / "p.pt")
    for command in ("analyze", "replace"):
        argv = [command, str(tmp_path / "p.pt")]
        if command == "replace":
            argv += ["--out", str(tmp_path / "r.pt")]
        assert main(argv) == 2
        err = _one_line_error(capsys, command)
        assert "not iterable" not in err and "dict-like" not in err
    assert not (tmp_path / "r.pt").exists()


# ------------------------------------------------------------------ 4. training data, eval


def _image_tree(root: Path, classes: dict[str, list[str]]) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        for name, files in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, fname in enumerate(files):
                img = Image.new("RGB", (40, 40), (40 * i % 255, 90, 160))
                img.save(folder / fname, format="GIF" if fname.endswith(".gif") else "PNG")
    return root


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("strict", [False, True])
def test_fifo_named_x_png_never_blocks(tmp_path, strict):
    root = _image_tree(tmp_path / "d", {"a": ["1.png", "2.png"], "b": ["1.png", "2.png"]})
    os.mkfifo(root / "train" / "a" / "x.png")
    proc = subprocess.run(  # a blocking open would hang: run it where a timeout can kill it
        [
            sys.executable,
            "-c",
            "import sys, warnings; warnings.simplefilter('ignore')\n"
            "from scalespace_mk.training.datasets import build_dataset, CorruptImageError\n"
            f"try:\n ds, k = build_dataset({str(root)!r}, split='train', image_size=32,"
            f" strict={strict})\n"
            " print(len(ds), k)\n"
            "except CorruptImageError as e:\n print('refused', e)\n",
        ],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    if strict:
        assert proc.stdout.startswith("refused") and "x.png" in proc.stdout
        assert "not regular files" in proc.stdout
    else:
        assert proc.stdout.split() == ["4", "2"]


def test_gif_only_class_sorted_first_same_in_train_and_val(tmp_path):
    from scalespace_mk.training.datasets import build_dataset

    root = _image_tree(
        tmp_path / "d", {"a_gifs": ["1.gif"], "b": ["1.png", "2.png"], "c": ["1.png"]}
    )
    with pytest.warns(RuntimeWarning, match="hold no image files"):
        train_set, k_train = build_dataset(str(root), split="train", image_size=32)
    with pytest.warns(RuntimeWarning, match="hold no image files"):
        val_set, k_val = build_dataset(str(root), split="val", image_size=32)
    assert k_train == k_val == 2
    assert train_set.classes == val_set.classes == ["b", "c"]
    assert sorted(set(val_set.targets)) == [0, 1]


@pytest.fixture
def eval_checkpoint(finished_run, tmp_path):
    return finished_run[1], tmp_path / "e.pt"


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda s: s.pop(next(iter(s))), "missing keys"),
        (lambda s: s.update(extra=torch.zeros(1)), "unexpected keys extra"),
        (lambda s: s.update({k: torch.zeros(3, 3) for k in list(s)[:1]}), "wrongly shaped"),
    ],
)
def test_eval_missing_extra_misshaped_keys_one_line(eval_checkpoint, capsys, edit, words):
    state, path = eval_checkpoint
    state = dict(state)
    weights = dict(state["deploy"] if state.get("deploy") is not None else state["model"])
    edit(weights)
    state["deploy" if state.get("deploy") is not None else "model"] = weights
    torch.save(state, path)
    assert main(["eval", str(path), "--data", "synthetic:32", "--no-progress"]) == 2
    err = _one_line_error(capsys, "eval")
    assert words in err and "Error(s) in loading" not in err


def test_eval_json_with_nan_weights_refused(eval_checkpoint, capsys):
    state, path = eval_checkpoint
    state = dict(state)
    key = "deploy" if state.get("deploy") is not None else "model"
    weights = {k: v.clone() for k, v in state[key].items()}
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name].fill_(float("nan"))
    state[key] = weights
    torch.save(state, path)
    assert main(["eval", str(path), "--data", "synthetic:32", "--json", "--no-progress"]) == 2
    assert "NaN or Inf" in _one_line_error(capsys, "eval")
    assert "NaN" not in capsys.readouterr().out


# ------------------------------------------------------------------ 5-6. bounded, API

from scalespace_mk import limits  # noqa: E402
from scalespace_mk.analysis.census import census  # noqa: E402
from scalespace_mk.networks.checkpoint import analyze, compare, extract, replace  # noqa: E402
from scalespace_mk.networks.layers import AnalyticDepthwiseConv2d  # noqa: E402
from scalespace_mk.scalespace.kernels import discrete_gaussian  # noqa: E402

FILTERS = np.random.default_rng(20).normal(size=(24, 7, 7))


def test_census_sigma_max_tiny_refused_not_indexerror():
    with pytest.raises(ValueError, match="sigma_max must be >= 1e-100"):
        census(FILTERS, sigma_max=1e-300)


def test_census_device_cuda_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="device 'cuda' was requested"):
        census(FILTERS, device="cuda")


def test_census_batch_size_huge_refused():
    with pytest.raises(ValueError, match="batch_size must be at most"):
        census(FILTERS, batch_size=10**30)


def test_census_bfloat16_and_half_computed_in_float64():
    for dtype in (torch.bfloat16, torch.float16):
        x = torch.tensor(FILTERS[:6], dtype=dtype)
        got = census(x)
        same = census(x.to(torch.float64).numpy())
        np.testing.assert_array_equal(got.best, same.best)
        np.testing.assert_array_equal(got.r2, same.r2)


def test_jet_basis_2_none():
    from scalespace_mk.scalespace.jets import jet_basis

    with pytest.raises(TypeError, match="sigma_x must be a number"):
        jet_basis(2, None)


def test_discrete_gaussian_meta_tensor_and_huge_int():
    with pytest.raises(ValueError, match="meta tensor"):
        discrete_gaussian(torch.tensor(1.0, device="meta"))
    with pytest.raises(ValueError, match="SIGMA_LIMIT"):
        discrete_gaussian(10**400)
    with pytest.raises(ValueError, match="meta tensor"):
        census(torch.empty(3, 7, 7, device="meta"))


def test_discrete_gaussian_half_inputs_in_callers_dtype():
    for dtype in (torch.float16, torch.bfloat16):
        k = discrete_gaussian(torch.tensor(1.0, dtype=dtype), size=5)
        assert k.dtype == dtype
        ref = discrete_gaussian(1.0, size=5)
        np.testing.assert_allclose(k.double().numpy(), ref, rtol=1e-2)


@pytest.mark.parametrize("n", [-1, 10**9, 1.5, "10"])
def test_create_model_num_classes_refused(n):
    from scalespace_mk.networks import create_model

    with pytest.raises(ValueError, match=r"num_classes must be an integer in \[0, 100000\]"):
        create_model("convnextv2_test", num_classes=n)
    with torch.device("meta"):  # 0 is documented: features only, no classifier
        model = create_model("convnextv2_test", num_classes=0)
    assert isinstance(model.head.fc, torch.nn.Identity)


def _dw_state(scale: float = 1.0) -> dict:
    g = torch.Generator().manual_seed(3)
    return {
        "stem.weight": torch.randn(8, 3, 3, 3, generator=g),
        "blocks.0.dwconv.weight": torch.randn(16, 1, 7, 7, generator=g, dtype=torch.float64)
        * scale,
    }


def test_analyze_n_boot_0_and_huge_refused():
    with pytest.raises(ValueError, match="n_boot must be an integer in"):
        analyze(_dw_state(), n_boot=0, null="none")
    with pytest.raises(ValueError, match="BOOTSTRAP_MAX"):
        analyze(_dw_state(), n_boot=10**9, null="none")


def test_bank_alpha_minus_1(capsys, tmp_path):
    assert main(["bank", "--alpha", "-1", "--out", str(tmp_path / "b.npz")]) == 2
    assert "--alpha must be a finite number >= 0" in _one_line_error(capsys, "bank")
    assert not (tmp_path / "b.npz").exists()


def test_train_filters_with_dwconv_learned(tmp_path, capsys):
    argv = [
        "train",
        "--model",
        "convnextv2_test",
        "--data",
        "synthetic:16",
        "--dwconv",
        "learned",
        "--filters",
        "x.npy",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 2
    assert "--filters is used only by" in _one_line_error(capsys, "train")
    assert not (tmp_path / "r").exists()


def test_train_seed_minus_1(tmp_path, capsys):
    argv = [
        "train",
        "--model",
        "convnextv2_test",
        "--data",
        "synthetic:16",
        "--seed",
        "-1",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 2
    assert "--seed must be an integer in [0, 4294967295]" in _one_line_error(capsys, "train")


def test_memory_budget_zero_bytes(monkeypatch):
    for text in ("0", "0.0001K"):
        monkeypatch.setenv(limits.MEMORY_BUDGET_ENV, text)
        with pytest.raises(ValueError, match=limits.MEMORY_BUDGET_ENV):
            limits.memory_budget()


def test_text_filter_file_over_the_cap(tmp_path, monkeypatch):
    from scalespace_mk.analysis.filters import read_filter_text

    path = tmp_path / "f.txt"
    path.write_text("Filter 1:\n" + "0 0 0\n0 1 0\n0 0 0\n" * 50)
    monkeypatch.setattr(limits, "TEXT_FILE_BYTES_MAX", 100)
    with pytest.raises(ValueError, match="TEXT_FILE_BYTES_MAX"):
        read_filter_text(path)


def test_pt_with_64_corrupted_bytes_refused(tmp_path, capsys):
    import zipfile

    path = tmp_path / "c.pt"
    torch.save(_dw_state(), path)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    h = info.header_offset
    n, e = struct.unpack("<HH", raw[h + 26 : h + 30])
    start = h + 30 + n + e
    for i in range(64):
        raw[start + 64 + i] ^= 0x5A
    path.write_bytes(raw)
    with pytest.raises(ValueError, match="fails its CRC-32 check"):
        load_checkpoint_file(path)
    assert main(["replace", str(path), "--out", str(tmp_path / "r.pt")]) == 2
    assert "CRC-32" in _one_line_error(capsys, "replace")
    assert not (tmp_path / "r.pt").exists()


def test_replace_njet_order_0_refused_not_order_2(tmp_path):
    torch.save(_dw_state(), tmp_path / "c.pt")
    with pytest.raises(SystemExit):
        main(
            [
                "replace",
                str(tmp_path / "c.pt"),
                "--out",
                str(tmp_path / "r.pt"),
                "--njet-order",
                "0",
            ]
        )
    assert not (tmp_path / "r.pt").exists()


def test_replace_njet_on_constant_filters_prints_no_nan(tmp_path, capsys):
    state = {"blocks.0.dwconv.weight": torch.ones(4, 1, 7, 7)}
    torch.save(state, tmp_path / "c.pt")
    assert (
        main(
            [
                "replace",
                str(tmp_path / "c.pt"),
                "--out",
                str(tmp_path / "r.pt"),
                "--njet-order",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    # constant filters are kept exactly by the substitution: R^2 1, never NaN
    assert "nan" not in out.lower() and "median 1.000" in out
    assert (
        main(
            [
                "replace",
                str(tmp_path / "c.pt"),
                "--out",
                str(tmp_path / "r.pt"),
                "--njet-order",
                "2",
                "--json",
            ]
        )
        == 0
    )
    json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))


def test_replace_copying_nan_from_non_depthwise_refused(tmp_path):
    state = _dw_state()
    state["stem.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="not depthwise weights.*'stem.weight'"):
        replace(state, out=tmp_path / "r.pt")
    assert not (tmp_path / "r.pt").exists()


@pytest.mark.parametrize("scale", [1e-300, 1e307])
def test_extract_honours_scale_invariance(scale):
    ref = extract(FILTERS, k=3, seed=0)
    got = extract(FILTERS * scale, k=3, seed=0)
    np.testing.assert_array_equal(got.assignment, ref.assignment)
    np.testing.assert_allclose(got.filters, ref.filters, atol=1e-12)


@pytest.mark.parametrize(("option", "value"), [("mode", "full"), ("sigma_max", 1.0)])
def test_layer_option_change_after_forward_drops_stale_kernel(option, value):
    def fresh(**kw):
        return AnalyticDepthwiseConv2d(
            8, 7, sigma_x=torch.full((8,), 3.0), learn_scales=False, **kw
        ).eval()

    layer = fresh()
    with torch.no_grad():
        before = layer(torch.randn(1, 8, 9, 9))
        setattr(layer, option, value)
        after = layer.kernel()
    expected = fresh(**{option: value}).kernel()
    torch.testing.assert_close(after, expected, rtol=0, atol=0)
    assert before is not None and not torch.equal(after, fresh().kernel())
    with pytest.raises(ValueError):
        layer.mode = "bogus"


def test_analytic_layer_adam_lr_1e30_clear_error():
    torch.manual_seed(0)
    layer = AnalyticDepthwiseConv2d(8, 7, sigma_x=torch.full((8,), 1.0))
    opt = torch.optim.Adam(layer.parameters(), lr=1e30)
    x = torch.randn(1, 8, 12, 12)
    with pytest.raises(ValueError, match="kernel is not finite.*learning rate"):
        for _ in range(3):
            loss = layer(x).square().mean()
            assert torch.isfinite(loss)  # never a silent NaN: an error comes first
            opt.zero_grad()
            loss.backward()
            opt.step()


def test_compare_stages_huge():
    with pytest.raises(ValueError, match="STAGES_MAX"):
        compare([analyze(_dw_state(), null="none")] * 2, stages=10**12)


# ------------------------------------------------------------------ 7. fuzz every CLI integer

import argparse  # noqa: E402

from scalespace_mk.cli import build_parser  # noqa: E402


def _int_options() -> list[tuple[str, str, object]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(getattr(a, "choices", None), dict))
    found = []
    for command, sp in sub.choices.items():
        for action in sp._actions:
            name = getattr(action.type, "__name__", "")
            if name in ("integer", "_int", "_positive_int") or name.startswith("-"):
                found.append((command, action.option_strings[0], action.type))
    return found


INT_OPTIONS = _int_options()

_INT_TEXT = st.one_of(
    st.integers(-(10**40), 10**40).map(str),
    st.sampled_from(
        [
            "0",
            "-1",
            "1",
            "2",
            "3",
            "4",
            "5",
            "1023",
            "1024",
            "1025",
            "4294967295",
            "4294967296",
            "9" * 400,
            "-" + "9" * 400,
            "1_0",
            "\u0663",
            "+3",
            "1e3",
            " 7",
            "0x10",
            "",
            "nan",
            "999999999999999999999999999999999",
        ]
    ),
)


def test_every_cli_integer_option_is_fuzzed():
    names = {(c, o) for c, o, _ in INT_OPTIONS}
    assert {
        ("analyze", "--stages"),
        ("train", "--workers"),
        ("eval", "--workers"),
        ("census", "--threads"),
        ("extract", "-k"),
        ("replace", "--njet-order"),
    } <= names


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, len(INT_OPTIONS) - 1), text=_INT_TEXT)
def test_fuzz_cli_integer_options(index, text):
    """Every integer option: an int in its documented range, or one clear refusal."""
    from scalespace_mk.cli.train import config_from_args

    command, option, kind = INT_OPTIONS[index]
    started = time.perf_counter()
    if command == "train" and kind.__name__ == "integer":  # TrainConfig checks the range
        parser = build_parser()
        try:
            args = parser.parse_args(
                [
                    command,
                    "--model",
                    "convnextv2_test",
                    "--data",
                    "synthetic:16",
                    "--out",
                    "never",
                    option,
                    text,
                ]
            )
        except SystemExit:
            return
        try:
            cfg = config_from_args(args)
        except ValueError as exc:
            assert "\n" not in str(exc) and option in str(exc), str(exc)
        else:
            value = getattr(cfg, option.lstrip("-").replace("-", "_"))
            assert value is None or 0 <= value <= max(limits.EPOCHS_MAX, 1 << 62)
    else:
        try:
            value = kind(text)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            assert "\n" not in str(exc) and "Traceback" not in str(exc)
        else:
            assert isinstance(value, int) and limits.is_ascii_int(text.strip())
            if kind.__name__ != "_int":  # bank --size: check_size bounds it (tested above)
                assert -1 < value <= max(hi for _, hi, _ in limits.COUNT_LIMITS.values())
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (
            ["analyze", "c.pt", "--stages", "1" + "0" * 30],
            "--stages: must be an integer in [1, 1000]",
        ),
        (
            ["census", "f.npy", "--threads", "100000000"],
            "--threads: must be an integer in [1, 1024]",
        ),
        (["eval", "c.pt", "--data", "synthetic:8", "--workers", "100000000000"], "WORKERS_MAX"),
    ],
)
def test_huge_integer_options_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and words in err, err


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("synthetic:" + "9" * 25, "SYNTHETIC_SAMPLES_MAX"),
        ("synthetic:16,classes=100000000", "CLASSES_MAX"),
    ],
)
def test_train_data_synthetic_huge(spec, words, tmp_path, capsys):
    argv = ["train", "--model", "convnextv2_test", "--data", spec, "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert words in _one_line_error(capsys, "train")
    assert not (tmp_path / "r").exists()


def test_train_workers_huge(tmp_path, capsys):
    argv = [
        "train",
        "--model",
        "convnextv2_test",
        "--data",
        "synthetic:16",
        "--workers",
        "100000000000",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 2
    assert "WORKERS_MAX" in _one_line_error(capsys, "train")


def test_layer_on_cuda_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="device 'cuda' was requested"):
        AnalyticDepthwiseConv2d(4, 7, device="cuda")


# ------------------------------------------------------------------ JSON always valid


def _strict_json(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))


def test_json_encoder_maps_non_finite_to_null_with_reason():
    from scalespace_mk import _json

    text = _json.dumps({"a": -math.inf, "b": [1.0, np.float32("nan")], "c": np.int64(3)})
    out = _strict_json(text)
    assert out["a"] is None and out["b"] == [1.0, None] and out["c"] == 3
    assert set(out["null_reasons"]) == {"a", "b[1]"} and "-Infinity" in out["null_reasons"]["a"]
    assert _strict_json(_json.dumps([math.inf])) == [None]


@pytest.mark.parametrize("command", ["spread", "census"])
def test_spread_census_json_on_taps_near_float_max(tmp_path, capsys, command):
    f = np.random.default_rng(1).normal(size=(5, 7, 7))
    f = f / np.abs(f).max() * 1.7e308
    f[1] = np.random.default_rng(2).normal(size=(7, 7)) * 1e-300
    np.save(tmp_path / "f.npy", f)
    argv = (
        ["spread", "--filters", str(tmp_path / "f.npy"), "--json"]
        if command == "spread"
        else ["census", str(tmp_path / "f.npy"), "--json", "--null", "none"]
    )
    assert main(argv) == 0
    out = _strict_json(capsys.readouterr().out)
    if command == "spread":  # moments are scale free: finite for every filter
        ref = __import__("scalespace_mk.analysis.spread", fromlist=["spread"]).spread(
            f / np.abs(f).max(axis=(1, 2), keepdims=True)
        )
        for rec, mean in zip(out["filters"], ref.mean, strict=True):
            np.testing.assert_allclose(rec["mean"], mean, rtol=1e-12)
        assert all(k.endswith(".l1") for k in out.get("null_reasons", {}))


@pytest.mark.parametrize(
    ("entry", "value", "words"),
    [
        ("config", 5, "'config' is missing or damaged (it has the wrong type)"),
        ("num_classes", "ten", "'num_classes' is missing or damaged"),
    ],
)
def test_eval_damaged_entries_in_our_words(eval_checkpoint, capsys, entry, value, words):
    state, path = eval_checkpoint
    state = dict(state)
    state[entry] = value
    torch.save(state, path)
    assert main(["eval", str(path), "--data", "synthetic:32", "--no-progress"]) == 2
    err = _one_line_error(capsys, "eval")
    assert words in err and "not iterable" not in err


def test_eval_model_entry_not_a_mapping(eval_checkpoint, capsys):
    state, path = eval_checkpoint
    state = dict(state)
    key = "deploy" if state.get("deploy") is not None else "model"
    state[key] = 5
    torch.save(state, path)
    assert main(["eval", str(path), "--data", "synthetic:32", "--no-progress"]) == 2
    err = _one_line_error(capsys, "eval")
    assert "expected a state dict, got int" in err and "dict-like" not in err


@settings(max_examples=60, deadline=None)
@given(
    sigma=st.one_of(
        st.floats(0.0, 1e-300, allow_subnormal=True), st.sampled_from([5e-324, 1e-320])
    ),
    method=st.sampled_from(["discgauss", "normsamplgauss", "intgauss", "linintgauss"]),
)
def test_fuzz_kernels_finite_down_to_subnormal_sigma(sigma, method):
    """Finite, mass 1 and the unit impulse up to the neighbours' sigma / sqrt(2 pi)."""
    k = gaussian_kernel(sigma, method=method, size=5)
    assert np.isfinite(k).all()
    assert k[2] == pytest.approx(1.0, abs=1e-15)
    assert np.abs(k[[0, 1, 3, 4]]).max() <= max(sigma, 0.0)  # at most sigma / sqrt(2 pi)
    assert k.sum() == pytest.approx(1.0, abs=1e-15)


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX pipes")
def test_spread_text_into_a_closed_pipe_is_quiet(tmp_path):
    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(size=(4000, 5, 5)))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = f"{sys.executable} -m scalespace_mk.cli spread --filters {tmp_path / 'f.npy'} | head -3"
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.stderr == "" and proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 3
