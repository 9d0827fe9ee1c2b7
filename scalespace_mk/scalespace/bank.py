"""Banks of idealised model kernels: many scales times many models, in one array.

A bank is what the ``scalespace-mk bank`` command writes: ``kernels[i, j]`` is the model
``models[j]`` (a name accepted by :func:`scalespace_mk.scalespace.models.parse_model`) at the scale
``sigma[i]``, as a ``[size, size]`` stored depthwise weight (rows top to bottom, columns left
to right, y up: ``x = c - m``, ``y = m - r`` for the centre index ``m``), to be used as a
``conv2d`` weight with no flip (docs/theory.md).

Examples
--------
>>> from scalespace_mk.scalespace.bank import make_bank
>>> bank = make_bank([0.5, 1.0], ["mk5", "mk8"])
>>> bank.kernels.shape
(2, 2, 7, 7)
>>> bool(abs(bank.kernels[1, 1].sum() - 1.0) < 0.05)  # mk8 = T, cropped to 7x7
True
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import scalespace_mk.limits as limits
from scalespace_mk._checks import (
    check_array_file,
    check_choice,
    check_epsilon,
    check_regular_file,
    check_sigma,
    check_size,
)
from scalespace_mk._display import Tabular
from scalespace_mk._io import atomic_path
from scalespace_mk.scalespace.kernels import METHODS, fft_length
from scalespace_mk.scalespace.models import MODES, model_kernel, parse_model

__all__ = ["DEFAULT_MODELS", "Bank", "load_bank", "make_bank", "save_bank"]

#: the models of the 8 master key filters, in the paper's order
DEFAULT_MODELS = ("mk1", "mk2", "mk3", "mk4", "mk5", "mk6", "mk7", "mk8")


@dataclass(frozen=True, repr=False)
class Bank(Tabular):
    """Model kernels at several scales.

    Attributes
    ----------
    kernels : numpy.ndarray, shape [n_sigma, n_models, size, size]
        ``kernels[i, j]`` is model ``models[j]`` at ``sigma[i]``; float64 stored weights
        (rows top to bottom, y up), used as conv2d weights without a flip.
    sigma : numpy.ndarray, shape [n_sigma]
        Standard deviations (``sigma_x = sigma_y = sigma``), >= 0.
    models : tuple of str
        Model names.
    alpha : float
        Weight of the Laplacian in ``"mk7"`` (stored even when mk7 is not in the bank).
    size : int
        Kernel size (odd).
    method : str
        1-D Gaussian discretisation (:data:`scalespace_mk.scalespace.kernels.METHODS`).
    mode : str
        ``"paper"`` or ``"full"`` (see :mod:`scalespace_mk.scalespace.models`).
    epsilon : float
        Relative truncation error of each 1-D kernel.
    """

    kernels: np.ndarray
    sigma: np.ndarray
    models: tuple[str, ...]
    alpha: float = 0.5
    size: int = 7
    method: str = "discgauss"
    mode: str = "paper"
    epsilon: float = 1e-8

    def _headline(self) -> str:
        n_s, n_m = self.kernels.shape[:2]
        return (
            f"bank of {n_m} models at {n_s} scales, {self.size}x{self.size}, method "
            f"{self.method}, {self.mode} mode, alpha {self.alpha:g}"
        )

    def _columns(self) -> dict[str, list[Any]]:
        """One row per kernel (sigma-major): sigma, model, sum, l1 (sum of |taps|), peak
        (largest |tap|)."""
        flat = self.kernels.reshape(-1, self.size * self.size)
        n_m = len(self.models)
        return {
            "sigma": [float(self.sigma[i // n_m]) for i in range(flat.shape[0])],
            "model": [self.models[i % n_m] for i in range(flat.shape[0])],
            "sum": flat.sum(axis=1).tolist(),
            "l1": np.abs(flat).sum(axis=1).tolist(),
            "peak": np.abs(flat).max(axis=1).tolist(),
        }


def _check_models(models: Any) -> tuple[str, ...]:
    if isinstance(models, str):
        models = (models,)
    try:
        names = tuple(models)
    except TypeError:
        raise TypeError(f"models must be a sequence of model names; got {models!r}") from None
    if not names:
        raise ValueError("models is empty; pass at least one model name such as 'mk1'")
    for name in names:
        parse_model(name)  # raises a ValueError naming the accepted names
    return names


def make_bank(
    sigma: float | Sequence[float] | np.ndarray,
    models: Sequence[str] = DEFAULT_MODELS,
    *,
    alpha: float = 0.5,
    size: int = 7,
    method: str = "discgauss",
    mode: str = "paper",
    epsilon: float = 1e-8,
) -> Bank:
    """Evaluate models at several scales.

    Parameters
    ----------
    sigma : float or sequence of float, shape [n_sigma]
        Standard deviations in pixels, finite and >= 0 (``s = sigma**2``); the same sigma is
        used along x and y.
    models : sequence of str
        Model names accepted by :func:`scalespace_mk.scalespace.models.parse_model` (default: the 8
        master key models ``"mk1"`` ... ``"mk8"``).
    alpha : float
        Weight of the Laplacian in ``"mk7"`` (``K - alpha nabla5 T``), finite and >= 0;
        default 0.5.
    size : int
        Odd kernel size (default 7).
    method : str
        1-D Gaussian discretisation, one of :data:`scalespace_mk.scalespace.kernels.METHODS`.
    mode : str
        ``"paper"`` (crop, then 3-tap operators with reflect boundary;
        docs/method.md#discretisations, #operators, #models) or
        ``"full"`` (operators on the full-support kernel, then crop).
    epsilon : float
        Relative truncation error of each 1-D kernel, in (0, 1).

    Returns
    -------
    Bank
        ``kernels`` of shape ``[n_sigma, n_models, size, size]`` (float64), with the inputs.

    Notes
    -----
    Each model is evaluated once for the whole batch of scales (one call of
    :func:`scalespace_mk.scalespace.models.model_kernel` per model); ``kernels[i, j]`` equals
    ``model_kernel(models[j], sigma[i], alpha=..., size=size, method=method, mode=mode)``.
    """
    try:
        sig = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    except (TypeError, ValueError):
        sig = None
    if sig is None or sig.ndim != 1 or isinstance(sigma, str):
        raise ValueError(f"sigma must be a number or a 1-D sequence of numbers; got {sigma!r}")
    if sig.size == 0:
        raise ValueError("sigma is empty; pass at least one scale")
    check_sigma("sigma", sig)
    names = _check_models(models)
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a finite number; got {alpha!r}") from None
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(
            f"alpha must be a finite number >= 0 (the weight of the Laplacian of the "
            f"centre-surround mk7 = K - alpha nabla5 T; the published fit is 0.5256); got {alpha!r}"
        )
    size = check_size(size, allow_none=False)
    check_choice("method", method, METHODS)
    check_choice("mode", mode, MODES)
    epsilon = check_epsilon(epsilon)
    # the bank, and per model the batch of 1-D kernels (FFT) and 2-D intermediates
    n_fft = fft_length(float(sig.max()), size)
    limits.check_memory(
        8.0 * sig.size * (len(names) * size * size + 4 * n_fft + 6 * size * size),
        f"a bank of {sig.size} scale(s) x {len(names)} model(s) of size {size}",
        "use fewer scales, fewer models or a smaller size",
    )
    out = np.empty((sig.size, len(names), size, size))
    for j, name in enumerate(names):
        kw = {"alpha": alpha} if parse_model(name).centre_surround else {}
        out[:, j] = model_kernel(
            name, sig, size=size, method=method, mode=mode, epsilon=epsilon, **kw
        )
    return Bank(out, sig, names, alpha, size, method, mode, epsilon)


def save_bank(path: str | os.PathLike, bank: Bank) -> Path:
    """Write a bank to an ``.npz`` file atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file (conventionally ``*.npz``; no suffix is added).
    bank : Bank
        As returned by :func:`make_bank`.

    Returns
    -------
    pathlib.Path
        The written path.

    Notes
    -----
    Arrays: ``kernels`` [n_sigma, n_models, size, size], ``sigma`` [n_sigma], ``models``
    (unicode strings), and the scalars ``alpha``, ``size``, ``method``, ``mode``,
    ``epsilon``. Nothing is pickled: read it with ``np.load(path, allow_pickle=False)`` or
    :func:`load_bank`.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            kernels=bank.kernels,
            sigma=bank.sigma,
            models=np.array(bank.models, dtype=str),
            alpha=np.float64(bank.alpha),
            size=np.int64(bank.size),
            method=np.array(bank.method),
            mode=np.array(bank.mode),
            epsilon=np.float64(bank.epsilon),
        )
    return path


