"""Batched, torch-native training and evaluation transforms (timm/ConvNeXt recipe).

All transforms work on whole batches ``[B, 3, H, W]`` on the training device (CPU or GPU), so
the data loader only decodes and crops. The pipeline of :class:`TrainTransform` follows the
ConvNeXt / timm ImageNet recipe, in timm's order:

1. ``uint8`` -> ``float32`` in [0, 1];
2. random resized crop (scale (0.08, 1), ratio (3/4, 4/3)) and horizontal flip (p = 0.5);
3. RandAugment (``rand-m9-mstd0.5-inc1``: 2 operations per image, magnitude 9 of 10 with
   Gaussian noise of std 0.5);
4. normalisation with the ImageNet mean and standard deviation;
5. random erasing (p = 0.25, per-pixel N(0, 1) noise, timm ``mode='pixel'``);
6. Mixup (alpha 0.8) or CutMix (alpha 1.0), switch probability 0.5, applied with probability
   1, and label smoothing 0.1, giving soft targets for :class:`SoftTargetCrossEntropy`.

Every random draw takes an optional ``torch.Generator``: with a seeded generator the output
is reproducible. Parameters are drawn on the generator's device (CPU by default) and moved to
the images' device; per-pixel noise is drawn on the images' device from a seed taken from the
generator.

Notes
-----
Images are channels-first RGB. Boxes are ``(left, top, width, height)`` in pixels with the
origin at the top-left pixel corner (image rows grow downwards, as stored).

**Why this module and not kornia.** kornia (in the ``train`` and ``test`` extras, not a core
dependency) has an equivalent of most steps. They were reviewed one by one (timings:
``benchmarks/bench_augment_kornia.py``; on 1 CPU thread, batch 32 x 3 x 112 x 112, load 8.5
on 2 shared cores, kornia's time over ours: random resized crop 0.40, random erasing 0.10,
equalize 0.42, RandAugment 8.5, Mixup 47). What stays, and why:

- **Reproducibility (every random step).** Every draw here comes from the ``generator``
  argument, the one generator a training checkpoint stores, so a killed run resumes to the
  same weights (``tests/test_train.py``). kornia draws from torch's global RNG, shared with
  dropout and initialisation; using it means forking and reseeding that state per call (as
  the ``'kornia'`` RandAugment backend does).
- **Random resized crop** (:func:`sample_resized_crop_boxes`, :func:`resized_crop`):
  torchvision's / timm's box distribution exactly (10 tries, integer rounding, centred
  fallback), and crop, resize and flip in one ``grid_sample``. kornia's crop is faster on
  CPU but samples its own way; the crop of ImageNet folders is done on decode anyway.
- **Random erasing**: timm's ``mode='pixel'`` fills the box with per-pixel N(0, 1) noise;
  kornia's ``RandomErasing`` fills a constant (which is why it is faster).
- **Mixup / CutMix**: timm's batch mode (one ``lam`` per batch, mixing with the flipped
  batch, CutMix ``lam`` corrected to the pasted area, label smoothing folded into the soft
  targets). kornia's ``RandomMixUpV2`` / ``RandomCutMixV2`` draw per-sample ``lam`` and
  return label triples; they are 47 times slower here.
- **RandAugment** (:func:`rand_augment`): timm's ``rand-m9-mstd0.5-inc1`` per image (op,
  magnitude noise, sign and probability drawn for each image), with Pillow's semantics for
  the colour ops (``ImageEnhance`` blends: brightness multiplies, colour blends with the
  ITU-R 601 grey, sharpness with Pillow's SMOOTH kernel, border kept), checked against
  Pillow in ``tests/test_augment.py``. kornia's ``RandAugment`` draws the ops once per call
  (all images of a call share them) and its ``adjust_*`` functions follow other definitions
  (additive brightness, HSV saturation); it stays available as ``backend='kornia'`` and is
  8.5 times slower grouped in 8 calls.
- **Equalize** (:func:`_equalize`): Pillow's lookup table, batched over images and
  channels. ``kornia.enhance.equalize`` gives the same table (equal on 8-bit images) and is
  faster from kornia 0.9, but reads levels by truncation where this rounds, and loops over
  planes before 0.9 (the extras allow 0.7); kept.
- **normalize / to_float / the eval transform**: a fused ``addcmul`` pass and torch's
  antialiased bicubic resize (as Pillow); kornia's ``normalize`` does the same in two passes,
  and the evaluation path must not need kornia.

Replaced: the soft-target cross-entropy is torch's ``F.cross_entropy`` with class
probabilities as targets (:func:`soft_target_cross_entropy` keeps the shape check).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scalespace_mk._checks import check_choice
from scalespace_mk._threads import intra_op_threads
from scalespace_mk.networks.mobilenet import IMAGENET_MEAN, IMAGENET_STD  # their one home

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RAND_AUGMENT_OPS",
    "AugmentConfig",
    "EvalTransform",
    "MixResult",
    "SoftTargetCrossEntropy",
    "TrainTransform",
    "denormalize",
    "mixup_cutmix",
    "normalize",
    "rand_augment",
    "random_erasing",
    "random_resized_crop",
    "resized_crop",
    "sample_resized_crop_box",
    "sample_resized_crop_boxes",
    "smooth_one_hot",
    "soft_target_cross_entropy",
    "to_float",
]



# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _check_images(images: Any, name: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [B, C, H, W]; got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] < 1:
        raise ValueError(f"{name} must have shape [B, C, H, W]; got {tuple(images.shape)}")
    if not (images.dtype == torch.uint8 or images.is_floating_point()):
        raise TypeError(f"{name} must be uint8 or floating point; got {images.dtype}")
    return images


def _check_prob(name: str, value: Any) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a probability in [0, 1]; got {value!r}") from None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1]; got {value!r}")
    return p


def _check_pair(name: str, value: Any, *, positive: bool = True) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max); got {value!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or a > b or (positive and a <= 0):
        raise ValueError(
            f"{name} must be a finite pair (min, max) with {'0 < ' if positive else ''}"
            f"min <= max; got {value!r}"
        )
    return a, b


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _rand(shape: Sequence[int], generator: torch.Generator | None) -> torch.Tensor:
    """Uniform [0, 1) draws from ``generator`` (on its device), returned on the CPU."""
    return torch.rand(tuple(shape), generator=generator, device=_gen_device(generator)).cpu()


def _seed_from(generator: torch.Generator | None) -> int:
    return int(
        torch.randint(0, 2**62, (1,), generator=generator, device=_gen_device(generator)).item()
    )


def _randn_on(
    shape: Sequence[int], device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """Standard normal noise on ``device`` (a device-local generator seeded from ``generator``
    when the two devices differ)."""
    if generator is None:
        return torch.randn(tuple(shape), device=device)
    if generator.device == device:
        return torch.randn(tuple(shape), generator=generator, device=device)
    local = torch.Generator(device=device).manual_seed(_seed_from(generator))
    return torch.randn(tuple(shape), generator=local, device=device)


def _stat_tensor(values: Sequence[float], ref: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=ref.dtype, device=ref.device)
    if t.ndim != 1 or t.shape[0] != ref.shape[1]:
        raise ValueError(
            f"mean/std must have one value per channel ({ref.shape[1]}); got {list(values)}"
        )
    return t.view(1, -1, 1, 1)


# --------------------------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------------------------


def to_float(images: torch.Tensor) -> torch.Tensor:
    """Convert images to ``float32`` in [0, 1].

    Parameters
    ----------
    images : Tensor
        ``uint8`` (0..255, divided by 255) or floating point (assumed already in [0, 1] and
        only cast to float32), shape ``[B, C, H, W]``.

    Returns
    -------
    Tensor
        ``float32 [B, C, H, W]`` (a new tensor for ``uint8`` input).
    """
    images = _check_images(images)
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images.to(torch.float32)


def normalize(
    images: torch.Tensor,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Standardise images per channel: ``(x - mean) / std`` with ``x`` in [0, 1].

    Parameters
    ----------
    images : Tensor
        ``uint8`` or float ``[B, C, H, W]`` (see :func:`to_float`).
    mean, std : sequence of float
        One value per channel (default ImageNet, :data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`).

    Returns
    -------
    Tensor
        ``float32 [B, C, H, W]``; :func:`denormalize` inverts it.
    """
    x = to_float(images)
    inv = 1.0 / _stat_tensor(std, x)
    return torch.addcmul(-_stat_tensor(mean, x) * inv, x, inv)  # one pass over the images


