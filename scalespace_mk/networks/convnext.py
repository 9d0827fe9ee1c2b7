"""ConvNeXt V1 and V2 in one module, with parameters named as timm names them.

The file reads top-down in timm's order: norm layers, GRN, drop path, MLP, block, stage,
head, model, :func:`checkpoint_filter_fn`, the config table, the registry and the
three-line variant constructors. Nothing here imports timm or torchvision.

Architecture (docs/method.md#networks): a 4x4 stride-4 conv stem with a channels-first LayerNorm;
four stages; each block is a depthwise 7x7 conv (padding 3, groups = channels, with bias)
-> LayerNorm -> Linear(4C) -> GELU -> [GRN, V2] -> Linear(C) -> [layer scale, V1] ->
drop path -> residual; downsampling between stages is LayerNorm + 2x2 stride-2 conv.

Parameter names follow ``timm.models.convnext`` so that timm state dicts load unchanged:
``stem.0``/``stem.1``, ``stages.N.downsample.0``/``.1``, ``stages.N.blocks.M.conv_dw``,
``.norm``, ``.mlp.fc1``, ``.mlp.grn.weight``/``.bias`` (V2, shape ``[4C]``), ``.mlp.fc2``,
``.gamma`` (V1 layer scale, shape ``[C]``), ``head.norm`` and ``head.fc``. Official
checkpoints (facebookresearch/ConvNeXt and ConvNeXt-V2: ``downsample_layers``,
``stages.i.j.dwconv``, ``pwconv1``, ``grn.gamma`` of shape ``[1, 1, 1, 4C]``, ``norm``,
``head``) are mapped by :func:`checkpoint_filter_fn`; :func:`to_official_state_dict` is
its inverse.

The depthwise convolution of every block is built by a factory chosen with ``dwconv``:
``"learned"`` (a plain ``nn.Conv2d``), one of the analytic kinds of
:func:`scalespace_mk.networks.layers.make_dwconv`
(``"masterkey"``, ``"idealized"``, ``"learnable"``),
or any callable ``factory(channels, kernel_size) -> nn.Module``. The module is always
stored at ``conv_dw``; :func:`depthwise_convs` lists them all.

Examples
--------
>>> import torch
>>> from scalespace_mk.networks import create_model
>>> model = create_model("convnextv2_test", num_classes=10).eval()
>>> model(torch.zeros(2, 3, 64, 64)).shape
torch.Size([2, 10])
>>> with torch.device("meta"):
...     n = sum(p.numel() for p in create_model("convnextv2_atto").parameters())
>>> n
3708400
"""

from __future__ import annotations

import numbers
import os
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from scalespace_mk._checks import check_choice
from scalespace_mk.networks.layers import DWCONV_KINDS as _LAYER_KINDS

__all__ = [
    "DWCONV_KINDS",
    "ClassifierHead",
    "ConvNeXt",
    "ConvNeXtBlock",
    "ConvNeXtStage",
    "DropPath",
    "GlobalResponseNorm",
    "LayerNorm2d",
    "LoadResult",
    "Mlp",
    "checkpoint_filter_fn",
    "convnext_base",
    "convnext_large",
    "convnext_small",
    "convnext_test",
    "convnext_tiny",
    "convnext_xlarge",
    "convnextv2_atto",
    "convnextv2_base",
    "convnextv2_femto",
    "convnextv2_huge",
    "convnextv2_large",
    "convnextv2_nano",
    "convnextv2_pico",
    "convnextv2_test",
    "convnextv2_tiny",
    "create_model",
    "depthwise_convs",
    "drop_path",
    "layer_id",
    "layer_id_single",
    "list_models",
    "load_checkpoint",
    "model_config",
    "to_official_state_dict",
]

#: Accepted string values of the ``dwconv`` argument (defined once, in ``layers``).
#: ``"learned"`` is a plain trainable ``nn.Conv2d``; the others are resolved by
#: :func:`scalespace_mk.networks.layers.make_dwconv` (``"njet"``: learnable N-jets,
#: ``dwconv_kwargs={"order": N}``).
DWCONV_KINDS: tuple[str, ...] = _LAYER_KINDS

