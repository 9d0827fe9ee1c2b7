"""Shared test setup: data location, headless plotting, hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MASTERKEY = REPO.parent / "shared" / "data" / "masterkey"

# The published filters come from ../shared in tests and CI (no network here).
if "SCALESPACE_MK_DATA" not in os.environ and SHARED_MASTERKEY.is_dir():
    os.environ["SCALESPACE_MK_DATA"] = str(SHARED_MASTERKEY)
os.environ.setdefault("MPLBACKEND", "Agg")

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci",
        deadline=None,
        print_blob=True,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile("dev", deadline=None, print_blob=True)
    settings.load_profile("ci" if os.environ.get("CI") else "dev")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def masterkey_dir() -> Path:
    """Directory holding the published ``8Filters.txt``."""
    path = Path(os.environ["SCALESPACE_MK_DATA"])
    if not (path / "8Filters.txt").is_file():
        pytest.fail(f"8Filters.txt not found in SCALESPACE_MK_DATA={path}")
    return path
