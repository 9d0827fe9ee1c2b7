"""CPU workers for fits done chunk by chunk: forked processes for large inputs, threads otherwise.

The 8-type census (:mod:`scalespace_mk.analysis.scale_search`) and the family census
(:mod:`scalespace_mk.analysis.jets_search`) fit chunks of filters with many small torch
operations. Each worker does its torch work on one intra-op thread (OpenMP on such small
operations only waits). Python threads share one interpreter lock between those operations,
so on Linux a large input (:data:`PROCESS_MIN_ROWS` rows or more, more than one worker) runs
in forked processes instead: they inherit the filters, tables and grids of the parent
(copy-on-write) and send their results back as numpy arrays. Both give the same results.

:func:`map_chunks` is the one entry: it runs a function over its arguments on the workers and
yields the results in order. A worker process that dies (killed for memory, or by a signal)
raises a :class:`RuntimeError` saying what to do; on any error or Ctrl-C the workers are
stopped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

__all__ = ["PROCESS_MIN_ROWS", "map_chunks", "shared_zeros", "use_processes"]

#: rows (filters) from which a fit with more than one worker forks processes (Linux)
PROCESS_MIN_ROWS = 32768
#: None: choose by :func:`use_processes`; True / False: always / never processes (tests and
#: benchmarks)
_PROCESSES: bool | None = None
_JOBS: dict[tuple[int, int], Callable[..., Any]] = {}  # each running map's functions, for forks


def use_processes(n: int, workers: int) -> bool:
    """Whether a fit of ``n`` rows on ``workers`` workers runs in forked processes: more than
    one worker, fork available (not inside a daemonic process), Linux, ``n >=``
    :data:`PROCESS_MIN_ROWS` (or forced by ``_PROCESSES``)."""
    import multiprocessing as mp

    if workers < 2 or _PROCESSES is False:
        return False
    if "fork" not in mp.get_all_start_methods() or mp.current_process().daemon:
        return False
    return _PROCESSES is True or (sys.platform == "linux" and n >= PROCESS_MIN_ROWS)


def shared_zeros(shape: tuple[int, ...], processes: bool) -> Any:
    """A float64 array of zeros that forked workers can write into: backed by an anonymous
    shared memory map when ``processes`` (create it before the workers are forked; each
    worker writes its own rows, the parent reads them once the map is done), a plain numpy
    array otherwise. Results written there need not travel back through a pipe (about 1.8 MB
    a chunk of 4,096 filters for the 8-type census).

    Parameters
    ----------
    shape : tuple of int
        Array shape.
    processes : bool
        Whether the workers will be forked processes (:func:`use_processes`).

    Returns
    -------
    numpy.ndarray
        ``float64`` zeros of ``shape``.
    """
    import math

    import numpy as np

    if not processes:
        return np.zeros(shape)
    import mmap

    n = math.prod(shape)
    buf = mmap.mmap(-1, max(n, 1) * 8)  # MAP_SHARED | MAP_ANONYMOUS: zeroed pages
    return np.frombuffer(buf, dtype=np.float64, count=n).reshape(shape)


def _call(token: tuple[int, int], *args: Any) -> Any:
    """Run the registered function ``token`` (in a forked worker)."""
    return _JOBS[token](*args)


def _worker_init() -> None:
    """A forked worker: one intra-op thread; Ctrl-C is the parent's to handle (it stops the
    workers)."""
    import signal

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Workers:
    """``workers`` CPU workers with one intra-op thread each, for several maps in a row
    (a context manager: torch's thread count is 1 inside and restored on exit).

    ``fns`` are the functions the maps will run; with ``processes`` (see
    :func:`use_processes`) they are registered before the workers are forked, so that every
    map runs in the same forked processes, which inherit the functions and what they read.
    They must then return picklable values (numpy arrays) and write nothing the caller
    reads, except into arrays of :func:`shared_zeros` made before the workers start.
    Otherwise threads (or the calling thread for one worker).
    """

    def __init__(self, fns: Iterable[Callable[..., Any]], workers: int, processes: bool) -> None:
        self.fns = list(fns)
        self.workers, self.processes = workers, processes
        self._pool: Any = None
        self._tokens: list[tuple[int, int]] = []

    def __enter__(self) -> Workers:
        self._intra = torch.get_num_threads()
        torch.set_num_threads(1)
        if self.processes:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            for i, fn in enumerate(self.fns):
                self._tokens.append((id(self), i))
                _JOBS[(id(self), i)] = fn
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=mp.get_context("fork"), initializer=_worker_init
            )
        elif self.workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.workers)
        return self

    def map(self, fn: Callable[..., Any], args: Iterable[tuple]) -> Iterator[Any]:
        """``fn(*a)`` for each ``a`` of ``args`` on the workers; the results in order."""
        args = list(args)
        if not args:
            return iter(())
        if self._pool is None:
            return (fn(*a) for a in args)
        if not self.processes:
            return self._pool.map(lambda a: fn(*a), args)
        import warnings
        from itertools import repeat

        # bound methods are new objects at each access but compare equal
        i = next((i for i, f in enumerate(self.fns) if f == fn), None)
        if i is None:
            raise ValueError("Workers.map: fn was not given to Workers(fns=...)")
        with warnings.catch_warnings():  # Python >= 3.12 warns on fork beside threads: the
            warnings.simplefilter("ignore", DeprecationWarning)  # workers run only torch code
            return self._pool.map(_call, repeat((id(self), i)), *zip(*args, strict=True))

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        try:
            if self._pool is not None and self.processes and exc is not None:
                procs = getattr(self._pool, "_processes", None) or {}  # none public < 3.14
                for proc in list(procs.values()):
                    proc.terminate()
                self._pool.shutdown(wait=False, cancel_futures=True)
            elif self._pool is not None:
                self._pool.shutdown(wait=True)
        finally:
            for token in self._tokens:
                _JOBS.pop(token, None)
            torch.set_num_threads(self._intra)
        from concurrent.futures.process import BrokenProcessPool

        if isinstance(exc, BrokenProcessPool):
            raise RuntimeError(
                "a worker process died (killed for memory, or by a signal): run with fewer "
                "threads (num_threads=1 runs it in this process) or a smaller batch_size, or "
                "stream the census (census_stream, census --out)"
            ) from exc


def map_chunks(
    fn: Callable[..., Any], args: Iterable[tuple], workers: int, processes: bool
) -> Iterator[Any]:
    """``fn(*a)`` for each tuple ``a`` of ``args`` on :class:`Workers` (one map); yields the
    results in order."""
    with Workers([fn], workers, processes) as pool:
        yield from pool.map(fn, args)
