"""The census's search over scales: coarse grid, Newton refinement, workers, exact fits.

For a chunk of filters and every model type (:mod:`scalespace_mk.analysis.scale_objectives`):

1. **Coarse grid.** Two-scale types: the correlation with every grid model ``v (x) u``
   (step ~0.1 in sigma) is ``v^T Z u / ||g_c||``, two float32 products of the 1-D factors
   (:class:`_SepGrid`); one-scale types: their closed form on a grid of step ~0.02. The
   refinement starts at the vertex of the quadratic through the grid neighbourhood of the
   maximum.
2. **Refinement.** A batched trust-region Newton iteration with exact derivatives of the
   cubic tables (:func:`_refine_sep`; one-scale types through :class:`_AsTwoScales`); the
   few fits it leaves continue by a batched stencil search (:func:`_refine`) from the grid
   point and from the Newton's best point, the better end kept (:func:`_refine_from`).
3. **Exact values** at the final scales (:func:`_exact`, the exact kernels of
   ``model_kernel`` and the closed-form linear shift).

On the CPU the chunks run on ``torch.get_num_threads()`` workers with one intra-op thread
each (:func:`_fit_all`): forked processes for large inputs on Linux, threads otherwise.
``_census_memory`` estimates the peak working memory.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import scalespace_mk.limits as limits
from scalespace_mk.analysis.linear_shift import _TINY, _centred, _shift_t
from scalespace_mk.analysis.scale_objectives import _AsTwoScales, _LapObjective, _SepObjective
from scalespace_mk.analysis.tables import _KNOT_STEP
from scalespace_mk.analysis.trust_region import accept
from scalespace_mk.analysis.types import ModelType
from scalespace_mk.analysis.workers import Workers, shared_zeros, use_processes
from scalespace_mk.scalespace.models import model_kernel

_GRID_STEP_2D = 0.1  # coarse grid step for two-scale models
_GRID_STEP_1D = 0.02  # coarse grid step for one-scale models
_H_MIN = 1e-4  # smallest finite-difference step of the refinement
_MAX_ITER = 30
_NEWTON_ITER = 5  # Newton steps before a filter is left to the stencil search
_NEWTON_TOL = 1e-7  # a proposed Newton move this short ends the two-scale refinement
_NEWTON_TAKE = 3e-4  # ... and a full Newton step this short is taken unevaluated, as the last
_X_TOL = 1e-6  # a trusted Newton step at _H_MIN this short ends the refinement
_GRID_DTYPE = torch.float32  # precision of the coarse-grid products (argmax only)
_GRID_CHUNK = 256  # filters per coarse-grid product (one type's [chunk, G*G] block stays in cache)
_GRID_BLOCK_BYTES = 4 << 20  # ... fewer when that float32 block would pass 4 MB
_GRID_CHUNK_1D = 512  # filters per one-scale grid evaluation ([chunk, G] float64 in cache)


def _newton(fs: torch.Tensor, h: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Newton step of the quadratic through a 3^dim stencil, and whether it is a maximum."""
    if dim == 1:
        fm, f0, fp = fs[:, 0], fs[:, 1], fs[:, 2]
        grad = (fp - fm) / (2 * h)
        hess = (fp - 2 * f0 + fm) / (h * h)
        ok = hess < 0
        return (-grad / torch.where(ok, hess, -1.0))[:, None], ok
    F = fs.reshape(-1, 3, 3)  # [y, x]
    f0 = F[:, 1, 1]
    gx = (F[:, 1, 2] - F[:, 1, 0]) / (2 * h)
    gy = (F[:, 2, 1] - F[:, 0, 1]) / (2 * h)
    hxx = (F[:, 1, 2] - 2 * f0 + F[:, 1, 0]) / (h * h)
    hyy = (F[:, 2, 1] - 2 * f0 + F[:, 0, 1]) / (h * h)
    hxy = (F[:, 2, 2] - F[:, 2, 0] - F[:, 0, 2] + F[:, 0, 0]) / (4 * h * h)
    det = hxx * hyy - hxy * hxy
    ok = (hxx < 0) & (det > 0)
    sdet = torch.where(ok, det, 1.0)
    return torch.stack([-(hyy * gx - hxy * gy) / sdet, -(hxx * gy - hxy * gx) / sdet], 1), ok


