"""Ctrl-C in a child Python: the helper of the tests that interrupt a running command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: put first in the child's code: Ctrl-C as in a terminal even when the tests run in a
#: background job, whose children inherit SIGINT ignored (Python then installs no
#: KeyboardInterrupt handler)
RESTORE_SIGINT = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"


def interrupt_when_ready(
    code: str, cwd: Path, *, before: Callable[[], None] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """Run ``python -c code`` (the package on ``PYTHONPATH``, Python's SIGINT handler
    restored), wait for it to print ``ready``, call ``before``, send SIGINT and return
    ``(returncode, stdout, stderr)``; the child is killed whatever happens."""
    proc = subprocess.Popen(
        [sys.executable, "-c", RESTORE_SIGINT + code],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        if before is not None:
            before()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()  # (a no-op once it exited) never leave it running
        proc.communicate()
    return proc.returncode, out, err
