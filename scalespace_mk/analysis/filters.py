"""Filter I/O and fetching of the published master key filters.

The eight 7x7 master key filters (SPEC §1) are published as a text file of ``Filter k:``
blocks. This module reads and writes that format, loads filters from the common array
formats (``.npy``, ``.npz``, ``.pt``/``.pth``, ``.safetensors``) and fetches the published
file into a per-user cache, pooch-style: a registry pins the URL and sha256 of every file,
downloads go to a temporary file whose checksum is verified before it is moved into place,
and nothing is downloaded without a known hash.

Where the published file is looked for, in order:

1. the directory named by the environment variable ``SCALESPACE_MK_DATA`` (a data folder
   that you manage yourself; tests and CI point it at a local copy);
2. the per-user cache: ``$SCALESPACE_MK_CACHE`` if set, else ``$XDG_CACHE_HOME/scalespace_mk``
   or ``~/.cache/scalespace_mk`` on Linux (``~/Library/Caches/scalespace_mk`` on macOS,
   ``%LOCALAPPDATA%\\scalespace_mk\\Cache`` on Windows);
3. otherwise it is downloaded into the cache (unless ``SCALESPACE_MK_OFFLINE=1``).

All arrays use the stored-weight convention: ``h[r, c]`` with row r top to bottom and column
c left to right; the centred coordinates are ``x = c - m`` and ``y = m - r`` (y up) for the
centre index ``m = (k - 1) // 2``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import sys
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scalespace_mk._checks import check_filters
from scalespace_mk._io import ChecksumError, atomic_path, download_verified

__all__ = [
    "CACHE_ENV",
    "DATA_ENV",
    "OFFLINE_ENV",
    "REGISTRY",
    "ChecksumError",
    "DownloadError",
    "cache_dir",
    "fetch",
    "file_sha256",
    "load_filters",
    "read_filter_text",
    "save_filters",
    "write_filter_text",
]

#: Registry of fetchable data files: name -> (pinned URL, sha256 of the exact bytes).
REGISTRY: dict[str, tuple[str, str]] = {
    "8Filters.txt": (
        "https://raw.githubusercontent.com/tonylindeberg/masterfiltmodel/"
        "af051cb0667895cb479e15a3a1367b6a524362fe/model-fitting/8Filters.txt",
        "b48e20624d5089caa7a5bfcacf12d7a43f32aab5571f3a02e6583514c3506fcc",
    ),
}

#: Environment variable naming a data directory searched before the cache.
DATA_ENV = "SCALESPACE_MK_DATA"
#: Environment variable overriding the per-user cache directory.
CACHE_ENV = "SCALESPACE_MK_CACHE"
#: Environment variable that, when set to ``1``/``true``/``yes``, forbids downloads.
OFFLINE_ENV = "SCALESPACE_MK_OFFLINE"

_TEXT_SUFFIXES = (".txt", ".dat", ".text")
_ACCEPTED = ".txt, .npy, .npz, .pt, .pth, .safetensors or a directory holding 8Filters.txt"
_ARRAY_KEYS = ("filters", "kernels")


class DownloadError(OSError):
    """A registered data file could not be downloaded (offline, refused, HTTP error...)."""


# --------------------------------------------------------------------------- text format

_HEADER = re.compile(r"^filter\s*([+-]?\d+)\s*:?\s*$", re.IGNORECASE)


def read_filter_text(path: str | os.PathLike[str]) -> np.ndarray:
    """Read filters from the published ``Filter k:`` text format.

    Parameters
    ----------
    path : str or path-like
        Text file made of blocks, each a header line ``Filter k:`` followed by k rows of k
        whitespace-separated numbers. Blank lines, Windows line endings and lines starting
        with ``#`` are ignored. The block numbers must be consecutive (``1, 2, ...`` in the
        published file); the filters are returned in file order.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``[N, k, k]``, ``h[n, r, c]`` with row r top to bottom.

    Raises
    ------
    ValueError
        If a row is ragged or holds a non-number, a block is not square, blocks differ in
        size, numbers appear before the first header, or the block numbers are not
        consecutive. The message gives the line number (1-based).
    FileNotFoundError
        If ``path`` does not exist.

    Notes
    -----
    The stored-weight convention applies: ``x = c - m`` (right) and ``y = m - r`` (up) with
    ``m = (k - 1) // 2``.
    """
    path = Path(path)
    with open(path, encoding="utf-8-sig") as fh:
        lines = fh.read().splitlines()
    blocks: list[tuple[int, int, list[list[float]]]] = []  # (number, header line, rows)
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header:
            blocks.append((int(header.group(1)), lineno, []))
            continue
        if not blocks:
            raise ValueError(
                f"{path}:{lineno}: expected a header line 'Filter 1:' before the numbers; "
                f"got {line[:60]!r}"
            )
        try:
            row = [float(tok) for tok in line.split()]
        except ValueError:
            raise ValueError(
                f"{path}:{lineno}: a filter row must hold whitespace-separated numbers; "
                f"got {line[:60]!r}"
            ) from None
        rows = blocks[-1][2]
        if rows and len(row) != len(rows[0]):
            raise ValueError(
                f"{path}:{lineno}: ragged row in block 'Filter {blocks[-1][0]}': it has "
                f"{len(row)} numbers where the block's first row has {len(rows[0])}"
            )
        rows.append(row)
    if not blocks:
        raise ValueError(f"{path}: no 'Filter k:' blocks found; is this a filter text file?")
    size = None
    for number, lineno, rows in blocks:
        if not rows:
            raise ValueError(f"{path}:{lineno}: block 'Filter {number}' holds no rows")
        if len(rows) != len(rows[0]):
            raise ValueError(
                f"{path}:{lineno}: block 'Filter {number}' must be square (k rows of k "
                f"numbers); got {len(rows)} rows of {len(rows[0])}"
            )
        if size is None:
            size = len(rows)
        elif len(rows) != size:
            raise ValueError(
                f"{path}:{lineno}: block 'Filter {number}' is {len(rows)}x{len(rows)} but "
                f"the first block is {size}x{size}; all filters must have the same size"
            )
    numbers = [b[0] for b in blocks]
    expected = list(range(numbers[0], numbers[0] + len(numbers)))
    if numbers != expected:
        bad = next(i for i, (a, b) in enumerate(zip(numbers, expected, strict=True)) if a != b)
        raise ValueError(
            f"{path}:{blocks[bad][1]}: filter blocks must be numbered consecutively "
            f"(expected 'Filter {expected[bad]}:'); got 'Filter {numbers[bad]}:'"
        )
    return np.asarray([b[2] for b in blocks], dtype=np.float64)


def _atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp)`` on a temporary path in ``path``'s folder, then os.replace."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_filter_text(
    path: str | os.PathLike[str],
    filters: Any,
    *,
    fmt: str | None = None,
    start: int = 1,
) -> Path:
    """Write filters in the published ``Filter k:`` text format (atomically).

    Parameters
    ----------
    path : str or path-like
        Destination file; parent folders are created.
    filters : array_like or torch.Tensor
        ``[N, k, k]`` or ``[k, k]`` filters (odd k, finite, not identically zero).
    fmt : str, optional
        printf-style format of each number, e.g. ``"%.6f"`` as in the published file.
        Default None writes the shortest representation that reads back to the same
        float64 exactly.
    start : int, optional
        Number of the first block (default 1, the paper's numbering).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    arr = check_filters(filters, "filters")
    path = Path(path)

    def number(v: float) -> str:
        return repr(float(v)) if fmt is None else fmt % v

    parts = []
    for i, h in enumerate(arr):
        parts.append(f"Filter {start + i}:")
        parts.extend(" ".join(number(v) for v in row) for row in h)
        parts.append("")
    text = "\n".join(parts)
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


# --------------------------------------------------------------------------- array formats


def _as_filter_array(arr: Any, origin: str) -> np.ndarray:
    """Convert an array/tensor to validated float64 ``[N, k, k]``; accepts ``[C, 1, k, k]``."""
    if isinstance(arr, torch.Tensor):
        arr = arr.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(arr)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"filters from {origin} must be a numeric array; got dtype {arr.dtype}")
    if arr.ndim == 4:
        if arr.shape[1] != 1:
            raise ValueError(
                f"filters from {origin}: a 4-D array must be depthwise weights [C, 1, k, k]; "
                f"got shape {arr.shape}"
            )
        arr = arr[:, 0]
    return check_filters(arr, f"filters from {origin}")


