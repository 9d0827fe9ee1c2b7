"""Input checks shared by every public function.

Each check raises a :class:`ValueError` (or :class:`TypeError`) whose message names the
argument, what is accepted and what was received. Messages are built only on failure.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import stat
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import scalespace_mk.limits as limits
from scalespace_mk.limits import is_ascii_int

__all__ = [
    "check_array_file",
    "check_ascii_number",
    "check_batch_size",
    "check_choice",
    "check_epsilon",
    "check_filters",
    "check_nonneg",
    "check_num_threads",
    "check_regular_file",
    "check_safetensors_file",
    "check_sigma",
    "check_sigma_max",
    "check_size",
    "check_torch_zip_crc",
    "check_tensor_device",
    "is_ascii_int",
    "load_torch_safely",
]


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor | np.ndarray):
        return f"array of shape {tuple(value.shape)}"
    return repr(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ValueError listing them."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}"
        )
    return value


def check_size(size: Any, name: str = "size", *, allow_none: bool = True) -> int | None:
    """Return ``size`` as an int if it is a positive odd integer (or None when allowed)."""
    if size is None and allow_none:
        return None
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        if isinstance(size, float) and size.is_integer() and int(size) % 2 == 1 and size > 0:
            return int(size)
        raise ValueError(f"{name} must be a positive odd integer such as 7; got {size!r}")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"{name} must be a positive odd integer such as 7; got {size!r}")
    if size > limits.KERNEL_SIZE_MAX:
        raise ValueError(
            f"{name} must be an odd integer <= {limits.KERNEL_SIZE_MAX} (the largest kernel "
            f"size, scalespace_mk.limits.KERNEL_SIZE_MAX); got {size!r}"
        )
    return int(size)


def check_epsilon(epsilon: Any, name: str = "epsilon") -> float:
    """Return ``epsilon`` as a float if it lies in the open interval (0, 1)."""
    try:
        value = float(epsilon)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a number in the open interval (0, 1); got {epsilon!r}"
        ) from None
    if not (0.0 < value < 1.0):
        raise ValueError(f"{name} must be a number in the open interval (0, 1); got {epsilon!r}")
    if value < limits.EPSILON_MIN:
        raise ValueError(
            f"{name} must be >= {limits.EPSILON_MIN:g} (smaller truncation errors are below "
            f"float64 precision; scalespace_mk.limits.EPSILON_MIN); got {epsilon!r}"
        )
    return value


def check_tensor_device(name: str, value: torch.Tensor) -> None:
    """Refuse a meta tensor (no values to compute with) with a ValueError naming ``name``."""
    if value.is_meta:
        raise ValueError(
            f"{name} is a meta tensor (shape only, no values); pass a tensor with data, e.g. "
            "on the CPU"
        )


def check_device(device: Any, default: torch.device) -> torch.device:
    """``device`` as a ``torch.device`` (``default`` when None); a ValueError names
    ``device`` for something that is not a device and for CUDA that is not available."""
    if device is None:
        return default
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be 'cpu', 'cuda' or a torch.device; got {device!r}"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was requested but torch.cuda.is_available() is False (no CUDA "
            "device or a CPU-only torch); use device='cpu'"
        )
    return dev


def check_nonneg(name: str, value: Any, upper: float | None = None) -> None:
    """Raise if ``value`` (scalar, array or tensor) holds a negative, NaN or infinite entry,
    or (when ``upper`` is given) an entry above ``upper``.

    Works on torch tensors without leaving their device unless a check fails; under
    ``torch.compile`` tracing the check is skipped.
    """
    if torch.compiler.is_compiling():
        return
    if value is None or isinstance(value, str | bytes):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    top = math.inf if upper is None else upper
    if isinstance(value, torch.Tensor):
        check_tensor_device(name, value)
        if value.numel() == 0:
            return
        if value.is_complex():
            raise TypeError(f"{name} must be real; got dtype {value.dtype}")
        with torch.no_grad():
            bad = ~torch.isfinite(value) | (value < 0) | (value > top)
            if not bool(bad.any()):
                return
            first = value[bad].flatten()[0].item()
    else:
        if np.iscomplexobj(value):
            raise TypeError(f"{name} must be real; got {_describe(value)} of complex numbers")
        try:
            arr = np.asarray(value, dtype=np.float64)
        except OverflowError:  # an int beyond the float range
            raise ValueError(
                f"{name} must be a finite number >= 0 and <= {top:g}; got an integer too large "
                "for a float"
            ) from None
        except (TypeError, ValueError):
            raise ValueError(
                f"{name} must be a finite number >= 0; got {_describe(value)}"
            ) from None
        bad = ~np.isfinite(arr) | (arr < 0) | (arr > top)
        if not bad.any():
            return
        first = float(arr[bad].flat[0])
    if math.isfinite(first) and first > top:
        raise ValueError(
            f"{name} must be <= {top:g} (the largest supported scale in pixels, "
            f"scalespace_mk.limits.SIGMA_LIMIT); got {first!r}"
        )
    kind = "NaN" if math.isnan(first) else ("infinite" if math.isinf(first) else "negative")
    raise ValueError(
        f"{name} must be finite and >= 0 (a standard deviation; 0 gives the identity); "
        f"got a {kind} value {first!r}"
    )


def check_sigma(name: str, value: Any) -> None:
    """Raise unless every scale in ``value`` lies in ``[0, SIGMA_LIMIT]`` (pixels).

    ``value`` is a standard deviation (``s = sigma**2``): a scalar, an array or a tensor.
    """
    check_nonneg(name, value, limits.SIGMA_LIMIT)


#: Smallest ``sigma_max`` of a census: the variance ``sigma**2`` of smaller scales is
#: below 1e-200 and underflows in the spline tables (it used to end in an IndexError).
SIGMA_MAX_MIN = 1e-100


def check_sigma_max(sigma_max: Any, k: int, *, bounded: bool = True) -> float:
    """The largest scale a census searches: ``k / 2`` when None, else a finite float > 0
    (and, when ``bounded``, at most :data:`scalespace_mk.limits.SIGMA_LIMIT`)."""
    if sigma_max is None:
        sigma_max = k / 2.0
    try:
        sigma_max = float(sigma_max)
    except (TypeError, ValueError):
        raise ValueError(f"sigma_max must be a number > 0; got {sigma_max!r}") from None
    if not (0.0 < sigma_max < math.inf):
        raise ValueError(f"sigma_max must be a finite number > 0; got {sigma_max!r}")
    if sigma_max < SIGMA_MAX_MIN:
        raise ValueError(
            f"sigma_max must be >= {SIGMA_MAX_MIN:g} pixels (below it every model equals its "
            f"sigma = 0 limit to float64 precision; k / 2 = {k / 2:g} is the default); got "
            f"{sigma_max!r}"
        )
    if bounded and sigma_max > limits.SIGMA_LIMIT:
        raise ValueError(
            f"sigma_max must be <= {limits.SIGMA_LIMIT:g} pixels (scalespace_mk.limits."
            f"SIGMA_LIMIT; k / 2 = {k / 2:g} is the default); got {sigma_max!r}"
        )
    return sigma_max


#: Largest ``batch_size`` of the census and family census (filters per chunk).
CENSUS_BATCH_MAX = 1 << 24


def check_batch_size(batch_size: Any) -> None:
    """Raise unless ``batch_size`` is an integer in ``[1, 2**24]`` (Python or numpy, not
    bool)."""
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or (batch_size < 1)
    ):
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    if batch_size > CENSUS_BATCH_MAX:
        raise ValueError(
            f"batch_size must be at most {CENSUS_BATCH_MAX} filters per chunk; got "
            f"{batch_size!r} (None picks one that fits the memory budget)"
        )


def check_num_threads(num_threads: Any) -> None:
    """Raise unless ``num_threads`` is None or an int in ``[1, limits.THREADS_MAX]``."""
    if num_threads is not None and (
        isinstance(num_threads, bool)
        or not isinstance(num_threads, int)
        or not 1 <= num_threads <= limits.THREADS_MAX
    ):
        raise ValueError(
            f"num_threads must be None or an integer in [1, {limits.THREADS_MAX}] "
            f"(scalespace_mk.limits.THREADS_MAX); got {num_threads!r}"
        )


def check_filters(
    h: Any, name: str = "filters", *, allow_single: bool = True, values: bool = True
) -> np.ndarray:
    """Validate learned filters and return them as float64 ``[N, k, k]``.

    Accepts ``[k, k]`` (when ``allow_single``) or ``[N, k, k]`` with odd ``k``; rejects empty
    input and, when ``values`` is True (default), NaN/Inf entries and filters that are
    identically zero (``values=False`` checks the shape only, for callers that record such
    filters instead).
    """
    if isinstance(h, torch.Tensor):
        check_tensor_device(name, h)
        if h.dtype in (torch.bfloat16, torch.float16) or (
            h.is_floating_point() and h.dtype.itemsize == 1
        ):  # numpy has no bfloat16: computed in float64
            h = h.detach().to(torch.float64)
        h = h.detach().cpu().resolve_conj().numpy()
    if np.iscomplexobj(h):
        raise TypeError(
            f"{name} must be real; got complex values (the imaginary part would be dropped: "
            "pass h.real or abs(h) if that is what you mean)"
        )
    try:
        arr = np.asarray(h, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a numeric array of shape [N, k, k]; got {type(h)}"
        ) from None
    if arr.ndim == 2 and allow_single:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(
            f"{name} must have shape [N, k, k] (or [k, k]) with square filters; "
            f"got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one filter")
    if arr.shape[1] % 2 == 0:
        raise ValueError(
            f"{name} must have an odd size k so that the filter has a centre tap; "
            f"got k = {arr.shape[1]}"
        )
    if not values:
        return arr
    finite = np.isfinite(arr)
    if not finite.all():
        idx = int(np.argwhere(~finite.reshape(arr.shape[0], -1).all(axis=1))[0, 0])
        raise ValueError(f"{name}[{idx}] holds NaN or infinite values; clean the filters first")
    zero = ~np.any(arr != 0, axis=(1, 2))
    if zero.any():
        idx = int(np.argwhere(zero)[0, 0])
        raise ValueError(f"{name}[{idx}] is identically zero; a zero filter has no shape to fit")
    return arr


def check_ascii_number(token: str, what: str) -> float:
    """``float(token)`` for a plain ASCII number (no ``_`` separators, no other scripts).

    Raises
    ------
    ValueError
        Naming ``what`` (e.g. ``"f.txt:3"``) and the token.
    """
    if not token.isascii() or "_" in token:
        raise ValueError(f"{what}: {token[:40]!r} is not a plain number (ASCII digits only)")
    return float(token)


def check_regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Return ``path`` if it is an existing regular file (links followed), else raise.

    A FIFO, socket or device would block or never end when read; a directory is named as
    such.

    Raises
    ------
    FileNotFoundError
        If nothing exists at ``path``.
    IsADirectoryError
        If ``path`` is a directory.
    ValueError
        If ``path`` is a FIFO, socket or device.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist") from None
    except OSError as exc:
        raise OSError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{what} {str(path)!r} is a directory, not a {what}")
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "not a regular file"
        raise ValueError(
            f"{what} {str(path)!r} is {kind}; pass a regular file (reading it could block)"
        )
    return path


def _check_npy_header(fh: Any, origin: str, limit: int, stored: int | None) -> None:
    """Read a .npy header from ``fh`` and refuse declared sizes above ``limit`` bytes."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    except Exception as exc:  # ValueError, SyntaxError, tokenize.TokenError...: a bad header
        raise ValueError(f"{origin} not a valid .npy header ({type(exc).__name__})") from None
    if dtype.hasobject:
        raise ValueError(f"{origin} it holds Python objects (pickled objects are refused)")
    count = math.prod(int(n) for n in shape)
    nbytes = count * max(dtype.itemsize, 1)
    if nbytes > limit:
        raise ValueError(
            f"{origin} it declares an array of shape {tuple(shape)} ({dtype}, "
            f"{limits.format_bytes(nbytes)}), above the limit of {limits.format_bytes(limit)} "
            "(scalespace_mk.limits.ARRAY_FILE_BYTES_MAX); split the file"
        )
    if stored is not None and nbytes > stored:
        raise ValueError(
            f"{origin} it declares an array of shape {tuple(shape)} "
            f"({limits.format_bytes(nbytes)}) "
            f"but holds only {limits.format_bytes(stored)} of data; the file is truncated or "
            "corrupt"
        )


