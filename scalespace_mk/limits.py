"""The documented limits of scalespace_mk, in one place (see ``docs/limits.md``).

Every public function checks its input against these values at entry and refuses what lies
outside with one line naming the argument, the limit and what to change; nothing is
allocated or read first. The limits are far beyond what the science needs (learned filters
are 3x3 to 31x31, their scales a few pixels), and they keep memory and time bounded on any
input. ``sigma`` is a standard deviation in pixels throughout (``s = sigma**2``).

The memory budget can be raised for one process with the environment variable
``SCALESPACE_MK_MEMORY_BUDGET`` (bytes, or with a suffix ``K``, ``M``, ``G``, ``T``:
``SCALESPACE_MK_MEMORY_BUDGET=32G``).
"""

from __future__ import annotations

import os
import re

__all__ = [
    "is_ascii_int",
    "BOOTSTRAP_MAX",
    "CLASSES_MAX",
    "COUNT_LIMITS",
    "EPOCHS_MAX",
    "BATCH_SIZE_MAX",
    "MASTER_FILTERS_MAX",
    "NULL_SIZE_MAX",
    "SEED_MAX",
    "STAGES_MAX",
    "SYNTHETIC_SAMPLES_MAX",
    "TEXT_FILE_BYTES_MAX",
    "THREADS_MAX",
    "WORKERS_MAX",
    "check_count",
    "ARRAY_FILE_BYTES_MAX",
    "D_MAX",
    "EPSILON_MIN",
    "FFT_LENGTH_MAX",
    "FIT_GRID_POINTS_MAX",
    "FIT_SIGMA_PER_TAP",
    "IMAGE_PIXELS_MAX",
    "KERNEL_SIZE_MAX",
    "MEMORY_BUDGET",
    "MEMORY_BUDGET_ENV",
    "SIGMA_LIMIT",
    "MemoryBudgetError",
    "check_memory",
    "format_bytes",
    "memory_budget",
]

#: Largest standard deviation (pixels) accepted anywhere a scale is an input: kernels,
#: banks, layers (``sigma_max``), reference scales, fitting and census ranges. A discrete
#: Gaussian this wide has ~10^5 taps; beyond ~1e154 its variance ``sigma**2`` overflows.
SIGMA_LIMIT = 1e4

#: Smallest relative truncation error ``epsilon`` of the kernels; smaller values ask for a
#: kernel mass ``1 - epsilon`` that float64 cannot tell from 1.
EPSILON_MIN = 1e-15

#: Largest dimension ``D`` of a separable filter (the 1-D truncation error is
#: ``1 - (1 - epsilon)**(1/D)``, which must stay >= :data:`EPSILON_MIN`).
D_MAX = 16

#: Largest odd kernel size (taps per side) of kernels, banks and models.
KERNEL_SIZE_MAX = 1001

#: Largest FFT length ``fft_length`` accepts (the length for sigma = SIGMA_LIMIT is ~10^5).
FFT_LENGTH_MAX = 1 << 22

#: The C, D and type-7 optimisers of ``analysis.fit`` search ``sigma`` in
#: ``[0, max(sigma_max, FIT_SIGMA_PER_TAP * k)]`` for k x k filters: at ``sigma = 4 k`` a
#: Gaussian varies by less than 1 % across the filter, so larger scales describe the same
#: flat model, and every evaluation stays a small FFT.
FIT_SIGMA_PER_TAP = 4.0

#: Largest number of points of a fitting grid (``sigma_max / grid_step + 1``).
FIT_GRID_POINTS_MAX = 100_000

#: Largest decoded array read from an ``.npy``/``.npz`` file (declared shape times item
#: size, and each zip member's declared size): 1 GiB, e.g. 2.7 million 7x7 float64 filters.
ARRAY_FILE_BYTES_MAX = 1 << 30

#: Largest image (width x height, decoded pixels) the training loaders decode; larger files
#: are treated like corrupt ones (skipped with a warning, or an error when strict). 64
#: megapixels (e.g. 8000 x 8000) decode to 192 MB of RGB; ImageNet's largest is ~32 MP.
IMAGE_PIXELS_MAX = 64_000_000

#: Largest text filter file (``Filter k:`` blocks) read, in bytes: 512 MiB, about 10
#: million numbers (200,000 7x7 filters). Larger sets belong in ``.npy`` files.
TEXT_FILE_BYTES_MAX = 512 << 20

#: Largest number of CPU threads (``--threads``, ``num_threads``): beyond it OpenMP tries
#: to allocate per-thread pools of many GB.
THREADS_MAX = 1024

#: Largest number of DataLoader worker processes (``--workers``).
WORKERS_MAX = 256

#: Largest number of classes of a model or dataset (``num_classes``, ``classes=``).
CLASSES_MAX = 100_000

#: Largest ``synthetic:N`` dataset (samples).
SYNTHETIC_SAMPLES_MAX = 10_000_000

#: Largest bootstrap count (``n_boot``).
BOOTSTRAP_MAX = 100_000

#: Largest number of depth stages of a comparison (``--stages``).
STAGES_MAX = 1000

#: Largest number of null filters of each kind (``--null-size``).
NULL_SIZE_MAX = 10_000_000

#: Largest number of master filters ``extract`` clusters into (``-k``).
MASTER_FILTERS_MAX = 1000

