"""The lock of a training run folder: one run (or ``--resume``) per folder at a time.

:func:`lock_run_folder` takes an exclusive, non-blocking ``fcntl.flock`` on ``OUT/.lock``
and writes the holder (pid, host, start time) into it. A second run or a ``--resume`` on
the same folder while the first is alive is refused with one line naming the holder; the
kernel drops the lock when the holder exits, however it exits (a kill included), so a stale
lock never blocks a later run. The lock file itself is kept (unlinking it would let two
processes lock two different files of the same name).

On platforms without ``fcntl`` (Windows) the lock is a no-op.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

__all__ = ["LOCK_NAME", "RunFolderLockedError", "RunLock", "lock_run_folder"]

#: the lock file inside a run folder
LOCK_NAME = ".lock"


class RunFolderLockedError(ValueError):
    """Another live process holds the run folder."""


class RunLock:
    """A held run-folder lock; :meth:`release` (or the process's end) frees it."""

    def __init__(self, path: Path, fd: int | None, created_folder: bool) -> None:
        self.path = path
        self._fd = fd
        self.created_folder = created_folder

    def release(self, *, failed: bool = False) -> None:
        """Free the lock. With ``failed`` and a folder this lock created that holds nothing
        else, remove the lock file and the folder (a failed start leaves nothing behind)."""
        if self._fd is None:
            return
        if failed and self.created_folder:
            try:
                os.unlink(self.path)
                self.path.parent.rmdir()
            except OSError:
                pass
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.release(failed=kind is not None)


def lock_run_folder(out: str | os.PathLike) -> RunLock:
    """Create ``out`` if needed and lock it for this process.

    Raises
    ------
    RunFolderLockedError
        If a live process holds ``out/.lock``; the message names its pid and host.
    ValueError
        If ``out`` exists and is not a folder.
    """
    out = Path(out)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return RunLock(out / LOCK_NAME, None, False)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder; name a run folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "unknown"
        except OSError:
            holder = "unknown"
        os.close(fd)
        raise RunFolderLockedError(
            f"--out {str(out)!r} is in use by another training run ({holder}); wait for it to "
            "end, or choose another --out (a --resume must wait too)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(
        fd,
        f"pid {os.getpid()} on host {socket.gethostname()}, since "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())}\n".encode(),
        0,
    )
    return RunLock(path, fd, created)
