"""Every setting, command option and system check id read from the code has a docs entry.

The lists come from ``docs_hooks/reference.py``, the same code that renders the reference pages
of the documentation site, so a new setting, flag or check id fails here until the hand-written
page that explains it mentions it. No MkDocs needed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from docs_hooks import reference

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _section(markdown: str, heading: str) -> str:
    """Return the text under ``## heading`` up to the next heading of level 2."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"no '## {heading}' section"
    return match.group(1)


SETTINGS = reference.settings_entries()
OPTIONS = [entry for entry in reference.option_entries() if entry.flags[0].startswith("-")]
CHECKS = reference.check_entries()


def test_introspection__finds_the_settings_options_and_checks_known_to_exist() -> None:
    # Guards the tests below against passing on an empty list.
    assert {"BACKGROUND_TASKS_MAX_ATTEMPTS", "BACKGROUND_TASKS_CONCURRENCY"} <= {
        entry.name for entry in SETTINGS
    }
    assert ("process_tasks", "--burst") in {(e.command, e.flags[0]) for e in OPTIONS}
    assert ("background_tasks prune", "--older-than") in {(e.command, e.flags[0]) for e in OPTIONS}
    assert {"background_tasks.E002", "background_tasks.W002", "background_tasks.E101"} <= {
        entry.id for entry in CHECKS
    }


@pytest.mark.parametrize("entry", SETTINGS, ids=lambda entry: entry.name)
def test_setting__has_a_row_with_its_default_in_docs_settings(
    entry: reference.SettingEntry,
) -> None:
    rows = [
        line for line in _page("settings.md").splitlines() if line.startswith(f"| `{entry.name}`")
    ]
    assert rows, f"{entry.name} has no row in docs/settings.md"


@pytest.mark.parametrize(
    "entry", OPTIONS, ids=lambda entry: f"{entry.command} {entry.flags[0]}".replace(" ", "-")
)
def test_command_option__is_documented_in_its_commands_page(entry: reference.OptionEntry) -> None:
    if entry.command == "process_tasks":
        where, text = "docs/worker.md, ## Options", _section(_page("worker.md"), "Options")
    else:
        subcommand = entry.command.split()[1]
        where, text = f"docs/cli.md, ## {subcommand}", _section(_page("cli.md"), subcommand)
    # In the prose, a table or the usage line at the top of the section.
    assert re.search(rf"(?<![\w-]){re.escape(entry.flags[0])}(?![\w-])", text), (
        f"{entry.command} {entry.flags[0]} is not documented in {where}"
    )


@pytest.mark.parametrize("entry", CHECKS, ids=lambda entry: entry.id)
def test_check_id__has_a_row_in_the_docs(entry: reference.CheckEntry) -> None:
    pages = {"settings.md": _page("settings.md"), "django-tasks.md": _page("django-tasks.md")}
    documented = [
        name
        for name, text in pages.items()
        if any(line.startswith(f"| `{entry.id}`") for line in text.splitlines())
    ]
    assert documented, f"{entry.id} has no row in the check tables of docs/settings.md"


def test_expand_markers__replaces_each_marker_with_its_table() -> None:
    page = "# Settings\n\n<!-- reference: settings -->\n\n<!-- reference: checks -->\n"

    expanded = reference.expand_markers(page)

    assert "<!-- reference" not in expanded
    assert "| `BACKGROUND_TASKS_MAX_ATTEMPTS` | `25` | `MAX_ATTEMPTS` |" in expanded
    assert "| `background_tasks.E002` | Error |" in expanded


def test_expand_markers__an_unknown_marker_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown reference marker 'setings'"):
        reference.expand_markers("<!-- reference: setings -->")


# ---------------------------------------------------------------------------
# Every public name has an API reference entry
# ---------------------------------------------------------------------------

_DIRECTIVE = re.compile(r"^::: (?P<path>[\w.]+)\s*$(?P<options>(?:\n {4}.*)*)", re.M)


def _directives() -> dict[str, str]:
    """Return each ``::: path`` of the reference pages with its indented options."""
    found: dict[str, str] = {}
    for page in sorted((DOCS / "reference").glob("*.md")):
        for match in _DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            found[match["path"]] = match["options"]
    return found


def _documented_names() -> set[str]:
    """Return the dotted names the reference renders: each target, and listed members."""
    names = set()
    for path, options in _directives().items():
        names.add(path)
        members = re.search(r"members: \[(?P<names>[^\]]*)\]", options)
        if members:
            names.update(f"{path}.{name.strip()}" for name in members["names"].split(","))
    return names


def _public_names() -> list[str]:
    """Return the dotted path, where it is defined, of every name the docs call public."""
    from django.dispatch import Signal

    import background_tasks
    from background_tasks import exceptions, signals

    names = []
    for name in background_tasks.__all__:
        if name == "__version__":
            continue
        value = getattr(background_tasks, name)
        module = getattr(value, "__module__", None)
        if name == "registry":
            module = "background_tasks.registry"
        names.append(f"{module}.{name}")
    names += [
        f"background_tasks.exceptions.{name}"
        for name, value in vars(exceptions).items()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == exceptions.__name__
    ]
    names += [
        f"background_tasks.signals.{name}"
        for name, value in vars(signals).items()
        if isinstance(value, Signal)
    ]
    names += [
        f"background_tasks.models.{name}"
        for name in ("Task", "CompletedTask", "Schedule", "Worker")
    ]
    names += [
        "background_tasks.task_function.TaskFunction.now",
        "background_tasks.periodic.periodic",
        "background_tasks.testing.run_tasks",
        "background_tasks.conf.Settings",
        "background_tasks.backends.DatabaseBackend",
    ]
    return names


@pytest.mark.parametrize("name", _public_names())
def test_public_name__has_an_entry_in_the_api_reference(name: str) -> None:
    documented = _documented_names()
    covered = any(name == entry or name.startswith(entry + ".") for entry in documented)
    # A whole module rendered without a members list documents all of its names.
    assert covered, f"{name} has no '::: {name}' entry in docs/reference/"


def _defines(module_name: str, attribute: str) -> bool:
    """Whether ``module_name`` defines ``attribute``, read from its source without importing it.

    Used for a module that cannot be imported here: the django.tasks backend needs Django 6.
    """
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return False
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == attribute:
            return True
        if isinstance(node, ast.ImportFrom) and any(
            (alias.asname or alias.name) == attribute for alias in node.names
        ):
            return True  # a re-export, as backends.py re-exports the bridge's backend
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(target, ast.Name) and target.id == attribute for target in targets):
            return True
    return False


def test_reference_directives__name_objects_that_exist() -> None:
    import importlib
    import importlib.util

    missing = []
    for path in _directives():
        if importlib.util.find_spec(path.split(".")[0]) is None:
            missing.append(path)
            continue
        module_name, _, attribute = path.rpartition(".")
        try:
            importlib.import_module(path)
            continue
        except Exception:  # not a module: an attribute of one (or a module needing Django 6)
            pass
        try:
            found = hasattr(importlib.import_module(module_name), attribute)
        except ImportError:
            found = False
        except Exception:  # a module that needs a newer Django: read its source
            found = _defines(module_name, attribute)
        if not found:
            missing.append(path)
    assert not missing, f"reference entries for names that do not exist: {missing}"
