"""Execute every notebook in ``notebooks/`` (new notebooks are picked up automatically).

Each runs in a fresh ``python3`` kernel with the Agg matplotlib backend and
no data setting (the published filters ship with the package); any error in a cell fails
the test with the cell's traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # the kernel inherits this process' environment
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("SCALESPACE_MK_DATA", raising=False)
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(tmp_path)}},  # files a notebook writes go here
    )
    client.execute()
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors, errors
    assert any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {REPO / 'notebooks'}"
    assert os.path.basename(NOTEBOOKS[0]).startswith("01_")
