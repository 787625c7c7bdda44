"""Reference tables read from the code: settings, command options and system check ids.

The documentation site's build (mkdocs.yml ``hooks:``) replaces a marker such as
``<!-- reference: settings -->`` in a page with the table rendered here, so those lists cannot
drift from the code. ``tests/test_docs_reference.py`` uses the same functions to fail when a
setting, an option or a check id has no entry in the hand-written pages. Nothing here imports
MkDocs.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "background_tasks"
COMMANDS = ("process_tasks", "background_tasks")

MARKER = re.compile(r"<!-- reference: (?P<what>[a-z-]+) -->")
_CHECK_ID = re.compile(r"""id=["'](background_tasks\.[EW]\d{3})["']""")
_SETTING_COMMENT = re.compile(r"^\s*#: (?P<text>.+)$")
_SETTING_LINE = re.compile(r"^\s*(?P<name>[A-Z][A-Z_]+)\b[^=]*= Setting\(")


@dataclass(frozen=True)
class SettingEntry:
    name: str
    default: str
    legacy: str
    meaning: str


@dataclass(frozen=True)
class OptionEntry:
    command: str  # "process_tasks" or "background_tasks prune"
    flags: tuple[str, ...]  # ("--queue",) or ("ID",) for a positional argument
    metavar: str
    default: str
    help: str


@dataclass(frozen=True)
class CheckEntry:
    id: str
    level: str
    module: str


def setup_django() -> None:
    """Configure a minimal project when none is, so the commands' parsers can be built."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["django.contrib.contenttypes", "background_tasks"],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            USE_TZ=True,
        )
    django.setup()


def settings_entries() -> list[SettingEntry]:
    """Return every setting of ``conf.Settings`` with its default, legacy name and meaning."""
    from background_tasks.conf import PREFIX, Setting, Settings

    comments = _setting_comments()
    entries = []
    for name, value in vars(Settings).items():
        if isinstance(value, Setting):
            entries.append(
                SettingEntry(
                    name=value.setting_name,
                    default=repr(value.default),
                    legacy=value.legacy or "",
                    meaning=comments.get(name, ""),
                )
            )
    concurrency = Settings.__dict__["CONCURRENCY"]
    entries.append(
        SettingEntry(
            name=PREFIX + "CONCURRENCY",
            default="1",
            legacy="BACKGROUND_TASK_RUN_ASYNC, BACKGROUND_TASK_ASYNC_THREADS",
            meaning=(concurrency.__doc__ or "").strip(),
        )
    )
    return entries


def _setting_comments() -> dict[str, str]:
    # The ``#:`` comment above each ``NAME = Setting(...)`` line of conf.py is its meaning.
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in (PACKAGE_DIR / "conf.py").read_text(encoding="utf-8").splitlines():
        if comment := _SETTING_COMMENT.match(line):
            pending.append(comment["text"])
        elif setting := _SETTING_LINE.match(line):
            comments[setting["name"]] = " ".join(pending)
            pending = []
        else:
            pending = []
    return comments


def option_entries() -> list[OptionEntry]:
    """Return every option and argument of the management commands, subcommands included."""
    from django.core.management import BaseCommand, load_command_class

    setup_django()
    common = _option_strings(BaseCommand().create_parser("manage.py", "command"))
    entries: list[OptionEntry] = []
    for name in COMMANDS:
        parser = load_command_class("background_tasks", name).create_parser("manage.py", name)
        entries.extend(_parser_entries(name, parser, common))
    return entries


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def _parser_entries(
    command: str, parser: argparse.ArgumentParser, common: set[str]
) -> list[OptionEntry]:
    entries: list[OptionEntry] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub_parser in action.choices.items():
                entries.extend(_parser_entries(f"{command} {sub_name}", sub_parser, common))
            continue
        if set(action.option_strings) & common or isinstance(action, argparse._HelpAction):
            continue
        if action.help == argparse.SUPPRESS:  # hidden from --help, so from the reference too
            continue
        flags = tuple(action.option_strings) or (str(action.metavar or action.dest),)
        default = action.default
        shown_default = "" if default in (None, False, [], argparse.SUPPRESS) else repr(default)
        entries.append(
            OptionEntry(
                command=command,
                flags=flags,
                metavar=_metavar(action),
                default=shown_default,
                help=(action.help or "").replace("%%", "%"),
            )
        )
    return entries


def _metavar(action: argparse.Action) -> str:
    if not action.option_strings or action.nargs == 0:
        return ""
    if action.metavar:
        return str(action.metavar)
    if action.choices:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper()


def check_entries() -> list[CheckEntry]:
    """Return every system check id in the package's source, in id order."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for check_id in _CHECK_ID.findall(path.read_text(encoding="utf-8")):
            found.setdefault(check_id, path.relative_to(PACKAGE_DIR.parent).as_posix())
    return [
        CheckEntry(id=check_id, level="Error" if ".E" in check_id else "Warning", module=module)
        for check_id, module in sorted(found.items())
    ]


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def settings_markdown() -> str:
    rows = [
        "| Setting | Default | Legacy name | Meaning |",
        "|---|---|---|---|",
    ]
    for entry in settings_entries():
        legacy = ", ".join(_code(name.strip()) for name in entry.legacy.split(",") if name)
        rows.append(
            f"| `{entry.name}` | `{_cell(entry.default)}` | {legacy} | {_cell(entry.meaning)} |"
        )
    return "\n".join(rows)


def options_markdown() -> str:
    blocks: list[str] = []
    current = None
    for entry in option_entries():
        if entry.command != current:
            current = entry.command
            blocks.append(f"\n### `{current}`\n")
            blocks.append("| Option | Value | Default | Help |")
            blocks.append("|---|---|---|---|")
        flags = ", ".join(f"`{flag}`" for flag in entry.flags)
        blocks.append(
            f"| {flags} | {_code(_cell(entry.metavar))} | {_code(_cell(entry.default))} "
            f"| {_cell(entry.help)} |"
        )
    return "\n".join(blocks).strip()


def checks_markdown() -> str:
    rows = ["| Id | Level | Defined in |", "|---|---|---|"]
    rows += [f"| `{e.id}` | {e.level} | `{e.module}` |" for e in check_entries()]
    return "\n".join(rows)


RENDERERS = {
    "settings": settings_markdown,
    "options": options_markdown,
    "checks": checks_markdown,
}


def expand_markers(markdown: str) -> str:
    """Replace each ``<!-- reference: NAME -->`` marker with its generated table."""

    def render(match: re.Match[str]) -> str:
        what = match["what"]
        if what not in RENDERERS:
            raise ValueError(f"unknown reference marker {what!r}; known: {sorted(RENDERERS)}")
        return RENDERERS[what]()

    return MARKER.sub(render, markdown)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs hook: expand the reference markers of a page."""
    return expand_markers(markdown)
