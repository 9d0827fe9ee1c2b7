"""Substitute idealised filters for the depthwise convolutions of any network.

:func:`substitute_depthwise` returns a copy of any ``nn.Module`` in which every depthwise
``nn.Conv2d`` (``groups == in_channels == out_channels``, odd square kernel 3..15) is replaced
by a :class:`SubstitutedDepthwiseConv2d` whose kernel is an analytic model of the original
filter, or a control, and reports how close each substitute is to the filter it replaced.
Stride, dilation, padding, padding mode and bias are kept: the substitute runs the very
convolution of the original module (``nn.Conv2d._conv_forward``) with another weight.

Kinds (``kind=``):

- ``"census"``: per filter the best of the 8 master-key types with its own scales and linear
  shift ``a g + b`` (:func:`scalespace_mk.analysis.census.census`), built by
  :class:`~scalespace_mk.networks.layers.AnalyticDepthwiseConv2d`;
- ``"method:X"`` (X one of :data:`~scalespace_mk.networks.candidates.CANDIDATES`, e.g.
  ``A``, ``A-exact``, ``B``, ``C1``, ``D1``): the paper's replacement experiment, each
  filter replaced by the best linear shift ``a x_j + b`` of the 8 idealised models fitted
  by method X (:func:`~scalespace_mk.networks.candidates.candidate_filters`,
  :func:`~scalespace_mk.networks.candidates.linear_shift_replace`);
- ``"njet:N"``: the least-squares discrete N-jet of each filter (one scale and an offset,
  :func:`scalespace_mk.analysis.jets.family_census`), built by
  :class:`~scalespace_mk.networks.layers.NJetDepthwiseConv2d`;
- ``"masterkey"``: the best linear shift of the 8 published (learned) master key filters;
  7x7 only (other sizes are skipped with the reason);
- ``"noise"`` (control): the original filter plus Gaussian noise scaled, per filter, to
  exactly the residual energy ``||y - fit||^2`` of a named fit (option ``fit``, default
  ``"census"``): the same distance from the original as the fit, in a random direction.
  The noise is made zero-mean (option ``zero_mean``, default True), as the residual of a
  fit with an offset is, so the filter's mean is kept as the fit keeps it. At zero residual
  energy it is the identity;
- ``"random"`` (control): frozen i.i.d. Gaussian filters, each scaled to the l2 norm of the
  filter it replaces.

Frozen substitutes hold their kernel as a buffer ``weight`` (computed once, no work per
forward). Learnable ones (``census`` or ``njet:N`` with ``learnable=True``) hold the
generating layer of :mod:`scalespace_mk.networks.layers` as ``generator`` and keep its exact
gradients in the scales, gains, offsets or N-jet coefficients (its kernel cache applies).

Conventions (docs/theory.md): stored depthwise weights ``[C, 1, k, k]`` are cross-correlation
kernels used without a flip, rows top to bottom, ``x = c - m``, ``y = m - r`` (y up) for
``m = k // 2``; ``sigma`` is a standard deviation (``s = sigma**2``). A substitute built from
an exact model of the stored filter therefore reproduces the conv's output to float
tolerance.

Random draws use ``numpy.random.default_rng([seed, index])`` with ``index`` the layer's
position in :func:`depthwise_convs`, so a layer's draw does not depend on which other layers
are selected.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: F401  (used by subclasses through _conv_forward)
from torch import nn

from scalespace_mk._json import number as _json_number

__all__ = [
    "KINDS",
    "KERNEL_SIZES",
    "LayerSubstitution",
    "SubstitutedDepthwiseConv2d",
    "SubstitutionReport",
    "depthwise_convs",
    "parse_kind",
    "substitute_depthwise",
]

#: Base names of the substitution kinds (``method`` and ``njet`` take an argument).
KINDS = ("census", "method", "njet", "masterkey", "noise", "random")
#: Kernel sizes a substitute is built for (odd, square).
KERNEL_SIZES = (3, 5, 7, 9, 11, 13, 15)

_OPTIONS: dict[str, tuple[str, ...]] = {
    "census": ("learnable", "types", "mode"),
    "method": ("filters", "learnable", "learn_scales"),
    "njet": ("learnable", "anisotropic", "allow_saturated"),
    "masterkey": ("filters", "learnable"),
    "noise": ("fit", "fit_options", "zero_mean"),
    "random": (),
}


# --------------------------------------------------------------------------------------
# finding depthwise convs


def _is_depthwise(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == module.in_channels == module.out_channels
        and not isinstance(module, SubstitutedDepthwiseConv2d)
    )


def depthwise_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every depthwise ``nn.Conv2d`` of a module, in forward (registration) order.

    Parameters
    ----------
    model : nn.Module
        Any module.

    Returns
    -------
    list of (str, nn.Conv2d)
        ``(name, conv)`` for each ``nn.Conv2d`` with ``groups == in_channels ==
        out_channels`` (any kernel size; :func:`substitute_depthwise` skips the ones it
        cannot model, with the reason), e.g. ``("features.1.conv.0.0", Conv2d(32, 32, ...))``
        in MobileNetV2; ``name + ".weight"`` is the conv's state-dict key. The index in this
        list is the layer index used by ``layers=`` and by the seeds of the controls.
        Order: ``model.named_modules()``, which is the order the modules were registered;
        for sequential networks (MobileNetV2, ConvNeXt) that is the forward order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    return [(name, m) for name, m in model.named_modules() if _is_depthwise(m)]


def _unsupported(conv: nn.Conv2d) -> str | None:
    kh, kw = conv.kernel_size
    if kh != kw:
        return f"kernel {kh}x{kw} is not square"
    if kh not in KERNEL_SIZES:
        return f"kernel {kh}x{kw} is not an odd size in 3..15"
    if conv.weight.is_meta:
        return "weights are on the meta device (no values to model)"
    return None


# --------------------------------------------------------------------------------------
# the substitute module


class SubstitutedDepthwiseConv2d(nn.Module):
    """A depthwise conv with another kernel: same stride, padding, dilation, mode and bias.

    Built by :func:`substitute_depthwise`; two concrete forms: a frozen kernel stored as the
    buffer ``weight`` [C, 1, k, k] (no work per forward), or a learnable generating layer
    ``generator`` (:mod:`scalespace_mk.networks.layers`) whose kernel is rebuilt (or taken
    from its cache) at each forward with exact gradients. The bias is a parameter copied
    from the original conv (trainable like any bias).

    Attributes
    ----------
    in_channels, out_channels, groups : int
        C, as in the original conv.
    kernel_size, stride, padding, dilation, padding_mode :
        Copied from the original conv.
    substitute_kind : str
        The kind it was built with (``"census"``, ``"method:B"``, ``"random"``, ...).
    """

    def __init__(self, conv: nn.Conv2d, kind: str) -> None:
        super().__init__()
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.groups = conv.groups
        self.kernel_size = tuple(conv.kernel_size)
        self.stride = tuple(conv.stride)
        self.padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
        self.dilation = tuple(conv.dilation)
        self.padding_mode = conv.padding_mode
        self._reversed_padding_repeated_twice = list(conv._reversed_padding_repeated_twice)
        self.substitute_kind = kind
        if conv.bias is None:
            self.bias = None
        else:
            self.bias = nn.Parameter(
                conv.bias.detach().clone(), requires_grad=conv.bias.requires_grad
            )

    def kernel(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The current kernel ``[C, 1, k, k]`` (cross-correlation, y up, no flip)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The original conv's operation with the substitute kernel.

        Parameters
        ----------
        x : torch.Tensor, shape [B, C, H, W]

        Returns
        -------
        torch.Tensor, shape [B, C, H', W']
            As the original conv (stride, padding, dilation, padding mode and bias kept).
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(
                "input must be a floating tensor [B, C, H, W]; got "
                f"{getattr(x, 'dtype', type(x).__name__)}"
            )
        weight = self.kernel(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.Conv2d._conv_forward(self, x, weight, bias)  # type: ignore[arg-type]

    def to_conv2d(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` with the same configuration and the current kernel."""
        with torch.no_grad():
            w = self.kernel().detach()
            conv = nn.Conv2d(
                self.in_channels,
                self.out_channels,
                self.kernel_size,
                stride=self.stride,
                padding=self.padding,
                dilation=self.dilation,
                groups=self.groups,
                bias=self.bias is not None,
                padding_mode=self.padding_mode,
                device=w.device,
                dtype=w.dtype,
            )
            conv.weight.copy_(w)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv.train(self.training)

    def extra_repr(self) -> str:  # noqa: D102
        s = (
            f"{self.in_channels}, kernel_size={self.kernel_size}, kind={self.substitute_kind!r}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s + f", bias={self.bias is not None}"


class FrozenDepthwiseSubstitute(SubstitutedDepthwiseConv2d):
    """Frozen substitute: the kernel is the buffer ``weight`` [C, 1, k, k]."""

    weight: torch.Tensor

    def __init__(self, conv: nn.Conv2d, kind: str, weight: torch.Tensor) -> None:
        super().__init__(conv, kind)
        w = weight.detach().to(device=conv.weight.device, dtype=conv.weight.dtype)
        if tuple(w.shape) != tuple(conv.weight.shape):
            raise ValueError(
                f"substitute weight has shape {tuple(w.shape)}; the conv's is "
                f"{tuple(conv.weight.shape)}"
            )
        self.register_buffer("weight", w.clone().contiguous())

    def kernel(self, dtype: torch.dtype | None = None) -> torch.Tensor:  # noqa: D102
        return self.weight if dtype is None else self.weight.to(dtype)


class LearnableDepthwiseSubstitute(SubstitutedDepthwiseConv2d):
    """Learnable substitute: the kernel of ``generator`` (a layer of ``networks.layers``)."""

    def __init__(self, conv: nn.Conv2d, kind: str, generator: nn.Module) -> None:
        super().__init__(conv, kind)
        if getattr(generator, "bias", None) is not None:
            raise ValueError("the generator must have no bias (the substitute holds it)")
        self.generator = generator

    @property
    def weight(self) -> torch.Tensor:
        """The current kernel (the generator's, in its parameter dtype)."""
        return self.generator.kernel()

    def kernel(self, dtype: torch.dtype | None = None) -> torch.Tensor:  # noqa: D102
        return self.generator.kernel(dtype)


# --------------------------------------------------------------------------------------
# the report


@dataclass
class LayerSubstitution:
    """One substituted layer: where it is, what replaced it and how close it is.

    ``r2`` is per channel ``1 - ||y - y'||^2 / ||y - mean y||^2`` of the substitute ``y'``
    against the original filter ``y`` (in float64; 1 for a constant filter reproduced
    exactly, NaN for a constant filter that was not); ``median_r2`` ignores NaN.
    ``counts``: channels per chosen type (``census``, keys ``"1"``..``"8"``), per candidate
    (``method:X``, ``masterkey``, 1-based) or ``{"njet": n}`` of fitted (non-constant)
    filters; empty for the controls.
    """

    name: str
    index: int
    kernel_size: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    channels: int
    kind: str
    r2: np.ndarray = field(repr=False)
    learnable: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def median_r2(self) -> float:
        """Median over channels of ``r2`` (NaN entries ignored; NaN if all are)."""
        finite = self.r2[np.isfinite(self.r2)]
        return float(np.median(finite)) if len(finite) else float("nan")

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict (NaN as null)."""
        return {
            "name": self.name,
            "index": self.index,
            "kernel_size": self.kernel_size,
            "stride": list(self.stride),
            "dilation": list(self.dilation),
            "channels": self.channels,
            "kind": self.kind,
            "learnable": self.learnable,
            "counts": dict(self.counts),
            "median_r2": _json_number(self.median_r2),
            "r2": [_json_number(v) for v in self.r2.tolist()],
        }


@dataclass
class SubstitutionReport:
    """What :func:`substitute_depthwise` did, per layer.

    Attributes
    ----------
    kind : str
        The kind asked for.
    seed : int
    options : dict
        The options passed (``learnable``, ``fit``, ...).
    layers : list of LayerSubstitution
        The substituted layers, in network order.
    skipped : list of dict
        ``{"name", "index", "reason"}`` of each selected depthwise conv left as it was.
    """

    kind: str
    seed: int
    options: dict[str, Any]
    layers: list[LayerSubstitution]
    skipped: list[dict[str, Any]]

    @property
    def r2(self) -> np.ndarray:
        """Per-channel R^2 of every substituted layer, concatenated in network order."""
        if not self.layers:
            return np.zeros(0)
        return np.concatenate([layer.r2 for layer in self.layers])

    @property
    def median_r2(self) -> float:
        """Median R^2 over every substituted channel (NaN ignored)."""
        r2 = self.r2
        finite = r2[np.isfinite(r2)]
        return float(np.median(finite)) if len(finite) else float("nan")

    @property
    def names(self) -> list[str]:
        """Names of the substituted layers."""
        return [layer.name for layer in self.layers]

    def format_table(self) -> str:
        """A plain-text table: one row per substituted layer, then the skipped ones."""
        head = f"{'#':>3}  {'layer':<32} {'k':>3} {'stride':>6} {'dil':>3} {'C':>5}  median R^2"
        rows = [head, "-" * len(head)]
        for layer in self.layers:
            rows.append(
                f"{layer.index:>3}  {layer.name:<32} {layer.kernel_size:>3} "
                f"{layer.stride[0]:>6} {layer.dilation[0]:>3} {layer.channels:>5}  "
                f"{layer.median_r2:10.4f}"
            )
        n = sum(layer.channels for layer in self.layers)
        rows.append(
            f"{len(self.layers)} layers, {n} filters substituted by {self.kind!r}; "
            f"median R^2 {self.median_r2:.4f}"
        )
        for s in self.skipped:
            rows.append(f"skipped {s['index']:>3}  {s['name']}: {s['reason']}")
        return "\n".join(rows)

    def __repr__(self) -> str:
        n = sum(layer.channels for layer in self.layers)
        lines = [
            f"SubstitutionReport(kind={self.kind!r}, seed={self.seed}, layers={len(self.layers)}, "
            f"filters={n}, median_r2={self.median_r2:.4f}, skipped={len(self.skipped)})"
        ]
        table = self.format_table().splitlines()
        if len(table) > 24:
            table = (
                table[:20] + [f"... ({len(table) - 21} more lines: format_table())"] + table[-1:]
            )
        return "\n".join(lines + ["  " + t for t in table])

    def to_pandas(self) -> Any:
        """One row per substituted layer as a ``pandas.DataFrame`` (pandas imported on use).

        Returns
        -------
        pandas.DataFrame
            Columns ``index``, ``layer``, ``kernel_size``, ``stride``, ``dilation``,
            ``channels``, ``kind``, ``median_r2`` (skipped layers are in :attr:`skipped`).

        Raises
        ------
        ImportError
            If pandas is not installed (``pip install pandas``).
        """
        from scalespace_mk._display import import_pandas

        return import_pandas().DataFrame(
            {
                "index": [la.index for la in self.layers],
                "layer": [la.name for la in self.layers],
                "kernel_size": [la.kernel_size for la in self.layers],
                "stride": [la.stride[0] for la in self.layers],
                "dilation": [la.dilation[0] for la in self.layers],
                "channels": [la.channels for la in self.layers],
                "kind": [self.kind] * len(self.layers),
                "median_r2": [la.median_r2 for la in self.layers],
            }
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict: kind, seed, options, median_r2, layers, skipped."""
        return {
            "kind": self.kind,
            "seed": self.seed,
            "options": {k: _jsonable(v) for k, v in self.options.items()},
            "median_r2": _json_number(self.median_r2),
            "filters": int(sum(layer.channels for layer in self.layers)),
            "layers": [layer.to_json() for layer in self.layers],
            "skipped": [dict(s) for s in self.skipped],
        }


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return _json_number(v)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return repr(v)


# --------------------------------------------------------------------------------------
# kinds and options


def parse_kind(kind: Any) -> tuple[str, str | int | None]:
    """Split a kind into its base name and argument: ``"njet:2"`` -> ``("njet", 2)``.

    Raises
    ------
    ValueError
        Naming ``kind`` and the accepted values.
    """
    from scalespace_mk.networks.candidates import CANDIDATES
    from scalespace_mk.scalespace.jets import JET_ORDERS

    accepted = (
        "census, method:X (X in "
        + "|".join(c for c in CANDIDATES)
        + "), njet:N (N in "
        + "|".join(str(n) for n in JET_ORDERS)
        + "), masterkey, noise, random"
    )
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a string ({accepted}); got {type(kind).__name__}")
    base, _, arg = kind.strip().partition(":")
    if base not in KINDS:
        raise ValueError(f"kind must be one of {accepted}; got {kind!r}")
    if base == "method":
        if arg not in CANDIDATES:
            raise ValueError(
                f"kind {kind!r}: the method must be one of {', '.join(CANDIDATES)} "
                f"(e.g. kind='method:B'); got {arg!r}"
            )
        return base, arg
    if base == "njet":
        try:
            order = int(arg)
        except ValueError:
            order = -1
        if order not in JET_ORDERS:
            raise ValueError(
                f"kind {kind!r}: the N-jet order must be one of {JET_ORDERS} (e.g. kind='njet:1')"
            )
        return base, order
    if arg:
        raise ValueError(f"kind {base!r} takes no argument; got {kind!r}")
    return base, None


def _check_options(base: str, kind: str, options: dict[str, Any]) -> dict[str, Any]:
    allowed = _OPTIONS[base]
    extra = sorted(set(options) - set(allowed))
    if extra:
        hint = f"accepted: {', '.join(allowed)}" if allowed else "it takes none"
        raise ValueError(f"options {extra} are not used by kind {kind!r} ({hint})")
    opts = dict(options)
    if "learnable" in opts and not isinstance(opts["learnable"], bool):
        raise TypeError(f"learnable must be True or False; got {opts['learnable']!r}")
    if base == "census":
        types = opts.get("types")
        if types is not None:
            vals = [types] if isinstance(types, int | np.integer) else list(types)
            if not vals or not all(
                isinstance(t, int | np.integer) and not isinstance(t, bool) and 1 <= t <= 8
                for t in vals
            ):
                raise ValueError(
                    f"types must be master-key types among 1..8 (e.g. types=[1, 2, 7]); "
                    f"got {types!r}"
                )
            opts["types"] = sorted({int(t) for t in vals})
    if "learn_scales" in opts:
        if not isinstance(opts["learn_scales"], bool):
            raise TypeError(f"learn_scales must be True or False; got {opts['learn_scales']!r}")
        if opts["learn_scales"] and kind == "method:masterkey":
            raise ValueError(
                "learn_scales needs a fitting method (the learned filters have no scales)"
            )
    if "zero_mean" in opts and not isinstance(opts["zero_mean"], bool):
        raise TypeError(f"zero_mean must be True or False; got {opts['zero_mean']!r}")
    if base == "noise":
        opts.setdefault("zero_mean", True)
        fit = opts.setdefault("fit", "census")
        fbase, _ = parse_kind(fit) if isinstance(fit, str) else (None, None)
        if fbase in (None, "noise", "random"):
            raise ValueError(
                f"fit must name a fitted kind (census, method:X, njet:N, masterkey); got {fit!r}"
            )
        fo = opts.setdefault("fit_options", {})
        if not isinstance(fo, dict):
            raise TypeError(f"fit_options must be a dict; got {type(fo).__name__}")
        if fo.get("learnable") or fo.get("learn_scales"):
            raise ValueError("fit_options: the fit of the noise control is frozen (learnable)")
        opts["fit_options"] = _check_options(fbase, fit, fo)
    return opts


# --------------------------------------------------------------------------------------
# layer selection


def _select(layers: Any, names: list[str]) -> list[int]:
    n = len(names)
    if layers is None:
        return list(range(n))
    if isinstance(layers, str):
        try:
            pattern = re.compile(layers)
        except re.error as exc:
            raise ValueError(
                f"layers: {layers!r} is not a valid regular expression ({exc})"
            ) from None
        picked = [i for i, name in enumerate(names) if pattern.fullmatch(name)]
        if not picked:
            raise ValueError(
                f"layers: the regular expression {layers!r} matches no depthwise conv in full "
                f"(re.fullmatch); the names are {_some(names)}"
            )
        return picked
    if isinstance(layers, range):
        layers = slice(layers.start, layers.stop, layers.step)
    if (
        isinstance(layers, tuple)
        and len(layers) == 2
        and all(isinstance(v, int | np.integer | None) and not isinstance(v, bool) for v in layers)
    ):
        layers = slice(*layers)
    if isinstance(layers, slice):
        picked = list(range(n))[layers]
        if not picked:
            raise ValueError(
                f"layers: the range {layers} selects none of the {n} depthwise convs "
                "(indices 0.." + str(n - 1) + ")"
            )
        return picked
    if isinstance(layers, Sequence) and not isinstance(layers, bytes):
        out: list[int] = []
        for item in layers:
            if isinstance(item, str):
                if item not in names:
                    import difflib

                    inside = [n for n in names if n.startswith(item + ".")]
                    close = inside or difflib.get_close_matches(item, names, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ValueError(
                        f"layers: {item!r} is not a depthwise conv of the model{hint}; the "
                        f"names are {_some(names)}"
                    )
                out.append(names.index(item))
            elif isinstance(item, int | np.integer) and not isinstance(item, bool):
                if not -n <= int(item) < n:
                    raise ValueError(
                        f"layers: index {item} is out of range for {n} depthwise convs"
                    )
                out.append(int(item) % n)
            else:
                raise TypeError(
                    f"layers: entries must be names (str) or indices (int); got {item!r}"
                )
        if not out:
            raise ValueError("layers: the list is empty (pass None for every depthwise conv)")
        return sorted(set(out))
    raise TypeError(
        "layers must be None, a list of names or indices, a regular expression (str), a "
        f"slice/range or a (start, stop) tuple; got {type(layers).__name__}"
    )


def _some(names: list[str], limit: int = 6) -> str:
    if not names:
        return "[] (the model has no depthwise nn.Conv2d)"
    shown = ", ".join(repr(s) for s in names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)} in all)"


