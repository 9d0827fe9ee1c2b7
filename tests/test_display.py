"""Result objects display: one-screen repr, format_table, to_pandas with the columns that
docs/api.md ("Results as tables") documents, and values equal to the result's own arrays."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import scalespace_mk as sk
from scalespace_mk._display import REPR_LINES, REPR_WIDTH
from scalespace_mk.scalespace.bank import make_bank

pd = pytest.importorskip("pandas")
API = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _documented() -> dict[str, list[str]]:
    """``{row title: [column names]}`` of the "Results as tables" table of docs/api.md."""
    text = API.read_text().split("## Results as tables", 1)[1]
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        cols = []
        for part in re.split(r",\s*(?![^()]*\))", cells[2]):
            name = re.match(r"`([^`]+)`", part.strip())
            if name and not part.strip().startswith("the coefficient"):
                cols.append(name.group(1))
        out[cells[0]] = cols
    return out


@pytest.fixture(scope="module")
def results():
    h = sk.load_filters()
    torch.manual_seed(0)
    sd = sk.create_model("convnextv2_atto", num_classes=10).state_dict()
    return {
        "FitResult": sk.fit_filters(h, list(range(1, 9)), method="A"),
        "SpreadResult": sk.spread(h),
        "NormalizeResult": sk.normalize_filters(h, filter_types=list(range(1, 9))),
        "AnalyzeResult": sk.analyze(sd, progress=False, null="iid", null_size=64),
        "ReplaceResult": sk.replace(sd),
        "ExtractResult": sk.extract(np.random.default_rng(0).normal(size=(60, 7, 7)), k=3),
        "FamilyCensusResult": sk.family_census(h, order=2),
        "Bank": make_bank([1.0, 2.0, 3.0]),
    }


def test_every_result_has_a_one_screen_repr(results):
    for name, res in results.items():
        text = repr(res)
        lines = text.splitlines()
        assert text.startswith(f"<{name}: "), name
        assert len(lines) <= REPR_LINES, (name, len(lines))
        assert max(len(line) for line in lines) <= REPR_WIDTH + len(name) + 4, name
    bank = repr(results["Bank"])  # 24 rows: cut, and says how to see them all
    assert "more rows: format_table() or to_pandas() for all" in bank
    assert len(repr(results["AnalyzeResult"])) < 2500  # was 33,700 characters


def test_to_pandas_columns_are_the_documented_ones(results):
    doc = _documented()
    for title, cols in doc.items():
        name = re.match(r"`(\w+)`", title).group(1)
        res = results[name]
        frame = res.to_pandas("filter") if '"filter"' in title else res.to_pandas()
        got = list(frame.columns)
        if name == "FamilyCensusResult":
            got = [c for c in got if c not in res.names]
        if name == "ReplaceResult":
            assert any(c.startswith("candidate_") for c in got)
            got = [c for c in got if not c.startswith("candidate_")]
            cols = [c for c in cols if not c.startswith("candidate_")]
        assert got == cols, (title, got, cols)
    assert {re.match(r"`(\w+)`", t).group(1) for t in doc} == set(results)


def test_to_pandas_values_are_the_results(results):
    fit = results["FitResult"].to_pandas()
    np.testing.assert_array_equal(fit["sigma_x"], results["FitResult"].sigma_x)
    assert list(fit["index"]) == list(range(1, 9))
    sp = results["SpreadResult"].to_pandas()
    np.testing.assert_array_equal(sp["V_xy"], results["SpreadResult"].cov[:, 0, 1])
    an = results["AnalyzeResult"]
    layers, filters = an.to_pandas(), an.to_pandas("filter")
    assert len(layers) == len(an.layers) and len(filters) == len(an.filters) == 1840
    per_layer = filters.groupby("layer", sort=False)["r2"].median()
    np.testing.assert_allclose(per_layer.to_numpy(), layers["median_r2"].to_numpy(), rtol=1e-12)
    ex = results["ExtractResult"].to_pandas()
    assert ex["members"].sum() == 60
    np.testing.assert_allclose(ex["members"] / 60, ex["share"])
    fam = results["FamilyCensusResult"].to_pandas()
    np.testing.assert_array_equal(fam["c_xx"], results["FamilyCensusResult"].c_xx)
    bank = results["Bank"].to_pandas()
    assert len(bank) == 24 and list(bank["model"][:8]) == [f"mk{i}" for i in range(1, 9)]
    rep = results["ReplaceResult"].to_pandas()
    cand = rep[[c for c in rep.columns if c.startswith("candidate_")]].sum(axis=1)
    assert (cand == rep["channels"]).all()


def test_format_table_shows_every_row_or_max_rows(results):
    text = results["Bank"].format_table()
    assert len(text.splitlines()) == 3 + 24
    short = results["Bank"].format_table(max_rows=5)
    assert short.splitlines()[-1] == "... 19 more rows"
    assert results["FitResult"].format_table(max_rows=3).endswith("... 5 more rows")


def test_to_pandas_without_pandas_says_how_to_install(results, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        results["SpreadResult"].to_pandas()
    with pytest.raises(ImportError, match="pip install pandas"):
        results["AnalyzeResult"].to_pandas("filter")