def _refine(obj: Any, z: torch.Tensor, theta: torch.Tensor, h0: float, sigma_max: float):
    """Maximise the objective from ``theta`` [n, d] for all filters at once; returns theta.

    Each step evaluates a 3^d stencil of half-width h around theta, takes the Newton point
    of the quadratic through it (clipped to 2 h per coordinate), evaluates it and moves to
    the best of these points. When the quadratic model is trusted (the Newton point or the
    centre wins), h shrinks towards the distance just moved (at most by 4, at least to
    :data:`_H_MIN`); a filter is done after a trusted step at ``_H_MIN`` that moved less
    than :data:`_X_TOL`, or when it correlates with no model of the type (R^2 < 1e-20).
    Only unfinished filters are evaluated. The objective is even in each sigma, so the
    stencil may cross 0 (``|theta|`` is returned).
    """
    n, d = theta.shape
    centre = 3**d // 2
    offs = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64, device=theta.device)
    grid_x = offs.repeat(3) if d == 2 else offs
    grid_y = offs.repeat_interleave(3) if d == 2 else None
    theta = theta.clone()
    h = torch.full((n,), h0, dtype=torch.float64, device=theta.device)
    idx = torch.arange(n, device=theta.device)
    zs, th, hs = z, theta, h
    for _ in range(_MAX_ITER):
        fs = obj.stencil(zs, th, hs)  # [m, 3^d]
        step, ok = _newton(fs, hs, d)
        lim = 2.0 * hs[:, None]
        clipped = (step.abs() > lim).any(dim=1) | ~ok
        prop = (th + step.clamp(-lim, lim)).clamp(-sigma_max, sigma_max)
        fp = torch.where(ok, obj.point(zs, prop), -math.inf)
        f0 = fs[:, centre]
        best_f, best_s = fs.max(dim=1)
        stay = best_f <= f0  # ties (e.g. beyond sigma_max) keep the centre
        best_s = torch.where(stay, centre, best_s)
        best_f = torch.where(stay, f0, best_f)
        take_p = fp > best_f
        moved = hs[:, None] * torch.stack(
            [grid_x[best_s]] + ([grid_y[best_s]] if d == 2 else []), dim=1
        )
        new = torch.where(take_p[:, None], prop, (th + moved).clamp(-sigma_max, sigma_max))
        trusted = (take_p & ~clipped) | (~take_p & (best_s == centre))
        dist = (new - th).abs().amax(dim=1)
        shrunk = torch.minimum(hs / 4.0, torch.maximum(2.0 * dist, hs * hs)).clamp(min=_H_MIN)
        h_new = torch.where(trusted, shrunk, hs)
        fin = (trusted & (hs <= _H_MIN * 1.000001) & (dist <= _X_TOL)) | (
            torch.maximum(best_f, fp) < 1e-20
        )
        keep = ~fin
        if len(idx) < n or not bool(keep.all()):
            theta[idx] = new
            h[idx] = h_new
            idx = idx[keep]
            if idx.numel() == 0:
                break
            zs, th, hs = z.index_select(0, idx), theta.index_select(0, idx), h.index_select(0, idx)
        else:
            th, hs = new, h_new
    if len(idx) == n:
        theta = th
    return theta.abs()


def _refine_sep(obj: _SepObjective, z3: torch.Tensor, theta: torch.Tensor, r0: float, smax: float):
    """Maximise a two-scale objective from ``theta`` [n, 2] by trust-region Newton steps.

    Every step evaluates ``f``, its gradient and Hessian at the proposal with exact
    derivatives of the cubic tables (:meth:`_SepObjective.newton`). A proposal that does
    not lower ``f`` is accepted; otherwise the trust radius (first ``r0``, half the coarse
    grid step, per coordinate) shrinks by 4. From the accepted point the next proposal is
    the Newton point (where the Hessian is negative definite) or an ascent step (along the
    gradient, or either way along a scale of positive curvature), scaled down to the radius
    (which doubles when such a step is accepted) and clipped to ``[0, smax]``; a scale on a
    bound whose gradient points out of the range is held there. A filter is done when a
    full Newton step (negative definite Hessian, within the radius) is below
    :data:`_NEWTON_TAKE` (converged: that last step is taken without evaluating it, as it
    lands within about its length squared of the maximum), any proposed move is below
    :data:`_NEWTON_TOL` where the Hessian is negative definite (converged), the radius is
    below it, or R^2 < 1e-20; after :data:`_NEWTON_ITER` steps at
    most. Only unfinished filters are evaluated. Returns the scales and whether each filter
    converged; the others (saddles, sigma = 0 of an even objective, flat ridges, the few
    that need more steps) are left to the stencil search :func:`_refine`, from the best
    point the Newton steps reached (never below the grid start).
    """
    n = theta.shape[0]
    out = theta.clone()
    converged = torch.zeros(n, dtype=torch.bool, device=theta.device)
    idx = torch.arange(n, device=theta.device)
    zs, cur = z3, theta
    f, g, hm = obj.newton(zs, cur)
    r = torch.full((n,), r0, dtype=torch.float64, device=theta.device)
    for _ in range(_NEWTON_ITER):
        # a scale on a bound with the gradient pointing out stays there (projected Newton)
        concave = torch.stack([hm[:, 0, 0], hm[:, 1, 1]], dim=1) <= 0
        free = ~((((cur >= smax) & (g > 0)) | ((cur <= 0.0) & (g < 0))) & concave)
        g = torch.where(free, g, 0.0)
        both = free[:, 0] & free[:, 1]
        hxx = torch.where(free[:, 0], hm[:, 0, 0], -1.0)
        hyy = torch.where(free[:, 1], hm[:, 1, 1], -1.0)
        hxy = torch.where(both, hm[:, 0, 1], 0.0)
        det = hxx * hyy - hxy * hxy
        nd = (hxx < 0) & (det > 0)
        sdet = torch.where(nd, det, 1.0)
        g0, g1 = g.unbind(1)
        newton = torch.stack([(hxy * g1 - hyy * g0) / sdet, (hxy * g0 - hxx * g1) / sdet], 1)
        gmax = g.abs().amax(dim=1, keepdim=True)
        ascent = g / torch.where(gmax > 0, gmax, 1.0) * r[:, None]
        # along a scale of positive curvature (e.g. sigma = 0 of an even objective, a saddle
        # with zero gradient) either direction ascends: go by the radius
        side = torch.where(cur < 0.5 * smax, 1.0, -1.0)
        inner = (cur > 0.0) & (cur < smax) & (g != 0)
        push = torch.where(inner, torch.sign(g), side) * r[:, None]
        curv = torch.stack([hxx, hyy], dim=1) > 0
        ascent = torch.where(curv & free, push, ascent)
        step = torch.where(nd[:, None], newton, ascent)
        size = step.abs().amax(dim=1)
        limited = size > r
        step = step * torch.where(limited, r / torch.where(limited, size, r), 1.0)[:, None]
        prop = (cur + step).clamp(0.0, smax)
        move = (prop - cur).abs().amax(dim=1)
        # a full Newton step this short (negative definite Hessian, within the radius) lands
        # within ~move^2 of the maximum (quadratic convergence): taken without evaluating it
        take = (move <= _NEWTON_TAKE) & nd & ~limited
        conv = take | (move <= _NEWTON_TOL) & nd
        done = conv | (r <= _NEWTON_TOL) | (f < 1e-20)
        if bool(done.any()):
            out[idx] = torch.where(take[:, None], prop, cur)
            converged[idx] = conv
            keep = torch.nonzero(~done)[:, 0]  # one nonzero for the ten selections
            if keep.numel() == 0:
                break
            idx, zs, prop, cur = (t.index_select(0, keep) for t in (idx, zs, prop, cur))
            f, g, hm, r, limited = (t.index_select(0, keep) for t in (f, g, hm, r, limited))
        cur, (f, g, hm), r, _ = accept(prop, cur, obj.newton(zs, prop), (f, g, hm), r, limited)
    else:
        out[idx] = cur
    return out, converged


