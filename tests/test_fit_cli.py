"""Tests of the ``scalespace-mk fit`` command (scalespace_mk.cli.fit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scalespace_mk.analysis import fit as fit_mod
from scalespace_mk.analysis.filters import load_filters
from scalespace_mk.analysis.fit import fit_filters
from scalespace_mk.cli import main
from scalespace_mk.scalespace.models import masterkey_model

SPEC_B = {
    1: (0.6445, 0.5829),
    2: (0.5858, 0.6440),
    3: (0.6898, 0.6740),
    4: (0.7560, 0.4596),
    5: (1.1067, 0.9448),
    6: (0.9004, 0.8889),
    8: (0.6095, 0.6012),
}
KEYS = {"index", "model", "sigma_x", "sigma_y", "alpha", "l1", "l2"}


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with fit_mod._one_thread():
        yield


def _json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    out = capsys.readouterr().out
    payload = json.loads(out)  # exactly one JSON document on stdout
    assert out.strip().count("\n") == 0
    return payload


def test_default_prints_method_b_table(capsys):
    assert main(["fit"]) == 0
    out = capsys.readouterr().out
    assert "method B" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["5"])]
    assert len(rows) == 2
    assert rows[0][:3] == ["1", "1", "dy+"]
    assert float(rows[0][3]) == pytest.approx(0.6445, abs=1e-4)
    assert float(rows[1][4]) == pytest.approx(0.9448, abs=1e-4)


def test_json_schema_and_values_method_b(capsys):
    payload = _json(capsys, ["fit", "--json"])
    assert set(payload) == {"method", "filters"} and payload["method"] == "B"
    recs = payload["filters"]
    assert [r["index"] for r in recs] == list(range(1, 9))
    for r in recs:
        assert set(r) == KEYS
        assert isinstance(r["model"], str)
        assert all(isinstance(r[k], float) for k in ("sigma_x", "sigma_y", "l1", "l2"))
        if r["index"] == 7:
            assert isinstance(r["alpha"], float) and r["sigma_x"] == r["sigma_y"]
            assert abs(r["sigma_x"] - 0.6754) < 1e-4
        else:
            assert r["alpha"] is None
            sx, sy = SPEC_B[r["index"]]
            assert abs(r["sigma_x"] - sx) < 1e-4 and abs(r["sigma_y"] - sy) < 1e-4


@pytest.mark.parametrize("method", ["D2", "C-joint", "A"])
def test_json_equals_library(capsys, method):
    payload = _json(capsys, ["fit", "--method", method, "--json"])
    expected = fit_filters(load_filters(), method=method).to_dict()
    assert payload["method"] == method
    for got, want in zip(payload["filters"], expected["filters"], strict=True):
        assert got["model"] == want["model"] and got["index"] == want["index"]
        for k in ("sigma_x", "sigma_y", "l1", "l2"):
            assert got[k] == pytest.approx(want[k], abs=1e-12)
        if method != "A":
            assert got["sigma_x"] == got["sigma_y"]


def test_other_filters_with_types(tmp_path, capsys):
    h = np.stack([masterkey_model(5, 0.9, 0.7), masterkey_model(6, 0.8, 1.1)])
    path = tmp_path / "two.npy"
    np.save(path, h)
    payload = _json(capsys, ["fit", "--filters", str(path), "--types", "5,6", "--json"])
    assert [r["model"] for r in payload["filters"]] == ["dx", "dy"]
    direct = fit_filters(h, [5, 6], method="B")
    assert payload["filters"][1]["sigma_y"] == pytest.approx(direct[1].sigma_y, abs=1e-12)


def test_other_filters_need_types(tmp_path, capsys):
    path = tmp_path / "three.npy"
    np.save(path, np.stack([masterkey_model(8, 0.6)] * 3))
    assert main(["fit", "--filters", str(path)]) == 2
    assert "--types" in capsys.readouterr().err
    assert main(["fit", "--filters", str(path), "--types", "8,8"]) == 2
    assert "one type per filter" in capsys.readouterr().err


def test_bad_method_and_types(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--method", "E"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "--types", "1,9"])
    assert "1..8" in capsys.readouterr().err


def test_missing_file(capsys, tmp_path):
    assert main(["fit", "--filters", str(tmp_path / "nope.npy")]) == 2
    assert "error" in capsys.readouterr().err


def test_plot_option(tmp_path, capsys):
    import matplotlib.pyplot as plt

    path = tmp_path / "fit.png"
    payload = _json(capsys, ["fit", "--method", "D2", "--json", "--plot", str(path)])
    plt.close("all")
    assert payload["method"] == "D2"
    assert path.read_bytes()[:4] == b"\x89PNG"


#: A learned 7x7 filter (rounded, x 100) whose weighted y-variance no type-5 model reaches.
_NO_B_FIT = [
    [11, 16, 9, -2, 11, 13, -2],
    [20, 24, 21, 6, 17, 21, -4],
    [13, 13, -5, -25, -11, -7, -5],
    [23, 11, -7, -10, -13, -4, -24],
    [12, 8, -10, -27, -23, -16, -29],
    [5, 8, -15, -22, -11, -6, -17],
    [4, 6, 4, -1, 3, 17, 1],
]


def test_fit_records_filters_without_a_fit(capsys, tmp_path):
    """A filter method B cannot fit is reported; the others are fitted."""
    h = load_filters()
    h[4] = np.array(_NO_B_FIT, dtype=float) / 100
    np.save(tmp_path / "h.npy", h)
    argv = ["fit", "--filters", str(tmp_path / "h.npy"), "--types", "1,2,3,4,5,6,7,8", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["method"] == "B" and len(out["filters"]) == 8
    failed = [f for f in out["filters"] if "error" in f]
    for f in failed:
        assert f["sigma_x"] is None and f"filter {f['index']}" in captured.err
    assert [f["index"] for f in failed] == [5]
    assert all(
        f["sigma_x"] is not None and f["l2"] >= 0 for f in out["filters"] if "error" not in f
    )


def test_types_auto_chooses_by_census(tmp_path, capsys):
    h = np.stack([masterkey_model(8, 0.6), masterkey_model(5, 0.9, 0.7), masterkey_model(1, 0.7)])
    path = tmp_path / "three.npy"
    np.save(path, h)
    assert main(["fit", "--filters", str(path), "--types", "auto", "--json"]) == 0
    out = capsys.readouterr()
    assert "types chosen by the census" in out.err and "8,5,1" in out.err
    payload = json.loads(out.out)
    assert [r["model"] for r in payload["filters"]] == ["T", "dx", "dy+"]


def test_eight_unknown_filters_are_not_guessed(tmp_path, capsys):
    """An 8-filter file that is not the published set needs --types: no silent 1..8."""
    path = tmp_path / "eight.npy"
    np.save(path, np.stack([masterkey_model(8, 0.5 + 0.1 * i) for i in range(8)]))
    assert main(["fit", "--filters", str(path)]) == 2
    err = capsys.readouterr().err
    assert "--types auto" in err and len(err.strip().splitlines()) == 1
    published = Path(__file__).resolve().parents[1] / "scalespace_mk/data_files/8Filters.txt"
    assert main(["fit", "--filters", str(published), "--json"]) == 0  # the published 8 by path


def test_sigma_max_option_reaches_the_fit(capsys):
    """The option the fit's advice names exists, and reaches the fit."""
    assert main(["fit", "--sigma-max", "0.5", "--json"]) == 0
    out = capsys.readouterr()
    payload = json.loads(out.out)
    failed = [r for r in payload["filters"] if r["sigma_x"] is None or r["sigma_y"] is None]
    assert failed  # method B's roots lie above 0.5 pixels for several published filters
    assert "no sigma_" in out.err and "raise --sigma-max" in out.err
    assert main(["fit", "--sigma-max", "4", "--grid-step", "0.05", "--json"]) == 0