def _pick(mapping: dict[str, Any], origin: str) -> Any:
    """Pick the array under 'filters' or 'kernels', or the only entry, of a mapping."""
    for key in _ARRAY_KEYS:
        if key in mapping:
            return mapping[key]
    if len(mapping) == 1:
        return next(iter(mapping.values()))
    keys = ", ".join(repr(k) for k in list(mapping)[:10])
    raise ValueError(
        f"{origin} holds {len(mapping)} arrays ({keys}{', ...' if len(mapping) > 10 else ''}); "
        f"store the filters under the key 'filters' or 'kernels', or save a single array "
        "(to pull depthwise weights out of a network checkpoint use "
        "scalespace_mk.networks.checkpoint)"
    )


def _load_npy(path: Path) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(
            f"cannot read {path} as a .npy array (pickled objects are refused): {exc}"
        ) from exc


def _load_npz(path: Path) -> Any:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(
            f"cannot read {path} as a .npz archive (pickled objects are refused): {exc}"
        ) from exc
    if not arrays:
        raise ValueError(f"{path} holds no arrays")
    return _pick(arrays, str(path))


def _load_torch(path: Path) -> Any:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        detail = re.search(r"WeightsUnpickler error: *(.*)", text)
        why = detail.group(1).split(" Please ")[0].strip(" .") if detail else ""
        if "Unsupported global" in text:
            raise ValueError(
                f"refusing to load {path}: it holds objects other than tensors and plain "
                "containers, and arbitrary pickles are never unpickled (torch.load with "
                f"weights_only=True: {why}). Save the filters with torch.save(tensor) or as "
                ".safetensors/.npy instead."
            ) from exc
        raise ValueError(
            f"cannot read {path} as a torch file (torch.load with weights_only=True failed: "
            f"{why or 'corrupt or not a torch.save file'})"
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ValueError(f"cannot read {path} as a torch file: {exc}") from exc
    if isinstance(obj, dict):
        if "state_dict" in obj and isinstance(obj["state_dict"], dict) and "filters" not in obj:
            obj = obj["state_dict"]
        obj = _pick(obj, str(path))
    if not isinstance(obj, torch.Tensor):
        raise TypeError(
            f"{path} must hold a tensor or a dict of tensors (key 'filters'); "
            f"got {type(obj).__name__}"
        )
    return obj


def _load_safetensors(path: Path) -> Any:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path} as a .safetensors file: {exc}") from exc
    if not tensors:
        raise ValueError(f"{path} holds no tensors")
    return _pick(tensors, str(path))


