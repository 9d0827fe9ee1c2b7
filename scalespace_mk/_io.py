"""Atomic file writing: every result and checkpoint is written to a temporary file in the
target folder and moved into place with ``os.replace``, so readers never see half a file."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ChecksumError", "atomic_path", "download_verified"]


class ChecksumError(ValueError):
    """A file's checksum differs from the value pinned for it."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``.

    The temporary file is removed if the body raises. The suffix of ``path`` is kept so
    that writers that add or check extensions (``np.save``, safetensors) behave.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download_verified(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str,
    md5: str | None = None,
    timeout: float = 60.0,
    progress: bool = False,
) -> Path:
    """Download ``url`` to ``dest``: into a temporary file beside it, hashed while it is
    written, moved into place only if the sha256 (and md5, when given) match.

    Raises :class:`ChecksumError` on a mismatch (the download is discarded) and lets
    ``urllib``'s ``URLError``/``OSError`` through for the caller to explain.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    h_sha, h_md5 = hashlib.sha256(), hashlib.md5()
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            disable = not progress or not sys.stderr.isatty()
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=dest.name, disable=disable
            ) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    h_sha.update(chunk)
                    h_md5.update(chunk)
                    bar.update(len(chunk))
        got_sha, got_md5 = h_sha.hexdigest(), h_md5.hexdigest()
        if got_sha != sha256 or (md5 is not None and got_md5 != md5):
            expected = f"{sha256} (sha256)" + (f" and {md5} (md5)" if md5 else "")
            received = f"{got_sha} (sha256)" + (f" and {got_md5} (md5)" if md5 else "")
            raise ChecksumError(
                f"checksum mismatch for {url}: expected {expected}, received {received}; the "
                "download was discarded (the server's content changed or it was corrupted in "
                "transit)"
            )
    return dest
