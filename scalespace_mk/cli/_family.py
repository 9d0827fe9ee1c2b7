"""Options and summary of the family census (``--family njet|oriented``), shared by the
``census`` and ``analyze`` commands."""

from __future__ import annotations

import argparse

from ._args import count_arg

__all__ = ["add_family_args", "family_summary"]


def _has_option(parser: argparse.ArgumentParser, option: str) -> bool:
    return any(option in action.option_strings for action in parser._actions)


def add_family_args(parser: argparse.ArgumentParser) -> None:
    """``--family/--order/--allow-saturated`` (and ``--null/--seed`` unless already there)."""
    parser.add_argument(
        "--family",
        choices=("masterkey", "njet", "oriented"),
        default="masterkey",
        help="model family: masterkey (the 8 types, default), njet (all discrete derivatives "
        "up to --order at one scale, plus an offset) or oriented (a directional derivative "
        "of order 1 or 2 at a fitted angle)",
    )
    parser.add_argument(
        "--order",
        type=count_arg("order", "--order", 1, 4),
        default=2,
        metavar="N",
        help="order of the family: 1-4 for njet, 1 or 2 for oriented (default 2)",
    )
    parser.add_argument(
        "--allow-saturated",
        action="store_true",
        help="fit a family with at least taps - 1 free parameters (e.g. a 2-jet on 3x3 "
        "filters), which explains any filter; refused by default",
    )
    if not _has_option(parser, "--null"):
        from ._args import null_arg

        parser.add_argument(
            "--null",
            type=null_arg,
            default=None,
            help="also fit null filters made from the input (iid, position, shape, covariance, "
            "or a set: default, both, all; see docs/analysis.md) and report their median R^2 "
            "(default: none)",
        )
    if not _has_option(parser, "--seed"):
        parser.add_argument(
            "--seed",
            type=count_arg("seed", "--seed"),
            default=0,
            help="seed of the null filters (default: 0)",
        )


def family_summary(filters, args: argparse.Namespace, **options) -> tuple[object, dict]:
    """Family census of ``filters`` and its JSON summary (with the nulls when asked).

    Zero, constant and non-finite filters are recorded, not fitted (``--strict``: the
    first one stops with an error naming it), like the 8-type census.

    Returns the :class:`~scalespace_mk.analysis.jets.FamilyCensusResult` and
    ``summary`` with ``"median_r2"``, ``"median_r2_adjusted"`` and, with ``--null``,
    ``"null_median_r2"`` (the largest null median) and per kind ``"null_<kind>_median_r2"``
    (honest kind names: ``phase`` is reported as ``position``).
    """
    result, summary, _ = family_fit(filters, args, **options)
    return result, summary


def family_fit(filters, args: argparse.Namespace, *, null_size: int | None = None, **options):
    """:func:`family_summary` plus the null results ``{kind: FamilyCensusResult}``.

    ``null_size``: build each null from a seeded random subset of at most this many of the
    fitted filters (None: all of them).
    """
    import numpy as np

    from scalespace_mk._checks import check_filters
    from scalespace_mk.analysis.census import screen_filters
    from scalespace_mk.analysis.jets import family_census, family_null
    from scalespace_mk.analysis.null import null_kinds

    y = check_filters(filters, "filters", values=False)
    reasons = screen_filters(y)
    if getattr(args, "strict", False) and not np.equal(reasons, None).all():
        idx = int(np.flatnonzero(np.not_equal(reasons, None))[0])
        raise ValueError(
            f"filters[{idx}] is {reasons[idx]} and cannot be fitted (--strict; drop --strict "
            "to record it and go on)"
        )
    opts = dict(family=args.family, order=args.order, allow_saturated=args.allow_saturated)
    opts.update(options)
    result = family_census(y, invalid=reasons, **opts)
    summary = result.summary()
    nulls: dict = {}
    kinds = null_kinds(getattr(args, "null", None))
    if kinds:
        fitted = y[np.equal(reasons, None)]
        seed = getattr(args, "seed", 0)
        if null_size is not None and len(fitted) > null_size:
            pick = np.random.default_rng([seed, 2]).choice(len(fitted), null_size, replace=False)
            fitted = fitted[np.sort(pick)]
        medians = []
        for kind in kinds:
            if kind == "covariance" and len(fitted) < 2:
                continue
            res = family_null(fitted, kind=kind, seed=seed, **opts)
            nulls[kind] = res
            s = res.summary()
            summary[f"null_{kind}_median_r2"] = s["median_r2"]
            summary[f"null_{kind}_median_r2_adjusted"] = s["median_r2_adjusted"]
            medians.append(s["median_r2"])
        summary["null_median_r2"] = max(medians) if medians else None
    return result, summary, nulls


def pooled_family_summary(parts: dict, args: argparse.Namespace) -> dict:
    """The family census of several kernel sizes pooled: medians over all fitted filters
    (and over all null filters of each kind), with the sizes listed.

    ``parts``: ``{k: (FamilyCensusResult, {kind: FamilyCensusResult})}``.
    """
    import numpy as np

    results = [r for r, _ in parts.values()]
    ok = np.concatenate([r.valid for r in results])
    r2 = np.concatenate([r.r2 for r in results])[ok]
    adj = np.concatenate([r.r2_adjusted for r in results])[ok]
    adj = adj[np.isfinite(adj)]
    invalid: dict[str, int] = {}
    for r in results:
        for key, n in r.invalid_counts().items():
            invalid[key] = invalid.get(key, 0) + n
    out = {
        "family": args.family,
        "order": args.order,
        "kernel_sizes": sorted(parts),
        "n_filters": int(ok.size),
        "fitted": int(ok.sum()),
        "invalid": invalid,
        "n_params": results[0].n_params,
        "median_r2": float(np.median(r2)) if r2.size else None,
        "median_r2_adjusted": float(np.median(adj)) if adj.size else None,
        "share_r2_above_0.8": float(np.mean(r2 > 0.8)) if r2.size else None,
    }
    kinds = {kind for _, nulls in parts.values() for kind in nulls}
    medians = []
    for kind in sorted(kinds):
        z = np.concatenate([n[kind].r2[n[kind].valid] for _, n in parts.values() if kind in n])
        za = np.concatenate(
            [n[kind].r2_adjusted[n[kind].valid] for _, n in parts.values() if kind in n]
        )
        za = za[np.isfinite(za)]
        out[f"null_{kind}_median_r2"] = float(np.median(z)) if z.size else None
        out[f"null_{kind}_median_r2_adjusted"] = float(np.median(za)) if za.size else None
        if z.size:
            medians.append(float(np.median(z)))
    if kinds:
        out["null_median_r2"] = max(medians) if medians else None
    return out
