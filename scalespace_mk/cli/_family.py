"""Options and summary of the family census (``--family njet|oriented``), shared by the
``census`` and ``analyze`` commands."""

from __future__ import annotations

import argparse

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
        type=int,
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
            "--seed", type=int, default=0, help="seed of the null filters (default: 0)"
        )


def family_summary(filters, args: argparse.Namespace, **options) -> tuple[object, dict]:
    """Family census of ``filters`` and its JSON summary (with the nulls when asked).

    Returns the :class:`~scalespace_mk.analysis.jets.FamilyCensusResult` and
    ``summary`` with ``"median_r2"``, ``"median_r2_adjusted"`` and, with ``--null``,
    ``"null_median_r2"`` (and per kind ``"null_<kind>_median_r2"``).
    """
    from scalespace_mk.analysis.jets import family_census, family_null

    opts = dict(family=args.family, order=args.order, allow_saturated=args.allow_saturated)
    opts.update(options)
    result = family_census(filters, **opts)
    summary = result.summary()
    null = getattr(args, "null", None)
    if null and null != "none":
        from scalespace_mk.analysis.null import null_kinds

        kinds = null_kinds(null)
        medians = []
        for kind in kinds:
            res = family_null(filters, kind=kind, seed=getattr(args, "seed", 0), **opts)
            s = res.summary()
            summary[f"null_{kind}_median_r2"] = s["median_r2"]
            summary[f"null_{kind}_median_r2_adjusted"] = s["median_r2_adjusted"]
            medians.append(s["median_r2"])
        summary["null_median_r2"] = max(medians)
    return result, summary
