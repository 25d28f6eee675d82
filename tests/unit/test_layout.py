"""The layout shows the architecture, and a test keeps it so (issue 13):

- the product (`ledger/`, `schemas/`, `streams/` but `streams/dev/`) never imports the
  development tooling in `streams/dev/` (local broker, simulator, demo, bench, services);
- nothing imports faust: the money path left it, and the collections desk has not come yet;
- no module imports, however lazily, a module that imports it back (an import circle).

Every import is read with `ast`, including those inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ledger", "schemas", "streams")
DEV = "streams.dev"


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the three packages."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = modules()


def imports_of(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted module) for each import in the module: `from X import Y` counts as X.Y
    where that is a module of ours, else as X."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, package)
            for alias in node.names:
                target = f"{base}.{alias.name}" if base else alias.name
                yield node.lineno, target if target in MODULES else base


def _resolve(node: ast.ImportFrom, package: str) -> str:
    if node.level == 0:
        return node.module or ""
    parts = package.split(".")
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


def _ours(target: str) -> str | None:
    """The module of ours an import names (the longest known prefix), or None."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for _line, target in imports_of(name, path):
            ours = _ours(target)
            if ours is not None and ours != name:
                edges[name].add(ours)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def product() -> list[str]:
    return [name for name in MODULES if not (name == DEV or name.startswith(DEV + "."))]


def test_the_layout_is_what_the_docs_describe() -> None:
    for package in ("worker", "gateway", "reconcile", "report", "cli", "dev"):
        assert f"streams.{package}" in MODULES, package
    assert not any(name.startswith("ledger.cli") for name in MODULES)


@pytest.mark.parametrize("name", product())
def test_the_product_never_imports_the_development_tooling(name: str) -> None:
    reached = [
        f"line {line}: {target}"
        for line, target in imports_of(name, MODULES[name])
        if target == DEV or target.startswith(DEV + ".")
    ]
    assert reached == []


def test_nothing_imports_faust() -> None:
    found = [
        f"{name} line {line}"
        for name, path in MODULES.items()
        for line, target in imports_of(name, path)
        if target.split(".")[0] in ("faust", "mode")
    ]
    assert found == []


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    assert circles(graph()) == []


def test_the_circle_finder_finds_a_circle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [["a", "b", "c"]]
