"""Depthwise filters in trained checkpoints: find, analyse, replace and extract them.

A *depthwise weight* is any 4-D tensor of shape ``[C, 1, k, k]`` (odd ``k >= 3``) whose key
ends in ``weight``, in a plain state dict or inside a full checkpoint (``model``,
``state_dict``, ``model_ema``, ... wrappers are searched). Checkpoints are read with
``torch.load(..., weights_only=True)`` or safetensors: nothing is ever unpickled.

- :func:`analyze`: run the census (:mod:`scalespace_mk.analysis.census`) on every depthwise layer.
- :func:`replace`: docs/method.md#networks experiment 1, every depthwise filter ``y`` replaced by
  its best
  linear shift ``a_j x_j + b`` of 8 candidates ``x_j`` (zero-mean, unit-l2):
  ``a_j = <y, x_j>``, ``b = mean(y)``, the ``j`` of largest ``|a_j|``. Everything else, the
  layout and the key names stay as in the input.
- :func:`extract`: cluster all depthwise filters into ``k`` master filters, invariant to
  ``a y + b`` (zero mean, unit norm, sign), by sign-invariant spherical k-means.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from scalespace_mk._checks import (
    check_choice,
    check_regular_file,
    check_safetensors_file,
    load_torch_safely,
)
from scalespace_mk._display import Tabular
from scalespace_mk._io import atomic_path
from scalespace_mk.networks.candidates import (  # noqa: F401  (re-exported)
    CANDIDATES,
    candidate_filters,
    candidate_models,
    linear_shift_replace,
)

__all__ = [
    "K_MAX",
    "K_MIN",
    "NESTING_MAX",
    "NULL_SIZE",
    "AnalyzeResult",
    "DepthwiseScan",
    "ExtractResult",
    "ReplaceResult",
    "analyze",
    "candidate_filters",
    "candidate_models",
    "check_nesting",
    "compare",
    "extract",
    "find_depthwise",
    "linear_shift_replace",
    "load_checkpoint_file",
    "replace",
    "save_checkpoint_file",
    "scan_depthwise",
]

_WRAPPERS = ("model", "state_dict", "model_ema", "ema", "module", "params", "net")


# --------------------------------------------------------------------------------------
# reading and writing


#: deepest nesting of containers accepted in a checkpoint (real ones have 2-4 levels)
NESTING_MAX = 64


def check_nesting(obj: Any, origin: str = "checkpoint") -> None:
    """Refuse a container that contains itself or nests deeper than :data:`NESTING_MAX`.

    Walks dicts, lists and tuples without recursion, so a self-referencing or 100,000-deep
    object gives one line naming the entry instead of "maximum recursion depth exceeded".

    Raises
    ------
    ValueError
        Naming ``origin`` and the dotted path of the offending entry.
    """
    stack: list[tuple[Any, str, int, frozenset[int]]] = [(obj, "", 0, frozenset())]
    while stack:
        item, name, depth, above = stack.pop()
        if not isinstance(item, Mapping | list | tuple):
            continue
        where = name or "(top level)"
        if id(item) in above:
            raise ValueError(
                f"{origin}: entry {where!r} contains itself (a self-referencing container); "
                "save a plain state dict instead"
            )
        if depth >= NESTING_MAX:
            raise ValueError(
                f"{origin}: entry {where!r} is nested more than {NESTING_MAX} containers deep "
                "(scalespace_mk.networks.checkpoint.NESTING_MAX); save a plain state dict"
            )
        inner = above | {id(item)}
        pairs = item.items() if isinstance(item, Mapping) else enumerate(item)
        for key, value in pairs:
            if isinstance(value, Mapping | list | tuple):
                stack.append((value, f"{name}.{key}" if name else str(key), depth + 1, inner))


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

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        Nothing at ``path``, or a directory ("a directory, not a checkpoint file").
    ValueError
        A FIFO or other non-regular file (refused before it is opened), a file refused as
        unsafe (a pickle of objects other than tensors: the message says why), or a corrupt
        file. Every message names the file.
    """
    path = check_regular_file(path, "checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        check_safetensors_file(path)  # our words for a damaged header, before the library
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise ValueError(
                f"{path} is not a readable safetensors file ({first}); the file is corrupt "
                "or holds a dtype torch cannot read"
            ) from None
    state = load_torch_safely(path, "checkpoint file")
    check_nesting(state, str(path))
    return state


def _flat_tensors(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """``obj`` as the flat ``{name: tensor}`` dict safetensors holds (shared storage copied)."""
    if not isinstance(obj, Mapping):
        raise TypeError(
            f"cannot write {path}: .safetensors holds a flat {{name: tensor}} dict; got "
            f"{type(obj).__name__} (write a .pt file instead)"
        )
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            kind = (
                "a nested container"
                if isinstance(value, Mapping | list | tuple)
                else (type(value).__name__)
            )
            raise ValueError(
                f"cannot write {path}: .safetensors holds only a flat {{name: tensor}} dict, "
                f"but entry {str(key)!r} is {kind}; write a .pt file instead, or save the state "
                "dict alone (e.g. checkpoint['model'])"
            )
        t = value.detach().contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else 0
        if ptr and ptr in seen:  # safetensors refuses tensors that share memory
            t = t.clone()
        seen.add(ptr)
        out[str(key)] = t
    return out


def _no_space(exc: BaseException, path: Path, nbytes: int) -> bool:
    """Whether a failed write of ``nbytes`` to ``path`` ran out of disk space."""
    import errno
    import shutil

    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    if "no space left" in str(exc).lower():
        return True
    try:
        return shutil.disk_usage(path.parent).free < nbytes + (1 << 20)
    except OSError:
        return False


def save_checkpoint_file(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` atomically (temporary file in the same folder, then ``os.replace``).

    ``.safetensors`` paths need a flat ``{name: tensor}`` dict (tensors that share memory
    are written as copies); other paths use ``torch.save``.

    Raises
    ------
    ValueError, TypeError
        A nested or non-tensor entry for ``.safetensors`` (the message names the entry).
    OSError
        ``errno.ENOSPC`` with "no space left on device" when the disk fills up; the
        temporary file is removed and an existing file at ``path`` stays as it was.
    """
    path = Path(path)
    flat = _flat_tensors(obj, path) if path.suffix == ".safetensors" else None
    nbytes = sum(t.numel() * t.element_size() for _, _, _, t in _walk(obj))
    try:
        with atomic_path(path) as tmp:
            if flat is not None:
                from safetensors.torch import save_file

                save_file(flat, str(tmp))
            else:
                torch.save(obj, tmp)
    except Exception as exc:
        if _no_space(exc, path, nbytes):
            import errno

            raise OSError(
                errno.ENOSPC,
                f"no space left on device while writing {path} (about {nbytes / 2**20:.0f} MiB "
                "needed); nothing was written and the input is intact; free space or write "
                "elsewhere",
            ) from None
        raise
    return path


def _walk(obj: Any, prefix: str = "") -> Iterable[tuple[str, Any, Any, Any]]:
    """Yield ``(dotted name, container, key, tensor)`` for every tensor in nested dicts."""
    if not prefix:
        check_nesting(obj, "state")  # a self-referencing or absurdly deep object
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, torch.Tensor):
                yield name, obj, key, value
            elif isinstance(value, Mapping):
                yield from _walk(value, name)


#: kernel sizes analysed: odd k with K_MIN <= k <= K_MAX
K_MIN, K_MAX = 3, 15
#: default number of null filters of each kind per checkpoint (:func:`analyze`)
NULL_SIZE = 2048
_NULL_MIN_LAYER = 128


def _depthwise_status(name: str, t: torch.Tensor) -> str | None:
    """``"ok"`` for a depthwise weight, a reason for a near miss, None for other tensors.

    Candidates are 4-D tensors ``[C, 1, kh, kw]`` named ``*weight``; of these, only square,
    odd ``k`` in ``[K_MIN, K_MAX]`` with floating-point values are analysed.
    """
    if not (name.endswith("weight") and t.ndim == 4 and t.shape[1] == 1):
        return None
    kh, kw = int(t.shape[2]), int(t.shape[3])
    if kh != kw:
        return f"non-square kernel {kh}x{kw}"
    if kh == 1:
        return "1x1 kernel: a per-channel scale, no spatial filter"
    if kh % 2 == 0:
        return f"even kernel size {kh}: no centre tap for the models"
    if not (K_MIN <= kh <= K_MAX):
        return f"kernel size {kh} outside {K_MIN}..{K_MAX}"
    if not t.is_floating_point():
        return f"non-floating-point weights ({t.dtype}; quantised?)"
    return "ok"


def _is_depthwise(name: str, t: torch.Tensor) -> bool:
    return _depthwise_status(name, t) == "ok"


@dataclass
class DepthwiseScan:
    """The depthwise weights of a checkpoint and the near misses left out.

    Attributes
    ----------
    found : dict
        ``{dotted name: tensor [C, 1, k, k]}`` (odd ``k``, ``K_MIN <= k <= K_MAX``), in the
        checkpoint's order.
    skipped : list of dict
        ``{"name", "shape", "reason"}`` for every other ``[C, 1, kh, kw]`` weight: non-square,
        even, 1x1, too large, or not floating point.
    """

    found: dict[str, torch.Tensor]
    skipped: list[dict[str, Any]]


def scan_depthwise(state: Any) -> DepthwiseScan:
    """Every depthwise weight of a state dict or checkpoint, and what was skipped and why.

    Parameters
    ----------
    state : mapping or str or path-like
        A (nested) state dict or checkpoint path (see :func:`find_depthwise`).

    Returns
    -------
    DepthwiseScan
    """
    if isinstance(state, str | os.PathLike):
        state = load_checkpoint_file(state)
    if not isinstance(state, Mapping):
        raise TypeError(f"expected a state dict (a mapping of tensors); got {type(state)}")
    found: dict[str, torch.Tensor] = {}
    skipped: list[dict[str, Any]] = []
    for name, _, _, t in _walk(state):
        status = _depthwise_status(name, t)
        if status == "ok":
            found[name] = t
        elif status is not None:
            skipped.append({"name": name, "shape": list(t.shape), "reason": status})
    return DepthwiseScan(found, skipped)


def find_depthwise(state: Any) -> dict[str, torch.Tensor]:
    """Every depthwise weight ``[C, 1, k, k]`` (odd ``k``, 3 <= k <= 15) of a checkpoint.

    Parameters
    ----------
    state : mapping or str or path-like
        A (nested) state dict, or a checkpoint path read by :func:`load_checkpoint_file`
        (``.pt``/``.pth``/``.bin``/``.ckpt`` or ``.safetensors``). Nested mappings (wrappers
        such as ``model``, ``state_dict``, ``ema``, ``model_ema``) are searched at any depth
        and the names prefixed (``model.stages.0.blocks.0.conv_dw.weight``). Any architecture
        whose depthwise convs are stored as ``[C, 1, k, k]`` tensors named ``*weight`` is
        found: ConvNeXt and timm (``conv_dw.weight``), torchvision MobileNetV2
        (``features.N.conv.0.0.weight``) and EfficientNet-style state dicts.

    Returns
    -------
    dict
        ``{dotted name: tensor [C, 1, k, k]}`` in the checkpoint's order.

    Notes
    -----
    A state dict does not record ``groups``, stride or dilation: a dense conv with one
    input channel (``[C, 1, k, k]``, e.g. a grayscale stem) looks like a depthwise one, and
    dilated filters are analysed as stored (the k x k taps, not the dilated footprint).
    :func:`scan_depthwise` also lists the ``[C, 1, kh, kw]`` weights left out and why.
    """
    return scan_depthwise(state).found


# --------------------------------------------------------------------------------------
# analyze


@dataclass(repr=False)
class AnalyzeResult(Tabular):
    """Census of every depthwise layer of a checkpoint, beside its null models.

    Attributes
    ----------
    layers : list of dict
        Per layer (network order): ``name``, ``channels``, ``kernel_size``, ``fitted``,
        ``invalid`` (``{"zero", "constant", "non_finite"}`` counts), ``constant_filters``
        (their total), ``types`` (count per best type, string keys), ``median_r2``,
        ``share_r2_gt_0_8`` (also as ``share_r2_above_0.8``), ``null_kind`` (the headline
        null: the first computed of covariance, shape, position, iid; None for none),
        ``null_median_r2``, ``null_share_r2_gt_0_8``, ``nulls`` (per null kind the
        :func:`scalespace_mk.analysis.null.null_contrast` numbers plus ``ceiling_median_r2``,
        ``attainable_gap`` and ``gap_share``, :mod:`scalespace_mk.analysis.ceiling`),
        ``gap_share`` (of the headline null), ``undetermined`` (filters per undetermined
        parameter, :mod:`scalespace_mk.analysis.identify`; those scales are left out of
        ``sigma``), ``median_r2_adjusted`` (effective parameters, the choice of type
        charged as one), ``sigma``
        (:func:`scalespace_mk.analysis.census.scale_statistics`) and quantiles (5, 25, 50,
        75, 95 %) of ``sigma_x`` and ``sigma_y``.
    filters : list of dict
        Census records (see :mod:`scalespace_mk.analysis.census`) with ``layer`` added;
        filters not fitted have ``type`` and ``r2`` None and a ``reason``.
    summary : dict
        The whole checkpoint: ``filters``, ``fitted``, ``invalid``, ``layers``,
        ``median_r2``, ``share_r2_gt_0_8``, ``null_kind``, ``null_median_r2``,
        ``null_share_r2_gt_0_8``, ``nulls``, ``sigma``, ``types``, and the same per
        kernel size in ``by_kernel_size`` (keys ``"3"``, ``"5"``, ...).
    skipped : list of dict
        ``{"name", "shape", "reason"}`` of ``[C, 1, kh, kw]`` weights not analysed.
    null : tuple of str
        The null kinds computed.
    seed : int
        The seed of the null filters and bootstrap intervals.
    r2 : dict
        ``{layer: R^2 [C]}`` (NaN for filters not fitted), for figures.
    null_r2 : dict
        ``{layer: {kind: R^2 of the null filters}}``, for figures.
    weights : dict
        ``{layer: filters [C, k, k]}`` as analysed (float64), for the gallery.
    arrays : dict
        ``{layer: {"r2", "null_r2", "type", "sigma_x", "sigma_y", "alpha", "invalid",
        "k"}}``: the per-filter arrays behind the layer's numbers, for pooling
        (:func:`compare`).
    """

    layers: list[dict[str, Any]]
    filters: list[dict[str, Any]] = field(repr=False)
    summary: dict[str, Any] = field(default_factory=dict, repr=False)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    null: tuple[str, ...] = ()
    seed: int = 0
    r2: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    null_r2: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    weights: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    arrays: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    types: tuple[Any, ...] = tuple(range(1, 9))

    def _headline(self) -> str:
        s = self.summary
        text = f"analysis of {len(self.layers)} depthwise layers, {len(self.filters)} filters"
        if s.get("median_r2") is not None:
            text += f"; median R^2 {s['median_r2']:.3f}"
        if s.get("null_median_r2") is not None:
            text += f" (null '{s.get('null_kind')}' {s['null_median_r2']:.3f})"
        return text

    def _columns(self) -> dict[str, list[Any]]:
        """One row per layer: layer, channels, k, fitted, invalid, median_r2, share_r2_gt_0_8,
        null_kind, null_median_r2, top_type, sigma_x_median, sigma_y_median."""
        rows = self.layers

        def top(rec: dict[str, Any]) -> Any:
            types = rec.get("types") or {}
            return max(types, key=lambda t: types[t]) if types else None

        def q50(rec: dict[str, Any], key: str) -> Any:
            return (rec.get(key) or {}).get("50")

        return {
            "layer": [r["name"] for r in rows],
            "channels": [r["channels"] for r in rows],
            "k": [r["kernel_size"] for r in rows],
            "fitted": [r["fitted"] for r in rows],
            "invalid": [sum((r.get("invalid") or {}).values()) for r in rows],
            "median_r2": [r.get("median_r2") for r in rows],
            "share_r2_gt_0_8": [r.get("share_r2_gt_0_8") for r in rows],
            "null_kind": [r.get("null_kind") for r in rows],
            "null_median_r2": [r.get("null_median_r2") for r in rows],
            "top_type": [top(r) for r in rows],
            "sigma_x_median": [q50(r, "sigma_x_quantiles") for r in rows],
            "sigma_y_median": [q50(r, "sigma_y_quantiles") for r in rows],
        }

    def to_pandas(self, level: str = "layer") -> Any:
        """The result as a ``pandas.DataFrame``.

        Parameters
        ----------
        level : {"layer", "filter"}
            ``"layer"``: one row per layer (the columns of :meth:`format_table`);
            ``"filter"``: one row per filter, the census records: layer, index (channel,
            from 0), type, sigma_x, sigma_y, alpha, a, b, r2, reason.

        Raises
        ------
        ImportError
            If pandas is not installed (``pip install pandas``).
        """
        from scalespace_mk._display import import_pandas

        if level == "layer":
            return super().to_pandas()
        if level != "filter":
            raise ValueError(f"level must be 'layer' or 'filter'; got {level!r}")
        keys = ("layer", "index", "type", "sigma_x", "sigma_y", "alpha", "a", "b", "r2", "reason")
        return import_pandas().DataFrame({k: [r.get(k) for r in self.filters] for k in keys})

    def to_json(self) -> dict[str, Any]:
        """The ``{"layers", "filters", "summary", "skipped"}`` object of ``analyze --json``."""
        return {
            "layers": self.layers,
            "filters": self.filters,
            "summary": self.summary,
            "skipped": self.skipped,
        }

    def gallery(self, n: int = 6, kernel_size: int | None = None) -> dict[str, Any]:
        """The ``n`` worst- and best-explained fitted filters with their fitted models.

        Parameters
        ----------
        n : int
            Filters on each side.
        kernel_size : int, optional
            Only filters of this size; default the most common size of the checkpoint.

        Returns
        -------
        dict
            ``{"kernel_size": k, "worst": [...], "best": [...]}``, each entry the filter's
            record plus ``filter`` (``[k, k]`` as stored, y up) and ``model`` (``a g + b``,
            the fitted model in the filter's units); worst first / best first.
        """
        from scalespace_mk.analysis.types import parse_model_types
        from scalespace_mk.scalespace.models import model_kernel

        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer; got {n!r}")
        sizes = {name: w.shape[-1] for name, w in self.weights.items()}
        if kernel_size is None:
            counts: dict[int, int] = {}
            for name, w in self.weights.items():
                counts[sizes[name]] = counts.get(sizes[name], 0) + len(w)
            kernel_size = max(counts, key=lambda k: (counts[k], -k)) if counts else 0
        recs = [r for r in self.filters if r["r2"] is not None and sizes[r["layer"]] == kernel_size]
        recs.sort(key=lambda r: r["r2"])
        names = {}

        def entry(rec: dict[str, Any]) -> dict[str, Any]:
            label = rec["type"]
            if label not in names:
                names[label] = parse_model_types((label,))[0]
            tp = names[label]
            y = self.weights[rec["layer"]][rec["index"]]
            kw: dict[str, Any] = {"size": y.shape[-1]}
            # the fitted values (also of undetermined scales, which records hold as None)
            fit = self.arrays.get(rec["layer"], {}).get("fit", {})
            sx, sy, al = (
                float(fit[key][rec["index"]]) if key in fit else rec[key]
                for key in ("sigma_x", "sigma_y", "alpha")
            )
            if tp.kind == "mk7":
                g = model_kernel(tp.name, sx, alpha=al, **kw)
            elif tp.kind == "iso":
                g = model_kernel(tp.name, sx, **kw)
            else:
                g = model_kernel(tp.name, sx, sy, **kw)
            model = rec["a"] * np.asarray(g, dtype=np.float64) + rec["b"]
            return dict(rec, filter=y, model=model)

        return {
            "kernel_size": kernel_size,
            "worst": [entry(r) for r in recs[:n]],
            "best": [entry(r) for r in recs[::-1][:n]],
        }


#: the headline null of a statistic: the strongest one computed (docs/analysis.md)
_HEADLINE_NULLS = ("covariance", "shape", "position", "iid")


def _stats(
    r2: np.ndarray,
    null_r2: dict[str, np.ndarray],
    *,
    seed: int,
    n_boot: int,
    ceilings: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Median R^2, share > 0.8 and the null contrasts (with ceilings) of one group."""
    from scalespace_mk.analysis.ceiling import gap_share
    from scalespace_mk.analysis.null import null_contrast, r2_summary

    own = r2_summary(r2)
    nulls = {k: null_contrast(r2, z, seed=seed, n_boot=n_boot) for k, z in null_r2.items()}
    for kind, c in nulls.items():
        ceil = (ceilings or {}).get(kind)
        if ceil is not None:
            c["ceiling_median_r2"] = ceil["ceiling_median_r2"]
            c["attainable_gap"] = ceil["attainable_gap"]
            c["gap_share"] = gap_share(c["median_r2"], c["null_median_r2"], ceil)
    head = next((k for k in _HEADLINE_NULLS if k in nulls), None)
    return {
        "gap_share": nulls[head].get("gap_share") if head else None,
        "median_r2": own["median_r2"],
        "share_r2_gt_0_8": own["share_r2_gt_0_8"],
        "null_kind": head,
        "null_median_r2": nulls[head]["null_median_r2"] if head else None,
        "null_share_r2_gt_0_8": nulls[head]["null_share_r2_gt_0_8"] if head else None,
        "nulls": nulls,
    }


def _median(x: np.ndarray) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else None


def _population_summary(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over layers of the population measures, and how many layers look random."""
    pops = [la["population"] for la in layers]

    def med(key: str) -> float | None:
        v = [p[key] for p in pops if p.get(key) is not None]
        return float(np.median(v)) if v else None

    drifts = [p["drift_from_previous"] for p in pops if p.get("drift_from_previous")]
    return {
        "layers": len(pops),
        "layers_random_like": int(sum(bool(p.get("random_like")) for p in pops)),
        "median_sparsity": med("sparsity"),
        "median_variance_entropy": med("variance_entropy"),
        "median_orthogonality": med("orthogonality"),
        "median_drift_sym_kl": float(np.median([d["sym_kl"] for d in drifts])) if drifts else None,
        "median_drift_distance": float(np.median([d["distance"] for d in drifts]))
        if drifts
        else None,
    }


def _ceilings(ceiling_r2: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """``{kind: {"ceiling_median_r2", "attainable_gap"}}`` from the R^2 of the nulls of the
    ideal filters (their own R^2 is 1)."""
    out = {}
    for kind, z in ceiling_r2.items():
        med = _median(z)
        if med is not None:
            out[kind] = {"ceiling_median_r2": med, "attainable_gap": 1.0 - med}
    return out


def _pooled_ceilings(parts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Ceilings of pooled layers: the median over all their ideal filters' null R^2."""
    kinds = set().union(*(p.get("ceiling_r2", {}) for p in parts)) if parts else set()
    return _ceilings(
        {
            k: np.concatenate([p["ceiling_r2"][k] for p in parts if k in p["ceiling_r2"]])
            for k in kinds
        }
    )


def _pooled(
    parts: list[dict[str, Any]], types: tuple[Any, ...], seed: int, n_boot: int
) -> dict[str, Any]:
    """Summary of several layers' census results pooled (see :class:`AnalyzeResult`)."""
    from scalespace_mk.analysis.census import scale_statistics

    def cat(key: str) -> np.ndarray:
        arrays = [p[key] for p in parts]
        return np.concatenate(arrays) if arrays else np.zeros(0)

    r2 = cat("r2")
    kinds = parts[0]["null_r2"].keys() if parts else ()
    null_r2 = {k: np.concatenate([p["null_r2"][k] for p in parts]) for k in kinds}
    labels = np.concatenate([p["type"] for p in parts]) if parts else np.zeros(0, object)
    invalid = {
        key: sum(p["invalid"][key] for p in parts) for key in ("zero", "constant", "non_finite")
    }
    counts = {str(t): int(np.sum(labels == t)) for t in types}
    undetermined = {
        key: sum(p["undetermined"][key] for p in parts) for key in ("sigma_x", "sigma_y", "alpha")
    }
    return {
        "undetermined": undetermined,
        "median_r2_adjusted": _median(cat("r2_adjusted")),
        "layers": len(parts),
        "filters": int(r2.size),
        "fitted": int(np.isfinite(r2).sum()),
        "invalid": invalid,
        "types": counts,
        **_stats(r2, null_r2, seed=seed, n_boot=n_boot, ceilings=_pooled_ceilings(parts)),
        "sigma": scale_statistics(labels, cat("sigma_x"), cat("sigma_y"), cat("alpha"), types),
    }


def analyze(
    source: Any,
    *,
    types: Any = None,
    device: str | None = None,
    progress: bool | None = None,
    null: str = "default",
    seed: int = 0,
    on_invalid: str = "record",
    n_boot: int = 2000,
    null_size: int | None = NULL_SIZE,
) -> AnalyzeResult:
    """Run the census on every depthwise layer of a checkpoint, beside null models.

    Parameters
    ----------
    source : mapping or str or path-like
        State dict, full checkpoint, or path (see :func:`find_depthwise`). Layers of any
        odd kernel size 3..15 are analysed, mixed sizes included; other ``[C, 1, kh, kw]``
        weights are listed in ``skipped``.
    types : sequence of int or str, optional
        Model types the census may choose from: 1..8 and/or model names
        (:func:`scalespace_mk.analysis.types.parse_model_types`); default the 8 master key
        types.
    device : str, optional
        Torch device for the census (default CPU).
    progress : bool, optional
        Progress over layers (:func:`scalespace_mk._progress.progress`); default: when the
        checkpoint holds >= 20,000 depthwise filters.
    null : str
        Null models fitted beside each layer (:func:`scalespace_mk.analysis.null.null_kinds`:
        ``"default"`` = iid, shape, covariance; ``"both"`` = iid, position; ``"all"``;
        ``"none"``; a kind or a comma-separated list): the same census on matched
        structureless filters, each with its ceiling
        (:func:`scalespace_mk.analysis.ceiling.null_ceiling`, the same null on ideal
        model filters of that k) and the gap share. The headline null is the strongest one
        computed (covariance, shape, position, iid in that order). Default ``"default"``:
        no statistic is reported without a baseline.
    seed : int
        Seed (>= 0) of the null filters (each layer's from ``(seed, layer name)``, so a
        layer's null does not depend on the other layers) and of the bootstrap intervals.
    on_invalid : {"record", "raise"}
        Zero, constant and NaN/Inf filters: recorded with their reason (default; a trained
        network's dead channels should not stop the analysis) or a ValueError naming the
        filter and the layer.
    n_boot : int
        Bootstrap resamples of the learned-minus-null intervals (0: none).
    null_size : int or None
        About how many null filters of each kind for the whole checkpoint (default
        :data:`NULL_SIZE` = 2048): when the checkpoint has more fitted filters, each layer's
        null is built from a seeded random subset of its filters, the same fraction in every
        layer (so the pooled null weighs the layers as the learned filters do) but at least
        ``min(C, 128)`` per layer (so every layer's null median is within a few hundredths).
        None: one null filter per learned filter. This keeps ``null="both"`` under 3x the
        time of ``null="none"`` (see docs/benchmarks.md); the median of 2048 null
        filters is known to about +-0.005.

    Returns
    -------
    AnalyzeResult

    Raises
    ------
    ValueError
        No depthwise weights found; with ``on_invalid="raise"``, the first invalid filter.

    Notes
    -----
    R^2 is the fraction of a filter's variance explained by its best model ``a g + b``; see
    :func:`scalespace_mk.analysis.census.census`. Filters are stored weights (y up:
    ``x = c - m``, ``y = m - r``), analysed as stored (no dilation).
    """
    from scalespace_mk._progress import progress as progress_iter
    from scalespace_mk.analysis.ceiling import fitted_models, matched_ceiling
    from scalespace_mk.analysis.census import ON_INVALID, census, null_r2, scale_statistics
    from scalespace_mk.analysis.identify import (
        adjusted_r2,
        annotate_records,
        effective_parameters,
        identify_census,
    )
    from scalespace_mk.analysis.null import derive_seed, null_kinds
    from scalespace_mk.analysis.population import drift, layer_population
    from scalespace_mk.analysis.types import DEFAULT_TYPES, parse_model_types

    check_choice("on_invalid", on_invalid, ON_INVALID)
    from scalespace_mk.limits import check_count

    check_count("n_boot", n_boot)
    if null_size is not None:
        check_count("null_size", null_size)
    if null_size is not None and (
        isinstance(null_size, bool) or not isinstance(null_size, int) or null_size < 1
    ):
        raise ValueError(f"null_size must be a positive integer or None; got {null_size!r}")
    kinds = null_kinds(null)
    tps = parse_model_types(DEFAULT_TYPES if types is None else types)
    labels = tuple(t.label for t in tps)
    scan = scan_depthwise(source)
    if not scan.found:
        missed = "; ".join(f"{s['name']} {s['shape']}: {s['reason']}" for s in scan.skipped[:3])
        raise ValueError(
            "no depthwise weights ([C, 1, k, k] tensors named '*weight', k odd, "
            f"{K_MIN} <= k <= {K_MAX}) found in the checkpoint"
            + (f"; skipped {missed}" if missed else "")
        )
    total = sum(int(t.shape[0]) for t in scan.found.values())
    show = total >= 20_000 if progress is None else bool(progress)
    fraction = 1.0 if null_size is None else min(1.0, null_size / max(total, 1))
    layers, records, parts = [], [], []
    previous: dict[int, tuple[str, np.ndarray]] = {}  # last layer of each kernel size
    r2_by_layer, null_by_layer, weights = {}, {}, {}
    items = progress_iter(
        list(scan.found.items()), desc="analyze", unit="layer", enabled=show, every=10.0
    )
    for name, weight in items:
        w = weight.detach().to(torch.float64).cpu().numpy()[:, 0]
        try:
            result = census(w, types=labels, device=device, progress=False, on_invalid=on_invalid)
        except ValueError as exc:
            raise ValueError(f"layer {name!r}: {exc}") from None
        k_layer = int(w.shape[-1])
        ident = identify_census(result, size=k_layer)
        recs = annotate_records(result.records(), ident, n_types=len(labels), taps=k_layer**2)
        for rec in recs:
            rec["layer"] = name
        records.extend(recs)
        # undetermined scales are not findings: NaN in the arrays behind statistics and figures
        sx_all = np.where(ident.mask("sigma_x"), np.nan, result.sigma_x)
        sy_all = np.where(ident.mask("sigma_y"), np.nan, result.sigma_y)
        al_all = np.where(ident.mask("alpha"), np.nan, result.alpha)
        q_eff = effective_parameters(ident.rank, len(labels))
        r2_adj = adjusted_r2(result.r2, q_eff, k_layer**2)
        lseed = derive_seed(seed, name)
        fitted_w = w[result.valid]
        n_null = min(len(fitted_w), max(math.ceil(fraction * len(fitted_w)), _NULL_MIN_LAYER))
        if n_null < len(fitted_w):
            pick = np.random.default_rng([lseed, 2]).choice(len(fitted_w), n_null, replace=False)
            fitted_w = fitted_w[np.sort(pick)]
        nulls = null_r2(fitted_w, kinds, lseed, types=labels, device=device)
        # the matched ceiling: the same null of the ideal versions of the same filters
        models = fitted_models(result, k_layer)[result.valid]
        if n_null < len(models):
            models = models[np.sort(pick)]
        ceiling_r2 = matched_ceiling(models, kinds, lseed, types=labels, device=device)
        ceilings = _ceilings(ceiling_r2)
        invalid = result.invalid_counts()
        part = {
            "r2": result.r2,
            "null_r2": nulls,
            "type": result.type.astype(object),
            "sigma_x": sx_all,
            "sigma_y": sy_all,
            "alpha": al_all,
            "invalid": invalid,
            "k": int(w.shape[-1]),
            "r2_adjusted": r2_adj,
            "undetermined": ident.counts(),
            "fit": {"sigma_x": result.sigma_x, "sigma_y": result.sigma_y, "alpha": result.alpha},
            "ceiling_r2": ceiling_r2,
        }
        parts.append(part)
        r2_by_layer[name], null_by_layer[name], weights[name] = result.r2, nulls, w
        q = (5, 25, 50, 75, 95)
        fitted = result.valid
        sx, sy = sx_all[fitted], sy_all[fitted]
        sx, sy = sx[np.isfinite(sx)], sy[np.isfinite(sy)]
        stats = _stats(result.r2, nulls, seed=lseed, n_boot=n_boot, ceilings=ceilings)
        finite = np.isfinite(w).reshape(len(w), -1).all(1)
        population = layer_population(w[finite], seed=seed)
        prev = previous.get(k_layer)
        fitted_shapes = w[result.valid]
        if prev is not None and len(prev[1]) >= 2 and len(fitted_shapes) >= 2:
            population["drift_from_previous"] = {
                "layer": prev[0],
                **drift(prev[1], fitted_shapes, n_boot=min(n_boot, 200), seed=lseed),
            }
        else:
            population["drift_from_previous"] = None
        previous[k_layer] = (name, fitted_shapes)
        layers.append(
            {
                "name": name,
                "channels": int(w.shape[0]),
                "kernel_size": int(w.shape[-1]),
                "fitted": int(fitted.sum()),
                "invalid": invalid,
                "constant_filters": int((~fitted).sum()),
                "types": {str(t): n for t, n in result.counts().items()},
                **stats,
                "share_r2_above_0.8": stats["share_r2_gt_0_8"],
                "sigma": scale_statistics(result.type, sx_all, sy_all, al_all, labels),
                "undetermined": ident.counts(),
                "median_r2_adjusted": _median(r2_adj),
                "population": population,
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
    summary = _pooled(parts, labels, seed, n_boot)
    summary["by_kernel_size"] = {
        str(k): _pooled([p for p in parts if p["k"] == k], labels, seed, n_boot)
        for k in sorted({p["k"] for p in parts})
    }
    summary["skipped"] = len(scan.skipped)
    summary["population"] = _population_summary(layers)
    return AnalyzeResult(
        layers,
        records,
        summary=summary,
        skipped=scan.skipped,
        null=kinds,
        seed=int(seed),
        r2=r2_by_layer,
        null_r2=null_by_layer,
        weights=weights,
        arrays=dict(zip(scan.found, parts, strict=True)),
        types=labels,
    )


def compare(
    results: Sequence[AnalyzeResult],
    *,
    names: Sequence[str] | None = None,
    stages: int = 4,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Several analysed networks side by side, per stage of depth, each with its null.

    Parameters
    ----------
    results : sequence of AnalyzeResult
        Analyses of two or more checkpoints (any architectures, any kernel sizes).
    names : sequence of str, optional
        A label per result (default ``"1"``, ``"2"``, ...).
    stages : int
        Each network's depthwise layers, in network order, are cut into this many groups of
        (nearly) equal numbers of layers: stage 1 is the first quarter of the depth for
        ``stages=4``, whatever the architecture. A state dict does not say where a
        network's stages begin, so relative depth is the one comparison that works for any
        pair of networks.
    n_boot : int
        Bootstrap resamples of the learned-minus-null intervals.

    Returns
    -------
    dict
        ``{"stages": stages, "networks": [{"name", "summary", "stages": [{"stage",
        "layers", "kernel_sizes", "filters", "fitted", "median_r2", "share_r2_gt_0_8",
        "null_kind", "null_median_r2", "null_share_r2_gt_0_8", "nulls", "sigma",
        "types"}, ...]}, ...], "drift": [{"a", "b", "kernel_size", ...}]}``; a stage with
        no layer (fewer layers than stages) has ``layers`` [] and None statistics;
        ``drift`` compares each network's fitted filters with the first's per common
        kernel size (:func:`scalespace_mk.analysis.population.drift`).
    """
    results = list(results)
    if len(results) < 1 or not all(isinstance(r, AnalyzeResult) for r in results):
        raise TypeError("results must be a sequence of AnalyzeResult (from analyze)")
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
        raise ValueError(f"stages must be a positive integer such as 4; got {stages!r}")
    from scalespace_mk.limits import check_count

    check_count("stages", stages)
    check_count("n_boot", n_boot)
    names = [str(i + 1) for i in range(len(results))] if names is None else list(names)
    if len(names) != len(results):
        raise ValueError(f"names must have one label per result ({len(results)}); got {names!r}")
    networks = []
    for label, res in zip(names, results, strict=True):
        layer_names = list(res.arrays)
        rows = []
        for j, chunk in enumerate(np.array_split(np.arange(len(layer_names)), stages), 1):
            parts = [res.arrays[layer_names[i]] for i in chunk]
            row: dict[str, Any] = {"stage": j, **_pooled(parts, res.types, res.seed, n_boot)}
            row["layers"] = [layer_names[i] for i in chunk]
            row["kernel_sizes"] = sorted({p["k"] for p in parts})
            rows.append(row)
        networks.append({"name": label, "summary": res.summary, "stages": rows})
    return {"stages": stages, "networks": networks, "drift": _network_drift(results, names)}


def _network_drift(results: list[AnalyzeResult], names: list[str]) -> list[dict[str, Any]]:
    """Drift of the fitted filters of each network from the first's, per common kernel size
    (:func:`scalespace_mk.analysis.population.drift`)."""
    from scalespace_mk.analysis.population import drift

    def pooled(res: AnalyzeResult) -> dict[int, np.ndarray]:
        out: dict[int, list[np.ndarray]] = {}
        for name, w in res.weights.items():
            ok = np.isfinite(res.arrays[name]["r2"])
            out.setdefault(w.shape[-1], []).append(w[ok])
        return {k: np.concatenate(v) for k, v in out.items()}

    rows = []
    base = pooled(results[0])
    for j in range(1, len(results)):
        other = pooled(results[j])
        for k in sorted(set(base) & set(other)):
            if len(base[k]) >= 2 and len(other[k]) >= 2:
                d = drift(base[k], other[k], seed=results[0].seed)
                rows.append({"a": names[0], "b": names[j], "kernel_size": k, **d})
    return rows


# --------------------------------------------------------------------------------------
# replace


@dataclass(repr=False)
class ReplaceResult(Tabular):
    """Outcome of :func:`replace`: the new checkpoint object and a per-layer summary.

    ``skipped`` lists ``{"name", "index", "reason"}`` of depthwise weights left as they were
    (e.g. a kernel size the kind cannot model).
    """

    checkpoint: Any = field(repr=False)
    layers: list[dict[str, Any]]
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def _headline(self) -> str:
        n = sum(int(layer["channels"]) for layer in self.layers)
        return f"replaced {n} filters in {len(self.layers)} depthwise layers"

    def _columns(self) -> dict[str, list[Any]]:
        """layer, channels, mean_relative_residual, median_r2 (N-jet replacement), and one
        column ``candidate_<j>`` (channels given candidate j) per candidate."""
        rows = self.layers
        keys = sorted({k for r in rows for k in r["candidates"]}, key=lambda k: (len(k), k))
        cols: dict[str, list[Any]] = {
            "layer": [r["name"] for r in rows],
            "channels": [r["channels"] for r in rows],
            "mean_relative_residual": [r.get("mean_relative_residual") for r in rows],
        }
        if any("median_r2" in r for r in rows):
            cols["median_r2"] = [r.get("median_r2") for r in rows]
        for k in keys:
            cols[f"candidate_{k}"] = [r["candidates"].get(k, 0) for r in rows]
        return cols

    def totals(self) -> dict[str, int]:
        """Channels per candidate (1-based candidate numbers as strings) over all layers."""
        out: dict[str, int] = {}
        for layer in self.layers:
            for key, n in layer["candidates"].items():
                out[key] = out.get(key, 0) + n
        return out


def _replace_kind(candidates: str, order: int, kind: str | None) -> str:
    """The :func:`~scalespace_mk.networks.substitute.substitute_depthwise` kind of a replace."""
    if kind is not None:
        return kind
    if candidates == "njet":
        return f"njet:{order}"
    check_choice("candidates", candidates, (*CANDIDATES, "njet"))
    return "masterkey" if candidates == "masterkey" else f"method:{candidates}"


def replace(
    source: Any,
    *,
    candidates: str = "masterkey",
    filters: Any = None,
    out: str | os.PathLike | None = None,
    order: int = 2,
    kind: str | None = None,
    seed: int = 0,
    **options: Any,
) -> ReplaceResult:
    """Replace every depthwise filter by its best linear shift of 8 candidates (or any kind).

    The filters of the checkpoint go through
    :func:`scalespace_mk.networks.substitute.substitute_depthwise`, the one substitution
    mechanism, so every kind it knows works on any checkpoint, whatever network wrote it.

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
    kind : str, optional
        Any kind of :func:`~scalespace_mk.networks.substitute.substitute_depthwise`
        (``"census"``, ``"method:B"``, ``"njet:1"``, ``"noise"``, ``"random"``, ...);
        overrides ``candidates`` and ``order``.
    seed : int
        Seed of the controls (``noise``, ``random``).
    **options
        Options of the kind (e.g. ``fit="njet:1"`` for ``noise``).

    Returns
    -------
    ReplaceResult
        ``checkpoint`` has the same nested layout, keys and dtypes as the input; only the
        depthwise weights differ. ``layers`` lists per layer the channels per candidate
        (per type for ``census``), the median R^2 and the mean relative residual
        ``||y - y'||^2 / ||y - mean y||^2``; ``skipped`` the layers left as they were.

    Raises
    ------
    ValueError
        Nothing non-finite is ever written: a depthwise filter holding NaN or Inf, or a
        replacement that overflows the weights' dtype (float16 near 6.5e4), is refused with
        the layer and channel named, before anything is written. A kind that can replace no
        layer (e.g. ``masterkey`` on 3x3 filters) is refused with the reason.
    """
    from torch import nn

    from scalespace_mk.networks.substitute import substitute_depthwise

    kind = _replace_kind(candidates, order, kind)
    if filters is not None:
        if kind in ("masterkey",) or kind.startswith("method:"):
            options.setdefault("filters", filters)
        elif kind == "noise" and (
            options.get("fit", "census") == "masterkey"
            or str(options.get("fit")).startswith("method:")
        ):
            options.setdefault("fit_options", {}).setdefault("filters", filters)
    obj = load_checkpoint_file(source) if isinstance(source, str | os.PathLike) else source
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a state dict or checkpoint mapping; got {type(obj)}")
    obj = _copy_containers(obj)
    targets = [(n, c, k, t) for n, c, k, t in _walk(obj) if _is_depthwise(n, t)]
    if not targets:
        raise ValueError("no depthwise weights ([C, 1, k, k] tensors) found in the checkpoint")
    others = [
        n
        for n, _, _, t in _walk(obj)
        if not _is_depthwise(n, t)
        and (t.is_floating_point() or t.is_complex())
        and not t.is_meta
        and not bool(torch.isfinite(t).all())
    ]
    if others:  # copied unchanged, they would put NaN/Inf into the output
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        raise ValueError(
            f"the checkpoint already holds NaN or Inf in tensors that are not depthwise weights "
            f"({', '.join(repr(n) for n in others[:3])}{more}); replace copies them unchanged "
            "and never writes a non-finite value: repair or drop them first"
        )
    convs = []
    for name, _, _, tensor in targets:
        w = tensor.detach().to(torch.float64).cpu()
        _check_finite_channels(w.numpy()[:, 0], f"layer {name!r}", "holds NaN or infinite weights")
        c, k = w.shape[0], w.shape[-1]
        conv = nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False, dtype=torch.float64)
        with torch.no_grad():
            conv.weight.copy_(w)
        convs.append(conv)
    # the filters as a module (layer i is targets[i]); the substitution is done on it
    model, report = substitute_depthwise(nn.Sequential(*convs), kind, seed=seed, **options)
    layers = []
    for layer in report.layers:
        name, container, key, tensor = targets[layer.index]
        new = model[layer.index].weight.detach()
        new_t = new.to(tensor.dtype)
        if new_t.is_floating_point() and not bool(torch.isfinite(new_t).all()):
            _check_finite_channels(
                new_t.to(torch.float64).numpy()[:, 0],
                f"layer {name!r}",
                f"would be replaced by a filter that overflows {tensor.dtype}",
            )
        container[key] = new_t.to(tensor.device)
        rel = np.where(np.isfinite(layer.r2), 1.0 - layer.r2, 0.0)
        entry = {
            "name": name,
            "channels": layer.channels,
            "candidates": dict(layer.counts),
            "median_r2": layer.median_r2,
            "mean_relative_residual": float(rel.mean()),
        }
        if kind != "masterkey" and not kind.startswith("method:"):
            entry["kind"] = kind
        layers.append(entry)
    skipped = [
        {"name": targets[s["index"]][0], "index": s["index"], "reason": s["reason"]}
        for s in report.skipped
    ]
    if not layers:
        reasons: dict[str, list[str]] = {}
        for s_ in skipped:
            reasons.setdefault(s_["reason"], []).append(s_["name"])
        raise ValueError(
            f"kind {kind!r} replaced no layer: "
            + "; ".join(f"{len(v)} layer(s) (first {v[0]}): {r}" for r, v in reasons.items())
        )
    if out is not None:
        save_checkpoint_file(obj, out)
    return ReplaceResult(obj, layers, skipped)


def _check_finite_channels(w: np.ndarray, where: str, problem: str, unit: str = "channel") -> None:
    """Raise naming ``where`` (a layer) and the first ``unit`` of ``w [C, k, k]`` that is not
    finite."""
    finite = np.isfinite(w).all(axis=(1, 2))
    if finite.all():
        return
    bad = np.flatnonzero(~finite)
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    raise ValueError(
        f"{where}, {unit} {int(bad[0])}{more} {problem}; nothing non-finite is used or "
        "written: clean the input (or drop that channel) first"
    )


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


@dataclass(repr=False)
class ExtractResult(Tabular):
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

    def _headline(self) -> str:
        k, ks = self.filters.shape[0], self.filters.shape[-1]
        return (
            f"{k} master filters ({ks}x{ks}) of {self.assignment.shape[0]} filters; "
            f"explained variance {self.explained:.3f}"
        )

    def _columns(self) -> dict[str, list[Any]]:
        """master (from 1, by share), share, members, mean_abs_cosine."""
        k = self.filters.shape[0]
        counts = np.bincount(self.assignment[self.assignment >= 0], minlength=k)
        return {
            "master": list(range(1, k + 1)),
            "share": self.share.tolist(),
            "members": [int(c) for c in counts],
            "mean_abs_cosine": self.mean_abs_cosine.tolist(),
        }


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
    for arg, value in (("k", k), ("n_init", n_init), ("max_iter", max_iter)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{arg} must be a positive integer; got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
    data = _pool_filters(sources)
    flat = data.reshape(data.shape[0], -1)
    # scale invariance, exactly: each filter's largest |tap| to [1, 2) by a power of two, so
    # filters scaled by 1e-300 or 1e307 neither underflow nor overflow
    peak = np.abs(flat).max(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        exponent = np.where(peak > 0, -np.floor(np.log2(np.where(peak > 0, peak, 1.0))), 0.0)
    flat = np.ldexp(flat, exponent.astype(np.int64))
    flat = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1)
    valid = norms > 1e-12  # relative to the filter's own largest tap (now in [1, 2))
    y = flat[valid] / norms[valid, None]
    if y.shape[0] < k:
        raise ValueError(
            f"k = {k} master filters need at least {k} non-constant filters; got {y.shape[0]}"
        )
    rng = np.random.default_rng(seed)
    best = None
    # small matrices (k scatter matrices of ks^2 x ks^2): one BLAS thread is ~10x faster
    # than a multithreaded OpenBLAS, which spends its time waking threads (issue 19)
    with threadpool_limits(limits=1):
        for _ in range(n_init):
            centres = _kmeanspp(y, k, rng)
            for _ in range(max_iter):
                new = _update_centres(y, centres)
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


def _update_centres(y: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """One sign-invariant spherical k-means step: each centre becomes the leading
    eigenvector of its members' scatter matrix (all clusters in one batched ``eigh``)."""
    sim = (y @ centres.T) ** 2
    labels = np.argmax(sim, axis=1)
    k = centres.shape[0]
    onehot = labels[None, :] == np.arange(k)[:, None]  # [k, N]
    scatter = np.stack([y[members].T @ y[members] for members in onehot])
    _, vecs = np.linalg.eigh(scatter)
    new = vecs[:, :, -1].copy()
    empty = ~onehot.any(axis=1)
    if empty.any():  # re-seed an empty cluster at the worst-fitted filter
        new[empty] = y[np.argmin(sim.max(axis=1))]
    return new


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


#: filter files (not checkpoints) that :func:`extract` reads with ``load_filters``
_FILTER_FILES = (".txt", ".dat", ".text", ".npy", ".npz")


def _pool_filters(sources: Any) -> np.ndarray:
    if isinstance(sources, np.ndarray | torch.Tensor) or isinstance(sources, Mapping):
        sources = [sources]
    elif isinstance(sources, str | os.PathLike):
        sources = [sources]
    pooled = []
    for i, src in enumerate(sources):
        if isinstance(src, np.ndarray | torch.Tensor):
            arr = src.detach().cpu().numpy() if isinstance(src, torch.Tensor) else src
            if np.iscomplexobj(arr):
                raise TypeError(f"sources[{i}] must be real filters; got complex values")
            arr = np.asarray(arr, dtype=np.float64)
            if arr.ndim == 4 and arr.shape[1] == 1:
                arr = arr[:, 0]
            if arr.ndim != 3:
                raise ValueError(
                    f"sources[{i}] must be filters [N, k, k] or [C, 1, k, k]; got shape {arr.shape}"
                )
            _check_finite_channels(arr, f"sources[{i}]", "holds NaN or infinite values", "filter")
            pooled.append(arr)
        elif isinstance(src, str | os.PathLike) and Path(src).suffix.lower() in _FILTER_FILES:
            from scalespace_mk.analysis.filters import load_filters

            pooled.append(load_filters(src))
        else:
            for name, w in find_depthwise(src).items():
                arr = w.detach().to(torch.float64).cpu().numpy()[:, 0]
                _check_finite_channels(arr, f"layer {name!r}", "holds NaN or infinite weights")
                pooled.append(arr)
    if not pooled:
        raise ValueError(
            "no filters to extract from: pass arrays or checkpoints with depthwise weights"
        )
    sizes = {p.shape[-1] for p in pooled}
    if len(sizes) > 1:
        raise ValueError(
            f"all depthwise filters must share one size to be clustered; got sizes {sorted(sizes)}"
        )
    # every part was checked finite above (load_filters checks its own), so no second pass
    return np.concatenate(pooled)
