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
    assert {"background_tasks.E001", "background_tasks.W002", "background_tasks.E101"} <= {
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
    assert "| `background_tasks.E001` | Error |" in expanded


def test_expand_markers__an_unknown_marker_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown reference marker 'setings'"):
        reference.expand_markers("<!-- reference: setings -->")
