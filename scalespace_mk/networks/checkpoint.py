"""Depthwise filters in trained checkpoints: find, analyse, replace and extract them.

A *depthwise weight* is any 4-D tensor of shape ``[C, 1, k, k]`` (odd ``k >= 3``) whose key
ends in ``weight``, in a plain state dict or inside a full checkpoint (``model``,
``state_dict``, ``model_ema``, ... wrappers are searched). Checkpoints are read with
``torch.load(..., weights_only=True)`` or safetensors: nothing is ever unpickled.

- :func:`analyze`: run the census (:mod:`scalespace_mk.analysis.census`) on every depthwise layer.
- :func:`replace`: SPEC §9 experiment 1, every depthwise filter ``y`` replaced by its best
  linear shift ``a_j x_j + b`` of 8 candidates ``x_j`` (zero-mean, unit-l2):
  ``a_j = <y, x_j>``, ``b = mean(y)``, the ``j`` of largest ``|a_j|``. Everything else, the
  layout and the key names stay as in the input.
- :func:`extract`: cluster all depthwise filters into ``k`` master filters, invariant to
  ``a y + b`` (zero mean, unit norm, sign), by sign-invariant spherical k-means.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scalespace_mk._checks import check_choice, check_filters
from scalespace_mk._io import atomic_path

__all__ = [
    "AnalyzeResult",
    "ExtractResult",
    "ReplaceResult",
    "analyze",
    "candidate_filters",
    "candidate_models",
    "extract",
    "find_depthwise",
    "linear_shift_replace",
    "load_checkpoint_file",
    "replace",
    "save_checkpoint_file",
]

_WRAPPERS = ("model", "state_dict", "model_ema", "ema", "module", "params", "net")
CANDIDATES = ("masterkey", "A", "A-exact", "B", "C1", "C2", "D1", "D2")


# --------------------------------------------------------------------------------------
# reading and writing


def load_checkpoint_file(path: str | os.PathLike) -> Any:
    """Load a checkpoint without unpickling arbitrary objects.

    Parameters
    ----------
    path : str or path-like
        ``.safetensors`` (read with safetensors) or any torch file (``.pt``, ``.pth``,
        ``.bin``, ``.ckpt``), read with ``torch.load(weights_only=True)`` on the CPU.

    Returns
    -------
    object
        The stored object: a state dict or a nested container of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError, EOFError, ...
        raise ValueError(
            f"{path} could not be loaded safely with torch.load(weights_only=True): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. It is "
            "either corrupt or holds objects other than tensors and plain containers, which "
            "scalespace_mk refuses to unpickle; re-save it as a state dict or safetensors."
        ) from exc


