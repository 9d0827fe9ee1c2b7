"""The bugs of issue 19, one test each, named after the bug (CLI errors in CLI words)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from scalespace_mk.analysis.fit import fit_filters
from scalespace_mk.cli import main


@pytest.fixture
def with_zero(tmp_path):
    f = np.random.default_rng(0).normal(size=(4, 7, 7))
    f[2] = 0.0
    path = tmp_path / "f.npy"
    np.save(path, f)
    return str(path)


def test_fit_types_auto_with_a_zero_filter(with_zero, capsys):
    assert main(["fit", "--filters", with_zero, "--types", "auto", "--method", "A"]) == 0
    out = capsys.readouterr()
    assert "NoneType" not in out.err
    assert "1,2,-,6" in out.out  # the census's types, '-' for the filter with none
    rows = [line for line in out.out.splitlines() if re.match(r"\s+\d+\s", line)]
    assert len(rows) == 4
    assert "no fit: zero" in rows[2]
    assert "no fit" not in rows[0] + rows[1] + rows[3]


def test_analyze_plot_existing_file_fails_before_the_analysis(tmp_path, monkeypatch, capsys):
    import scalespace_mk.networks.checkpoint as ckpt

    def never(*a, **k):  # the analysis must not start
        raise AssertionError("analyze ran before --plot was checked")

    monkeypatch.setattr(ckpt, "analyze", never)
    existing = tmp_path / "existing.png"
    existing.write_bytes(b"png")
    assert main(["analyze", str(tmp_path / "any.pt"), "--plot", str(existing)]) == 2
    err = capsys.readouterr().err
    assert "--plot" in err and "not a folder" in err
    assert existing.read_bytes() == b"png"


def test_spread_one_zero_filter_is_recorded_and_the_rest_reported(with_zero, capsys):
    assert main(["spread", "--filters", with_zero, "--json"]) == 0
    out = capsys.readouterr()
    rows = json.loads(out.out)["filters"]
    assert [r["index"] for r in rows] == [1, 2, 3, 4]
    assert rows[2] == {"index": 3, "error": "zero"}
    from scalespace_mk.analysis.spread import spread

    h = np.load(with_zero)
    alone = spread(h[[0, 1, 3]]).to_records(start=1)
    for got, want in zip([rows[0], rows[1], rows[3]], alone, strict=True):
        np.testing.assert_allclose(got["cov"], want["cov"], rtol=0, atol=0)
    assert "filter 3: zero" in out.err


def test_spread_strict_refuses_a_file_with_a_zero_filter(with_zero, capsys):
    assert main(["spread", "--filters", with_zero, "--strict"]) == 2
    err = capsys.readouterr().err
    assert "--strict" in err and "3 (zero)" in err


def test_spread_weighted_error_names_the_types_option(with_zero, capsys):
    assert main(["spread", "--filters", with_zero, "--weighted"]) == 2
    err = capsys.readouterr().err
    assert "--types" in err
    assert "filter_types" not in err


def test_method_b_warning_advises_raising_sigma_max_only_where_it_helps(tmp_path, capsys):
    h = np.random.default_rng(1).normal(size=(4, 7, 7))
    path = tmp_path / "g.npy"
    np.save(path, h)
    assert main(["fit", "--filters", str(path), "--types", "4,4,2,2"]) == 0
    err = capsys.readouterr().err
    lines = {int(m.group(1)): m.group(0) for m in re.finditer(r"filter (\d): .*", err)}
    assert "raise --sigma-max above 4" in lines[2]
    assert "a larger --sigma-max cannot help" in lines[4]
    assert "sigma_max" not in err  # CLI words
    # the advice is true: a larger sigma_max fits filter 2 and still not filter 4
    wide = fit_filters(h, [4, 4, 2, 2], method="B", sigma_max=28.0, on_error="record")
    assert wide[1].error is None and wide[1].sigma_y > 4.0
    assert wide[3].error is not None


def test_analyze_bank_npz_advice_works(tmp_path, capsys):
    bank = tmp_path / "bank.npz"
    assert main(["bank", "--sigma", "1", "2", "--out", str(bank)]) == 0
    capsys.readouterr()
    assert main(["analyze", str(bank)]) == 2
    err = capsys.readouterr().err
    assert "model bank" in err
    command = re.search(r'python -c "(.*?)"', err).group(1)
    subprocess.run([sys.executable, "-c", command], cwd=tmp_path, check=True)
    flat = re.search(r"'scalespace-mk census (\S+)'", err).group(1)
    assert main(["census", str(tmp_path / flat), "--null", "none", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result  # the census the advice names runs on the flattened bank
    assert main(["census", str(bank)]) == 2
    assert "model bank" in capsys.readouterr().err
    assert shlex.split(f"scalespace-mk census {flat}")[-1] == flat


@pytest.mark.parametrize(
    "argv, option, python_name",
    [
        (["fit", "--grid-step", "5"], "--grid-step must be", "grid_step"),
        (["fit", "--sigma-max", "1e9"], "--sigma-max must be", "sigma_max"),
        (["bank", "--size", "4", "--out", "b.npz"], "--size must be", None),
        (["bank", "--sigma", "-1", "--out", "b.npz"], "--sigma must be", None),
        (["bank", "--epsilon", "2", "--out", "b.npz"], "--epsilon must be", None),
        (["spread", "--weighted", "--sigma-ref", "1e9"], "--sigma-ref must be", "sigma_ref"),
        (["extract", "f.npy", "-k", "0", "--out", "x.npy"], "argument -k: must be", None),
    ],
)
def test_cli_errors_name_cli_options(argv, option, python_name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(size=(4, 7, 7)))
    try:
        code = main(argv)
    except SystemExit as exc:  # refused by the parser itself (its one line names the option)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert option in err, err
    if python_name is not None:
        assert python_name not in err, err


def test_cli_words_leaves_ordinary_words_alone():
    from scalespace_mk.cli import build_parser
    from scalespace_mk.cli._args import cli_words

    parser = build_parser()
    text = "a kernel of size 7 needs sigma_max >= 1; size must be odd"
    assert cli_words(text, parser, "fit") == (
        "a kernel of size 7 needs --sigma-max >= 1; size must be odd"
    )
    assert cli_words("size must be odd", parser, "bank") == "--size must be odd"
    assert cli_words("grid_step bad", parser, "no-such-command") == "grid_step bad"
