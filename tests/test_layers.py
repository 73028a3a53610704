"""The package's import graph, read with ``ast``: no cycle, no import from a lower layer to a higher one,
and docs/architecture.md's module table names every module.

Every ``import`` counts, at module level or inside a function (a function-level import is a
dependency all the same; it only runs later). The package's own ``workbench/__init__.py`` is left
out: it imports the public names lazily, on first use.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "workbench"
ARCHITECTURE = REPO / "docs" / "architecture.md"

# Low to high: a module may import from its own layer and the layers below it.
LAYERS: list[tuple[str, ...]] = [
    ("types", "errors", "files", "progress", "provenance", "state"),
    # retriever.py is retrieval's public face: it imports retrieval alone, and evaluation scores a Retriever.
    ("retrieval", "retriever"),
    ("evaluation",),
    ("study", "training", "synthesis"),
    ("reporting",),
    ("serving", "integrations"),
    ("cli",),
]

# Cycles known and waiting for their fix; each names the work that removes it.
ALLOWED_CYCLES: set[frozenset[str]] = set()
# Imports from a lower layer to a higher one, known and waiting for their fix: (importer, imported).
ALLOWED_UPWARD: set[tuple[str, str]] = set()


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for every module of the package but its lazy ``__init__``."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts != ["workbench"]:
            modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file (``from a import b`` counts as
    an import of ``a.b`` when that is a module, else of ``a``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def layer_of(module: str) -> int:
    top = module.split(".")[1]
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    raise AssertionError(f"{module}: in no layer; add workbench/{top} to LAYERS in {Path(__file__).name}")


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan), each a set of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_graph_is_read_from_every_module():
    graph = import_graph()
    assert "workbench.cli" in graph and "workbench.retrieval.retrievers.bm25" in graph
    # a function-level import counts: the CLI imports the retriever only inside its commands
    assert "workbench.retriever" in graph["workbench.cli"]
    assert "workbench.retrieval.components" in graph["workbench.retrieval.config"]


def test_no_import_cycle():
    found = set(cycles(import_graph()))
    unexpected = [sorted(cycle) for cycle in found - ALLOWED_CYCLES]
    assert not unexpected, f"modules that import each other (directly or round a loop): {unexpected}"
    fixed = [sorted(cycle) for cycle in ALLOWED_CYCLES - found]
    assert not fixed, f"no longer a cycle, remove it from ALLOWED_CYCLES: {fixed}"


def test_no_import_from_a_lower_layer_to_a_higher_one():
    upward = {
        (module, imported)
        for module, imports in import_graph().items()
        for imported in imports
        if layer_of(imported) > layer_of(module)
    }
    unexpected = sorted(upward - ALLOWED_UPWARD)
    assert not unexpected, f"imports that run up the layers (importer, imported): {unexpected}"
    fixed = sorted(ALLOWED_UPWARD - upward)
    assert not fixed, f"no longer imported, remove from ALLOWED_UPWARD: {fixed}"


def test_the_architecture_table_names_every_module():
    """Each top-level module is named in a row's first cell; a module in a folder is named (by file
    name) in the row whose first cell names the folder."""
    rows = [line for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    unnamed = []
    for path in module_files().values():
        relative = path.relative_to(PACKAGE)
        if path.name == "__init__.py" and len(relative.parts) > 1:
            continue  # a folder's __init__ is the folder
        if len(relative.parts) == 1:
            named = any(f"`{path.name}`" in first for first, *_ in cells)
        else:
            folder = f"`{relative.parts[0]}/`"
            named = any(
                folder in first and re.search(rf"\b{re.escape(path.name)}\b", " ".join(rest)) for first, *rest in cells
            )
        if not named:
            unnamed.append(str(relative))
    assert not unnamed, f"{ARCHITECTURE.name}: the module table does not name {unnamed}"
