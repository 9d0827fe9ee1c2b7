"""Atomic file writing and verified downloads.

Every result and checkpoint is written through :func:`atomic_path`: a temporary file in the
target folder, flushed to disk (``fsync``) and moved into place with ``os.replace``, so a
reader, a kill or a power loss never leaves half a file under the final name.

- **Mode.** The temporary file is created with mode ``0o666`` filtered by the process umask,
  exactly as a plain ``open(path, "w")`` would create the final file (0644 under the usual
  umask 022, 0600 under 077): colleagues on a shared file system can read the results when
  the umask lets them.
- **Names.** Temporary files are named ``.STEM.partial-HOST-PID-RANDOM.SUFFIX`` (hidden, the
  suffix of the target kept so that writers which add or check extensions behave), e.g.
  ``.last.partial-3f2a-41277-9c0e1b.pt`` while ``last.pt`` is being written.
- **Cleanup.** A process killed mid-write leaves its temporary file behind. Each
  :func:`atomic_path` removes such leftovers from the target folder before it writes: a file
  of that naming is stale when it was made on this host by a process that no longer runs, or
  on another host and not modified for :data:`STALE_AFTER_S` seconds. Temporary files of
  running writers are never touched.

:func:`download_verified` fetches a file with pooch (URL plus pinned sha256, a temporary
file moved into place only when the checksum matches).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "STALE_AFTER_S",
    "ChecksumError",
    "atomic_path",
    "download_verified",
    "file_mode",
    "remove_stale_partials",
]

#: Age (seconds since the last modification) after which a temporary file made on another
#: host counts as stale.
STALE_AFTER_S = 3600.0

_PARTIAL = re.compile(r"^\..*\.partial-([0-9a-f]{4})-(\d+)-[0-9a-f]{6}(\.[^/]*)?$")


class ChecksumError(ValueError):
    """A file's checksum differs from the value pinned for it."""


def _host_id() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:4]


def file_mode() -> int:
    """Return the mode a plain ``open(path, "w")`` gives a new file: ``0o666 & ~umask``."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folder``.

    Parameters
    ----------
    folder : str or path-like
        The folder to clean (not recursive).

    Returns
    -------
    list of pathlib.Path
        The files removed: those named ``.STEM.partial-HOST-PID-RANDOM.SUFFIX`` that were
        made on this host by a process that no longer runs, or on another host and not
        modified for :data:`STALE_AFTER_S` seconds.
    """
    removed = []
    host, now = _host_id(), time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _PARTIAL.match(entry.name)
        if m is None or not entry.is_file(follow_symlinks=False):
            continue
        try:
            if m.group(1) == host:
                stale = int(m.group(2)) != os.getpid() and not _pid_alive(int(m.group(2)))
            else:
                stale = now - entry.stat().st_mtime > STALE_AFTER_S
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # raced with another cleaner or the writer itself
            continue
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success flush it and move it onto ``path``.

    Parameters
    ----------
    path : str or path-like
        The final file. Its folder is created if needed.

    Yields
    ------
    pathlib.Path
        An empty file ``.STEM.partial-HOST-PID-RANDOM.SUFFIX`` in the same folder, created
        with the mode a plain ``open()`` would give (``0o666 & ~umask``). Write it (by path:
        ``np.save``, ``torch.save``, ``savefig``, ...) inside the ``with`` block.

    Notes
    -----
    On success the file is ``fsync``-ed, renamed onto ``path`` with ``os.replace`` and the
    folder is ``fsync``-ed, so a crash leaves either the old or the new file, never an empty
    one. If the body raises, the temporary file is removed. Before writing, stale temporary
    files of killed writers are removed from the folder (:func:`remove_stale_partials`).
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(folder)
    while True:
        name = f".{path.stem}.partial-{_host_id()}-{os.getpid()}-{secrets.token_hex(3)}"
        tmp = folder / (name + path.suffix)
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        break
    try:
        yield tmp
        if tmp.is_file():
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        if os.path.lexists(tmp):
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
    """Download ``url`` to ``dest`` with pooch, verified against a pinned sha256.

    Parameters
    ----------
    url : str
        An http(s) or ftp address.
    dest : str or path-like
        The final file. If it exists with the right sha256 nothing is downloaded.
    sha256 : str
        The pinned sha256 (64 hex digits).
    md5 : str, optional
        Also check this md5 (for sources that publish only md5 beside the pinned sha256).
    timeout : float, optional
        Network timeout in seconds.
    progress : bool, optional
        Show a progress bar (only when stderr is a terminal).

    Returns
    -------
    pathlib.Path
        ``dest``, with the mode a plain ``open()`` would give.

    Raises
    ------
    ChecksumError
        On a mismatch; nothing is kept.
    OSError
        If the download fails (``requests``' errors are ``OSError``); the caller explains.
    """
    import pooch

    dest = Path(dest)
    try:
        got = pooch.retrieve(
            url,
            known_hash=f"sha256:{sha256}",
            fname=dest.name,
            path=dest.parent,
            downloader=pooch.HTTPDownloader(
                progressbar=bool(progress) and sys.stderr.isatty(), timeout=timeout
            ),
        )
    except ValueError as exc:
        if "hash" not in str(exc).lower():
            raise
        raise ChecksumError(
            f"checksum mismatch for {url}: {exc}; the download was discarded (the server's "
            "content changed or it was corrupted in transit)"
        ) from None
    path = Path(got)
    if md5 is not None:
        h = hashlib.md5()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        if digest != md5:
            path.unlink()
            raise ChecksumError(
                f"checksum mismatch for {url}: expected {md5} (md5), received {digest}; the "
                "download was discarded"
            )
    os.chmod(path, file_mode())
    return path
