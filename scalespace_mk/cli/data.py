"""``scalespace-mk data``: the data files shipped with the package.

Examples
--------
``scalespace-mk data verify`` checks the shipped copy of the published 8 filters against its
pinned sha256, downloads the pinned version (pooch, checksum verified, into the cache) and
compares the two byte for byte. ``--offline`` checks the shipped copy only.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scalespace_mk import _json as json  # never NaN/Infinity: null + reason

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``data`` command group (``data verify``).

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The object returned by ``ArgumentParser.add_subparsers``.

    Returns
    -------
    argparse.ArgumentParser
        The ``data`` parser; its subcommand sets :func:`run` as ``_run``.
    """
    p = subparsers.add_parser(
        "data",
        help="check the data shipped with the package (the published 8 filters)",
        description=(
            "The published 8 master key filters ship inside the package "
            "(scalespace_mk/data_files/8Filters.txt, CC BY 4.0, Lindeberg, Babaiee, Kiasari; "
            "see 8Filters.md beside it): nothing is downloaded to use them. 'data verify' "
            "checks that copy and, unless --offline, compares it with the pinned download."
        ),
    )
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    v = sub.add_parser(
        "verify",
        help="check the shipped filters against the pinned sha256 and the pinned download",
        description=(
            "Check the shipped 8Filters.txt against its pinned sha256; then download the "
            "pinned version with pooch into the cache ($SCALESPACE_MK_CACHE, default "
            "~/.cache/scalespace_mk), verified against the same sha256, and compare the two "
            "byte for byte. Exit 0 when they agree, 1 when they differ, 2 when the download "
            "fails."
        ),
    )
    v.add_argument(
        "--offline",
        action="store_true",
        help="check the shipped copy only, download nothing (default: off)",
    )
    v.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=30.0,
        help="network timeout of the download, in seconds (default: %(default)s)",
    )
    v.add_argument(
        "--json", action="store_true", help="print one JSON object instead of text (default: off)"
    )
    v.set_defaults(_run=run)
    p.set_defaults(_run=lambda args: (p.print_help(), 2)[1])
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``data verify``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments with ``offline``, ``timeout`` and ``json``.

    Returns
    -------
    int
        0 when the shipped copy matches (and the download, when made, equals it), 1 when
        they differ, 2 when the download fails (message on stderr).
    """
    from scalespace_mk._io import ChecksumError
    from scalespace_mk.analysis.filters import REGISTRY, fetch, file_sha256, published_path

    url, sha256 = REGISTRY["8Filters.txt"]
    report: dict[str, Any] = {"url": url, "sha256": sha256}
    try:
        shipped = published_path()
        report.update(shipped=str(shipped), shipped_ok=True)
    except ChecksumError as exc:
        report.update(shipped_ok=False, shipped_error=str(exc))
        shipped = None
    if not args.offline:
        try:
            got = fetch("8Filters.txt", timeout=args.timeout)
        except (ChecksumError, OSError) as exc:
            print(f"scalespace-mk data verify: error: {exc}", file=sys.stderr)
            return 2
        same = shipped is not None and got.read_bytes() == shipped.read_bytes()
        report.update(downloaded=str(got), downloaded_sha256=file_sha256(got), same=same)
    ok = report["shipped_ok"] and report.get("same", True)
    if args.json:
        print(json.dumps(report))
    else:
        if report["shipped_ok"]:
            print(f"shipped copy {report['shipped']}: sha256 {sha256} (pinned): ok")
        else:
            print(f"shipped copy: {report['shipped_error']}")
        if "downloaded" in report:
            verdict = "identical to the shipped copy" if report["same"] else "DIFFERS"
            print(f"pinned download {url} -> {report['downloaded']}: {verdict}")
    return 0 if ok else 1
