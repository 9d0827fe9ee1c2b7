"""Atomic file writing and verified downloads.

Every result and checkpoint is written through :func:`atomic_path`: a temporary file in the
target folder, flushed to disk (``fsync``) and moved into place with ``os.replace``, so a
reader, a kill or a power loss never leaves half a file under the final name.

- **Mode.** The temporary file is created with mode ``0o666`` filtered by the process umask,
  exactly as a plain ``open(path, "w")`` would create the final file (0644 under the usual
  umask 022, 0600 under 077): colleagues on a shared file system can read the results when
  the umask lets them.
- **Names.** Temporary files are named ``.STEM.partial-HOST-PID-RANDOM-MARK.SUFFIX`` (hidden,
  the suffix of the target kept so that writers which add or check extensions behave), e.g.
  ``.last.partial-3f2a-41277-9c0e1b-5d41a2.pt`` while ``last.pt`` is being written. ``MARK``
  is a keyed digest of the rest of the name (the owner marker): a file someone named to look
  like ours, or a near miss, does not carry it.
- **Only regular files.** An existing target that is not a regular file (a directory, FIFO,
  socket or device such as ``/dev/null``) is refused with a :class:`NotRegularFileError`
  before anything is written, and checked again just before the rename: it is never replaced.
- **Cleanup.** A process killed mid-write leaves its temporary file behind. Each
  :func:`atomic_path` removes such leftovers from the target folder before it writes: a file
  is stale only when its name carries a valid owner marker, it is a regular file owned by
  this user, and it was made on this host by a process that no longer runs, or on another
  host and not modified for :data:`STALE_AFTER_S` seconds. Temporary files of running
  writers, and files that merely resemble ours, are never touched.

:func:`download_verified` fetches a file with pooch (URL plus pinned sha256, a temporary
file moved into place only when the checksum matches).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "STALE_AFTER_S",
    "ChecksumError",
    "NotRegularFileError",
    "atomic_path",
    "check_output_path",
    "download_verified",
    "file_mode",
    "remove_stale_partials",
]

#: Age (seconds since the last modification) after which a temporary file made on another
#: host counts as stale.
STALE_AFTER_S = 3600.0

_PARTIAL = re.compile(
    r"^\.(?P<stem>.*)\.partial-(?P<host>[0-9a-f]{4})-(?P<pid>\d+)-(?P<rand>[0-9a-f]{6})"
    r"-(?P<mark>[0-9a-f]{6})(?P<suffix>\.[^/]*)?$"
)


class ChecksumError(ValueError):
    """A file's checksum differs from the value pinned for it."""


class NotRegularFileError(ValueError):
    """An output path names something that is not a regular file (a directory, FIFO, socket
    or device); it is refused, never replaced."""


def _mark(stem: str, host: str, pid: int, rand: str, suffix: str) -> str:
    """The owner marker of a temporary file's name: a keyed digest of the rest of it."""
    text = f"scalespace_mk.partial\0{stem}\0{host}\0{pid}\0{rand}\0{suffix}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:6]


def _partial_name(stem: str, suffix: str, host: str, pid: int, rand: str) -> str:
    """``.STEM.partial-HOST-PID-RAND-MARK.SUFFIX``."""
    return f".{stem}.partial-{host}-{pid}-{rand}-{_mark(stem, host, pid, rand, suffix)}{suffix}"


