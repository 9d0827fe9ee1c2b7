"""What a network decides after its filters are substituted, measured against the original.

Per crop: top-1 agreement (the substitute's arg-max equals the original's), top-5 overlap
(``|top5(original) & top5(substitute)| / 5``), ``KL(p_original || p_substitute)`` in nats, and,
where true labels exist, top-1 accuracy of each network. Each is averaged over crops (every
crop weighs the same) and given a percentile 95 % interval by a bootstrap over PHOTOS: a
replicate draws photos with replacement and takes all their crops, so crops of one photo,
which are not independent, move together.

Layer-wise views take the original network and a fully substituted copy and build hybrids
(:func:`mix_layers`): each substituted layer alone (sensitivity), and the first / last ``n``
layers in network order (progressive curves).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "Agreement",
    "Estimate",
    "bootstrap_over_photos",
    "compare",
    "crop_measures",
    "layer_sensitivity",
    "mix_layers",
    "predict",
    "progressive",
]


@dataclass(frozen=True)
class Estimate:
    """A mean over crops with its bootstrap interval (``low``, ``high``; photos resampled)."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        """``{"value", "low", "high"}``."""
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Agreement:
    """How far a substitute network agrees with the original on a crop set.

    ``accuracy`` and ``accuracy_original`` are None without labels.
    """

    top1: Estimate
    top5: Estimate
    kl: Estimate
    accuracy: Estimate | None
    accuracy_original: Estimate | None
    crops: int
    photos: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: each measure as ``{"value", "low", "high"}`` (or null)."""
        return {
            "top1_agreement": self.top1.to_dict(),
            "top5_overlap": self.top5.to_dict(),
            "kl": self.kl.to_dict(),
            "accuracy": None if self.accuracy is None else self.accuracy.to_dict(),
            "accuracy_original": (
                None if self.accuracy_original is None else self.accuracy_original.to_dict()
            ),
            "crops": self.crops,
            "photos": self.photos,
        }


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
    """Logits of ``model`` (in eval mode) for ``images [n, 3, H, W]``, as ``float64 [n, C]``.

    Batches are moved to the model's device; the logits come back on the CPU. The model's
    train/eval mode is restored afterwards.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    first = next(iter(model.parameters()), None)
    device = images.device if first is None else first.device
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = [
                model(images[i : i + batch_size].to(device)).double().cpu()
                for i in range(0, len(images), batch_size)
            ]
    finally:
        model.train(was)
    logits = torch.cat(out)
    if not torch.isfinite(logits).all():
        raise ValueError("the network produced non-finite logits on these images")
    return logits


def crop_measures(reference: torch.Tensor, logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-crop measures of ``logits [n, C]`` against ``reference [n, C]``.

    Returns ``{"top1": float64 0/1 [n], "top5": overlap in {0, .2, ..., 1} [n], "kl": [n]}``
    with ``kl = sum_c p_ref log(p_ref / p)`` (softmax in float64, nats).
    """
    if reference.shape != logits.shape or reference.ndim != 2:
        raise ValueError(
            f"reference and logits must both be [n, classes]; got {tuple(reference.shape)} "
            f"and {tuple(logits.shape)}"
        )
    ref, sub = reference.double(), logits.double()
    top1 = (ref.argmax(1) == sub.argmax(1)).double()
    k = min(5, ref.shape[1])
    a, b = ref.topk(k, dim=1).indices, sub.topk(k, dim=1).indices
    top5 = (a[:, :, None] == b[:, None, :]).any(2).double().sum(1) / k
    lp, lq = torch.log_softmax(ref, 1), torch.log_softmax(sub, 1)
    kl = (lp.exp() * (lp - lq)).sum(1).clamp_min(0.0)
    return {"top1": top1, "top5": top5, "kl": kl}


def bootstrap_over_photos(
    values: torch.Tensor | np.ndarray,
    photo: torch.Tensor | np.ndarray,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Crop-weighted mean of ``values`` with a percentile interval from resampling photos.

    Parameters
    ----------
    values : array [n]
        One number per crop.
    photo : int array [n]
        The photo of each crop (any integers).
    n_boot : int
        Bootstrap replicates (>= 100). A replicate draws as many photos as there are, with
        replacement, and takes the mean over all crops of the drawn photos.
    level : float
        Interval coverage in (0, 1).
    seed : int
        Seed of the resampling (numpy ``default_rng``).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    g = np.asarray(photo).ravel()
    if v.shape != g.shape or v.size == 0:
        raise ValueError(
            f"values and photo must be equally long and non-empty; got {v.size}, {g.size}"
        )
    if not np.isfinite(v).all():
        raise ValueError("values must be finite")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot must be an integer >= 100; got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1); got {level!r}")
    _, idx = np.unique(g, return_inverse=True)
    sums = np.bincount(idx, weights=v)
    counts = np.bincount(idx).astype(np.float64)
    p = sums.size
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, p, size=(n_boot, p))
    weights = np.zeros((n_boot, p))
    np.add.at(weights, (np.arange(n_boot)[:, None], draws), 1.0)
    reps = (weights @ sums) / (weights @ counts)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(reps, [alpha, 1.0 - alpha])
    value = float(sums.sum() / counts.sum())
    return Estimate(value, float(low), float(high))


