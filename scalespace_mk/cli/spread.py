"""``scalespace-mk spread``: spread measures (mean, covariance) of filters (docs/method.md#spread).

Examples
--------
``scalespace-mk spread`` prints the raw measures of ``|h|`` for the 8 published filters;
``scalespace-mk spread --weighted --json`` prints the weighted measures of the normalised
filters as one JSON object.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scalespace_mk import _json as json  # never NaN/Infinity: null + reason

from ._args import cli_words, masterkey_types_arg

__all__ = ["add_parser", "run"]


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0; got {text!r}") from None
    if not (value >= 0.0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0; got {text!r}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``spread`` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The object returned by ``ArgumentParser.add_subparsers``.

    Returns
    -------
    argparse.ArgumentParser
        The ``spread`` parser, with ``run`` set as its ``_run`` default.
    """
    p = subparsers.add_parser(
        "spread",
        help="mean and covariance of |h| (raw) or of the normalised |h| * |model| (weighted)",
        description=(
            "Spread measures of filters in centred y-up coordinates (x = c - m, y = m - r): "
            "mean M = sum(p w)/sum(w) and covariance V of the weight w. Raw: w = |h| of the "
            "filters as given. Weighted (--weighted): w = |normalised h| * |g|, g the "
            "paper-mode model of the same type at sigma_ref (type 7: the Gaussian T). "
            "Filters are numbered from 1 in file order (the paper's numbering of the "
            "published 8)."
        ),
    )
    p.add_argument(
        "--filters",
        metavar="SRC",
        default=None,
        help="filters: 'masterkey' (default, the published 8) or a path "
        "(.txt, .npy, .npz, .pt, .pth, .safetensors, or a directory with 8Filters.txt)",
    )
    p.add_argument(
        "--weighted",
        action="store_true",
        help="weighted measures of the normalised filters (docs/method.md#spread, #normalisation)",
    )
    p.add_argument(
        "--sigma-ref",
        metavar="S",
        type=_nonneg_float,
        default=None,
        help="reference scale (pixels) of the weight, with --weighted; default 1 for types "
        "1-6 and 8, 1/sqrt(2) for type 7",
    )
    p.add_argument(
        "--types",
        metavar="T1,T2,...",
        type=masterkey_types_arg,
        default=None,
        help="master key type (1..8) of each filter, for --weighted; default 1..8 for 8 filters",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse the whole file if one filter has no spread (zero, non-finite, or with "
        "--weighted constant); default: report that filter's row as 'no spread' and go on",
    )
    p.set_defaults(_run=run)
    return p


def _table(records: list[dict[str, Any]], title: str) -> str:
    head = (
        f"{'index':>5} {'type':>4} {'m_x':>9} {'m_y':>9} {'V_xx':>9} {'V_xy':>9} "
        f"{'V_yy':>9} {'l1':>10} {'sep':>7}"
    )
    lines = [title, head, "-" * len(head)]
    for rec in records:
        kind = str(rec.get("type", "-"))
        if rec.get("error") is not None:
            lines.append(f"{rec['index']:>5} {kind:>4}   no spread: {rec['error']}")
            continue
        (mx, my), ((vxx, vxy), (_, vyy)) = rec["mean"], rec["cov"]
        lines.append(
            f"{rec['index']:>5} {kind:>4} {mx:>9.4f} {my:>9.4f} {vxx:>9.4f} {vxy:>9.4f} "
            f"{vyy:>9.4f} {rec['l1']:>10.5g} {rec['separability']:>7.4f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Compute and print the spread measures for the parsed ``spread`` arguments.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments with ``filters``, ``weighted``, ``sigma_ref``, ``types``, ``json``.

    Returns
    -------
    int
        0 on success, 2 on a usage or data error (message on stderr).

    Notes
    -----
    With ``--json`` stdout holds exactly one JSON object
    ``{"filters": [{"index", "mean": [mx, my], "cov": [[vxx, vxy], [vxy, vyy]], "l1",
    "separability"[, "type", "sigma_ref"]}], "weighted": bool, "source": str}``; ``index``
    starts at 1 (the paper's numbering of the published 8). ``l1`` is ``sum(w)``. A filter
    with no spread has ``{"index", "error"[, "type", "sigma_ref"]}`` (``error``: ``"zero"``,
    ``"constant"`` or ``"non-finite"``) unless ``--strict``.
    """
    import numpy as np

    from scalespace_mk.analysis.census import screen_filters
    from scalespace_mk.analysis.filters import load_filters
    from scalespace_mk.analysis.normalize import normalize_filters
    from scalespace_mk.analysis.spread import spread
    from scalespace_mk.analysis.spread import weighted_spread as _weighted
    from scalespace_mk.analysis.types import resolve_filter_types, resolve_sigma_ref

    try:
        if not args.weighted and (args.sigma_ref is not None or args.types is not None):
            raise ValueError("--sigma-ref and --types apply only with --weighted")
        h = load_filters(args.filters, check_values=False)  # bad filters: screened below
        reasons = screen_filters(h)
        if not args.weighted:  # a constant filter has a raw spread (its weight is flat)
            reasons = np.where(reasons == "constant", None, reasons)
        bad = [i for i, r in enumerate(reasons) if r is not None]
        if bad and args.strict:
            listed = ", ".join(f"{i + 1} ({reasons[i]})" for i in bad[:10])
            raise ValueError(
                f"--strict: {len(bad)} filter(s) have no spread: {listed}; drop them, or "
                "leave out --strict to report them as 'no spread' rows"
            )
        good = np.array([i for i in range(h.shape[0]) if reasons[i] is None], dtype=np.int64)
        if args.weighted:
            if args.types is None and h.shape[0] != 8:
                raise ValueError(
                    f"--types is required with --weighted unless there are exactly 8 filters "
                    f"(the published master key filters, types 1..8 in order); got "
                    f"{h.shape[0]} filters: give --types T1,T2,... (one type 1..8 per filter)"
                )
            types = resolve_filter_types(args.types, h.shape[0])
            sigmas = resolve_sigma_ref(args.sigma_ref, types)
            done: list[dict[str, Any]] = []
            if good.size:
                sub = [types[i] for i in good]
                result = _weighted(
                    normalize_filters(h[good], filter_types=sub).filters,
                    sigma_ref=args.sigma_ref,
                    filter_types=sub,
                )
                done = result.to_records(start=1)
            records = []
            rows = iter(done)
            for i, (t, s) in enumerate(zip(types, sigmas, strict=True)):
                rec = next(rows) if reasons[i] is None else {"error": reasons[i]}
                rec.update(index=i + 1, type=int(t), sigma_ref=float(s))
                records.append(rec)
        else:
            done = spread(h[good]).to_records(start=1) if good.size else []
            rows = iter(done)
            records = []
            for i in range(h.shape[0]):
                rec = next(rows) if reasons[i] is None else {"error": reasons[i]}
                rec["index"] = i + 1
                records.append(rec)
    except (ValueError, TypeError, OSError) as exc:
        message = cli_words(str(exc), None, "spread")  # CLI options, not Python names
        print(f"scalespace-mk spread: error: {message}", file=sys.stderr)
        return 2
    for rec in records:  # recorded, not silent
        if rec.get("error") is not None:
            print(
                f"scalespace-mk spread: warning: filter {rec['index']}: {rec['error']}: no "
                "spread (row kept; --strict refuses the file)",
                file=sys.stderr,
            )
    source = "masterkey" if args.filters is None else str(args.filters)
    if args.json:
        payload = {"filters": records, "weighted": bool(args.weighted), "source": source}
        print(json.dumps(payload))
    else:
        kind = "weighted (normalised h times |model at sigma_ref|)" if args.weighted else "raw |h|"
        print(_table(records, f"spread of {source}: {kind}; y up, index from 1"))
    return 0
