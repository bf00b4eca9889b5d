"""The floor plan, read from the code's own imports: no circles, and no import that points up a floor.

Pure: parses the source (every import, function-level and TYPE_CHECKING ones included), runs nothing.
The floors, bottom up (README "Architecture"):

    config  <  channels  <  dispatcher.domain  <  dispatcher.store  <  dispatcher.engine
            <  dispatcher.incidents, dispatcher.reads (side by side)
            <  the edges: worker, api, public, dashboard, cli and the top-level modules

A package may import its own modules and any floor below it, never one above.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("config", "channels", "dispatcher", "templates")

# What each package may import of ours (itself always). Anything not named here is an edge.
ALLOWED: dict[str, tuple[str, ...]] = {
    "config": (),
    "channels.sandbox": (),  # the provider sandbox imports nothing of the service
    "channels": ("config", "templates"),
    # the channel vocabulary (names, a send's outcome) and the locale chain
    "dispatcher.domain": ("channels.base", "channels.locales"),
    "dispatcher.store": ("config", "dispatcher.domain"),
    "dispatcher.engine": ("config", "channels", "dispatcher.domain", "dispatcher.store", "dispatcher.logs"),
    "dispatcher.incidents": (
        "config",
        "channels",
        "dispatcher.domain",
        "dispatcher.store",
        "dispatcher.engine",
    ),
    # what dashboards read back: the API and the dashboard import it
    "dispatcher.reads": (
        "config",
        "channels",
        "dispatcher.domain",
        "dispatcher.store",
        "dispatcher.engine",
    ),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> Iterator[Path]:
    for top in OURS:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


MODULES = {module_name(p): p for p in source_files()}


def imports_of(name: str) -> set[str]:
    """The modules of ours that `name` imports, anywhere in its body."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from dispatcher.domain import audience` imports the module dispatcher.domain.audience
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in OURS:
                while target not in MODULES and "." in target:
                    target = target.rpartition(".")[0]
                if target != name:
                    found.add(target)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def floor_of(name: str) -> str | None:
    """The most specific package in ALLOWED that holds `name`; None for an edge."""
    matches = [p for p in ALLOWED if name == p or name.startswith(p + ".")]
    return max(matches, key=len) if matches else None


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_plan_is_read_from_the_real_tree() -> None:
    """The checks below see the modules they judge (a wrong ROOT would pass everything vacuously)."""
    assert "dispatcher.engine.planner" in GRAPH and "config.settings" in GRAPH
    assert "dispatcher.domain.message" in GRAPH["dispatcher.engine.variants"]
    assert "dispatcher.domain.audience" in GRAPH["dispatcher.engine.planner"]  # `from pkg import mod`
    assert "dispatcher.cli.up" in GRAPH["dispatcher.cli.commands"] and floor_of("dispatcher.cli") is None


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_points_up_a_floor(package: str) -> None:
    allowed = (package, *ALLOWED[package])
    upward = sorted(
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if floor_of(name) == package
        for target in targets
        if not within(target, allowed)
    )
    assert upward == []


def test_no_import_circles() -> None:
    """Tarjan's strongly connected components over the module graph: each must be one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(GRAPH[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in sorted(GRAPH):
        if name not in index:
            visit(name)
    assert circles == []


def package_of(name: str) -> str:
    """The folder a module is a room of (`dispatcher.api.incidents` -> `dispatcher.api`,
    `channels.base` -> `channels`); a module directly in `dispatcher/` (app, supervisor) is its own."""
    if MODULES[name].name == "__init__.py":
        return name
    parent = name.rpartition(".")[0]
    return name if parent == "dispatcher" else parent or name


def test_no_circles_between_packages() -> None:
    """Two of dispatcher's folders that import each other are one floor pretending to be two (the
    API and the public pages once did: the app mounted the pages, which took the API's error
    shape): each pair of packages is tied one way at most."""
    edges = {
        (package_of(name), package_of(target))
        for name, targets in GRAPH.items()
        for target in targets
        if package_of(name) != package_of(target)
        and name.startswith("dispatcher.")
        and target.startswith("dispatcher.")
    }
    assert sorted((a, b) for a, b in edges if (b, a) in edges and a < b) == []
