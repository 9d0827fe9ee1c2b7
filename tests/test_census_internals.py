"""Internals of the census: the Newton refinement against the stencil search, exact
derivatives of the interpolated objective, and independence of threads and chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scalespace_mk.analysis import scale_objectives as objectives_mod
from scalespace_mk.analysis import scale_search as search_mod
from scalespace_mk.analysis.census import census
from scalespace_mk.analysis.types import parse_model_types
from scalespace_mk.scalespace.models import masterkey_model


def _filters(n: int, seed: int = 0) -> np.ndarray:
    """Half planted models of types 1-8 (2 % noise), half white noise: ``[n, 7, 7]``."""
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((n, 7, 7))
    for i in range(0, n, 2):
        t = int(rng.integers(1, 9))
        sx, sy = rng.uniform(0.4, 2.5, 2)
        g = (
            masterkey_model(7, sx, alpha=rng.uniform(0.2, 2))
            if t == 7
            else masterkey_model(t, sx, sy)
        )
        y[i] = g / np.linalg.norm(g) + 0.02 * rng.standard_normal((7, 7))
    return y


@pytest.fixture(scope="module")
def bank() -> np.ndarray:
    return _filters(240)


def test_newton_matches_the_stencil_search(bank, monkeypatch):
    fast = census(bank)
    monkeypatch.setattr(search_mod, "_NEWTON_ITER", 0)  # every fit left to the stencil search
    slow = census(bank)
    assert (fast.best == slow.best).all()
    # Newton is never worse by more than 1e-6 and converges to the same maxima
    assert (fast.r2_all >= slow.r2_all - 1e-6).all()
    assert np.abs(fast.r2_all - slow.r2_all).max() < 1e-4
    close = np.abs(fast.r2_all - slow.r2_all) < 1e-9
    assert close.mean() > 0.95


def test_newton_derivatives_match_finite_differences():
    tps = parse_model_types((1, 2, 5, 8))
    objs = objectives_mod._objectives(
        tps, 7, "discgauss", "paper", 1e-8, 3.5, (0.0, 10.0), torch.device("cpu")
    )
    rng = np.random.default_rng(1)
    z = torch.tensor(rng.standard_normal((4, 49)))
    z = z - z.mean(1, keepdim=True)
    z3 = (z / z.norm(dim=1, keepdim=True)).reshape(4, 7, 7)
    th = torch.tensor([[1.23, 0.87], [0.5, 2.1], [2.0, 1.0], [0.71, 0.33]], dtype=torch.float64)
    eps = 1e-5
    for obj in objs:
        f, g, h = obj.newton(z3, th)
        torch.testing.assert_close(f, obj.point(z3, th), rtol=0, atol=1e-14)
        for axis in range(2):
            d = torch.zeros(2, dtype=torch.float64)
            d[axis] = eps
            fd = (obj.point(z3, th + d) - obj.point(z3, th - d)) / (2 * eps)
            torch.testing.assert_close(g[:, axis], fd, rtol=0, atol=1e-9)
            hd = (obj.newton(z3, th + d)[1] - obj.newton(z3, th - d)[1]) / (2 * eps)
            torch.testing.assert_close(h[:, axis], hd, rtol=0, atol=1e-4)


def test_results_do_not_depend_on_threads_or_chunks(bank):
    one = census(bank, num_threads=1)
    two = census(bank, num_threads=2, batch_size=50)  # five chunks on two worker threads
    np.testing.assert_array_equal(one.best, two.best)
    np.testing.assert_allclose(one.r2_all, two.r2_all, rtol=0, atol=1e-12)
    np.testing.assert_allclose(one.sigma_x_all, two.sigma_x_all, rtol=0, atol=1e-9)


def _unfolded(monkeypatch, types, k=7, sigma_max=3.5):
    """The objectives of ``types`` without symmetry folding (the plain 49-tap forms)."""
    with monkeypatch.context() as m:
        m.setattr(objectives_mod, "_mirror_parity", lambda coef: None)
        m.setattr(objectives_mod, "_square_orbits", lambda table, k: None)
        return objectives_mod._objectives(
            types, k, "discgauss", "paper", 1e-8, sigma_max, (0.0, 10.0), torch.device("cpu")
        )


@pytest.mark.parametrize("k", [5, 7])
def test_symmetry_folding_is_exact(monkeypatch, k):
    """Folded filters (even/odd factor axes, square orbits of one-scale models) give the
    R^2, gradient and Hessian of the plain forms, and every separable master key type and
    the one-scale models are folded (one-sided differences fold their other axis only)."""
    types = parse_model_types((1, 2, 3, 4, 5, 6, 7, 8, "dxy", "lap"))
    folded = objectives_mod._objectives(
        types, k, "discgauss", "paper", 1e-8, 3.5, (0.0, 10.0), torch.device("cpu")
    )
    plain = _unfolded(monkeypatch, types, k)
    rng = np.random.default_rng(7)
    z = torch.tensor(rng.standard_normal((64, k * k)))
    z = z - z.mean(1, keepdim=True)
    z = z / z.norm(dim=1, keepdim=True)
    th = torch.tensor(rng.uniform(0.0, 3.5, (64, 2)))
    h = k // 2 + 1
    for tp, f, p in zip(types, folded, plain, strict=True):
        if f.dim == 1:
            orbits = (k // 2 + 1) * (k // 2 + 2) // 2  # 6 for 5x5, 10 for 7x7
            assert f.onehot is not None and f.reduce(z).shape == (64, orbits)
            sig = torch.linspace(0.0, 3.5, 41, dtype=torch.float64)
            torch.testing.assert_close(f.grid(z, sig), p.values(z, sig), rtol=0, atol=1e-13)
            t1 = th[:, :1]
            torch.testing.assert_close(f.point(z, t1), p.point(z, t1), rtol=0, atol=1e-13)
            continue
        assert f.shape != (k, k) and p.shape == (k, k), tp.label
        assert h in f.shape
        z3 = z.reshape(-1, k, k)
        zr = f.reduce(z3)
        assert f.reduce(zr) is zr  # already folded: as it is
        torch.testing.assert_close(f.point(zr, th), p.point(z3, th), rtol=0, atol=1e-13)
        for a, b in zip(f.newton(zr, th), p.newton(z3, th), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_asymmetric_tables_are_not_folded():
    """A table with no mirror parity and a model off the square's symmetries stay whole."""
    coef = torch.tensor(np.random.default_rng(2).standard_normal((5, 4, 7)))
    assert objectives_mod._mirror_parity(coef) is None
    assert objectives_mod._mirror_parity(coef + coef.flip(-1)) == 1.0
    assert objectives_mod._mirror_parity(coef - coef.flip(-1)) == -1.0
    table = torch.tensor(np.random.default_rng(3).standard_normal((5, 4, 49)))
    assert objectives_mod._square_orbits(table, 7) is None
    sym = table.reshape(5, 4, 7, 7)
    for op in (lambda t: t.flip(-1), lambda t: t.flip(-2), lambda t: t.transpose(-1, -2)):
        sym = sym + op(sym)
    sym = sym + sym.flip(-1) + sym.flip(-2) + sym.flip(-1).flip(-2)
    sym = sym + sym.transpose(-1, -2)
    onehot, first = objectives_mod._square_orbits(sym.reshape(5, 4, 49), 7)
    assert onehot.shape == (49, 10) and onehot.sum().item() == 49
    assert int(onehot.sum(dim=0).max()) == 8 and int(onehot.sum(dim=0).min()) == 1
