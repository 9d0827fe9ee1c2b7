"""Filter I/O and the published master key filters.

The eight 7x7 master key filters (docs/method.md#data) are published as a text file of
``Filter k:`` blocks. This module reads and writes that format and loads filters from the
common array formats (``.npy``, ``.npz``, ``.pt``/``.pth``, ``.safetensors``).

The published file ships inside the package (``scalespace_mk/data_files/8Filters.txt``, with
its sha256, attribution and CC BY 4.0 licence in ``8Filters.md``): :func:`load_filters` reads
that copy, offline, with no setting. :func:`fetch` downloads the pinned version with pooch
(registry of URL and sha256, a temporary file moved into place only when the checksum
matches) into the per-user cache (``$SCALESPACE_MK_CACHE``, else pooch's ``os_cache``:
``~/.cache/scalespace_mk`` on Linux); ``scalespace-mk data verify`` uses it to check the
shipped copy. Downloads are never needed.

All arrays use the stored-weight convention: ``h[r, c]`` with row r top to bottom and column
c left to right; the centred coordinates are ``x = c - m`` and ``y = m - r`` (y up) for the
centre index ``m = (k - 1) // 2``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import scalespace_mk.limits as limits
from scalespace_mk._checks import (
    check_array_file,
    check_ascii_number,
    check_filters,
    check_regular_file,
    load_torch_safely,
)
from scalespace_mk._io import ChecksumError, atomic_path, download_verified

__all__ = [
    "CACHE_ENV",
    "OFFLINE_ENV",
    "PUBLISHED_FILTERS",
    "REGISTRY",
    "ChecksumError",
    "DownloadError",
    "cache_dir",
    "fetch",
    "file_sha256",
    "load_filters",
    "published_path",
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

#: Environment variable overriding the per-user cache directory of :func:`fetch`.
CACHE_ENV = "SCALESPACE_MK_CACHE"
#: Environment variable that, when set to ``1``/``true``/``yes``, forbids downloads.
OFFLINE_ENV = "SCALESPACE_MK_OFFLINE"
#: The published 8 as shipped (the exact bytes of ``REGISTRY["8Filters.txt"]``).
PUBLISHED_FILTERS = "data_files/8Filters.txt"

_TEXT_SUFFIXES = (".txt", ".dat", ".text")
_ACCEPTED = ".txt, .npy, .npz, .pt, .pth, .safetensors or a directory holding 8Filters.txt"
_ARRAY_KEYS = ("filters", "kernels")


class DownloadError(OSError):
    """A registered data file could not be downloaded (offline, refused, HTTP error...)."""


# --------------------------------------------------------------------------- text format

_HEADER = re.compile(r"^filter\s*([+-]?[0-9]+)\s*:?\s*$", re.IGNORECASE | re.ASCII)


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
    path = check_regular_file(path, "filter file")
    size = os.stat(path).st_size
    if size > limits.TEXT_FILE_BYTES_MAX:
        raise ValueError(
            f"{path} is {limits.format_bytes(size)}, above the limit of "
            f"{limits.format_bytes(limits.TEXT_FILE_BYTES_MAX)} for filter text files "
            "(scalespace_mk.limits.TEXT_FILE_BYTES_MAX); store many filters as .npy"
        )
    try:
        with open(path, encoding="utf-8-sig") as fh:
            # read at most the cap (+1): a file that grows while read is still bounded
            text = fh.read(limits.TEXT_FILE_BYTES_MAX + 1)
            if len(text) > limits.TEXT_FILE_BYTES_MAX:
                raise ValueError(
                    f"{path} grew beyond {limits.format_bytes(limits.TEXT_FILE_BYTES_MAX)} "
                    "while being read (scalespace_mk.limits.TEXT_FILE_BYTES_MAX)"
                )
            lines = text.splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path} is not a UTF-8 text file (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start}); a filter text file holds 'Filter k:' blocks of numbers (binary "
            "arrays go in .npy, .npz, .pt or .safetensors files)"
        ) from None
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
            row = [check_ascii_number(tok, f"{path}:{lineno}") for tok in line.split()]
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


def _as_filter_array(arr: Any, origin: str, values: bool = True) -> np.ndarray:
    """Convert an array/tensor to validated float64 ``[N, k, k]``; accepts ``[C, 1, k, k]``."""
    if isinstance(arr, torch.Tensor):
        if arr.is_complex():
            raise TypeError(f"filters from {origin} must be real; got dtype {arr.dtype}")
        arr = arr.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(arr)
    if np.iscomplexobj(arr):
        raise TypeError(
            f"filters from {origin} must be real; got dtype {arr.dtype} (take .real or abs() "
            "yourself if that is what you mean)"
        )
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"filters from {origin} must be a numeric array; got dtype {arr.dtype}")
    if arr.ndim == 4:
        if arr.shape[1] != 1:
            raise ValueError(
                f"filters from {origin}: a 4-D array must be depthwise weights [C, 1, k, k]; "
                f"got shape {arr.shape}"
            )
        arr = arr[:, 0]
    return check_filters(arr, f"filters from {origin}", values=values)


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
    check_array_file(path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(
            f"cannot read {path} as a .npy array (pickled objects are refused): {exc}"
        ) from exc


def _load_npz(path: Path) -> Any:
    check_array_file(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (  # encrypted members, unknown compression methods, CRC errors included
        zipfile.BadZipFile,
        ValueError,
        OSError,
        EOFError,
        RuntimeError,
        NotImplementedError,
    ) as exc:
        raise ValueError(
            f"cannot read {path} as a .npz archive (pickled objects are refused): {exc}"
        ) from exc
    if not arrays:
        raise ValueError(f"{path} holds no arrays")
    return _pick(arrays, str(path))


def _load_torch(path: Path) -> Any:
    obj = load_torch_safely(path, "filter file")
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

    from scalespace_mk._checks import check_safetensors_file

    check_safetensors_file(path)  # our words for a damaged header, before the library
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ValueError(
            f"cannot read {path} as a .safetensors file ({first}); the file is corrupt or "
            "holds a dtype torch cannot read"
        ) from None
    if not tensors:
        raise ValueError(f"{path} holds no tensors")
    return _pick(tensors, str(path))


def load_filters(source: Any = None, *, check_values: bool = True) -> np.ndarray:
    """Load filters from the published set, a file, a directory or an array.

    Parameters
    ----------
    source : None, str, path-like, numpy.ndarray or torch.Tensor, optional
        - ``None`` or ``"masterkey"``: the 8 published master key filters, from the copy
          shipped in the package (:func:`published_path`; checksum verified, no network);
        - a directory: its ``8Filters.txt``;
        - a ``.txt`` file in the ``Filter k:`` format (:func:`read_filter_text`);
        - ``.npy``; ``.npz`` (key ``filters`` or ``kernels``, or its only array);
        - ``.pt``/``.pth``: read with ``torch.load(weights_only=True)``; a tensor, or a dict
          holding key ``filters``/``kernels`` or a single tensor;
        - ``.safetensors``: key ``filters``/``kernels`` or the only tensor;
        - an array or tensor, validated as it is.

        Arrays may be ``[N, k, k]``, ``[k, k]`` or depthwise weights ``[C, 1, k, k]``.
    check_values : bool
        True (default): reject NaN/Inf entries and all-zero filters. False: check the shape
        only (for the census, which records such filters instead of stopping).

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
    ChecksumError
        If the shipped copy of the published filters was altered (reinstall the package).

    Notes
    -----
    Filters are stored depthwise weights ``h[r, c]`` (cross-correlation kernels, no flip);
    ``x = c - m``, ``y = m - r`` with y pointing up.
    """
    if source is None or (isinstance(source, str) and source == "masterkey"):
        path = published_path()
        return _as_filter_array(read_filter_text(path), str(path))
    if isinstance(source, str) and source == "builtin":
        raise ValueError(
            "the 'builtin' filters are no longer shipped (0.2.0): the small training runs "
            "they came from did not learn clearly structured filters (docs/results.md); use "
            "'masterkey' (the published 8) or your own filters (e.g. from "
            "'scalespace-mk extract')"
        )
    if isinstance(source, np.ndarray | torch.Tensor | list | tuple):
        return _as_filter_array(source, "the given array", check_values)
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
    check_regular_file(path, "filter file")
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
    return _as_filter_array(arr, str(path), check_values)


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


def published_path() -> Path:
    """Return the path of the shipped copy of the published 8 filters, checksum verified.

    Returns
    -------
    pathlib.Path
        ``scalespace_mk/data_files/8Filters.txt`` inside the installed package; its sha256
        equals the pinned ``REGISTRY["8Filters.txt"]`` value.

    Raises
    ------
    FileNotFoundError
        If the installation lacks the file.
    ChecksumError
        If the file differs from the published version.
    """
    url, sha256 = REGISTRY["8Filters.txt"]
    path = Path(str(importlib.resources.files("scalespace_mk").joinpath(PUBLISHED_FILTERS)))
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped published filters {PUBLISHED_FILTERS} are missing from this "
            f"installation (looked at {path}); reinstall scalespace_mk, or download {url} and "
            "pass its path"
        )
    got = file_sha256(path)
    if got != sha256:
        raise ChecksumError(
            f"the shipped {path} has sha256 {got}, expected {sha256}: the file was altered; "
            "reinstall scalespace_mk (`scalespace-mk data verify` downloads the pinned version)"
        )
    return path


def cache_dir() -> Path:
    """Return the per-user download cache of :func:`fetch` (not created).

    Returns
    -------
    pathlib.Path
        ``$SCALESPACE_MK_CACHE`` if set; else ``pooch.os_cache("scalespace_mk")``:
        ``$XDG_CACHE_HOME/scalespace_mk`` or ``~/.cache/scalespace_mk`` on Linux,
        ``~/Library/Caches/scalespace_mk`` on macOS, the local app-data cache on Windows.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import pooch

    return Path(pooch.os_cache("scalespace_mk"))


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def fetch(name: str = "8Filters.txt", *, timeout: float = 30.0) -> Path:
    """Download a registered data file into the cache (or find it there), checksum verified.

    Not needed to use the published filters (they ship with the package); this is the
    pinned, verified fetch behind ``scalespace-mk data verify``.

    Parameters
    ----------
    name : str, optional
        A key of :data:`REGISTRY`; default ``"8Filters.txt"``, the published master key
        filters.
    timeout : float, optional
        Network timeout in seconds.

    Returns
    -------
    pathlib.Path
        ``cache_dir() / name``, whose sha256 equals the pinned value.

    Raises
    ------
    ValueError
        If ``name`` is not registered.
    ChecksumError
        If the download does not match the pinned checksum (nothing is kept).
    DownloadError
        If the file is not cached and cannot be downloaded (offline, refused, HTTP error, or
        ``SCALESPACE_MK_OFFLINE=1``); the message names the URL and where to put the file.

    Notes
    -----
    pooch does the work: a cached file with the right checksum is returned as it is; a
    missing or altered one is downloaded to a temporary file, verified and moved into place.
    """
    if name not in REGISTRY:
        raise ValueError(
            f"name must be one of {', '.join(repr(k) for k in REGISTRY)}; got {name!r}"
        )
    url, sha256 = REGISTRY[name]
    cache = cache_dir()
    cached = cache / name
    hint = f"download {url} by hand and put it in {cache} (the cache; or set {CACHE_ENV})"
    if _offline() and not (cached.is_file() and file_sha256(cached) == sha256):
        raise DownloadError(
            f"{name} is not in the cache and downloads are disabled ({OFFLINE_ENV} is set); {hint}"
        )
    try:
        return download_verified(url, cached, sha256=sha256, timeout=timeout)
    except ChecksumError:
        raise
    except OSError as exc:
        raise DownloadError(f"could not download {name} from {url} ({exc}); {hint}") from exc
