"""Networks the package can build by name (``--arch`` on the command line).

:data:`ARCHS` lists the architecture families; :func:`build_network` builds one. ``convnext``
names any model of :func:`scalespace_mk.networks.convnext.list_models` (``model=``, default
``convnextv2_atto``); every ConvNeXt name is also accepted as ``arch`` directly.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["ARCHS", "build_network"]

#: Architecture families accepted by :func:`build_network` and ``--arch`` (read from the
#: source by the CLI, so keep it a literal).
ARCHS = ("mobilenet_v2", "convnext")


def build_network(arch: str, *, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build a network by name.

    Parameters
    ----------
    arch : str
        ``"mobilenet_v2"`` (:func:`scalespace_mk.networks.mobilenet.mobilenet_v2`;
        kwargs ``num_classes``, ``width_mult``, ``dropout``), ``"convnext"`` (kwarg ``model``,
        a name of :func:`~scalespace_mk.networks.convnext.list_models`, plus the options of
        :func:`~scalespace_mk.networks.convnext.create_model`), or a ConvNeXt model name
        itself (``"convnextv2_tiny"``).
    pretrained : bool
        ``mobilenet_v2`` only: torchvision's ImageNet weights
        (:func:`~scalespace_mk.networks.mobilenet.load_pretrained_mobilenet_v2`, kwarg
        ``path``), in eval mode.
    **kwargs
        Options of the builder.

    Returns
    -------
    nn.Module
    """
    from scalespace_mk.networks.convnext import create_model, list_models

    if not isinstance(arch, str):
        raise TypeError(f"arch must be a string; got {type(arch).__name__}")
    if arch == "mobilenet_v2":
        from scalespace_mk.networks import mobilenet

        if pretrained:
            extra = sorted(set(kwargs) - {"path"})
            if extra:
                raise ValueError(f"pretrained mobilenet_v2 takes only path=; got {extra}")
            return mobilenet.load_pretrained_mobilenet_v2(kwargs.get("path"))
        return mobilenet.mobilenet_v2(**kwargs)
    if pretrained:
        raise ValueError(
            f"pretrained=True is available for mobilenet_v2 only; for {arch!r} load a "
            "checkpoint with scalespace_mk.networks.load_checkpoint"
        )
    if arch == "convnext":
        kw = dict(kwargs)
        return create_model(kw.pop("model", "convnextv2_atto"), **kw)
    if arch in list_models():
        return create_model(arch, **kwargs)
    raise ValueError(
        f"arch must be one of {', '.join(ARCHS)} or a ConvNeXt model name "
        f"({', '.join(list_models()[:4])}, ...); got {arch!r}"
    )
