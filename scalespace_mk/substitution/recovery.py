"""Recovery after substitution, without labels, as the papers recover by fine-tuning.

(a) :func:`recalibrate_batchnorm`: re-estimate every BatchNorm layer's running mean and
variance on calibration crops (statistics reset, then a cumulative average over batches;
only the BatchNorm layers run in training mode, no parameter changes).

(b) :func:`distill`: train the substituted network (student) to match the original (teacher)
on calibration crops, loss ``T^2 KL(softmax(t/T) || softmax(s/T))`` on logits, no labels, for
``steps`` steps of AdamW. Everything is trained EXCEPT the substituted filters: in each
substituted module a free filter (a parameter shaped ``[C, 1, k, k]``) is frozen, while what
an analytic layer exposes (learnable scales, N-jet coefficients, a bias) trains, so the
filters stay idealised. Frozen analytic filters are buffers and never train. BatchNorm layers
keep their (re-estimated) statistics during distillation (eval mode; their affine parameters
train). Evaluation is on held-out photos at chosen steps.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from scalespace_mk.substitution.measures import Agreement, compare, predict

__all__ = [
    "DistillResult",
    "distill",
    "recalibrate_batchnorm",
    "split_parameters",
]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, images: torch.Tensor, *, batch_size: int = 64
) -> nn.Module:
    """Re-estimate the running statistics of every BatchNorm layer of ``model`` in place.

    Statistics are reset and accumulated as a cumulative average over ``ceil(n / batch_size)``
    batches of ``images`` whose sizes differ by at most one (``momentum=None``); only
    BatchNorm layers run in training mode; parameters are not touched. Each layer's momentum
    and the model's train/eval mode are restored. Returns ``model``. A model without
    BatchNorm is returned unchanged.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    if len(images) < 2:
        raise ValueError("BatchNorm re-estimation needs at least 2 calibration crops")
    was = {m: m.training for m in model.modules()}
    momenta = [bn.momentum for bn in bns]
    try:
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        # ceil(n / batch_size) batches whose sizes differ by at most one: the cumulative
        # average over batches then weighs every crop (almost exactly) alike
        param = next(iter(model.parameters()), None)
        device = images.device if param is None else param.device
        for batch in torch.tensor_split(images, -(-len(images) // batch_size)):
            model(batch.to(device))
    finally:
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        for module, mode in was.items():
            module.training = mode
    return model


def _module_of(name: str, modules: Sequence[str]) -> str | None:
    for m in modules:
        if name == m or name.startswith(m + "."):
            return m
    return None


def split_parameters(model: nn.Module, substituted: Sequence[str]) -> tuple[list[str], list[str]]:
    """Names of the parameters :func:`distill` trains and of those it freezes.

    Frozen: a parameter shaped ``[C, 1, k, k]`` inside a substituted module (a free filter,
    e.g. the ``random`` / ``noise`` controls or a copied original). Trained: all else.
    """
    subs = [s[: -len(".weight")] if s.endswith(".weight") else s for s in substituted]
    train, frozen = [], []
    for name, p in model.named_parameters():
        owner = _module_of(name, subs)
        if owner is not None and p.ndim == 4 and p.shape[1] == 1:
            frozen.append(name)
        else:
            train.append(name)
    return train, frozen


@dataclass
class DistillResult:
    """What :func:`distill` did and what it measured.

    ``curve`` lists ``(step, Agreement)`` on the evaluation crops (step 0 is before any
    update); ``losses`` the training loss of every step; ``trained`` / ``frozen`` parameter
    names; ``seconds`` the wall time of the training steps.
    """

    steps: int
    seed: int
    curve: list[tuple[int, Agreement]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (parameter counts rather than names)."""
        return {
            "steps": self.steps,
            "seed": self.seed,
            "curve": [{"step": s, **a.to_dict()} for s, a in self.curve],
            "loss_first": self.losses[0] if self.losses else None,
            "loss_last": self.losses[-1] if self.losses else None,
            "trained_tensors": len(self.trained),
            "frozen_tensors": len(self.frozen),
            "seconds": self.seconds,
            "settings": dict(self.settings),
        }


def distill(
    student: nn.Module,
    teacher: nn.Module,
    images: torch.Tensor,
    *,
    steps: int,
    substituted: Sequence[str] = (),
    seed: int = 0,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    batch_size: int = 32,
    temperature: float = 1.0,
    flip: bool = True,
    eval_images: torch.Tensor | None = None,
    eval_photo: torch.Tensor | None = None,
    eval_reference: torch.Tensor | None = None,
    eval_at: Sequence[int] | None = None,
    n_boot: int = 2000,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[nn.Module, DistillResult]:
    """Distil ``teacher`` into a copy of ``student`` on ``images`` (no labels).

    Parameters
    ----------
    student, teacher : nn.Module
        The substituted and the original network (neither is modified; the trained copy of
        ``student`` is returned).
    images : tensor [n, 3, H, W]
        Calibration crops. Each step draws ``batch_size`` of them (a fresh permutation per
        pass), each flipped left-right with probability 1/2 when ``flip``.
    steps : int
        Optimiser steps (>= 0).
    substituted : sequence of str
        Module names of the substituted layers (see :func:`split_parameters`).
    seed : int
        Seeds the batch order and flips.
    lr, weight_decay : float
        AdamW settings (constant learning rate).
    temperature : float
        Softmax temperature ``T`` of the distillation loss (> 0).
    eval_images, eval_photo, eval_reference : tensor, optional
        Held-out crops, their photo indices and the teacher's logits on them (computed when
        missing); with them, the student is evaluated at step 0, at ``eval_at`` steps and
        at ``steps``.
    on_step : callable, optional
        ``on_step(step, loss)`` after every step (progress).

    Returns
    -------
    (nn.Module, DistillResult)
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0; got {steps!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0; got {lr!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    if len(images) < 1:
        raise ValueError("distillation needs calibration crops")
    model = copy.deepcopy(student)
    model.eval()  # BatchNorm keeps its statistics, dropout off; gradients still flow
    teacher.eval()
    train_names, frozen = split_parameters(model, substituted)
    named = dict(model.named_parameters())
    for name, p in named.items():
        p.requires_grad_(name in set(train_names))
    params = [named[n] for n in train_names]
    gen = torch.Generator().manual_seed(int(seed))
    first = next(iter(model.parameters()), None)
    device = images.device if first is None else first.device
    with torch.no_grad():
        t_plain = predict(teacher, images).float()
        t_flip = predict(teacher, images.flip(-1)).float() if flip else t_plain
    evaluate = eval_images is not None
    if evaluate:
        if eval_photo is None:
            raise ValueError("eval_photo is required with eval_images")
        if eval_reference is None:
            eval_reference = predict(teacher, eval_images)
    marks = sorted({0, steps} | {int(s) for s in (eval_at or ())})
    if any(s < 0 or s > steps for s in marks):
        raise ValueError(f"eval_at must lie in 0..{steps}; got {list(eval_at or [])}")
    result = DistillResult(
        steps=steps,
        seed=int(seed),
        trained=train_names,
        frozen=frozen,
        settings={
            "lr": lr,
            "weight_decay": weight_decay,
            "batch_size": batch_size,
            "temperature": temperature,
            "flip": flip,
            "optimizer": "AdamW",
            "batchnorm": "statistics fixed (eval mode), affine trained",
        },
    )

    def _eval(step: int) -> None:
        if evaluate and step in marks:
            logits = predict(model, eval_images)
            result.curve.append(
                (step, compare(eval_reference, logits, eval_photo, n_boot=n_boot, seed=seed))
            )

    _eval(0)
    if steps and params:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        order = torch.empty(0, dtype=torch.int64)
        start = time.perf_counter()
        for step in range(1, steps + 1):
            if len(order) < batch_size:
                order = torch.cat([order, torch.randperm(len(images), generator=gen)])
            idx, order = order[:batch_size], order[batch_size:]
            x, t = images[idx], t_plain[idx]
            x, t = x.to(device), t.to(device)
            if flip:
                mask = torch.rand(len(idx), generator=gen) < 0.5
                mask = mask.to(device)
                x = torch.where(mask[:, None, None, None], x.flip(-1), x)
                t = torch.where(mask[:, None], t_flip[idx].to(device), t)
            s = model(x)
            loss = (
                torch.nn.functional.kl_div(
                    torch.log_softmax(s / temperature, 1),
                    torch.log_softmax(t / temperature, 1),
                    reduction="batchmean",
                    log_target=True,
                )
                * temperature**2
            )
            if not torch.isfinite(loss):
                raise ValueError(f"distillation loss became non-finite at step {step}; lower lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            result.losses.append(value)
            if on_step is not None:
                on_step(step, value)
            result.seconds = time.perf_counter() - start
            _eval(step)
    elif steps:
        for step in range(1, steps + 1):
            _eval(step)
    for p in model.parameters():
        p.requires_grad_(True)
    return model, result
