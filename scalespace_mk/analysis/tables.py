"""Piecewise-cubic tables of model parts over sigma: knots, cubic coefficients, interpolation.

A model part (a unit-norm 1-D factor, a Laplacian part) is tabulated once at knots
``0, d, 2d, .., sigma_max`` (``d`` about :data:`_KNOT_STEP`) and read back at any scale by
4-point Lagrange interpolation, with the exact first and second derivatives of the piecewise
cubic (interpolation error about 1e-12 for the smooth discrete Gaussian families). The
models are even in sigma (functions of ``s = sigma**2``), so the table is extended evenly
about 0, and mirrored about ``sigma_max``. ``sigma`` is a standard deviation throughout.

The one home of these tables: the 8-type census (:mod:`scalespace_mk.analysis.scale_objectives`)
and the family census (:mod:`scalespace_mk.analysis.jets_search`) both read their models
through them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__: list[str] = []

_KNOT_STEP = 0.001  # table resolution in sigma (cubic interpolation error ~1e-12)


def _knots(sigma_max: float) -> tuple[np.ndarray, float]:
    """Knots ``|j| d`` for ``j = -1 .. J + 1`` with ``J d = sigma_max``."""
    n = max(int(math.ceil(sigma_max / _KNOT_STEP)), 2)
    step = sigma_max / n
    return np.abs(np.arange(-1, n + 2, dtype=np.float64)) * step, step


#: cubic Lagrange interpolation through nodes -1, 0, 1, 2 as a polynomial in t:
#: coefficients of 1, t, t^2, t^3 (rows) from the four node values (columns)
_LAGRANGE = (
    (0.0, 1.0, 0.0, 0.0),
    (-1.0 / 3.0, -0.5, 1.0, -1.0 / 6.0),
    (0.5, -1.0, 0.5, 0.0),
    (-1.0 / 6.0, 0.5, -0.5, 1.0 / 6.0),
)


def _cubic_coefficients(table: torch.Tensor) -> torch.Tensor:
    """Polynomial coefficients ``[J, 4, D]`` of the cubic on each interval of a table.

    ``table`` is ``[J + 3, D]`` with rows at the knots ``-1, 0, .., J + 1`` (times the step;
    the models are even in sigma, so knot -1 holds the value at +step). Interval ``i``
    (between knots i and i + 1) gets the cubic through knots ``i - 1 .. i + 2`` as
    ``c0 + c1 t + c2 t^2 + c3 t^3`` in ``t`` in [0, 1].
    """
    lag = torch.tensor(_LAGRANGE, dtype=table.dtype, device=table.device)
    windows = table.unfold(0, 4, 1)  # [J, D, 4]: rows i-1..i+2 for interval i
    return torch.einsum("cj,idj->icd", lag, windows).contiguous()


class _Interp:
    """Piecewise-cubic (4-point Lagrange) interpolation in sigma of a tabulated model part.

    Calling it with scales ``[...]`` returns ``[..., D]``; the table is extended evenly
    about 0 and about ``sigma_max`` (scales beyond it are mirrored back).
    """

    def __init__(self, coef: torch.Tensor, step: float, sigma_max: float) -> None:
        self.coef = coef  # [J, 4, D] from _cubic_coefficients
        self.inv_step = 1.0 / step
        self.sigma_max = sigma_max
        self.n = coef.shape[0]
        self._parts: list[torch.Tensor] | None = None  # c0..c3 as [J, D] each (derivs)

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.abs()
        # mirror at sigma_max as at 0: a maximum on the bound becomes a stationary point,
        # so the finite differences along the other scale stay exact there
        s = torch.where(s > self.sigma_max, 2.0 * self.sigma_max - s, s).clamp(min=0.0)
        s = s * self.inv_step
        i = s.floor().clamp(max=self.n - 1)
        t = (s - i)[..., None]
        c = self.coef.index_select(0, i.long().reshape(-1)).reshape(*s.shape, 4, -1)
        f = torch.addcmul(c[..., 2, :], c[..., 3, :], t)  # Horner: c0 + t (c1 + t (c2 + t c3))
        f = torch.addcmul(c[..., 1, :], f, t)
        return torch.addcmul(c[..., 0, :], f, t)

    def derivs(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Value, first and second derivative in sigma at scales ``[n]`` in [0, sigma_max].

        Each ``[n, D]``: the exact derivatives of the piecewise cubic.
        """
        if self._parts is None:  # each coefficient's table contiguous: the rows gathered
            self._parts = [p.contiguous() for p in self.coef.unbind(1)]  # and t below are
        s = sigma.clamp(0.0, self.sigma_max) * self.inv_step  # contiguous [n, D] operands
        i = s.floor().clamp(max=self.n - 1)  # (several times faster than strided slices)
        idx = i.long()
        c0, c1, c2, c3 = (part.index_select(0, idx) for part in self._parts)  # [n, D] each
        t = (s - i)[:, None].expand_as(c0).contiguous()
        f = torch.addcmul(c1, torch.addcmul(c2, c3, t), t)  # Horner with fused steps
        f = torch.addcmul(c0, f, t)
        c2x2, c3x3 = c2 * 2.0, c3 * 3.0
        d1 = torch.addcmul(c1, torch.addcmul(c2x2, c3x3, t), t).mul_(self.inv_step)
        d2 = torch.addcmul(c2x2, c3x3, t, value=2.0).mul_(self.inv_step * self.inv_step)
        return f, d1, d2
