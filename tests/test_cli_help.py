"""Every option of every subcommand documents itself, and shared options behave alike."""

from __future__ import annotations

import argparse

from scalespace_mk.cli import build_parser


def _subparsers(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}".strip()
                yield path, sub
                yield from _subparsers(sub, path)


def _options(sub: argparse.ArgumentParser):
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        yield action


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def test_every_option_has_help_with_its_default():
    missing, no_default = [], []
    for path, sub in _subparsers(build_parser()):
        for action in _options(sub):
            name = "/".join(action.option_strings) or action.dest
            text = action.help or ""
            if not text.strip() or text == argparse.SUPPRESS:
                missing.append(f"{path} {name}")
            elif action.option_strings and _takes_value(action) and not action.required:
                if "default" not in text.lower():
                    no_default.append(f"{path} {name}")
    assert not missing, "options without help: " + ", ".join(missing)
    assert not no_default, "options whose help gives no default: " + ", ".join(no_default)


def test_shared_options_behave_the_same_everywhere():
    seen: dict[str, list[tuple[str, object]]] = {}
    for path, sub in _subparsers(build_parser()):
        for action in _options(sub):
            for opt in ("--device", "--json", "--plot", "--threads"):
                if opt in action.option_strings:
                    kind = (type(action).__name__, tuple(action.choices or ()), action.type)
                    seen.setdefault(opt, []).append((path, kind))
    for opt, uses in seen.items():
        kinds = {k for _, k in uses}
        assert len(kinds) == 1, f"{opt} differs between subcommands: {uses}"
