"""The package's imports form no circle, and no module imports one of a higher layer.

The import graph is read from the source with ``ast`` (nothing is imported): every ``import``
and ``from ... import`` of a module of the package counts, at module level or inside a function,
since a function-level import that only hides a circle is still a circle. Imports under
``if TYPE_CHECKING:`` are for annotations only and never run, so they do not count; nor do
imports of the package itself (``from background_tasks import __version__``), which Python runs
before any of its modules anyway.

The layer table is the one in docs/design.md, lowest first.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "background_tasks"
DESIGN = ROOT / "docs" / "design.md"

#: Lowest first. A module may import modules of its own layer or of lower ones, never higher.
#: A name ending in ".*" covers a subpackage and its modules.
LAYERS: list[tuple[str, set[str]]] = [
    (
        "policy",
        {
            "conf",
            "exceptions",
            "signals",
            "outcomes",
            "exit_codes",
            "timing",
            "timezones",
            "retry",
            "serialization",
            "columns",
            "installed",
            "schema",
            "outage",
            "deadlocks",
            "memory",
            "logs",
            "worker_logging",
        },
    ),
    (
        "storage",
        {
            "models",
            "states",
            "claims",
            "claimed_rows",
            "archive_sql",
            "short_transactions",
            "connection_reuse",
            "charsets",
            "isolation",
            "wakeup",
            "packets",
            "bulk_insert",
            "task_progress",
            "retention",
            "outcome_hours",
        },
    ),
    (
        "lifecycle",
        {
            "registry",
            "options",
            "task_function",
            "task_rows",
            "enqueue",
            "bulk",
            "lifecycle",
            "recording",
            "execution",
            "periodic",
            "liveness",
            "health",
            "schedule_control",
            "legacy_import",
            "operations",
        },
    ),
    (
        "worker",
        {
            "worker",
            "runner",
            "held_outcomes",
            "claimed_ahead",
            "database_wait",
            "supervisor",
            "child",
        },
    ),
    (
        "interfaces",
        {
            "decorator",
            "apps",
            "checks",
            "tasks",
            "testing",
            "overview",
            "backends",
            "django_tasks.*",
            "admin.*",
            "management.*",
        },
    ),
]

#: Upward imports still to be removed, each with its reason. The test fails when one is gone
#: (take it off this list) as much as when a new one appears.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    """Dotted names relative to the package ("registry", "admin.tasks"), migrations left out."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[0] == "migrations":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join(parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(sub) for sub in ast.walk(child))
    return skipped


def _imported(node: ast.Import | ast.ImportFrom, package: str, modules: set[str]) -> Iterator[str]:
    """Yield the package's modules an import statement names (relative to the package)."""
    if isinstance(node, ast.Import):
        bases = [alias.name for alias in node.names]
        names: list[str] = []
    else:
        base = node.module or ""
        if node.level:
            parent = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parent + ([base] if base else []))
        bases = [base]
        names = [f"{base}.{alias.name}" for alias in node.names]
    for name in [*names, *bases]:
        if name.startswith("background_tasks."):
            relative = name.removeprefix("background_tasks.")
            if relative in modules:
                yield relative
                if name in names:
                    return  # "from x import module": the module, not its package


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        dotted = f"background_tasks.{name}"
        package = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skipped:
                targets.update(_imported(node, package, set(modules)))
        # A subpackage's modules run its __init__ first: an import of an ancestor says nothing.
        graph[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
    return graph


def layer_of(module: str) -> int:
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or (
                member.endswith(".*") and (module + ".").startswith(member[:-1])
            ):
                return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS here and in docs/design.md")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_import_graph__sees_function_level_imports() -> None:
    # A task function finds its rows through a function-level import of the models.
    assert "models" in import_graph()["task_function"]


def test_import_graph__has_no_circle_besides_the_known_upward_imports() -> None:
    graph = import_graph()
    for importer, imported in KNOWN_UPWARD:
        graph[importer].discard(imported)

    assert _cycles(graph) == []


def test_layers__every_module_has_one() -> None:
    for module in _modules():
        layer_of(module)


def test_layers__no_module_imports_a_higher_layer() -> None:
    upward = {
        (importer, imported)
        for importer, targets in import_graph().items()
        for imported in targets
        if layer_of(imported) > layer_of(importer)
    }

    assert upward == set(KNOWN_UPWARD)


def _design_map() -> str:
    text = DESIGN.read_text(encoding="utf-8")
    match = re.search(r"^## Module map\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "docs/design.md has no '## Module map' section"
    return match.group(1)


def test_design_map__comes_first_in_docs_design() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    first_section = re.search(r"^## (.+)$", text, re.M)

    assert first_section is not None and first_section.group(1) == "Module map"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_design_map__names_every_module_under_its_layer(module: str) -> None:
    sections = re.split(r"^### ", _design_map(), flags=re.M)[1:]
    layers = {
        section.split("\n", 1)[0].split()[0].rstrip(":").lower(): section for section in sections
    }
    layer_name = LAYERS[layer_of(module)][0]
    assert layer_name in layers, f"the module map has no '### {layer_name.title()}' section"
    path = module.replace(".", "/")
    shown = {f"`{path}.py`", f"`{path}/`", f"`{path}/__init__.py`"}

    assert any(name in layers[layer_name] for name in shown), (
        f"docs/design.md's module map does not list {module} under {layer_name}"
    )


def test_cycles__finds_a_circle_of_two_modules() -> None:
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
