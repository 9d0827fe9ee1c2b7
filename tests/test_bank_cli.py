"""Tests of :mod:`scalespace_mk.scalespace.bank` and the ``scalespace-mk bank`` command."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scalespace_mk.cli import main
from scalespace_mk.plot import plot_bank
from scalespace_mk.scalespace.bank import DEFAULT_MODELS, Bank, load_bank, make_bank, save_bank
from scalespace_mk.scalespace.models import model_kernel

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def expected(name, sigma, *, alpha=0.5, **kw):
    extra = {"alpha": alpha} if name == "mk7" else {}
    return model_kernel(name, sigma, **extra, **kw)


def test_make_bank_equals_model_kernel():
    sig = [0.0, 0.5, 1.3]
    bank = make_bank(sig)
    assert bank.kernels.shape == (3, 8, 7, 7)
    assert bank.models == DEFAULT_MODELS
    for i, s in enumerate(sig):
        for j, name in enumerate(DEFAULT_MODELS):
            np.testing.assert_allclose(bank.kernels[i, j], expected(name, s), rtol=0, atol=1e-15)
    # sigma = 0: mk8 is the delta, mk7 = K - alpha nabla5 K
    assert bank.kernels[0, 7, 3, 3] == 1.0 and bank.kernels[0, 7].sum() == 1.0
    assert bank.kernels[0, 6, 3, 3] == pytest.approx(1.0 + 4 * 0.5)


def test_make_bank_options():
    bank = make_bank(2.0, ["dx", "lap", "mk7"], alpha=0.25, size=9, method="intgauss", mode="full")
    assert bank.kernels.shape == (1, 3, 9, 9)
    kw = dict(size=9, method="intgauss", mode="full")
    for j, name in enumerate(["dx", "lap", "mk7"]):
        np.testing.assert_allclose(
            bank.kernels[0, j], expected(name, 2.0, alpha=0.25, **kw), rtol=0, atol=1e-15
        )


def test_save_and_load_roundtrip(tmp_path):
    bank = make_bank([0.7, 1.0], ["mk1", "mk7"], alpha=0.3)
    path = save_bank(tmp_path / "b.npz", bank)
    with np.load(path, allow_pickle=False) as data:
        assert data["models"].dtype.kind == "U"
        np.testing.assert_array_equal(data["kernels"], bank.kernels)
    back = load_bank(path)
    assert isinstance(back, Bank)
    np.testing.assert_array_equal(back.kernels, bank.kernels)
    np.testing.assert_array_equal(back.sigma, bank.sigma)
    assert back.models == ("mk1", "mk7")
    assert (back.alpha, back.size, back.method, back.mode) == (0.3, 7, "discgauss", "paper")
    # no suffix is appended, and no temporary file is left behind
    save_bank(tmp_path / "plain", bank)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npz", "plain"]


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        (dict(sigma=-1.0), "sigma"),
        (dict(sigma=[1.0, float("nan")]), "sigma"),
        (dict(sigma=[]), "sigma"),
        (dict(sigma="one"), "sigma"),
        (dict(sigma=1.0, models=["dz"]), "model name"),
        (dict(sigma=1.0, models=[]), "models"),
        (dict(sigma=1.0, alpha=float("inf")), "alpha"),
        (dict(sigma=1.0, size=4), "size"),
        (dict(sigma=1.0, method="gauss"), "method"),
        (dict(sigma=1.0, mode="exact"), "mode"),
        (dict(sigma=1.0, epsilon=0.0), "epsilon"),
    ],
)
def test_make_bank_bad_input(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_bank(**kwargs)


def test_load_bank_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_bank(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="missing arrays"):
        load_bank(tmp_path / "other.npz")


# --------------------------------------------------------------------------------------
# the command


def test_cli_defaults(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bank"]) == 0
    out = capsys.readouterr().out
    assert "bank.npz" in out and "mk1 mk2 mk3 mk4 mk5 mk6 mk7 mk8" in out
    with np.load(tmp_path / "bank.npz", allow_pickle=False) as data:
        assert data["kernels"].shape == (1, 8, 7, 7)
        np.testing.assert_array_equal(data["sigma"], [1.0])
        assert data["models"].tolist() == list(DEFAULT_MODELS)
        for j, name in enumerate(DEFAULT_MODELS):
            np.testing.assert_allclose(data["kernels"][0, j], expected(name, 1.0), atol=1e-15)


def test_cli_values_and_plot(tmp_path, capsys):
    out = tmp_path / "sub" / "bank.npz"
    png = tmp_path / "bank.png"
    argv = [
        "bank",
        "--sigma",
        "0.5",
        "1",
        "2.5",
        "--models",
        "dx",
        "dy+",
        "mk7",
        "lap",
        "--alpha",
        "0.7",
        "--size",
        "9",
        "--mode",
        "full",
        "--method",
        "normsamplgauss",
        "--out",
        str(out),
        "--plot",
        str(png),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert str(png) in text and "alpha 0.7" in text
    with np.load(out, allow_pickle=False) as data:
        kernels, sigma, models = data["kernels"], data["sigma"], data["models"].tolist()
    assert kernels.shape == (3, 4, 9, 9) and models == ["dx", "dy+", "mk7", "lap"]
    kw = dict(size=9, mode="full", method="normsamplgauss")
    for i, s in enumerate(sigma):
        for j, name in enumerate(models):
            np.testing.assert_allclose(
                kernels[i, j], expected(name, s, alpha=0.7, **kw), rtol=0, atol=1e-15
            )
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.shape[0] > 100 and img.shape[1] > img.shape[0]  # 3 rows, 4 columns


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["--models", "mk1", "dz"], "unknown model name 'dz'"),
        (["--models", "mk9"], "unknown model name 'mk9'"),
        (["--method", "gauss"], "method must be one of"),
        (["--mode", "exact"], "mode must be one of"),
        (["--size", "6"], "size must be a positive odd integer"),
        (["--sigma", "-1"], "sigma must be finite and >= 0"),
        (["--epsilon", "2"], "epsilon"),
    ],
)
def test_cli_bad_names_exit_2(tmp_path, capsys, argv, word):
    out = tmp_path / "bank.npz"
    assert main(["bank", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scalespace-mk bank: error:") and word in err
    assert not out.exists()


def test_cli_unparsable_number_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bank", "--sigma", "one"])
    assert info.value.code == 2
    assert "expected a number" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# plot_bank


def test_plot_bank_figure(tmp_path):
    import matplotlib.pyplot as plt

    bank = make_bank([0.5, 1.0], ["mk4", "mk8"])
    fig = plot_bank(
        torch.from_numpy(bank.kernels),
        bank.sigma,
        bank.models,
        path=tmp_path / "f.png",
        title="bank",
    )
    try:
        axes = fig.axes
        assert len(axes) == 4
        assert [ax.get_title() for ax in axes[:2]] == ["mk4", "mk8"]
        assert axes[0].get_ylabel().endswith("0.5") and axes[2].get_ylabel().endswith("1")
        # diverging colormap centred at 0: symmetric limits per panel
        for ax, h in zip(axes, bank.kernels.reshape(4, 7, 7), strict=True):
            lo, hi = ax.images[0].get_clim()
            assert lo == -hi == pytest.approx(-np.abs(h).max())
            np.testing.assert_array_equal(ax.images[0].get_array(), h)  # row 0 on top
    finally:
        plt.close(fig)
    assert (tmp_path / "f.png").read_bytes().startswith(PNG_MAGIC)


def test_plot_bank_bad_shape():
    with pytest.raises(ValueError, match="kernels must have shape"):
        plot_bank(np.zeros((2, 3, 7, 7)), [1.0], ["mk1", "mk2", "mk3"])
    with pytest.raises(ValueError, match="NaN"):
        plot_bank(np.full((1, 1, 3, 3), np.nan), [1.0], ["T"])
