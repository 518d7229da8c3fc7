"""The import direction of ``src/vislearn`` (DESIGN.md, "Layering"), checked by reading every module with ``ast``.

Every import counts: module level, inside functions and under ``if TYPE_CHECKING``. Each module belongs
to the package (unit) named in :data:`LAYERS`; a unit may import its own layer or lower ones, and units
of one layer may import each other only while no circle forms. A module of a package that is not in
:data:`LAYERS` is an error too, so a new package has to be given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# low to high; a lower layer never imports a higher one
LAYERS: dict[str, int] = {
    "vislearn": 0, "vislearn.io": 0, "vislearn.errors": 0, "vislearn.registry": 0, "vislearn._discover": 0,
    "vislearn.nn": 1, "vislearn.detection": 1, "vislearn.diffusion": 1, "vislearn.train": 1, "vislearn.data": 1,
    "vislearn.models": 2,
    "vislearn.losses": 3, "vislearn.metrics": 3, "vislearn.inference": 3,
    "vislearn.recipes": 4,
    "vislearn.reproduce": 5,
    "vislearn.commands": 6,
    "vislearn.cli": 7,
}

Sources = dict[str, tuple[str, bool]]  # module name -> (source text, is a package __init__)


def read_sources(src: Path = SRC) -> Sources:
    """Every module under ``src/vislearn``, by dotted name."""
    out: Sources = {}
    for path in sorted((src / "vislearn").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts.pop()
        out[".".join(parts)] = (path.read_text(encoding="utf-8"), is_pkg)
    return out


def unit_of(module: str) -> str | None:
    """The :data:`LAYERS` key owning ``module`` (longest dotted prefix; the bare root only for itself)."""
    if module == "vislearn":
        return "vislearn"
    best = None
    for unit in LAYERS:
        if unit != "vislearn" and (module == unit or module.startswith(unit + ".")):
            if best is None or len(unit) > len(best):
                best = unit
    return best


def imported_modules(name: str, source: str, is_pkg: bool, known: set[str]) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import in ``source``, relative ones resolved.

    ``from pkg import sub`` counts as an import of ``pkg.sub`` when that is a module of the tree.
    """
    package = name if is_pkg else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            found += [(s, node.lineno) for s in subs] or [(target, node.lineno)]
    return [(m, line) for m, line in found if m == "vislearn" or m.startswith("vislearn.")]


def check(sources: Sources) -> tuple[list[str], list[str], list[list[str]]]:
    """``(upward imports, modules without a layer, circles between units)`` of a source tree."""
    known = set(sources)
    upward: list[str] = []
    unmapped: list[str] = []
    edges: dict[str, dict[str, str]] = {}  # unit -> imported unit -> one example "module:line"
    for name, (source, is_pkg) in sorted(sources.items()):
        unit = unit_of(name)
        if unit is None:
            unmapped.append(name)
            continue
        for target, line in imported_modules(name, source, is_pkg, known):
            tunit = unit_of(target)
            if tunit is None:
                unmapped.append(f"{target} (imported by {name}:{line})")
                continue
            if LAYERS[tunit] > LAYERS[unit]:
                upward.append(f"{name}:{line} imports {target} (layer {LAYERS[unit]} -> {LAYERS[tunit]})")
            if tunit != unit:
                edges.setdefault(unit, {}).setdefault(tunit, f"{name}:{line}")
    return upward, unmapped, _circles(edges)


def _circles(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """Strongly connected groups of more than one unit (Tarjan), each listed with its edges' examples."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                members = set(group)
                groups.append(sorted(f"{a} -> {b} ({where})" for a in members
                                     for b, where in edges.get(a, {}).items() if b in members))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def test_src_imports_point_down_and_form_no_circle():
    sources = read_sources()
    assert "vislearn.models.registry" in sources and len(sources) > 50
    upward, unmapped, circles = check(sources)
    assert not unmapped, "modules without a layer in LAYERS:\n" + "\n".join(unmapped)
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)
    assert not circles, "import circles between packages:\n" + "\n\n".join("\n".join(c) for c in circles)


def test_checker_flags_an_upward_import_a_circle_and_an_unknown_package():
    sources: Sources = {
        "vislearn": ("", True),
        "vislearn.io": ("import json\nfrom vislearn.errors import UserError\n", False),
        "vislearn.errors": ("", False),
        "vislearn.nn": ("", True),
        "vislearn.nn.conv": ("def f():\n    from vislearn.models import registry\n", False),  # lazy, still upward
        "vislearn.models": ("from . import registry\n", True),
        "vislearn.models.registry": ("from ..nn import conv\n", False),
        "vislearn.train": ("", True),
        "vislearn.train.engine": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                  "    import vislearn.data.sets\n", False),
        "vislearn.data": ("", True),
        "vislearn.data.sets": ("from vislearn.train import engine\n", False),
        "vislearn.extra": ("", False),
    }
    upward, unmapped, circles = check(sources)
    assert upward == ["vislearn.nn.conv:2 imports vislearn.models.registry (layer 1 -> 2)"]
    assert unmapped == ["vislearn.extra"]
    # nn <-> models is one circle (through the upward import), train <-> data another (same layer, TYPE_CHECKING)
    assert sorted(circles) == [
        ["vislearn.data -> vislearn.train (vislearn.data.sets:1)",
         "vislearn.train -> vislearn.data (vislearn.train.engine:3)"],
        ["vislearn.models -> vislearn.nn (vislearn.models.registry:1)",
         "vislearn.nn -> vislearn.models (vislearn.nn.conv:2)"],
    ]
    # the same tree without the offending imports is clean
    sources["vislearn.nn.conv"] = ("import torch\n", False)
    sources["vislearn.data.sets"] = ("import vislearn.io\n", False)
    del sources["vislearn.extra"]
    assert check(sources) == ([], [], [])