def load_filters(source: Any = None) -> np.ndarray:
    """Load filters from the published set, a file, a directory or an array.

    Parameters
    ----------
    source : None, str, path-like, numpy.ndarray or torch.Tensor, optional
        - ``None`` or ``"masterkey"``: the 8 published master key filters, via :func:`fetch`
          (data directory, then cache, then a checksum-verified download);
        - a directory: its ``8Filters.txt``;
        - a ``.txt`` file in the ``Filter k:`` format (:func:`read_filter_text`);
        - ``.npy``; ``.npz`` (key ``filters`` or ``kernels``, or its only array);
        - ``.pt``/``.pth``: read with ``torch.load(weights_only=True)``; a tensor, or a dict
          holding key ``filters``/``kernels`` or a single tensor;
        - ``.safetensors``: key ``filters``/``kernels`` or the only tensor;
        - an array or tensor, validated as it is.

        Arrays may be ``[N, k, k]``, ``[k, k]`` or depthwise weights ``[C, 1, k, k]``.

    Returns
    -------
    numpy.ndarray
        float64 ``[N, k, k]`` (odd k), finite, no filter identically zero.

    Raises
    ------
    FileNotFoundError
        If the path does not exist.
    ValueError, TypeError
        If the file is corrupt, of an unknown type, holds pickled objects, or the array is
        not a valid filter stack; for ``"builtin"`` (no longer shipped, see the changelog).
    ChecksumError, DownloadError
        From :func:`fetch` for the published filters.

    Notes
    -----
    Filters are stored depthwise weights ``h[r, c]`` (cross-correlation kernels, no flip);
    ``x = c - m``, ``y = m - r`` with y pointing up.
    """
    if source is None or (isinstance(source, str) and source == "masterkey"):
        path = fetch("8Filters.txt")
        return _as_filter_array(read_filter_text(path), str(path))
    if isinstance(source, str) and source == "builtin":
        raise ValueError(
            "the 'builtin' filters are no longer shipped (0.2.0): the small training runs "
            "they came from did not learn clearly structured filters (docs/results.md); use "
            "'masterkey' (the published 8) or your own filters (e.g. from "
            "'scalespace-mk extract')"
        )
    if isinstance(source, np.ndarray | torch.Tensor | list | tuple):
        return _as_filter_array(source, "the given array")
    if not isinstance(source, str | os.PathLike):
        raise TypeError(
            f"source must be None, 'masterkey', a path or an array; got {type(source).__name__}"
        )
    path = Path(source).expanduser()
    if path.is_dir():
        candidate = path / "8Filters.txt"
        if not candidate.is_file():
            raise FileNotFoundError(
                f"directory {path} holds no 8Filters.txt; pass a file ({_ACCEPTED})"
            )
        path = candidate
    if not path.exists():
        raise FileNotFoundError(
            f"filters source {str(source)!r} is neither an existing file nor one of "
            f"'masterkey'; accepted files: {_ACCEPTED}"
        )
    suffix = path.suffix.lower()
    if suffix in _TEXT_SUFFIXES:
        arr: Any = read_filter_text(path)
    elif suffix == ".npy":
        arr = _load_npy(path)
    elif suffix == ".npz":
        arr = _load_npz(path)
    elif suffix in (".pt", ".pth"):
        arr = _load_torch(path)
    elif suffix == ".safetensors":
        arr = _load_safetensors(path)
    else:
        raise ValueError(f"unknown filter file type {suffix!r} for {path}; accepted: {_ACCEPTED}")
    return _as_filter_array(arr, str(path))