def denormalize(
    images: torch.Tensor,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Invert :func:`normalize`: ``x * std + mean`` (values in [0, 1] for natural images).

    Parameters
    ----------
    images : Tensor
        Normalised float images ``[B, C, H, W]``.
    mean, std : sequence of float
        The statistics used by :func:`normalize`.

    Returns
    -------
    Tensor
        ``float32 [B, C, H, W]``.
    """
    x = _check_images(images).to(torch.float32)
    return x * _stat_tensor(std, x) + _stat_tensor(mean, x)


# --------------------------------------------------------------------------------------------
# random resized crop and flip
# --------------------------------------------------------------------------------------------


def sample_resized_crop_boxes(
    n: int,
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> torch.Tensor:
    """Draw random-resized-crop boxes with torchvision's / timm's distribution.

    Parameters
    ----------
    n : int
        Number of boxes.
    height, width : int
        Source image size in pixels.
    scale : (float, float), default (0.08, 1.0)
        Range of the box area as a fraction of the image area.
    ratio : (float, float), default (3/4, 4/3)
        Range of the aspect ratio ``w / h`` (sampled log-uniformly).
    generator : torch.Generator, optional
        Source of randomness.
    attempts : int, default 10
        Tries per box before the fallback (central crop with the ratio clamped to ``ratio``).

    Returns
    -------
    Tensor
        ``float32 [n, 4]`` boxes ``(left, top, w, h)`` with integer values, inside the image.

    Notes
    -----
    Each try draws ``area ~ U(scale) * H * W`` and ``log(w/h) ~ U(log ratio)``, rounds
    ``w = sqrt(area * r)``, ``h = sqrt(area / r)`` and accepts when the box fits; the offset
    is then uniform over the valid integer positions. All tries are drawn at once.
    """
    scale = _check_pair("scale", scale)
    ratio = _check_pair("ratio", ratio)
    area = float(height * width)
    # the draws come from torch (the generator's stream); the arithmetic runs in numpy,
    # which costs microseconds for the one box per image of the decode-time crop
    u = _rand((n, attempts, 4), generator).to(torch.float64).cpu().numpy()
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[..., 1]
    aspect = np.exp(logr)
    w = np.round(np.sqrt(target * aspect))
    h = np.round(np.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = np.argmax(ok, axis=1)
    rows = np.arange(n)
    has = ok[rows, first]
    w, h = w[rows, first], h[rows, first]
    left = np.floor(u[rows, first, 2] * (width - w + 1))
    top = np.floor(u[rows, first, 3] * (height - h + 1))
    # fallback: whole image, aspect clamped into ratio, centred
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = float(width), float(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = float(round(height * ratio[1])), float(height)
    else:
        fw, fh = float(width), float(height)
    fl, ft = float((width - fw) // 2), float((height - fh) // 2)
    boxes = np.stack([left, top, w, h], axis=1)
    boxes = np.where(has[:, None], boxes, np.array([fl, ft, fw, fh]))
    return torch.from_numpy(boxes.astype(np.float32))


def sample_resized_crop_box(
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """One box of :func:`sample_resized_crop_boxes` (``n = 1``) as Python integers.

    The same draws from ``generator`` and the same arithmetic (IEEE float64, the exponential
    through numpy as there), so the box equals ``sample_resized_crop_boxes(1, ...)[0]`` for
    every generator state (tested), without the array bookkeeping: the image-folder loader
    draws one box per decoded image, where that bookkeeping cost 0.04-0.1 ms.

    Parameters
    ----------
    height, width : int
        Source image size in pixels.
    scale, ratio, generator, attempts
        As in :func:`sample_resized_crop_boxes`.

    Returns
    -------
    (int, int, int, int)
        ``(left, top, w, h)`` in source pixels (``x`` = column, ``y`` = row, origin top left).
    """
    s0, s1 = _check_pair("scale", scale)
    r0, r1 = _check_pair("ratio", ratio)
    u = _rand((1, attempts, 4), generator).numpy().astype(np.float64).ravel()
    logr = math.log(r0) + (math.log(r1) - math.log(r0)) * u[1::4]
    aspect = np.exp(logr).tolist()  # numpy's exp, as in sample_resized_crop_boxes
    draws = u.tolist()
    area = float(height * width)
    for a in range(attempts):
        target = area * (s0 + (s1 - s0) * draws[4 * a])
        w = round(math.sqrt(target * aspect[a]))
        h = round(math.sqrt(target / aspect[a]))
        if 0 < w <= width and 0 < h <= height:
            left = math.floor(draws[4 * a + 2] * (width - w + 1))
            top = math.floor(draws[4 * a + 3] * (height - h + 1))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < r0:
        fw, fh = width, round(width / r0)
    elif in_ratio > r1:
        fw, fh = round(height * r1), height
    else:
        fw, fh = width, height
    return (width - fw) // 2, (height - fh) // 2, fw, fh


def resized_crop(
    images: torch.Tensor,
    boxes: torch.Tensor,
    size: int | tuple[int, int],
    *,
    flip: torch.Tensor | None = None,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Crop one box per image and resize it to ``size`` (one ``grid_sample`` call).

    Parameters
    ----------
    images : Tensor
        ``[B, C, H, W]``, uint8 or float.
    boxes : Tensor
        ``[B, 4]`` boxes ``(left, top, w, h)`` in pixels (fractional values allowed).
    size : int or (int, int)
        Output side, or ``(height, width)``.
    flip : Tensor of bool, optional
        ``[B]``: mirror the crop left-right where True.
    mode : {'bilinear', 'bicubic', 'nearest'}, default 'bilinear'
        Interpolation (no antialiasing: meant for crops that are upsampled or mildly
        downsampled; decode-time crops in the loader use Pillow's antialiased resize).

    Returns
    -------
    Tensor
        ``float32 [B, C, size, size]``; values in [0, 1] for uint8 input, clamped to the input
        range for bicubic.

    Notes
    -----
    Output pixel ``j`` samples the source at ``left + (j + 0.5) * w / size - 0.5`` (pixel
    centres, ``align_corners=False``): a box of integer offset and side ``size`` reproduces
    the slice exactly.
    """
    x = to_float(images)
    check_choice("mode", mode, ("bilinear", "bicubic", "nearest"))
    out_h, out_w = (size, size) if isinstance(size, int) else size
    b, _, height, width = x.shape
    boxes = torch.as_tensor(boxes, dtype=torch.float32).to(x.device)
    if boxes.shape != (b, 4):
        raise ValueError(f"boxes must have shape [B, 4] = [{b}, 4]; got {tuple(boxes.shape)}")
    left, top, bw, bh = boxes.unbind(1)
    sx = bw / width
    sy = bh / height
    tx = (2 * left + bw) / width - 1
    ty = (2 * top + bh) / height - 1
    if flip is not None:
        sign = 1.0 - 2.0 * torch.as_tensor(flip, device=x.device).to(torch.float32)
        sx = sx * sign
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)
    grid = F.affine_grid(theta, [b, x.shape[1], out_h, out_w], align_corners=False)
    out = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)
    if mode == "bicubic":
        out = out.clamp(float(x.min()), float(x.max())) if x.numel() else out
    return out


