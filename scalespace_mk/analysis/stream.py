"""Census of inputs larger than memory: streamed, resumable and split across processes.

:func:`census_stream` reads the filters chunk by chunk from a memory-mapped ``.npy`` file, a
folder of ``.npy`` shards or an HDF5 dataset (:func:`open_filters`), fits each chunk with
:func:`scalespace_mk.analysis.census.census` (or the family census), and writes the result
as columns (:meth:`scalespace_mk.analysis.census.CensusResult.to_columns`) to a Parquet file
(pyarrow) or an ``.npz`` archive. Peak memory is that of one chunk (plus the census
tables), whatever the input size.

**Resumable.** Each finished chunk is written atomically to ``OUT.parts/`` (beside ``OUT``)
with a manifest of the input and the options. Run again with the same arguments, the census
skips the chunks already there and the merged file is identical to that of an uninterrupted
run; with other arguments it refuses (``restart=True`` discards the parts). The manifest is
stored in ``OUT`` too, so a rerun of a finished census is a no-op that says so; with other
input or options it computes ``OUT`` anew, naming what differs. The input is known by its
paths, sizes, modification times and shape, and the SHA-256 of the selection's first and last
chunks (cheap: two chunks are read).

**Across processes.** Under ``torchrun`` (``WORLD_SIZE``/``RANK``) or ``srun``
(``SLURM_NTASKS``/``SLURM_PROCID``), rank ``r`` of ``W`` fits the chunks ``i`` with
``i % W == r`` (``torch.distributed`` with gloo, rendezvous through ``MASTER_ADDR`` or a file
in ``OUT.parts/``, which must be on a file system all ranks share); rank 0 merges. A failure
on one rank (an unreadable chunk, a crash) stops every rank with an error naming that rank and
chunk; the chunks written stay, and the same command resumes from them. The chunks
are the same whatever the number of ranks, and each chunk's null filters are seeded from
``(seed, first row of the chunk)``, so the output does not depend on the number of ranks.

Filters are stored depthwise weights (rows top to bottom, ``x = c - m``, ``y = m - r``, y
up); ``sigma`` is a standard deviation (``s = sigma**2``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scalespace_mk._io import atomic_path, remove_stale_partials
from scalespace_mk._progress import log_line
from scalespace_mk._progress import progress as progress_iter
from scalespace_mk.analysis.ranks import RankLost, join_ranks
from scalespace_mk.analysis.sources import FilterSource, open_filters, select_rows

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "FilterSource",
    "StreamSummary",
    "census_stream",
    "default_chunk_rows",
    "open_filters",
    "read_census",
    "write_columns",
]

#: filters per chunk (65,536 7x7 filters: ~25 MB in float64; the census of a chunk stays
#: well under 1 GB)
DEFAULT_CHUNK_ROWS = 65536
_FORMATS = (".parquet", ".npz")
_MANIFEST = "manifest.json"
_PART = re.compile(r"chunk-(\d{12})\.npz")


def default_chunk_rows(k: int) -> int:
    """Filters per chunk for ``k x k`` filters: :data:`DEFAULT_CHUNK_ROWS`, fewer where the
    chunk's float64 filters would pass 128 MB (k > 15), at least 1,024."""
    return int(max(1024, min(DEFAULT_CHUNK_ROWS, (128 << 20) // (8 * k * k))))


# --------------------------------------------------------------------------------------
# columns of a chunk


def _expand_family(res: Any, ok: np.ndarray) -> Any:
    """``res`` (fitted on the rows ``ok``) with NaN rows where ``ok`` is False."""
    import dataclasses

    def full(v: np.ndarray) -> np.ndarray:
        out = np.full((len(ok),) + v.shape[1:], np.nan)
        if ok.any():
            out[ok] = v
        return out

    keys = ("sigma_x", "sigma_y", "coefficients", "b", "r2", "rss", "tss", "r2_adjusted")
    return dataclasses.replace(res, **{k: full(getattr(res, k)) for k in keys})


def _family_columns(res: Any, index: np.ndarray, reason: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of a :class:`~scalespace_mk.analysis.jets.FamilyCensusResult`, and ``reason``
    (``""`` for a fitted filter, else why it was not fitted)."""
    cols: dict[str, np.ndarray] = {"index": np.asarray(index, np.int64)}
    cols["sigma_x"], cols["sigma_y"] = res.sigma_x, res.sigma_y
    for j, name in enumerate(res.names):
        cols[name] = res.coefficients[:, j]
    for key in ("b", "r2", "rss", "tss", "r2_adjusted"):
        cols[key] = getattr(res, key)
    cols["reason"] = np.array(["" if r is None else r for r in reason.tolist()], dtype="<U10")
    return {k: np.ascontiguousarray(v) for k, v in cols.items()}


def _null_seed(seed: int, start: int) -> int:
    """Seed of the null filters of the chunk whose first row is ``start`` (rank-free)."""
    return int(np.random.SeedSequence([int(seed), int(start)]).generate_state(1)[0])


def _chunk_columns(
    y: np.ndarray, start: int, family: str, nulls: Sequence[str], seed: int, kw: dict
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from scalespace_mk.analysis.census import census

    index = np.arange(start, start + len(y), dtype=np.int64)
    reason = None
    if family == "masterkey":
        res = census(y, **kw)
    else:  # the family census stops at a bad filter: fit the others, record its reason
        from scalespace_mk.analysis.census import screen_filters

        reason = screen_filters(y)
        ok = np.equal(reason, None)
        placeholder = np.random.default_rng(0).standard_normal((1,) + y.shape[1:])
        res = census(y[ok] if ok.any() else placeholder, family=family, **kw)
        res = _expand_family(res, ok)
    if family == "masterkey":
        cols = res.to_columns(index)
        meta = {"types": [str(t) for t in res.types], "sigma_max": res.sigma_max}
        meta["alpha_range"] = list(res.alpha_range)
        meta["int_types"] = [isinstance(t, int) for t in res.types]
        valid = res.valid
    else:
        cols = _family_columns(res, index, reason)
        meta = {
            "family": res.family,
            "order": res.order,
            "names": list(res.names),
            "n_params": res.n_params,
            "taps": res.taps,
            "options": res.options,
        }
        valid = np.equal(reason, None)
    if nulls:
        from scalespace_mk.analysis.null import null_filters

        learned = y[valid]
        for kind in nulls:
            r2 = np.full(len(y), np.nan)
            if len(learned):
                z = null_filters(learned, kind, _null_seed(seed, start))
                r2[valid] = census(z, family=family, **kw).r2
            cols[f"null_{kind}_r2"] = r2
    return cols, meta


# --------------------------------------------------------------------------------------
# column files


def write_columns(path: str | os.PathLike, parts: Sequence[Any], meta: dict[str, Any]) -> Path:
    """Write column chunks to one ``.parquet`` or ``.npz`` file, atomically, chunk by chunk.

    Parameters
    ----------
    path : str or path-like
        ``.parquet`` (needs pyarrow; one row group per chunk) or ``.npz`` (one ``.npy``
        member per column, plus ``__meta__``, a JSON string; loads with
        ``numpy.load(allow_pickle=False)``).
    parts : sequence
        Each item a dict of equal-length columns, or a path to a chunk ``.npz``; loaded one
        at a time (one chunk in memory; for ``.npz`` one column of one chunk).
    meta : dict
        JSON-serialisable description (types, options), stored with the columns.

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(f"out must end in .parquet or .npz; got {str(path)!r}")

    parts = [p if isinstance(p, dict) else _PartColumns(Path(p)) for p in parts]

    def load(part: dict) -> dict[str, np.ndarray]:
        return dict(part.items())

    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            pa, pq = _pyarrow()
            writer = None
            try:
                for part in parts:
                    cols = load(part)
                    table = pa.table({k: pa.array(v) for k, v in cols.items()})
                    if writer is None:
                        schema = table.schema.with_metadata({"scalespace_mk": json.dumps(meta)})
                        writer = pq.ParquetWriter(tmp, schema)
                    writer.write_table(table.replace_schema_metadata(writer.schema.metadata))
                if writer is None:
                    raise ValueError("no rows to write (the selection is empty)")
            finally:
                if writer is not None:
                    writer.close()
        else:
            _write_npz(tmp, parts, meta)
    return path


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            "writing .parquet needs pyarrow (pip install pyarrow); or write .npz"
        ) from None
    return pa, pq


def _write_npz(tmp: Path, parts: Sequence[dict], meta: dict[str, Any]) -> None:
    """Stream columns into an ``.npz``: one zip member per column, chunk after chunk."""

    def column(part: dict, key: str) -> np.ndarray:
        return part[key]

    if not parts:
        raise ValueError("no rows to write (the selection is empty)")
    keys = list(parts[0].keys())
    info = {}
    for key in keys:  # dtype (string columns: the widest) and length of every column
        n, dt = 0, None
        for part in parts:
            c = column(part, key)
            n += len(c)
            dt = c.dtype if dt is None else np.promote_types(dt, c.dtype)
        info[key] = (n, dt)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key in keys:
            n, dt = info[key]
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                header = {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False}
                header["shape"] = (n,)
                np.lib.format.write_array_header_2_0(fh, header)
                for part in parts:
                    fh.write(np.ascontiguousarray(column(part, key), dtype=dt).tobytes())
        with zf.open("__meta__.npy", "w") as fh:
            np.lib.format.write_array(fh, np.array(json.dumps(meta)), allow_pickle=False)


def read_census(path: str | os.PathLike, *, columns: Sequence[str] | None = None) -> Any:
    """Read a census file written by :func:`census_stream` back into a result object.

    Parameters
    ----------
    path : str or path-like
        A ``.parquet`` or ``.npz`` census file.
    columns : sequence of str, optional
        Return only these columns, as a dict of numpy arrays (for files too large to load
        whole: read a few columns).

    Returns
    -------
    CensusResult, FamilyCensusResult or dict
        The 8-type census as :class:`~scalespace_mk.analysis.census.CensusResult` (its
        ``index`` column, the input rows, is in ``result.index``), the family census as
        :class:`~scalespace_mk.analysis.jets.FamilyCensusResult` (with ``reason``: None, or
        why a filter was not fitted; its values are NaN), or the chosen columns. Null columns
        ``null_<kind>_r2`` are in ``result.null_r2`` (dict); ``result.manifest`` is what the
        census was computed from (input files, sizes, modification times, SHA-256 of the
        first and last chunks, selection, options; None for files written before it was
        stored).
    """
    cols, meta = _read_columns(Path(path), columns)
    if columns is not None:
        return cols
    nulls = {k[5:-3]: v for k, v in cols.items() if k.startswith("null_") and k.endswith("_r2")}
    if "family" in meta:
        from scalespace_mk.analysis.jets import FamilyCensusResult

        res: Any = FamilyCensusResult(
            family=meta["family"],
            order=int(meta["order"]),
            names=tuple(meta["names"]),
            sigma_x=cols["sigma_x"],
            sigma_y=cols["sigma_y"],
            coefficients=np.stack([cols[n] for n in meta["names"]], axis=1),
            b=cols["b"],
            r2=cols["r2"],
            rss=cols["rss"],
            tss=cols["tss"],
            r2_adjusted=cols["r2_adjusted"],
            n_params=int(meta["n_params"]),
            taps=int(meta["taps"]),
            options=dict(meta["options"]),
        )
    else:
        from scalespace_mk.analysis.census import CensusResult

        types = [int(t) if i else t for t, i in zip(meta["types"], meta["int_types"], strict=True)]
        res = CensusResult.from_columns(
            cols, types, sigma_max=meta["sigma_max"], alpha_range=tuple(meta["alpha_range"])
        )
    if "family" in meta and "reason" in cols:
        res.__dict__["reason"] = np.array(
            [None if r == "" else str(r) for r in cols["reason"].tolist()], dtype=object
        )
    res.__dict__["index"] = cols["index"]
    res.__dict__["null_r2"] = nulls
    res.__dict__["manifest"] = meta.get("manifest")
    return res


def _read_columns(path: Path, columns: Sequence[str] | None) -> tuple[dict, dict]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        _, pq = _pyarrow()
        table = pq.read_table(path, columns=list(columns) if columns else None)
        raw = (pq.read_schema(path).metadata or {}).get(b"scalespace_mk", b"{}")
        meta = json.loads(raw)
        cols = {}
        for name in table.column_names:
            arr = table.column(name).to_numpy()
            cols[name] = arr.astype(str) if arr.dtype == object else arr
        return cols, meta
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"])) if "__meta__" in z.files else {}
            keys = [k for k in z.files if k != "__meta__"] if columns is None else list(columns)
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise ValueError(f"{path}: no columns {missing}; it holds {z.files}")
            return {k: z[k] for k in keys}, meta
    raise ValueError(f"{path}: a census file ends in .parquet or .npz")


# --------------------------------------------------------------------------------------
# the streamed census


@dataclass
class StreamSummary:
    """What :func:`census_stream` did.

    Attributes
    ----------
    path : pathlib.Path
        The merged census file (written by rank 0).
    rows : int
        Filters in the selection.
    chunks : int
        Chunks of the selection.
    fitted_here, resumed : int
        Chunks this process fitted, and chunks it found already done (from an earlier run).
    seconds : float
        Wall time of the call in this process.
    rank, world : int
        This process's rank and the number of processes.
    up_to_date : bool
        True when ``path`` already held this census (same input, selection and options; its
        manifest is stored with the columns), so nothing was computed.
    """

    path: Path
    rows: int
    chunks: int
    fitted_here: int
    resumed: int
    seconds: float
    rank: int = 0
    world: int = 1
    up_to_date: bool = False


def census_stream(
    source: Any,
    out: str | os.PathLike,
    *,
    chunk_rows: int | None = None,
    offset: int = 0,
    rows: int | None = None,
    limit: int | None = None,
    dataset: str | None = None,
    null: Sequence[str] | str | None = (),
    seed: int = 0,
    restart: bool = False,
    keep_parts: bool = False,
    progress: bool | None = None,
    **census_kwargs: Any,
) -> StreamSummary:
    """Census of filters too many for memory, chunk by chunk, resumable, across processes.

    Parameters
    ----------
    source : str, path-like or array_like
        The filters (:func:`open_filters`): ``.npy`` (memory-mapped), a folder of ``.npy``
        shards, HDF5 (h5py), another filter file, or an array.
    out : str or path-like
        The census file: ``.parquet`` (pyarrow) or ``.npz``; columns of
        :meth:`~scalespace_mk.analysis.census.CensusResult.to_columns` (family census: index,
        sigma_x, sigma_y, the coefficients, b, r2, rss, tss, r2_adjusted), plus
        ``null_<kind>_r2`` per null kind. ``index`` is the row in the input.
    chunk_rows : int, optional
        Filters per chunk (default :func:`default_chunk_rows`: 65,536 up to 15x15 filters,
        fewer for larger ones, so that a chunk's filters take at most 128 MB); the unit of
        memory, of resuming and of the split between processes. The result does not depend on it
        except through the nulls' seeds (one per chunk).
    offset, rows, limit : int
        Fit rows ``offset .. offset + rows - 1`` (default: to the end), at most ``limit``.
    dataset : str, optional
        HDF5 dataset name.
    null : sequence of str
        Null kinds (:func:`scalespace_mk.analysis.null.null_kinds`: ``"iid"``,
        ``"position"`` (alias ``"phase"``), ``"shape"``, ``"covariance"``) fitted beside the
        filters; column ``null_<kind>_r2``.
    seed : int
        Seed of the nulls; chunk ``[start, ...)`` uses ``SeedSequence([seed, start])``.
    restart : bool
        Compute again: discard the parts of an earlier run instead of resuming (needed to
        change options of an unfinished run), and do not keep a finished ``out`` of the same
        input and options (by default such a rerun computes nothing and returns with
        ``up_to_date=True``).
    keep_parts : bool
        Keep ``OUT.parts/`` after the merge (default: removed).
    progress : bool, optional
        Show progress over the chunks on stderr (a tqdm bar on a terminal, a log line every
        30 s otherwise; default True when there is more than one chunk).
    **census_kwargs
        Options of :func:`scalespace_mk.analysis.census.census` (``types``, ``family``,
        ``order``, ``sigma_max``, ``device``, ``num_threads``, ...); ``on_invalid`` is
        ``"record"`` (a bad filter is a row with its reason, never fatal).

    Returns
    -------
    StreamSummary

    Raises
    ------
    ValueError
        Bad selection or output suffix; the parts folder was started with other input or
        options (rerun the same command, or ``restart=True``); with several ranks, any
        failure of any rank (every rank raises it, naming the rank and the chunk; a rank
        that died is reported as lost contact).
    OSError, MemoryError, ...
        In one process, the failure itself (logged with its chunk first); the chunks written
        before it are kept for a rerun.
    """
    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() not in _FORMATS:
        raise ValueError(f"out must end in .parquet or .npz; got {str(out)!r}")
    if out.suffix.lower() == ".parquet":
        _pyarrow()  # refuse before any work
    if chunk_rows is not None and (
        isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1
    ):
        raise ValueError(f"chunk_rows must be an integer >= 1; got {chunk_rows!r}")
    if census_kwargs.get("on_invalid", "record") != "record":
        raise ValueError("census_stream records invalid filters (on_invalid='record')")
    census_kwargs.pop("on_invalid", None)
    census_kwargs.setdefault("progress", False)
    family = census_kwargs.pop("family", "masterkey")
    from scalespace_mk.analysis.null import NULL_KINDS, null_kinds

    null = null_kinds(null) if isinstance(null, str) or null is None else tuple(null)
    bad = [kind for kind in null if kind not in NULL_KINDS]
    if bad:
        raise ValueError(f"null kinds must be among {NULL_KINDS}; got {bad}")
    parts_dir = out.with_name(out.name + ".parts")
    # join the other ranks first: from here on, a failure on one rank (an unreadable input,
    # a bad chunk) is raised on every rank instead of leaving the others waiting for it
    dist = join_ranks(parts_dir, what="census")
    src: FilterSource | None = None
    try:
        src = dist.run("opening the input", lambda: open_filters(source, dataset=dataset))
        if chunk_rows is None:
            chunk_rows = default_chunk_rows(src.k)
        start, stop = dist.run("selecting rows", select_rows, len(src), int(offset), rows, limit)
        starts = list(range(start, stop, chunk_rows))
        manifest = dist.run(
            "reading the input",
            _manifest,
            src,
            starts,
            (start, stop, chunk_rows),
            (family, list(null), int(seed)),
            census_kwargs,
        )
        # rank 0: is OUT already this census (nothing to do)? else prepare the parts folder
        state = dist.run0("checking the output", _prepare, out, parts_dir, manifest, restart)
        mine = [(i, s) for i, s in enumerate(starts) if i % dist.world == dist.rank]
        if state == "done":
            return StreamSummary(
                path=out,
                rows=stop - start,
                chunks=len(starts),
                fitted_here=0,
                resumed=len(mine),
                seconds=time.perf_counter() - t0,
                rank=dist.rank,
                world=dist.world,
                up_to_date=True,
            )
        if dist.world > 1:  # every rank takes part in every collective, in the same order
            check = _check_manifest if dist.rank != 0 else (lambda *a: None)
            dist.run("checking the parts folder", check, parts_dir, manifest)
        show = (progress if progress is not None else True) and len(starts) > 1
        todo = [(i, s) for i, s in mine if not _part(parts_dir, s).exists()]
        resumed, fitted = len(mine) - len(todo), 0
        if resumed and dist.rank == 0:
            log_line(f"census: resuming: {resumed} of {len(mine)} chunk(s) already done")
        desc = "census" if dist.world == 1 else f"census rank {dist.rank}/{dist.world}"
        dist.lost_hint = lambda: _unfinished(parts_dir, starts, stop, chunk_rows, dist.world)
        message, current = None, (0, start)
        try:
            for i, s in progress_iter(todo, desc=desc, unit="chunk", enabled=show):
                current = (i, s)
                e = min(s + chunk_rows, stop)
                cols, meta = _chunk_columns(src.read(s, e), s, family, null, seed, census_kwargs)
                with atomic_path(_part(parts_dir, s)) as tmp:
                    with open(tmp, "wb") as fh:
                        np.savez(fh, **cols, __meta__=np.array(json.dumps(meta)))
                fitted += 1
        except Exception as exc:
            i, s = current
            where = f"at chunk {i + 1} of {len(starts)} (rows {s}..{min(s + chunk_rows, stop) - 1})"
            if dist.world == 1:
                log_line(f"census: {where} failed: {type(exc).__name__}: {exc}")
                log_line(_kept(parts_dir, starts))
                raise
            message = dist.failure(where, exc)
        try:
            dist.gather(message)
        except RankLost:
            raise
        except ValueError as exc:  # another rank's failure, or this one's
            raise ValueError(f"{exc}; {_kept(parts_dir, starts)}") from None
        merge = (out, parts_dir, starts, (start, stop, chunk_rows), manifest, keep_parts)
        dist.run0("merging the parts", _merge, *merge)
    finally:
        if src is not None:
            src.close()
        dist.close()
        if not parts_dir.joinpath(_MANIFEST).exists():
            try:  # a folder made only for srun's rendezvous (a rerun that did nothing)
                parts_dir.rmdir()
            except OSError:  # absent, or not empty: leave it
                pass
    return StreamSummary(
        path=out,
        rows=stop - start,
        chunks=len(starts),
        fitted_here=fitted,
        resumed=resumed,
        seconds=time.perf_counter() - t0,
        rank=dist.rank,
        world=dist.world,
    )


def _part(parts_dir: Path, start: int) -> Path:
    """The file of the chunk whose first row is ``start``."""
    return parts_dir / f"chunk-{start:012d}.npz"


def _kept(parts_dir: Path, starts: list[int]) -> str:
    done = sum(_part(parts_dir, s).exists() for s in starts)
    return (
        f"{done} of {len(starts)} chunk(s) are written in {parts_dir}: fix the cause and rerun "
        "the same command to resume from them"
    )


def _unfinished(parts_dir: Path, starts: list[int], stop: int, chunk_rows: int, world: int) -> str:
    """Which ranks have chunks not written (the first of each), for a lost rank's message."""
    said = []
    for r in range(world):
        missing = [(i, s) for i, s in enumerate(starts) if i % world == r]
        missing = [(i, s) for i, s in missing if not _part(parts_dir, s).exists()]
        if missing:
            i, s = missing[0]
            e = min(s + chunk_rows, stop)
            said.append(
                f"rank {r} did not finish chunk {i + 1} of {len(starts)} (rows {s}..{e - 1})"
                + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            )
    text = "; ".join(said) if said else "every chunk is written"
    return f"; {text}; {_kept(parts_dir, starts)}"


def _merge(
    out: Path,
    parts_dir: Path,
    starts: list[int],
    selection: tuple[int, int, int],
    manifest: dict[str, Any],
    keep_parts: bool,
) -> None:
    """Rank 0: merge the chunk files into ``out`` (atomically, with ``manifest``: a rerun of
    the same census finds it done), then remove the parts."""
    start, stop, chunk_rows = selection
    files = [_part(parts_dir, s) for s in starts]
    if not files:
        raise ValueError(f"the selection of rows {start}..{stop - 1} is empty")
    lost = [str(f) for f in files if not f.exists()]
    if lost:
        raise RuntimeError(f"census parts missing after all ranks finished: {lost[:3]}")
    with np.load(files[0], allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
    meta.update(selection=[start, stop], chunk_rows=chunk_rows)
    meta.update(null=list(manifest["null"]), seed=int(manifest["seed"]), manifest=manifest)
    write_columns(out, [_PartColumns(f) for f in files], meta)
    if not keep_parts:
        _remove_parts(parts_dir)


class _PartColumns(dict):
    """A chunk file's columns without ``__meta__`` (loaded on use by write_columns)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def keys(self):  # type: ignore[override]
        with np.load(self.path, allow_pickle=False) as z:
            return [k for k in z.files if k != "__meta__"]

    def __getitem__(self, key: str) -> np.ndarray:
        with np.load(self.path, allow_pickle=False) as z:
            return z[key]

    def items(self):  # type: ignore[override]
        return [(k, self[k]) for k in self.keys()]


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.integer | np.floating):
        return v.item()
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)


def _manifest(
    src: FilterSource,
    starts: list[int],
    selection: tuple[int, int, int],
    what: tuple[str, list[str], int],
    census_kwargs: dict[str, Any],
) -> dict[str, Any]:
    """What the result depends on: the input (paths, sizes, modification times, shape, and
    the SHA-256 of the selection's first and last chunks, which are read for it), the
    selection, the chunking, the census options and the nulls' seed."""
    start, stop, chunk_rows = selection
    family, null, seed = what
    sample = hashlib.sha256()
    for s in sorted({starts[0], starts[-1]}) if starts else ():
        sample.update(np.ascontiguousarray(src.read(s, min(s + chunk_rows, stop))).tobytes())
    manifest = {
        "version": 2,
        "input": dict(src.describe(), sample_sha256=sample.hexdigest()),
        "selection": [start, stop],
        "chunk_rows": chunk_rows,
        "family": family,
        "null": list(null),
        "seed": int(seed),
        "options": {k: _jsonable(v) for k, v in sorted(census_kwargs.items())},
    }
    for key in ("progress", "num_threads", "batch_size"):  # do not change the result
        manifest["options"].pop(key, None)
    return json.loads(json.dumps(manifest, sort_keys=True))


def _prepare(out: Path, parts_dir: Path, manifest: dict[str, Any], restart: bool) -> str:
    """Rank 0: ``"done"`` if ``out`` already holds the census of ``manifest`` (and not
    ``restart``), else prepare the parts folder (resume or start) and return ``"run"``."""
    if not restart and out.is_file():
        try:
            old = _read_meta(out).get("manifest")
        except (OSError, ValueError, KeyError):  # not a census file we can read
            old = None
        if old == manifest:
            log_line(
                f"census: {out} is already the census of this input with these options: "
                "nothing to do (--restart / restart=True computes it again)"
            )
            return "done"
        why = (
            "it holds no record of its input and options"
            if old is None
            else f"it was made from other input or options ({_differences(old, manifest)})"
        )
        log_line(f"census: {out} will be replaced: {why}")
    _prepare_parts(parts_dir, manifest, restart)
    return "run"


def _read_meta(path: Path) -> dict[str, Any]:
    """The description stored with a census file, without reading its columns."""
    if path.suffix.lower() == ".parquet":
        _, pq = _pyarrow()
        raw = (pq.read_schema(path).metadata or {}).get(b"scalespace_mk", b"{}")
        return json.loads(raw)
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["__meta__"]))


def _differences(old: Any, new: Any, at: str = "") -> str:
    """Where two manifests differ, e.g. ``chunk_rows: 100 then, 150 now;
    input.files[0].mtime_ns`` (at most five places)."""
    found: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, "(absent)"), b.get(k, "(absent)"), f"{key}.{k}" if key else k)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for j, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{key}[{j}]")
        elif a != b:
            short = all(len(json.dumps(v)) <= 40 for v in (a, b))
            found.append(
                f"{key or 'all'}: {json.dumps(a)} then, {json.dumps(b)} now" if short else key
            )

    walk(old, new, at)
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    return "differs in " + "; ".join(found[:5]) + more


def _prepare_parts(parts_dir: Path, manifest: dict[str, Any], restart: bool) -> None:
    path = parts_dir / _MANIFEST
    if parts_dir.exists() and not parts_dir.is_dir():
        raise ValueError(f"{parts_dir} exists and is not a folder; move it away")
    if restart and path.exists():
        _remove_parts(parts_dir, keep_dir=True)
    if path.exists():
        _check_manifest(parts_dir, manifest)
        return
    parts_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def _check_manifest(parts_dir: Path, manifest: dict[str, Any]) -> None:
    old = json.loads((parts_dir / _MANIFEST).read_text())
    if old != manifest:
        raise ValueError(
            f"{parts_dir} holds a census started with other input or options "
            f"({_differences(old, manifest)}); rerun the same command to resume it, or "
            "restart (--restart / restart=True) to discard it"
        )


def _remove_parts(parts_dir: Path, keep_dir: bool = False) -> None:
    """Remove the chunk files and manifest this module wrote, and temporary files of killed
    writers (:func:`scalespace_mk._io.remove_stale_partials`); nothing else."""
    remove_stale_partials(parts_dir)
    for p in parts_dir.iterdir():
        if p.is_file() and (
            _PART.fullmatch(p.name) or p.name == _MANIFEST or p.name.startswith(".rendezvous-")
        ):
            p.unlink()
    if not keep_dir:
        try:
            parts_dir.rmdir()
        except OSError:  # something else is in it (not ours): leave it
            pass
