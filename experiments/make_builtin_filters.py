"""Regenerate the packaged master filters ``scalespace_mk/data_files/builtin_filters.npy``.

The 8 filters that ``load_filters("builtin")`` (and ``--filters builtin`` on the command
line) returns are the master filters extracted from the depthwise filters of a small
ConvNeXt-V2 trained by ``experiments/masterkey_small.py`` on the ``builtin`` natural-image
patches. This script turns such a training checkpoint into the data file and its provenance
note ``builtin_filters.md``::

    python experiments/masterkey_small.py            # trains runs/masterkey_small/learned
    python experiments/make_builtin_filters.py \\
        --checkpoint runs/masterkey_small/learned/last.pt

Steps (all deterministic for a given checkpoint and seed):

1. Pool the 7x7 depthwise filters of the layers whose feature maps are at least
   ``min_side`` pixels wide (default 2). In a map of side n only the taps within n - 1 of
   the centre ever see image content; the others never receive a gradient and keep their
   random initial values (shrunk by weight decay). A 1 x 1 map trains the centre tap
   alone, a 2 x 2 map the central 3 x 3 taps, where the master key filters concentrate
   their mass; the untrained outer taps are zero-mean noise that averages out in the
   cluster centres.
2. Cluster them into 8 master filters with :func:`scalespace_mk.networks.checkpoint.extract`
   (sign-invariant spherical k-means: zero-mean, unit-l2 filters, invariant to ``a y + b``).
3. Order them like the published 8: the one-to-one matching of extracted and published
   filters that maximises the summed ``|correlation|`` (Hungarian algorithm), and sign each
   extracted filter so that its correlation with its published partner is positive. Slot j
   therefore holds the extracted filter that plays the role of published filter j (type j of
   docs/method.md#models), and the default types 1..8 of ``scalespace-mk fit`` apply.

Arrays follow the stored-weight convention: ``h[r, c]`` with row r top to bottom, centred
coordinates ``x = c - m`` and ``y = m - r`` (y up), used as conv2d weights with no flip.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA_FILES = REPO / "scalespace_mk" / "data_files"
#: Date written into the provenance note (the release date of the data file).
PROVENANCE_DATE = "2026-11-22"
#: Smallest feature-map side (pixels) whose depthwise filters are pooled by default.
MIN_SIDE = 2

__all__ = [
    "MIN_SIDE",
    "MasterFilters",
    "feature_side",
    "main",
    "master_filters",
    "order_like_published",
    "pooled_filters",
    "write_builtin",
]

_STAGE = re.compile(r"(?:^|\.)stages\.(\d+)\.")


def feature_side(name: str, image_size: int) -> int:
    """Side (pixels) of the feature map a ConvNeXt depthwise layer works on.

    Parameters
    ----------
    name : str
        Parameter name such as ``stages.2.blocks.0.conv_dw.weight`` (a wrapper prefix such
        as ``model.`` is allowed).
    image_size : int
        Input resolution (pixels).

    Returns
    -------
    int
        ``image_size // 4 // 2**stage``: the stem has stride 4 and every later stage starts
        with a stride-2 downsampling.

    Raises
    ------
    ValueError
        If ``name`` names no stage (``stages.<i>.``).
    """
    match = _STAGE.search(name)
    if match is None:
        raise ValueError(f"name must contain 'stages.<i>.' (a ConvNeXt layer); got {name!r}")
    return int(image_size) // 4 // 2 ** int(match.group(1))


def pooled_filters(
    source: Any, *, image_size: int, min_side: int = MIN_SIDE
) -> tuple[np.ndarray, list[str]]:
    """The depthwise filters of the layers whose feature maps are at least ``min_side`` wide.

    Parameters
    ----------
    source : mapping or str or path-like
        Checkpoint or state dict (see :func:`scalespace_mk.networks.checkpoint.find_depthwise`).
    image_size : int
        Training resolution of the network (pixels).
    min_side : int
        Smallest feature-map side (pixels) kept; 1 keeps every layer.

    Returns
    -------
    filters : numpy.ndarray, shape [N, k, k]
        float64 filters, layers in checkpoint order.
    layers : list of str
        Names of the layers kept.
    """
    from scalespace_mk.networks.checkpoint import find_depthwise

    layers = find_depthwise(source)
    kept, names = [], []
    for name, weight in layers.items():
        if feature_side(name, image_size) >= min_side:
            kept.append(weight.detach().double().cpu().numpy()[:, 0])
            names.append(name)
    if not kept:
        raise ValueError(
            f"no depthwise layer works on feature maps of at least {min_side} pixels at "
            f"image size {image_size}; lower min_side"
        )
    return np.concatenate(kept), names


def _unit(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return (flat / np.linalg.norm(flat, axis=1, keepdims=True)).reshape(x.shape)


def order_like_published(
    filters: np.ndarray, published: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order and sign extracted filters like the published ones.

    Parameters
    ----------
    filters : numpy.ndarray, shape [8, k, k]
        Extracted master filters (any scale and offset).
    published : numpy.ndarray, shape [8, k, k]
        Published master key filters, in their order (types 1..8).

    Returns
    -------
    ordered : numpy.ndarray, shape [8, k, k]
        Zero-mean, unit-l2 filters; ``ordered[j]`` is the extracted filter matched to
        ``published[j]``, signed so that their correlation is positive.
    perm : numpy.ndarray of int, shape [8]
        ``ordered[j] = sign[j] * unit(filters[perm[j]])``.
    corr : numpy.ndarray, shape [8]
        Correlation (``<unit a, unit b>`` after mean removal, >= 0) of each slot with its
        published partner.

    Notes
    -----
    The matching maximises the summed ``|correlation|`` over all one-to-one assignments
    (:func:`scipy.optimize.linear_sum_assignment`), so two extracted filters never claim
    the same slot even when both resemble the same published filter most.
    """
    from scipy.optimize import linear_sum_assignment

    a, b = _unit(np.asarray(filters, float)), _unit(np.asarray(published, float))
    if a.shape != b.shape:
        raise ValueError(
            f"filters and published must have the same shape; got {a.shape} and {b.shape}"
        )
    c = b.reshape(len(b), -1) @ a.reshape(len(a), -1).T  # [published j, extracted i]
    rows, cols = linear_sum_assignment(-np.abs(c))
    perm = cols[np.argsort(rows)]
    signs = np.sign(c[np.arange(len(b)), perm])
    signs[signs == 0] = 1.0
    ordered = a[perm] * signs[:, None, None]
    corr = np.abs(c[np.arange(len(b)), perm])
    return ordered, perm, corr


