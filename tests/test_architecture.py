"""The layout of docs/architecture.md: imports run one way, and no two modules import each
other (module-level and function-level imports both count)."""

from __future__ import annotations

import ast
from pathlib import Path

import scalespace_mk

ROOT = Path(scalespace_mk.__file__).parent

#: rank of each part; a module may import only parts of lower or equal rank.
RANKS = {
    "_checks": 0,
    "_io": 0,
    "_json": 0,
    "_progress": 0,
    "limits": 0,
    "_threads": 0,
    "_display": 0,
    "scalespace": 1,
    "analysis": 2,
    "networks": 3,
    "training": 4,
    "substitution": 5,
    "plot": 6,
    "cli": 7,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every scalespace_mk module named by an import anywhere in ``path``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("scalespace_mk"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("scalespace_mk"):
                continue
            out.add(mod)
            for a in node.names:  # "from scalespace_mk.x import module"
                cand = f"{mod}.{a.name}"
                if (ROOT.parent / (cand.replace(".", "/") + ".py")).exists():
                    out.add(cand)
    out.discard(name)
    return out


def _modules() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in ROOT.rglob("*.py")}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_part_has_a_rank():
    parts = {_part(m) for m in _modules()} - {None, "__main__"}
    assert parts <= set(RANKS), (
        f"parts without a rank in docs/architecture.md: {parts - set(RANKS)}"
    )


def test_imports_run_one_way():
    bad = []
    for mod, deps in _modules().items():
        src = _part(mod)
        if src in (None, "__main__"):  # the package's __init__ and __main__ may use anything
            continue
        for dep in deps:
            dst = _part(dep)
            if dst is not None and RANKS[dst] > RANKS[src]:
                bad.append(f"{mod} imports {dep}")
    assert not bad, "imports against the order of docs/architecture.md:\n" + "\n".join(bad)


def _resolve(dep: str, mods: dict[str, set[str]]) -> str | None:
    while dep and dep not in mods:
        dep = dep.rpartition(".")[0]
    return dep or None


def test_no_import_cycles():
    mods = _modules()
    graph = {
        m: {r for d in deps if (r := _resolve(d, mods)) and r != m and not m.startswith(r + ".")}
        for m, deps in mods.items()
        if m != "scalespace_mk"
    }
    # A package __init__ that re-exports its own submodules is not a cycle.
    for m in graph:
        graph[m] = {d for d in graph[m] if d in graph and not d.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_wings_import_no_upper_wing_in_a_planted_case(tmp_path):
    """The checker itself catches an upward import (it could fail)."""
    fake = ROOT / "scalespace" / "kernels.py"
    deps = _imports(fake)
    assert all(_part(d) in ("_checks", "_io", "limits", "scalespace") for d in deps)
    src = tmp_path / "x.py"
    src.write_text("def f():\n    from scalespace_mk.training.train import train\n")
    tree = ast.parse(src.read_text())
    found = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert RANKS[_part(found[0])] > RANKS["scalespace"]
