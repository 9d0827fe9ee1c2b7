"""Argument types shared by the command groups."""

from __future__ import annotations

import argparse
import ast
import functools
import re
from pathlib import Path
from typing import Any

__all__ = [
    "DEVICES",
    "count_arg",
    "add_null_arguments",
    "null_arg",
    "add_device_option",
    "cli_words",
    "file_kind",
    "fit_types_arg",
    "masterkey_types_arg",
    "model_types_arg",
    "refuse_wrong_file",
    "source_constant",
    "source_defaults",
    "source_fields",
]

#: choices of every ``--device`` option
DEVICES = ("cpu", "cuda")


def count_arg(name: str, option: str, low: int | None = None, high: int | None = None) -> Any:
    """An argparse type for an integer option checked against ``limits.COUNT_LIMITS[name]``
    (or ``[low, high]``): ASCII digits only, the range and the constant named on failure,
    before anything is allocated (``--stages 10**30`` never reaches the code)."""

    def parse(text: str) -> int:
        from scalespace_mk import limits

        if not limits.is_ascii_int(text.strip()):
            raise argparse.ArgumentTypeError(
                f"must be an integer (ASCII digits); got {text[:40]!r}"
            )
        if len(text.strip()) > 30:  # far above every limit; int() of 10**6 digits is slow
            value: int = 10**31 if not text.strip().startswith("-") else -(10**31)
        else:
            value = int(text)
        if low is not None and high is not None:
            if not low <= value <= high:
                raise argparse.ArgumentTypeError(
                    f"must be an integer in [{low}, {high}]; got {text[:40]}"
                )
            return value
        try:
            return limits.check_count(name, value, option=option)
        except ValueError as exc:
            message = str(exc).removeprefix(option + " ")  # argparse names the option
            if len(text.strip()) > 30:
                message = message.rsplit("; got", 1)[0] + (
                    f"; got {text.strip()[:20]}... ({len(text.strip())} digits)"
                )
            raise argparse.ArgumentTypeError(message) from None

    parse.__name__ = option  # argparse names the type in its messages
    return parse


def masterkey_types_arg(text: str) -> list[int]:
    """``--types`` of fit and spread: master-key types 1..8, comma- or space-separated."""
    from scalespace_mk.limits import is_ascii_int

    tokens = text.replace(",", " ").split()
    if not all(is_ascii_int(tok) for tok in tokens):  # int() would take '1_0' and other scripts
        raise argparse.ArgumentTypeError(
            f"--types must be comma-separated integers in 1..8 (ASCII digits); got {text!r}"
        )
    values = [int(tok) for tok in tokens]
    if not values or any(v < 1 or v > 8 for v in values):
        raise argparse.ArgumentTypeError(f"--types must be integers in 1..8; got {text!r}")
    return values


def model_types_arg(text: str) -> list[int | str]:
    """``--types`` of census and analyze: types 1..8 and/or model names such as ``dxx``."""
    tokens = [tok for tok in text.replace(",", " ").split() if tok]
    if not tokens:
        raise argparse.ArgumentTypeError(
            f"--types must list types 1..8 and/or model names (e.g. '1,5,dxx'); got {text!r}"
        )
    from scalespace_mk.limits import is_ascii_int

    return [int(tok) if is_ascii_int(tok) else tok for tok in tokens]


def add_device_option(parser: argparse.ArgumentParser, what: str) -> None:
    """Add the shared ``--device {cpu,cuda}`` option (default cpu) to ``parser``."""
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help=f"torch device for {what} (default: %(default)s)",
    )


def fit_types_arg(text: str) -> list[int] | str:
    """``--types`` of fit: ``auto`` (chosen by the census) or master-key types 1..8."""
    if text.strip().lower() == "auto":
        return "auto"
    return masterkey_types_arg(text)


_FILTER_SUFFIXES = (".txt", ".dat", ".text", ".npy", ".npz")