# --------------------------------------------------------------------------------------
# per-layer builders: each returns (frozen float64 kernel [C, k, k] or None, generator or None)


def _census_fields(w: np.ndarray, types: Any, mode: str) -> dict[str, np.ndarray]:
    from scalespace_mk.analysis.census import census

    kw: dict[str, Any] = {"mode": mode, "progress": False, "on_invalid": "record"}
    if types is not None:
        kw["types"] = types
    res = census(w, **kw)
    valid = np.asarray(res.valid, dtype=bool)
    c = w.shape[0]
    fields = {
        "types": np.ones(c, dtype=np.int64),
        "sigma_x": np.ones(c),
        "sigma_y": np.ones(c),
        "alpha": np.zeros(c),
        "a": np.zeros(c),
        "b": w.reshape(c, -1).mean(axis=1),  # zero / constant filters: kept exactly
    }
    if valid.any():
        fields["types"][valid] = np.asarray(res.type[valid], dtype=np.int64)
        fields["sigma_x"][valid] = res.sigma_x[valid]
        fields["sigma_y"][valid] = res.sigma_y[valid]
        fields["alpha"][valid] = np.nan_to_num(res.alpha[valid], nan=0.0)
        fields["a"][valid] = res.a[valid]
        fields["b"][valid] = res.b[valid]
    return fields


