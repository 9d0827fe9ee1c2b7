"""The one home for filter types and reference scales.

Every function that takes ``filter_types``, ``types`` or ``sigma_ref`` (spread measures,
normalisation, the fitting methods, the census, the checkpoint tools) resolves them here:

- :func:`resolve_filter_types`: the master key type (1..8, the paper's numbering) of each of
  ``N`` filters;
- :func:`resolve_sigma_ref`: the reference scale of the weighted measures, per filter;
- :func:`check_filter_type`: one master key type;
- :func:`parse_model_types`: the model list of the census (types 1..8 and model names such
  as ``"dxx"`` or ``"lap"``), each with the kind of search it needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from scalespace_mk._checks import check_sigma, is_ascii_int
from scalespace_mk.scalespace.models import MASTERKEY_MODELS, parse_model

__all__ = [
    "DEFAULT_SIGMA_REF",
    "DEFAULT_TYPES",
    "ModelType",
    "check_filter_type",
    "parse_model_types",
    "resolve_filter_types",
    "resolve_sigma_ref",
]

#: The 8 master key types (docs/theory.md, "The 8 master key types"), the census default.
DEFAULT_TYPES: tuple[int, ...] = tuple(MASTERKEY_MODELS)

#: Default reference scale of the weight for each master key type (docs/method.md#spread): 1 for the
#: types 1-6 and 8, 1/sqrt(2) for type 7 (whose weight is the Gaussian T, not the model).
DEFAULT_SIGMA_REF: dict[int, float] = {
    1: 1.0,
    2: 1.0,
    3: 1.0,
    4: 1.0,
    5: 1.0,
    6: 1.0,
    7: 1.0 / math.sqrt(2.0),
    8: 1.0,
}


def resolve_filter_types(filter_types: Any, n: int) -> np.ndarray:
    """Return master key filter types as an int array ``[n]`` with values in 1..8.

    Parameters
    ----------
    filter_types : None, int or sequence of int
        Type (1..8, the paper's numbering) of each filter. None means ``1, 2, ..., 8`` and
        requires ``n == 8`` (the published filters in their published order); one int is
        used for all filters.
    n : int
        Number of filters.

    Returns
    -------
    numpy.ndarray
        int64 ``[n]``.
    """
    if filter_types is None:
        if n != 8:
            raise ValueError(
                "filter_types is required unless there are exactly 8 filters (the published "
                f"master key filters, types 1..8 in order); got {n} filters"
            )
        return np.arange(1, 9, dtype=np.int64)
    if isinstance(filter_types, torch.Tensor):
        filter_types = filter_types.detach().cpu().numpy()
    arr = np.asarray(filter_types)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer)
        or (np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0))
    ):
        raise ValueError(f"filter_types must be integers in 1..8; got {filter_types!r}")
    arr = arr.astype(np.int64)
    if arr.ndim == 0:
        arr = np.full(n, int(arr), dtype=np.int64)
    if arr.shape != (n,):
        raise ValueError(
            f"filter_types must hold one type per filter ({n} values); got shape {arr.shape}"
        )
    if ((arr < 1) | (arr > 8)).any():
        raise ValueError(
            f"filter_types must be integers in 1..8 (the paper's numbering); got {arr.tolist()}"
        )
    return arr


def resolve_sigma_ref(sigma_ref: Any, types: np.ndarray) -> np.ndarray:
    """Return the reference scale of each filter as a float64 array ``[N]``.

    Parameters
    ----------
    sigma_ref : None, float or sequence of float
        Reference scale (a standard deviation in pixels, >= 0; ``s = sigma**2``) for all
        filters or one per filter. None means :data:`DEFAULT_SIGMA_REF` of each type.
    types : numpy.ndarray
        ``[N]`` master key types from :func:`resolve_filter_types`.

    Returns
    -------
    numpy.ndarray
        float64 ``[N]``.
    """
    if sigma_ref is None:
        return np.array([DEFAULT_SIGMA_REF[int(t)] for t in types], dtype=np.float64)
    if isinstance(sigma_ref, torch.Tensor):
        sigma_ref = sigma_ref.detach().cpu().numpy()
    try:
        arr = np.asarray(sigma_ref, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"sigma_ref must be None, a number >= 0 or one number per filter; got {sigma_ref!r}"
        ) from None
    check_sigma("sigma_ref", arr)
    if arr.ndim == 0:
        return np.full(types.shape, float(arr))
    if arr.shape != types.shape:
        raise ValueError(
            f"sigma_ref must be a number or hold one value per filter ({types.shape[0]}); "
            f"got shape {arr.shape}"
        )
    return arr


def check_filter_type(filter_type: Any) -> int:
    """Return one master key type (an integer 1..8) or raise ValueError naming it."""
    if (
        isinstance(filter_type, bool)
        or not isinstance(filter_type, int | np.integer)
        or int(filter_type) not in MASTERKEY_MODELS
    ):
        raise ValueError(f"filter_type must be an integer from 1 to 8; got {filter_type!r}")
    return int(filter_type)


@dataclass(frozen=True)
class ModelType:
    """One model of the census: its label, its model name and its search kind."""

    label: int | str  # what the user sees (1..8 or a model name)
    name: str  # model name for model_kernel
    kind: str  # "sep" (two scales, separable), "iso" (lap, one scale), "mk7"


def parse_model_types(types: Any) -> tuple[ModelType, ...]:
    """Parse the census model list: master key types 1..8 and/or model names.

    Parameters
    ----------
    types : int, str or sequence of int and str
        Master key types (1..8) and model names of
        :func:`scalespace_mk.scalespace.models.parse_model` (``"dxx"``, ``"lap"``, ...).

    Returns
    -------
    tuple of ModelType
        In the given order; ``kind`` is ``"sep"`` (two scales, separable), ``"iso"`` (one
        scale, Laplacian) or ``"mk7"`` (centre-surround, one scale and ``alpha``).
    """
    if isinstance(types, int | str | np.integer) and not isinstance(types, bool):
        types = (types,)
    try:
        items = list(types)
    except TypeError:
        raise TypeError(
            f"types must be a sequence of master key types 1..8 and/or model names; got {types!r}"
        ) from None
    if not items:
        raise ValueError("types is empty; pass at least one type, e.g. types=(1, 2, ..., 8)")
    out: list[ModelType] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | str | np.integer):
            raise ValueError(
                f"types must hold integers 1..8 or model names such as 'dxx', 'lap'; got {item!r}"
            )
        if isinstance(item, int | np.integer):
            if int(item) not in MASTERKEY_MODELS:
                raise ValueError(
                    f"unknown type {item!r}: master key types are the integers 1..8 "
                    "(or pass a model name such as 'dxx', 'dxy', 'dyy', 'lap')"
                )
            label: int | str = int(item)
            name = f"mk{int(item)}"
        else:
            m = item[2:]
            if item.startswith("mk") and is_ascii_int(m) and int(m) in MASTERKEY_MODELS:
                label, name = int(m), item
            else:
                label, name = item, item
            try:
                spec = parse_model(name)
            except ValueError as exc:
                raise ValueError(f"unknown type {item!r} in types: {exc}") from None
        spec = parse_model(name)
        kind = "mk7" if spec.centre_surround else ("iso" if spec.laplacian else "sep")
        if any(t.label == label for t in out):
            raise ValueError(f"type {item!r} is listed twice in types")
        out.append(ModelType(label, name, kind))
    return tuple(out)
