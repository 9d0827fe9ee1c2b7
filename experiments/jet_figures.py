"""Figures of the N-jet theory page: the 2-jet basis at a few scales and the steering error.

Writes ``docs/figures/njet_basis.png`` (the six members of the discrete 2-jet, 7x7, paper
mode, at sigma = 0.6, 1.0, 1.6), ``docs/figures/oriented.png`` (the first and second
directional derivatives at sigma = 1 and five angles) and
``docs/figures/steering_error.png`` (the relative error of steering the discrete first and
second directional derivatives, against theta, at sigma = 0.5, 1, 2), and prints the
steering errors at 45 degrees.

Usage::

    python experiments/jet_figures.py [--out docs/figures]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from scalespace_mk.plot import plot_jet_basis, plot_steering_error
from scalespace_mk.scalespace.jets import jet_basis, jet_names, oriented_kernel
from scalespace_mk.scalespace.symbolic import steering_error

SIGMAS = (0.6, 1.0, 1.6)
STEER_SIGMAS = (0.5, 1.0, 2.0)
ANGLES = (0, 30, 60, 90, 135)


def compute() -> dict:
    """The basis and the steering errors (no figures)."""
    theta = np.linspace(0.0, math.pi / 2, 46)
    errors, labels = [], []
    for order in (1, 2):
        for s in STEER_SIGMAS:
            errors.append(steering_error(order, s, theta))
            labels.append(f"order {order}, sigma = {s:g}")
    angles = np.radians(ANGLES)
    oriented = np.stack([oriented_kernel(order, angles, 1.0) for order in (1, 2)])
    return {
        "oriented": oriented,
        "basis": jet_basis(2, np.array(SIGMAS)),
        "names": jet_names(2),
        "theta": theta,
        "errors": np.array(errors),
        "labels": labels,
    }


def main(argv: list[str] | None = None) -> int:
    """Compute, then draw and print."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/figures", help="folder for the figures")
    args = p.parse_args(argv)
    out = Path(args.out)
    res = compute()
    plot_jet_basis(res["basis"], SIGMAS, res["names"], path=out / "njet_basis.png")
    plot_jet_basis(
        res["oriented"],
        (1.0, 1.0),
        [f"{a} deg" for a in ANGLES],
        row_labels=["delta_phi T", "delta_phiphi T"],
        title="Oriented, sigma = 1, theta ccw from +x (y up)",
        path=out / "oriented.png",
    )
    plot_steering_error(res["theta"], res["errors"], res["labels"], path=out / "steering_error.png")
    mid = len(res["theta"]) // 2
    for label, err in zip(res["labels"], res["errors"], strict=True):
        print(f"{label}: {100 * err[mid]:.1f} % at 45 degrees, max {100 * err.max():.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
