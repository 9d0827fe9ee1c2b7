"""Filters read by row ranges without loading the whole input: memory-mapped ``.npy``,
folders of ``.npy`` shards, HDF5 datasets (h5py), other filter files and arrays.

Used by :mod:`scalespace_mk.analysis.stream` (the census of inputs larger than memory) and
the ``census --offset/--rows/--limit`` selection. Filters are stored depthwise weights
``[N, k, k]`` (rows top to bottom, ``x = c - m``, ``y = m - r``, y up), k odd.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FilterSource", "open_filters", "select_rows"]


class FilterSource:
    """Filters ``[N, k, k]`` read by row ranges, without loading the whole input.

    Built by :func:`open_filters`. ``shape`` is ``(N, k, k)``; :meth:`read` returns rows
    ``start:stop`` as a float64 array; ``describe()`` identifies the input (paths, sizes,
    modification times, shape) for the resume check.
    """

    def __init__(self, parts: list[Any], k: int, desc: dict[str, Any], close: Any = None):
        self._parts = parts  # array-likes [n_i, k, k] or [n_i, k*k] (memmap, h5py dataset)
        self._sizes = np.array([p.shape[0] for p in parts], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self._sizes)])
        self.k = k
        self._desc = desc
        self._close = close

    @property
    def shape(self) -> tuple[int, int, int]:
        return (int(self._offsets[-1]), self.k, self.k)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def describe(self) -> dict[str, Any]:
        return dict(self._desc, shape=list(self.shape))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as float64 ``[stop - start, k, k]`` (a copy)."""
        out = []
        for i, part in enumerate(self._parts):
            lo, hi = self._offsets[i], self._offsets[i + 1]
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                block = np.asarray(part[a - lo : b - lo])
                out.append(block.reshape(b - a, self.k, self.k).astype(np.float64))
        if not out:
            return np.zeros((0, self.k, self.k))
        return np.concatenate(out) if len(out) > 1 else np.ascontiguousarray(out[0])

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None


def _filter_shape(shape: tuple[int, ...], name: str, flat_ok: bool) -> int:
    """k of a filter array of ``shape`` ([N, k, k], [N, 1, k, k], or [N, k*k] if flat_ok)."""
    if len(shape) == 4 and shape[1] == 1 and shape[2] == shape[3]:
        k = shape[2]
    elif len(shape) == 3 and shape[1] == shape[2]:
        k = shape[1]
    elif flat_ok and len(shape) == 2 and math.isqrt(shape[1]) ** 2 == shape[1]:
        k = math.isqrt(shape[1])
    else:
        flat = " or [N, k*k]" if flat_ok else ""
        raise ValueError(
            f"{name} must hold filters of shape [N, k, k] or [N, 1, k, k]{flat} with k odd; "
            f"got shape {tuple(shape)}"
        )
    if k % 2 == 0 or k < 3:
        raise ValueError(f"{name}: filters must be k x k with k odd and >= 3; got k = {k}")
    return int(k)


def _stat(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _npy(path: Path) -> Any:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path}: not a numeric .npy array ({exc})") from None
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{path}: filters must be real numbers; got dtype {arr.dtype}")
    return arr