def _build_census(w: np.ndarray, conv: nn.Conv2d, opts: dict[str, Any]):
    from scalespace_mk.networks.layers import AnalyticDepthwiseConv2d

    learnable = bool(opts.get("learnable", False))
    mode = opts.get("mode", "paper")
    fields = _census_fields(w, opts.get("types"), mode)
    counts = {str(t): int((fields["types"] == t).sum()) for t in range(1, 9)}
    frozen = ("learn_scales", "learn_gain", "learn_offset")
    build = AnalyticDepthwiseConv2d.from_census
    return (*_generator_or_kernel(build, fields, w, conv, learnable, frozen, mode=mode), counts)


def _generator_or_kernel(
    build: Any,
    fit: Any,
    w: np.ndarray,
    conv: nn.Conv2d,
    learnable: bool,
    frozen: tuple[str, ...],
    **kw: Any,
) -> tuple[np.ndarray | None, nn.Module | None]:
    """``(None, layer)``: a learnable layer on the conv's device and dtype; or
    ``(kernels [C, k, k], None)``: the fitted kernels computed once in float64 on the CPU
    (``frozen`` names the layer's learn_* flags that are switched off to compute them)."""
    if learnable:
        layer = build(
            fit,
            kernel_size=w.shape[-1],
            bias=False,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            **kw,
        )
        return None, layer
    off = dict.fromkeys(frozen, False)
    layer = build(
        fit, kernel_size=w.shape[-1], bias=False, device="cpu", dtype=torch.float64, **off, **kw
    )
    with torch.no_grad():
        return layer.kernel(torch.float64)[:, 0].numpy(), None