def compare(
    reference: torch.Tensor,
    logits: torch.Tensor,
    photo: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> Agreement:
    """All measures of ``logits`` against the original's ``reference`` logits.

    ``photo [n]`` gives each crop's photo (the bootstrap unit); ``labels [n]`` (optional)
    the true classes, adding top-1 accuracy of both networks. Every measure uses the same
    bootstrap draws (same ``seed``).
    """
    per = crop_measures(reference, logits)
    kw = {"n_boot": n_boot, "seed": seed}
    acc = acc_ref = None
    if labels is not None:
        lab = labels.to(reference.device)
        acc = bootstrap_over_photos((logits.argmax(1) == lab).double(), photo, **kw)
        acc_ref = bootstrap_over_photos((reference.argmax(1) == lab).double(), photo, **kw)
    return Agreement(
        top1=bootstrap_over_photos(per["top1"], photo, **kw),
        top5=bootstrap_over_photos(per["top5"], photo, **kw),
        kl=bootstrap_over_photos(per["kl"], photo, **kw),
        accuracy=acc,
        accuracy_original=acc_ref,
        crops=int(len(photo)),
        photos=int(torch.unique(torch.as_tensor(photo)).numel()),
    )


def _module_name(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


def mix_layers(original: nn.Module, substitute: nn.Module, names: Sequence[str]) -> nn.Module:
    """A copy of ``original`` whose modules ``names`` are (copies of) those of ``substitute``.

    ``names`` are module names (a trailing ``.weight`` is dropped). Everything else, including
    BatchNorm statistics, is the original's.
    """
    out = copy.deepcopy(original)
    for raw in names:
        name = _module_name(raw)
        try:
            module = substitute.get_submodule(name)
            parent_name, _, child = name.rpartition(".")
            parent = out.get_submodule(parent_name) if parent_name else out
            out.get_submodule(name)
        except AttributeError as exc:
            raise ValueError(f"layer {name!r} is not a module of both networks") from exc
        setattr(parent, child, copy.deepcopy(module))
    return out


def layer_sensitivity(
    original: nn.Module,
    substitute: nn.Module,
    names: Sequence[str],
    images: torch.Tensor,
    photo: torch.Tensor,
    *,
    reference: torch.Tensor | None = None,
    batch_size: int = 64,
    n_boot: int = 2000,
    seed: int = 0,
    on_layer: Any = None,
) -> list[dict[str, Any]]:
    """Each substituted layer alone: ``[{"name", "index", **Agreement.to_dict()}]``.

    ``reference`` (the original's logits on ``images``) is computed when not given;
    ``on_layer(i, name)`` is called before each layer (progress).
    """
    if reference is None:
        reference = predict(original, images, batch_size=batch_size)
    out = []
    for i, name in enumerate(names):
        if on_layer is not None:
            on_layer(i, name)
        logits = predict(mix_layers(original, substitute, [name]), images, batch_size=batch_size)
        agree = compare(reference, logits, photo, n_boot=n_boot, seed=seed)
        out.append({"name": _module_name(name), "index": i, **agree.to_dict()})
    return out


def progressive(
    original: nn.Module,
    substitute: nn.Module,
    names: Sequence[str],
    images: torch.Tensor,
    photo: torch.Tensor,
    *,
    order: str = "first",
    counts: Sequence[int] | None = None,
    reference: torch.Tensor | None = None,
    batch_size: int = 64,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Agreement with the first (``order="first"``) or last ``n`` of ``names`` substituted.

    ``names`` are in network order; ``counts`` default to ``0, 1, ..., len(names)``. Returns
    ``[{"n", **Agreement.to_dict()}]``; at ``n = 0`` the network is the original.
    """
    if order not in ("first", "last"):
        raise ValueError(f"order must be 'first' or 'last'; got {order!r}")
    counts = list(range(len(names) + 1)) if counts is None else [int(c) for c in counts]
    if any(c < 0 or c > len(names) for c in counts):
        raise ValueError(f"counts must lie in 0..{len(names)}; got {counts}")
    if reference is None:
        reference = predict(original, images, batch_size=batch_size)
    out = []
    for n in counts:
        chosen = list(names[:n]) if order == "first" else list(names[len(names) - n :])
        logits = predict(mix_layers(original, substitute, chosen), images, batch_size=batch_size)
        agree = compare(reference, logits, photo, n_boot=n_boot, seed=seed)
        out.append({"n": n, **agree.to_dict()})
    return out
