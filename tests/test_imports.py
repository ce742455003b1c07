"""avel's import graph, read from the source (every import, those inside functions too): no circle between
modules, and no folder importing one of a higher layer (README, "Layout"); ``avel.preprocessing`` imports
nothing else of avel."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "avel"
# low to high: a module imports only from its own folder and lower layers
LAYERS = [
    ["avel.collectives", "avel.rules"],  # import nothing of avel's; preprocessing refuses through rules
    ["avel.preprocessing"],
    ["avel.data", "avel.synth"],
    ["avel.models"],
    ["avel.families"],
    ["avel.balance"],
    ["avel.engine"],
    ["avel.experiments"],
    ["avel.tools"],
    ["avel", "avel.cli", "avel.__main__"],
]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each avel module -> the avel modules it imports (``from avel.x import y`` counts y when a module)."""
    files = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def unit(module: str) -> str:
    """The layer unit of a module: its folder under avel (avel.engine.train -> avel.engine)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_from_the_source():
    graph = import_graph()
    assert "avel.engine.train" in graph["avel.cli"] and "avel.balance" in graph["avel.engine.train"]
    assert "avel.collectives" in graph["avel.balance.pmr"]  # a module-level import
    assert "avel.engine.measures" in graph["avel.tools.evaluate"]
    assert set(map(unit, graph)) <= set(RANK), sorted(
        set(map(unit, graph)) - set(RANK)
    )  # every folder placed


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_no_import_from_a_higher_layer():
    upward = sorted(
        f"{a} -> {b}" for a, bs in import_graph().items() for b in bs if RANK[unit(b)] > RANK[unit(a)]
    )
    assert upward == []


def test_preprocessing_imports_nothing_else_of_avel():
    """... but avel.rules (one form of refusal everywhere; it imports nothing of avel's itself)."""
    graph = import_graph()
    assert graph["avel.rules"] == set()
    outside = sorted(
        f"{a} -> {b}" for a, bs in graph.items() if unit(a) == "avel.preprocessing" for b in bs
        if unit(b) not in ("avel.preprocessing", "avel.rules")
    )  # fmt: skip
    assert outside == []


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_cycles_finds_a_circle(graph, expected):
    assert cycles(graph) == expected