def _census_memory(
    tps: Sequence[ModelType], k: int, sigma_max: float, n: int, batch: int, threads: int
) -> tuple[float, float]:
    """Estimated peak working memory of a census, in bytes: ``(fixed, per_filter)`` with
    ``fixed + per_filter * batch`` the peak for a batch of ``batch`` filters.

    Measured (VmHWM over the imports, 2 threads) and the estimate: see
    ``tests/test_census_memory.py`` and docs/limits.md. Terms:

    - tables: every knot's kernel is built with one FFT (~24 bytes per knot and FFT sample),
      the cubic coefficients of the one-scale models' 2-D tables ``[J, 4, k*k]``, doubled
      for the temporaries of their construction;
    - coarse grid of the separable types: the 1-D factors at the grid scales (float64 while
      built, then float32);
    - per thread: the grid's first product ``[rows, k, T, G]`` and one type's block ``[rows,
      G * G]`` (float32, :func:`_grid_rows` filters) and, per filter of the batch, the
      one-scale grids (``~12`` float64 arrays of ``G1`` values), the refinement and exact
      models (~``64 k^2`` bytes) and the input's copies and result columns;
    """
    from scalespace_mk.scalespace.kernels import fft_length

    knots = sigma_max / _KNOT_STEP + 3
    n_fft = fft_length(sigma_max, k)
    tables = 2.0 * knots * (24 * n_fft + 3 * 4 * 8 * k * k)
    g2 = math.ceil(sigma_max / _GRID_STEP_2D) + 1
    g1 = math.ceil(sigma_max / _GRID_STEP_1D) + 1
    n_sep = sum(tp.kind == "sep" for tp in tps)
    n_one = len(tps) - n_sep
    grid = 2 * 8.0 * k * g2 * n_sep
    rows = min(_grid_rows(g2 * g2), max(batch, 1))
    block = 4.0 * rows * g2 * (2 * n_sep * k + 2 * g2) if n_sep else 0.0
    per_filter = 96.0 * g1 * n_one + 64.0 * k * k * 2 + 400.0 * len(tps)
    inputs = 3 * 8.0 * k * k * n + 6 * 8.0 * len(tps) * n  # filters (3 copies), results
    return tables + grid + threads * block + inputs, threads * per_filter