def open_filters(source: Any, *, dataset: str | None = None) -> FilterSource:
    """Open filters for reading by chunks.

    Parameters
    ----------
    source : str, path-like or array_like
        - a ``.npy`` file (memory-mapped);
        - a folder of ``.npy`` shards (read in the order of their names, numbers compared as
          numbers: ``part-2.npy`` before ``part-10.npy``), all of the same k;
        - an ``.h5`` / ``.hdf5`` file (needs ``h5py``): the dataset ``dataset``, or else the
          one named ``filters`` or ``kernels``, or else the only dataset in the file;
          ``[N, k*k]`` rows (e.g. 3x3 filters flattened to 9 values) are accepted there;
        - any other file of :func:`scalespace_mk.analysis.filters.load_filters` (read whole);
        - an array ``[N, k, k]`` or ``[N, 1, k, k]``.
    dataset : str, optional
        The HDF5 dataset's name.

    Returns
    -------
    FilterSource
        Shape ``(N, k, k)``; rows are read on demand as float64.

    Raises
    ------
    FileNotFoundError
        If the path does not exist.
    ValueError
        A folder with no ``.npy`` file, shards of different sizes k, a wrong shape, an
        HDF5 file without the dataset (the message lists the datasets).
    ImportError
        For HDF5 without h5py (``pip install h5py``).
    """
    if not isinstance(source, str | os.PathLike):
        arr = np.asarray(source)
        k = _filter_shape(arr.shape, "filters", flat_ok=False)
        digest = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
        return FilterSource([arr], k, {"kind": "array", "sha256": digest})
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        shards = sorted(path.glob("*.npy"), key=_natural)
        if not shards:
            if (path / "8Filters.txt").exists():
                return _whole(path)
            raise ValueError(f"{path}: the folder holds no .npy shards (*.npy)")
        arrays = [_npy(p) for p in shards]
        ks = {
            _filter_shape(a.shape, str(p), flat_ok=False)
            for a, p in zip(arrays, shards, strict=True)
        }
        if len(ks) > 1:
            raise ValueError(f"{path}: the shards hold filters of different sizes {sorted(ks)}")
        desc = {"kind": "npy-folder", "files": [_stat(p) for p in shards]}
        return FilterSource(arrays, ks.pop(), desc)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = _npy(path)
        k = _filter_shape(arr.shape, str(path), flat_ok=False)
        return FilterSource([arr], k, {"kind": "npy", "files": [_stat(path)]})
    if suffix in (".h5", ".hdf5", ".hdf"):
        return _hdf5(path, dataset)
    return _whole(path)


def _natural(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _whole(path: Path) -> FilterSource:
    from scalespace_mk.analysis.filters import load_filters

    arr = load_filters(path, check_values=False)
    return FilterSource([arr], arr.shape[1], {"kind": "file", "files": [_stat(path)]})


def _hdf5(path: Path, dataset: str | None) -> FilterSource:
    try:
        import h5py
    except ImportError:
        raise ImportError(
            f"{path}: reading HDF5 needs h5py (pip install h5py), or convert it to .npy"
        ) from None
    fh = h5py.File(path, "r")
    names: list[str] = []
    fh.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
    if dataset is None:
        preferred = [n for n in names if n.split("/")[-1] in ("filters", "kernels")]
        if len(preferred) == 1:
            dataset = preferred[0]
        elif len(names) == 1:
            dataset = names[0]
        else:
            fh.close()
            raise ValueError(
                f"{path}: name the dataset of filters (dataset= / --dataset); it holds {names}"
            )
    if dataset not in names:
        fh.close()
        raise ValueError(f"{path}: no dataset {dataset!r}; it holds {names}")
    ds = fh[dataset]
    k = _filter_shape(ds.shape, f"{path}:{dataset}", flat_ok=True)
    desc = {"kind": "hdf5", "dataset": dataset, "files": [_stat(path)]}
    return FilterSource([ds], k, desc, close=fh.close)


def select_rows(n: int, offset: int, rows: int | None, limit: int | None) -> tuple[int, int]:
    """Rows ``[start, stop)`` of an input of ``n`` rows: from ``offset``, at most ``rows``
    rows, at most ``limit``; a ValueError names a bad argument."""
    for name, v in (("offset", offset), ("rows", rows), ("limit", limit)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0):
            raise ValueError(f"{name} must be an integer >= 0; got {v!r}")
    if offset > n:
        raise ValueError(f"offset = {offset} is beyond the input's {n} filters")
    stop = n if rows is None else min(n, offset + rows)
    if limit is not None:
        stop = min(stop, offset + limit)
    return int(offset), int(stop)
