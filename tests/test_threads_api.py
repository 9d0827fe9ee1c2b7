"""The public thread limit, the import-time policy, lazy subpackages, dir(), python -m."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import threadpoolctl
import torch

import scalespace_mk


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpoolctl.threadpool_info()]


def test_threads_context_manager_limits_and_restores():
    before_torch, before_blas = torch.get_num_threads(), _blas_threads()
    with scalespace_mk.threads(1) as limit:
        assert torch.get_num_threads() == 1
        assert all(n == 1 for n in _blas_threads())
        assert repr(limit) == "scalespace_mk.threads(1)"
    assert torch.get_num_threads() == before_torch
    assert _blas_threads() == before_blas


def test_threads_as_a_call_holds_until_restored():
    before = torch.get_num_threads()
    limit = scalespace_mk.threads(1)
    try:
        assert torch.get_num_threads() == 1
        assert all(n == 1 for n in _blas_threads())
    finally:
        limit.restore()
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_threads_refuses_non_positive_integers(bad):
    with pytest.raises(ValueError, match="positive integer"):
        scalespace_mk.threads(bad)


def _fresh(code: str, **env: str) -> str:
    full = {k: v for k, v in os.environ.items() if k not in {"OMP_WAIT_POLICY", *env}}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_import_sets_passive_wait_policy_before_torch():
    code = "import os, scalespace_mk; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert _fresh(code) == "PASSIVE"


def test_import_policy_respects_the_user_and_the_opt_out():
    code = "import os, scalespace_mk; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert _fresh(code, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
    assert _fresh(code, SCALESPACE_MK_THREAD_POLICY="0") == "None"
    after_torch = "import os, torch, scalespace_mk; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert _fresh(after_torch) == "None"  # too late to matter: left alone


def test_subpackages_load_lazily_as_attributes():
    code = (
        "import sys, scalespace_mk as s; assert 'scalespace_mk.plot' not in sys.modules; "
        "print(s.plot.__name__, s.networks.__name__, s.training.__name__, s.scalespace.__name__)"
    )
    assert _fresh(code) == (
        "scalespace_mk.plot scalespace_mk.networks scalespace_mk.training scalespace_mk.scalespace"
    )


def test_dir_lists_the_public_api_only():
    names = dir(scalespace_mk)
    for private in ("Any", "annotations", "importlib", "_EXPORTS"):
        assert private not in names
    for public in ("threads", "analyze", "plot", "networks", "fit_filters", "__version__"):
        assert public in names
    for name in names:
        getattr(scalespace_mk, name)  # every listed name resolves
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        scalespace_mk.nope  # noqa: B018


def test_python_dash_m_runs_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "scalespace_mk", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert scalespace_mk.__version__ in out.stdout


def test_extract_1840_7x7_filters_under_5_seconds():
    """issue 19: extract spent 47 of 50 s in a multithreaded eigh of 49x49 matrices."""
    rng = np.random.default_rng(0)
    filters = rng.normal(size=(1840, 7, 7))  # structureless: the slowest to converge
    start = time.process_time()  # CPU seconds: what a busy machine does not inflate
    result = scalespace_mk.extract(filters, k=8)
    assert time.process_time() - start < 5.0
    assert result.filters.shape == (8, 7, 7)
    assert np.isclose(result.share.sum(), 1.0)


def test_intra_op_threads_sets_and_restores():
    import torch

    from scalespace_mk._threads import intra_op_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with intra_op_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), intra_op_threads(1):
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
        with intra_op_threads(2):  # already 2: nothing to change or restore
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for bad in (0, -2, 1.0, True, None):
        with pytest.raises(ValueError, match="positive integer"):
            intra_op_threads(bad)