def file_kind(path: str) -> str:
    """Guess what a file holds from its first bytes: ``"filters"`` (a filter text file or a
    numpy array), ``"bank"`` (an ``.npz`` written by ``scalespace-mk bank``),
    ``"checkpoint"`` (a torch or safetensors file) or ``"unknown"``."""
    import json
    import zipfile
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        return "unknown"
    with open(p, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"\x93NUMPY") or p.suffix.lower() in (".txt", ".dat", ".text"):
        return "filters"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return "unknown"
        if any(n.endswith("data.pkl") for n in names):
            return "checkpoint"
        if {"kernels.npy", "sigma.npy", "models.npy"} <= set(names):
            return "bank"  # written by 'scalespace-mk bank': kernels [n_sigma, n_models, k, k]
        return "filters" if names and all(n.endswith(".npy") for n in names) else "unknown"
    if head[:1] == b"\x80":  # a legacy torch.save pickle
        return "checkpoint"
    if p.suffix.lower() == ".safetensors" and len(head) == 8:
        from scalespace_mk._checks import check_safetensors_file

        try:  # a damaged header: let the loader name the problem
            check_safetensors_file(p)
        except (ValueError, OSError):
            return "unknown"
        n = int.from_bytes(head, "little")
        try:
            with open(p, "rb") as fh:
                fh.seek(8)
                header = json.loads(fh.read(min(n, 1 << 24)))
        except (ValueError, OSError):
            return "unknown"
        keys = [k for k in header if k != "__metadata__"]
        if set(keys) & {"filters", "kernels"} or (
            len(keys) == 1 and len(header[keys[0]].get("shape", ())) in (2, 3)
        ):
            return "filters"
        return "checkpoint"
    return "unknown"


def cli_words(message: str, parser: argparse.ArgumentParser | None, command: str | None) -> str:
    """``message`` with the Python argument names of ``command`` put in CLI words.

    A snake_case name that is the destination of one of the command's options
    (``grid_step``, ``sigma_max``, ``sigma_ref``) becomes the option (``--grid-step``)
    wherever it stands; a one-word name (``sigma``, ``size``, ``k``) only where it opens
    the message (``"size must be ..."`` -> ``"--size must be ..."``), since elsewhere it
    is usually an ordinary word.
    """
    if parser is None:  # a command printing its own error: the whole parser, built now
        from scalespace_mk.cli import build_parser

        parser = build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    sub = subs[0].choices.get(command) if subs and command else None
    if sub is None:
        return message
    names = {}
    for action in sub._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        opt = longs[0] if longs else (action.option_strings[0] if action.option_strings else None)
        if opt is not None and action.dest not in ("help", "threads"):
            names[action.dest] = opt
    for dest, opt in sorted(names.items(), key=lambda kv: -len(kv[0])):
        if "_" in dest:
            message = re.sub(rf"(?<![\w.-]){re.escape(dest)}(?![\w])", opt, message)
        elif re.match(rf"{re.escape(dest)}\b(?! =)", message) and not message.startswith(opt):
            message = opt + message[len(dest) :]
    return message


def refuse_wrong_file(command: str, path: str, wanted: str) -> None:
    """Raise a one-line ValueError when ``path`` is not the kind of file ``command`` reads.

    ``wanted`` is ``"checkpoint"`` (analyze, replace, eval) or ``"filters"`` (census, fit).
    """
    kind = file_kind(path)
    if kind == "bank":
        stem = Path(path).with_suffix("").name
        reads = "network checkpoints" if wanted == "checkpoint" else "filter arrays [N, k, k]"
        raise ValueError(
            f"{path} is a model bank written by 'scalespace-mk bank' (kernels [n_sigma, "
            f"n_models, k, k]); 'scalespace-mk {command}' reads {reads}. To fit the bank's "
            f'kernels, flatten them into one array first: python -c "import numpy as np; '
            f"b = np.load('{path}'); k = b['kernels']; "
            f"np.save('{stem}_kernels.npy', k.reshape(-1, *k.shape[-2:]))\" and then "
            f"'scalespace-mk census {stem}_kernels.npy' (filters in sigma-major order: "
            "for each sigma, every model)"
        )
    if kind == "filters" and wanted == "checkpoint":
        raise ValueError(
            f"{path} holds a filter array, not a network checkpoint; 'scalespace-mk {command}' "
            f"reads checkpoints. For filters use 'scalespace-mk census {path}' (best type and "
            f"scales per filter) or 'scalespace-mk fit --filters {path} --types auto'"
        )
    if kind == "checkpoint" and wanted == "filters":
        raise ValueError(
            f"{path} is a network checkpoint, not a filter array; 'scalespace-mk {command}' "
            f"reads filters. For a checkpoint use 'scalespace-mk analyze {path}' (census of "
            "every depthwise layer) or 'scalespace-mk extract' to write its master filters"
        )


def null_arg(text: str) -> str:
    """``--null``: a set (none, default, both, all), a null kind or a comma-separated list of
    kinds (names read from analysis/null.py's source, so ``--help`` imports no numpy)."""
    kinds = set(source_constant("analysis.null", "NULL_KINDS"))
    kinds |= set(source_constant("analysis.null", "NULL_ALIASES"))
    sets = tuple(source_constant("analysis.null", "NULL_SETS"))
    if text in sets or (text and all(part.strip() in kinds for part in text.split(","))):
        return text
    raise argparse.ArgumentTypeError(
        f"expected one of {', '.join(sets)}, or null kinds separated by commas "
        f"({', '.join(sorted(kinds))}); got {text!r}"
    )


