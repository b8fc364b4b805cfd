"""The package's folders show its architecture, and its imports keep to it (docs/conventions.md).

Every module under ``dbtools/`` is read with :mod:`ast`; every import counts, one inside a function
as much as one at the top (a function-level import only hides a cycle until the function runs).

Layers, bottom up:

* shared: ``dbtools/__init__.py``, ``errors``, ``paths``, ``retry``, ``uuid7`` and ``dbtools/db/``
  (engines, environments, procedure calls); they import no subpackage and not the CLI;
* the concerns: ``dbtools/deploy/`` (migrations, repeatable objects, types, offline scripts,
  privileges), ``dbtools/delta/`` (the delta runner, runs, report, sample data),
  ``dbtools/upsert/`` (entity specs, writers, COPY encoding, ingest) and ``dbtools/sync/`` (paged
  sync sessions and their sources); each imports the shared modules and itself, and not the
  others, but for :data:`ACROSS`;
* on top: ``commands`` (the library commands) and ``cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dbtools"

#: The top of the package, besides its shared modules: what sits above every concern.
TOP = frozenset({"dbtools.__main__", "dbtools.cli", "dbtools.commands"})
#: The concerns, one subpackage each.
CONCERNS = ("deploy", "delta", "upsert", "sync")
#: The shared modules and packages at the package's top level.
SHARED = ("dbtools", "dbtools.db", "dbtools.errors", "dbtools.paths", "dbtools.retry", "dbtools.uuid7")
#: The one way a concern reaches into another: deploying installs the entities' tables and renders
#: their procedures, so it reads the entity specs (and only them, not the writers).
ACROSS = {
    "dbtools.deploy": frozenset({"dbtools.upsert.specs"}),
    # Paged sync sessions load their pages through the bulk path: the specs, the writers' row
    # conversion and reject reasons, and the binary COPY encoding.
    "dbtools.sync": frozenset({"dbtools.upsert.specs", "dbtools.upsert.writers", "dbtools.upsert.pgcopy"}),
}


def module_names(package: Path) -> dict[str, Path]:
    """Every module under ``package``, by dotted name (a package by its ``__init__``)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imported(node: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of the package one import statement in module ``name`` names."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    # ``from dbtools.deploy import render`` names the module dbtools.deploy.render;
    # ``from dbtools import __version__`` names the package itself.
    found = {f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known}
    return found or {module}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports, anywhere in its body."""
    modules = module_names(package)
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets |= _imported(node, name, path.name == "__init__.py", known)
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules, the first repeated at the end), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph.get(node, ())):
            found = visit(target)
            if found:
                return found
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start)
        if found:
            return found
    return None


def place(module: str) -> str:
    """``top``, ``shared`` or the concern (subpackage) a module belongs to."""
    if module in TOP:
        return "top"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in CONCERNS:
        return parts[1]
    return "shared"


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes up or sideways: ``importer -> imported (why)``."""
    problems = []
    for importer, targets in sorted(graph.items()):
        where = place(importer)
        for target in sorted(targets):
            there = place(target)
            if where == "top" or there == "shared" or there == where:
                continue
            if there == "top":
                problems.append(f"{importer} -> {target} (nothing below the top imports the commands or the CLI)")
            elif where == "shared":
                problems.append(f"{importer} -> {target} (a shared module imports no concern)")
            elif target not in ACROSS.get(f"dbtools.{where}", ()):
                problems.append(f"{importer} -> {target} (dbtools.{where} does not import dbtools.{there})")
    return problems


# ----------------------------------------------------------------------------- the package


def test_every_module_is_read_with_its_function_level_imports():
    graph = import_graph()
    assert {"dbtools.cli", "dbtools.commands", "dbtools.deploy.render", "dbtools.upsert.specs"} <= set(graph)
    # commands imports the runner and the report inside functions only.
    assert {"dbtools.delta.runner", "dbtools.delta.report"} <= graph["dbtools.commands"]
    # ``from . import __version__`` in a subpackage's module is an import of the package itself.
    assert "dbtools" in graph["dbtools.deploy.render"]


def test_the_top_level_holds_only_the_cli_the_commands_the_shared_modules_and_the_concerns():
    top_level = {name for name in module_names(PACKAGE) if name.count(".") <= 1}
    assert top_level == set(TOP) | set(SHARED) | {f"dbtools.{c}" for c in CONCERNS}


def test_the_import_graph_has_no_cycle():
    assert find_cycle(import_graph()) is None


def test_imports_go_down_only_shared_below_the_concerns_below_the_commands_and_the_cli():
    assert layering_violations(import_graph()) == []


def test_rendering_reads_entity_specs_without_deploying_them():
    # What broke the old cycle: specs (parsing) know nothing of rendering, repeatable objects or
    # types; only dbtools.deploy.entities (their tables and row types) builds on those.
    graph = import_graph()
    assert not graph["dbtools.upsert.specs"] & {m for m in graph if m.startswith("dbtools.deploy")}
    assert "dbtools.deploy.entities" not in graph["dbtools.deploy.render"]


# ----------------------------------------------------------------------------- the checks can fail


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "dbtools" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "dbtools"


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    package = _package(tmp_path, {
        "__init__.py": "",
        "deploy/__init__.py": "",
        "deploy/render.py": "def objects():\n    from .types import create_type\n",
        "deploy/types.py": "from .repeatable import sql_text\n",
        "deploy/repeatable.py": "from dbtools.deploy import render\n",
    })
    assert find_cycle(import_graph(package)) == [
        "dbtools.deploy.render", "dbtools.deploy.types", "dbtools.deploy.repeatable", "dbtools.deploy.render"]


def test_an_upward_or_sideways_import_is_named(tmp_path):
    package = _package(tmp_path, {
        "__init__.py": "",
        "errors.py": "def fail():\n    from .deploy.render import objects\n",
        "commands.py": "",
        "deploy/__init__.py": "",
        "deploy/render.py": "from ..upsert.specs import EntitySpec\nfrom ..upsert import writers\n",
        "delta/__init__.py": "",
        "delta/runner.py": "from dbtools.commands import job_engine\n",
        "upsert/__init__.py": "",
        "upsert/specs.py": "",
        "upsert/writers.py": "from ..delta import runner\n",
    })
    assert find_cycle(import_graph(package)) is None
    assert layering_violations(import_graph(package)) == [
        "dbtools.delta.runner -> dbtools.commands (nothing below the top imports the commands or the CLI)",
        "dbtools.deploy.render -> dbtools.upsert.writers (dbtools.deploy does not import dbtools.upsert)",
        "dbtools.errors -> dbtools.deploy.render (a shared module imports no concern)",
        "dbtools.upsert.writers -> dbtools.delta.runner (dbtools.upsert does not import dbtools.delta)",
    ]
