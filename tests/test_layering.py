"""The package's layering, read from the source with ast (nothing is imported): the task modules (isc_research.train,
isc_research.evaluate) are imported only by the command-line entry points (isc_research/cli/*), and no two modules
import each
other, directly or through others. Imports inside functions count too: a lazy import still makes the lower
layer depend on the upper one."""

from __future__ import annotations

import ast
from pathlib import Path

import isc_research

PACKAGE = Path(isc_research.__file__).parent
TASK_MODULES = {"isc_research.train", "isc_research.evaluate"}


def module_name(path: Path) -> str:
    parts = ["isc_research", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path) -> dict[str, int]:
    """The isc modules that `path` imports (anywhere in the file), each with the line of its first import.
    `from isc_research.a import b` imports isc_research.a.b when that is a module, else isc_research.a (b is a name
    defined there).
    Importing isc_research.a.b runs the package isc_research/a/__init__.py first, so isc_research.a counts as imported
    too, unless it is
    a package of the importer itself (already being imported when the importer runs)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    own_packages = {".".join(package.split(".")[:i]) for i in range(1, package.count(".") + 2)}
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names
            ]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for target in (".".join(parts[:i]) for i in range(2, len(parts) + 1)):
                if target in MODULES and target not in own_packages:
                    found.setdefault(target, node.lineno)
    return found


GRAPH = {name: imported_modules(path) for name, path in MODULES.items()}


def test_the_graph_is_read_from_the_source():
    # guards the parser itself: known edges of the package are found, and a name is not taken for a module
    assert "isc_research.train" in GRAPH["isc_research.cli.train"]
    assert "isc_research.trainer" in GRAPH["isc_research.train"]
    assert (
        "isc_research.callbacks" in GRAPH["isc_research.trainer"]
    )  # `from isc_research.callbacks import EpochSeeding`: the package
    assert "isc_research.callbacks.determinism" in GRAPH["isc_research.callbacks"]
    assert (
        "isc_research.detect" in GRAPH["isc_research.evaluate"]
    )  # `from isc_research.detect.query_crop import …` runs isc_research/detect/__init__
    assert "isc_research.detect" not in GRAPH["isc_research.detect.inference"]  # its own package
    assert len(MODULES) > 50


def test_only_the_command_line_imports_the_task_modules():
    offenders = [
        f"{MODULES[name].relative_to(PACKAGE.parent)}:{line} imports {target}"
        for name, targets in GRAPH.items()
        if not name.startswith("isc_research.cli.")
        for target, line in targets.items()
        if target in TASK_MODULES and target != name
    ]
    assert not offenders, (
        "task modules are imported below the command line; move the helper they need to "
        "the layer it belongs to: " + "; ".join(offenders)
    )


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle of `graph` (a path that comes back to its start), or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, {})):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "d": {"a": 1, "c": 1}}) is None


def test_no_import_cycle_between_modules():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " → ".join(cycle)
