"""Shared test setup: data location, headless plotting, hypothesis profiles."""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The published filters as shipped inside the package: what every test uses.
SHIPPED_MASTERKEY = REPO / "scalespace_mk" / "data_files"
#: The project's reference copy, present in the development checkout only (not in CI).
SHARED_MASTERKEY = REPO.parent / "shared" / "data" / "masterkey"

os.environ.setdefault("MPLBACKEND", "Agg")
# nothing in the suite may reach the network: downloads are tested against a local server
os.environ.setdefault("SCALESPACE_MK_OFFLINE", "1")

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
    """Directory holding the published ``8Filters.txt`` (the copy shipped in the package)."""
    if not (SHIPPED_MASTERKEY / "8Filters.txt").is_file():
        pytest.fail(f"8Filters.txt is missing from the package: {SHIPPED_MASTERKEY}")
    return SHIPPED_MASTERKEY


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving tmp_path/srv; yields (root, base_url, hits).

    Proxies are bypassed for 127.0.0.1, so downloads reach it.
    """
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "srv"
    root.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
            pass

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that changes torch's thread count must not change the next one's results
    (bit-exact comparisons between a subprocess and an in-process run depend on it)."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """One torch intra-op thread for the test (restored by ``_restore_torch_threads``): tiny
    kernels thrash when a shared 2-core machine is busy, and some comparisons are per
    thread count. A module asks for it with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    torch.set_num_threads(1)