def load_bank(path: str | os.PathLike) -> Bank:
    """Read a bank written by :func:`save_bank` (no pickle).

    Parameters
    ----------
    path : str or os.PathLike
        An ``.npz`` file with at least ``kernels``, ``sigma`` and ``models``.

    Returns
    -------
    Bank

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a bank ``.npz`` (an ``.npy``, missing arrays, sizes above
        :data:`scalespace_mk.limits.ARRAY_FILE_BYTES_MAX`), ``sigma`` is not 1-D, or the
        stored method, mode, size or epsilon is not one :func:`make_bank` accepts.
    """
    path = check_regular_file(path, "bank file")
    check_array_file(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is a single .npy array, not a bank file (an .npz written by save_bank)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"kernels", "sigma", "models"} - set(data.files)
            if missing:
                raise ValueError(f"{path} is not a bank file: missing arrays {sorted(missing)}")
            kernels = data["kernels"]
            sigma = data["sigma"]
            models = tuple(str(m) for m in np.atleast_1d(data["models"]))
            extra = {
                k: data[k].item()
                for k in ("alpha", "size", "method", "mode", "epsilon")
                if k in data and data[k].ndim == 0
            }
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a readable bank file: {exc}") from None
    if sigma.ndim != 1:
        raise ValueError(f"{path}: sigma must be 1-D [n_sigma]; got shape {sigma.shape}")
    try:
        check_choice("method", extra.get("method", "discgauss"), METHODS)
        check_choice("mode", extra.get("mode", "paper"), MODES)
        check_size(extra.get("size", 7), allow_none=False)
        check_epsilon(extra.get("epsilon", 1e-8))
    except ValueError as exc:
        raise ValueError(f"{path}: the stored {exc}") from None
    if kernels.ndim != 4 or kernels.shape[:2] != (sigma.size, len(models)):
        raise ValueError(
            f"{path}: kernels must have shape [n_sigma, n_models, size, size] = "
            f"[{sigma.size}, {len(models)}, k, k]; got {kernels.shape}"
        )
    return Bank(kernels, sigma, models, **extra)