def _build_njet(w: np.ndarray, conv: nn.Conv2d, order: int, opts: dict[str, Any]):
    from scalespace_mk.analysis.jets import family_census
    from scalespace_mk.networks.layers import NJetDepthwiseConv2d

    flat = w.reshape(w.shape[0], -1)
    const = np.all(flat == flat[:, :1], axis=1)
    safe = w.copy()
    safe[const] = np.eye(w.shape[-1])[None]  # fitted, then overwritten below
    result = family_census(
        safe,
        family="njet",
        order=order,
        anisotropic=bool(opts.get("anisotropic", False)),
        allow_saturated=bool(opts.get("allow_saturated", False)),
        progress=False,
    )
    result.coefficients[const] = 0.0
    result.b[const] = flat[const, 0]
    frozen = ("learn_scales", "learn_coefficients", "learn_offset")
    learnable = bool(opts.get("learnable", False))
    built = _generator_or_kernel(
        NJetDepthwiseConv2d.from_census, result, w, conv, learnable, frozen
    )
    return (*built, {"njet": int((~const).sum())})


def _build_candidates(
    w: np.ndarray, conv: nn.Conv2d, candidates: str, opts: dict[str, Any], cache: dict
):
    from scalespace_mk.networks.candidates import (
        candidate_filters,
        candidate_models,
        linear_shift_replace,
    )
    from scalespace_mk.networks.layers import AnalyticDepthwiseConv2d, MasterKeyDepthwiseConv2d

    k = w.shape[-1]
    key = (candidates, k)
    if key not in cache:
        cache[key] = candidate_filters(candidates, filters=opts.get("filters"), size=k)
    cands = cache[key]
    new, choice, a, b = linear_shift_replace(w, cands)
    counts = {str(j + 1): int((choice == j).sum()) for j in range(len(cands))}
    factory = {"device": conv.weight.device, "dtype": conv.weight.dtype}
    if opts.get("learn_scales", False):
        # a x_j + b with x_j = (g_j - m_j) / n_j is (a / n_j) g_j + (b - a m_j / n_j): the
        # analytic layer starts at the candidate's model and learns its scales too
        mkey = ("models", candidates, k)
        if mkey not in cache:
            cache[mkey] = candidate_models(candidates, filters=opts.get("filters"), size=k)
        raw, fits = cache[mkey]
        flat = raw.reshape(len(raw), -1)
        mean = flat.mean(axis=1)
        norm = np.linalg.norm(flat - mean[:, None], axis=1)
        pick = [fits[j] for j in choice]
        gen = AnalyticDepthwiseConv2d(
            w.shape[0],
            k,
            types=[f.filter_type for f in pick],
            sigma_x=[f.sigma_x for f in pick],
            sigma_y=[f.sigma_y for f in pick],
            alpha=[f.alpha if f.alpha is not None else 0.0 for f in pick],
            gain=a / norm[choice],
            offset=b - a * mean[choice] / norm[choice],
            bias=False,
            learn_scales=True,
            **factory,
        )
        return None, gen, counts
    if opts.get("learnable", False):
        # frozen candidates x_j, trainable a and b (docs/method.md#networks, experiment 2)
        gen = MasterKeyDepthwiseConv2d(
            w.shape[0],
            torch.from_numpy(cands),
            torch.from_numpy(choice),
            gain=torch.from_numpy(a),
            offset=torch.from_numpy(b),
            bias=False,
            **factory,
        )
        return None, gen, counts
    return new, None, counts


