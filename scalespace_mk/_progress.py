"""Progress for long work: a tqdm bar on a terminal, plain log lines otherwise.

Batch jobs (nohup, SLURM, ``> log 2>&1``) get readable lines instead of a bar's carriage
returns: one line when the work starts, one every ``every`` seconds (default 30) with the
count, the rate and an estimate of the time left, and one at the end.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

__all__ = ["format_duration", "log_line", "progress", "stream_is_terminal"]

T = TypeVar("T")


def stream_is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def log_line(
    message: str, *, stream: IO[str] | None = None, file: str | os.PathLike | None = None
) -> None:
    """Write one line (flushed at once) to ``stream`` (default ``sys.stderr``).

    On a terminal the line goes through ``tqdm.write`` so that it does not break a bar in
    progress. With ``file``, the line is also appended to that text file (a run's log).
    """
    stream = sys.stderr if stream is None else stream
    line = message.rstrip("\n")
    if stream_is_terminal(stream):
        from tqdm.auto import tqdm

        tqdm.write(line, file=stream)
    else:
        stream.write(line + "\n")
    stream.flush()
    if file is not None:
        with open(file, "a", encoding="utf-8") as log:
            log.write(line + "\n")


def format_duration(seconds: float) -> str:
    """``seconds`` as ``MM:SS``, or ``H:MM:SS`` from one hour on (rounded, >= 0)."""
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def progress(
    iterable: Iterable[T],
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    every: float = 30.0,
    enabled: bool = True,
    stream: IO[str] | None = None,
    **tqdm_kwargs: Any,
) -> Iterator[T]:
    """Iterate over ``iterable`` showing progress.

    Parameters
    ----------
    iterable : iterable
        The work items.
    desc : str
        What is being done (shown before the count).
    total : int, optional
        Number of items (default ``len(iterable)`` where it has one).
    unit : str
        Name of one item (``"filter"``, ``"layer"``, ``"batch"``).
    every : float
        Seconds between plain log lines when the stream is not a terminal (> 0).
    enabled : bool
        False yields the items with no output at all.
    stream : file, optional
        Where progress goes (default ``sys.stderr``).
    **tqdm_kwargs
        Passed to :class:`tqdm.tqdm` on a terminal.

    Yields
    ------
    The items of ``iterable``, in order.
    """
    if not enabled:
        yield from iterable
        return
    if not (isinstance(every, int | float) and every > 0):
        raise ValueError(f"every must be a number of seconds > 0; got {every!r}")
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    stream = sys.stderr if stream is None else stream
    if stream_is_terminal(stream):
        from tqdm.auto import tqdm

        yield from tqdm(iterable, desc=desc, total=total, unit=unit, file=stream, **tqdm_kwargs)
        return
    start = last = time.monotonic()
    count = 0
    of = f"/{total}" if total is not None else ""
    log_line(f"{desc}: 0{of} {unit}s", stream=stream)
    for item in iterable:
        yield item
        count += 1
        now = time.monotonic()
        if now - last >= every:
            last = now
            rate = count / max(now - start, 1e-9)
            eta = f", ETA {format_duration((total - count) / rate)}" if total else ""
            log_line(
                f"{desc}: {count}{of} {unit}s, {rate:.3g} {unit}/s, "
                f"elapsed {format_duration(now - start)}{eta}",
                stream=stream,
            )
    log_line(
        f"{desc}: done, {count} {unit}s in {format_duration(time.monotonic() - start)}",
        stream=stream,
    )
