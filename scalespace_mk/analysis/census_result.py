"""The result of the 8-type census (:class:`CensusResult`) and the scale statistics of a set
of fits (:func:`scale_statistics`).

Conventions: ``sigma`` is a standard deviation (``s = sigma**2``); filters ``h[r, c]`` with
``x = c - m``, ``y = m - r`` (**y up**).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scalespace_mk.analysis.scale_objectives import ALPHA_RANGE
from scalespace_mk.analysis.screening import INVALID_REASONS
from scalespace_mk.analysis.types import parse_model_types

#: per-type columns of :meth:`CensusResult.to_columns` (suffixed ``_<type label>``)
_PER_TYPE: tuple[str, ...] = ("r2", "sigma_x", "sigma_y", "alpha", "a", "b", "rss")
#: the per-filter columns of :meth:`CensusResult.to_columns`, in order
_BEST_COLUMNS: tuple[str, ...] = (
    "index",
    "type",
    "best",
    "sigma_x",
    "sigma_y",
    "alpha",
    "a",
    "b",
    "r2",
    "rss",
    "tss",
    "reason",
)


@dataclass
class CensusResult:
    """Result of :func:`census` (numpy arrays; N filters, T types).

    Attributes
    ----------
    types : tuple
        The fitted types, in the order of the ``*_all`` columns (ints 1..8 for the master
        key types, model names for other models).
    best : numpy.ndarray of int, shape [N]
        Column of the best type (largest R^2; the first type on ties); -1 for a filter
        that was not fitted.
    type : numpy.ndarray, shape [N]
        Label of the best type (int64 when all types are ints and every filter was fitted,
        else object, None for a filter that was not fitted).
    sigma_x, sigma_y, alpha, a, b, r2, rss : numpy.ndarray of float64, shape [N]
        Fit of the best type: scales (standard deviations, >= 0; ``sigma_y = sigma_x`` for
        one-scale models), the Laplacian weight of type 7 (NaN for other types), gain,
        offset, ``R^2 = 1 - RSS / TSS`` in [0, 1] and the residual sum of squares. NaN for
        a filter that was not fitted.
    tss : numpy.ndarray, shape [N]
        ``sum (y - mean y)^2`` of each filter (NaN for a non-finite one).
    sigma_x_all, sigma_y_all, alpha_all, a_all, b_all, r2_all, rss_all : numpy.ndarray [N, T]
        The same fit for every type.
    alpha_range, sigma_max : the bounds used.
    reason : numpy.ndarray of object, shape [N], optional
        Why a filter was not fitted (``"zero"``, ``"constant"``, ``"non-finite"``; see
        :func:`screen_filters`), None for a fitted filter. None: every filter was fitted.
    """

    types: tuple[int | str, ...]
    best: np.ndarray
    sigma_x_all: np.ndarray
    sigma_y_all: np.ndarray
    alpha_all: np.ndarray
    a_all: np.ndarray
    b_all: np.ndarray
    r2_all: np.ndarray
    rss_all: np.ndarray
    tss: np.ndarray
    alpha_range: tuple[float, float] = ALPHA_RANGE
    sigma_max: float = 3.5
    reason: np.ndarray | None = None
    _rows: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rows = np.arange(len(self.best))
        if self.reason is None:
            self.reason = np.full(len(self.best), None, dtype=object)

    @property
    def valid(self) -> np.ndarray:
        """[N] bool: the filter was fitted (its ``reason`` is None)."""
        return np.equal(self.reason, None)

    def invalid_counts(self) -> dict[str, int]:
        """Filters not fitted, per reason: ``{"zero": n, "constant": n, "non_finite": n}``."""
        return {r.replace("-", "_"): int(np.sum(self.reason == r)) for r in INVALID_REASONS}

    def _pick(self, arr: np.ndarray) -> np.ndarray:
        return arr[self._rows, self.best]

    def __len__(self) -> int:
        return len(self.best)

    @property
    def type(self) -> np.ndarray:
        """Label of the best type per filter, shape [N]."""
        labels = np.array(list(self.types) + [None], dtype=object)
        out = labels[self.best]  # best = -1 picks the None of a filter not fitted
        if all(isinstance(t, int) for t in self.types) and self.valid.all():
            out = out.astype(np.int64)
        return out

    sigma_x = property(lambda self: self._pick(self.sigma_x_all), doc="[N] best sigma_x")
    sigma_y = property(lambda self: self._pick(self.sigma_y_all), doc="[N] best sigma_y")
    alpha = property(lambda self: self._pick(self.alpha_all), doc="[N] best alpha (NaN: none)")
    a = property(lambda self: self._pick(self.a_all), doc="[N] gain of the best fit")
    b = property(lambda self: self._pick(self.b_all), doc="[N] offset of the best fit")
    r2 = property(lambda self: self._pick(self.r2_all), doc="[N] R^2 of the best fit")
    rss = property(lambda self: self._pick(self.rss_all), doc="[N] RSS of the best fit")

    def records(self) -> list[dict[str, Any]]:
        """One dict per filter: index (0-based), type, sigma_x, sigma_y, alpha, a, b, r2, reason.

        ``alpha`` is None for types other than 7; all numbers are Python floats. A filter
        that was not fitted has ``type``, the scales, ``a``, ``b`` and ``r2`` None and its
        ``reason`` (``"zero"``, ``"constant"``, ``"non-finite"``); fitted filters have
        ``reason`` None.
        """
        labels = self.type.tolist()
        reasons = self.reason.tolist()
        out = []
        cols = (self.sigma_x, self.sigma_y, self.alpha, self.a, self.b, self.r2)
        for i, (sx, sy, al, a, b, r2) in enumerate(zip(*(c.tolist() for c in cols), strict=True)):
            if reasons[i] is not None:
                out.append(
                    {"index": i, "type": None}
                    | dict.fromkeys(("sigma_x", "sigma_y", "alpha", "a", "b", "r2"))
                    | {"reason": reasons[i]}
                )
                continue
            out.append(
                {
                    "index": i,
                    "type": labels[i],
                    "sigma_x": sx,
                    "sigma_y": sy,
                    "alpha": None if math.isnan(al) else al,
                    "a": a,
                    "b": b,
                    "r2": r2,
                    "reason": None,
                }
            )
        return out

    def scale_statistics(self) -> dict[str, Any]:
        """Median and 5-95 % range of the fitted scales, overall and per best type.

        Returns
        -------
        dict
            See :func:`scale_statistics`.
        """
        return scale_statistics(self.type, self.sigma_x, self.sigma_y, self.alpha, self.types)

    def counts(self) -> dict[int | str, int]:
        """Number of filters whose best type is each type (in the order of ``types``)."""
        c = np.bincount(self.best[self.valid], minlength=len(self.types))
        return {t: int(n) for t, n in zip(self.types, c, strict=True)}

    # ----------------------------------------------------------------------------------
    # display and columns (one screen; a table per type; flat columns for files/pandas)

    def __repr__(self) -> str:
        n, t = len(self), len(self.types)
        fitted = int(self.valid.sum())
        head = (
            f"CensusResult({n} filters, {t} types {list(self.types)}, {fitted} fitted, "
            f"sigma_max={self.sigma_max:g})"
        )
        if n == 0:
            return head
        return head + "\n" + self.format_table()

    def format_table(self) -> str:
        """One line per type: count and share of filters it explains best, median R^2 and
        median scales of those filters, and the share with R^2 > 0.8; a line for all fitted
        filters, and one naming the filters not fitted.

        Returns
        -------
        str
            A plain-text table (fixed-width columns, no trailing newline).
        """
        n = max(int(self.valid.sum()), 1)
        r2, sx, sy = self.r2, self.sigma_x, self.sigma_y
        lines = [
            f"{'type':>6}  {'count':>9}  {'share':>6}  {'median R^2':>10}  {'R^2>0.8':>7}  "
            f"{'median sigma_x':>14}  {'median sigma_y':>14}"
        ]

        def med(v: np.ndarray) -> str:
            return f"{float(np.median(v)):.4f}" if v.size else "-"

        def row(label: str, m: np.ndarray) -> str:
            c = int(m.sum())
            good = f"{100.0 * float(np.mean(r2[m] > 0.8)):6.1f}%" if c else "      -"
            return (
                f"{label:>6}  {c:>9}  {100.0 * c / n:5.1f}%  {med(r2[m]):>10}  {good:>7}  "
                f"{med(sx[m]):>14}  {med(sy[m]):>14}"
            )

        for j, tp in enumerate(self.types):
            lines.append(row(str(tp), self.best == j))
        lines.append(row("all", self.valid))
        bad = {k: v for k, v in self.invalid_counts().items() if v}
        if bad:
            lines.append(
                "not fitted: " + ", ".join(f"{v} {k.replace('_', '-')}" for k, v in bad.items())
            )
        return "\n".join(lines)

    def to_columns(self, index: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The result as flat columns of equal length N (what ``to_pandas`` and the census
        files of :mod:`scalespace_mk.analysis.stream` hold).

        Parameters
        ----------
        index : numpy.ndarray of int, shape [N], optional
            Row of each filter in its input (default ``0 .. N-1``).

        Returns
        -------
        dict of str to numpy.ndarray
            In this order: ``index`` (int64), ``type`` (str: the best type's label, ``""``
            for a filter not fitted), ``best`` (int64 column of the best type in ``types``,
            -1 when not fitted), ``sigma_x``, ``sigma_y`` (standard deviations of the best
            fit), ``alpha`` (type 7, else NaN), ``a``, ``b``, ``r2``, ``rss``, ``tss``
            (float64), ``reason`` (str: ``""`` when fitted, else ``"zero"``, ``"constant"``
            or ``"non-finite"``), then per type ``t`` (its label) ``r2_t``, ``sigma_x_t``,
            ``sigma_y_t``, ``alpha_t``, ``a_t``, ``b_t``, ``rss_t`` (float64).
        """
        n = len(self)
        idx = np.arange(n, dtype=np.int64) if index is None else np.asarray(index, np.int64)
        labels = np.array([str(t) for t in self.types] + [""])
        cols: dict[str, np.ndarray] = {
            "index": idx,
            "type": labels[self.best],
            "best": self.best.astype(np.int64),
            "sigma_x": self.sigma_x,
            "sigma_y": self.sigma_y,
            "alpha": self.alpha,
            "a": self.a,
            "b": self.b,
            "r2": self.r2,
            "rss": self.rss,
            "tss": self.tss,
            "reason": np.array(
                ["" if r is None else r for r in self.reason.tolist()], dtype="<U10"
            ),
        }
        for j, tp in enumerate(self.types):
            for key in _PER_TYPE:
                cols[f"{key}_{tp}"] = getattr(self, f"{key}_all")[:, j]
        return {k: np.ascontiguousarray(v) for k, v in cols.items()}

    @classmethod
    def from_columns(
        cls,
        columns: dict[str, Any],
        types: Sequence[int | str],
        *,
        sigma_max: float,
        alpha_range: tuple[float, float] = ALPHA_RANGE,
    ) -> CensusResult:
        """Rebuild a result from :meth:`to_columns` (e.g. read back from a census file).

        Parameters
        ----------
        columns : dict of str to array_like
            At least ``best``, ``tss``, ``reason`` and the per-type columns of ``types``.
        types : sequence of int or str
            The census's types (labels), in column order.
        sigma_max, alpha_range
            The bounds the census used.

        Returns
        -------
        CensusResult
        """
        types = tuple(types)
        all_ = {
            key: np.stack(
                [np.asarray(columns[f"{key}_{t}"], dtype=np.float64) for t in types], axis=1
            ).reshape(-1, len(types))
            for key in _PER_TYPE
        }
        reason = np.array(
            [
                None if (r == "" or r is None) else str(r)
                for r in np.asarray(columns["reason"]).tolist()
            ],
            dtype=object,
        )
        return cls(
            types=types,
            best=np.asarray(columns["best"], dtype=np.int64),
            sigma_x_all=all_["sigma_x"],
            sigma_y_all=all_["sigma_y"],
            alpha_all=all_["alpha"],
            a_all=all_["a"],
            b_all=all_["b"],
            r2_all=all_["r2"],
            rss_all=all_["rss"],
            tss=np.asarray(columns["tss"], dtype=np.float64),
            alpha_range=tuple(alpha_range),
            sigma_max=float(sigma_max),
            reason=reason,
        )

    def to_pandas(self, *, per_type: bool = True) -> Any:
        """The result as a :class:`pandas.DataFrame`, one row per filter (pandas is imported
        here; it is not a dependency of the package).

        Parameters
        ----------
        per_type : bool
            Include the per-type columns ``r2_t``, ``sigma_x_t``, ... (default True).

        Returns
        -------
        pandas.DataFrame
            The columns of :meth:`to_columns`, except that ``type`` holds the label as in
            ``types`` (int for the master key types) or None, and ``reason`` None for a
            fitted filter.

        Raises
        ------
        ImportError
            If pandas is not installed (``pip install pandas``).
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "CensusResult.to_pandas needs pandas (pip install pandas); to_columns() gives "
                "the same columns as numpy arrays"
            ) from None
        cols: dict[str, Any] = self.to_columns()
        cols["type"] = self.type.astype(object) if len(self) else np.zeros(0, dtype=object)
        cols["reason"] = self.reason
        if not per_type:
            cols = {k: v for k, v in cols.items() if k in _BEST_COLUMNS}
        return pd.DataFrame(cols)


# --------------------------------------------------------------------------------------
# scale statistics


def _quantiles(values: np.ndarray) -> dict[str, float] | None:
    """``{"median", "p5", "p95"}`` of the finite values, None when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return None
    p5, med, p95 = np.percentile(v, (5, 50, 95)).tolist()
    return {"median": med, "p5": p5, "p95": p95}