def check_array_file(path: str | os.PathLike, limit: int | None = None) -> None:
    """Check the declared sizes of an ``.npy`` or ``.npz`` file before it is read.

    For ``.npy`` the header's shape and dtype must give at most ``limit`` bytes (default
    :data:`scalespace_mk.limits.ARRAY_FILE_BYTES_MAX`) and no more than the file holds; for
    ``.npz`` every zip member's declared uncompressed size and every member's own header
    must. Nothing is decompressed beyond the headers.

    Raises
    ------
    ValueError
        Naming the file (and the member), the declared shape and the limit.
    """
    path = Path(path)
    limit = limits.ARRAY_FILE_BYTES_MAX if limit is None else int(limit)
    with open(path, "rb") as fh:
        magic = fh.read(6)
        fh.seek(0)
        if magic == b"\x93NUMPY":
            size = os.fstat(fh.fileno()).st_size
            _check_npy_header(fh, f"cannot read {path} as a .npy array:", limit, size)
            return
        if not zipfile.is_zipfile(fh):
            kind = "a .npz archive" if path.suffix.lower() == ".npz" else "a .npy array"
            raise ValueError(
                f"cannot read {path} as {kind}: it is neither a .npy array nor a .npz archive "
                "(no .npy header, not a zip file)"
            )
        fh.seek(0)
        try:
            archive = zipfile.ZipFile(fh)
        except Exception as exc:  # BadZipFile, OSError, ValueError...
            raise ValueError(f"cannot read {path} as a .npz archive: {exc}") from None
        with archive:
            total = 0
            for info in archive.infolist():
                origin = f"cannot read {path} as a .npz archive: member {info.filename!r}:"
                total += info.file_size
                if info.file_size > limit or total > limit:
                    raise ValueError(
                        f"{origin} it declares {limits.format_bytes(total)} of uncompressed data, "
                        f"above the limit of {limits.format_bytes(limit)} "
                        "(scalespace_mk.limits.ARRAY_FILE_BYTES_MAX); split the file"
                    )
                if not info.filename.endswith(".npy"):
                    continue
                try:
                    with archive.open(info) as member:
                        _check_npy_header(member, origin, limit, info.file_size)
                except ValueError:
                    raise
                except Exception as exc:  # BadZipFile, encrypted, unknown compression...
                    raise ValueError(f"{origin} is unreadable ({exc})") from None


