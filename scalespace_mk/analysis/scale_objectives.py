"""The objectives of the census's scale search: the models tabulated over sigma and the
squared correlation of a centred unit filter with them, with exact derivatives.

**Tables.** The models are tabulated once per call (and cached) at knots ``sigma = 0, d,
2d, ...`` (``d`` ~ 0.001) with :func:`scalespace_mk.scalespace.models.model_kernel`.
Separable models ``g = v(sigma_y) (x) u(sigma_x)`` are stored as their two unit-norm 1-D
factors; between knots they are interpolated by 4-point cubic Lagrange interpolation
(:mod:`scalespace_mk.analysis.tables`, with the exact first and second derivatives of the
cubic).

**Objectives.** ``_SepObjective`` (two scales; an axis whose factor is even or odd about
the centre is folded, 7 -> 4 taps) and ``_LapObjective`` (one scale: ``"lap"`` and model 7
with its closed-form alpha; filters pooled into orbit sums under the square's symmetries)
give R^2 on grids, stencils and points, and R^2 with its gradient and Hessian for the Newton
refinement of :mod:`scalespace_mk.analysis.scale_search`.

Conventions: filters ``h[r, c]`` with ``x = c - m``, ``y = m - r`` (**y up**); ``sigma`` is
a standard deviation (``s = sigma**2``), in ``[0, sigma_max]``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from scalespace_mk.analysis.linear_shift import _TINY
from scalespace_mk.analysis.tables import _cubic_coefficients, _Interp, _knots
from scalespace_mk.scalespace.models import model_kernel, parse_model

#: Default range of the Laplacian weight ``alpha`` of type 7 (``K - alpha nabla5 T``).
ALPHA_RANGE: tuple[float, float] = (0.0, 10.0)

_S_REF = 1.0  # scale of the other axis when a 1-D factor is read off a 2-D model


def _factor_name(name: str, axis: str) -> str:
    """A model with the same 1-D factor along ``axis`` as ``name`` (shares cached tables)."""
    ops = getattr(parse_model(name), f"ops_{axis}")
    a = axis
    canonical = {
        (): "T",
        ("x",): f"d{a}",
        ("xx",): f"d{a}{a}",
        ("x", "xx"): f"d{a * 3}",
        ("xx", "xx"): f"d{a * 4}",
        ("x+",): f"d{a}+",
        ("x-",): f"d{a}-",
    }.get(ops)
    if canonical is None or getattr(parse_model(canonical), f"ops_{axis}") != ops:
        return name
    return canonical


@functools.lru_cache(maxsize=64)
def _table(
    name: str, part: str, k: int, method: str, mode: str, epsilon: float, sigma_max: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tabulated model parts at the knots (CPU float64, cached).

    ``part`` is ``"x"`` / ``"y"`` (unit-norm 1-D factor along x / along the rows of a
    separable model; read off a 2-D model whose other scale is :data:`_S_REF`) or ``"lap"``
    (unit-norm flattened Laplacian part ``L`` of model 7 or of ``"lap"``). Returns the cubic
    coefficients (:func:`_cubic_coefficients`) of the unit-norm rows ``[J, 4, D]`` and of
    the norms of the raw rows ``[J, 4, 1]``.
    """
    knots, _ = _knots(sigma_max)
    kw = dict(size=k, method=method, mode=mode, epsilon=epsilon)
    with torch.no_grad():
        if part == "x":
            g = torch.as_tensor(model_kernel(name, knots, np.full_like(knots, _S_REF), **kw))
            row = int(g[len(knots) // 2].abs().sum(dim=1).argmax())
            raw = g[:, row, :]
        elif part == "y":
            g = torch.as_tensor(model_kernel(name, np.full_like(knots, _S_REF), knots, **kw))
            col = int(g[len(knots) // 2].abs().sum(dim=0).argmax())
            raw = g[:, :, col]
        elif name == "lap" or parse_model(name).laplacian:
            raw = torch.as_tensor(model_kernel(name, knots, **kw)).reshape(len(knots), -1)
        else:  # mk7 = K - alpha L, linear in alpha: L = K - mk7(alpha = 1)
            mk = torch.as_tensor(model_kernel(name, knots, alpha=np.ones_like(knots), **kw))
            delta = torch.zeros(k, k, dtype=torch.float64)
            delta[k // 2, k // 2] = 1.0
            raw = (delta - mk).reshape(len(knots), -1)
    norms = raw.norm(dim=1)
    table = raw / torch.where(norms > 0, norms, torch.ones_like(norms))[:, None]
    return _cubic_coefficients(table), _cubic_coefficients(norms[:, None])


# --------------------------------------------------------------------------------------
# objectives: squared correlation of the centred unit filters z with the models


def _mirror_parity(coef: torch.Tensor) -> float | None:
    """``1.0`` / ``-1.0`` when the taps of a 1-D table ``[J, 4, k]`` are even / odd about the
    centre (within ``1e-13`` of the largest coefficient), else None."""
    scale = float(coef.abs().max())
    for parity in (1.0, -1.0):
        if float((coef - parity * coef.flip(-1)).abs().max()) <= 1e-13 * scale:
            return parity
    return None


def _fold(k: int, parity: float, like: torch.Tensor) -> torch.Tensor:
    """Folding matrix ``[c + 1, k]`` (``c = k // 2``) of a tap axis about its centre: row 0
    picks the centre tap, row ``m`` adds tap ``c + m`` and ``parity`` times tap ``c - m``."""
    c = k // 2
    out = torch.zeros(c + 1, k, dtype=like.dtype, device=like.device)
    out[0, c] = 1.0
    for m in range(1, c + 1):
        out[m, c + m] = 1.0
        out[m, c - m] = parity
    return out


class _SepObjective:
    """Two-scale separable model ``v(sigma_y) (x) u(sigma_x)`` (filters as ``[n, k, k]``).

    When both 1-D factors are even or odd about the centre (:func:`_mirror_parity`; all
    factors of the master key types are), ``<z, v (x) u> = <F_y z F_x^T, v_h (x) u_h>``
    with the folding matrices ``F`` (:func:`_fold`) and the half factors ``u_h`` (taps
    ``c .. k - 1``): the filters are folded once (:meth:`reduce`, ``[n, c + 1, c + 1]``),
    and the norms and sums of the factors become weighted sums over the half taps. Every
    method accepts the filters folded or not.
    """

    dim = 2

    def __init__(self, ux: _Interp, vy: _Interp, k: int) -> None:
        self.ux, self.vy, self.k = ux, vy, k
        # each axis is folded when its factor is even or odd about the centre
        self.uh, self.sq_x, self.sum_x, fx = self._half(ux)
        self.vh, self.sq_y, self.sum_y, fy = self._half(vy)
        self.shape = (fy.shape[0], fx.shape[0])  # [n, *shape]: the filters as read
        self.fold: torch.Tensor | None = None
        if self.shape != (k, k):
            self.fold = torch.kron(fy, fx).T.contiguous()  # [k*k, hy * hx]

    def _half(self, w: _Interp) -> tuple[_Interp, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The factor as read (half taps ``c .. k - 1`` when folded), the weights of its
        squares and of its taps in sums, and the folding matrix (identity: not folded)."""
        k, dt, dev = self.k, w.coef.dtype, w.coef.device
        parity = _mirror_parity(w.coef)
        if k % 2 == 0 or k == 1 or parity is None:
            eye = torch.eye(k, dtype=dt, device=dev)
            return w, eye.sum(dim=1), eye.sum(dim=1), eye
        c = k // 2
        f = _fold(k, parity, w.coef)
        sq = torch.full((c + 1,), 2.0, dtype=dt, device=dev)
        sq[0] = 1.0
        half = _Interp(w.coef[..., c:].contiguous(), 1.0 / w.inv_step, w.sigma_max)
        return half, sq, f.sum(dim=1), f  # tap sums: 1, then 1 + parity

    def reduce(self, z: torch.Tensor) -> torch.Tensor:
        """Filters ``[n, k*k]`` or ``[n, k, k]`` as the objective reads them: ``[n, hy, hx]``
        (an axis folded when its factor allows: ``c + 1`` taps, else ``k``)."""
        n, k = z.shape[0], self.k
        if z.ndim == 3 and tuple(z.shape[1:]) == self.shape:
            return z  # as read already
        if self.fold is None:
            return z.reshape(n, k, k)
        return (z.reshape(n, k * k) @ self.fold).reshape(n, *self.shape)

    def _den(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``||g_c||^2`` of ``g = v (x) u`` for u ``[..., 1, B, h]``, v ``[..., A, 1, h]``."""
        uu, vv = torch.matmul(u * u, self.sq_x), torch.matmul(v * v, self.sq_y)
        su, sv = torch.matmul(u, self.sum_x), torch.matmul(v, self.sum_y)
        den = uu * vv - (su * sv) ** 2 / (self.k * self.k)
        return torch.where(den > _TINY * uu * vv, den, math.inf)

    def product(self, z3: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
        """R^2 at all pairs of ``sx`` [n, B] (or [B]) and ``sy`` [n, A]: ``[n, A, B]``."""
        z3 = self.reduce(z3)
        u, v = self.uh(sx), self.vh(sy)  # [(n,) B, h], [(n,) A, h]
        num = torch.matmul(v, torch.matmul(z3, u.transpose(-1, -2)))  # [n, A, B]
        den = self._den(u.unsqueeze(-3), v.unsqueeze(-2))
        return num * num / den

    def grid(self, z3: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
        """R^2 on the grid ``sig x sig``: ``[n, G * G]`` (index ``iy * G + ix``)."""
        return self.product(z3, sig, sig).reshape(z3.shape[0], -1)

    def stencil(self, z3: torch.Tensor, th: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """R^2 on the 3x3 stencil ``th + h {-1, 0, 1}^2``: ``[n, 9]`` (index ``3 iy + ix``)."""
        o = h[:, None] * torch.tensor([-1.0, 0.0, 1.0], dtype=h.dtype, device=h.device)
        return self.product(z3, th[:, :1] + o, th[:, 1:] + o).reshape(z3.shape[0], 9)

    def point(self, z3: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
        """R^2 at ``th`` [n, 2] (sigma_x, sigma_y): ``[n]``."""
        return self.product(z3, th[:, :1], th[:, 1:]).reshape(-1)

    def newton(
        self, z3: torch.Tensor, th: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """R^2 ``f = N^2 / D`` at ``th`` [n, 2], its gradient [n, 2] and Hessian [n, 2, 2].

        ``N = <z, v (x) u>`` and ``D = ||g_c||^2 = (u.u)(v.v) - (sum u sum v)^2 / k^2`` with
        their exact derivatives from the cubic tables (x: sigma_x, y: sigma_y).
        """
        z3 = self.reduce(z3)
        u = torch.stack(self.uh.derivs(th[:, 0]), dim=2)  # [n, h, 3]: u, u', u''
        v = torch.stack(self.vh.derivs(th[:, 1]), dim=1)  # [n, 3, h]
        nm = torch.matmul(v, torch.matmul(z3, u))  # [n, 3, 3]: d^a/dy^a d^b/dx^b N
        n0, nx, ny = nm[:, 0, 0], nm[:, 0, 1], nm[:, 1, 0]
        nxx, nyy, nxy = nm[:, 0, 2], nm[:, 2, 0], nm[:, 1, 1]
        uu, ux_, uxx = _norm_terms(u.transpose(1, 2), self.sq_x)
        vv, vy_, vyy = _norm_terms(v, self.sq_y)
        su, sux, suxx = torch.matmul(self.sum_x, u).unbind(1)
        sv, svy, svyy = torch.matmul(v, self.sum_y).unbind(1)
        kk = float(self.k * self.k)
        d = uu * vv - (su * sv) ** 2 / kk
        dx = ux_ * vv - 2.0 * su * sux * sv * sv / kk
        dy = uu * vy_ - 2.0 * sv * svy * su * su / kk
        dxx = uxx * vv - 2.0 * sv * sv * (sux * sux + su * suxx) / kk
        dyy = uu * vyy - 2.0 * su * su * (svy * svy + sv * svyy) / kk
        dxy = ux_ * vy_ - 4.0 * su * sux * sv * svy / kk
        ok = d > _TINY * uu * vv
        d = torch.where(ok, d, 1.0)
        f = torch.where(ok, n0 * n0 / d, 0.0)
        # f = N^2 / D: product and quotient rules (the same operations in the same order as
        # before: the census's results reproduce to the last bit)
        n02 = 2.0 * n0
        gx = n02 * nx / d - f * dx / d
        gy = n02 * ny / d - f * dy / d
        hxx = (2.0 * (nx * nx + n0 * nxx) - 2.0 * gx * dx - f * dxx) / d
        hyy = (2.0 * (ny * ny + n0 * nyy) - 2.0 * gy * dy - f * dyy) / d
        hxy = (2.0 * (nx * ny + n0 * nxy) - gx * dy - gy * dx - f * dxy) / d
        grad = torch.stack([gx, gy], dim=1)
        hess = torch.stack([hxx, hxy, hxy, hyy], dim=1).view(-1, 2, 2)
        return f, grad, hess


def _norm_terms(
    w: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sum weight w^2`` and its first two derivatives from ``w, w', w''`` stacked as
    ``[n, 3, k]`` (``weight`` ``[k]``: 1, or 1 and 2 for the taps of a folded factor)."""
    w0, w1, w2 = w.unbind(1)
    return (
        torch.matmul(w0 * w0, weight),
        2.0 * torch.matmul(w0 * w1, weight),
        2.0 * (torch.matmul(w1 * w1, weight) + torch.matmul(w0 * w2, weight)),
    )


def _square_orbits(table: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Orbits of the ``k x k`` taps under the symmetries of the square, when ``table``
    ``[J, 4, k*k]`` (cubic coefficients of a flattened model) is invariant under them.

    Returns the one-hot orbit matrix ``[k*k, R]`` (column ``r`` sums the taps of orbit
    ``r``; the centre is the orbit of one tap) and the index of each orbit's first tap
    ``[R]``; None when a tap differs from its orbit's first by more than ``1e-13`` of the
    largest coefficient (then the taps are not pooled). A model invariant under the
    symmetries correlates with ``z`` as its orbit values with the orbit sums of ``z``.
    """
    c = k // 2
    keys: dict[tuple[int, int], int] = {}
    orbit = []
    for r in range(k):
        for q in range(k):
            a, b = abs(r - c), abs(q - c)
            orbit.append(keys.setdefault((max(a, b), min(a, b)), len(keys)))
    if len(keys) == k * k:
        return None
    member = torch.tensor(orbit, device=table.device)
    first = torch.tensor([orbit.index(i) for i in range(len(keys))], device=table.device)
    scale = float(table.abs().amax())
    for j, r in enumerate(orbit):  # tap by tap: no temporary of the table's size
        i = int(first[r])
        if j != i and float((table[..., j] - table[..., i]).abs().amax()) > 1e-13 * scale:
            return None
    onehot = torch.zeros(k * k, len(keys), dtype=table.dtype, device=table.device)
    onehot[torch.arange(k * k, device=table.device), member] = 1.0
    return onehot, first


Jet = tuple  # (value, first, second derivative) of a quantity in sigma: [n] tensors


def _jmul(a: Jet, b: Jet) -> Jet:
    """Product of two second-order jets."""
    return (a[0] * b[0], a[1] * b[0] + a[0] * b[1], a[2] * b[0] + 2.0 * a[1] * b[1] + a[0] * b[2])


def _jdiv(a: Jet, b: Jet) -> Jet:
    """Quotient of two second-order jets (``b[0]`` nonzero)."""
    q0 = a[0] / b[0]
    q1 = (a[1] - q0 * b[1]) / b[0]
    return q0, q1, (a[2] - 2.0 * q1 * b[1] - q0 * b[2]) / b[0]


def _jscale(a: Jet, c: float) -> Jet:
    """A jet times a constant."""
    return a[0] * c, a[1] * c, a[2] * c


def _jsub(a: Jet, b: Jet) -> Jet:
    """Difference of two jets."""
    return a[0] - b[0], a[1] - b[1], a[2] - b[2]


def _jadd(a: Jet, b: Jet) -> Jet:
    """Sum of two jets."""
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


class _LapObjective:
    """One-scale models (filters as ``[n, P]``): ``"lap"`` and model 7 (closed-form alpha).

    When the model is invariant under the symmetries of the square (:func:`_square_orbits`),
    the filters are first pooled into their orbit sums (:meth:`reduce`: 10 numbers for
    7x7 instead of 49) and the tables hold one tap per orbit; every method accepts the
    filters either way.
    """

    dim = 1

    def __init__(
        self, lap: _Interp, norms: _Interp, k: int, kind: str, alpha_range: tuple[float, float]
    ) -> None:
        self.lap, self.norms, self.k, self.kind = lap, norms, k, kind
        self.alpha_range = alpha_range
        self.centre = (k * k) // 2
        self.kk = 1.0 - 1.0 / (k * k)  # ||K_c||^2 of the Kronecker delta K
        self.onehot = None
        self.mult = torch.ones(k * k, dtype=lap.coef.dtype, device=lap.coef.device)
        orbits = _square_orbits(lap.coef, k)
        if orbits is not None:
            self.onehot, first = orbits
            self.lap = _Interp(
                lap.coef.index_select(2, first).contiguous(), 1.0 / lap.inv_step, lap.sigma_max
            )
            self.mult = self.onehot.sum(dim=0)  # taps per orbit
            self.centre = int(self.onehot[self.centre].argmax())

    def reduce(self, zf: torch.Tensor) -> torch.Tensor:
        """Filters ``[n, k*k]`` as the objective reads them (orbit sums): ``[n, R]``;
        already reduced filters are returned as they are."""
        if self.onehot is None or zf.shape[-1] != self.k * self.k:
            return zf
        return zf @ self.onehot

    def values(self, zf: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """R^2 at scales ``s`` ([G] shared, or [n, S] per filter): ``[n, G]`` / ``[n, S]``."""
        zf = self.reduce(zf)
        lhat, nrm = self.lap(s), self.norms(s)[..., 0]  # unit-norm L, and its raw norm
        if s.ndim == 1:
            zl = zf @ lhat.T
        else:
            zl = torch.matmul(lhat, zf[:, :, None])[..., 0]
        p = self.k * self.k
        lm = torch.matmul(lhat, self.mult) / p
        ll = (torch.matmul(lhat * lhat, self.mult) - p * lm * lm).clamp(min=_TINY)  # ||L_c||^2
        if self.kind == "iso":
            return zl * zl / ll
        # model 7: y ~ a (K - alpha L) + b = a K - a alpha_hat L_hat + b, alpha_hat = alpha ||L||
        zk = zf[:, self.centre : self.centre + 1]  # <z, K_c> (z is centred)
        kl = lhat[..., self.centre] - lm  # <K_c, L_c>
        kk = self.kk
        det = kk * ll - kl * kl
        okd = det > 1e-12 * kk * ll
        sdet = torch.where(okd, det, 1.0)
        ca = (ll * zk - kl * zl) / sdet  # coefficient of K_c
        cl = (kk * zl - kl * zk) / sdet  # coefficient of L_c
        ahat = -cl / torch.where(ca != 0, ca, 1.0)
        lo, hi = self.alpha_range[0] * nrm, self.alpha_range[1] * nrm
        inside = okd & (ca != 0) & (ahat >= lo) & (ahat <= hi)

        def bound(ah: torch.Tensor) -> torch.Tensor:
            num = zk - ah * zl
            return num * num / (kk - 2.0 * ah * kl + ah * ah * ll)

        return torch.where(inside, ca * zk + cl * zl, torch.maximum(bound(lo), bound(hi)))

    def grid(self, zf: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
        """R^2 on the grid ``sig``: ``[n, G]``.

        Model 7 as in :meth:`values`, with everything that depends on the scale alone
        computed once per column: with ``A = ll zk - kl zl`` and ``B = kk zl - kl zk``
        (``det`` times the coefficients of K_c and L_c), the free optimum
        ``alpha_hat = -B / A`` lies in ``[lo, hi]`` exactly when ``(lo A + B)(hi A + B) <=
        0``, and its R^2 is ``(ll zk^2 - 2 kl zk zl + kk zl^2) / det``.
        """
        if self.kind == "iso":
            return self.values(zf, sig)
        zf = self.reduce(zf)
        lhat_t, c_lo, c_hi, okd, b_lo, b_hi, f_k, f_l = self._grid_columns(sig)
        zl = zf @ lhat_t  # [n, G]
        zk = zf[:, self.centre : self.centre + 1]  # [n, 1]
        e_lo = torch.addcmul(zl * c_lo[0], zk, c_lo[1])  # lo A + B
        e_hi = torch.addcmul(zl * c_hi[0], zk, c_hi[1])  # hi A + B
        # (A = 0 gives a product B^2 >= 0: inside only when A = B = 0, i.e. zk = zl = 0,
        # where both branches give 0)
        inside = (e_lo.mul_(e_hi) <= 0) & okd
        del e_hi, e_lo

        def bound(ah: torch.Tensor | None, inv_den: torch.Tensor) -> torch.Tensor:
            if ah is None:  # alpha = 0: the delta alone, [n, 1] (the same for every sigma)
                return zk * zk * inv_den
            return torch.addcmul(zk, zl, -ah).square_().mul_(inv_den)

        free = torch.addcmul(zk * f_k[0], zl, f_k[1])
        free = torch.addcmul((zk * zk) * f_l, zl, free)
        return torch.where(inside, free, torch.maximum(bound(*b_lo), bound(*b_hi)))

    def _grid_columns(self, sig: torch.Tensor) -> tuple:
        """What :meth:`grid` needs of each grid scale ``sig`` [G] (cached for the last
        grid: every chunk of a census has the same)."""
        cached = getattr(self, "_columns", None)
        if cached is not None and cached[0].shape == sig.shape and torch.equal(cached[0], sig):
            return cached[1]
        lhat, nrm = self.lap(sig), self.norms(sig)[..., 0]  # [G, R], [G]
        p = self.k * self.k
        lm = torch.matmul(lhat, self.mult) / p
        ll = (torch.matmul(lhat * lhat, self.mult) - p * lm * lm).clamp(min=_TINY)
        kl = lhat[:, self.centre] - lm
        kk = self.kk
        det = kk * ll - kl * kl
        okd = det > 1e-12 * kk * ll
        sdet = torch.where(okd, det, torch.ones_like(det))
        lo, hi = self.alpha_range[0] * nrm, self.alpha_range[1] * nrm

        def bound_terms(a: float, ah: torch.Tensor) -> tuple:
            inv_den = 1.0 / (kk - 2.0 * ah * kl + ah * ah * ll)
            # alpha = 0: the denominator is kk in every column
            return (None, inv_den[:1]) if a == 0.0 else (ah, inv_den)

        cols = (
            lhat.T.contiguous(),
            (kk - lo * kl, lo * ll - kl),
            (kk - hi * kl, hi * ll - kl),
            okd,
            bound_terms(self.alpha_range[0], lo),
            bound_terms(self.alpha_range[1], hi),
            (-2.0 * kl / sdet, kk / sdet),
            ll / sdet,
        )
        self._columns = (sig.clone(), cols)
        return cols

    def newton(
        self, zf: torch.Tensor, th: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """R^2 at ``th`` [n, 1] (``zf`` as read, :meth:`reduce`) with its exact first and
        second derivatives in sigma from the cubic tables: ``[n]`` each.

        The same expressions as :meth:`values`, carried as second-order jets
        ``(value, d/dsigma, d^2/dsigma^2)``; for model 7 the branch (free alpha, or alpha on
        the bound that explains more) is the one :meth:`values` takes at ``th``.
        """
        lhat = self.lap.derivs(th[:, 0])  # 3 x [n, R]: L, L', L''
        p = float(self.k * self.k)
        zl = tuple((zf * w).sum(dim=1) for w in lhat)  # linear in L
        lm = tuple(torch.matmul(w, self.mult) / p for w in lhat)
        l0, l1, l2 = lhat
        s2 = (
            torch.matmul(l0 * l0, self.mult),
            2.0 * torch.matmul(l0 * l1, self.mult),
            2.0 * (torch.matmul(l1 * l1, self.mult) + torch.matmul(l0 * l2, self.mult)),
        )
        ll = _jsub(s2, _jscale(_jmul(lm, lm), p))
        if self.kind == "iso":
            return _jdiv(_jmul(zl, zl), ll)
        zk = zf[:, self.centre]
        kl = tuple(w[:, self.centre] - m for w, m in zip(lhat, lm, strict=True))
        kk = self.kk
        det = _jsub(_jscale(ll, kk), _jmul(kl, kl))
        # free alpha: (ll zk^2 - 2 kl zk zl + kk zl^2) / det
        klzl, zlzl = _jmul(kl, zl), _jmul(zl, zl)
        num = tuple(
            zk * zk * a - 2.0 * zk * b + kk * c for a, b, c in zip(ll, klzl, zlzl, strict=True)
        )
        free = _jdiv(num, det)
        nrm = tuple(w[:, 0] for w in self.norms.derivs(th[:, 0]))
        zero = torch.zeros_like(zk)

        def bound(a: float) -> Jet:  # alpha = a: (zk - ah zl)^2 / (kk - 2 ah kl + ah^2 ll)
            ah = _jscale(nrm, a)
            top = _jsub((zk, zero, zero), _jmul(ah, zl))
            den = _jsub((zero + kk, zero, zero), _jscale(_jmul(ah, kl), 2.0))
            den = _jadd(den, _jmul(_jmul(ah, ah), ll))
            return _jdiv(_jmul(top, top), den)

        lo, hi = bound(self.alpha_range[0]), bound(self.alpha_range[1])
        # the branch of values(): the free optimum where alpha_hat lies in the range
        okd = det[0] > 1e-12 * kk * ll[0]
        sdet = torch.where(okd, det[0], 1.0)
        ca = (ll[0] * zk - kl[0] * zl[0]) / sdet
        ahat = -(kk * zl[0] - kl[0] * zk) / sdet / torch.where(ca != 0, ca, 1.0)
        inside = okd & (ca != 0)
        inside &= (ahat >= self.alpha_range[0] * nrm[0]) & (ahat <= self.alpha_range[1] * nrm[0])
        on_lo = lo[0] >= hi[0]
        out = [
            torch.where(inside, a, torch.where(on_lo, b, c))
            for a, b, c in zip(free, lo, hi, strict=True)
        ]
        return out[0], out[1], out[2]

    def stencil(self, zf: torch.Tensor, th: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """R^2 at ``th + h {-1, 0, 1}``: ``[n, 3]``."""
        o = torch.tensor([-1.0, 0.0, 1.0], dtype=h.dtype, device=h.device)
        return self.values(zf, th + h[:, None] * o)

    def point(self, zf: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
        """R^2 at ``th`` [n, 1]: ``[n]``."""
        return self.values(zf, th)[:, 0]


class _AsTwoScales:
    """A one-scale objective seen as a two-scale one whose second scale does nothing
    (gradient 0, curvature -1), so that :func:`_refine_sep` refines it: its Newton step
    and trust region then act on the first scale alone, and the second stays at 0."""

    dim = 2

    def __init__(self, obj: _LapObjective) -> None:
        self.obj = obj

    def newton(
        self, z: torch.Tensor, th: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``f`` [n], gradient [n, 2] and Hessian [n, 2, 2] at ``th`` [n, 2]."""
        f, g, h = self.obj.newton(z, th[:, :1])
        zero, one = torch.zeros_like(f), torch.ones_like(f)
        grad = torch.stack([g, zero], dim=1)
        hess = torch.stack([torch.stack([h, zero], 1), torch.stack([zero, -one], 1)], 1)
        return f, grad, hess


def _objectives(tps, k, method, mode, epsilon, sigma_max, alpha_range, dev) -> list[Any]:
    """Interpolated objective of each type on ``dev``."""
    _, step = _knots(sigma_max)
    objs: list[Any] = []
    for tp in tps:
        args = (tp.name, k, method, mode, epsilon, sigma_max)
        if tp.kind == "sep":
            tx, _ = _table(_factor_name(tp.name, "x"), "x", *args[1:])
            ty, _ = _table(_factor_name(tp.name, "y"), "y", *args[1:])
            objs.append(
                _SepObjective(
                    _Interp(tx.to(dev), step, sigma_max), _Interp(ty.to(dev), step, sigma_max), k
                )
            )
        else:
            tl, norms = _table(args[0], "lap", *args[1:])
            objs.append(
                _LapObjective(
                    _Interp(tl.to(dev), step, sigma_max),
                    _Interp(norms.to(dev), step, sigma_max),
                    k,
                    tp.kind,
                    alpha_range,
                )
            )
    return objs