def _check_census_memory(
    tps: Sequence[ModelType], k: int, sigma_max: float, n: int, batch: int, chosen: bool
) -> int:
    """The batch size to use within the memory budget, or a MemoryBudgetError.

    The estimate is :func:`_census_memory` with the threads the census will run (one per
    chunk, at most ``torch.get_num_threads()``); a default batch size shrinks to fit, a
    chosen one that does not fit is refused, and so is a census whose fixed part (tables,
    grid, inputs) alone passes the budget, before any work.
    """
    rows = max(min(batch, n), 1)
    threads = max(1, min(torch.get_num_threads(), math.ceil(n / rows)))
    fixed, per_filter = _census_memory(tps, k, sigma_max, n, rows, threads)
    what = f"census of {n} filter(s) of size {k} with sigma_max = {sigma_max:g}"
    limits.check_memory(
        fixed + per_filter,
        what,
        f"lower sigma_max (k / 2 = {k / 2:g} is the default, beyond it a model "
        "is nearly flat across the filter), or fit fewer filters at a time "
        "(scalespace_mk.analysis.stream.census_stream, census --out)",
    )
    need = fixed + per_filter * rows
    if need <= limits.memory_budget():
        return batch
    fits = int((limits.memory_budget() - fixed) // per_filter)
    if not chosen and fits >= 1:
        return fits
    limits.check_memory(
        need,
        f"{what} and batch_size = {batch}",
        f"lower batch_size (at most {max(fits, 1)} fits) or sigma_max",
    )
    return batch  # pragma: no cover - check_memory raised


class _Job:
    """The work of one :func:`_fit_all`: a chunk of filters, whose scales and fit arrays it
    writes into ``theta`` [N, T, 2] and ``out`` (``[N, T]`` arrays; from
    :func:`~scalespace_mk.analysis.workers.shared_zeros`, so that a forked process can write
    them), or the left-over stencil searches of one type (returned as numpy arrays)."""

    def __init__(
        self, y: torch.Tensor, tps, objs, args: tuple, dev, batch_size: int, theta, out
    ) -> None:
        self.y, self.tps, self.objs, self.args = y, tps, objs, args
        self.dev, self.batch_size = dev, batch_size
        self.theta, self.out = theta, out
        with torch.no_grad():
            self.grid = _grid_models(objs, args[4], dev) if len(y) else None

    def chunk(self, start: int) -> tuple[int, int, list]:
        """Fit the filters ``start .. start + batch_size`` (results into ``theta`` and
        ``out``): ``(start, stop, left-over (type, rows, starts))``."""
        stop = min(start + self.batch_size, len(self.y))
        left: list = []
        with torch.no_grad():
            yf = self.y[start:stop].to(self.dev).reshape(stop - start, -1)
            fits = _fit_chunk(self.tps, self.objs, yf, *self.args, pending=left, grid=self.grid)
        # [m, T, 2] scales (one-scale types: sigma_y = sigma_x) and [m, T] fit arrays
        self.theta[start:stop] = torch.stack([th.expand(-1, 2) for th, _ in fits], dim=1).cpu()
        for key, arr in self.out.items():
            arr[start:stop] = torch.stack([res[key] for _, res in fits], dim=1).cpu()
        return start, stop, [(j, rows.numpy() + start, th0.cpu().numpy()) for j, rows, th0 in left]

    def pending(self, j: int, rows: np.ndarray, th0: np.ndarray) -> tuple:
        """The stencil searches of type ``j`` left by the chunks (rows, starts ``[m, S,
        d]``): ``(j, rows, theta, fit arrays)``."""
        with torch.no_grad():
            idx = torch.as_tensor(rows)
            yf = self.y.index_select(0, idx).to(self.dev).reshape(len(rows), -1)
            th0t = torch.as_tensor(th0, device=self.dev)
            th, res = _fit_pending(self.tps[j], self.objs[j], yf, th0t, self.args)
        return j, rows, th.cpu().numpy(), {k: v.cpu().numpy() for k, v in res.items()}


def _fit_all(
    y: np.ndarray,
    tps: Sequence[ModelType],
    objs: Sequence[Any],
    args: tuple,
    dev: torch.device,
    batch_size: int,
    bar: Any = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fit all filters ``y`` [N, k, k] chunk by chunk: scales ``[N, T, 2]`` and fit arrays.

    On the CPU the chunks run on up to ``torch.get_num_threads()`` workers, each doing its
    torch work on one intra-op thread (the small operations of a chunk do not profit from
    OpenMP, and its waiting stalls on a loaded machine); an input of one chunk (e.g. a
    layer of a network) thus runs on one thread. The workers are forked processes on Linux
    for large inputs, else threads (:mod:`scalespace_mk.analysis.workers`). The filters
    that the Newton
    steps leave (:func:`_fit_pending`) are then searched one type per worker. The results
    do not depend on the number or kind of workers. ``args`` is
    ``(k, method, mode, epsilon, sigma_max, alpha_range)``.
    """
    n, n_t = y.shape[0], len(tps)
    starts = range(0, n, batch_size)
    workers = max(min(torch.get_num_threads(), len(starts)), 1)
    forked = dev.type == "cpu" and use_processes(n, workers)
    # the chunks write their results straight into these (shared with forked workers)
    theta = shared_zeros((n, n_t, 2), forked)
    out = {key: shared_zeros((n, n_t), forked) for key in ("a", "b", "r2", "rss", "alpha")}
    job = _Job(torch.as_tensor(y), tps, objs, args, dev, batch_size, theta, out)
    pending: dict[int, list] = {}

    def store(rows: Any, j: int, th: np.ndarray, res: dict[str, np.ndarray]) -> None:
        theta[rows, j, :] = th  # one-scale types: sigma_y = sigma_x
        for key in out:
            out[key][rows, j] = res[key]

    def take_chunk(result: tuple) -> None:
        start, stop, rest = result
        for j, rows, th0 in rest:
            pending.setdefault(j, []).append((rows, th0))
        if bar is not None:
            bar.update((stop - start) * n_t)

    def left_over() -> list[tuple]:
        order = sorted(pending, key=lambda j: -sum(len(r) for r, _ in pending[j]))
        return [
            (
                j,
                np.concatenate([r for r, _ in pending[j]]),
                np.concatenate([t for _, t in pending[j]]),
            )
            for j in order
        ]

    if dev.type != "cpu":
        for start in starts:
            take_chunk(job.chunk(start))
        for j, rows, th, res in (job.pending(*p) for p in left_over()):
            store(rows, j, th, res)
        return theta, out

    with Workers([job.chunk, job.pending], workers, forked) as pool:
        for result in pool.map(job.chunk, ((s,) for s in starts)):
            take_chunk(result)
        # the stencil searches left by the Newton refinement, one type per worker
        for j, rows, th, res in pool.map(job.pending, left_over()):
            store(rows, j, th, res)
    return theta, out


def _coarse_grid(sigma_max: float, dim: int, dev: torch.device) -> tuple[torch.Tensor, float]:
    """Coarse grid of scales ``[G]`` of a ``dim``-scale search and its half step."""
    gstep = _GRID_STEP_2D if dim == 2 else _GRID_STEP_1D
    n_grid = max(int(math.ceil(sigma_max / gstep)), 2)
    sig = torch.linspace(0.0, sigma_max, n_grid + 1, dtype=torch.float64, device=dev)
    return sig, 0.5 * sigma_max / n_grid


class _SepGrid:
    """The coarse grid of the separable types, held as their 1-D factors.

    The correlation of a centred unit filter ``z`` with the grid model ``g = v(sig[iy])
    (x) u(sig[ix])`` of type ``t`` is ``<z, g> / ||g_c||`` (``z`` is centred, so ``<z, g_c> =
    <z, g>``; the tabulated factors have unit norm, so ``||g_c||^2 = 1 - (sum u sum v)^2 /
    k^2``). ``<z, g> = v^T Z u`` is computed in two products: ``Y = Z^T V`` for the
    distinct row factors of all types at once, then ``Y_fy^T U_fx`` per type (a product of
    inner dimension ``k``): about ``k^2 F G + T k G^2`` multiply-adds per filter instead of
    ``T k^2 G^2`` for the grid models as one matrix. Built once per census, in
    :data:`_GRID_DTYPE` (the grid only picks the start of the float64 refinement).

    Attributes: ``v`` ``[k, Fy * G]`` (distinct row factors, unit norm), ``u`` ``[Fx, k, G]``
    (distinct column factors), ``pairs`` (``(fx, fy)`` of each type), ``scale`` (per type
    ``[G * G]``, index ``iy * G + ix``: ``1 / ||g_c||``, 0 where ``g`` is constant; None
    where it is 1 everywhere).
    """

    def __init__(self, objs: Sequence[_SepObjective], sig: torch.Tensor) -> None:
        k = objs[0].k
        self.k, self.g = k, sig.shape[0]
        xs: dict[int, torch.Tensor] = {}
        ys: dict[int, torch.Tensor] = {}
        self.pairs: list[tuple[int, int]] = []
        self.scale: list[torch.Tensor | None] = []
        for obj in objs:  # factors shared by types (cached tables) are computed once
            if id(obj.ux.coef) not in xs:
                xs[id(obj.ux.coef)] = obj.ux(sig)  # [G, k] float64, unit rows
            if id(obj.vy.coef) not in ys:
                ys[id(obj.vy.coef)] = obj.vy(sig)
            u, v = xs[id(obj.ux.coef)], ys[id(obj.vy.coef)]
            self.pairs.append((list(xs).index(id(obj.ux.coef)), list(ys).index(id(obj.vy.coef))))
            prod = v.sum(dim=1)[:, None] * u.sum(dim=1)[None, :]  # [G (iy), G (ix)]
            den = 1.0 - prod * prod / (k * k)
            inv = torch.where(den > _TINY, den.clamp(min=_TINY).rsqrt(), torch.zeros_like(den))
            inv = inv.reshape(-1).to(_GRID_DTYPE)
            self.scale.append(None if bool((inv == 1.0).all()) else inv)
        self.u = torch.stack([u.T for u in xs.values()]).to(_GRID_DTYPE).contiguous()
        self.v = torch.cat([v.T for v in ys.values()], dim=1).to(_GRID_DTYPE).contiguous()
        self.n_rows = len(ys)


def _grid_models(objs: Sequence[Any], sigma_max: float, dev: torch.device) -> _SepGrid | None:
    """:class:`_SepGrid` of the separable objectives on the coarse grid (None when there is
    none): built once per census, shared by the chunks and threads."""
    sep = [obj for obj in objs if obj.dim == 2]
    if not sep:
        return None
    sig2, _ = _coarse_grid(sigma_max, 2, dev)
    return _SepGrid(sep, sig2)


def _grid_argmax(zf: torch.Tensor, grid: _SepGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """Index ``iy * G + ix`` of the largest ``|<z, g_c>| / ||g_c||`` per filter and
    separable type, ``[n, T]`` (the first in that order on ties), and the values on the
    3x3 grid neighbourhood of each maximum, ``[n, T, 9]`` (index ``3 dy + dx``; mirrored at
    both ends of the grid, as the objective is).

    In :data:`_GRID_DTYPE`, over chunks of :data:`_GRID_CHUNK` filters whose ``[chunk, G *
    G]`` block per type stays in cache.
    """
    n, k, g = zf.shape[0], grid.k, grid.g
    out = torch.empty(n, len(grid.pairs), dtype=torch.long, device=zf.device)
    near = torch.empty(n, len(grid.pairs), 9, dtype=_GRID_DTYPE, device=zf.device)
    nbr = _grid_neighbours(g, zf.device)
    rows = _grid_rows(g * g)
    for start in range(0, n, rows):
        z = zf[start : start + rows].to(_GRID_DTYPE).view(-1, k, k)
        m = z.shape[0]
        # Y[m, c, (fy, iy)] = sum_r z[m, r, c] v_fy[r, iy], then [fy, m, iy, c]
        y = torch.matmul(z.transpose(1, 2).reshape(m * k, k), grid.v)
        y = y.view(m, k, grid.n_rows, g).permute(2, 0, 3, 1).contiguous()
        for t, (fx, fy) in enumerate(grid.pairs):
            corr = torch.matmul(y[fy].view(m * g, k), grid.u[fx])  # [m * G (iy), G (ix)]
            if grid.scale[t] is not None:
                corr.view(m, g * g).mul_(grid.scale[t])
            corr = corr.abs_()
            # the first maximum in row-major order (index iy * G + ix): max(dim) returns the
            # first maximum's index, and on the CPU it is far faster than argmax (and than
            # the row maxima followed by the maximum's row)
            best = corr.view(m, g * g).max(dim=1).indices  # [m]
            out[start : start + m, t] = best
            near[start : start + m, t] = corr.view(m, g * g).gather(1, nbr.index_select(0, best))
    return out, near


@functools.lru_cache(maxsize=8)
def _grid_neighbours(g: int, device: torch.device) -> torch.Tensor:
    """Flat indices ``[G * G, 9]`` of the 3x3 neighbourhood (index ``3 dy + dx``) of every
    point ``iy * G + ix`` of a ``G x G`` grid, mirrored at both ends of the grid (as the
    objective is)."""
    off = torch.tensor([-1, 0, 1], device=device)
    i = torch.arange(g, device=device)
    near = (i[:, None] + off).abs_()
    near = torch.minimum(near, 2 * (g - 1) - near)  # [G, 3]
    idx = near[:, None, :, None] * g + near[None, :, None, :]  # [G (iy), G (ix), 3, 3]
    return idx.reshape(g * g, 9).contiguous()


def _grid_start(
    best: torch.Tensor, near: torch.Tensor, sig: torch.Tensor, sigma_max: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid points ``[n, 2]`` (sigma_x, sigma_y) of the indices ``best`` [n] and the start of
    the Newton refinement: the vertex of the quadratic through the grid values of R^2 on
    the 3x3 neighbourhood ``near`` [n, 9], where it is a maximum within one grid step (else
    the grid point)."""
    g = sig.shape[0]
    point = torch.stack([sig[best % g], sig[best // g]], dim=1)
    step_g = float(sig[1] - sig[0])
    fs = near.to(torch.float64).square()
    h = torch.full((fs.shape[0],), step_g, dtype=torch.float64, device=fs.device)
    step, ok = _newton(fs, h, 2)
    ok = ok & (step.abs() <= step_g).all(dim=1)
    return point, torch.where(ok[:, None], point + step, point).clamp(0.0, sigma_max)


def _grid_start_1d(
    obj: _LapObjective, z: torch.Tensor, sig: torch.Tensor, sigma_max: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid maxima ``[n, 1]`` of a one-scale objective for filters ``z`` (as it reads them)
    on the grid ``sig`` [G], and the start of its Newton refinement: the vertex of the
    parabola through the maximum and its two neighbours (mirrored at both ends of the
    grid, as the objective is), where it is a maximum within one grid step (else the grid
    point). The grid is evaluated :data:`_GRID_CHUNK_1D` filters at a time (its ``[rows,
    G]`` temporaries stay in cache)."""
    n, g = z.shape[0], sig.shape[0]
    best = torch.empty(n, dtype=torch.long, device=z.device)
    near = torch.empty(n, 3, dtype=torch.float64, device=z.device)
    off = torch.tensor([-1, 0, 1], device=z.device)
    for start in range(0, n, _GRID_CHUNK_1D):
        values = obj.grid(z[start : start + _GRID_CHUNK_1D], sig)  # [rows, G]
        b = values.max(dim=1).indices  # the first maximum (as argmax; faster on the CPU)
        idx = (b[:, None] + off).abs_()
        idx = torch.minimum(idx, 2 * (g - 1) - idx)
        best[start : start + _GRID_CHUNK_1D] = b
        near[start : start + _GRID_CHUNK_1D] = values.gather(1, idx)
    step_g = float(sig[1] - sig[0])
    h = torch.full((n,), step_g, dtype=torch.float64, device=z.device)
    step, ok = _newton(near, h, 1)
    point = sig[best][:, None]
    ok = ok & (step[:, 0].abs() <= step_g)
    return point, torch.where(ok[:, None], point + step, point).clamp(0.0, sigma_max)


def _grid_rows(columns: int) -> int:
    """Filters per coarse-grid product: :data:`_GRID_CHUNK`, fewer when one type's ``[rows,
    columns]`` float32 block would pass :data:`_GRID_BLOCK_BYTES` (large k or sigma_max)."""
    return int(max(1, min(_GRID_CHUNK, _GRID_BLOCK_BYTES // (4 * max(columns, 1)))))


def _fit_chunk(
    tps: Sequence[ModelType],
    objs: Sequence[Any],
    yf: torch.Tensor,
    k: int,
    method: str,
    mode: str,
    epsilon: float,
    sigma_max: float,
    alpha_range: tuple[float, float],
    pending: list | None = None,
    grid: _SepGrid | None = None,
) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Fit every type to the flattened filters ``yf`` [n, k*k]: per type (scales, exact fit).

    The coarse grids of all separable types are searched by one matrix product
    (:func:`_grid_argmax`), the one-scale types by their own closed form; each type is then
    refined (:func:`_refine_sep`, :func:`_refine`) and evaluated exactly (:func:`_exact`).
    The few filters that the Newton refinement leaves to the stencil search are refined
    here, or, when a list ``pending`` is given, appended to it as ``(type column, rows,
    start scales)`` for :func:`_fit_pending` (one stencil search for all chunks: its cost
    is mostly per step, not per filter). ``grid`` is :func:`_grid_models` of ``objs`` when
    the caller built it once for all chunks (it is the same for every chunk).
    """
    centred = _centred(yf)  # shared by the exact fits of all types
    zf = centred[1] / centred[2].sqrt()[:, None]
    z3 = zf.reshape(-1, k, k)
    dev = yf.device
    sig2, h2 = _coarse_grid(sigma_max, 2, dev)
    sep = [j for j, obj in enumerate(objs) if obj.dim == 2]
    start2: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    if sep:
        if grid is None:
            grid = _grid_models(objs, sigma_max, dev)
        best, near = _grid_argmax(zf, grid)
        # the starts of all separable types at once ([n * T] rows, row by row as per type)
        point, vertex = _grid_start(best.reshape(-1), near.reshape(-1, 9), sig2, sigma_max)
        point, vertex = point.view(-1, len(sep), 2), vertex.view(-1, len(sep), 2)
        for col, j in enumerate(sep):
            start2[j] = (point[:, col].contiguous(), vertex[:, col].contiguous())
    fits = []
    for j, (tp, obj) in enumerate(zip(tps, objs, strict=True)):
        if obj.dim == 2:
            th0, th1 = start2.pop(j)  # the grid point and the quadratic's vertex near it
            zr = obj.reduce(z3)  # folded once per type
            th, conv = _refine_sep(obj, zr, th1, h2, sigma_max)
            _unfinished(j, obj, zr, th0, th, conv, h2, sigma_max, pending)
        else:
            sig1, h1 = _coarse_grid(sigma_max, 1, dev)
            z1 = obj.reduce(zf)
            th0, th1 = _grid_start_1d(obj, z1, sig1, sigma_max)
            th, conv = _refine_sep(_AsTwoScales(obj), z1, F.pad(th1, (0, 1)), h1, sigma_max)
            th = th[:, :1].contiguous()
            _unfinished(j, obj, z1, th0, th, conv, h1, sigma_max, pending)
        fits.append((th, _exact(tp, th, yf, k, method, mode, epsilon, alpha_range, centred)))
    return fits


def _unfinished(
    j: int,
    obj: Any,
    z: torch.Tensor,
    th0: torch.Tensor,
    th: torch.Tensor,
    conv: torch.Tensor,
    h: float,
    sigma_max: float,
    pending: list | None,
) -> None:
    """The fits of type ``j`` the Newton steps left unconverged (``~conv``): queued in
    ``pending`` as ``(j, rows, starts [m, 2, d])`` (the grid point ``th0`` and the Newton's
    point ``th``), or, without a queue, searched from both starts here (written into ``th``)."""
    rest = torch.nonzero(~conv)[:, 0]
    if not rest.numel():
        return
    starts = torch.stack([th0, th], dim=1)[rest]
    if pending is not None:
        pending.append((j, rest.cpu(), starts))
    else:
        th[rest] = _refine_from(obj, z[rest], starts, h, sigma_max)


def _fit_pending(
    tp: ModelType, obj: Any, yf: torch.Tensor, th0: torch.Tensor, args: tuple
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stencil search and exact fit of filters ``yf`` of one type from the starts ``th0``
    ``[m, S, d]`` (:func:`_refine_from`; ``d`` the objective's number of scales).

    ``args`` is ``(k, method, mode, epsilon, sigma_max, alpha_range)``.
    """
    sigma_max = args[4]
    zc = yf - yf.mean(dim=1, keepdim=True)
    z = obj.reduce(zc / zc.norm(dim=1, keepdim=True))  # [m, k*k] -> as the objective reads
    _, h0 = _coarse_grid(sigma_max, obj.dim, yf.device)
    th = _refine_from(obj, z, th0, h0, sigma_max)
    return th, _exact(tp, th, yf, *args[:4], args[5])


def _refine_from(
    obj: Any, z: torch.Tensor, starts: torch.Tensor, h0: float, sigma_max: float
) -> torch.Tensor:
    """The stencil search (:func:`_refine`) of each filter ``z`` [m, ...] from each of its
    starts ``[m, S, d]`` (the grid point and the Newton's best point), in one batch: the
    scales ``[m, d]`` of the best end point. On flat ridges the search stops where its
    steps become too small to matter, which depends on where it starts; the best of two
    starts is never below either."""
    m, n_s, d = starts.shape
    zz = z.repeat_interleave(n_s, dim=0)
    th = _refine(obj, zz, starts.reshape(m * n_s, d), h0, sigma_max)
    f = obj.point(zz, th).reshape(m, n_s)
    pick = f.argmax(dim=1)  # the first start on ties
    return th.reshape(m, n_s, d)[torch.arange(m, device=th.device), pick]


def _exact(
    tp: ModelType,
    th: torch.Tensor,
    yf: torch.Tensor,
    k: int,
    method: str,
    mode: str,
    epsilon: float,
    alpha_range: tuple[float, float],
    centred: tuple[torch.Tensor, ...] | None = None,
) -> dict[str, torch.Tensor]:
    """Exact models at the found scales and their linear shifts (``a, b, r2, rss, alpha``);
    ``centred`` is :func:`_centred` of ``yf`` when the caller has it."""
    n = yf.shape[0]
    kw = dict(size=k, method=method, mode=mode, epsilon=epsilon)
    nan = torch.full((n,), math.nan, dtype=torch.float64, device=yf.device)
    with torch.no_grad():
        if tp.kind == "sep":
            g = model_kernel(tp.name, th[:, 0], th[:, 1], **kw).reshape(n, -1)
            res = _shift_t(yf, g, centred)
            alpha = nan
        elif tp.kind == "iso":
            g = model_kernel(tp.name, th[:, 0], **kw).reshape(n, -1)
            res = _shift_t(yf, g, centred)
            alpha = nan
        else:
            ones = torch.ones_like(th[:, 0])
            mk1 = model_kernel(tp.name, th[:, 0], alpha=ones, **kw).reshape(n, -1)
            delta = torch.zeros(k * k, dtype=torch.float64, device=yf.device)
            delta[(k * k) // 2] = 1.0
            lap = delta - mk1
            alpha = _best_alpha(yf, delta, lap, alpha_range, centred)
            g = delta - alpha[:, None] * lap  # K - alpha L: the model at alpha (linear in it)
            res = _shift_t(yf, g, centred)
    return {"a": res.a, "b": res.b, "r2": res.r2, "rss": res.rss, "alpha": alpha}


def _best_alpha(
    yf: torch.Tensor,
    delta: torch.Tensor,
    lap: torch.Tensor,
    alpha_range: tuple[float, float],
    centred: tuple[torch.Tensor, ...] | None = None,
) -> torch.Tensor:
    """Closed-form alpha of ``y ~ a (K - alpha L) + b`` within ``alpha_range``: [n];
    ``centred`` is :func:`_centred` of ``yf`` when the caller has it."""
    yc = (yf - yf.mean(dim=1, keepdim=True)) if centred is None else centred[1]
    kc = delta - delta.mean()
    lc = lap - lap.mean(dim=1, keepdim=True)
    kk = (kc * kc).sum()
    ll = (lc * lc).sum(dim=1)
    kl = (lc * kc).sum(dim=1)
    yk = (yc * kc).sum(dim=1)
    yl = (yc * lc).sum(dim=1)
    det = kk * ll - kl * kl
    okd = det > 1e-12 * kk * ll
    sdet = torch.where(okd, det, torch.ones_like(det))
    ca = (ll * yk - kl * yl) / sdet
    cl = (kk * yl - kl * yk) / sdet
    lo, hi = alpha_range
    a_u = -cl / torch.where(ca != 0, ca, torch.ones_like(ca))
    inside = okd & (ca != 0) & (a_u >= lo) & (a_u <= hi)

    def explained(al: float) -> torch.Tensor:
        num = yk - al * yl
        den = kk - 2.0 * al * kl + al * al * ll
        return num * num / den

    a_b = torch.where(
        explained(lo) >= explained(hi),
        torch.full_like(ll, lo),
        torch.full_like(ll, hi),
    )
    return torch.where(inside, a_u, a_b)
