"""The candidates of the paper's replacement experiment (docs/method.md#networks, experiment 1).

Each depthwise filter ``y`` is replaced by the least-squares linear shift ``a x_j + b`` of the
best of 8 zero-mean, unit-l2 candidates ``x_j``: the learned master key filters, or their
idealised models fitted by one of the paper's methods. Used by
:func:`scalespace_mk.networks.checkpoint.replace` and
:func:`scalespace_mk.networks.substitute.substitute_depthwise` (kinds ``method:X`` and
``masterkey``); re-exported by :mod:`scalespace_mk.networks.checkpoint`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scalespace_mk._checks import check_choice, check_filters

__all__ = ["CANDIDATES", "candidate_filters", "candidate_models", "linear_shift_replace"]

#: Candidate sets: the learned master key filters, or the models fitted by a method.
CANDIDATES = ("masterkey", "A", "A-exact", "B", "C1", "C2", "D1", "D2")


# --------------------------------------------------------------------------------------
# replace


def _zero_mean_unit(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    if np.any(norm == 0):
        bad = int(np.flatnonzero(norm[:, 0] == 0)[0])
        raise ValueError(f"candidate filter {bad} is constant: it has no shape after mean removal")
    return (flat / norm).reshape(x.shape)


def candidate_filters(
    candidates: str = "masterkey", *, filters: Any = None, size: int = 7
) -> np.ndarray:
    """The 8 candidate filters ``x_j`` of the replacement experiment, zero-mean and unit-l2.

    Parameters
    ----------
    candidates : str
        ``"masterkey"``: the learned master key filters (``filters``, default the published
        8; any ``[M, k, k]`` set is accepted, e.g. one made by :func:`extract`); or a fitting
        method name (``"A"``, ``"A-exact"``, ``"B"``, ``"C1"``, ``"C2"``, ``"D1"``,
        ``"D2"``): the idealised models of the 8 filters fitted by that method (paper mode).
    filters : optional
        Filter source for ``"masterkey"`` and for fitting (anything
        :func:`scalespace_mk.analysis.filters.load_filters` accepts).
    size : int
        Kernel size of the models for a fitting method (the published filters are 7x7).

    Returns
    -------
    numpy.ndarray, shape [M, k, k]
        Zero-mean, unit-l2 candidates (rows top to bottom, y up).
    """
    from scalespace_mk.analysis.filters import load_filters

    check_choice("candidates", candidates, CANDIDATES)
    if candidates == "masterkey":
        return _zero_mean_unit(check_filters(load_filters(filters), "filters"))
    return _zero_mean_unit(candidate_models(candidates, filters=filters, size=size)[0])


def candidate_models(
    method: str, *, filters: Any = None, size: int = 7
) -> tuple[np.ndarray, list[Any]]:
    """Idealised models of the 8 master key filters fitted by ``method`` (paper mode).

    Parameters
    ----------
    method : str
        A fitting method of :mod:`scalespace_mk.analysis.fit` (``"A"`` ... ``"D2"``).
    filters : optional
        Source of the 8 learned filters (default: the published 8).
    size : int
        Size of the generated models.

    Returns
    -------
    models : numpy.ndarray, shape [8, size, size]
        The fitted models ``g_j`` as they are (not normalised).
    fits : list of FilterFit
        The fits (``filter_type``, ``sigma_x``, ``sigma_y``, ``alpha``) of each filter.
    """
    from scalespace_mk.analysis.filters import load_filters
    from scalespace_mk.analysis.fit import fit_filters
    from scalespace_mk.scalespace.models import masterkey_model

    fits = list(fit_filters(load_filters(filters), method=method))
    models = [
        masterkey_model(
            f.filter_type,
            f.sigma_x,
            None if f.filter_type == 7 else f.sigma_y,
            alpha=f.alpha,
            size=size,
        )
        for f in fits
    ]
    return np.stack(models), fits


def linear_shift_replace(
    weights: np.ndarray, candidates: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares replacement of each filter by ``a_j x_j + b`` (docs/method.md#networks,
    experiment 1).

    Parameters
    ----------
    weights : numpy.ndarray, shape [C, k, k]
        Learned filters ``y``.
    candidates : numpy.ndarray, shape [M, k, k]
        Zero-mean, unit-l2 candidates ``x_j`` (see :func:`candidate_filters`).

    Returns
    -------
    replaced : numpy.ndarray, shape [C, k, k]
        ``a x_j + b`` for the best ``j`` of each filter.
    choice : numpy.ndarray of int, shape [C]
        Index ``j`` of the chosen candidate (0-based).
    a, b : numpy.ndarray, shape [C]
        Gain ``<y, x_j>`` and offset ``mean(y)``.

    Notes
    -----
    With ``x_j`` zero-mean and unit-norm, ``||y - a x_j - b||^2`` is minimised by
    ``a = <y, x_j>`` and ``b = mean(y)``, leaving ``||y - mean(y)||^2 - a^2``; the best
    candidate has the largest ``|a_j|``.
    """
    if weights.shape[1:] != candidates.shape[1:]:
        raise ValueError(
            f"candidate filters are {candidates.shape[1]}x{candidates.shape[2]} but the "
            f"depthwise weights are {weights.shape[1]}x{weights.shape[2]}; use candidates "
            "of the same size (a fitting method generates models at any size)"
        )
    y = weights.reshape(weights.shape[0], -1)
    x = candidates.reshape(candidates.shape[0], -1)
    gains = y @ x.T  # [C, M]
    choice = np.argmax(np.abs(gains), axis=1)
    a = gains[np.arange(len(y)), choice]
    b = y.mean(axis=1)
    replaced = a[:, None] * x[choice] + b[:, None]
    return replaced.reshape(weights.shape), choice, a, b
