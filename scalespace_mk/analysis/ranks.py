"""Work split across the ranks of ``torchrun`` or ``srun``, where one rank's failure stops all.

:func:`join_ranks` reads the rank and the number of processes from torchrun
(``WORLD_SIZE``/``RANK``) or srun (``SLURM_NTASKS``/``SLURM_PROCID``) and joins a gloo
process group (the engine of the training), through ``MASTER_ADDR``/``MASTER_PORT`` or, under
srun without them, a rendezvous file in a folder all ranks share. One process is a
:class:`RankGroup` of one, and the same code runs.

Every step that can fail runs through :meth:`RankGroup.run` (on every rank) or
:meth:`RankGroup.run0` (on rank 0): the step's failure on any rank becomes a ValueError
raised on every rank, naming the failing rank, so that no rank waits at a barrier for one that
has failed. A rank that dies (SIGKILL, a lost node) makes the others' next collective fail;
they raise :class:`RankLost`. In one process a failure is raised as it is.

Used by :mod:`scalespace_mk.analysis.stream` (the streamed census).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalespace_mk._progress import log_line

__all__ = ["RankGroup", "RankLost", "join_ranks"]

#: exceptions that say what went wrong by their message; others (a bug) get a traceback
_PLAIN = (ValueError, TypeError, OSError, RuntimeError, MemoryError)


class RankLost(ValueError):
    """A collective failed: another rank crashed or was killed."""


@dataclass
class RankGroup:
    """This process's place among the ranks (``world == 1``: one process, no collectives).

    Attributes
    ----------
    rank, world : int
        This process's rank and the number of processes.
    what : str
        The work, for messages (``"census failed on rank 1 of 2 ..."``).
    created : bool
        Whether :func:`join_ranks` created the process group (:meth:`close` destroys it).
    lost_hint : callable, optional
        Returns text added to the message of :class:`RankLost` (what is unfinished).
    """

    rank: int = 0
    world: int = 1
    what: str = "work"
    created: bool = False
    lost_hint: Callable[[], str] | None = None

    def gather(self, message: str | None, value: Any = None) -> list[Any]:
        """Collective: every rank's ``value``, in rank order.

        If any rank passes a ``message`` (its failure), every rank raises a ValueError with
        all the messages instead. A rank that died makes the collective fail: every other
        rank raises :class:`RankLost`, with :attr:`lost_hint`.
        """
        if self.world == 1:
            if message is not None:
                raise ValueError(message)
            return [value]
        import torch.distributed as dist

        got: list[Any] = [None] * self.world
        try:
            dist.all_gather_object(got, (message, value))
        except RuntimeError as exc:  # gloo: "Connection closed by peer" and the like
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            hint = self.lost_hint() if self.lost_hint is not None else ""
            raise RankLost(
                f"{self.what}: rank {self.rank} of {self.world} lost contact with the other "
                f"ranks: a rank crashed or was killed (see its log){hint} [{first}]"
            ) from None
        errors = [m for m, _ in got if m is not None]
        if errors:
            raise ValueError("; ".join(errors))
        return [v for _, v in got]

    def run(self, step: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on this rank, then :meth:`gather`; returns this rank's value.

        ``step`` names the step in the message of a failure (``"opening the input"``).
        """
        message, value = self._attempt(step, fn, args)
        self.gather(message)
        return value

    def run0(self, step: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on rank 0 only; its value (or its failure) reaches every rank."""
        message, value = self._attempt(step, fn, args) if self.rank == 0 else (None, None)
        return self.gather(message, value)[0]

    def _attempt(self, step: str, fn: Callable[..., Any], args: tuple) -> tuple[Any, Any]:
        """``(None, fn(*args))``, or ``(failure message, None)`` when it raises (alone, the
        error is raised as it is)."""
        try:
            return None, fn(*args)
        except Exception as exc:
            if self.world == 1:
                raise
            return self.failure(step, exc), None

    def failure(self, step: str, exc: BaseException) -> str:
        """The message every rank raises for ``exc`` on this rank during ``step``; an
        unexpected kind of error (a bug) has its traceback logged here, on the failing rank."""
        if not isinstance(exc, _PLAIN):
            import traceback

            log_line(f"{self.what} rank {self.rank}: " + traceback.format_exc().rstrip())
        return (
            f"{self.what} failed on rank {self.rank} of {self.world} {step}: "
            f"{type(exc).__name__}: {exc}"
        )

    def close(self) -> None:
        """Leave the process group if :func:`join_ranks` created it."""
        if self.created:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.created = False


def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"${name} must be an integer; got {value!r}") from None
    return None


def join_ranks(folder: str | os.PathLike, what: str = "work") -> RankGroup:
    """This process's :class:`RankGroup`: joins (or reuses) a gloo process group.

    Parameters
    ----------
    folder : str or path-like
        Where srun's ranks meet without ``MASTER_ADDR`` (file ``.rendezvous-<job id>``); it
        must be on a file system all ranks share.
    what : str
        The work, for messages.

    Returns
    -------
    RankGroup
        A group of one without torchrun's or srun's variables.

    Raises
    ------
    ValueError
        A variable that is not an integer, or a rank outside the world.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return RankGroup(dist.get_rank(), dist.get_world_size(), what)
    world = _env_int("WORLD_SIZE", "SLURM_NTASKS") or 1
    rank = _env_int("RANK", "SLURM_PROCID") or 0
    if world <= 1:
        return RankGroup(what=what)
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside the world of {world} processes")
    timeout = datetime.timedelta(days=7)  # ranks wait at the end for the slowest one
    if os.environ.get("MASTER_ADDR"):
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)
    else:  # srun without MASTER_ADDR: rendezvous through a file on the shared folder
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        job = os.environ.get("SLURM_JOB_ID", "local")
        init = f"file://{(folder / f'.rendezvous-{job}').resolve()}"
        dist.init_process_group(
            "gloo", init_method=init, rank=rank, world_size=world, timeout=timeout
        )
    return RankGroup(rank, world, what, created=True)
