"""Every reference to the method points at a page that ships: no "SPEC §" outside the tests,
and every ``method.md#anchor`` names an anchor of ``docs/method.md``."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["scalespace_mk", "docs", "notebooks", "experiments", "benchmarks", "README.md"]
SUFFIXES = {".py", ".md", ".ipynb", ".txt", ".toml", ".cfg", ".rst"}


def _files() -> list[Path]:
    out = []
    for name in SCANNED:
        p = ROOT / name
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += [f for f in sorted(p.rglob("*")) if f.is_file() and f.suffix in SUFFIXES]
    return out


def test_no_spec_section_references():
    bad = []
    for f in _files():
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if "SPEC §" in line:
                bad.append(f"{f.relative_to(ROOT)}:{i}")
    assert not bad, "'SPEC §' (a spec that does not ship) in: " + ", ".join(bad)


def test_method_anchors_exist():
    anchors = set(re.findall(r'<a id="([\w-]+)"></a>', (ROOT / "docs/method.md").read_text()))
    assert {"data", "coordinates", "discretisations", "operators", "models", "spread"} <= anchors
    assert {"normalisation", "fitting", "networks"} <= anchors
    bad = []
    for f in _files():
        text = f.read_text(encoding="utf-8")
        for m in re.finditer(r"method\.md#([\w-]+)((?:, #[\w-]+)*)", text):
            names = [m.group(1)] + re.findall(r"#([\w-]+)", m.group(2))
            bad += [f"{f.relative_to(ROOT)}: #{n}" for n in names if n not in anchors]
    assert not bad, "links to missing anchors of docs/method.md: " + ", ".join(bad)
