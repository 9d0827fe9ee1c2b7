"""Depthwise-separable networks (ConvNeXt V1 / V2) with exchangeable depthwise convs.

Everything lives in :mod:`scalespace_mk.networks.convnext`; this package re-exports its
public API (its ``__all__``).
"""

from scalespace_mk.networks import convnext
from scalespace_mk.networks.convnext import *  # noqa: F403

__all__ = list(convnext.__all__)