def _unit_draws(
    rng: np.random.Generator, shape: tuple[int, ...], zero_mean: bool = False
) -> np.ndarray:
    z = rng.standard_normal(shape)
    flat = z.reshape(shape[0], -1)
    if zero_mean:
        flat = flat - flat.mean(axis=1, keepdims=True)
    return (flat / np.linalg.norm(flat, axis=1, keepdims=True)).reshape(shape)


def _fit_kernel(
    base: str, arg: Any, w: np.ndarray, conv: nn.Conv2d, opts: dict[str, Any], cache: dict
) -> tuple[np.ndarray | None, nn.Module | None, dict[str, int]]:
    """(frozen float64 kernel [C, k, k] or None, learnable generator or None, counts)."""
    if base == "census":
        return _build_census(w, conv, opts)
    if base == "njet":
        return _build_njet(w, conv, int(arg), opts)
    if base == "method":
        return _build_candidates(w, conv, str(arg), opts, cache)
    if base == "masterkey":
        return _build_candidates(w, conv, "masterkey", opts, cache)
    raise AssertionError(base)


def _r2(w: np.ndarray, new: np.ndarray) -> np.ndarray:
    c = w.shape[0]
    y = w.reshape(c, -1)
    rss = ((y - new.reshape(c, -1)) ** 2).sum(axis=1)
    tss = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - rss / tss
    const = tss == 0
    r2[const] = np.where(rss[const] == 0, 1.0, np.nan)
    return r2