def _unsafe_reason(text: str) -> str | None:
    """The object a file references when torch's weights-only unpickler refused it as a
    global (a class or function), or None when the refusal was for something else."""
    for pattern in (r"Unsupported global: GLOBAL ([\w.]+)", r"unsupported GLOBAL ([\w.]+)"):
        m = re.search(pattern, text)
        if m:
            return m.group(1).strip(" .")
    return None


def _load_failure(text: str) -> str:
    """The first informative line of a torch.load error (the weights-only detail if any)."""
    m = re.search(r"WeightsUnpickler error: *\n*([^\n]+)", text)
    if m:
        return m.group(1).strip(" .")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "unreadable"


def check_torch_zip_crc(path: str | os.PathLike, what: str = "torch file") -> None:
    """Verify the CRC-32 of every record of a ``torch.save`` zip file against its data.

    ``torch.save`` (since torch 1.6) writes a zip archive whose every record (the pickle and
    each tensor's bytes) carries a CRC-32; ``torch.load`` does not check them, so damaged
    tensor data would be read as if intact. This reads the file once (about 1 GB/s).
    Legacy (non-zip) torch files carry no checksum and cannot be checked; safetensors files
    carry none either (only their header is checked, by :func:`check_safetensors_file`).

    Raises
    ------
    ValueError
        Naming the file and the first damaged record.
    """
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception:  # BadZipFile, EOFError, struct and zlib errors...: a damaged archive
        return  # not a readable zip: torch.load reports it (as corrupt, naming the file)
    if bad is not None:
        raise ValueError(
            f"{what} {str(path)!r} is corrupt: record {bad!r} fails its CRC-32 check (the "
            "data was damaged on disk or in transfer); restore the file from a good copy"
        )