@dataclass
class MasterFilters:
    """Master filters extracted from a run, ordered like the published 8.

    Attributes
    ----------
    filters : numpy.ndarray, shape [8, k, k]
        Zero-mean, unit-l2 filters; slot j plays the role of published filter j + 1.
    share, mean_abs_cosine : numpy.ndarray, shape [8]
        Fraction of the pooled filters in each slot's cluster and the members' mean
        ``|cos|`` with it.
    corr_published : numpy.ndarray, shape [8]
        Correlation of each slot with its published partner.
    explained : float
        Share of the pooled filters' variance (after mean removal) explained by their best
        ``a x_j + b``.
    count : int
        Number of pooled filters.
    layers : list of str
        Layers pooled.
    min_side, seed : int
        Settings of the extraction.
    """

    filters: np.ndarray
    share: np.ndarray
    mean_abs_cosine: np.ndarray
    corr_published: np.ndarray
    explained: float
    count: int
    layers: list[str] = field(repr=False)
    min_side: int = MIN_SIDE
    seed: int = 0


def master_filters(
    source: Any,
    *,
    image_size: int,
    published: np.ndarray,
    min_side: int = MIN_SIDE,
    seed: int = 0,
) -> MasterFilters:
    """Extract 8 master filters from a checkpoint and order them like the published 8.

    Parameters
    ----------
    source : mapping or str or path-like
        Training checkpoint (or state dict) of a ConvNeXt with learned depthwise filters.
    image_size : int
        Its training resolution (pixels); selects the layers with :func:`feature_side`.
    published : numpy.ndarray, shape [8, k, k]
        The published filters (``scalespace_mk.analysis.filters.load_filters()``).
    min_side : int
        Smallest feature-map side of the pooled layers.
    seed : int
        Seed of the k-means restarts.

    Returns
    -------
    MasterFilters
    """
    from scalespace_mk.networks.checkpoint import extract

    pooled, layers = pooled_filters(source, image_size=image_size, min_side=min_side)
    result = extract(pooled, k=len(published), seed=seed)
    ordered, perm, corr = order_like_published(result.filters, published)
    return MasterFilters(
        filters=ordered,
        share=result.share[perm],
        mean_abs_cosine=result.mean_abs_cosine[perm],
        corr_published=corr,
        explained=float(result.explained),
        count=int(pooled.shape[0]),
        layers=layers,
        min_side=min_side,
        seed=seed,
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_builtin(
    masters: MasterFilters,
    *,
    run: dict[str, Any],
    out_dir: str | Path = DATA_FILES,
    command: str,
) -> tuple[Path, Path]:
    """Write ``builtin_filters.npy`` and its provenance note ``builtin_filters.md``.

    Parameters
    ----------
    masters : MasterFilters
        The ordered master filters (:func:`master_filters`).
    run : dict
        Facts about the training run: ``config`` (the stored TrainConfig as a dict),
        ``val_acc`` (final top-1 accuracy), ``checkpoint`` (path) and optionally
        ``census_types`` (best census type of each slot) and ``census_r2``.
    out_dir : path-like
        Folder of the two files (default: the package's ``data_files``).
    command : str
        The command line that produced the files (written into the note).

    Returns
    -------
    (Path, Path)
        Paths of the ``.npy`` file and the ``.md`` note; both written atomically.
    """
    from scalespace_mk._io import atomic_path
    from scalespace_mk.analysis.filters import save_filters

    out_dir = Path(out_dir)
    npy = save_filters(out_dir / "builtin_filters.npy", masters.filters.astype(np.float64))
    digest = _sha256(npy)
    cfg = run["config"]
    lines = [
        "# builtin_filters.npy: provenance",
        "",
        "Eight 7x7 master filters extracted from the depthwise filters of a ConvNeXt-V2 that",
        "scalespace_mk trained itself on its offline `builtin` natural-image patches. Load",
        'them with `scalespace_mk.analysis.filters.load_filters("builtin")` or',
        "`--filters builtin`.",
        "",
        "| field | value |",
        "|---|---|",
        f"| file | `scalespace_mk/data_files/builtin_filters.npy`, float64, shape "
        f"{list(masters.filters.shape)} |",
        f"| sha256 | `{digest}` |",
        f"| date | {PROVENANCE_DATE} |",
        "| script | `experiments/make_builtin_filters.py` (training: "
        "`experiments/masterkey_small.py`) |",
        f"| command | `{command}` |",
        f"| training run | `{run.get('checkpoint', '?')}` |",
        f"| model | `{cfg['model']}`, depthwise filters `{cfg['dwconv']}` (7x7) |",
        f"| data | `{cfg['data']}` at {cfg['image_size']} x {cfg['image_size']} pixels |",
        f"| training | {cfg['epochs']} epochs, batch {cfg['batch_size']}, lr {cfg['lr']} per "
        f"256 samples, weight decay {cfg['weight_decay']}, augment `{cfg['augment']}`, "
        f"seed {cfg['seed']} |",
        f"| top-1 validation accuracy of the run | {run['val_acc']:.4f} |",
        f"| pooled filters | {masters.count} from {len(masters.layers)} layers with feature "
        f"maps >= {masters.min_side} px |",
        f"| extraction | `checkpoint.extract(k=8, seed={masters.seed})`; variance explained "
        f"by the best `a x_j + b`: {masters.explained:.4f} |",
        "",
        "## Order and type of each filter",
        "",
        "Slot j holds the extracted filter matched to published filter j (the one-to-one",
        "matching of largest summed |correlation|), signed to correlate positively with it, so",
        "the types are **1, 2, 3, 4, 5, 6, 7, 8** in this order (the defaults of",
        "`fit_filters` and `scalespace-mk fit`). Every filter is zero-mean with unit l2 norm;",
        "y points up (`x = c - m`, `y = m - r`), stored weights are used with no flip.",
        "",
        "| slot / type | corr. with published | share of pooled filters | mean abs cos "
        "| census best type (R^2) |",
        "|---|---|---|---|---|",
    ]
    ctypes = run.get("census_types")
    cr2 = run.get("census_r2")
    for j in range(len(masters.filters)):
        best = f"{ctypes[j]} ({cr2[j]:.3f})" if ctypes is not None and cr2 is not None else "-"
        lines.append(
            f"| {j + 1} | {masters.corr_published[j]:.3f} | {masters.share[j]:.3f} | "
            f"{masters.mean_abs_cosine[j]:.3f} | {best} |"
        )
    lines += [
        "",
        "A low correlation means that no extracted filter resembles that published filter",
        "closely: the slot then holds the best of the remaining ones, and fits of its type",
        "describe it less well (see docs/results.md).",
    ]
    fits = run.get("fits") or {}
    if fits:
        lines += [
            "",
            "## Fitting methods checked on these filters",
            "",
            "| method | types 1..8 (default) | census best types |",
            "|---|---|---|",
        ]
        for method, (default, census_types) in fits.items():
            lines.append(f"| {method} | {default} | {census_types} |")
        if ctypes is not None:
            lines += [
                "",
                "The census best types in slot order are "
                f"`--types {','.join(str(t) for t in ctypes)}`.",
            ]
    lines.append("")
    md = out_dir / "builtin_filters.md"
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines))
    return npy, md