def save_filters(path: str | os.PathLike[str], filters: Any) -> Path:
    """Save filters atomically in the format given by the file suffix.

    Parameters
    ----------
    path : str or path-like
        Destination; the suffix picks the format: ``.txt`` (``Filter k:`` text, exact
        float64 round trip), ``.npy``, ``.npz`` (key ``filters``), ``.pt``/``.pth`` (a float64
        tensor) or ``.safetensors`` (key ``filters``, float64).
    filters : array_like or torch.Tensor
        ``[N, k, k]``, ``[k, k]`` or ``[C, 1, k, k]`` filters.

    Returns
    -------
    pathlib.Path
        The path written. :func:`load_filters` reads it back exactly.
    """
    arr = _as_filter_array(filters, "filters")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _TEXT_SUFFIXES:
        return write_filter_text(path, arr)
    if suffix == ".npy":

        def writer(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, arr)

    elif suffix == ".npz":

        def writer(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, filters=arr)

    elif suffix in (".pt", ".pth"):

        def writer(tmp: Path) -> None:
            torch.save(torch.from_numpy(arr.copy()), tmp)

    elif suffix == ".safetensors":
        from safetensors.torch import save_file

        def writer(tmp: Path) -> None:
            save_file({"filters": torch.from_numpy(arr.copy())}, str(tmp))

    else:
        raise ValueError(f"unknown filter file type {suffix!r} for {path}; accepted: {_ACCEPTED}")
    _atomic_write(path, writer)
    return path


