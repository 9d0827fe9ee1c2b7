"""The family census (N-jet, oriented) against its own results at commit f4b0623, before its
scale search moved to cubic tables and Newton steps (analysis/jets_search.py).

tests/data/family_reference_f4b0623.npz holds, for 44 configurations and 7,450 fits (N-jet
orders 1-4 with one scale, orders 1-3 with two, oriented orders 1 and 2, "full" mode,
normalised members, a smaller sigma_max) on seeded planted and white-noise 5x5 and 7x7 filters
(``benchmarks/family_reference.py``, which wrote it), the scales, coefficients, offset and
R^2 of every filter, and the curvature of the exact R^2 in the scales at the reference
optimum. Required of this census:

- R^2 never lower than the reference's by more than 1e-6; higher (a better optimum that
  the old stencil search missed) is accepted and counted;
- where R^2 agrees within 1e-9 (the same optimum), the same scales as far as the data
  determine them: within ``3 sqrt(2e-9 / curvature)`` (over which R^2 changes by ~1e-8);
- where the scales agree within 1e-7, the same coefficients and offset (1e-4 relative).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scalespace_mk.analysis.jets import _Family, _members, family_census
from scalespace_mk.analysis.jets_search import Search
from scalespace_mk.scalespace import kernels
from scalespace_mk.scalespace.jets import jet_indices

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "data" / "family_reference_f4b0623.npz"
sys.path.insert(0, str(ROOT / "benchmarks"))

from family_reference import CONFIGS, reference_filters  # noqa: E402


@pytest.fixture(scope="module")
def sets():
    return reference_filters()


@pytest.fixture(scope="module")
def ref():
    data = np.load(REF, allow_pickle=False)
    assert str(data["commit"]) == "f4b0623"
    return data


#: one intra-op thread for every test here (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


IMPROVED: dict[str, int] = {}


@pytest.mark.parametrize("name,key,opts", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_family_census_equals_the_reference(name, key, opts, sets, ref):
    res = family_census(sets[key], progress=False, **opts)
    d = res.r2 - ref[f"{name}__r2"]
    assert d.min() >= -1e-6, f"{name}: R^2 lower than the reference by {-d.min():.2e}"
    higher = d > 1e-6
    IMPROVED[name] = int(higher.sum())
    # better optima are rare (the old stencil search stopped short on a few two-scale fits)
    assert higher.mean() <= 0.05, f"{name}: {higher.sum()} filters differ by > 1e-6"
    same = np.abs(d) <= 1e-9
    dist = np.abs(
        np.stack([res.sigma_x - ref[f"{name}__sx"], res.sigma_y - ref[f"{name}__sy"]], 1)
    ).max(1)
    curv = ref[f"{name}__curv"]
    tol = np.full_like(curv, np.inf)
    ok = curv > 0
    tol[ok] = 3.0 * np.sqrt(2e-9 / curv[ok]) + 1e-6
    bad = same & (dist > tol)
    assert not bad.any(), (
        f"{name}: scales of {bad.sum()} filters moved beyond what the data determine, e.g. "
        f"filter {np.flatnonzero(bad)[0]}"
    )
    tight = dist <= 1e-7
    assert tight.mean() > 0.4  # the comparison below is not empty
    c_new, c_ref = res.coefficients.copy(), ref[f"{name}__coef"].copy()
    if opts["family"] == "oriented":  # theta on the circle (period pi for order 2)
        per = math.pi if opts["order"] == 2 else 2 * math.pi
        c_ref[:, 0] = np.abs((c_new[:, 0] - c_ref[:, 0] + per / 2) % per - per / 2)
        c_new[:, 0] = 0.0
    rel = np.abs(c_new - c_ref).max(1) / (1.0 + np.abs(c_ref).max(1))
    assert rel[tight].max() <= 1e-4
    assert np.abs(res.b - ref[f"{name}__b"])[tight].max() <= 1e-4


def test_improved_counts_are_reported():
    """Not a check: prints how many filters got a better optimum (run with -s)."""
    if IMPROVED:
        total = sum(IMPROVED.values())
        print(f"\nfilters with R^2 higher than the f4b0623 reference by > 1e-6: {total}")
        for name, n in IMPROVED.items():
            if n:
                print(f"  {name}: {n}")


@pytest.mark.parametrize(
    "opts",
    [
        {"family": "njet", "order": 2},
        {"family": "njet", "order": 2, "anisotropic": True},
        {"family": "oriented", "order": 2},
    ],
)
def test_results_do_not_depend_on_the_thread_count(opts, sets):
    y = sets["w7"]
    one = family_census(y, batch_size=32, num_threads=1, progress=False, **opts)
    two = family_census(y, batch_size=32, num_threads=2, progress=False, **opts)
    three = family_census(y, batch_size=32, num_threads=3, progress=False, **opts)
    for res in (two, three):
        for key in ("sigma_x", "sigma_y", "coefficients", "b", "r2"):
            assert np.array_equal(getattr(one, key), getattr(res, key)), key
    assert torch.get_num_threads() == 1  # restored


def _search(family, order, two, k=7, sigma_max=3.5):
    fam = _Family(
        family,
        order,
        k,
        "paper",
        kernels.truncation_error_1d(1e-8, 1),
        sigma_max,
        False,
        1.0,
        torch.device("cpu"),
    )
    members = [jet_indices(order)[m] for m in _members(family, order)]
    s = Search(
        family, order, members, k, two, "paper", fam.kw["eps1d"], sigma_max,
        fam.kw["n_fft"], 0.05, torch.device("cpu"),
    )  # fmt: skip
    return fam, s


@settings(max_examples=25, deadline=None)
@given(
    case=st.sampled_from([("njet", 1, False), ("njet", 3, False), ("njet", 2, True),
                          ("oriented", 1, False), ("oriented", 2, False)]),
    sx=st.floats(0.2, 3.3),
    sy=st.floats(0.2, 3.3),
    theta=st.floats(0.0, 3.1),
    seed=st.integers(0, 2**16),
)  # fmt: skip
def test_interpolated_objective_and_its_derivatives_are_exact(case, sx, sy, theta, seed):
    """R^2 from the tables equals R^2 from the exact members (1e-9), and the gradient and
    Hessian equal central differences of the exact R^2 (the tables' derivatives)."""
    family, order, two = case
    fam, s = _search(family, order, two)
    z = torch.as_tensor(np.random.default_rng(seed).standard_normal((1, 49)))
    z = z - z.mean()
    z = z / z.norm()
    z3 = z.reshape(1, 7, 7)
    th = torch.tensor([[sx, sy if two else theta]], dtype=torch.float64)
    if s.dim == 1:
        th = th[:, :1]
    f, g, h = s.objective(z3, th)

    def exact(t: torch.Tensor) -> float:
        if s.oriented2:  # R^2 of the steered member at (sigma, theta)
            basis = fam.basis(t[:, :1].reshape(-1), t[:, :1].reshape(-1))[0]  # [3, 49]
            from scalespace_mk.scalespace.jets import oriented_weights

            m = oriented_weights(2, t[0, 1]) @ basis
            m = m - m.mean()
            return float((m @ z[0]) ** 2 / (m @ m))
        r2, _ = fam.at(z3, t[:, :1], t[:, s.dim - 1 :])
        return float(r2[0, 0])

    assert float(f[0]) == pytest.approx(exact(th), abs=1e-9)
    step = 1e-4
    for a in range(s.dim):
        e = torch.zeros_like(th)
        e[0, a] = step
        fp, fm = exact(th + e), exact(th - e)
        assert float(g[0, a]) == pytest.approx((fp - fm) / (2 * step), abs=1e-6)
        assert float(h[0, a, a]) == pytest.approx((fp - 2 * exact(th) + fm) / step**2, abs=2e-3)


def test_both_censuses_read_their_models_through_the_one_tables_module():
    """analysis.tables is the one home of the cubic tables: the 8-type census's objectives
    and the family census use its helpers, and the interpolant's derivatives are those of
    the cubic (central differences between knots)."""
    from scalespace_mk.analysis import jets_search, scale_objectives, tables

    for name in ("_knots", "_cubic_coefficients", "_Interp"):
        assert getattr(scale_objectives, name) is getattr(tables, name)
    for name in ("_knots", "_cubic_coefficients", "_Interp"):
        assert getattr(jets_search, name) is getattr(tables, name)
    table = torch.as_tensor(np.random.default_rng(3).standard_normal((40, 5)))
    interp = tables._Interp(tables._cubic_coefficients(table), 0.1, 3.7)
    s = (torch.arange(36, dtype=torch.float64) + 0.37) * 0.1  # between knots (C0 at knots)
    f, d1, d2 = interp.derivs(s)
    assert torch.allclose(f, interp(s), rtol=0, atol=1e-14)
    e = 1e-6
    fd1 = (interp(s + e) - interp(s - e)) / (2 * e)
    h = 1e-4  # the cubic's second difference is exact up to rounding
    fd2 = (interp(s + h) - 2 * interp(s) + interp(s - h)) / h**2
    assert torch.allclose(d1, fd1, atol=1e-6)
    assert torch.allclose(d2, fd2, atol=1e-4)
