"""The level of the i.i.d. null: median R^2 of the 8 types on random filters, per kernel size.

Run ``python experiments/null_levels.py [--out docs]``: fits the best of the 8 master-key
types (``census``, paper mode) to ``N`` = 2,048 i.i.d. standard Gaussian filters (seed 0) of
each size 3, 5 and 7, and records the median R^2 with the half-width of its 95 % bootstrap
interval (2,000 resamples, seed 0) in ``null_levels.json``; the sentences of ``analysis.md``
that quote them are rendered from that file (:func:`render`, the
``null-levels`` and ``null-precision`` blocks). ``tests/test_analysis_doc.py`` checks the page
against the file and recomputes the levels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

SIZES = (3, 5, 7)
N = 2048
SEED = 0


def level(k: int, n: int = N, seed: int = SEED) -> dict[str, Any]:
    """Median R^2 of the 8 types on ``n`` seeded i.i.d. Gaussian ``k x k`` filters, with the
    half-width of the 95 % bootstrap interval of that median."""
    from scalespace_mk.analysis.census import census

    rng = np.random.default_rng([seed, k])
    r2 = np.asarray(census(rng.standard_normal((n, k, k)), progress=False).r2, dtype=float)
    med = float(np.median(r2))
    boot = np.median(r2[rng.integers(0, n, size=(2000, n))], axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"k": k, "n": n, "median_r2": med, "ci_half_width": float((hi - lo) / 2)}


def compute() -> dict[str, Any]:
    """Every size's level."""
    return {
        "command": "python experiments/null_levels.py --out docs",
        "seed": SEED,
        "levels": [level(k) for k in SIZES],
    }


def render(res: dict[str, Any]) -> dict[str, str]:
    """The two blocks of ``analysis.md`` quoting the levels, by name."""
    lv = {x["k"]: x for x in res["levels"]}
    n = lv[3]["n"]
    hw = ", ".join(f"+-{lv[k]['ci_half_width']:.3f} at {k}x{k}" for k in sorted(lv))
    return {
        "null-levels": (
            "The 8 types reach a median `R^2` of "
            f"{lv[3]['median_r2']:.2f} on i.i.d. random 3x3 filters, {lv[5]['median_r2']:.2f} "
            f"on 5x5\nand {lv[7]['median_r2']:.2f} on 7x7 ({n:,} seeded filters of each size; "
            "`experiments/null_levels.py`)."
        ),
        "null-precision": (
            f"The median of {n:,} i.i.d. null `R^2` values is known to about {hw} (half-width "
            "of its 95 %\nbootstrap interval, `experiments/null_levels.py`), far below the "
            "learned-minus-null\ndifferences of real networks, and the bootstrap intervals "
            "account for the null's size."
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """Compute, write ``null_levels.json`` and fill the block of ``analysis.md``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from statistics_real import fill_blocks

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs", help="folder of null_levels.json and analysis.md")
    args = p.parse_args(argv)
    out = Path(args.out)
    res = compute()
    out.mkdir(parents=True, exist_ok=True)
    (out / "null_levels.json").write_text(json.dumps(res, indent=1) + "\n")
    page = out / "analysis.md"
    if page.is_file():
        page.write_text(fill_blocks(page.read_text(), render(res)))
    print("\n\n".join(render(res).values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