def add_null_arguments(p: argparse.ArgumentParser) -> None:
    """``--null``, ``--seed`` and ``--strict`` of census and analyze."""
    p.add_argument(
        "--null",
        type=null_arg,
        default="default",
        metavar="NULL",
        help="null models fitted beside the filters, each named for what it randomises: iid "
        "(i.i.d. Gaussian filters, the floor), position (the filters' own power spectra with "
        "random phases, i.e. random position and shape; old name phase), shape (the same, "
        "re-centred on the largest tap), covariance (Gaussian filters with the layer's own "
        "mean and covariance); or a set: default (iid,shape,covariance), both (iid,position), "
        "all, none; or kinds separated by commas. Each null's ceiling (the same null on "
        "ideal model filters) is reported beside it; see docs/analysis.md (default: default)",
    )
    p.add_argument(
        "--seed",
        type=count_arg("seed", "--seed"),
        default=0,
        help="seed of the null filters and bootstrap, 0..2**32-1 (default 0)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop with an error at the first zero, constant or NaN/Inf filter (default: "
        "record it with type null, r2 null and its reason, and go on)",
    )


# --------------------------------------------------------------------------------------
# names read from the package's source, so that building the parsers (``--help``, argument
# errors) imports neither torch nor numpy


def _source(module: str, head: str) -> ast.Module:
    """The parsed top-level statement of ``scalespace_mk.<module>`` that starts with ``head``.

    Only that statement is parsed (from its first line to the next line at column 0), not
    the whole module, and nothing is imported.
    """
    path = Path(__file__).resolve().parents[1].joinpath(*module.split(".")).with_suffix(".py")
    lines = path.read_text(encoding="utf-8").splitlines()
    pattern = re.compile(rf"^{re.escape(head)}\b")
    for i, line in enumerate(lines):
        if pattern.match(line):
            j = i + 1
            while j < len(lines) and (not lines[j] or lines[j][0] in " \t#)]}"):
                j += 1
            return ast.parse("\n".join(lines[i:j]), filename=str(path))
    raise LookupError(f"no top-level {head!r} in scalespace_mk.{module}")


def _literal_or_none(node: ast.expr) -> Any:
    """A literal, or ``dict(key=literal, ...)`` as a dict; None for anything else."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "dict"
        and not node.args
    ):
        values = {kw.arg: _literal_or_none(kw.value) for kw in node.keywords}
        return values if None not in values else None
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


@functools.cache
def source_constant(module: str, name: str) -> Any:
    """The literal value of the module-level constant ``name`` of ``scalespace_mk.<module>``.

    Read from the source with :func:`ast.literal_eval` (a dict's keys only when its values
    are not literals); ``tests/test_cli_start.py`` checks each use against the imported
    value.
    """
    for node in _source(module, name).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:
            if isinstance(node.value, ast.Dict):
                return {
                    ast.literal_eval(k): _literal_or_none(v)
                    for k, v in zip(node.value.keys, node.value.values, strict=True)
                    if k is not None
                }
            return ast.literal_eval(node.value)
    raise LookupError(f"no constant {name} in scalespace_mk.{module}")


@functools.cache
def source_fields(module: str, cls: str) -> tuple[tuple[str, str], ...]:
    """``(name, annotation)`` of the fields of dataclass ``cls`` in ``scalespace_mk.<module>``,
    read from the source (annotations as written, e.g. ``"int"``, ``"str | None"``)."""
    for node in _source(module, f"class {cls}").body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return tuple(
                (item.target.id, ast.unparse(item.annotation))
                for item in node.body
                if isinstance(item, ast.AnnAssign)
                and isinstance(item.target, ast.Name)
                and "ClassVar" not in ast.unparse(item.annotation)
            )
    raise LookupError(f"no class {cls} in scalespace_mk.{module}")


@functools.cache
def source_defaults(module: str, cls: str) -> dict[str, Any]:
    """``{name: default}`` of the fields of dataclass ``cls`` in ``scalespace_mk.<module>``
    whose default is a literal, read from the source (nothing is imported)."""
    for node in _source(module, f"class {cls}").body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return {
                item.target.id: _literal_or_none(item.value)
                for item in node.body
                if isinstance(item, ast.AnnAssign)
                and isinstance(item.target, ast.Name)
                and item.value is not None
            }
    raise LookupError(f"no class {cls} in scalespace_mk.{module}")