def _is_ours(name: str) -> re.Match[str] | None:
    """The match of a temporary file's name whose owner marker is valid, else None."""
    m = _PARTIAL.match(name)
    if m is None:
        return None
    want = _mark(m["stem"], m["host"], int(m["pid"]), m["rand"], m["suffix"] or "")
    return m if m["mark"] == want else None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _refuse_special(path: Path, what: str) -> None:
    """Raise NotRegularFileError if ``path`` exists and is not a regular file (links
    followed: a link to a regular file is fine, a link to a device is not)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(
            f"{what} {str(path)!r} is {_kind(mode)}, not a regular file; it is never replaced: "
            "name a new or regular file"
        )


def check_output_path(
    path: str | os.PathLike,
    what: str = "output",
    *,
    folder: bool = False,
    suffixes: tuple[str, ...] | None = None,
    label: str = "file",
) -> Path:
    """Check an output path before any work starts; return it as a Path.

    Parameters
    ----------
    path : str or path-like
        The output file (or, with ``folder=True``, the output folder).
    what : str
        How the message names it, e.g. ``"--out"``.
    folder : bool
        The output is a folder (created if missing; an existing one must be a writable
        folder) rather than a file.
    suffixes : tuple of str, optional
        Accepted lower-case suffixes (``(".npz",)``); None accepts any.
    label : str
        What the format is called in the message (``"figure"``).

    Raises
    ------
    NotRegularFileError
        The file exists and is a directory, FIFO, socket or device, or the path is ``.``,
        ``..`` or ``/``.
    ValueError
        Wrong suffix, or the folder that would hold it is not a writable folder (the message
        names the folder; a read-only folder is called read-only, not full).
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text or "\0" in text:
        raise ValueError(f"{what} must be a file name; got {text!r}")
    p = Path(text)
    if not folder:
        if text.endswith(("/", os.sep)) or p.name in ("", ".", ".."):
            raise NotRegularFileError(
                f"{what} {text!r} names a folder, not a file; give a file name such as "
                f"{os.path.join(text, 'out' + (suffixes[0] if suffixes else '.npz'))!r}"
            )
        _refuse_special(p, what)
        if suffixes is not None and p.suffix.lower() not in suffixes:
            raise ValueError(
                f"{what} {text!r}: unknown {label} format "
                f"{p.suffix.lower().lstrip('.') or '(none)'!r}; use one of {', '.join(suffixes)}"
            )
        parent = p.parent
    else:
        try:
            mode = os.stat(p).st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISDIR(mode):
            kind = "a file" if stat.S_ISREG(mode) else _kind(mode)
            raise NotRegularFileError(
                f"{what} {text!r} exists and is {kind}, not a folder; name a new or existing folder"
            )
        if mode is not None:
            if not os.access(p, os.W_OK | os.X_OK):
                raise ValueError(
                    f"{what} {text!r}: the folder is read-only for this user; choose a writable "
                    "folder"
                )
            return p
        parent = p.parent
    # the nearest existing ancestor must be a writable folder (missing folders are created)
    probe = parent.absolute()
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(
            f"{what} {text!r}: {str(probe)!r} is not a folder, so the output cannot be written "
            "there; choose another path"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(
            f"{what} {text!r}: the folder {str(probe)!r} is read-only for this user (not full); "
            "choose a writable folder"
        )
    return p


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
        The files removed: regular files of this user named
        ``.STEM.partial-HOST-PID-RANDOM-MARK.SUFFIX`` with a valid owner marker ``MARK``, made
        on this host by a process that no longer runs, or on another host and not modified
        for :data:`STALE_AFTER_S` seconds. A file whose name only resembles that pattern is
        never removed.
    """
    removed: list[Path] = []
    host, now = _host_id(), time.time()
    uid = os.getuid() if hasattr(os, "getuid") else None
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _is_ours(entry.name)
        if m is None or not entry.is_file(follow_symlinks=False):
            continue
        try:
            if uid is not None and entry.stat(follow_symlinks=False).st_uid != uid:
                continue
            if m["host"] == host:
                pid = int(m["pid"])
                stale = pid != os.getpid() and not _pid_alive(pid)
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

    Raises
    ------
    NotRegularFileError
        If ``path`` exists and is not a regular file (a directory, FIFO, socket or device),
        checked before the temporary file is made and again just before the rename.

    Notes
    -----
    On success the file is ``fsync``-ed, renamed onto ``path`` with ``os.replace`` and the
    folder is ``fsync``-ed, so a crash leaves either the old or the new file, never an empty
    one. If the body raises, the temporary file is removed. Before writing, stale temporary
    files of killed writers are removed from the folder (:func:`remove_stale_partials`).
    """
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise NotRegularFileError(f"output {str(path)!r} names a folder, not a file")
    _refuse_special(path, "output")
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(folder)
    while True:
        name = _partial_name(path.stem, path.suffix, _host_id(), os.getpid(), secrets.token_hex(3))
        tmp = folder / name
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
        _refuse_special(path, "output")  # made meanwhile: still never replaced
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