DWConvSpec = str | Callable[[int, int], nn.Module]


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of an ``[N, C, H, W]`` tensor (channels first).

    Same parameters (``weight``, ``bias`` of shape ``[C]``) and the same result as the
    official ``LayerNorm(..., data_format="channels_first")`` and timm's ``LayerNorm2d``.

    Parameters
    ----------
    num_channels : int
        Number of channels C.
    eps : float, optional
        Added to the variance, 1e-6 as in ConvNeXt.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` of shape ``[N, C, H, W]`` over C; returns the same shape."""
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GlobalResponseNorm(nn.Module):
    """Global Response Normalization of ConvNeXt V2, with timm's parameter names.

    ``y = x + bias + weight * x * N(x)`` where ``G(x)`` is the l2 norm of each channel
    over the spatial axes and ``N(x) = G(x) / (mean_C G(x) + eps)``. The official layer
    names ``weight`` ``gamma`` and ``bias`` ``beta`` and stores them as ``[1, 1, 1, C]``;
    here they have shape ``[C]`` as in timm.

    Parameters
    ----------
    dim : int
        Number of channels C.
    eps : float, optional
        Added to the mean norm, 1e-6 as in the official code.
    channels_last : bool, optional
        True for ``[N, H, W, C]`` input (the Linear MLP), False for ``[N, C, H, W]``
        (the 1x1-conv MLP).
    """

    def __init__(self, dim: int, eps: float = 1e-6, channels_last: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.channels_last = channels_last
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply GRN to a 4-D tensor in the layout chosen at construction."""
        if self.channels_last:
            spatial, channel, shape = (1, 2), -1, (1, 1, 1, -1)
        else:
            spatial, channel, shape = (2, 3), 1, (1, -1, 1, 1)
        x_g = x.norm(p=2, dim=spatial, keepdim=True)
        x_n = x_g / (x_g.mean(dim=channel, keepdim=True) + self.eps)
        return x + torch.addcmul(self.bias.view(shape), self.weight.view(shape), x * x_n)


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``drop_prob``.

    Parameters
    ----------
    x : torch.Tensor
        Branch output, shape ``[N, ...]``.
    drop_prob : float, optional
        Probability in [0, 1) of dropping each sample's branch.
    training : bool, optional
        Identity unless True.

    Returns
    -------
    torch.Tensor
        Same shape as ``x``: each sample is either 0 or ``x / (1 - drop_prob)``, so the
        expectation is ``x`` (timm's ``scale_by_keep=True``).
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0:
        mask.div_(keep_prob)
    return x * mask


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (identity in eval mode).

    Parameters
    ----------
    drop_prob : float, optional
        Probability in [0, 1) of dropping a sample's residual branch in training.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= float(drop_prob) < 1.0:
            raise ValueError(f"drop_prob must lie in [0, 1); got {drop_prob!r}")
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply :func:`drop_path` with this module's probability and training flag."""
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class Mlp(nn.Module):
    """Pointwise MLP of a ConvNeXt block: ``fc1`` -> GELU -> [``grn``] -> ``fc2``.

    Parameters
    ----------
    dim : int
        Input and output channels C.
    hidden : int
        Hidden channels (4C in ConvNeXt).
    use_grn : bool, optional
        Insert :class:`GlobalResponseNorm` after the activation (ConvNeXt V2).
    use_conv : bool, optional
        Use 1x1 ``nn.Conv2d`` on ``[N, C, H, W]`` instead of ``nn.Linear`` on
        ``[N, H, W, C]`` (timm's ``conv_mlp``; weights ``[out, in, 1, 1]``).
    """

    def __init__(self, dim: int, hidden: int, *, use_grn: bool = False, use_conv: bool = False):
        super().__init__()
        if use_conv:
            self.fc1: nn.Module = nn.Conv2d(dim, hidden, kernel_size=1)
            self.fc2: nn.Module = nn.Conv2d(hidden, dim, kernel_size=1)
        else:
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()
        self.grn: nn.Module = (
            GlobalResponseNorm(hidden, channels_last=not use_conv) if use_grn else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP; the layout is NHWC for Linear and NCHW for the conv variant."""
        return self.fc2(self.grn(self.act(self.fc1(x))))


def _make_dwconv(
    dwconv: DWConvSpec, channels: int, kernel_size: int, dwconv_kwargs: Mapping[str, Any] | None
) -> tuple[nn.Module, str]:
    """Build one depthwise conv module and return it with a label of its kind."""
    if isinstance(dwconv, str):
        check_choice("dwconv", dwconv, DWCONV_KINDS)
        if dwconv == "learned":
            if dwconv_kwargs:
                raise ValueError(
                    "dwconv_kwargs are only used by the analytic dwconv kinds "
                    f"{DWCONV_KINDS[1:]}; got {dict(dwconv_kwargs)!r} with dwconv='learned'"
                )
            conv = nn.Conv2d(
                channels, channels, kernel_size, padding=kernel_size // 2, groups=channels
            )
            return conv, "learned"
        try:
            from scalespace_mk.networks.layers import make_dwconv
        except ImportError as exc:
            raise ImportError(
                f"dwconv={dwconv!r} needs scalespace_mk.networks.layers.make_dwconv, which could "
                "not be "
                f"imported ({exc}); use dwconv='learned' or pass a callable "
                "factory(channels, kernel_size) -> nn.Module"
            ) from exc
        module = make_dwconv(dwconv, channels, kernel_size=kernel_size, **dict(dwconv_kwargs or {}))
        kind = dwconv
    elif callable(dwconv):
        if dwconv_kwargs:
            raise ValueError(
                "dwconv_kwargs are not passed to a callable dwconv factory; bind them with "
                f"functools.partial instead; got {dict(dwconv_kwargs)!r}"
            )
        module = dwconv(channels, kernel_size)
        kind = "custom"
    else:
        raise TypeError(
            f"dwconv must be one of {', '.join(repr(k) for k in DWCONV_KINDS)} or a callable "
            f"factory(channels, kernel_size) -> nn.Module; got {type(dwconv).__name__}"
        )
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"the dwconv factory must return an nn.Module; got {type(module).__name__} "
            f"for channels={channels}, kernel_size={kernel_size}"
        )
    return module, kind


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (V1 with layer scale, V2 with GRN).

    ``x + drop_path(gamma * mlp(norm(conv_dw(x))))``, with the MLP as :class:`Mlp`.

    Parameters
    ----------
    dim : int
        Channels C (input = output).
    kernel_size : int, optional
        Depthwise kernel size (7 in ConvNeXt).
    mlp_ratio : float, optional
        Hidden width of the MLP as a multiple of C.
    conv_mlp : bool, optional
        1x1 convs and a channels-first norm instead of Linear layers (timm's atto..nano).
    use_grn : bool, optional
        ConvNeXt V2 Global Response Normalization in the MLP.
    ls_init_value : float or None, optional
        Initial layer-scale value (V1: 1e-6); None disables layer scale (V2).
    drop_path : float, optional
        Stochastic-depth probability of this block.
    dwconv : str or callable, optional
        Depthwise conv factory, see :class:`ConvNeXt`.
    dwconv_kwargs : mapping, optional
        Extra keyword arguments for :func:`scalespace_mk.networks.layers.make_dwconv`.
    """

    def __init__(
        self,
        dim: int,
        *,
        kernel_size: int = 7,
        mlp_ratio: float = 4.0,
        conv_mlp: bool = False,
        use_grn: bool = False,
        ls_init_value: float | None = 1e-6,
        drop_path: float = 0.0,
        dwconv: DWConvSpec = "learned",
        dwconv_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.use_conv_mlp = conv_mlp
        self.conv_dw, self.dwconv_kind = _make_dwconv(dwconv, dim, kernel_size, dwconv_kwargs)
        self.norm: nn.Module = LayerNorm2d(dim) if conv_mlp else nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), use_grn=use_grn, use_conv=conv_mlp)
        self.gamma = (
            nn.Parameter(ls_init_value * torch.ones(dim)) if ls_init_value is not None else None
        )
        self.drop_path: nn.Module = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``[N, C, H, W]``; returns the same shape."""
        shortcut = x
        x = self.conv_dw(x)
        if self.use_conv_mlp:
            x = self.mlp(self.norm(x))
        else:
            x = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        if self.gamma is not None:
            x = x * self.gamma.reshape(1, -1, 1, 1)
        return self.drop_path(x) + shortcut


class ConvNeXtStage(nn.Module):
    """One resolution stage: optional downsampling then ``depth`` blocks.

    Parameters
    ----------
    in_chs, out_chs : int
        Input and output channels.
    depth : int
        Number of blocks.
    stride : int, optional
        2 for a LayerNorm + 2x2 stride-2 conv downsampling (stages 1-3), 1 for none.
    drop_path_rates : list of float, optional
        One stochastic-depth probability per block.
    **block_kwargs
        Passed to :class:`ConvNeXtBlock`.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        depth: int,
        stride: int = 2,
        drop_path_rates: list[float] | None = None,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        if in_chs != out_chs or stride > 1:
            self.downsample: nn.Module = nn.Sequential(
                LayerNorm2d(in_chs), nn.Conv2d(in_chs, out_chs, kernel_size=stride, stride=stride)
            )
        else:
            self.downsample = nn.Identity()
        rates = drop_path_rates or [0.0] * depth
        self.blocks = nn.Sequential(
            *[ConvNeXtBlock(out_chs, drop_path=rates[i], **block_kwargs) for i in range(depth)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Downsample then apply the blocks (with gradient checkpointing if enabled)."""
        x = self.downsample(x)
        if self.grad_checkpointing and torch.is_grad_enabled():
            for block in self.blocks:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return self.blocks(x)


class ClassifierHead(nn.Module):
    """Pool -> LayerNorm -> dropout -> Linear, the ConvNeXt head (timm's names).

    Parameters
    ----------
    in_features : int
        Channels of the last stage.
    num_classes : int
        Output classes; 0 gives an identity ``fc`` (features only).
    drop_rate : float, optional
        Dropout before ``fc``.
    """

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.norm = LayerNorm2d(in_features)
        self.flatten = nn.Flatten(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = (
            nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()
        )

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Map ``[N, C, H, W]`` to logits ``[N, num_classes]`` (or ``[N, C]`` if pre_logits)."""
        x = self.flatten(self.norm(self.global_pool(x)))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _check_rate(name: str, value: Any) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1); got {value!r}") from None
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1); got {value!r}")
    return rate


class ConvNeXt(nn.Module):
    """ConvNeXt V1 / V2 image classifier with timm parameter names.

    Parameters
    ----------
    in_chans : int, optional
        Input image channels.
    num_classes : int, optional
        Classes of the head; 0 leaves the head without ``fc`` (features only).
    depths : sequence of 4 int, optional
        Blocks per stage.
    dims : sequence of 4 int, optional
        Channels per stage.
    kernel_size : int, optional
        Depthwise kernel size (odd; 7 in ConvNeXt).
    ls_init_value : float or None, optional
        Layer-scale init (V1: 1e-6); None for V2.
    use_grn : bool, optional
        Global Response Normalization in every MLP (V2).
    conv_mlp : bool, optional
        1x1-conv MLPs with channels-first norms (timm uses this for V2 atto..nano); the
        weights hold the same numbers in shape ``[out, in, 1, 1]``.
    head_init_scale : float, optional
        Factor applied to the initial head weight and bias.
    drop_rate : float, optional
        Dropout before the classifier.
    drop_path_rate : float, optional
        Stochastic depth, rising linearly from 0 at the first block to this value at the
        last one.
    dwconv : str or callable, optional
        Depthwise conv of every block: ``"learned"`` (``nn.Conv2d(C, C, k, padding=k//2,
        groups=C, bias=True)``), ``"masterkey"``, ``"idealized"`` or ``"learnable"`` (built
        by :func:`scalespace_mk.networks.layers.make_dwconv`), or a callable ``factory(channels,
        kernel_size) -> nn.Module``. The module is stored at ``conv_dw`` of each block.
    dwconv_kwargs : mapping, optional
        Extra keyword arguments for :func:`scalespace_mk.networks.layers.make_dwconv`.

    Notes
    -----
    Weights are initialised as in timm and the official code: truncated normal (std 0.02,
    cut at +-2) for conv and linear weights, zero biases; depthwise modules built by an
    analytic or custom factory are left as the factory made them. Stored depthwise
    weights are cross-correlation kernels ``h[r, c]`` used with no flip (PyTorch
    ``conv2d``). ``forward`` accepts ``torch.channels_last`` input and models.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: tuple[int, ...] | list[int] = (3, 3, 9, 3),
        dims: tuple[int, ...] | list[int] = (96, 192, 384, 768),
        *,
        kernel_size: int = 7,
        ls_init_value: float | None = 1e-6,
        use_grn: bool = False,
        conv_mlp: bool = False,
        head_init_scale: float = 1.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        dwconv: DWConvSpec = "learned",
        dwconv_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        in_chans = _check_int("in_chans", in_chans, 1)
        num_classes = _check_int("num_classes", num_classes, 0)
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(
                f"depths and dims must each hold 4 stage values; got depths={list(depths)}, "
                f"dims={list(dims)}"
            )
        depths = [_check_int(f"depths[{i}]", d, 1) for i, d in enumerate(depths)]
        dims = [_check_int(f"dims[{i}]", d, 1) for i, d in enumerate(dims)]
        if (
            isinstance(kernel_size, bool)
            or not isinstance(kernel_size, int)
            or (kernel_size < 1 or kernel_size % 2 == 0)
        ):
            raise ValueError(f"kernel_size must be a positive odd integer; got {kernel_size!r}")
        drop_rate = _check_rate("drop_rate", drop_rate)
        drop_path_rate = _check_rate("drop_path_rate", drop_path_rate)

        self.num_classes = num_classes
        self.depths = tuple(int(d) for d in depths)
        self.dims = tuple(int(d) for d in dims)
        self.num_features = self.dims[-1]
        self.drop_rate = drop_rate

        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0])
        )
        total = sum(self.depths)
        rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        stages = []
        prev, start = dims[0], 0
        for i in range(4):
            stages.append(
                ConvNeXtStage(
                    prev,
                    dims[i],
                    depth=depths[i],
                    stride=1 if i == 0 else 2,
                    drop_path_rates=rates[start : start + depths[i]],
                    kernel_size=kernel_size,
                    conv_mlp=conv_mlp,
                    use_grn=use_grn,
                    ls_init_value=ls_init_value,
                    dwconv=dwconv,
                    dwconv_kwargs=dwconv_kwargs,
                )
            )
            prev, start = dims[i], start + depths[i]
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate=drop_rate)

        external = {
            id(m)
            for block in self.modules()
            if isinstance(block, ConvNeXtBlock) and block.dwconv_kind != "learned"
            for m in block.conv_dw.modules()
        }
        for name, module in self.named_modules():
            if id(module) not in external:
                _init_weights(module, name, head_init_scale)

    # -- timm-style helpers --------------------------------------------------------------

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Regex groups of parameter names, as timm's ``ConvNeXt.group_matcher``."""
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None)],
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory."""
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        """Return the final linear layer ``head.fc``."""
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``head.fc`` by a fresh layer with ``num_classes`` outputs (0: identity).

        The new weight is truncated normal with std 0.02 and the bias zero; ``head.norm``
        is kept.
        """
        num_classes = _check_int("num_classes", num_classes, 0)
        self.num_classes = num_classes
        ref = self.head.norm.weight
        if num_classes > 0:
            fc = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            _init_weights(fc, "head.fc", 1.0)
            self.head.fc = fc
        else:
            self.head.fc = nn.Identity()

    def no_weight_decay(self) -> set[str]:
        """Names of parameters to exclude from weight decay.

        Returns
        -------
        set of str
            Every 1-D parameter (norm weights and biases, biases, layer scale ``gamma``,
            GRN ``weight``/``bias``, per-channel scale parameters of analytic depthwise
            modules) and every parameter whose name ends in ``.bias``. This matches the
            official rule ``len(param.shape) == 1 or name.endswith(".bias")``.
        """
        return {
            name
            for name, p in self.named_parameters()
            if p.ndim <= 1 or name.endswith(".bias") or ".grn." in name
        }

    # -- forward -----------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages: ``[N, in_chans, H, W]`` -> ``[N, dims[-1], H/32, W/32]``."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Head: ``[N, C, h, w]`` -> logits ``[N, num_classes]`` (or pooled ``[N, C]``)."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify images ``[N, in_chans, H, W]`` (H, W multiples of 32); returns logits."""
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module, name: str, head_init_scale: float) -> None:
    """timm/official init: trunc-normal(std .02) weights, zero biases, scaled head."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
        if name.startswith("head.") and head_init_scale != 1.0:
            with torch.no_grad():
                module.weight.mul_(head_init_scale)
                if module.bias is not None:
                    module.bias.mul_(head_init_scale)


def depthwise_convs(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """List the depthwise conv module of every block, in network order.

    Parameters
    ----------
    model : nn.Module
        A :class:`ConvNeXt` (or any module containing :class:`ConvNeXtBlock`).

    Returns
    -------
    list of (str, nn.Module)
        ``(name, module)`` pairs, e.g. ``("stages.0.blocks.0.conv_dw", Conv2d(...))``; the
        name plus ``".weight"`` is the state-dict key of a learned conv.
    """
    return [
        (f"{name}.conv_dw" if name else "conv_dw", module.conv_dw)
        for name, module in model.named_modules()
        if isinstance(module, ConvNeXtBlock)
    ]


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------

_WRAPPER_KEYS = ("model", "state_dict", "model_ema")


def _unwrap(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    """Strip ``model`` / ``state_dict`` / ``model_ema`` wrappers and a DDP ``module.`` prefix."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors; got {type(state_dict)}")
    while True:
        for key in _WRAPPER_KEYS:
            if isinstance(state_dict.get(key), Mapping):
                state_dict = state_dict[key]
                break
        else:
            break
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    return state_dict


def _is_official(state_dict: Mapping[str, Any]) -> bool:
    """Sentinel: the official layouts name the stem ``downsample_layers.0``."""
    return any(
        k.startswith("downsample_layers.") or re.match(r"stages\.\d+\.\d+\.", k) for k in state_dict
    )


def _official_key(key: str) -> str:
    """Rename one official key to timm's name (timm's ``checkpoint_filter_fn`` rules)."""
    key = key.replace("downsample_layers.0.", "stem.")
    key = re.sub(r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", key)
    key = re.sub(r"^downsample_layers\.(\d+)\.(\d+)\.", r"stages.\1.downsample.\2.", key)
    key = key.replace(".dwconv.", ".conv_dw.")
    key = key.replace(".pwconv", ".mlp.fc")
    key = key.replace(".grn.beta", ".mlp.grn.bias").replace(".grn.gamma", ".mlp.grn.weight")
    if key.startswith("head."):
        key = "head.fc." + key[len("head.") :]
    elif key.startswith("norm."):
        key = "head.norm." + key[len("norm.") :]
    return key


def _fit_shape(value: Any, shape: torch.Size) -> Any:
    """Reshape ``value`` to ``shape`` when they differ only by singleton axes."""
    if not isinstance(value, torch.Tensor) or value.shape == shape:
        return value
    squeezed = [s for s in value.shape if s != 1]
    if value.numel() == shape.numel() and squeezed == [s for s in shape if s != 1]:
        return value.reshape(shape)
    return value


def checkpoint_filter_fn(
    state_dict: Mapping[str, Any], model: nn.Module | None = None
) -> dict[str, Any]:
    """Map an official or timm ConvNeXt state dict to this module's (timm's) names.

    Parameters
    ----------
    state_dict : mapping
        A state dict, possibly wrapped in ``{"model": ...}``, ``{"state_dict": ...}`` or
        ``{"model_ema": ...}`` (tried in that order), possibly with DDP's ``module.``
        prefix on every key.
    model : nn.Module, optional
        Target model; when given, tensors whose shape differs from the model's only by
        singleton axes are reshaped to it (official GRN ``[1, 1, 1, C]`` -> ``[C]``, Linear
        ``[out, in]`` <-> 1x1 conv ``[out, in, 1, 1]``).

    Returns
    -------
    dict
        A new dict with timm names. A dict in the official layout (recognised by a
        ``downsample_layers.*`` or ``stages.i.j.*`` key) is renamed as timm does:
        ``downsample_layers.0`` -> ``stem``, ``downsample_layers.i`` ->
        ``stages.i.downsample``, ``stages.i.j`` -> ``stages.i.blocks.j``, ``dwconv`` ->
        ``conv_dw``, ``pwconv1/2`` -> ``mlp.fc1/2``, ``grn.gamma/beta`` ->
        ``mlp.grn.weight/bias`` (reshaped to ``[C]``), ``norm`` -> ``head.norm``, ``head``
        -> ``head.fc``. A timm-layout dict keeps its names and values.
    """
    state_dict = _unwrap(state_dict)
    if _is_official(state_dict):
        out = {}
        for key, value in state_dict.items():
            new = _official_key(key)
            if ".mlp.grn." in new and isinstance(value, torch.Tensor):
                value = value.reshape(value.shape[-1])
            out[new] = value
    else:
        out = dict(state_dict)
    if model is not None:
        target = model.state_dict()
        out = {k: (_fit_shape(v, target[k].shape) if k in target else v) for k, v in out.items()}
    return out


def to_official_state_dict(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`checkpoint_filter_fn`: timm names -> the official layout.

    Parameters
    ----------
    state_dict : mapping
        State dict of a :class:`ConvNeXt` (timm names) with learned depthwise convs.

    Returns
    -------
    dict
        Keys and shapes of facebookresearch/ConvNeXt(-V2): ``downsample_layers.*``,
        ``stages.i.j.dwconv``, ``pwconv1/2`` (Linear, 2-D), ``grn.gamma/beta`` of shape
        ``[1, 1, 1, C]``, ``gamma``, ``norm.*``, ``head.*``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in _unwrap(state_dict).items():
        new = key
        if new.startswith("stem."):
            new = "downsample_layers.0." + new[len("stem.") :]
        new = re.sub(r"^stages\.(\d+)\.downsample\.(\d+)\.", r"downsample_layers.\1.\2.", new)
        new = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", new)
        new = new.replace(".conv_dw.", ".dwconv.").replace(".mlp.fc", ".pwconv")
        new = new.replace(".mlp.grn.weight", ".grn.gamma").replace(".mlp.grn.bias", ".grn.beta")
        if new.startswith("head.fc."):
            new = "head." + new[len("head.fc.") :]
        elif new.startswith("head.norm."):
            new = "norm." + new[len("head.norm.") :]
        if ".grn." in new:
            value = value.reshape(1, 1, 1, -1)
        elif ".pwconv" in new and value.ndim == 4:
            value = value.reshape(value.shape[0], value.shape[1])
        out[new] = value
    return out


class LoadResult(NamedTuple):
    """Keys reported by :func:`load_checkpoint`.

    Attributes
    ----------
    missing_keys : list of str
        Model keys absent from the checkpoint (left unchanged).
    unexpected_keys : list of str
        Checkpoint keys the model does not have (ignored), including non-tensor entries.
    mismatched_keys : list of str
        Keys present in both with incompatible shapes, as ``"key: checkpoint [..] vs
        model [..]"`` (not loaded).
    """

    missing_keys: list[str]
    unexpected_keys: list[str]
    mismatched_keys: list[str]


_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")


def _read_state_dict(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    if not path.endswith(_TORCH_SUFFIXES):
        raise ValueError(
            "path_or_state_dict must name a .safetensors file or a torch file ending in "
            f"{', '.join(_TORCH_SUFFIXES)}; got {path!r}"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"refusing to load {path!r}: it holds pickled objects other than tensors and "
            "containers, and untrusted pickles are never unpickled (torch.load "
            "weights_only=True). Training checkpoints often carry e.g. an argparse.Namespace; "
            "extract the 'model' state dict once in a trusted environment, or allow that "
            "class with torch.serialization.add_safe_globals. Reason: "
            f"{str(exc).splitlines()[0]}"
        ) from exc


def load_checkpoint(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    *,
    strict: bool = True,
) -> LoadResult:
    """Load official or timm ConvNeXt weights into ``model`` and report what did not fit.

    Parameters
    ----------
    model : nn.Module
        Target :class:`ConvNeXt`.
    path_or_state_dict : str, path or mapping
        A ``.safetensors`` file, a torch file (``.pt``, ``.pth``, ``.bin``, ``.ckpt``,
        ``.tar``; read with ``torch.load(weights_only=True, map_location="cpu")``), or an
        in-memory state dict. Wrappers and official names are handled by
        :func:`checkpoint_filter_fn`.
    strict : bool, optional
        If True (default), raise when any key is missing, unexpected or of the wrong shape,
        before anything is loaded. If False, load what fits, warn, and return the rest.

    Returns
    -------
    LoadResult
        ``(missing_keys, unexpected_keys, mismatched_keys)``, all empty after a strict load.

    Raises
    ------
    ValueError
        With ``strict=True`` when keys do not match (the message lists them), or when a
        file holds non-tensor pickled objects.
    """
    if isinstance(path_or_state_dict, str | os.PathLike):
        raw = _read_state_dict(path_or_state_dict)
    elif isinstance(path_or_state_dict, Mapping):
        raw = path_or_state_dict
    else:
        raise TypeError(
            "path_or_state_dict must be a file path or a mapping of names to tensors; got "
            f"{type(path_or_state_dict).__name__}"
        )
    state_dict = checkpoint_filter_fn(raw, model)
    target = model.state_dict()
    unexpected = sorted(
        k for k, v in state_dict.items() if k not in target or not isinstance(v, torch.Tensor)
    )
    missing = sorted(k for k in target if k not in state_dict)
    mismatched = sorted(
        f"{k}: checkpoint {list(v.shape)} vs model {list(target[k].shape)}"
        for k, v in state_dict.items()
        if k in target and isinstance(v, torch.Tensor) and v.shape != target[k].shape
    )
    result = LoadResult(missing, unexpected, mismatched)
    if any(result):
        lines = [
            f"{label} ({len(keys)}): {', '.join(keys)}"
            for label, keys in zip(
                ("missing keys", "unexpected keys", "shape mismatches"), result, strict=True
            )
            if keys
        ]
        message = "checkpoint does not match the model; " + "; ".join(lines)
        if strict:
            raise ValueError(message + " (pass strict=False to load the matching part)")
        warnings.warn(message, UserWarning, stacklevel=2)
    skip = set(unexpected) | {m.split(":")[0] for m in mismatched}
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in skip}, strict=False)
    return result


# --------------------------------------------------------------------------------------
# Layer ids for layer-wise learning-rate decay
# --------------------------------------------------------------------------------------


def _timm_name(name: str) -> str:
    if name.startswith("module."):
        name = name[len("module.") :]
    if name.startswith("downsample_layers.") or re.match(r"stages\.\d+\.\d+\.", name):
        name = _official_key(name)
    return name


def layer_id(name: str, num_layers: int = 12) -> int:
    """Layer id of a parameter for "group" layer decay (official ``get_num_layer_for_convnext``).

    The official rule divides a [3, 3, 27, 3] network into 12 groups of three blocks.

    Parameters
    ----------
    name : str
        Parameter name, timm (``stages.2.blocks.4.mlp.fc1.weight``) or official
        (``stages.2.4.pwconv1.weight``) layout.
    num_layers : int, optional
        Number of groups (12 in the official code); ids run from 0 to ``num_layers + 1``.

    Returns
    -------
    int
        0 for the stem; ``i + 1`` for stage ``i`` in {0, 1} and the downsampling of stage
        ``i`` in {1, 2}; ``3 + j // 3`` for block ``j`` of stage 2; ``num_layers`` for
        stage 3 and its downsampling; ``num_layers + 1`` for the head and anything else.
        With the official scale list ``decay ** (num_layers + 1 - id)`` the head trains at
        the full rate.
    """
    _check_int("num_layers", num_layers, 1)
    name = _timm_name(name)
    if name.startswith("stem."):
        return 0
    match = re.match(r"stages\.(\d+)\.(downsample|blocks)\.(\d+)", name)
    if match is None:
        return num_layers + 1
    stage, part, index = int(match[1]), match[2], int(match[3])
    if stage == 3:
        return num_layers
    if part == "downsample" or stage < 2:
        return stage + 1
    return 3 + index // 3


def layer_id_single(name: str, depths: tuple[int, ...] | list[int]) -> int:
    """Layer id of a parameter for "single" layer decay (ConvNeXt-V2 fine-tuning default).

    Official ``get_num_layer_for_convnext_single``: every block gets its own id.

    Parameters
    ----------
    name : str
        Parameter name, timm or official layout.
    depths : sequence of 4 int
        Blocks per stage of the model.

    Returns
    -------
    int
        ``sum(depths[:i]) + 1`` for the downsampling of stage ``i`` (the stem is stage 0),
        ``sum(depths[:i]) + j + 1`` for block ``j`` of stage ``i`` and ``sum(depths) + 1``
        for the head. The official code uses ``num_layers = sum(depths)``.
    """
    if len(depths) != 4:
        raise ValueError(f"depths must hold 4 stage depths; got {list(depths)}")
    name = _timm_name(name)
    if name.startswith("stem."):
        return 1
    match = re.match(r"stages\.(\d+)\.(downsample|blocks)\.(\d+)", name)
    if match is None:
        return sum(depths) + 1
    stage, part, index = int(match[1]), match[2], int(match[3])
    offset = sum(depths[:stage]) + 1
    return offset if part == "downsample" else offset + index


# --------------------------------------------------------------------------------------
# Configs, registry and variants
# --------------------------------------------------------------------------------------

_V1 = dict(ls_init_value=1e-6, use_grn=False)
_V2 = dict(ls_init_value=None, use_grn=True)

#: name -> constructor arguments; V2 atto..nano use 1x1-conv MLPs as in timm.
_MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "convnext_tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), **_V1),
    "convnext_small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768), **_V1),
    "convnext_base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024), **_V1),
    "convnext_large": dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536), **_V1),
    "convnext_xlarge": dict(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048), **_V1),
    # zepto (< atto): the small-image experiment of experiments/masterkey_real.py
    "convnextv2_zepto": dict(depths=(2, 2, 2, 2), dims=(32, 64, 128, 256), conv_mlp=True, **_V2),
    "convnextv2_atto": dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), conv_mlp=True, **_V2),
    "convnextv2_femto": dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384), conv_mlp=True, **_V2),
    "convnextv2_pico": dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512), conv_mlp=True, **_V2),
    "convnextv2_nano": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), conv_mlp=True, **_V2),
    "convnextv2_tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), **_V2),
    "convnextv2_base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024), **_V2),
    "convnextv2_large": dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536), **_V2),
    "convnextv2_huge": dict(depths=(3, 3, 27, 3), dims=(352, 704, 1408, 2816), **_V2),
    # tiny variants for CI: one block per stage, a few channels
    "convnext_test": dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), **_V1),
    "convnextv2_test": dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), **_V2),
}


def list_models() -> list[str]:
    """Return the registered model names, sorted."""
    return sorted(_MODEL_CONFIGS)


def model_config(name: str) -> dict[str, Any]:
    """Return a copy of the constructor arguments registered under ``name``."""
    check_choice("name", name, list_models())
    return dict(_MODEL_CONFIGS[name])


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    drop_path_rate: float = 0.0,
    dwconv: DWConvSpec = "learned",
    in_chans: int = 3,
    **kw: Any,
) -> ConvNeXt:
    """Build a registered ConvNeXt variant.

    Parameters
    ----------
    name : str
        One of :func:`list_models`, e.g. ``"convnextv2_atto"`` or ``"convnext_tiny"``.
    num_classes : int, optional
        Classifier outputs (0: features only).
    drop_path_rate : float, optional
        Final stochastic-depth probability, in [0, 1).
    dwconv : str or callable, optional
        Depthwise conv factory (see :class:`ConvNeXt`).
    in_chans : int, optional
        Input image channels.
    **kw
        Other :class:`ConvNeXt` arguments; they override the registered config
        (e.g. ``conv_mlp=False``, ``dwconv_kwargs={...}``, ``head_init_scale=0.001``).

    Returns
    -------
    ConvNeXt
        A freshly initialised model on the current default device (use
        ``with torch.device("meta"):`` to count parameters without allocating).
    """
    from scalespace_mk.limits import check_count

    check_count("num_classes", num_classes)  # -1 or 10**9 refused before allocation
    config = model_config(name)
    config.update(kw)
    return ConvNeXt(
        in_chans=in_chans,
        num_classes=num_classes,
        drop_path_rate=drop_path_rate,
        dwconv=dwconv,
        **config,
    )


def convnext_tiny(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt V1 tiny, depths (3, 3, 9, 3), dims 96..768: 28,589,128 parameters."""
    return create_model("convnext_tiny", **kwargs)


def convnext_small(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt V1 small, depths (3, 3, 27, 3), dims 96..768: 50,223,688 parameters."""
    return create_model("convnext_small", **kwargs)


def convnext_base(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt V1 base, depths (3, 3, 27, 3), dims 128..1024: 88,591,464 parameters."""
    return create_model("convnext_base", **kwargs)


def convnext_large(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt V1 large, depths (3, 3, 27, 3), dims 192..1536: 197,767,336 parameters."""
    return create_model("convnext_large", **kwargs)


def convnext_xlarge(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt V1 xlarge, depths (3, 3, 27, 3), dims 256..2048: 350,196,968 parameters."""
    return create_model("convnext_xlarge", **kwargs)


def convnextv2_atto(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt V2 atto, depths (2, 2, 6, 2), dims 40..320: 3,708,400 parameters."""
    return create_model("convnextv2_atto", **kwargs)


def convnextv2_femto(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt V2 femto, depths (2, 2, 6, 2), dims 48..384: 5,233,240 parameters."""
    return create_model("convnextv2_femto", **kwargs)


def convnextv2_pico(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt V2 pico, depths (2, 2, 6, 2), dims 64..512: 9,066,280 parameters."""
    return create_model("convnextv2_pico", **kwargs)


def convnextv2_nano(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt V2 nano, depths (2, 2, 8, 2), dims 80..640: 15,623,800 parameters."""
    return create_model("convnextv2_nano", **kwargs)


def convnextv2_tiny(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt V2 tiny, depths (3, 3, 9, 3), dims 96..768: 28,635,496 parameters."""
    return create_model("convnextv2_tiny", **kwargs)


def convnextv2_base(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt V2 base, depths (3, 3, 27, 3), dims 128..1024: 88,717,800 parameters."""
    return create_model("convnextv2_base", **kwargs)


def convnextv2_large(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt V2 large, depths (3, 3, 27, 3), dims 192..1536: 197,956,840 parameters."""
    return create_model("convnextv2_large", **kwargs)


def convnextv2_huge(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt V2 huge, depths (3, 3, 27, 3), dims 352..2816: 660,289,640 parameters."""
    return create_model("convnextv2_huge", **kwargs)


def convnext_test(**kwargs: Any) -> ConvNeXt:
    """Tiny V1 for CI: depths (1, 1, 1, 1), dims (8, 16, 32, 64)."""
    return create_model("convnext_test", **kwargs)


def convnextv2_test(**kwargs: Any) -> ConvNeXt:
    """Tiny V2 for CI: depths (1, 1, 1, 1), dims (8, 16, 32, 64)."""
    return create_model("convnextv2_test", **kwargs)
