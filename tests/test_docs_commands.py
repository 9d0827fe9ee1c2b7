"""Docs match the code: every ``scalespace-mk ...`` / ``python -m scalespace_mk ...`` command
in README.md and docs/*.md parses (argparse only, nothing runs), and every Python name the
docs mention (``scalespace_mk.x.y`` and the names in docs/api.md's tables) exists."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest

from scalespace_mk.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: a value that stands for something (FILE, N, ...), syntax ([...], a|b, <x>) or a shell variable
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_.,/-]*$|\.\.\.|[\[\]|<>{}$]")


def _commands() -> list[tuple[str, str]]:
    """``(page:line, command after the program name)`` for every documented command."""
    found = []
    prog = r"(?:scalespace-mk|python -m scalespace_mk(?:\.cli)?)"
    for page in PAGES:
        in_block = False
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines, 1):
            j = i
            while in_block and line.rstrip().endswith("\\") and j < len(lines):
                line = line.rstrip()[:-1] + " " + lines[j].strip()  # a continued command
                j += 1
            if line.lstrip().startswith("```"):
                in_block = not in_block
                continue
            where = f"{page.relative_to(ROOT)}:{i}"
            if in_block:
                m = re.search(rf"(?:^|[\s;&|]){prog}\s+(.*)", line)
                if m:
                    found.append((where, m.group(1).split(" #")[0].split(" | ")[0].strip()))
            for m in re.finditer(rf"`{prog}\s+([^`]*)`", line):
                found.append((where, m.group(1).strip()))
    return found


COMMANDS = _commands()


def _options(parser, words):
    """The (sub)command parser named by the leading words and its option strings."""
    command = parser
    for word in words:
        subs = [a for a in command._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs or word.startswith("-"):
            break
        if word not in subs[0].choices:
            return (None, set()) if command is parser else (command, _opts(command))
        command = subs[0].choices[word]
    return (None, set()) if command is parser else (command, _opts(command))


def _opts(command) -> set[str]:
    return {s for a in command._actions for s in a.option_strings}


def test_the_docs_name_commands():
    assert len(COMMANDS) > 30  # the extraction works: the docs show many commands
    assert any(cmd.startswith("analyze") for _, cmd in COMMANDS)


@pytest.mark.parametrize("where, command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where, command):
    parser = build_parser()
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    words = [w for w in words if w not in ("\\",)]
    if not words or words[0] in ("-h", "--help", "--version") or "error:" in command:
        return  # the program's own options, or a quoted error message
    if len(words) == 1:  # a command named in prose: it must exist
        assert _options(parser, words)[0] is not None, f"{where}: no command {words[0]!r}"
        return
    sub, options = _options(parser, words)
    assert sub is not None, f"{where}: 'scalespace-mk {command}': no command {words[0]!r}"
    for w in words[1:]:
        for opt in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", w):
            if opt.startswith("--") or re.fullmatch(r"-[a-zA-Z]", opt):
                name = opt.split("=")[0]
                assert name in options, (
                    f"{where}: 'scalespace-mk {command}': {words[0]} has no option {name}"
                )
    if any(PLACEHOLDER.search(w) for w in words[1:]):
        return  # a syntax summary: the options are checked, the values are placeholders
    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            parser.parse_args(words)
        except SystemExit as exc:
            raise AssertionError(
                f"{where}: 'scalespace-mk {command}' does not parse: {err.getvalue()}"
            ) from exc


def _dotted_names() -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        for i, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for m in re.finditer(r"(?<![\w/.])(scalespace_mk(?:\.[A-Za-z_]\w*)+)", line):
                out.append((f"{page.relative_to(ROOT)}:{i}", m.group(1)))
    return out


def _resolve(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_dotted_python_name_in_the_docs_exists():
    bad = [f"{w}: {name}" for w, name in _dotted_names() if not _resolve(name)]
    assert not bad, "names in the docs that the package lacks:\n" + "\n".join(bad)


def _api_rows() -> list[tuple[str, str, str]]:
    """``(line, module, name)`` for the first cell of every table row under a
    ``## `scalespace_mk.module` `` heading of docs/api.md."""
    out, module = [], None
    for i, line in enumerate((ROOT / "docs" / "api.md").read_text().splitlines(), 1):
        head = re.match(r"## `(scalespace_mk[\w.]*)`", line)
        if line.startswith("## "):
            module = head.group(1) if head else None
            continue
        if module and line.startswith("| `"):
            cell = line.split("|")[1].strip()
            # a call ``name(...)`` or a dotted name ``a.b``: constants and data specs aside
            m = re.match(r"`([A-Za-z_][\w.]*)(\(|`)", cell)
            if m and (m.group(2) == "(" or "." in m.group(1)):
                out.append((f"docs/api.md:{i}", module, m.group(1)))
    return out


def test_every_name_in_the_api_tables_exists():
    rows = _api_rows()
    assert len(rows) > 40
    bad = []
    for where, module, name in rows:
        if name.startswith("scalespace_mk."):
            found = _resolve(name)
        else:  # relative to the section's module, or to its package (``census.null_r2``)
            parent = module.rpartition(".")[0] or module
            found = _resolve(f"{module}.{name}") or _resolve(f"{parent}.{name}")
        if not found:
            bad.append(f"{where}: {module}: {name}")
    assert not bad, "docs/api.md names that the package lacks:\n" + "\n".join(bad)


# --------------------------------------------------------------------------------------
# the drift issue 19 found, each checked against the code


def test_readme_dwconv_list_is_every_kind():
    from scalespace_mk.networks.layers import DWCONV_KINDS

    readme = (ROOT / "README.md").read_text()
    line = re.search(r"`--dwconv` is (.*?);", readme).group(1)
    assert re.findall(r"`(\w+)`", line) == list(DWCONV_KINDS)
    for page in PAGES:  # every "--dwconv a|b|c" syntax summary lists them all
        for alts in re.findall(r"--dwconv ((?:\w+\|)+\w+)", page.read_text()):
            assert alts.split("|") == list(DWCONV_KINDS), (page.name, alts)


def test_readme_json_claim_names_the_commands_without_json():
    readme = (ROOT / "README.md").read_text()
    claim = re.search(r"with `--json` one JSON object, except (.*?), which", readme, re.S)
    named = set(re.findall(r"`(\w+)`", claim.group(1)))
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    without = {name for name, p in sub.choices.items() if "--json" not in _opts(p)}
    without -= {"data"}  # a group: its subcommands have --json
    assert named == without


def test_training_md_counts_its_variants():
    from scalespace_mk.networks.layers import DWCONV_KINDS

    text = (ROOT / "docs" / "training.md").read_text()
    words = {4: "four", 5: "five", 6: "six", 7: "seven"}
    assert f"## The {words[len(DWCONV_KINDS)]} depthwise variants" in text


def test_api_md_names_every_model_config():
    from scalespace_mk.networks.convnext import _MODEL_CONFIGS

    api = (ROOT / "docs" / "api.md").read_text()
    for name in _MODEL_CONFIGS:
        family, _, size = name.partition("_")
        braces = re.search(rf"`{family}_\{{([\w,]+)\}}", api)
        listed = braces is not None and size in braces.group(1).split(",")
        assert listed or name in api, f"docs/api.md does not name the model {name!r}"


def test_no_help_offers_the_removed_builtin_filters():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in ("fit", "spread", "census"):
        text = sub.choices[name].format_help()
        assert "'builtin'" not in text, name
