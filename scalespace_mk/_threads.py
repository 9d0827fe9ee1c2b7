"""The CPU thread policy of the package (read by the CLI before torch is imported).

torch's default, one OpenMP thread per core that spins while it waits, is fast on an idle
machine and collapses on a busy one: on 2 cores with one other busy process, small-op work
(the census of a checkpoint, the training of a small network) ran about 10x slower than
on one thread. The policy (figures in ``docs/benchmarks.md``, "Threads"):

1. **Passive waiting.** The command line sets ``OMP_WAIT_POLICY=PASSIVE`` before torch is
   imported (unless the variable is set), so that idle OpenMP threads sleep instead of
   spinning against other processes.
2. **Explicit counts win.** ``--threads N`` on every compute command sets torch's intra-op
   threads; without it torch's own default applies: ``OMP_NUM_THREADS`` when set, else one
   thread per core (:func:`default_threads` says which, for the help text).
3. **Small ops on one intra-op thread.** The census (:mod:`scalespace_mk.analysis.census`)
   runs chunks of filters on that many Python threads, each with one intra-op thread,
   instead of splitting every small operation across cores.

This module imports nothing of the package and nothing heavy at import time.
"""

from __future__ import annotations

import argparse
import os

__all__ = ["add_threads_argument", "default_threads", "prepare_environment", "set_threads"]

#: OpenMP wait policy set by :func:`prepare_environment` when the user has not set one
WAIT_POLICY = "PASSIVE"


def prepare_environment() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is set (call before torch is imported)."""
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(os.cpu_count() or 1, 1)


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set to a positive integer, else :func:`usable_cores`."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    return usable_cores()


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (default :func:`default_threads`); returns it.

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer.
    """
    if n is None:
        n = default_threads()
    from scalespace_mk.limits import THREADS_MAX

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= THREADS_MAX:
        raise ValueError(
            f"threads must be a positive integer <= {THREADS_MAX} "
            f"(scalespace_mk.limits.THREADS_MAX); got {n!r}"
        )
    import torch

    torch.set_num_threads(n)
    return n


def _positive_int(text: str) -> int:
    from scalespace_mk.limits import THREADS_MAX

    body = text.strip()
    if (
        not (body.isascii() and body.isdigit())
        or len(body) > 12
        or not 1 <= int(body) <= THREADS_MAX
    ):
        raise argparse.ArgumentTypeError(
            f"must be an integer in [1, {THREADS_MAX}] "
            f"(scalespace_mk.limits.THREADS_MAX); got {text[:40]!r}"
        )
    return int(body)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads N`` (torch CPU threads) to a command's parser."""
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"CPU threads for torch (default: OMP_NUM_THREADS if set, else one per core; "
        f"here {default_threads()})",
    )
