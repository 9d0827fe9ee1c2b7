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
from scalespace_mk.cli._args import cli_words

__all__ = ["build_parser", "main"]

#: command-group modules, in the order their commands are listed by ``--help``
_GROUPS = ("bank", "spread", "fit", "census", "checkpoint", "substitute", "train", "data")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``scalespace-mk CMD: error: ... (see --help)``."""

    def error(self, message: str):  # type: ignore[override]
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    from scalespace_mk import __version__

    parser = _Parser(
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
    """Run the command line; returns the process exit code (130 after Ctrl-C)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # while starting (imports, parsing): still one line
        _quiet_print("scalespace-mk: interrupted (Ctrl-C); exit status 130")
        return 130


def _main(argv: list[str] | None) -> int:
    prepare_environment()  # before anything imports torch (scalespace_mk._threads)
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    before = None
    try:
        from ._outputs import check_outputs

        check_outputs(args)  # every output, before any work (nothing written on failure)
        if getattr(args, "threads", None) is not None:  # else torch's own default applies
            import torch

            before = torch.get_num_threads()
            set_threads(args.threads)
        code = int(run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's status for SIGINT
        _quiet_print(f"scalespace-mk {args.command}: interrupted (Ctrl-C); exit status 130")
        return 130
    except BrokenPipeError:  # `... | head`: the reader left; nothing more to say
        _silence_stdout()
        return 0
    except RecursionError:
        print(
            f"scalespace-mk {args.command}: error: the input is nested too deeply (a "
            "self-referencing or pathologically nested file); nothing was written",
            file=sys.stderr,
        )
        return 2
    except (ValueError, TypeError, OSError, RuntimeError, OverflowError, MemoryError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, MemoryError):
            text = "out of memory; use smaller inputs or options"
        text = cli_words(text, parser, args.command)  # CLI options, not Python names
        print(f"scalespace-mk {args.command}: error: {text}", file=sys.stderr)
        return 2
    finally:
        if before is not None:  # main() called from Python: leave the caller's setting
            set_threads(before)


def _quiet_print(line: str) -> None:
    """Print ``line`` to stderr, ignoring a closed stderr."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