def load_torch_safely(path: str | os.PathLike, what: str = "torch file") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors.

    Nothing is ever unpickled beyond tensors and plain containers. A file the safe loader
    refuses (a pickled class or function: "unsupported GLOBAL") is reported as refused as
    unsafe, with the reason; anything else that fails is reported as corrupt. The message
    names the file.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        From :func:`check_regular_file`.
    ValueError
        Refused as unsafe, corrupt, or not a regular file.
    """
    path = check_regular_file(path, what)
    check_torch_zip_crc(path, what)
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it may not read; the error below says more
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        name = _unsafe_reason(str(exc))
        if name is not None:
            raise ValueError(
                f"refusing to load {path}: refused as unsafe, it references the Python object "
                f"{name}, not only tensors; loading it would mean unpickling arbitrary objects, "
                "which can run "
                "code (torch.load with weights_only=True refuses it, and scalespace_mk never "
                "unpickles). If you trust the file, re-save its tensors as a state dict "
                "(torch.save(state_dict)) or as .safetensors"
            ) from None
        raise ValueError(
            f"cannot read {path} as a torch file: it is corrupt or not a torch.save file, or "
            "holds a pickle that the safe loader (weights_only=True) does not read "
            f"({_load_failure(str(exc))})"
        ) from None
    except Exception as exc:  # RuntimeError, EOFError, IndexError...: a malformed file
        raise ValueError(
            f"cannot read {path} as a torch file: it is corrupt or not a torch.save file "
            f"({_load_failure(str(exc))})"
        ) from None


#: bytes per element of each safetensors dtype (sub-byte types counted per element rounded
#: up is not needed: they are refused as not readable by torch)
_SAFETENSORS_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip

#: largest safetensors header read (the format's own readers stop at 100 MB)
SAFETENSORS_HEADER_MAX = 100_000_000


def check_safetensors_file(path: str | os.PathLike) -> None:
    """Check a ``.safetensors`` file's header before the library reads it.

    The header must be a JSON object of at most 100 MB; ``__metadata__``, if present, an
    object of strings; every other entry an object with a known ``dtype``, a ``shape`` of
    integers >= 0 and ``data_offsets`` ``[begin, end]`` that match the shape and lie in the
    file. Nothing beyond the header is read.

    Raises
    ------
    ValueError
        One line naming the file, the entry and what is wrong (never the Rust reader's
        text).
    """
    path = Path(path)
    origin = f"cannot read {path} as a .safetensors file:"
    fix = "the file is corrupt or not a safetensors file (re-save it with safetensors)"
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(f"{origin} it is {size} bytes, shorter than the 8-byte header; {fix}")
        n = int.from_bytes(head, "little")
        if n > SAFETENSORS_HEADER_MAX or n > size - 8:
            raise ValueError(
                f"{origin} its header declares {n} bytes but the file holds {size - 8} after "
                f"the length field (at most {SAFETENSORS_HEADER_MAX}); {fix}"
            )
        raw = fh.read(n)
    try:
        header = __import__("json").loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError(f"{origin} its header is not valid UTF-8 JSON; {fix}") from None
    if not isinstance(header, dict):
        raise ValueError(
            f"{origin} its header is a JSON {type(header).__name__}, not an object of "
            f"tensors; {fix}"
        )
    body = size - 8 - n
    meta = header.get("__metadata__")
    if meta is not None and (
        not isinstance(meta, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    ):
        raise ValueError(
            f"{origin} its '__metadata__' must be an object of strings; got "
            f"{type(meta).__name__}; {fix}"
        )
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        where = f"{origin} tensor {name[:80]!r}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is described by a {type(entry).__name__}, not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _SAFETENSORS_ITEMSIZE:
            raise ValueError(
                f"{where} has an unknown dtype {str(dtype)[:20]!r} (known: "
                f"{', '.join(_SAFETENSORS_ITEMSIZE)}); {fix}"
            )
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**53 for d in shape
        ):
            raise ValueError(f"{where} has a shape {str(shape)[:60]} that is not a list of sizes")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= body
        ):
            raise ValueError(
                f"{where} has data_offsets {str(offsets)[:60]} outside the {body} bytes of "
                f"data; {fix}"
            )
        need = math.prod(shape) * _SAFETENSORS_ITEMSIZE[dtype]
        if offsets[1] - offsets[0] != need:
            raise ValueError(
                f"{where}: shape {shape} of {dtype} needs {need} bytes but its data_offsets "
                f"span {offsets[1] - offsets[0]}; {fix}"
            )