def scale_statistics(
    type_labels: Any, sigma_x: Any, sigma_y: Any, alpha: Any, types: Sequence[int | str]
) -> dict[str, Any]:
    """Median and 5-95 % range of fitted scales, overall and per best type.

    Parameters
    ----------
    type_labels : array_like, shape [N]
        Best type per filter (None for filters not fitted, which are left out).
    sigma_x, sigma_y, alpha : array_like of float, shape [N]
        Fitted scales (standard deviations, pixels; ``s = sigma**2``) and the Laplacian
        weight of type 7 (NaN for other types).
    types : sequence of int or str
        The census's types (their kinds decide which have two scales).

    Returns
    -------
    dict
        ``{"n", "sigma_x", "sigma_y", "anisotropy", "by_type": {label: {...}}}``: each
        statistic is ``{"median", "p5", "p95"}`` (or None when empty). ``anisotropy`` is
        ``(sigma_x - sigma_y) / (sigma_x + sigma_y)`` in [-1, 1] (0 when both are 0;
        positive: wider along x), over the filters of two-scale types only (one-scale types
        have ``sigma_x = sigma_y`` by construction). Each type's entry holds ``n``,
        ``sigma_x``, ``sigma_y``, ``anisotropy`` (two-scale types) or ``alpha`` (type 7).
    """
    tps = parse_model_types(types)
    labels = np.asarray(type_labels, dtype=object)
    sx = np.asarray(sigma_x, dtype=np.float64)
    sy = np.asarray(sigma_y, dtype=np.float64)
    al = np.asarray(alpha, dtype=np.float64)
    two = np.zeros(len(labels), dtype=bool)
    for tp in tps:
        if tp.kind == "sep":
            two |= labels == tp.label
    total = sx + sy
    with np.errstate(invalid="ignore", divide="ignore"):
        aniso = np.where(total > 0, (sx - sy) / np.where(total > 0, total, 1.0), 0.0)
    fitted = np.not_equal(labels, None)
    out: dict[str, Any] = {
        "n": int(fitted.sum()),
        "sigma_x": _quantiles(sx[fitted]),
        "sigma_y": _quantiles(sy[fitted]),
        "anisotropy": _quantiles(aniso[two]),
        "by_type": {},
    }
    for tp in tps:
        m = labels == tp.label
        entry: dict[str, Any] = {
            "n": int(m.sum()),
            "sigma_x": _quantiles(sx[m]),
            "sigma_y": _quantiles(sy[m]),
        }
        if tp.kind == "sep":
            entry["anisotropy"] = _quantiles(aniso[m])
        if tp.kind == "mk7":
            entry["alpha"] = _quantiles(al[m])
        out["by_type"][str(tp.label)] = entry
    return out