def random_resized_crop(
    images: torch.Tensor,
    size: int,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    hflip: float = 0.5,
    mode: str = "bilinear",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random resized crop (one box per image) and random horizontal flip.

    Parameters
    ----------
    images : Tensor
        ``[B, C, H, W]``, uint8 or float in [0, 1].
    size : int
        Output side in pixels.
    scale, ratio : (float, float)
        Box area fraction and aspect ranges (see :func:`sample_resized_crop_boxes`).
    hflip : float, default 0.5
        Probability of a left-right flip.
    mode : str, default 'bilinear'
        Interpolation, see :func:`resized_crop`.
    generator : torch.Generator, optional
        Source of randomness.

    Returns
    -------
    Tensor
        ``float32 [B, C, size, size]``.
    """
    x = _check_images(images)
    hflip = _check_prob("hflip", hflip)
    boxes = sample_resized_crop_boxes(
        x.shape[0], x.shape[2], x.shape[3], scale=scale, ratio=ratio, generator=generator
    )
    flip = _rand((x.shape[0],), generator).cpu() < hflip
    return resized_crop(x, boxes, size, flip=flip, mode=mode)


# --------------------------------------------------------------------------------------------
# random erasing
# --------------------------------------------------------------------------------------------


def random_erasing(
    images: torch.Tensor,
    *,
    p: float = 0.25,
    area: tuple[float, float] = (0.02, 1.0 / 3.0),
    ratio: tuple[float, float] = (0.3, 1.0 / 0.3),
    generator: torch.Generator | None = None,
    return_boxes: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Erase one random rectangle per image with N(0, 1) noise (timm ``mode='pixel'``).

    Parameters
    ----------
    images : Tensor
        Normalised float images ``[B, C, H, W]`` (noise N(0, 1) matches their scale).
    p : float, default 0.25
        Probability that an image is erased.
    area : (float, float), default (0.02, 1/3)
        Range of the rectangle area as a fraction of the image.
    ratio : (float, float), default (0.3, 1/0.3)
        Range of the aspect ratio ``h / w`` (log-uniform).
    generator : torch.Generator, optional
        Source of randomness.
    return_boxes : bool, default False
        Also return the boxes ``[B, 4]`` ``(left, top, w, h)`` (zeros where not erased).

    Returns
    -------
    Tensor or (Tensor, Tensor)
        A new float tensor ``[B, C, H, W]``; pixels outside the rectangles are unchanged.

    Notes
    -----
    As timm: up to 10 tries per image draw ``target = U(area) * H * W`` and
    ``h = round(sqrt(target * r))``, ``w = round(sqrt(target / r))``; the first try with
    ``w < W`` and ``h < H`` is used, with a uniform integer offset. An image with no fitting
    try stays unchanged.
    """
    x = _check_images(images)
    if not x.is_floating_point():
        raise TypeError("images must be normalised floating point images; got uint8")
    p = _check_prob("p", p)
    area = _check_pair("area", area)
    ratio = _check_pair("ratio", ratio)
    b, c, height, width = x.shape
    u = _rand((b, 10, 4), generator).to(torch.float64)
    target = height * width * (area[0] + (area[1] - area[0]) * u[..., 0])
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[..., 1])
    h = torch.round(torch.sqrt(target * aspect))
    w = torch.round(torch.sqrt(target / aspect))
    ok = (w < width) & (h < height) & (w > 0) & (h > 0)
    first = torch.argmax(ok.to(torch.int8), dim=1)
    rows = torch.arange(b)
    do = ok[rows, first] & (_rand((b,), generator).to(torch.float64).cpu() < p)
    h, w = h[rows, first], w[rows, first]
    top = torch.floor(u[rows, first, 2] * (height - h + 1))
    left = torch.floor(u[rows, first, 3] * (width - w + 1))
    boxes = torch.stack([left, top, w, h], 1) * do[:, None]
    out = x.clone()
    idx = torch.nonzero(do).flatten()
    if idx.numel():  # noise only for the erased images
        k = idx.numel()
        sub = boxes[idx].to(device=x.device, dtype=torch.float32)
        ys = torch.arange(height, device=x.device, dtype=torch.float32).view(1, height, 1)
        xs = torch.arange(width, device=x.device, dtype=torch.float32).view(1, 1, width)
        l0, t0, bw, bh = (v.view(k, 1, 1) for v in sub.unbind(1))
        mask = (ys >= t0) & (ys < t0 + bh) & (xs >= l0) & (xs < l0 + bw)
        noise = _randn_on((k, c, height, width), x.device, generator).to(x.dtype)
        idx_dev = idx.to(x.device)
        out[idx_dev] = torch.where(mask[:, None], noise, x[idx_dev])
    if return_boxes:
        return out, boxes.to(torch.float32)
    return out


