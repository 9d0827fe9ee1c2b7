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

__all__ = ["PROCESS_MIN_ROWS", "map_chunks", "use_processes"]

#: rows (filters) from which a fit with more than one worker forks processes (Linux)
PROCESS_MIN_ROWS = 32768
#: None: choose by :func:`use_processes`; True / False: always / never processes (tests and
#: benchmarks)
_PROCESSES: bool | None = None
_JOBS: dict[int, Callable[..., Any]] = {}  # the function of each running map, for the forks


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


def _call(token: int, *args: Any) -> Any:
    """Run the registered function ``token`` (in a forked worker)."""
    return _JOBS[token](*args)


def _worker_init() -> None:
    """A forked worker: one intra-op thread; Ctrl-C is the parent's to handle (it stops the
    workers)."""
    import signal

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def map_chunks(
    fn: Callable[..., Any], args: Iterable[tuple], workers: int, processes: bool
) -> Iterator[Any]:
    """``fn(*a)`` for each tuple ``a`` of ``args``, on ``workers`` workers with one intra-op
    thread each; yields the results in order.

    ``processes`` (see :func:`use_processes`): forked processes, which inherit ``fn`` and
    what it reads; ``fn`` must then return picklable values (numpy arrays) and write nothing
    the caller reads. Otherwise threads (or the calling thread for one worker). torch's
    thread count is 1 during the call and restored afterwards.
    """
    args = list(args)
    intra = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if processes:
            yield from _in_processes(fn, args, workers)
        elif workers <= 1:
            for a in args:
                yield fn(*a)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                yield from pool.map(lambda a: fn(*a), args)
    finally:
        torch.set_num_threads(intra)


def _in_processes(fn: Callable[..., Any], args: list[tuple], workers: int) -> Iterator[Any]:
    import multiprocessing as mp
    import warnings
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from itertools import repeat

    token = id(fn)
    _JOBS[token] = fn
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_worker_init)
    try:
        with warnings.catch_warnings():  # Python >= 3.12 warns on fork beside threads: the
            warnings.simplefilter("ignore", DeprecationWarning)  # workers run only torch code
            results = pool.map(_call, repeat(token), *zip(*args, strict=True)) if args else []
        yield from results
    except BaseException as exc:
        procs = getattr(pool, "_processes", None) or {}  # no public way before 3.14
        for proc in list(procs.values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        if isinstance(exc, BrokenProcessPool):
            raise RuntimeError(
                "a worker process died (killed for memory, or by a signal): run with fewer "
                "threads (num_threads=1 runs it in this process) or a smaller batch_size, or "
                "stream the census (census_stream, census --out)"
            ) from exc
        raise
    finally:
        _JOBS.pop(token, None)
    pool.shutdown(wait=True)
