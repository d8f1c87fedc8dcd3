"""The parts of model/ import each other one way: no cycles, and the DiT and the weight loader apart.

Read from the source with `ast` (nothing imported), so an import inside a function counts as much as
one at the top of a file: a lazy import hides a cycle from Python, not from this test.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

MODEL = Path(__file__).resolve().parents[2] / "model"


def _imports(path: Path) -> Iterator[str]:
    """Absolute names of the modules a file of model/ imports (relative imports resolved)."""
    package = list(path.relative_to(MODEL.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield module
            if node.module is None:  # `from . import x`: x may be a module
                yield from (f"{module}.{alias.name}" for alias in node.names)


def _part(module: str) -> str | None:
    """The part of model/ a module belongs to: "model.dit.block" -> "dit"; None outside model/."""
    names = module.split(".")
    return names[1] if names[0] == "model" and len(names) > 1 else None


def _part_of_file(path: Path) -> str:
    return path.relative_to(MODEL).with_suffix("").parts[0]


def _edges() -> dict[str, dict[str, set[str]]]:
    """part -> part it imports -> the files that do it."""
    edges: dict[str, dict[str, set[str]]] = {}
    for path in sorted(MODEL.rglob("*.py")):
        here = _part_of_file(path)
        for module in _imports(path):
            there = _part(module)
            if there is not None and there != here:
                edges.setdefault(here, {}).setdefault(there, set()).add(str(path.relative_to(MODEL.parent)))
    return edges


def _cycle(edges: dict[str, dict[str, set[str]]]) -> list[str]:
    """One import cycle among the parts, as the list of parts around it; [] when there is none."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(part: str) -> list[str]:
        state[part] = "open"
        stack.append(part)
        for nxt in sorted(edges.get(part, {})):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[part] = "done"
        stack.pop()
        return []

    for part in sorted(edges):
        if part not in state and (found := visit(part)):
            return found
    return []


def test_the_reader_sees_relative_and_lazy_imports() -> None:
    edges = _edges()
    assert "model/weights/transfer.py" in edges["weights"]["fp8"]  # `from model.fp8 import ...`
    assert "model/infinitetalk/dit_loader.py" in edges["infinitetalk"]["dit"]
    assert "dit" not in edges.get("dit", {})  # a part's own relative imports are not edges


def test_the_weight_loader_imports_nothing_of_the_dit() -> None:
    # model.weights knows files and layouts; the DiT built from its files is model.infinitetalk's job
    edges = _edges().get("weights", {})
    assert not edges.get("dit") and not edges.get("infinitetalk"), edges


def test_the_dit_imports_nothing_of_the_weight_loader() -> None:
    # fp8 linears share their quantisation math with the loader through model.fp8, below both
    assert not _edges().get("dit", {}).get("weights"), _edges()["dit"]


def test_the_parts_of_model_import_each_other_without_cycles() -> None:
    edges = _edges()
    cycle = _cycle(edges)
    where = [f"{a} -> {b}: {sorted(edges[a][b])}" for a, b in pairwise(cycle)]
    assert not cycle, "import cycle in model/: " + " | ".join(where)
