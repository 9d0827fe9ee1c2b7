"""Depthwise-separable networks with exchangeable depthwise convs.

ConvNeXt V1 / V2 live in :mod:`scalespace_mk.networks.convnext` (this package re-exports its
public API, its ``__all__``); MobileNetV2 in torchvision's layout in
:mod:`scalespace_mk.networks.mobilenet`; :func:`build_network` builds either by name
(:mod:`scalespace_mk.networks.registry`); :mod:`scalespace_mk.networks.substitute` replaces
the depthwise convs of any network by idealised filters.
"""

from scalespace_mk.networks import convnext
from scalespace_mk.networks.convnext import *  # noqa: F403
from scalespace_mk.networks.registry import ARCHS, build_network

__all__ = [*convnext.__all__, "ARCHS", "build_network"]
