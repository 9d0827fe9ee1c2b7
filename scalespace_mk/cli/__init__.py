"""Command-line interface: ``scalespace-mk <command> ...``.

Each command group lives in its own module of this package and exposes
``add_parser(subparsers)``, which registers its subcommands and sets ``_run`` (a callable
taking the parsed arguments and returning an exit code) as a parser default.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from scalespace_mk._threads import add_threads_argument, prepare_environment, set_threads

__all__ = ["build_parser", "main"]

#: command-group modules, in the order their commands are listed by ``--help``
_GROUPS = ("bank", "spread", "fit", "census", "checkpoint", "substitute", "train", "data")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    from scalespace_mk import __version__

    parser = argparse.ArgumentParser(
        prog="scalespace-mk",
        description="Scale-space models of the master key filters of depthwise-separable CNNs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in _GROUPS:
        try:
            module = importlib.import_module(f"{__name__}.{group}")
        except ModuleNotFoundError as exc:  # a group not installed in this build
            if exc.name != f"{__name__}.{group}":
                raise
            continue
        made = module.add_parser(sub)
        if isinstance(made, argparse.ArgumentParser) and made.get_default("_run") is None:
            made.set_defaults(_run=module.run)
    for command in sub.choices.values():  # every command computes: all get --threads
        if not any("--threads" in a.option_strings for a in command._actions):
            add_threads_argument(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    prepare_environment()  # before anything imports torch (scalespace_mk._threads)
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    before = None
    try:
        if getattr(args, "threads", None) is not None:  # else torch's own default applies
            import torch

            before = torch.get_num_threads()
            set_threads(args.threads)
        return int(run(args) or 0)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"scalespace-mk {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if before is not None:  # main() called from Python: leave the caller's setting
            set_threads(before)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
