"""Seeded filter sets and fit configurations of the family-census reference
(tests/data/family_reference_f4b0623.npz, checked by tests/test_family_census_reference.py).

The reference was written by the family census at commit f4b0623 (exact 1-D rows at every
trial scale, fixed-length stencil refinement), before its internals moved to cubic tables
and Newton steps::

    PYTHONPATH=. python benchmarks/family_reference.py tests/data/family_reference_f4b0623.npz

Per configuration it stores the scales, coefficients, offset and R^2 of every filter and the
curvature of the exact R^2 in the scales at the reference optimum (the smallest eigenvalue of
minus the Hessian, by central differences of step 1e-3): where the objective is that flat,
a scale is determined only to ``sqrt(2 dR^2 / curvature)``.

Filter sets (``reference_filters()``): ``p7`` / ``p5``: 200 / 100 planted N-jets of order 2
(7x7 / 5x5; half with one scale, half with two, sigma in [0.5, 2.5] (7x7) or [0.4, 1.8]
(5x5), N(0, 1) coefficients, unit norm) plus 2 % white noise, times a gain in [0.5, 3] plus
an N(0, 0.1) offset; ``w7`` / ``w5``: 200 / 150 white-noise filters. Seed 4021.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

SEED = 4021
COMMIT = "f4b0623"

#: (name, filter set, family_census options)
CONFIGS: tuple[tuple[str, str, dict[str, Any]], ...] = tuple(
    [
        (f"njet{o}_{s}", s, {"family": "njet", "order": o})
        for o in (1, 2, 3, 4)
        for s in ("p7", "w7", "p5", "w5")
    ]
    + [
        (f"njet{o}a_{s}", s, {"family": "njet", "order": o, "anisotropic": True})
        for o in (1, 2, 3)
        for s in ("p7", "w7", "p5", "w5")
    ]
    + [
        (f"oriented{o}_{s}", s, {"family": "oriented", "order": o})
        for o in (1, 2)
        for s in ("p7", "w7", "p5", "w5")
    ]
    + [(f"full_njet2_{s}", s, {"family": "njet", "order": 2, "mode": "full"}) for s in ("p7", "w7")]
    + [
        (
            "full_njet2a_p7",
            "p7",
            {"family": "njet", "order": 2, "mode": "full", "anisotropic": True},
        ),
        ("full_oriented2_p7", "p7", {"family": "oriented", "order": 2, "mode": "full"}),
        ("norm_njet2_p7", "p7", {"family": "njet", "order": 2, "normalized": True, "gamma": 0.75}),
        ("smax2_njet2_w7", "w7", {"family": "njet", "order": 2, "sigma_max": 2.0}),
        (
            "smax2_njet2a_w7",
            "w7",
            {"family": "njet", "order": 2, "anisotropic": True, "sigma_max": 2.0},
        ),
        ("smax2_oriented2_w7", "w7", {"family": "oriented", "order": 2, "sigma_max": 2.0}),
    ]
)


def _planted(rng: np.random.Generator, n: int, k: int, lo: float, hi: float) -> np.ndarray:
    from scalespace_mk.scalespace.jets import jet_basis

    sx = rng.uniform(lo, hi, n)
    sy = np.where(np.arange(n) % 2 == 0, sx, rng.uniform(lo, hi, n))
    c = rng.standard_normal((n, 6))
    g = np.einsum("nm,nmrc->nrc", c, jet_basis(2, sx, sy, size=k))
    g /= np.linalg.norm(g.reshape(n, -1), axis=1)[:, None, None]
    g += 0.02 * rng.standard_normal(g.shape)
    gain = rng.uniform(0.5, 3.0, n)[:, None, None]
    return gain * g + rng.normal(0.0, 0.1, n)[:, None, None]


def reference_filters() -> dict[str, np.ndarray]:
    """The four seeded filter sets ``{"p7", "w7", "p5", "w5"}`` (see the module docstring)."""
    rng = np.random.default_rng(SEED)
    return {
        "p7": _planted(rng, 200, 7, 0.5, 2.5),
        "w7": rng.standard_normal((200, 7, 7)),
        "p5": _planted(rng, 100, 5, 0.4, 1.8),
        "w5": rng.standard_normal((150, 5, 5)),
    }


def exact_r2(y: np.ndarray, opts: dict[str, Any], sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """R^2 of the family fitted at given scales with exact members (theta free for oriented 2)."""
    import torch

    from scalespace_mk.analysis.jets import _exact, _Family
    from scalespace_mk.scalespace import kernels

    k = y.shape[-1]
    smax = opts.get("sigma_max") or k / 2
    fam = _Family(
        opts["family"],
        opts["order"],
        k,
        opts.get("mode", "paper"),
        kernels.truncation_error_1d(1e-8, 1),
        smax,
        False,
        1.0,
        torch.device("cpu"),
    )
    flat = torch.as_tensor(y.reshape(len(y), -1))
    with torch.no_grad():
        res = _exact(fam, flat, torch.as_tensor(sx), torch.as_tensor(sy))
    yc = flat - flat.mean(1, keepdim=True)
    return 1.0 - res["rss"].numpy() / (yc * yc).sum(1).numpy()


def curvature(y: np.ndarray, opts: dict[str, Any], sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Smallest eigenvalue of minus the Hessian of the exact R^2 in the free scales (step 1e-3,
    scales kept in [0, sigma_max] by a one-sided stencil at the bounds)."""
    h = 1e-3
    k = y.shape[-1]
    smax = opts.get("sigma_max") or k / 2
    two = opts.get("anisotropic", False)
    lo = np.clip(np.stack([sx, sy], 1) if two else sx[:, None], h, smax - h)

    def f(th: np.ndarray) -> np.ndarray:
        return exact_r2(y, opts, th[:, 0], th[:, -1])

    f0 = f(lo)
    d = lo.shape[1]
    hess = np.zeros((len(y), d, d))
    for a in range(d):
        e = np.zeros(d)
        e[a] = h
        hess[:, a, a] = (f(lo + e) - 2 * f0 + f(lo - e)) / h**2
    if d == 2:
        ex, ey = np.array([h, 0.0]), np.array([0.0, h])
        hess[:, 0, 1] = hess[:, 1, 0] = (
            f(lo + ex + ey) - f(lo + ex - ey) - f(lo - ex + ey) + f(lo - ex - ey)
        ) / (4 * h * h)
    return np.linalg.eigvalsh(-hess)[:, 0]


def write_reference(path: str) -> None:
    """Run the census of every configuration and store the results (see the docstring)."""
    import torch

    from scalespace_mk.analysis.jets import family_census

    torch.set_num_threads(1)
    sets = reference_filters()
    out: dict[str, np.ndarray] = {}
    for name, s, opts in CONFIGS:
        res = family_census(sets[s], progress=False, **opts)
        out[f"{name}__sx"] = res.sigma_x
        out[f"{name}__sy"] = res.sigma_y
        out[f"{name}__coef"] = res.coefficients
        out[f"{name}__b"] = res.b
        out[f"{name}__r2"] = res.r2
        out[f"{name}__curv"] = curvature(sets[s], opts, res.sigma_x, res.sigma_y)
        print(f"{name}: median R^2 {np.median(res.r2):.6f}", flush=True)
    out["commit"] = np.array(COMMIT)
    np.savez_compressed(path, **out)


if __name__ == "__main__":
    write_reference(sys.argv[1])
