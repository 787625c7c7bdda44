"""Every ``event=`` the code logs has a row, with its level, in the events table of docs/worker.md.

The events are read from the source (each string that starts a log line with ``event=NAME``),
so a new event fails here until the table lists it, and a row left for an event the code no
longer logs fails too. No database needed.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "background_tasks"
WORKER_MD = ROOT / "docs" / "worker.md"

# The logger methods whose level is in their name; ``exception()`` logs at ERROR.
_LEVELS = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "error": "ERROR",
    "exception": "ERROR",
    "critical": "CRITICAL",
}
_NAME = re.compile(r"event=(?P<name>[a-z][a-z0-9_]*)(?=\s|$)")


@dataclass(frozen=True)
class Logged:
    """One place in the source that logs an event."""

    name: str
    #: None when the level is chosen at run time (``logger.log(level, ...)``).
    level: str | None
    where: str


def _message_start(node: ast.AST) -> str | None:
    """The leading literal text of a string or f-string node, or None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        first = node.values[0] if node.values else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
        return ""
    return None


def _scan() -> tuple[list[Logged], list[str]]:
    """Return the events logged in the package, and the places whose event name is not literal."""
    logged: list[Logged] = []
    dynamic: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        levels: dict[int, str] = {}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _LEVELS
                and node.args
            ):
                levels[id(node.args[0])] = _LEVELS[node.func.attr]
        for node in ast.walk(tree):
            text = _message_start(node)
            if text is None or not text.startswith("event="):
                continue
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            match = _NAME.match(text)
            if match is None:
                dynamic.append(where)
                continue
            logged.append(Logged(match["name"], levels.get(id(node)), where))
    return logged, dynamic


def _table() -> dict[str, str]:
    """Return event name -> Level cell of the events table under ``## Logging``."""
    page = WORKER_MD.read_text(encoding="utf-8")
    section = re.search(r"^## Logging\s*$(.*?)(?=^## |\Z)", page, re.M | re.S)
    assert section, "docs/worker.md has no '## Logging' section"
    lines = section.group(1).splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("| Event |")), None)
    assert header is not None, "no '| Event | Level | When | Keys |' table under ## Logging"
    assert [cell.strip() for cell in lines[header].strip("|").split("|")] == [
        "Event",
        "Level",
        "When",
        "Keys",
    ]
    rows: dict[str, str] = {}
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        name = cells[0].strip("`")
        assert name not in rows, f"{name} has two rows in the events table of docs/worker.md"
        rows[name] = cells[1]
    return rows


LOGGED, DYNAMIC = _scan()
# One case per event and level: an event logged from several places is checked once per level.
CASES = list({(entry.name, entry.level): entry for entry in LOGGED}.values())


def test_scan__finds_the_events_known_to_exist() -> None:
    # Guards the tests below against passing on an empty list.
    names = {entry.name for entry in LOGGED}
    assert {"worker_started", "task_failed", "reap_failed", "django_task_import_failed"} <= names
    assert len(names) >= 50


def test_logged_events__name_the_event_literally() -> None:
    # An event name filled in at run time ("event=%s") cannot be checked against the docs.
    assert not DYNAMIC, f"log lines whose event name is not written out: {DYNAMIC}"


@pytest.mark.parametrize("entry", CASES, ids=lambda entry: f"{entry.name}-{entry.level}")
def test_logged_event__has_a_row_with_its_level_in_docs_worker_md(entry: Logged) -> None:
    rows = _table()
    assert entry.name in rows, (
        f"event={entry.name} (logged at {entry.where}) has no row in the events table of "
        "docs/worker.md, ## Logging"
    )
    if entry.level is not None:
        assert entry.level in rows[entry.name], (
            f"event={entry.name} is logged at {entry.level} ({entry.where}), but its row in "
            f"docs/worker.md says {rows[entry.name]!r}"
        )


def test_events_table__lists_only_events_the_code_logs() -> None:
    stale = sorted(set(_table()) - {entry.name for entry in LOGGED})
    assert not stale, f"docs/worker.md lists events the code does not log: {stale}"