def _saturated(base: str, arg: Any, k: int, opts: dict[str, Any]) -> str | None:
    """Why an N-jet cannot stand for a k x k filter (it would fit anything), or None."""
    if base != "njet" or opts.get("allow_saturated", False):
        return None
    from scalespace_mk.analysis.jets import family_parameters

    q = family_parameters("njet", int(arg), anisotropic=bool(opts.get("anisotropic", False)))
    if q < k * k - 1:
        return None
    return (
        f"kernel {k}x{k}: the {arg}-jet has {q} free parameters for {k * k} taps, so it fits "
        "any filter (saturated); use a lower order (or allow_saturated=True)"
    )


def _masterkey_size(opts: dict[str, Any]) -> int:
    from scalespace_mk.analysis.filters import load_filters

    return int(np.asarray(load_filters(opts.get("filters"))).shape[-1])


# --------------------------------------------------------------------------------------
# the public function


def substitute_depthwise(
    model: nn.Module,
    kind: str,
    *,
    layers: Any = None,
    seed: int = 0,
    progress: bool | None = None,
    **options: Any,
) -> tuple[nn.Module, SubstitutionReport]:
    """Replace the depthwise convs of a network by idealised filters (or a control).

    Parameters
    ----------
    model : nn.Module
        Any module; it is not modified (a deep copy is returned).
    kind : str
        ``"census"``, ``"method:X"`` (X in ``A``, ``A-exact``, ``B``, ``C1``, ``C2``,
        ``D1``, ``D2``, ``masterkey``), ``"njet:N"`` (N 1..4), ``"masterkey"`` (7x7 only),
        ``"noise"`` or ``"random"``; see the module docstring.
    layers : optional
        Which depthwise convs (of :func:`depthwise_convs`) to substitute: None (all), a list
        of names (or of indices), a regular expression matched in full against the names
        (``"features\\.1[0-7]\\..*"``), a ``slice``/``range`` or ``(start, stop)`` tuple of
        indices.
    seed : int
        Seed of the controls' draws (per layer ``default_rng([seed, index])``).
    progress : bool, optional
        Show progress per layer (a bar on a terminal, log lines otherwise); default: only
        when stderr is a terminal.
    **options
        Per kind: ``census``: ``learnable`` (False; True trains scales, gain, offset),
        ``types`` (subset of 1..8), ``mode`` (``"paper"``); ``njet:N``: ``learnable``,
        ``anisotropic``, ``allow_saturated``; ``method:X`` / ``masterkey``: ``filters``
        (source of the 8 learned filters; default the published ones), ``learnable`` (the
        candidates ``x_j`` frozen, ``a`` and ``b`` trainable:
        :class:`~scalespace_mk.networks.layers.MasterKeyDepthwiseConv2d`) and, for a
        fitting method, ``learn_scales`` (the candidates' models with trainable scales,
        types, ``a`` and ``b``: :class:`~scalespace_mk.networks.layers.AnalyticDepthwiseConv2d`);
        ``noise``: ``fit`` (the kind whose residual energy the noise has, default
        ``"census"``), ``fit_options`` (its options) and ``zero_mean`` (default True: the
        noise has zero mean, like the residual of a fit with an offset, so that each
        filter's mean, its response to a constant, is kept as the fit keeps it; False:
        plain i.i.d. noise).

    Returns
    -------
    model : nn.Module
        The copy, each selected depthwise conv replaced by a
        :class:`SubstitutedDepthwiseConv2d` (same stride, padding, dilation, padding mode,
        bias, device and dtype; ``weight`` [C, 1, k, k]); in the mode (train/eval) of the
        input.
    report : SubstitutionReport
        Per layer name, index, k, stride, dilation, channels, kind and the R^2 of each
        substitute against its original filter; what was skipped and why.

    Raises
    ------
    ValueError
        Bad ``kind``, ``layers``, ``seed`` or option (named); a selected filter holding NaN
        or infinite weights (the layer and channel are named).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 5, padding=2, groups=8))
    >>> new, report = substitute_depthwise(net, "random", seed=0)
    >>> report.names, type(new[1]).__name__
    (['1'], 'FrozenDepthwiseSubstitute')
    >>> new(torch.randn(1, 3, 9, 9)).shape
    torch.Size([1, 8, 9, 9])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    base, arg = parse_kind(kind)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    opts = _check_options(base, kind, options)
    new_model = copy.deepcopy(model)
    found = depthwise_convs(new_model)
    names = [n for n, _ in found]
    picked = _select(layers, names)
    cache: dict[Any, np.ndarray] = {}
    done: list[LayerSubstitution] = []
    skipped: list[dict[str, Any]] = []
    mk_size = _masterkey_size(opts) if base == "masterkey" or arg == "masterkey" else None
    fit_base, fit_arg = parse_kind(opts["fit"]) if base == "noise" else (None, None)
    if fit_base == "masterkey" or fit_arg == "masterkey":
        mk_size = _masterkey_size(opts["fit_options"])
    modules = dict(new_model.named_modules())
    from scalespace_mk._progress import progress as _progress
    from scalespace_mk._progress import stream_is_terminal

    show = stream_is_terminal() if progress is None else bool(progress)
    for index in _progress(
        picked, desc=f"substituting {kind}", unit="layer", enabled=show and len(picked) > 1
    ):
        name, conv = found[index]
        reason = _unsupported(conv)
        k = conv.kernel_size[0]
        if reason is None and mk_size is not None and k != mk_size:
            reason = (
                f"kernel {k}x{k}: the master key filters are {mk_size}x{mk_size} "
                "(pass filters= of this size, or use a fitted kind)"
            )
        if reason is None:
            if base == "noise":
                reason = _saturated(fit_base, fit_arg, k, opts["fit_options"])
            else:
                reason = _saturated(base, arg, k, opts)
        if reason is not None:
            skipped.append({"name": name, "index": index, "reason": reason})
            continue
        w = conv.weight.detach().to(device="cpu", dtype=torch.float64).numpy()[:, 0]
        bad = ~np.isfinite(w).all(axis=(1, 2))
        if bad.any():
            raise ValueError(
                f"layer {name!r} (index {index}) holds NaN or infinite weights in channel "
                f"{int(np.flatnonzero(bad)[0])}; nothing can be fitted to it"
            )
        rng = np.random.default_rng([int(seed), index])
        generator, counts = None, {}
        if base == "random":
            norms = np.linalg.norm(w.reshape(len(w), -1), axis=1)
            new = _unit_draws(rng, w.shape) * norms[:, None, None]
        elif base == "noise":
            fitted, _, _ = _fit_kernel(fit_base, fit_arg, w, conv, opts["fit_options"], cache)
            energy = ((w - fitted) ** 2).reshape(len(w), -1).sum(axis=1)
            zero_mean = opts.get("zero_mean", True)
            noise = _unit_draws(rng, w.shape, zero_mean) * np.sqrt(energy)[:, None, None]
            new = w + noise
        else:
            new, generator, counts = _fit_kernel(base, arg, w, conv, opts, cache)
        if generator is not None:
            with torch.no_grad():
                new = generator.kernel(torch.float64)[:, 0].cpu().numpy()
            sub: SubstitutedDepthwiseConv2d = LearnableDepthwiseSubstitute(conv, kind, generator)
        else:
            weight = torch.from_numpy(np.ascontiguousarray(new[:, None]))
            cast = weight.to(conv.weight.dtype)
            if not bool(torch.isfinite(cast).all()):
                raise ValueError(
                    f"layer {name!r}: the substitute overflows {conv.weight.dtype}; "
                    "convert the model to float32 first"
                )
            sub = FrozenDepthwiseSubstitute(conv, kind, weight)
        sub.train(conv.training)
        if name == "":  # the model is itself a depthwise conv
            new_model = sub
        else:
            parent_name, _, child = name.rpartition(".")
            setattr(modules[parent_name] if parent_name else new_model, child, sub)
        done.append(
            LayerSubstitution(
                name=name,
                index=index,
                kernel_size=k,
                stride=tuple(conv.stride),
                dilation=tuple(conv.dilation),
                channels=conv.in_channels,
                kind=kind,
                r2=_r2(w, new),
                learnable=generator is not None,
                counts=counts,
            )
        )
    report = SubstitutionReport(
        kind=kind, seed=int(seed), options=opts, layers=done, skipped=skipped
    )
    return new_model, report