# --------------------------------------------------------------------------------------------
# mixup / cutmix / label smoothing
# --------------------------------------------------------------------------------------------


def smooth_one_hot(
    labels: torch.Tensor, num_classes: int, *, smoothing: float = 0.0
) -> torch.Tensor:
    """One-hot targets with label smoothing (timm convention).

    Parameters
    ----------
    labels : Tensor
        Integer class indices ``[B]`` in ``[0, num_classes)``.
    num_classes : int
        Number of classes ``K`` (>= 1).
    smoothing : float, default 0.0
        ``eps`` in [0, 1): every class gets ``eps / K``, the true class
        ``1 - eps + eps / K`` (rows sum to 1; identical to
        ``F.cross_entropy(..., label_smoothing=eps)``).

    Returns
    -------
    Tensor
        ``float32 [B, K]``.
    """
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point():
        raise ValueError("labels must be an integer tensor of shape [B]")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
    eps = float(smoothing)
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"smoothing must lie in [0, 1); got {smoothing!r}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}); got [{int(labels.min())}, {int(labels.max())}]"
        )
    off = eps / num_classes
    out = torch.full((labels.shape[0], num_classes), off, dtype=torch.float32, device=labels.device)
    return out.scatter_(1, labels.long().view(-1, 1), 1.0 - eps + off)


@dataclass(frozen=True)
class MixResult:
    """Output of :func:`mixup_cutmix`.

    Attributes
    ----------
    images : Tensor
        Mixed images ``[B, C, H, W]``.
    targets : Tensor
        Soft targets ``float32 [B, K]`` (rows sum to 1).
    lam : float
        Weight of each image's own label; for CutMix ``1 - box area / (H * W)``.
    cutmix : bool
        Whether CutMix (True) or Mixup (False) was drawn.
    box : tuple of int or None
        CutMix box ``(top, bottom, left, right)`` (half-open), ``None`` for Mixup.
    """

    images: torch.Tensor
    targets: torch.Tensor
    lam: float
    cutmix: bool
    box: tuple[int, int, int, int] | None


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    rng = np.random.default_rng(_seed_from(generator))
    return float(rng.beta(alpha, alpha))