def _fit_status(filters: np.ndarray, types: list[int] | None, method: str) -> str:
    """``"ok"`` or the first line of the error of :func:`scalespace_mk.analysis.fit.fit_filters`."""
    from scalespace_mk.analysis.fit import fit_filters

    try:
        fit_filters(filters, types, method=method)
    except ValueError as exc:
        return "fails: " + str(exc).splitlines()[0].split(";")[0].replace("|", "/")
    return "ok"


def _census_of(filters: np.ndarray) -> tuple[list[int], list[float]]:
    from scalespace_mk.analysis.census import census

    res = census(filters)
    return [int(t) for t in res.type], [float(r) for r in res.r2]


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python experiments/make_builtin_filters.py --checkpoint CKPT``."""
    parser = argparse.ArgumentParser(
        description="Extract 8 master filters from a learned run and write "
        "scalespace_mk/data_files/builtin_filters.npy with its provenance note."
    )
    parser.add_argument(
        "--checkpoint",
        default=str(REPO / "runs" / "masterkey_small" / "learned" / "last.pt"),
        help="training checkpoint of the learned run (default: %(default)s)",
    )
    parser.add_argument("--out-dir", default=str(DATA_FILES), help="default: %(default)s")
    parser.add_argument("--min-side", type=int, default=MIN_SIDE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--check-methods",
        default="A,B,C1,D1",
        help="fitting methods tried on the filters and reported in the note (default %(default)s)",
    )
    args = parser.parse_args(argv)

    from scalespace_mk.analysis.filters import load_filters
    from scalespace_mk.training.train import load_training_checkpoint

    ckpt = load_training_checkpoint(args.checkpoint)
    cfg = ckpt["config"]
    if cfg["dwconv"] != "learned":
        raise SystemExit(f"{args.checkpoint} is a {cfg['dwconv']!r} run; a learned run is needed")
    history = [json.loads(h) for h in ckpt.get("history", [])]
    if not history:
        raise SystemExit(f"{args.checkpoint} holds no finished epoch")
    masters = master_filters(
        ckpt["model"],
        image_size=int(cfg["image_size"]),
        published=load_filters(),
        min_side=args.min_side,
        seed=args.seed,
    )
    types, r2 = _census_of(masters.filters)
    fits = {
        m: (_fit_status(masters.filters, None, m), _fit_status(masters.filters, types, m))
        for m in filter(None, (t.strip() for t in args.check_methods.split(",")))
    }
    try:
        rel = Path(args.checkpoint).resolve().relative_to(REPO)
    except ValueError:
        rel = Path(args.checkpoint)
    command = "python experiments/make_builtin_filters.py --checkpoint " + str(rel)
    if args.min_side != MIN_SIDE:
        command += f" --min-side {args.min_side}"
    if args.seed:
        command += f" --seed {args.seed}"
    npy, md = write_builtin(
        masters,
        run={
            "config": cfg,
            "val_acc": float(history[-1]["val_acc"]),
            "checkpoint": str(rel),
            "census_types": types,
            "census_r2": r2,
            "fits": fits,
        },
        out_dir=args.out_dir,
        command=command,
    )
    print(f"wrote {npy} (sha256 {_sha256(npy)}) and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