# --------------------------------------------------------------------------- fetching


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 digest of a file's bytes.

    Parameters
    ----------
    path : str or path-like
        File to hash.

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Return the per-user cache directory (not created).

    Returns
    -------
    pathlib.Path
        ``$SCALESPACE_MK_CACHE`` if set; else ``$XDG_CACHE_HOME/scalespace_mk`` or
        ``~/.cache/scalespace_mk`` (Linux and other POSIX), ``~/Library/Caches/scalespace_mk``
        (macOS), ``%LOCALAPPDATA%\\scalespace_mk\\Cache`` (Windows).
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA")
        root = Path(base) if base else Path.home() / "AppData" / "Local"
        return root / "scalespace_mk" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "scalespace_mk"
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return root / "scalespace_mk"


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _download(url: str, sha256: str, dest: Path, *, timeout: float) -> None:
    """Download ``url`` to a temp file beside ``dest``, verify sha256, then os.replace."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot create the cache directory {dest.parent}: {exc}; set {CACHE_ENV} to a "
            "writable folder"
        ) from exc
    download_verified(url, dest, sha256=sha256, timeout=timeout)


def _manual_hint(name: str, url: str, cache: Path) -> str:
    return (
        f"download {url} by hand and put it in {cache} (the cache; or set {CACHE_ENV}), or "
        f"put {name} in a folder of your own and set {DATA_ENV} to that folder"
    )


def fetch(name: str = "8Filters.txt", *, timeout: float = 30.0) -> Path:
    """Return the local path of a registered data file, downloading it if needed.

    Parameters
    ----------
    name : str, optional
        A key of :data:`REGISTRY`; default ``"8Filters.txt"``, the published master key
        filters.
    timeout : float, optional
        Network timeout in seconds for the download.

    Returns
    -------
    pathlib.Path
        Path to a file whose sha256 equals the pinned value.

    Raises
    ------
    ValueError
        If ``name`` is not registered.
    ChecksumError
        If the file in the ``SCALESPACE_MK_DATA`` directory has the wrong checksum, or a
        download does not match the pinned checksum (nothing is kept then).
    DownloadError
        If the file is not available locally and cannot be downloaded (offline, refused,
        HTTP error, or ``SCALESPACE_MK_OFFLINE=1``); the message names the URL and where to
        put the file.

    Notes
    -----
    Order of look-up: ``$SCALESPACE_MK_DATA/<name>``, then :func:`cache_dir` ``/<name>``, then
    download into the cache. A cached file with a wrong checksum is deleted and downloaded
    again (with a RuntimeWarning).
    """
    if name not in REGISTRY:
        raise ValueError(
            f"name must be one of {', '.join(repr(k) for k in REGISTRY)}; got {name!r}"
        )
    url, sha256 = REGISTRY[name]
    data = os.environ.get(DATA_ENV)
    if data:
        candidate = Path(data).expanduser() / name
        if candidate.is_file():
            got = file_sha256(candidate)
            if got != sha256:
                raise ChecksumError(
                    f"{candidate} (found through {DATA_ENV}) has sha256 {got}, expected "
                    f"{sha256}; replace it with the pinned version from {url}"
                )
            return candidate
    cache = cache_dir()
    cached = cache / name
    if cached.is_file():
        got = file_sha256(cached)
        if got == sha256:
            return cached
        warnings.warn(
            f"cached {cached} has sha256 {got}, expected {sha256}; deleting it and "
            "downloading it again",
            RuntimeWarning,
            stacklevel=2,
        )
        cached.unlink()
    if _offline():
        raise DownloadError(
            f"{name} is not available locally and downloads are disabled ({OFFLINE_ENV} is "
            f"set); {_manual_hint(name, url, cache)}"
        )
    try:
        _download(url, sha256, cached, timeout=timeout)
    except ChecksumError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        if isinstance(exc, DownloadError):
            raise
        if isinstance(exc, urllib.error.HTTPError):
            reason: Any = f"HTTP {exc.code} {exc.reason}"
            exc.close()
        else:
            reason = getattr(exc, "reason", None) or exc
        raise DownloadError(
            f"could not download {name} from {url} ({reason}); {_manual_hint(name, url, cache)}"
        ) from exc
    return cached