def mixup_cutmix(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    label_smoothing: float = 0.1,
    generator: torch.Generator | None = None,
) -> MixResult:
    """Batch Mixup / CutMix with label smoothing, as timm's ``Mixup(mode='batch')``.

    Parameters
    ----------
    images : Tensor
        Float images ``[B, C, H, W]``.
    labels : Tensor
        Integer labels ``[B]``.
    num_classes : int
        Number of classes ``K``.
    mixup_alpha : float, default 0.8
        Beta(alpha, alpha) parameter of Mixup; 0 disables Mixup.
    cutmix_alpha : float, default 1.0
        Beta(alpha, alpha) parameter of CutMix; 0 disables CutMix.
    prob : float, default 1.0
        Probability that the batch is mixed at all.
    switch_prob : float, default 0.5
        Probability of CutMix instead of Mixup when both are enabled.
    label_smoothing : float, default 0.1
        See :func:`smooth_one_hot`.
    generator : torch.Generator, optional
        Source of randomness.

    Returns
    -------
    MixResult
        Images, soft targets ``lam * t(y) + (1 - lam) * t(y.flip(0))`` with ``t`` the smoothed
        one-hot targets, ``lam``, the mode and the CutMix box.

    Notes
    -----
    Each image is mixed with its mirror in the batch (``x.flip(0)``). Mixup:
    ``x <- lam * x + (1 - lam) * x.flip(0)``. CutMix: a box of side ``int(H * sqrt(1 - lam))``
    by ``int(W * sqrt(1 - lam))`` centred at a uniform integer pixel is clipped to the image
    and filled from ``x.flip(0)``; ``lam`` is then corrected to ``1 - area / (H W)`` (timm
    ``correct_lam=True``).
    """
    x = _check_images(images)
    if not x.is_floating_point():
        x = to_float(x)
    if labels.ndim != 1 or labels.shape[0] != x.shape[0]:
        raise ValueError(f"labels must have shape [B] = [{x.shape[0]}]; got {tuple(labels.shape)}")
    prob = _check_prob("prob", prob)
    switch_prob = _check_prob("switch_prob", switch_prob)
    for name, a in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if not (math.isfinite(float(a)) and float(a) >= 0):
            raise ValueError(f"{name} must be a finite number >= 0; got {a!r}")
    use_cutmix = False
    lam_mix = 1.0
    coin = _rand((2,), generator).tolist()
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = coin[0] < switch_prob
        lam_mix = _beta(cutmix_alpha if use_cutmix else mixup_alpha, generator)
    elif mixup_alpha > 0:
        lam_mix = _beta(mixup_alpha, generator)
    elif cutmix_alpha > 0:
        use_cutmix = True
        lam_mix = _beta(cutmix_alpha, generator)
    lam = lam_mix if coin[1] < prob else 1.0
    box = None
    if lam < 1.0:
        if use_cutmix:
            _, _, height, width = x.shape
            cut = math.sqrt(1.0 - lam)
            cut_h, cut_w = int(height * cut), int(width * cut)
            cy, cx = (
                int(v)
                for v in torch.randint(
                    0, 2**31 - 1, (2,), generator=generator, device=_gen_device(generator)
                ).tolist()
            )
            cy, cx = cy % height, cx % width
            yl, yh = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height)
            xl, xh = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width)
            x = x.clone()
            x[:, :, yl:yh, xl:xh] = x.flip(0)[:, :, yl:yh, xl:xh]
            lam = 1.0 - (yh - yl) * (xh - xl) / float(height * width)
            box = (yl, yh, xl, xh)
        else:
            x = torch.lerp(x.flip(0), x, lam)  # lam * x + (1 - lam) * x.flip(0)
    t = smooth_one_hot(labels, num_classes, smoothing=label_smoothing)
    targets = t * lam + t.flip(0) * (1.0 - lam)
    return MixResult(x, targets, float(lam), bool(use_cutmix and box is not None), box)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``sum_k -targets[:, k] * log_softmax(logits)[:, k]``.

    Parameters
    ----------
    logits : Tensor
        ``[B, K]`` unnormalised scores.
    targets : Tensor
        ``[B, K]`` soft targets (rows summing to 1), or integer labels ``[B]``.

    Returns
    -------
    Tensor
        Scalar loss (computed in float32).
    """
    if targets.ndim == 1 and not targets.is_floating_point():
        return F.cross_entropy(logits.float(), targets)
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must have the same shape [B, K]; got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    # torch's cross-entropy takes class probabilities as targets (the same sum)
    return F.cross_entropy(logits.float(), targets.float())


class SoftTargetCrossEntropy(nn.Module):
    """Cross-entropy against soft targets; a thin module around
    :func:`soft_target_cross_entropy` (timm's ``SoftTargetCrossEntropy``)."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the mean soft-target cross-entropy of ``logits [B, K]``."""
        return soft_target_cross_entropy(logits, targets)


# --------------------------------------------------------------------------------------------
# RandAugment
# --------------------------------------------------------------------------------------------

RAND_AUGMENT_OPS: tuple[str, ...] = (
    "auto_contrast",
    "equalize",
    "invert",
    "rotate",
    "posterize",
    "solarize",
    "solarize_add",
    "color",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
"""The 15 operations of timm's ``rand-...-inc1`` policy (and of kornia's default policy)."""

_GRAY = (0.299, 0.587, 0.114)


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (degenerate + f * (x - degenerate)).clamp_(0.0, 1.0)


def _affine(x: torch.Tensor, mats: torch.Tensor, fill: Sequence[float]) -> torch.Tensor:
    """Warp with per-image 2x3 matrices mapping output to input pixel coordinates (origin at
    the image centre); uncovered pixels get ``fill``."""
    b, c, height, width = x.shape
    # pixel -> normalised coordinates (align_corners=False): u = 2 * p / size
    to_n = torch.tensor([2.0 / width, 2.0 / height], dtype=x.dtype, device=x.device)
    theta = mats.to(dtype=x.dtype, device=x.device).clone()
    theta[:, 0, 1] *= height / width
    theta[:, 1, 0] *= width / height
    theta[:, :, 2] = theta[:, :, 2] * to_n
    grid = F.affine_grid(theta, [b, c, height, width], align_corners=False)
    fill_t = torch.tensor(list(fill)[:c], dtype=x.dtype, device=x.device).view(1, c, 1, 1)
    # bilinear sampling is linear: sampling (x - fill) with zero padding and adding fill back
    # puts fill outside the image and blends it correctly at the border
    warped = F.grid_sample(
        x - fill_t, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return (warped + fill_t).clamp_(0.0, 1.0)


def _apply_op(
    name: str,
    x: torch.Tensor,
    mag: torch.Tensor,
    sign: torch.Tensor,
    *,
    fill: Sequence[float] = IMAGENET_MEAN,
) -> torch.Tensor:
    """Apply RandAugment op ``name`` to float images in [0, 1].

    ``mag`` is the magnitude as a fraction of the maximum (timm level / 10), ``sign`` is +-1
    per image (random negation of symmetric ops); both ``[b]`` on ``x.device``.
    """
    b = x.shape[0]
    dt, dev = x.dtype, x.device
    mag = mag.to(dtype=dt, device=dev)
    sign = sign.to(dtype=dt, device=dev)
    if name == "invert":
        return 1.0 - x
    if name == "auto_contrast":
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        span = hi - lo
        return torch.where(span > 0, (x - lo) / span.clamp_min(1e-12), x)
    if name == "equalize":
        return _equalize(x)
    if name == "posterize":
        bits = (4 - torch.floor(mag * 4)).clamp(0, 8)  # timm increasing: 4 .. 0 bits kept
        shift = (8 - bits).view(-1, 1, 1, 1)
        q = torch.round(x * 255.0)
        step = torch.pow(2.0, shift)
        return torch.floor(q / step) * step / 255.0
    if name == "solarize":
        thr = (1.0 - mag).view(-1, 1, 1, 1)  # timm increasing: threshold 256 - level * 256
        return torch.where(x >= thr, 1.0 - x, x)
    if name == "solarize_add":
        add = torch.floor(mag * 110.0).view(-1, 1, 1, 1) / 255.0
        return torch.where(x < 128.0 / 255.0, (x + add).clamp(0.0, 1.0), x)
    if name in ("color", "contrast", "brightness", "sharpness"):
        factor = 1.0 + 0.9 * mag * sign  # timm "increasing" enhance: 1 +- 0.9 * level
        if name == "color":
            deg = _gray(x).expand_as(x)
        elif name == "contrast":
            deg = _gray(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
        elif name == "brightness":
            deg = torch.zeros_like(x)
        else:
            # Pillow's SMOOTH kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 = (9 box + 4 id) / 13
            box = F.avg_pool2d(x, 3, stride=1)
            smooth = (9.0 * box + 4.0 * x[:, :, 1:-1, 1:-1]) / 13.0
            deg = x.clone()
            deg[:, :, 1:-1, 1:-1] = smooth  # PIL keeps the border pixels
        return _blend(deg, x, factor)
    mats = torch.zeros((b, 2, 3), dtype=dt, device=dev)
    mats[:, 0, 0] = 1.0
    mats[:, 1, 1] = 1.0
    height, width = x.shape[2], x.shape[3]
    if name == "rotate":
        ang = torch.deg2rad(30.0 * mag * sign)
        cos, sin = torch.cos(ang), torch.sin(ang)
        # output -> input: rotate counter-clockwise on screen by +angle (PIL convention)
        mats[:, 0, 0], mats[:, 0, 1] = cos, -sin
        mats[:, 1, 0], mats[:, 1, 1] = sin, cos
    elif name == "shear_x":
        mats[:, 0, 1] = 0.3 * mag * sign
    elif name == "shear_y":
        mats[:, 1, 0] = 0.3 * mag * sign
    elif name == "translate_x":
        mats[:, 0, 2] = 0.45 * mag * sign * width
    elif name == "translate_y":
        mats[:, 1, 2] = 0.45 * mag * sign * height
    else:
        raise ValueError(f"unknown RandAugment op {name!r}; known: {', '.join(RAND_AUGMENT_OPS)}")
    return _affine(x, mats, fill)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Per-channel histogram equalisation with Pillow's ``ImageOps.equalize`` lookup table."""
    b, c, height, width = x.shape
    q = torch.round(x * 255.0).clamp_(0, 255).long().view(b * c, -1)
    hist = torch.zeros((b * c, 256), dtype=torch.float64, device=x.device)
    hist.scatter_add_(1, q, torch.ones_like(q, dtype=torch.float64))
    idx = torch.arange(256, device=x.device).expand_as(hist)
    last = torch.where(hist > 0, idx, -1).amax(dim=1, keepdim=True)
    last_count = hist.gather(1, last.clamp_min(0))
    step = torch.floor((hist.sum(1, keepdim=True) - last_count) / 255.0)
    cum = torch.cumsum(hist, 1) - hist
    lut = torch.floor((cum + torch.floor(step / 2)) / step.clamp_min(1)).clamp_(max=255)
    lut = torch.where(step > 0, lut, idx.to(lut.dtype))
    out = lut.gather(1, q).view(b, c, height, width)
    return (out / 255.0).to(x.dtype)


def _kornia_rand_augment(
    x: torch.Tensor,
    num_ops: int,
    magnitude: float,
    generator: torch.Generator | None,
    groups: int,
) -> torch.Tensor:
    from kornia.augmentation.auto import RandAugment

    m = int(min(max(round(3 * magnitude), 1), 29))  # kornia's scale is 0..30, timm's 0..10
    aug = RandAugment(n=num_ops, m=m)
    outs = []
    seed = _seed_from(generator)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if devices:
            torch.cuda.manual_seed(seed)
        for chunk in x.chunk(max(1, min(groups, x.shape[0]))):
            outs.append(aug(chunk))
    return torch.cat(outs).clamp_(0.0, 1.0)


def rand_augment(
    images: torch.Tensor,
    *,
    num_ops: int = 2,
    magnitude: float = 9.0,
    magnitude_std: float = 0.5,
    prob: float = 0.5,
    backend: str = "torch",
    groups: int = 8,
    fill: Sequence[float] = IMAGENET_MEAN,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RandAugment on a batch of float images in [0, 1].

    Parameters
    ----------
    images : Tensor
        ``[B, 3, H, W]``, uint8 or float in [0, 1].
    num_ops : int, default 2
        Operations drawn per image (with replacement, as timm).
    magnitude : float, default 9
        timm magnitude on the 0..10 scale (``rand-m9``).
    magnitude_std : float, default 0.5
        Per-application Gaussian noise on the magnitude (``mstd0.5``), clipped to [0, 10].
    prob : float, default 0.5
        Probability that a drawn operation is applied (timm's per-op probability).
    backend : {'torch', 'kornia'}, default 'torch'
        ``'torch'``: this module's per-image implementation of timm's ``inc1`` operations
        (:data:`RAND_AUGMENT_OPS`). ``'kornia'``:
        ``kornia.augmentation.auto.RandAugment(n=num_ops, m=3 * magnitude)`` with kornia's
        default policy, run on ``groups`` chunks of the batch (kornia draws the operations
        once per call, so all images of a chunk share them); ``magnitude_std`` and ``prob``
        do not apply there.
    groups : int, default 8
        Chunks for the kornia backend.
    fill : sequence of float, default ImageNet mean
        Colour of pixels uncovered by rotate / shear / translate (torch backend).
    generator : torch.Generator, optional
        Source of randomness (also seeds kornia's draws, inside a forked RNG state).

    Returns
    -------
    Tensor
        ``float32 [B, 3, H, W]`` in [0, 1].

    Notes
    -----
    torch backend, per image and per round: op uniform over the 15 operations, applied with
    probability ``prob``, magnitude ``m = clip(magnitude + magnitude_std * N(0, 1), 0, 10) / 10``
    and a random sign for symmetric ops. Rotations (as Pillow's ``rotate``) and shears act
    about the image centre (timm shears about the top-left corner, which adds a shift).
    Ranges at ``m = 1``: rotate 30 degrees, shear 0.3,
    translate 0.45 of the side, enhance factors 1 +- 0.9, solarize threshold 1 - m, posterize
    to ``4 - floor(4 m)`` bits, solarize-add ``floor(110 m) / 255`` below 128 / 255.
    """
    x = to_float(images)
    check_choice("backend", backend, ("torch", "kornia"))
    if isinstance(num_ops, bool) or not isinstance(num_ops, int) or num_ops < 0:
        raise ValueError(f"num_ops must be an integer >= 0; got {num_ops!r}")
    if not 0.0 <= float(magnitude) <= 10.0:
        raise ValueError(f"magnitude must lie in [0, 10] (timm scale); got {magnitude!r}")
    prob = _check_prob("prob", prob)
    if x.shape[1] != 3:
        raise ValueError(f"images must have 3 (RGB) channels; got {x.shape[1]}")
    if num_ops == 0 or x.shape[0] == 0:
        return x
    if backend == "kornia":
        return _kornia_rand_augment(x, num_ops, float(magnitude), generator, groups)
    b = x.shape[0]
    out = x.clone()
    n_ops = len(RAND_AUGMENT_OPS)
    for _ in range(num_ops):
        u = _rand((b, 3), generator).cpu()
        op_idx = torch.floor(u[:, 0] * n_ops).long().clamp_(max=n_ops - 1)
        apply = u[:, 1] < prob
        sign = torch.where(u[:, 2] < 0.5, -1.0, 1.0)
        noise = torch.randn((b,), generator=generator, device=_gen_device(generator)).cpu()
        noise = noise * float(magnitude_std)
        mag = ((float(magnitude) + noise).clamp(0.0, 10.0) / 10.0).to(torch.float32)
        for k, name in enumerate(RAND_AUGMENT_OPS):
            sel = torch.nonzero((op_idx == k) & apply).flatten()
            if sel.numel() == 0:
                continue
            sel_dev = sel.to(out.device)
            out[sel_dev] = _apply_op(name, out[sel_dev], mag[sel], sign[sel], fill=fill)
    return out


# --------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentConfig:
    """Settings of :class:`TrainTransform` (defaults: the ConvNeXt ImageNet recipe).

    Attributes
    ----------
    image_size : int
        Output side in pixels.
    num_classes : int
        Number of classes of the soft targets.
    random_resized_crop : bool, default True
        Apply the batched random resized crop. Set False when the loader already cropped
        (``dataset.crops_on_load``); inputs must then already be ``image_size``.
    scale, ratio : (float, float)
        Random-resized-crop ranges.
    hflip : float, default 0.5
        Horizontal flip probability (applied even without the crop).
    rand_augment_ops, rand_augment_magnitude, rand_augment_std : int, float, float
        RandAugment settings (2, 9, 0.5); ``rand_augment_ops=0`` disables it.
    rand_augment_backend : {'torch', 'kornia'}, default 'torch'
        See :func:`rand_augment`.
    random_erasing : float, default 0.25
        Random erasing probability.
    mixup_alpha, cutmix_alpha, mix_prob, switch_prob : float
        Mixup / CutMix settings (0.8, 1.0, 1.0, 0.5); both alphas 0 disables mixing.
    label_smoothing : float, default 0.1
        Label smoothing of the soft targets.
    mean, std : tuple of float
        Normalisation statistics (ImageNet).
    interpolation : {'bilinear', 'bicubic'}, default 'bilinear'
        Interpolation of the batched crop.
    """

    image_size: int
    num_classes: int
    random_resized_crop: bool = True
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: float = 0.5
    rand_augment_ops: int = 2
    rand_augment_magnitude: float = 9.0
    rand_augment_std: float = 0.5
    rand_augment_backend: str = "torch"
    random_erasing: float = 0.25
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        for name in ("image_size", "num_classes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        _check_pair("scale", self.scale)
        _check_pair("ratio", self.ratio)
        for name in ("hflip", "random_erasing", "mix_prob", "switch_prob"):
            _check_prob(name, getattr(self, name))
        check_choice("rand_augment_backend", self.rand_augment_backend, ("torch", "kornia"))
        check_choice("interpolation", self.interpolation, ("bilinear", "bicubic"))
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1); got {self.label_smoothing!r}")
        if self.rand_augment_ops < 0 or not 0 <= self.rand_augment_magnitude <= 10:
            raise ValueError(
                "rand_augment_ops must be >= 0 and rand_augment_magnitude in [0, 10]; got "
                f"{self.rand_augment_ops!r}, {self.rand_augment_magnitude!r}"
            )
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError(
                f"mixup_alpha and cutmix_alpha must be >= 0; got {self.mixup_alpha!r}, "
                f"{self.cutmix_alpha!r}"
            )

    @classmethod
    def light(cls, image_size: int, num_classes: int, **overrides: Any) -> AugmentConfig:
        """A lighter recipe for small images / short CPU runs: crop scale (0.35, 1),
        RandAugment m5, no random erasing, Mixup 0.2 / CutMix 0 and smoothing 0.1."""
        base: dict[str, Any] = dict(
            scale=(0.35, 1.0),
            rand_augment_magnitude=5.0,
            random_erasing=0.0,
            mixup_alpha=0.2,
            cutmix_alpha=0.0,
        )
        base.update(overrides)
        return cls(image_size=image_size, num_classes=num_classes, **base)


class TrainTransform(nn.Module):
    """The batched training pipeline configured by an :class:`AugmentConfig`.

    Parameters
    ----------
    config : AugmentConfig
        The settings.
    cpu_threads : int or None, default 1
        torch intra-op threads while a batch on the CPU is transformed (restored after);
        ``None`` keeps the caller's setting. The default, one thread, is never slower than
        torch's default of one thread per core here: the transform is a chain of small
        operations, and with two threads on a busy 2-core machine each one waited on the
        other core (19 against 138 images/s, docs/benchmarks.md, "Data loading"); loader
        workers, when used, occupy the other cores anyway. The values do not depend on it.

    Notes
    -----
    ``forward(images, labels, generator=None)`` takes ``uint8`` (or float in [0, 1]) images
    ``[B, 3, H, W]`` and integer labels ``[B]`` on any device and returns normalised
    ``float32 [B, 3, S, S]`` images and ``float32 [B, K]`` soft targets (rows sum to 1) for
    :class:`SoftTargetCrossEntropy`. Steps in the order of the module docstring.
    """

    def __init__(self, config: AugmentConfig, *, cpu_threads: int | None = 1) -> None:
        super().__init__()
        if not isinstance(config, AugmentConfig):
            raise TypeError(f"config must be an AugmentConfig; got {type(config).__name__}")
        if cpu_threads is not None and (
            isinstance(cpu_threads, bool) or not isinstance(cpu_threads, int) or cpu_threads < 1
        ):
            raise ValueError(f"cpu_threads must be a positive integer or None; got {cpu_threads!r}")
        self.config = config
        self.cpu_threads = cpu_threads

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one batch; returns ``(images [B, 3, S, S], soft targets [B, K])``."""
        if self.cpu_threads is None or images.device.type != "cpu":
            return self._augment(images, labels, generator)
        with intra_op_threads(self.cpu_threads):
            return self._augment(images, labels, generator)

    def _augment(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        x = _check_images(images)
        s = cfg.image_size
        if cfg.random_resized_crop:
            x = random_resized_crop(
                x,
                s,
                scale=cfg.scale,
                ratio=cfg.ratio,
                hflip=cfg.hflip,
                mode=cfg.interpolation,
                generator=generator,
            )
        else:
            if x.shape[-2:] != (s, s):
                raise ValueError(
                    f"images must be {s} x {s} when random_resized_crop=False; got "
                    f"{tuple(x.shape[-2:])}"
                )
            owned = x.dtype == torch.uint8  # to_float makes a new tensor only for uint8
            x = to_float(x)
            idx = torch.nonzero(_rand((x.shape[0],), generator) < cfg.hflip).flatten()
            if idx.numel():
                x = x if owned else x.clone()
                idx = idx.to(x.device)
                x[idx] = x[idx].flip(-1)
        if cfg.rand_augment_ops > 0:
            x = rand_augment(
                x,
                num_ops=cfg.rand_augment_ops,
                magnitude=cfg.rand_augment_magnitude,
                magnitude_std=cfg.rand_augment_std,
                backend=cfg.rand_augment_backend,
                generator=generator,
            )
        x = normalize(x, mean=cfg.mean, std=cfg.std)
        if cfg.random_erasing > 0:
            x = random_erasing(x, p=cfg.random_erasing, generator=generator)
        labels = labels.to(x.device)
        if cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0:
            mixed = mixup_cutmix(
                x,
                labels,
                num_classes=cfg.num_classes,
                mixup_alpha=cfg.mixup_alpha,
                cutmix_alpha=cfg.cutmix_alpha,
                prob=cfg.mix_prob,
                switch_prob=cfg.switch_prob,
                label_smoothing=cfg.label_smoothing,
                generator=generator,
            )
            return mixed.images, mixed.targets
        return x, smooth_one_hot(labels, cfg.num_classes, smoothing=cfg.label_smoothing)


class EvalTransform(nn.Module):
    """Deterministic evaluation transform: resize, centre crop, normalise.

    Parameters
    ----------
    image_size : int
        Output side ``S``.
    crop_pct : float, default 0.875
        Resize the shorter side to ``floor(S / crop_pct)`` (bicubic, antialiased) before the
        centre crop.
    mean, std : tuple of float
        Normalisation statistics (ImageNet).

    Notes
    -----
    Inputs that are already ``S x S`` (the loaders of
    :mod:`scalespace_mk.training.datasets` resize and
    crop on decode) are only normalised.
    """

    def __init__(
        self,
        image_size: int,
        *,
        crop_pct: float = 0.875,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer; got {image_size!r}")
        if not 0.0 < float(crop_pct) <= 1.0:
            raise ValueError(f"crop_pct must lie in (0, 1]; got {crop_pct!r}")
        self.image_size = image_size
        self.crop_pct = float(crop_pct)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return normalised ``float32 [B, C, S, S]`` images."""
        x = to_float(images)
        s = self.image_size
        height, width = x.shape[-2:]
        if (height, width) != (s, s):
            short = int(math.floor(s / self.crop_pct))
            if min(height, width) != short:
                if height <= width:
                    new = (short, max(short, round(width * short / height)))
                else:
                    new = (max(short, round(height * short / width)), short)
                x = F.interpolate(
                    x, size=new, mode="bicubic", antialias=True, align_corners=False
                ).clamp_(0.0, 1.0)
            height, width = x.shape[-2:]
            top, left = (height - s) // 2, (width - s) // 2
            x = x[:, :, top : top + s, left : left + s]
        return normalize(x, mean=self.mean, std=self.std)