#: Largest seed (``--seed``): numpy and torch take seeds in [0, 2**32 - 1] everywhere.
SEED_MAX = 2**32 - 1

#: Largest number of epochs and images per batch of a training run.
EPOCHS_MAX = 1_000_000
BATCH_SIZE_MAX = 1 << 20

#: ``{name: (low, high, constant)}`` of the integer counts a user controls, for
#: :func:`check_count` and the command line (docs/limits.md lists them).
COUNT_LIMITS: dict[str, tuple[int, int, str]] = {
    "threads": (1, THREADS_MAX, "THREADS_MAX"),
    "workers": (0, WORKERS_MAX, "WORKERS_MAX"),
    "num_classes": (0, CLASSES_MAX, "CLASSES_MAX"),  # 0: a model without classifier
    "classes": (1, CLASSES_MAX, "CLASSES_MAX"),
    "synthetic samples": (1, SYNTHETIC_SAMPLES_MAX, "SYNTHETIC_SAMPLES_MAX"),
    "n_boot": (1, BOOTSTRAP_MAX, "BOOTSTRAP_MAX"),
    "stages": (1, STAGES_MAX, "STAGES_MAX"),
    "null_size": (0, NULL_SIZE_MAX, "NULL_SIZE_MAX"),
    "k": (1, MASTER_FILTERS_MAX, "MASTER_FILTERS_MAX"),
    "seed": (0, SEED_MAX, "SEED_MAX"),
    "epochs": (1, EPOCHS_MAX, "EPOCHS_MAX"),
    "batch_size": (1, BATCH_SIZE_MAX, "BATCH_SIZE_MAX"),
}


def check_count(name: str, value: object, *, option: str | None = None) -> int:
    """Return ``value`` if it is an integer within the limits of ``name`` in
    :data:`COUNT_LIMITS`, else raise a ValueError naming ``option`` (or ``name``), the
    range and the constant.

    Accepts Python and numpy integers (not bool); the message is one line.
    """
    low, high, constant = COUNT_LIMITS[name]
    label = option or name
    ok = not isinstance(value, bool) and hasattr(value, "__index__")
    if ok:
        value = value.__index__()  # type: ignore[union-attr]
        ok = low <= value <= high
    if not ok:
        shown = repr(value)
        if len(shown) > 40:
            shown = shown[:20] + "..." + f" ({len(shown)} digits)"
        raise ValueError(
            f"{label} must be an integer in [{low}, {high}] (scalespace_mk.limits.{constant}); "
            f"got {shown}"
        )
    return value  # type: ignore[return-value]


#: Environment variable that overrides :data:`MEMORY_BUDGET` for the process.
MEMORY_BUDGET_ENV = "SCALESPACE_MK_MEMORY_BUDGET"

#: Default memory budget (bytes) of one call: a request whose working memory is estimated
#: above it is refused up front (census, fit grids, banks), with the option to change.
MEMORY_BUDGET = 8 << 30

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class MemoryBudgetError(ValueError):
    """A request would need more working memory than the budget (:func:`memory_budget`)."""


def memory_budget() -> int:
    """The memory budget in bytes: ``$SCALESPACE_MK_MEMORY_BUDGET`` if set, else 8 GiB.

    Raises
    ------
    ValueError
        If the environment variable is set but is not a size such as ``16G`` or ``2000000``.
    """
    text = os.environ.get(MEMORY_BUDGET_ENV, "").strip()
    if not text:
        return MEMORY_BUDGET
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)i?B?", text, flags=re.IGNORECASE | re.ASCII)
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(
            f"{MEMORY_BUDGET_ENV} must be a size in bytes such as 16G or 2000000000; got {text!r}"
        )
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value < 1:
        raise ValueError(f"{MEMORY_BUDGET_ENV} must be at least 1 byte; got {text!r}")
    return value


def format_bytes(n: float) -> str:
    """``n`` bytes as a short human-readable size (``'1.5 GiB'``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_memory(nbytes: float, what: str, fix: str) -> None:
    """Refuse a request estimated to need ``nbytes`` of working memory above the budget.

    Parameters
    ----------
    nbytes : float
        Estimated peak working memory in bytes.
    what : str
        What needs it, e.g. ``"census of 10 filters with sigma_max = 1e+06"``.
    fix : str
        What to change, e.g. ``"lower sigma_max (k / 2 = 3.5 is the default)"``.

    Raises
    ------
    MemoryBudgetError
        A ValueError naming the estimate, the budget, the fix and the variable that raises
        the budget.
    """
    budget = memory_budget()
    if nbytes > budget:
        raise MemoryBudgetError(
            f"{what} would need about {format_bytes(nbytes)} of memory, above the budget of "
            f"{format_bytes(budget)}; {fix} (or raise the budget with the environment "
            f"variable {MEMORY_BUDGET_ENV}, e.g. {MEMORY_BUDGET_ENV}=32G)"
        )


def is_ascii_int(text: str) -> bool:
    """True for a plain ASCII integer token: optional sign, then the digits 0-9 only.

    Python's ``int`` also accepts ``'1_0'`` (as 10) and other scripts' digits (``'\u0663'``
    as 3); file formats and the command line accept ASCII digits only.
    """
    body = text[1:] if text[:1] in "+-" else text
    return bool(body) and body.isascii() and body.isdigit()
