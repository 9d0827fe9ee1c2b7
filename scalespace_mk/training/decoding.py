"""Decoding an image file into one ``uint8`` crop: the image-folder loader's work per sample.

:func:`decode_crop` opens a file with Pillow, draws the crop box from the size in the file's
header (``Image.open`` reads only the header), and decodes no more than the crop needs.
A JPEG decoded at full scale goes to simplejpeg instead where it is installed (below).

**simplejpeg** (JPEG in YCbCr or grey, ``decoder='auto'`` where installed; exact).
    simplejpeg (MIT; it bundles libjpeg-turbo, as Pillow's wheels do) reads the header and,
    unless the crop ends in the upper half of the image (then Pillow's rows-limited decode
    is cheaper), decodes the whole file straight into a ``uint8 [H, W, 3]`` array, without
    Pillow's per-file overhead (marker parsing in Python, the RGB -> RGBX unpacking, a
    fresh zeroed memory block per image): on 500 x 375 photos it decodes all rows as fast as
    Pillow decodes the top three quarters.
    Its pixels equal Pillow's (same library, same settings: accurate integer DCT, fancy
    upsampling; tested bit for bit), and the box is drawn from the header's size with the
    same generator draws, so the crops are the same whichever decoder runs. Whatever
    simplejpeg does not take goes to Pillow with the box already drawn: other formats, CMYK
    and YCCK JPEGs, files above Pillow's decompression-bomb limit (Pillow warns), drafted
    crops, and files simplejpeg refuses (its strict mode refuses libjpeg's warnings, e.g.
    extraneous bytes, which Pillow tolerates; Pillow's verdict then stands).
    ``decoder='pillow'`` turns it off.

**Rows-limited decoding** (JPEG in RGB, always on; exact).
    libjpeg decodes from the top down, so the rows below the crop's last row are never
    needed: only rows ``[0, bottom)`` are decoded (on 500 x 375 photos and the default random
    resized crop, 86 % of the rows on average; for the centre crop at 0.875, 94 %). The
    decoded rows are bit-identical to those of a full decode (libjpeg's output for a row does
    not depend on whether later rows are read). Pillow's decoder reports a stop before the
    last row as "broken data stream"; it is told apart from a damaged file by checking that
    the decoder wrote the crop's last row (Pillow sets the padding byte of every decoded RGB
    pixel to 255 in memory it zeroed); otherwise the error is raised as before. Where that
    check is not possible (Pillow < 11.2 without the Arrow export, images decoded into more
    than one of Pillow's memory blocks, i.e. above 16 MiB) the whole image is decoded.
    A file damaged only below the crop now yields its crop instead of an error for that
    crop (``verify='full'`` at construction still finds it).

**Draft decoding** (JPEG, optional: ``draft=True``; the training default).
    When the crop is at least twice the output side in both directions, libjpeg's DCT-domain
    scaling (Pillow's ``Image.draft``) decodes the image at 1/2, 1/4 or 1/8 of its size, the
    largest reduction that keeps the crop at >= the output side; the crop box is mapped into
    the reduced image (``x -> x / s``: decoded pixel ``i`` covers source pixels
    ``[i s, (i + 1) s)``) and resampled exactly there by Pillow's ``resize(box=...)``. This
    changes pixel values (the DCT-domain reduction is a different low-pass than a full decode
    followed by the antialiased bicubic filter): on smooth photographs the mean absolute
    difference is about one grey level (``tests/test_decoding.py`` states the bound it
    checks). The crop box itself, and so the random crop distribution, is unchanged. Off
    (``draft=False``, the evaluation default) the output does not depend on the image's
    size class: bit-stable evaluation.

**Resize.**
    A box on whole pixels (every crop without draft) is cut from the decoded pixels (Pillow's
    memory, read through its zero-copy Arrow export), copied into a contiguous channels-last
    ``uint8`` block (so that torch takes its vectorised ``uint8`` path; bit-identical to the
    strided call, 1.5x faster) and resized by ``torch.nn.functional.interpolate(mode='bicubic',
    antialias=True)``: Pillow's bicubic filter (a = -0.5), equal to Pillow's
    ``crop(box).resize(size, BICUBIC)`` within one grey level, on one intra-op thread.

Coordinates are image coordinates: ``x`` (columns) to the right, ``y`` (rows) down, boxes
``(left, top, width, height)`` in source pixels.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import numpy as np
import torch

import scalespace_mk.limits as limits
from scalespace_mk._threads import intra_op_threads
from scalespace_mk.training.augment import sample_resized_crop_box

__all__ = ["DECODERS", "DRAFT_SCALES", "decode_crop", "draft_scale", "simplejpeg_available"]

#: DCT-domain reductions libjpeg offers through Pillow's ``Image.draft``, largest first
DRAFT_SCALES: tuple[int, ...] = (8, 4, 2)


def _require_pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "decoding image files needs Pillow; install the 'train' extra: "
            "pip install 'scalespace_mk[train]'"
        ) from exc
    return Image


def _in_worker() -> bool:
    return torch.utils.data.get_worker_info() is not None


def _warn_once_safe(message: str) -> None:
    """Warn; inside a DataLoader worker a warnings-as-errors filter must not kill the worker."""
    if _in_worker():
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn(message, RuntimeWarning, stacklevel=3)
    else:
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _check_pixels(img: Any, path: str, max_pixels: int | None) -> None:
    """Refuse an image above ``max_pixels`` decoded pixels before it is decoded."""
    _check_size(*img.size, max_pixels)


def _report_bombs(caught: list[warnings.WarningMessage], path: str) -> None:
    """Re-emit Pillow's DecompressionBombWarning (naming the file); drop its other warnings
    (palette transparency, EXIF), which must not abort a DataLoader worker."""
    Image = _require_pil()
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            _warn_once_safe(f"{path}: {w.message}")


def _to_rgb(img: Any) -> Any:
    """Convert to 8-bit RGB; 16-bit and 32-bit integer grey images are scaled by 1/256
    (``convert("RGB")`` would clip them to near white)."""
    if img.mode.startswith("I;16") or img.mode == "I":
        Image = _require_pil()
        grey = np.asarray(img).astype(np.int64) >> 8
        img = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
    return img.convert("RGB")


def _center_box(width: int, height: int, size: int, crop_pct: float) -> tuple[float, ...]:
    """Box (left, top, w, h) in source pixels of 'resize shorter side to size/crop_pct, then
    centre-crop size x size', on whole source pixels (side and offsets rounded, as
    torchvision's ``CenterCrop`` rounds its offsets), so that the crop is cut without
    resampling its position."""
    side = min(max(round(min(width, height) * crop_pct), 1), width, height)
    return (float(round((width - side) / 2.0)), float(round((height - side) / 2.0)), side, side)


def draft_scale(crop_side: float, size: int) -> int:
    """The DCT-domain reduction used for a crop: the largest ``s`` of :data:`DRAFT_SCALES`
    with ``crop_side / s >= size``, or 1 (no reduction) when the crop is shorter than
    ``2 * size``.

    Parameters
    ----------
    crop_side : float
        Shorter side of the crop box in source pixels.
    size : int
        Output side in pixels.

    Returns
    -------
    int
        1, 2, 4 or 8.

    Examples
    --------
    >>> draft_scale(375, 224), draft_scale(448, 224), draft_scale(1800, 224)
    (1, 2, 8)
    """
    for s in DRAFT_SCALES:
        if crop_side >= s * size:
            return s
    return 1


# --------------------------------------------------------------------------------------------
# rows-limited decoding
# --------------------------------------------------------------------------------------------


_BLOCK_SIZE: Any = None


def _block_bytes() -> int:
    """Bytes of one of Pillow's memory blocks (images up to that size lie in one block, which
    its Arrow export needs); 0 where Pillow has no Arrow export (< 11.2)."""
    global _BLOCK_SIZE
    if _BLOCK_SIZE is None:
        Image = _require_pil()
        get = getattr(getattr(Image, "core", None), "get_block_size", None)
        arrow = hasattr(Image.Image, "__arrow_c_array__")
        _BLOCK_SIZE = get if arrow and get is not None else (lambda: 0)
    return int(_BLOCK_SIZE())


class _RowsUnchecked(OSError):
    """A rows-limited decode stopped early, and whether it reached the crop cannot be
    checked (the pixels are not readable through the Arrow export): decode it all again."""


def _rows_limited_ok(img: Any) -> bool:
    """Whether :func:`_load_rows` may stop early on ``img``: a single-tile RGB JPEG, read
    through Pillow's Arrow export (>= 11.2) into one memory block (so that the decoded rows
    can be checked)."""
    width, height = img.size
    return (
        img.format == "JPEG"
        and img.mode == "RGB"
        and len(img.tile) == 1
        and 4 * width * height <= _block_bytes()
    )


def _load_rows(img: Any, rows: int) -> bool:
    """Decode rows ``[0, rows)`` of an opened image (all of it when that is not possible);
    return whether the decode stopped early (the rows below are then zero).

    Raises the decoder's error unless the image stopped where it was told to.
    """
    width, height = img.size
    if rows >= height or not _rows_limited_ok(img):
        img.load()
        return False
    tile = img.tile[0]
    x0, y0, x1, _ = tile[1]
    extents = (x0, y0, x1, y0 + rows)
    if hasattr(tile, "_replace"):  # Pillow >= 11: a named tuple
        img.tile = [tile._replace(extents=extents)]
    else:
        img.tile = [(tile[0], extents, *tile[2:])]
    try:
        img.load()
    except OSError:
        # "broken data stream": libjpeg refuses to finish before the last row. The decode
        # reached the crop if it ran to its end (Pillow then clears the tile list) and the
        # decoder wrote row rows - 1 (its padding bytes are 255 there, 0 in the memory
        # Pillow zeroed); otherwise (e.g. "image file is truncated" above the crop) the file
        # is damaged where the crop needs it and the error stands.
        if img.tile:
            raise
        view, keep = _pixels_view(img)
        if keep is None or view.shape[2] != 4:
            raise _RowsUnchecked("cannot check the decoded rows") from None
        if not bool(np.all(view[rows - 1, :, 3] == 255)):
            raise
    return True


# --------------------------------------------------------------------------------------------
# the crop
# --------------------------------------------------------------------------------------------


def decode_crop(
    path: str,
    size: int,
    *,
    train: bool,
    crop_pct: float = 0.875,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    generator: torch.Generator | None = None,
    max_pixels: int | None = limits.IMAGE_PIXELS_MAX,
    draft: bool | None = None,
    decoder: str = "auto",
) -> torch.Tensor:
    """Decode ``path`` into a ``uint8 [3, size, size]`` crop (random resized or centre).

    Parameters
    ----------
    path : str
        Image file (any format Pillow reads; JPEGs get the faster decoding of the module
        docstring).
    size : int
        Output side in pixels.
    train : bool
        ``True``: random resized crop (box from
        :func:`scalespace_mk.training.augment.sample_resized_crop_boxes` with ``scale``,
        ``ratio`` and ``generator``); ``False``: the centre ``crop_pct`` of the shorter side.
    crop_pct : float, default 0.875
        Centre-crop fraction (``train=False``).
    scale, ratio : (float, float)
        Area-fraction and aspect-ratio (``w / h``) ranges of the random crop.
    generator : torch.Generator, optional
        Source of the random box.
    max_pixels : int or None, default :data:`scalespace_mk.limits.IMAGE_PIXELS_MAX`
        Larger images are refused (ValueError) before they are decoded.
    draft : bool, optional
        Allow DCT-domain reduced decoding of JPEGs when the crop is at least twice the output
        side (values change slightly; the box does not). Default: ``train``.
    decoder : {'auto', 'pillow', 'simplejpeg'}, default 'auto'
        Who decodes JPEGs decoded at full scale: ``'auto'`` uses simplejpeg when it is
        installed (the ``train`` extra installs it) and Pillow otherwise; ``'simplejpeg'``
        requires it (ImportError otherwise). Both run libjpeg-turbo with the same settings;
        a file simplejpeg refuses is handed to Pillow, whose verdict stands.

    Returns
    -------
    Tensor
        ``uint8 [3, size, size]``, RGB, channels first.
    """
    draft = train if draft is None else bool(draft)
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}; got {decoder!r}")

    def box_for(width: int, height: int) -> tuple[int, int, int, int]:
        if train:
            return sample_resized_crop_box(
                height, width, scale=scale, ratio=ratio, generator=generator
            )
        left, top, side, _ = _center_box(width, height, size, crop_pct)
        return int(left), int(top), side, side

    sj = _simplejpeg(decoder)
    if sj is not None:
        done = _decode_crop_simplejpeg(sj, path, size, box_for, draft, max_pixels)
        if isinstance(done, torch.Tensor):
            return done
        if done is not None:  # box drawn; Pillow decodes (draft, upper rows, a refusal)
            drawn, data = done
            return _decode_crop_pillow(path, size, lambda w, h: drawn, draft, max_pixels, data=data)
    return _decode_crop_pillow(path, size, box_for, draft, max_pixels)


# --------------------------------------------------------------------------------------------
# the two decoders
# --------------------------------------------------------------------------------------------

#: decoders of :func:`decode_crop`
DECODERS: tuple[str, ...] = ("auto", "pillow", "simplejpeg")

_SJ: Any = None

#: JPEG colour spaces (simplejpeg's header names) that libjpeg converts to RGB exactly as
#: Pillow does (Pillow's modes RGB and L, then L -> RGB by replication); CMYK, YCCK and RGB
#: JPEGs go to Pillow
_SJ_SPACES = frozenset({"YCbCr", "Gray"})

#: a crop that ends above this fraction of the rows goes to Pillow's rows-limited decode.
#: Decoding alone, Pillow's rows [0, f H) cost 0.56-0.58 simplejpeg full decodes at
#: f = 0.25, 0.72-0.77 at 0.5, 0.99-1.02 at 0.75 (Pillow 13, simplejpeg 1.9); whole crops
#: (Pillow's fixed work included), alternating, CPU time: at 0.5, 11 % less than always
#: simplejpeg on 1280-2560 px photographs (0.75: 13 %), no change on 500 x 375 JPEGs (-0.1
#: to -0.8 %; 0.75: 1-3 % more)
_SJ_ROWS = 0.5


def simplejpeg_available() -> bool:
    """Whether simplejpeg (the faster JPEG decoder of :func:`decode_crop`) is installed."""
    return _simplejpeg("auto") is not None


def _simplejpeg(decoder: str) -> Any:
    """The simplejpeg module for ``decoder`` (None: decode with Pillow)."""
    global _SJ
    if decoder == "pillow":
        return None
    if _SJ is None:
        try:
            import simplejpeg
        except ImportError:
            simplejpeg = False
        _SJ = simplejpeg
    if _SJ is False and decoder == "simplejpeg":
        raise ImportError(
            "decoder='simplejpeg' needs the simplejpeg package: pip install simplejpeg "
            "(or the 'train' extra), or use decoder='auto'"
        )
    return _SJ or None


def _check_size(width: int, height: int, max_pixels: int | None) -> None:
    """Refuse an empty image or one above ``max_pixels`` decoded pixels before decoding."""
    if width < 1 or height < 1:
        raise ValueError("empty image")
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(
            f"{width} x {height} = {width * height} pixels exceeds max_pixels = {max_pixels} "
            "(scalespace_mk.limits.IMAGE_PIXELS_MAX; raise it with the dataset's max_pixels)"
        )


def _decode_crop_simplejpeg(
    sj: Any,
    path: str,
    size: int,
    box_for: Any,
    draft: bool,
    max_pixels: int | None,
) -> torch.Tensor | tuple[tuple[int, int, int, int], bytes] | None:
    """The crop decoded by simplejpeg; or the drawn box and the file's bytes when Pillow
    must decode it (draft scale > 1, or simplejpeg refused the data); or None when the file
    is not a JPEG that simplejpeg takes (nothing drawn)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:3] != b"\xff\xd8\xff":
        return None
    try:
        height, width, space, _ = sj.decode_jpeg_header(data)
    except Exception:  # noqa: BLE001 - Pillow decides about a file simplejpeg cannot read
        return None
    if space not in _SJ_SPACES:
        return None
    _check_size(width, height, max_pixels)
    bomb = _require_pil().MAX_IMAGE_PIXELS
    if bomb is not None and width * height > bomb:
        return None  # Pillow's DecompressionBombWarning / Error
    box = box_for(width, height)
    if draft and draft_scale(min(box[2], box[3]), size) > 1:
        return box, data
    if box[1] + box[3] < _SJ_ROWS * height and 4 * width * height <= _block_bytes():
        return box, data  # Pillow's rows-limited decode of the top rows is cheaper
    try:
        pixels = sj.decode_jpeg(data, colorspace="RGB")
    except Exception:  # noqa: BLE001 - e.g. "Corrupt JPEG data" warnings Pillow tolerates
        return box, data
    return _resize_pixels(pixels, box, size)


