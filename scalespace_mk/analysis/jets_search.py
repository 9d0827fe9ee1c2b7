"""The scale search of the family census (:mod:`scalespace_mk.analysis.jets`) on fast internals.

For given scales the family's coefficients are a closed-form least-squares problem, so only
the scales are searched: ``sigma`` (N-jet, oriented order 1), ``(sigma_x, sigma_y)``
(anisotropic N-jet) or ``(sigma, theta)`` (oriented order 2). The search never builds an
exact kernel:

1. **Tables.** The 1-D factors ``u_i(sigma) = delta^i T / n(sigma)``, ``i = 0..N``
   (:func:`scalespace_mk.scalespace.jets.jet_axis_rows`; ``n`` the norm of all ``N + 1`` rows
   together, one factor per scale, so the members keep their ratios) are tabulated once per
   (order, k, mode, epsilon, sigma_max) at knots 0.001 apart in sigma and read back by
   piecewise-cubic interpolation with exact first and second derivatives
   (:mod:`scalespace_mk.analysis.tables`; cached). The rows along y are the rows along x
   flipped (y up). A factor common to all members changes neither the span of the family
   nor the oriented combinations, so R^2 is that of the raw members.
2. **Grid.** Every filter against every grid point in one float32 matrix product: per grid
   point the centred members' orthonormal basis ``L^-1 B_c`` (``L L^T = B_c B_c^T``), so
   ``R^2 = ||L^-1 B_c z||^2`` for the centred unit filter ``z``; for oriented order 2 the
   three centred members per scale and ``1 / (w^T G w)`` per (scale, angle), each scale's
   best angle refined by a parabola (the profile ``max_theta R^2`` that the exact fit
   maximises). Grid steps as before (0.05 in sigma for one scale, 0.125 per axis for two,
   64 angles on [0, pi)). The start is the best grid point moved to the vertex of the
   parabola through its neighbours (at most half a step per axis).
3. **Newton.** A trust-region Newton ascent in float64 with the exact gradient and Hessian
   of the interpolated objective: with ``p = B_c z``, ``G = B_c B_c^T`` and ``q = G^-1 p``,
   ``R^2 = p.q``, ``dR^2 = 2 dp.q - q^T dG q`` and
   ``d2R^2 = 2 d2p.q - q^T d2G q + 2 (dp - dG q)^T G^-1 (dp - dG q)``; every ``p`` and ``G``
   term comes from 1-D products of ``u, u', u''`` and ``v, v', v''``
   (``<v_a (x) u_a, v_b (x) u_b> = (v_a.v_b)(u_a.u_b)``, minus the mean term). Oriented
   order 2 maximises ``f = (w.p)^2 / (w^T G w)``, ``w = (cos^2, 2 cos sin, sin^2)(theta)``,
   jointly in ``(sigma, theta)``. A filter stops (a convergence test, not a fixed number of
   steps) where the Hessian is negative definite and the Newton move is below
   :data:`_NEWTON_TOL` or promises at most :data:`_GAIN_TOL` more R^2, or a full Newton
   step promising at most :data:`_STALL_GAIN` lost (the rounding level of the objective),
   and after :data:`_MAX_ITER` steps at most (then its best point is kept). Off the
   concave region the step goes by the trust radius along directions of positive
   curvature (e.g. ``sigma = 0``, where the objective is even in sigma), inwards at a
   bound; a scale on a bound whose gradient points out is held there.

The exact members are built only at the final scales (:func:`scalespace_mk.analysis.jets._exact`).
Chunks of filters run on a thread pool, each on one intra-op thread
(:func:`run_chunks`); the result does not depend on the number of threads.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from scalespace_mk.analysis.tables import _cubic_coefficients, _Interp, _knots
from scalespace_mk.analysis.trust_region import accept
from scalespace_mk.analysis.workers import map_chunks, use_processes
from scalespace_mk.scalespace.jets import jet_axis_rows, oriented_weights

__all__: list[str] = []

_N_THETA = 64  # grid of theta on [0, pi) for oriented order 2 (as the exact fit's)
_MAX_ITER = 40  # Newton steps at most
_NEWTON_TOL = 1e-9  # a proposed Newton move this short (in sigma, or theta) ends the search
_GAIN_TOL = 1e-13  # ... as does a Newton step promising at most this much more R^2
_STALL_GAIN = 1e-11  # ... or a rejected full Newton step that promised at most this
_ANGLE_ROUNDS = 2  # oriented order 2: searches again from the other angle at most this often
_BRANCH_TOL = 1e-3  # ... when its grid estimate is within this share of the converged R^2
_JITTER = 1e-13  # relative ridge on the Gram matrices (collinear members at large sigma)
_GRID_DTYPE = torch.float32  # precision of the grid products (argmax only)
_GRID_ROWS = 1024  # filters per grid product
_GRID_MAX_BYTES = 256 << 20  # largest grid matrix (a coarser grid beyond: large k, sigma_max)
_GRID_BLOCK_BYTES = 4 << 20  # largest [rows, columns] block of a grid product (stays in cache)
_TINY = 1e-14  # ||g_c||^2 of a unit-norm model below this counts as constant


@functools.lru_cache(maxsize=8)
def _axis_table(order: int, k: int, mode: str, eps1d: float, sigma_max: float, n_fft: int):
    """Cubic coefficients ``[J, 4, (N + 1) k]`` of the 1-D factors ``delta^i T``, ``i = 0..N``,
    divided by one norm per scale (that of all N + 1 rows together; CPU, cached)."""
    knots, _ = _knots(sigma_max)
    s = torch.as_tensor(knots)
    with torch.no_grad():
        u, _ = jet_axis_rows(s, s[:1], order, k, mode=mode, n_fft=n_fft, eps1d=eps1d)
    # one norm per scale for all orders (members keep their ratios: oriented weights hold)
    nrm = u.flatten(1).norm(dim=1)[:, None, None]
    u = u / torch.where(nrm > 0, nrm, torch.ones_like(nrm))
    return _cubic_coefficients(u.reshape(len(knots), -1))


_O, _X, _Y, _XX, _YY, _XY = (0, 0), (1, 0), (0, 1), (2, 0), (0, 2), (1, 1)  # (d/dx, d/dy)


class _Parts:
    """The family's members and their scale derivatives at one point per filter, as 1-D
    factors.

    ``u[:, d, i]`` is the d-th derivative in sigma_x of the factor ``delta_x^i T`` (taps
    left to right), ``v[:, d, j]`` that in sigma_y of ``delta_y^j T`` (rows top to bottom):
    member ``a = (i, j)`` differentiated ``(dx, dy)`` times is ``v[:, dy, j] (x) u[:, dx, i]``.
    Every quantity of the search is an inner product of such outer products, computed
    without forming the members (and in few batched products: small matrices cost per
    matrix): ``p`` (the filter's projections), ``G`` (their Gram matrix), the images
    ``sum_a c_a d^a B_a`` and their centred inner products. ``same``: one scale (``v`` is
    ``u`` flipped, so their inner products agree).
    """

    def __init__(self, u, v, z3, ii, jj, same: bool) -> None:
        n, _, n1, k = u.shape
        self.n1, self.k, self.kk, self.ii, self.jj, self.same = n1, k, float(k * k), ii, jj, same
        self.su, self.sv = u.sum(-1), v.sum(-1)  # [n, 3, N+1]
        self.ua, self.va = u.reshape(n, 3 * n1, k), v.reshape(n, 3 * n1, k)
        zu = torch.matmul(z3, self.ua.transpose(1, 2))  # [n, k, 3(N+1)]
        self.pz = torch.matmul(self.va, zu)  # [n, 3(N+1) (dy, j), 3(N+1) (dx, i)]
        self.ut = u.permute(0, 2, 1, 3).reshape(n, n1, 3 * k)  # [n, i, (dx, c)]
        self.vt = v.permute(0, 2, 1, 3).reshape(n, n1, 3 * k).transpose(1, 2)  # [n, (dy, r), j]

    def _at(self, w: torch.Tensor, a: tuple[int, int]) -> torch.Tensor:
        """Entries ``(dy, j_m), (dx, i_m)`` of a ``[n, 3(N+1), 3(N+1)]`` matrix: ``[n, M]``."""
        return w[:, a[1] * self.n1 + self.jj, a[0] * self.n1 + self.ii]

    def p(self, a: tuple[int, int]) -> torch.Tensor:
        """``<z, d^a B_m>`` ``[n, M]`` of the centred filters."""
        return self._at(self.pz, a)

    def gram(self) -> torch.Tensor:
        """``G = <B_a, B_b>_c`` ``[n, M, M]`` (centred members)."""
        n1, ii, jj = self.n1, self.ii, self.jj
        u0 = self.ua[:, :n1]
        uu = torch.matmul(u0, u0.transpose(1, 2))
        if self.same:
            vv = uu
        else:
            v0 = self.va[:, :n1]
            vv = torch.matmul(v0, v0.transpose(1, 2))
        m = self.su[:, 0, ii] * self.sv[:, 0, jj]
        g = uu[:, ii][:, :, ii] * vv[:, jj][:, :, jj]
        return g - m[:, :, None] * m[:, None, :] / self.kk

    def images(self, cs: list[torch.Tensor]) -> _Images:
        """The images ``sum_m c_m d^a B_m`` of coefficient vectors ``cs`` ([n, M] each) for
        every derivative order ``a`` (two products for all of them)."""
        n, n1, k, big = cs[0].shape[0], self.n1, self.k, len(cs)
        q = cs[0].new_zeros(n, big, n1, n1)
        for i, c in enumerate(cs):
            q[:, i, self.jj, self.ii] = c
        qu = torch.matmul(q.reshape(n, big * n1, n1), self.ut)  # [n, L (N+1), 3k]
        qu = qu.reshape(n, big, n1, 3 * k).transpose(1, 2).reshape(n, n1, big * 3 * k)
        im = torch.matmul(self.vt, qu)  # [n, 3k (dy, r), L 3k (l, dx, c)]
        im = im.reshape(n, 3, k, big, 3, k).permute(0, 3, 1, 4, 2, 5)
        return _Images(im.reshape(n, big * 9, k * k), self.kk)

    def projections(self, img: torch.Tensor) -> torch.Tensor:
        """``<d^a B_m, img>`` (uncentred) for all ``a``: ``[n, 3(N+1), 3(N+1)]`` (read with
        :meth:`project`)."""
        return torch.matmul(torch.matmul(self.va, img), self.ua.transpose(1, 2))

    def project(self, w: torch.Tensor, img: torch.Tensor, a: tuple[int, int]) -> torch.Tensor:
        """``<d^a B_m, img>_c`` ``[n, M]`` from ``w = projections(img)``."""
        mean = self.sv[:, a[1], self.jj] * self.su[:, a[0], self.ii]
        return self._at(w, a) - mean * img.sum((1, 2))[:, None] / self.kk

    def project0(self, imgs: list[torch.Tensor]) -> list[torch.Tensor]:
        """``<B_m, img>_c`` ``[n, M]`` of several images ``[n, k, k]`` (two products)."""
        n, k, n1, big = imgs[0].shape[0], self.k, self.n1, len(imgs)
        w = torch.matmul(self.va[:, :n1], torch.cat(imgs, 2))  # [n, N+1, L k]
        w = w.reshape(n, n1, big, k).transpose(1, 2).reshape(n, big * n1, k)
        w = torch.matmul(w, self.ua[:, :n1].transpose(1, 2)).reshape(n, big, n1, n1)
        mean = self.sv[:, 0, self.jj] * self.su[:, 0, self.ii] / self.kk
        return [
            w[:, i, self.jj, self.ii] - mean * img.sum((1, 2))[:, None]
            for i, img in enumerate(imgs)
        ]


class _Images:
    """Images ``[n, L * 9, k * k]`` (row ``9 l + 3 dy + dx``) and their centred inner
    products (only those asked for: a handful of the ``(9 L)^2``)."""

    def __init__(self, flat: torch.Tensor, kk: float) -> None:
        self.flat, self.kk = flat, kk
        self.sums = flat.sum(-1)

    def __call__(self, a: tuple[int, int], l: int = 0) -> torch.Tensor:  # noqa: E741
        """Image ``[n, k, k]`` of vector ``l`` differentiated ``a = (dx, dy)``."""
        k = int(round(math.sqrt(self.flat.shape[-1])))
        return self.flat[:, 9 * l + 3 * a[1] + a[0]].reshape(-1, k, k)

    def inner(self, a: tuple[int, int], b: tuple[int, int], la: int = 0, lb: int = 0):
        """Centred inner product ``[n]`` of images ``(a, la)`` and ``(b, lb)``."""
        i, j = 9 * la + 3 * a[1] + a[0], 9 * lb + 3 * b[1] + b[0]
        dot = (self.flat[:, i] * self.flat[:, j]).sum(-1)
        return dot - self.sums[:, i] * self.sums[:, j] / self.kk


def _neighbour(i: torch.Tensor, d: int, n: int, wrap: bool) -> torch.Tensor:
    """Index ``i + d`` on a grid of ``n`` points: periodic, or reflected at both ends."""
    j = i + d
    if wrap:
        return torch.remainder(j, n)
    j = torch.where(j < 0, -j, j)
    return torch.where(j > n - 1, 2 * (n - 1) - j, j).clamp(0, n - 1)


def _vertex(fm: torch.Tensor, f0: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Offset (in steps, within +-1/2) of the vertex of the parabola through three values."""
    curv = fp - 2.0 * f0 + fm
    ok = curv < 0
    off = (fm - fp) / (2.0 * torch.where(ok, curv, -torch.ones_like(curv)))
    return torch.where(ok, off, torch.zeros_like(off)).clamp(-0.5, 0.5)


class Search:
    """Interpolated objective of one family on one device, its grid and its Newton search.

    Parameters
    ----------
    family, order : str, int
        ``"njet"`` (order 1-4) or ``"oriented"`` (1, 2).
    members : sequence of (int, int)
        The jet members ``(i, j)`` (``delta_x^i delta_y^j``) the family combines.
    k : int
        Filter size.
    two : bool
        Two scales (anisotropic N-jet).
    mode, eps1d, sigma_max, n_fft
        As the exact members of :class:`scalespace_mk.analysis.jets._Family` use them.
    step : float
        Grid step in sigma.
    device : torch.device
    """

    def __init__(
        self,
        family: str,
        order: int,
        members: Iterable[tuple[int, int]],
        k: int,
        two: bool,
        mode: str,
        eps1d: float,
        sigma_max: float,
        n_fft: int,
        step: float,
        device: torch.device,
    ) -> None:
        idx = torch.tensor(list(members), dtype=torch.int64, device=device)
        self.ii, self.jj = idx[:, 0], idx[:, 1]
        self.m = idx.shape[0]
        self.n1 = order + 1
        self.k, self.kk = k, float(k * k)
        self.two = two
        self.oriented2 = (family, order) == ("oriented", 2)
        self.sigma_max = sigma_max
        coef = _axis_table(order, k, mode, eps1d, sigma_max, n_fft)
        self.rows = _Interp(coef.to(device), _knots(sigma_max)[1], sigma_max)
        self.dim = 2 if (two or self.oriented2) else 1
        n_grid = max(int(math.ceil(sigma_max / step)), 2)
        # a grid matrix past _GRID_MAX_BYTES (large k and sigma_max) gets a coarser grid
        group = self.m
        fit = _GRID_MAX_BYTES // (4 * k * k * group)
        fit = int(math.isqrt(fit)) if two else int(fit)
        n_grid = max(min(n_grid, fit - 1), 2)
        self.sig = torch.linspace(0.0, sigma_max, n_grid + 1, dtype=torch.float64, device=device)
        self.h = 0.5 * sigma_max / n_grid  # half the grid step: first trust radius
        self.theta = torch.arange(_N_THETA, dtype=torch.float64, device=device) * (
            math.pi / _N_THETA
        )
        self.models: torch.Tensor | None = None  # the grid matrix, built once (grid_models)

    # ----------------------------------------------------------------------------------
    # grid

    def grid_models(self) -> torch.Tensor:
        """The grid as one matrix ``[k*k, columns]`` (float32; built once, shared by threads).

        N-jet and oriented order 1: per grid point (index ``iy * G + ix`` for two scales) the
        ``M`` rows of ``L^-1 B_c``; oriented order 2: per scale the 3 centred members
        ``B_c`` (with ``1 / (w^T G w)`` per scale and angle, index ``g * 64 + t``).
        """
        if self.models is not None:
            return self.models
        k, kk = self.k, int(self.kk)
        u = self.rows(self.sig).reshape(-1, self.n1, k)  # [G, N+1, k]
        ui, vj = u[:, self.ii], u.flip(-1)[:, self.jj]  # [G, M, k]
        g = u.shape[0]
        blocks = []
        for iy in range(g if self.two else 1):  # one row of the grid at a time (memory)
            if self.two:  # [Gx, M, k, k] at sigma_y = sig[iy]
                b = vj[iy, None, :, :, None] * ui[:, :, None, :]
            else:
                b = vj[:, :, :, None] * ui[:, :, None, :]
            blocks.append(self._block(b.reshape(-1, self.m, kk)))
        self.models = torch.cat(blocks, 1).contiguous()
        return self.models

    def _block(self, b: torch.Tensor) -> torch.Tensor:
        """Grid columns ``[k*k, S * group]`` (float32) of members ``b`` [S, M, k*k]."""
        bc = b - b.mean(-1, keepdim=True)
        if self.oriented2:  # the centred members, and 1 / (w^T G w) per (scale, angle)
            w = oriented_weights(2, self.theta)  # [T, 3]
            den = torch.einsum("tm,smp,tn,snp->st", w, bc, w, bc)
            raw = torch.einsum("tm,smp->stp", w, b).square().sum(-1)
            ok = den > _TINY * raw
            inv = torch.where(ok, 1.0 / den.clamp(min=1e-300), torch.zeros_like(den))
            self.inv_den = inv.reshape(-1, _N_THETA).to(_GRID_DTYPE)
            self.w_grid = w.T.to(_GRID_DTYPE).contiguous()  # [3, T]
            return bc.reshape(-1, bc.shape[-1]).T.to(_GRID_DTYPE)
        gram = bc @ bc.transpose(-1, -2)
        tr = torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1).clamp(min=1e-300)
        eye = torch.eye(self.m, dtype=gram.dtype, device=gram.device)
        chol, _ = torch.linalg.cholesky_ex(gram + (_JITTER * tr)[:, None, None] * eye)
        basis = torch.linalg.solve_triangular(chol, bc, upper=False)  # [S, M, P]
        return basis.reshape(-1, bc.shape[-1]).T.to(_GRID_DTYPE)

    def start(self, zf: torch.Tensor) -> torch.Tensor:
        """Start of the search per unit centred filter ``zf`` [n, k*k]: ``[n, dim]``.

        The best grid point, moved to the vertex of the parabola through it and its two
        neighbours along each axis (at most half a step; the scales reflect at 0 and
        ``sigma_max``, theta is periodic): the Newton search then starts close.
        """
        models = self.grid_models()
        g = self.sig.shape[0]
        # the grid as [A, B]: (1, sigma), (sigma_y, sigma_x) or (sigma, theta)
        a_n, b_n = (g, _N_THETA) if self.oriented2 else ((g, g) if self.two else (1, g))
        out = torch.empty(zf.shape[0], 2, dtype=torch.float64, device=zf.device)
        cols = a_n * b_n * (1 if self.oriented2 else self.m)  # floats per filter
        rows = int(max(1, min(_GRID_ROWS, _GRID_BLOCK_BYTES // (4 * cols))))
        for s in range(0, zf.shape[0], rows):
            c = torch.matmul(zf[s : s + rows].to(_GRID_DTYPE), models)
            if self.oriented2:
                ia, ib, off_a, off_b = self._start_oriented(c, g)
            else:
                vals = c.square_().view(c.shape[0], -1, self.m).sum(-1)
                best = vals.argmax(1)
                ia, ib = best // b_n, best % b_n

                def at(i: torch.Tensor, j: torch.Tensor, vals=vals) -> torch.Tensor:
                    return vals.gather(1, (i * b_n + j)[:, None])[:, 0].double()

                f0 = at(ia, ib)
                off_b = _vertex(at(ia, _neighbour(ib, -1, b_n, False)), f0,
                                at(ia, _neighbour(ib, 1, b_n, False)))  # fmt: skip
                if a_n > 1:
                    off_a = _vertex(at(_neighbour(ia, -1, a_n, False), ib), f0,
                                    at(_neighbour(ia, 1, a_n, False), ib))  # fmt: skip
                else:
                    off_a = torch.zeros_like(off_b)
            step = 2.0 * self.h
            if self.oriented2:
                th0 = self.sig[ia] + off_a * step
                th1 = self.theta[ib] + off_b * (math.pi / _N_THETA)
            else:
                th0 = self.sig[ib] + off_b * step
                th1 = self.sig[ia] + off_a * step
                th1 = th1.clamp(0.0, self.sigma_max)
            out[s : s + rows, 0] = th0.clamp(0.0, self.sigma_max)
            out[s : s + rows, 1] = th1
        return out[:, : self.dim]

    def _start_oriented(self, c: torch.Tensor, g: int):
        """Oriented order 2: the best scale of the profile ``max_theta R^2`` (each scale's
        best angle refined by a parabola, as the exact fit finds theta), its angle, and the
        parabolic offsets along sigma (of the profile) and theta."""
        num = torch.matmul(c.view(-1, g, 3), self.w_grid).square_()  # [c, G, T]
        vals = num.mul_(self.inv_den)
        t = _N_THETA
        f0, arg = vals.max(2)  # [c, G]
        fm = vals.gather(2, _neighbour(arg, -1, t, True)[:, :, None])[:, :, 0]
        fp = vals.gather(2, _neighbour(arg, 1, t, True)[:, :, None])[:, :, 0]
        f0, fm, fp = f0.double(), fm.double(), fp.double()
        curv = fp - 2.0 * f0 + fm
        ok = curv < 0
        lift = (fp - fm) ** 2 / (8.0 * torch.where(ok, -curv, torch.ones_like(curv)))
        prof = f0 + torch.where(ok, lift.clamp(max=0.5 * (fp - fm).abs()), 0.0)
        ia = prof.argmax(1)
        ib = arg.gather(1, ia[:, None])[:, 0]

        def at(v: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            return v.gather(1, i[:, None])[:, 0]

        off_b = _vertex(at(fm, ia), at(f0, ia), at(fp, ia))
        off_a = _vertex(at(prof, _neighbour(ia, -1, g, False)), at(prof, ia),
                        at(prof, _neighbour(ia, 1, g, False)))  # fmt: skip
        return ia, ib, off_a, off_b

    # ----------------------------------------------------------------------------------
    # the objective, its gradient and Hessian

    def _factors(self, s: torch.Tensor) -> torch.Tensor:
        """``u, u', u''`` at scales ``[n]``: ``[n, 3, N + 1, k]``."""
        f, d1, d2 = self.rows.derivs(s)
        return torch.stack([f, d1, d2], 1).reshape(s.shape[0], 3, self.n1, self.k)

    def _parts(self, z3: torch.Tensor, th: torch.Tensor) -> _Parts:
        sx = th[:, 0]
        u = self._factors(sx)
        v = self._factors(th[:, 1]) if self.two else u
        return _Parts(u, v.flip(-1), z3, self.ii, self.jj, not self.two)

    def objective(
        self, z3: torch.Tensor, th: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """R^2 of unit centred filters ``z3`` [n, k, k] at ``th`` [n, dim], its gradient
        ``[n, dim]`` and Hessian ``[n, dim, dim]`` (exact, of the interpolated members)."""
        pt = self._parts(z3, th)
        if self.oriented2:
            return self._oriented(pt, th[:, 1])
        g = pt.gram()
        p = pt.p(_O)
        tr = torch.diagonal(g, dim1=-2, dim2=-1).sum(-1).clamp(min=1e-300)
        eye = torch.eye(self.m, dtype=g.dtype, device=g.device)
        chol, _ = torch.linalg.cholesky_ex(g + (_JITTER * tr)[:, None, None] * eye)
        q = torch.cholesky_solve(p[:, :, None], chol)[:, :, 0]
        f = (p * q).sum(-1)
        im = pt.images([q])

        def form(a: tuple[int, int], b: tuple[int, int]) -> torch.Tensor:
            return im.inner(a, b)  # q^T <d^a B, d^b B> q

        # q^T d2G q (<d2 B_a, B_b> + <B_a, d2 B_b> + cross terms)
        gxx = 2.0 * (form(_XX, _O) + form(_X, _X))
        gyy = 2.0 * (form(_YY, _O) + form(_Y, _Y))
        gxy = 2.0 * (form(_XY, _O) + form(_X, _Y))
        # dG q: (dG q)_a = <d B_a, sum_b q_b B_b> + <B_a, sum_b q_b d B_b>
        i0 = im(_O)
        w = pt.projections(i0)
        bx, by = pt.project0([im(_X), im(_Y)])
        dgx = pt.project(w, i0, _X) + bx
        dgy = pt.project(w, i0, _Y) + by
        px, py, pxx, pyy, pxy = pt.p(_X), pt.p(_Y), pt.p(_XX), pt.p(_YY), pt.p(_XY)
        if self.two:
            dgq = torch.stack([dgx, dgy], 1)
            dp = torch.stack([px, py], 1)  # [n, 2, M]
            d2p = torch.stack([torch.stack([pxx, pxy], 1), torch.stack([pxy, pyy], 1)], 1)
            qd2gq = torch.stack([torch.stack([gxx, gxy], 1), torch.stack([gxy, gyy], 1)], 1)
        else:  # d/ds = d/dx + d/dy
            dgq = (dgx + dgy)[:, None]
            dp = (px + py)[:, None]
            d2p = (pxx + 2.0 * pxy + pyy)[:, None, None]
            qd2gq = (gxx + 2.0 * gxy + gyy)[:, None, None]
        r = dp - dgq  # [n, d, M]
        grad = 2.0 * (dp * q[:, None]).sum(-1) - (dgq * q[:, None]).sum(-1)
        gir = torch.cholesky_solve(r.transpose(1, 2), chol)  # [n, M, d]
        hess = 2.0 * (d2p * q[:, None, None]).sum(-1) - qd2gq + 2.0 * torch.matmul(r, gir)
        return f, grad, hess

    @staticmethod
    def _oriented(pt: _Parts, theta: torch.Tensor):
        """``f = (w.p)^2 / (w^T G w)`` in ``(sigma, theta)``: value, gradient, Hessian."""
        c2, s2 = torch.cos(2.0 * theta), torch.sin(2.0 * theta)
        w = oriented_weights(2, theta)
        wt = torch.stack([-s2, 2.0 * c2, s2], 1)  # d w / d theta
        wtt = torch.stack([-2.0 * c2, -4.0 * s2, 2.0 * c2], 1)
        p, ps = pt.p(_O), pt.p(_X) + pt.p(_Y)
        pss = pt.p(_XX) + 2.0 * pt.p(_XY) + pt.p(_YY)
        im = pt.images([w, wt, wtt])  # vectors 0, 1, 2

        def inner(a: tuple[int, int], b: tuple[int, int], la: int = 0, lb: int = 0):
            return im.inner(a, b, la, lb)

        def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a * b).sum(-1)

        num = dot(w, p)
        n_s, n_t = dot(w, ps), dot(wt, p)
        n_ss, n_st, n_tt = dot(w, pss), dot(wt, ps), dot(wtt, p)
        den = inner(_O, _O)
        d_s = 2.0 * (inner(_X, _O) + inner(_Y, _O))
        d_t = 2.0 * inner(_O, _O, 1, 0)
        d_ss = 2.0 * (
            inner(_XX, _O)
            + inner(_YY, _O)
            + 2.0 * inner(_XY, _O)
            + inner(_X, _X)
            + inner(_Y, _Y)
            + 2.0 * inner(_X, _Y)
        )
        d_st = 2.0 * (
            inner(_X, _O, 1, 0) + inner(_X, _O, 0, 1) + inner(_Y, _O, 1, 0) + inner(_Y, _O, 0, 1)
        )
        d_tt = 2.0 * inner(_O, _O, 2, 0) + 2.0 * inner(_O, _O, 1, 1)
        ok = den > 0
        den = torch.where(ok, den, torch.ones_like(den))
        f = torch.where(ok, num * num / den, torch.zeros_like(den))
        gs_ = (2.0 * num * n_s - f * d_s) / den
        gt_ = (2.0 * num * n_t - f * d_t) / den
        hss = (2.0 * (n_s * n_s + num * n_ss) - 2.0 * gs_ * d_s - f * d_ss) / den
        htt = (2.0 * (n_t * n_t + num * n_tt) - 2.0 * gt_ * d_t - f * d_tt) / den
        hst = (2.0 * (n_s * n_t + num * n_st) - gs_ * d_t - gt_ * d_s - f * d_st) / den
        grad = torch.stack([gs_, gt_], 1)
        hess = torch.stack([torch.stack([hss, hst], 1), torch.stack([hst, htt], 1)], 1)
        return f, grad, hess

    # ----------------------------------------------------------------------------------
    # Newton

    def refine(
        self, z3: torch.Tensor, th: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Trust-region Newton ascent from ``th`` [n, dim] for all filters at once.

        Returns the scales (theta in ``[0, pi)`` for oriented order 2), R^2 there and whether each
        filter converged (see the module docstring).
        """
        n, d = th.shape
        dev, dt = th.device, th.dtype
        inf = math.inf
        lo = torch.tensor([0.0, 0.0 if self.two else -inf][:d], dtype=dt, device=dev)
        hi = torch.tensor(
            [self.sigma_max, self.sigma_max if self.two else inf][:d], dtype=dt, device=dev
        )
        unit = torch.tensor(
            [self.h, self.h if self.two else math.pi / _N_THETA / 2][:d], dtype=dt, device=dev
        )
        bounded = torch.isfinite(hi)
        eye_neg = -torch.eye(d, dtype=dt, device=dev)
        out = th.clone()
        out_f = torch.zeros(n, dtype=dt, device=dev)
        converged = torch.zeros(n, dtype=torch.bool, device=dev)
        idx = torch.arange(n, device=dev)
        zs, cur = z3, th
        f, g, hm = self.objective(zs, cur)
        r = torch.ones(n, dtype=dt, device=dev)  # trust radius in units of `unit`
        stalled = torch.zeros(n, dtype=torch.bool, device=dev)
        for _ in range(_MAX_ITER):
            # a scale on a bound stays there when the gradient points out (at 0, where the
            # even objective's gradient vanishes, only when it is also concave there)
            diag = torch.diagonal(hm, dim1=-2, dim2=-1)
            held = ((cur >= hi) & (g > 0)) | ((cur <= lo) & (g < 0) & (diag <= 0))
            free = ~held
            # in units of the first radius per coordinate (sigma and theta differ)
            gs = torch.where(free, g, torch.zeros_like(g)) * unit
            hs = hm * (unit[:, None] * unit[None, :])
            pair = free[:, :, None] & free[:, None, :]
            hs = torch.where(pair, hs, eye_neg)
            if d == 1:
                lam, vec = hs[:, 0], torch.ones_like(hs)
            else:
                lam, vec = torch.linalg.eigh(hs)  # columns: eigenvectors
            ge = (vec * gs[:, :, None]).sum(1)  # gradient along each eigenvector
            nd = (lam < 0).all(1)
            # Newton along directions of negative curvature; along the others (a saddle,
            # sigma = 0 of an even objective) either way ascends: go by the radius, uphill,
            # or inwards where the gradient vanishes
            side = torch.where(bounded & (cur >= 0.5 * hi), -1.0, 1.0).to(dt)
            inward = torch.where((vec * side[:, :, None]).sum(1) >= 0, 1.0, -1.0).to(dt)
            sgn = torch.where(ge != 0, torch.sign(ge), inward)
            # ... never out of the range at a bound (the gradient of an even objective at
            # sigma = 0 is interpolation noise): there the other way
            way = vec * sgn[:, None, :]  # [n, coordinate, direction]
            out_lo = (cur <= lo)[:, :, None] & (way < -1e-3)
            out_hi = (cur >= hi)[:, :, None] & (way > 1e-3)
            sgn = torch.where((out_lo | out_hi).any(1), -sgn, sgn)
            neg = lam < 0
            comp = torch.where(neg, -ge / torch.where(neg, lam, -1.0), sgn * r[:, None])
            step = torch.where(free, (vec * comp[:, None, :]).sum(2), torch.zeros_like(g))
            size = step.abs().amax(1)
            limited = size > r
            step = step * torch.where(limited, r / torch.where(limited, size, r), 1.0)[:, None]
            step = step * unit
            prop = torch.minimum(torch.maximum(cur + step, lo), hi)
            move = (prop - cur).abs().amax(1)
            # converged: the move, or the gain the quadratic model still promises, is tiny
            gain = 0.5 * (ge * ge / torch.where(neg, -lam, 1.0)).sum(1)
            conv = (((move <= _NEWTON_TOL) | (gain <= _GAIN_TOL)) & nd) | stalled
            done = conv | (r * unit.min() <= _NEWTON_TOL) | (f < 1e-20)
            if bool(done.any()):
                out[idx] = cur
                out_f[idx] = f
                converged[idx] = conv
                keep = ~done
                idx, zs, prop, cur = idx[keep], zs[keep], prop[keep], cur[keep]
                f, g, hm, r, limited = f[keep], g[keep], hm[keep], r[keep], limited[keep]
                nd, gain = nd[keep], gain[keep]
                if idx.numel() == 0:
                    break
            new = self.objective(zs, prop)
            cur, (f, g, hm), r, acc = accept(prop, cur, new, (f, g, hm), r, limited)
            # a full Newton step that promised almost nothing and lost: the objective's
            # rounding noise (about 1e-13 for high orders) is reached
            stalled = ~acc & nd & ~limited & (gain <= _STALL_GAIN)
        else:
            out[idx] = cur
            out_f[idx] = f
        if self.oriented2:
            out[:, 1] = torch.remainder(out[:, 1], math.pi)
        return out, out_f, converged

    def _other_branch(self, z3: torch.Tensor, th: torch.Tensor):
        """Oriented order 2 at ``th`` [n, 2] (sigma, theta): the best local maximum in theta
        among the 64 angles away from theta (more than 2 steps), refined by a parabola,
        and its R^2 (-inf where there is none)."""
        pt = self._parts(z3, th)
        p, g = pt.p(_O), pt.gram()
        w = oriented_weights(2, self.theta)  # [T, 3]
        num = torch.matmul(p, w.T).square()
        den = torch.einsum("tm,nmk,tk->nt", w, g, w)
        vals = torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(num))
        t = _N_THETA
        here = torch.round(th[:, 1] / (math.pi / t)).long()[:, None]
        steps = torch.remainder(torch.arange(t, device=th.device)[None, :] - here, t)
        near = torch.minimum(steps, t - steps) <= 2
        f0, arg = vals.masked_fill(near, -math.inf).max(1)
        fm = vals.gather(1, _neighbour(arg, -1, t, True)[:, None])[:, 0]
        fp = vals.gather(1, _neighbour(arg, 1, t, True)[:, None])[:, 0]
        peak = (f0 >= fm) & (f0 >= fp)
        curv = fp - 2.0 * f0 + fm
        lift = (fp - fm) ** 2 / (8.0 * torch.where(curv < 0, -curv, torch.ones_like(curv)))
        fl = torch.where(peak, f0 + torch.where(curv < 0, lift, 0.0), -math.inf)
        return self.theta[arg] + _vertex(fm, f0, fp) * (math.pi / t), fl

    def _other_angles(self, z3: torch.Tensor, th: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Oriented order 2: R^2 can have two maxima in theta. Where the other one comes
        near the converged R^2 at its scale, search again from it and keep the better
        optimum: the exact fit takes the best angle at the final scale, so the scale must
        be the best of the profile ``max_theta R^2``, not of one branch."""
        for _ in range(_ANGLE_ROUNDS):
            theta, fo = self._other_branch(z3, th)
            redo = torch.nonzero(fo > f - _BRANCH_TOL * f.abs())[:, 0]
            if redo.numel() == 0:
                break
            start = torch.stack([th[redo, 0], theta[redo]], 1)
            th2, f2, _ = self.refine(z3[redo], start)
            better = f2 > f[redo]
            th[redo[better]] = th2[better]
            f[redo[better]] = f2[better]
        return th

    def search(self, z3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid start and Newton refinement for unit centred filters ``z3`` [n, k, k]:
        the scales ``(sigma_x, sigma_y)`` ``[n]`` each (equal for one scale)."""
        th0 = self.start(z3.reshape(z3.shape[0], -1))
        th, f, _ = self.refine(z3, th0)
        if self.oriented2:
            th = self._other_angles(z3, th, f)
        sx = th[:, 0]
        sy = th[:, 1] if self.two else sx
        return sx, sy


def run_chunks(
    n: int, batch_size: int, work: Callable[[int, int], Any], device: torch.device
) -> Iterator[Any]:
    """Run ``work(start, stop)`` over chunks of ``batch_size`` of ``n`` rows; yield each
    chunk's result as it finishes (in order).

    On the CPU the chunks run on up to ``torch.get_num_threads()`` workers, each doing its
    torch work on one intra-op thread (:func:`scalespace_mk.analysis.workers.map_chunks`:
    forked processes for large inputs on Linux, threads otherwise, as the 8-type census
    does); ``work`` returns its results (numpy arrays) and writes nothing. The chunks, and
    so the results, do not depend on the number or kind of workers.
    """
    starts = range(0, n, batch_size)

    def run(start: int) -> Any:
        with torch.no_grad():
            return work(start, min(start + batch_size, n))

    if device.type != "cpu":
        for start in starts:
            yield run(start)
        return
    workers = max(min(torch.get_num_threads(), len(starts)), 1)
    processes = use_processes(n, workers)
    yield from map_chunks(run, ((s,) for s in starts), workers, processes)
