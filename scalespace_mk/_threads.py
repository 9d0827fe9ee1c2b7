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
4. **The same on import.** ``import scalespace_mk`` calls :func:`apply_import_policy`: if
   torch has not been imported yet and ``OMP_WAIT_POLICY`` is unset, it sets
   ``OMP_WAIT_POLICY=PASSIVE`` in ``os.environ`` (read once, when torch loads its OpenMP
   runtime). It changes nothing else: no thread counts, nothing once torch is loaded.
   Opt out by setting ``OMP_WAIT_POLICY`` yourself (e.g. ``ACTIVE``) or
   ``SCALESPACE_MK_THREAD_POLICY=0`` before the import.
5. **A public limit.** :class:`threads` (``scalespace_mk.threads(n)``) limits torch's
   intra-op threads and the BLAS/OpenMP pools of numpy and scipy (through threadpoolctl),
   as a call (until changed) or a context manager (restored on exit).
6. **Chains of small ops on one thread.** :class:`intra_op_threads` sets torch's count for a
   block (the batched training transform and the loader's resize run a CPU batch on one).

This module imports nothing of the package and nothing heavy at import time.
"""

from __future__ import annotations

import argparse
import os

__all__ = [
    "add_threads_argument",
    "apply_import_policy",
    "default_threads",
    "intra_op_threads",
    "prepare_environment",
    "set_threads",
    "threads",
]

#: environment variable that turns the import-time policy off when set to 0/false/no/off
OPT_OUT = "SCALESPACE_MK_THREAD_POLICY"

#: OpenMP wait policy set by :func:`prepare_environment` when the user has not set one
WAIT_POLICY = "PASSIVE"


def prepare_environment() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is set (call before torch is imported)."""
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def apply_import_policy() -> bool:
    """The thread policy applied by ``import scalespace_mk``; returns whether it acted.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` when all of these hold: torch is not yet imported
    (the OpenMP runtime reads the variable once, when torch loads it), the user has not
    set ``OMP_WAIT_POLICY``, and ``SCALESPACE_MK_THREAD_POLICY`` is not ``0``, ``false``,
    ``no`` or ``off``. It only writes that one environment variable.
    """
    import sys

    if os.environ.get(OPT_OUT, "").strip().lower() in {"0", "false", "no", "off"}:
        return False
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    return True


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


class intra_op_threads:
    """Context manager: torch's intra-op threads set to ``n`` inside, restored on exit.

    Only torch's own count (``torch.set_num_threads``, about a microsecond each way); the
    BLAS pools are left alone (use :class:`threads` for those). Used where a batch of small
    tensor operations loses more to OpenMP synchronisation than it gains from a second
    core (the batched training transform on the CPU: docs/benchmarks.md, "Data loading").
    Nothing is changed when the count is already ``n``.

    Parameters
    ----------
    n : int
        Threads inside the block (a positive integer).
    """

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"intra_op_threads: n must be a positive integer; got {n!r}")
        self.n = n
        self._before: int | None = None

    def __enter__(self) -> intra_op_threads:
        import torch

        before = torch.get_num_threads()
        if before != self.n:
            self._before = before
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._before is not None:
            import torch

            torch.set_num_threads(self._before)
            self._before = None


class threads:
    """Limit torch's intra-op threads and the BLAS/OpenMP thread pools to ``n``.

    Use it as a call, which holds until changed, or as a context manager, which restores
    the previous settings on exit::

        import scalespace_mk as sk

        sk.threads(1)                 # from now on: one torch thread, one BLAS thread
        with sk.threads(2):           # two inside the block, the previous ones after it
            result = sk.analyze("mobilenet_v2-b0353104.pth")

    Parameters
    ----------
    n : int, optional
        Threads (a positive integer); default :func:`default_threads` (``OMP_NUM_THREADS``
        when set, else the usable cores).

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer.

    Notes
    -----
    torch is limited with ``torch.set_num_threads`` (intra-op threads; inter-op threads
    cannot change once torch has run work). numpy's and scipy's BLAS and any loaded OpenMP
    runtimes are limited with ``threadpoolctl.threadpool_limits``. On a machine shared with
    other busy processes one or two threads are often the fastest choice
    (docs/benchmarks.md, "Threads").
    """

    def __init__(self, n: int | None = None) -> None:
        if n is None:
            n = default_threads()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"threads: n must be a positive integer; got {n!r}")
        import torch
        from threadpoolctl import threadpool_limits

        self.n = n
        self._torch_before = torch.get_num_threads()
        self._limits = threadpool_limits(limits=n)  # records the pools' counts before torch's
        torch.set_num_threads(n)

    def restore(self) -> None:
        """Put back the torch and BLAS thread counts found when this limit was made."""
        import torch

        self._limits.restore_original_limits()
        torch.set_num_threads(self._torch_before)

    def __enter__(self) -> threads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def __repr__(self) -> str:
        return f"scalespace_mk.threads({self.n})"