def _decode_crop_pillow(
    path: str,
    size: int,
    box_for: Any,
    draft: bool,
    max_pixels: int | None,
    *,
    data: bytes | None = None,
) -> torch.Tensor:
    """The crop decoded by Pillow (rows-limited, draft): see the module docstring. ``data``:
    the file's bytes when they were read already."""
    Image = _require_pil()

    def source() -> Any:
        return path if data is None else io.BytesIO(data)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Image.open(source()) as img:
            _check_pixels(img, path, max_pixels)
            width, height = img.size
            left, top, bw, bh = box_for(width, height)
            s = draft_scale(min(bw, bh), size) if draft and img.format == "JPEG" else 1
            if s > 1:
                # Pillow picks the largest scale s' in (8, 4, 2, 1) with s' <= the smaller of
                # width // (width // s) and height // (height // s), which is s here
                drafted = img.draft("RGB", (width // s, height // s))
                s = round(width / drafted[1][2]) if drafted is not None else 1
            if s == 1:
                rows = int(top + bh)
            else:
                # the bicubic filter of Pillow's resize(box=...) reads up to 2 * max(factor, 1)
                # decoded rows beyond the box
                factor = max(bh / s / size, 1.0)
                rows = math.ceil((top + bh) / s) + math.ceil(2.0 * factor) + 2
            try:
                _load_rows(img, rows)
            except _RowsUnchecked:
                rows = 0  # (not expected with Pillow >= 11.2): decode the whole image below
            if rows:
                # JPEGs decode to RGB already: resize straight from the decoded image
                rgb = img if img.mode == "RGB" else _to_rgb(img)
                out = _resize_box(rgb, (left / s, top / s, bw / s, bh / s), size)
        if not rows:
            with Image.open(source()) as img:
                if s > 1:
                    img.draft("RGB", (width // s, height // s))
                rgb = _to_rgb(img) if img.mode != "RGB" else img
                rgb.load()
                out = _resize_box(rgb, (left / s, top / s, bw / s, bh / s), size)
    _report_bombs(caught, path)
    return out


# --------------------------------------------------------------------------------------------
# pixels and resize
# --------------------------------------------------------------------------------------------


_ARROW: Any = None


def _arrow_structs() -> Any:
    """ctypes layouts of the Arrow C data interface's ``ArrowArray`` (a stable ABI)."""
    global _ARROW
    if _ARROW is None:
        import ctypes

        class ArrowArray(ctypes.Structure):
            pass

        ArrowArray._fields_ = [
            ("length", ctypes.c_int64),
            ("null_count", ctypes.c_int64),
            ("offset", ctypes.c_int64),
            ("n_buffers", ctypes.c_int64),
            ("n_children", ctypes.c_int64),
            ("buffers", ctypes.POINTER(ctypes.c_void_p)),
            ("children", ctypes.POINTER(ctypes.POINTER(ArrowArray))),
            ("dictionary", ctypes.c_void_p),
            ("release", ctypes.c_void_p),
            ("private_data", ctypes.c_void_p),
        ]
        get = ctypes.pythonapi.PyCapsule_GetPointer
        get.restype = ctypes.c_void_p
        get.argtypes = [ctypes.py_object, ctypes.c_char_p]
        _ARROW = (ctypes, ArrowArray, get)
    return _ARROW


def _pixels_view(rgb: Any) -> tuple[np.ndarray, Any]:
    """``(uint8 [H, W, C] array, keep-alive)``: the pixels of an RGB Pillow image.

    Pillow (>= 11.2) exports an RGB image through the Arrow C data interface as a
    fixed-size list of 4 bytes per pixel (R, G, B, padding) without copying; the returned
    array is then a ``[H, W, 4]`` view of Pillow's memory, valid while the keep-alive
    object and the image live (never written). Otherwise (older Pillow, an image in several
    memory blocks) it is ``np.asarray(rgb)``, a ``[H, W, 3]`` copy, and the keep-alive is
    ``None``. Channels ``:3`` are R, G, B either way.
    """
    width, height = rgb.size
    try:
        schema, array = rgb.__arrow_c_array__()
        ctypes, ArrowArray, get = _arrow_structs()
        parent = ArrowArray.from_address(get(array, b"arrow_array"))
        if parent.n_children != 1 or parent.length != width * height or parent.offset:
            raise ValueError("unexpected Arrow layout")
        child = parent.children[0].contents
        if child.n_buffers != 2 or child.length != 4 * width * height or child.offset:
            raise ValueError("unexpected Arrow layout")
        buffer = (ctypes.c_uint8 * (4 * width * height)).from_address(child.buffers[1])
        view = np.ctypeslib.as_array(buffer).reshape(height, width, 4)
        return view, (schema, array, rgb)
    except Exception:  # noqa: BLE001 - any failure of the zero-copy path: copy instead
        return np.array(rgb, dtype=np.uint8), None


def _resize_pixels(pixels: np.ndarray, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """``uint8 [3, size, size]``: the whole-pixel ``(left, top, w, h)`` box of decoded
    ``uint8 [H, W, C]`` pixels (C = 3, or 4 with a padding channel), resized with antialiased
    bicubic interpolation (Pillow's filter, a = -0.5).

    The box is copied into a contiguous channels-last block and resized by
    ``torch.nn.functional.interpolate(mode='bicubic', antialias=True)`` on ``uint8``: about
    4x cheaper than Pillow's resample on one core, and equal to Pillow's
    ``crop(box).resize((size, size), BICUBIC)`` (what torchvision's ``RandomResizedCrop``
    computes) within one grey level (tests/test_datasets.py).
    """
    left, top, bw, bh = box
    crop = pixels[top : top + bh, left : left + bw]
    if (bh, bw) == (size, size):
        return torch.from_numpy(np.ascontiguousarray(crop[..., :3].transpose(2, 0, 1)))
    # one intra-op thread: split across cores, these ~0.2 ms ops cost more than they save,
    # and with spinning OpenMP threads (torch imported before scalespace_mk, so no passive
    # wait policy) they ran 3x slower on 2 cores. The contiguous channels-last copy (numpy,
    # 0.02-0.05 ms) lets torch take its vectorised uint8 path (3 or 4 channels, channels-last
    # contiguous): 0.17 instead of 0.26 ms for a 300 px crop, bit-identical.
    block = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).unsqueeze(0)
    with intra_op_threads(1):
        out = torch.nn.functional.interpolate(
            block, size=(size, size), mode="bicubic", antialias=True, align_corners=False
        )
        return out[0, :3].contiguous()  # CHW (a copy from channels-last, one thread)


def _resize_box(rgb: Any, box: tuple[float, float, float, float], size: int) -> torch.Tensor:
    """``uint8 [3, size, size]``: the ``(left, top, w, h)`` box of an RGB Pillow image,
    resized with antialiased bicubic interpolation (Pillow's filter, a = -0.5).

    A box on whole pixels (every random resized crop, and the centre crop, whose box
    :func:`_center_box` rounds) is cut from the decoded pixels (read through Pillow's
    zero-copy Arrow export) by :func:`_resize_pixels`. A fractional box (after draft
    decoding at reduced scale) goes through Pillow's ``resize(box=...)``, which samples it
    exactly (its filter also reads the pixels just outside the box).
    """
    Image = _require_pil()
    left, top, bw, bh = box
    if all(float(v).is_integer() for v in box):
        view, keep = _pixels_view(rgb)
        out = _resize_pixels(view, (int(left), int(top), int(bw), int(bh)), size)
        del view, keep  # the pixels may go now (the block may have been a view of them)
        return out
    out = rgb.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + bw, top + bh))
    # HWC -> CHW in numpy: a single-threaded copy (torch's parallel copy of such small
    # tensors stalls on a loaded CPU)
    arr = np.ascontiguousarray(np.asarray(out, dtype=np.uint8).transpose(2, 0, 1))
    return torch.from_numpy(arr)
