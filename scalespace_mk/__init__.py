"""scalespace_mk: scale-space models of the master key filters of depthwise-separable CNNs.

The package has three wings (docs/architecture.md):

- :mod:`scalespace_mk.scalespace`: the scale-space maths (kernels, operators, models, sympy);
- :mod:`scalespace_mk.analysis`: the analysis of learned filters (files, spread,
  normalisation, the paper's fitting methods, the census);
- :mod:`scalespace_mk.networks` and :mod:`scalespace_mk.training`: depthwise layers,
  ConvNeXt, checkpoint tools, and the training pipeline.

The most used functions are importable from here directly (loaded on first use, so that
``import scalespace_mk`` stays cheap)::

    from scalespace_mk import discrete_gaussian, masterkey_model, fit_filters, load_filters

Subpackages load as attributes on first use (``scalespace_mk.plot``,
``scalespace_mk.networks``, ...), and ``python -m scalespace_mk`` runs the command line.

Importing the package applies the CLI's thread policy where it safely can: when torch is
not yet imported and ``OMP_WAIT_POLICY`` is unset, it sets ``OMP_WAIT_POLICY=PASSIVE``
(nothing else). Opt out with ``SCALESPACE_MK_THREAD_POLICY=0`` or by setting
``OMP_WAIT_POLICY`` yourself; :class:`threads` limits torch and BLAS threads explicitly
(see :mod:`scalespace_mk._threads`).
"""

from __future__ import annotations

import importlib as _importlib
from typing import Any as _Any

from scalespace_mk._threads import apply_import_policy as _apply_import_policy
from scalespace_mk._threads import threads

_apply_import_policy()

__version__ = "0.4.0"

#: subpackages and modules loaded as attributes on first use
_SUBMODULES = (
    "analysis",
    "cli",
    "limits",
    "networks",
    "plot",
    "scalespace",
    "training",
)

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "discrete_gaussian": "scalespace_mk.scalespace.kernels",
    "gaussian_kernel": "scalespace_mk.scalespace.kernels",
    "masterkey_model": "scalespace_mk.scalespace.models",
    "model_kernel": "scalespace_mk.scalespace.models",
    "jet_basis": "scalespace_mk.scalespace.jets",
    "scale_space": "scalespace_mk.scalespace.image",
    "load_filters": "scalespace_mk.analysis.filters",
    "save_filters": "scalespace_mk.analysis.filters",
    "spread": "scalespace_mk.analysis.spread",
    "weighted_spread": "scalespace_mk.analysis.spread",
    "normalize_filters": "scalespace_mk.analysis.normalize",
    "fit_filter": "scalespace_mk.analysis.fit",
    "fit_filters": "scalespace_mk.analysis.fit",
    "census": "scalespace_mk.analysis.census",
    "family_census": "scalespace_mk.analysis.jets",
    "make_dwconv": "scalespace_mk.networks.layers",
    "AnalyticDepthwiseConv2d": "scalespace_mk.networks.layers",
    "MasterKeyDepthwiseConv2d": "scalespace_mk.networks.layers",
    "NJetDepthwiseConv2d": "scalespace_mk.networks.layers",
    "OrientedDepthwiseConv2d": "scalespace_mk.networks.layers",
    "create_model": "scalespace_mk.networks.convnext",
    "analyze": "scalespace_mk.networks.checkpoint",
    "replace": "scalespace_mk.networks.checkpoint",
    "extract": "scalespace_mk.networks.checkpoint",
    "substitute_depthwise": "scalespace_mk.networks.substitute",
    "depthwise_convs": "scalespace_mk.networks.substitute",
    "build_network": "scalespace_mk.networks.registry",
    "load_pretrained_mobilenet_v2": "scalespace_mk.networks.mobilenet",
    "TrainConfig": "scalespace_mk.training.train",
    "train": "scalespace_mk.training.train",
}

__all__ = ["__version__", "threads", *sorted(_EXPORTS)]


def __getattr__(name: str) -> _Any:
    if name in _SUBMODULES:
        value = _importlib.import_module(f"scalespace_mk.{name}")
    elif name in _EXPORTS:
        value = getattr(_importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'scalespace_mk' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public API: the names of ``__all__`` and the subpackages."""
    return sorted({*__all__, *_SUBMODULES})