def save_checkpoint_file(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` atomically (temporary file in the same folder, then ``os.replace``).

    ``.safetensors`` paths need a flat ``{name: tensor}`` dict; other paths use
    ``torch.save``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in obj.items()}, str(tmp))
        else:
            torch.save(obj, tmp)
    return path


def _walk(obj: Any, prefix: str = "") -> Iterable[tuple[str, Any, Any, Any]]:
    """Yield ``(dotted name, container, key, tensor)`` for every tensor in nested dicts."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, torch.Tensor):
                yield name, obj, key, value
            elif isinstance(value, Mapping):
                yield from _walk(value, name)


def _is_depthwise(name: str, t: torch.Tensor) -> bool:
    return (
        name.endswith("weight")
        and t.ndim == 4
        and t.shape[1] == 1
        and t.shape[2] == t.shape[3]
        and t.shape[2] >= 3
        and t.shape[2] % 2 == 1
        and t.is_floating_point()
    )


def find_depthwise(state: Any) -> dict[str, torch.Tensor]:
    """Every depthwise weight ``[C, 1, k, k]`` in a state dict or full checkpoint.

    Parameters
    ----------
    state : mapping or str or path-like
        A (nested) state dict, or a checkpoint path read by :func:`load_checkpoint_file`.
        Wrapper keys such as ``model``, ``state_dict`` and ``model_ema`` are searched too
        (names are then prefixed, e.g. ``model.stages.0.blocks.0.conv_dw.weight``).

    Returns
    -------
    dict
        ``{dotted name: tensor [C, 1, k, k]}`` in the checkpoint's order.
    """
    if isinstance(state, str | os.PathLike):
        state = load_checkpoint_file(state)
    if not isinstance(state, Mapping):
        raise TypeError(f"expected a state dict (a mapping of tensors); got {type(state)}")
    found = {name: t for name, _, _, t in _walk(state) if _is_depthwise(name, t)}
    return found


# --------------------------------------------------------------------------------------
# analyze


@dataclass
class AnalyzeResult:
    """Census of every depthwise layer of a checkpoint.

    Attributes
    ----------
    layers : list of dict
        Per layer: ``name``, ``channels``, ``kernel_size``, ``types`` (count per type,
        keys ``"1"`` ... ``"8"``), ``median_r2``, ``share_r2_above_0.8`` and quantiles
        (5, 25, 50, 75, 95 %) of ``sigma_x`` and ``sigma_y``.
    filters : list of dict
        Census records (see :mod:`scalespace_mk.analysis.census`) with the ``layer`` name added.
    """

    layers: list[dict[str, Any]]
    filters: list[dict[str, Any]] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """The ``{"layers": [...], "filters": [...]}`` object of ``analyze --json``."""
        return {"layers": self.layers, "filters": self.filters}


def analyze(
    source: Any,
    *,
    types: Iterable[int] = tuple(range(1, 9)),
    device: str | None = None,
    progress: bool | None = None,
) -> AnalyzeResult:
    """Run the census on every depthwise layer of a checkpoint.

    Parameters
    ----------
    source : mapping or str or path-like
        State dict, full checkpoint, or path (see :func:`find_depthwise`).
    types : iterable of int
        Model types the census may choose from (default the 8 master-key types).
    device : str, optional
        Torch device for the census (default CPU).
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).

    Returns
    -------
    AnalyzeResult
    """
    from scalespace_mk.analysis.census import census

    layers = find_depthwise(source)
    if not layers:
        raise ValueError(
            "no depthwise weights ([C, 1, k, k] tensors named '*weight') found in the checkpoint"
        )
    types = tuple(types)
    summary, records = [], []
    for name, weight in layers.items():
        w = weight.detach().to(torch.float64).cpu().numpy()[:, 0]
        keep = np.any(w != w.mean(axis=(1, 2), keepdims=True), axis=(1, 2))
        result = census(w[keep], types=types, device=device, progress=progress)
        recs = result.records()
        kept_index = np.flatnonzero(keep)
        for rec in recs:
            rec["index"] = int(kept_index[rec["index"]])
            rec["layer"] = name
        records.extend(recs)
        r2 = np.array([r["r2"] for r in recs]) if recs else np.zeros(0)
        sx = np.array([r["sigma_x"] for r in recs]) if recs else np.zeros(0)
        sy = np.array([r["sigma_y"] for r in recs]) if recs else np.zeros(0)
        q = (5, 25, 50, 75, 95)
        counts = {str(t): int(sum(r["type"] == t for r in recs)) for t in types}
        summary.append(
            {
                "name": name,
                "channels": int(w.shape[0]),
                "kernel_size": int(w.shape[-1]),
                "constant_filters": int((~keep).sum()),
                "types": counts,
                "median_r2": float(np.median(r2)) if len(r2) else float("nan"),
                "share_r2_above_0.8": float(np.mean(r2 > 0.8)) if len(r2) else 0.0,
                "sigma_x_quantiles": dict(
                    zip(map(str, q), np.percentile(sx, q).tolist(), strict=True)
                )
                if len(sx)
                else {},
                "sigma_y_quantiles": dict(
                    zip(map(str, q), np.percentile(sy, q).tolist(), strict=True)
                )
                if len(sy)
                else {},
            }
        )
    return AnalyzeResult(summary, records)


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
    """Least-squares replacement of each filter by ``a_j x_j + b`` (SPEC §9, experiment 1).

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


@dataclass
class ReplaceResult:
    """Outcome of :func:`replace`: the new checkpoint object and a per-layer summary."""

    checkpoint: Any = field(repr=False)
    layers: list[dict[str, Any]]

    def totals(self) -> dict[str, int]:
        """Channels per candidate (1-based candidate numbers as strings) over all layers."""
        out: dict[str, int] = {}
        for layer in self.layers:
            for key, n in layer["candidates"].items():
                out[key] = out.get(key, 0) + n
        return out


def _njet_replace(name: str, container: Any, key: Any, tensor: Any, order: int) -> dict:
    """Replace one layer's filters by their N-jet fits (constant ones kept); its summary."""
    from scalespace_mk.analysis.jets import family_census

    w = tensor.detach().to(torch.float64).cpu().numpy()[:, 0]
    new = w.copy()
    keep = np.any(w != w.mean(axis=(1, 2), keepdims=True), axis=(1, 2))
    r2 = np.ones(0)
    if keep.any():
        result = family_census(w[keep], family="njet", order=order, progress=False)
        new[keep] = result.models()
        r2 = result.r2
    container[key] = torch.from_numpy(new[:, None]).to(tensor.dtype).to(tensor.device)
    return {
        "name": name,
        "channels": int(w.shape[0]),
        "candidates": {"njet": int(keep.sum())},
        "median_r2": float(np.median(r2)) if len(r2) else float("nan"),
        "mean_relative_residual": float(np.mean(1.0 - r2)) if len(r2) else 0.0,
    }


def replace(
    source: Any,
    *,
    candidates: str = "masterkey",
    filters: Any = None,
    out: str | os.PathLike | None = None,
    order: int = 2,
) -> ReplaceResult:
    """Replace every depthwise filter by its best linear shift of 8 candidates.

    Parameters
    ----------
    source : mapping or str or path-like
        Checkpoint object or path; it is not modified.
    candidates : str
        ``"masterkey"`` or a fitting method name; see :func:`candidate_filters`.
    filters : optional
        Source of the learned master key filters (default: the published 8).
    out : path-like, optional
        Where to write the new checkpoint (atomically), same format as ``source`` when it is
        a path (``.safetensors`` stays safetensors).
    order : int
        With ``candidates="njet"``: every filter is replaced by its least-squares N-jet of
        this order (:func:`scalespace_mk.analysis.jets.family_census`, one scale, plus an
        offset; constant filters stay as they are); ``layers`` then reports the median R^2.

    Returns
    -------
    ReplaceResult
        ``checkpoint`` has the same nested layout, keys and dtypes as the input; only the
        depthwise weights differ. ``layers`` lists per layer the channels per candidate and
        the mean relative residual ``||y - y'||^2 / ||y - mean y||^2``.
    """
    obj = load_checkpoint_file(source) if isinstance(source, str | os.PathLike) else source
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a state dict or checkpoint mapping; got {type(obj)}")
    obj = _copy_containers(obj)
    targets = [(n, c, k, t) for n, c, k, t in _walk(obj) if _is_depthwise(n, t)]
    if not targets:
        raise ValueError("no depthwise weights ([C, 1, k, k] tensors) found in the checkpoint")
    cache: dict[int, np.ndarray] = {}
    layers = []
    for name, container, key, tensor in targets:
        k = tensor.shape[-1]
        if candidates == "njet":
            layers.append(_njet_replace(name, container, key, tensor, order))
            continue
        if k not in cache:
            cache[k] = candidate_filters(candidates, filters=filters, size=k)
        w = tensor.detach().to(torch.float64).cpu().numpy()[:, 0]
        new, choice, a, b = linear_shift_replace(w, cache[k])
        container[key] = torch.from_numpy(new[:, None]).to(tensor.dtype).to(tensor.device)
        centred = w - w.mean(axis=(1, 2), keepdims=True)
        tss = (centred**2).sum(axis=(1, 2))
        rss = ((w - new) ** 2).sum(axis=(1, 2))
        rel = np.where(tss > 0, rss / np.where(tss > 0, tss, 1.0), 0.0)
        layers.append(
            {
                "name": name,
                "channels": int(w.shape[0]),
                "candidates": {
                    str(j + 1): int((choice == j).sum()) for j in range(cache[k].shape[0])
                },
                "mean_relative_residual": float(rel.mean()),
            }
        )
    if out is not None:
        save_checkpoint_file(obj, out)
    return ReplaceResult(obj, layers)


def _copy_containers(obj: Any) -> Any:
    """Copy nested dicts (keeping their types and order) so the input stays untouched."""
    if isinstance(obj, Mapping):
        copy = type(obj)() if type(obj) is not dict else {}
        try:
            for k, v in obj.items():
                copy[k] = _copy_containers(v)
        except TypeError:  # a mapping type that cannot be rebuilt empty
            return {k: _copy_containers(v) for k, v in obj.items()}
        return copy
    return obj


# --------------------------------------------------------------------------------------
# extract


@dataclass
class ExtractResult:
    """Master filters extracted by :func:`extract`.

    Attributes
    ----------
    filters : numpy.ndarray, shape [k, ks, ks]
        Zero-mean, unit-l2 master filters, ordered by share (largest first); each signed so
        that its largest-magnitude tap is positive.
    share : numpy.ndarray, shape [k]
        Fraction of the input filters assigned to each master filter.
    mean_abs_cosine : numpy.ndarray, shape [k]
        Mean ``|cos|`` between the members of a cluster and its master filter.
    assignment : numpy.ndarray of int, shape [N]
        Cluster of every input filter (constant filters get -1).
    explained : float
        Share of the total variance (after mean removal) the fit ``a x_j + b`` explains.
    """

    filters: np.ndarray
    share: np.ndarray
    mean_abs_cosine: np.ndarray
    assignment: np.ndarray = field(repr=False)
    explained: float


def extract(
    sources: Any,
    *,
    k: int = 8,
    n_init: int = 8,
    max_iter: int = 100,
    seed: int = 0,
) -> ExtractResult:
    """Cluster depthwise filters into ``k`` master filters, invariant to ``a y + b``.

    Parameters
    ----------
    sources : array [N, ks, ks], checkpoint mapping, path, or a list of them
        Filters, or checkpoints whose depthwise weights are pooled (all must share ``ks``).
    k : int
        Number of master filters.
    n_init : int
        Restarts of the k-means (k-means++ seeding); the best objective is kept.
    max_iter : int
        Iterations per restart.
    seed : int
        Seed of the random generator (results are deterministic for a given seed).

    Returns
    -------
    ExtractResult

    Notes
    -----
    Each filter is made zero-mean and unit-l2, so the method is invariant to ``a y + b``
    with ``a != 0`` (including the sign). The objective, ``sum_i max_j <y_i, c_j>^2``, is
    the variance the best ``a c_j + b`` explains; a cluster's master filter is the leading
    eigenvector of its members' scatter matrix (sign-invariant spherical k-means).
    """
    data = _pool_filters(sources)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}")
    flat = data.reshape(data.shape[0], -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1)
    valid = norms > 1e-12 * max(1.0, float(norms.max()))
    y = flat[valid] / norms[valid, None]
    if y.shape[0] < k:
        raise ValueError(
            f"k = {k} master filters need at least {k} non-constant filters; got {y.shape[0]}"
        )
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(n_init):
        centres = _kmeanspp(y, k, rng)
        for _ in range(max_iter):
            sim = (y @ centres.T) ** 2
            labels = np.argmax(sim, axis=1)
            new = centres.copy()
            for j in range(k):
                members = y[labels == j]
                if len(members) == 0:  # re-seed an empty cluster at the worst-fitted filter
                    new[j] = y[np.argmin(sim.max(axis=1))]
                    continue
                _, vecs = np.linalg.eigh(members.T @ members)
                new[j] = vecs[:, -1]
            if np.allclose(np.abs(np.sum(new * centres, axis=1)), 1.0, atol=1e-12):
                centres = new
                break
            centres = new
        objective = float(((y @ centres.T) ** 2).max(axis=1).sum())
        if best is None or objective > best[0]:
            best = (objective, centres)
    objective, centres = best
    sim = y @ centres.T
    labels = np.argmax(sim**2, axis=1)
    share = np.bincount(labels, minlength=k) / len(y)
    cos = np.array(
        [np.abs(sim[labels == j, j]).mean() if np.any(labels == j) else 0.0 for j in range(k)]
    )
    order = np.argsort(-share, kind="stable")
    centres, share, cos = centres[order], share[order], cos[order]
    remap = np.empty(k, dtype=np.int64)
    remap[order] = np.arange(k)
    signs = np.sign(centres[np.arange(k), np.argmax(np.abs(centres), axis=1)])
    centres = centres * signs[:, None]
    assignment = np.full(data.shape[0], -1, dtype=np.int64)
    assignment[valid] = remap[labels]
    return ExtractResult(
        filters=centres.reshape(k, *data.shape[1:]),
        share=share,
        mean_abs_cosine=cos,
        assignment=assignment,
        explained=objective / len(y),
    )


def _kmeanspp(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding under the sign-invariant distance ``1 - <y, c>^2``."""
    centres = [y[rng.integers(len(y))]]
    dist = 1.0 - (y @ centres[0]) ** 2
    for _ in range(1, k):
        p = np.clip(dist, 0.0, None)
        total = p.sum()
        idx = rng.choice(len(y), p=p / total) if total > 0 else rng.integers(len(y))
        centres.append(y[idx])
        dist = np.minimum(dist, 1.0 - (y @ y[idx]) ** 2)
    return np.stack(centres)


def _pool_filters(sources: Any) -> np.ndarray:
    if isinstance(sources, np.ndarray | torch.Tensor) or isinstance(sources, Mapping):
        sources = [sources]
    elif isinstance(sources, str | os.PathLike):
        sources = [sources]
    pooled = []
    for src in sources:
        if isinstance(src, np.ndarray | torch.Tensor):
            arr = src.detach().cpu().numpy() if isinstance(src, torch.Tensor) else src
            arr = np.asarray(arr, dtype=np.float64)
            if arr.ndim == 4 and arr.shape[1] == 1:
                arr = arr[:, 0]
            pooled.append(arr)
        else:
            for w in find_depthwise(src).values():
                pooled.append(w.detach().to(torch.float64).cpu().numpy()[:, 0])
    if not pooled:
        raise ValueError(
            "no filters to extract from: pass arrays or checkpoints with depthwise weights"
        )
    sizes = {p.shape[-1] for p in pooled}
    if len(sizes) > 1:
        raise ValueError(
            f"all depthwise filters must share one size to be clustered; got sizes {sorted(sizes)}"
        )
    data = np.concatenate(pooled)
    finite = np.isfinite(data).all(axis=(1, 2))
    if not finite.all():
        raise ValueError(f"filter {int(np.flatnonzero(~finite)[0])} holds NaN or infinite values")
    return data
