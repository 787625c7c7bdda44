"""Argument types of the management commands: each raises ArgumentTypeError naming the bad value.

Also the few parser set-ups the ``background_tasks`` subcommands share (``--json``, ``--limit``,
``--name``, status choices), so that each subcommand is declared in a few lines.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from django.core.management.base import CommandParser

from background_tasks.models import CompletedTask

#: Largest count an option takes (a 32-bit signed integer): any more is a typo, and a
#: database refuses a LIMIT past its integer range.
MAX_COUNT = 2**31 - 1
#: Largest task id: ids are 64-bit signed integers on every supported database.
MAX_ID = 2**63 - 1
#: Default of ``--limit``.
DEFAULT_LIMIT = 50
#: Choices of ``--status`` for completed tasks.
COMPLETED_STATUSES = tuple(str(value) for value in CompletedTask.Status.values)
NAME_HELP = "Only tasks of this name (the full name, or its last dotted part(s))."


def _whole_number(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def positive_int(text: str) -> int:
    value = _whole_number(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{text!r} is too large: the most is {MAX_COUNT}")
    return value


def task_id(text: str) -> int:
    value = _whole_number(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"invalid id {text!r}: expected a whole number >= 1")
    if value > MAX_ID:
        raise argparse.ArgumentTypeError(f"invalid id {text!r}: ids go up to {MAX_ID}")
    return value


def days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not 0 <= value < 1_000_000:  # also rejects nan and inf
        raise argparse.ArgumentTypeError(f"expected a number of days >= 0, got {text!r}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < 10**9:  # also rejects nan and inf
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def non_empty(what: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"a {what} cannot be empty")
        return text.strip()

    convert.__name__ = what  # argparse names the type in some messages
    return convert


def one_of(
    what: str, choices: Sequence[str], aliases: dict[str, str] | None = None
) -> Callable[[str], str]:
    """Accept one of ``choices``; a key of ``aliases`` is accepted and turned into its value."""
    aliases = aliases or {}

    def convert(text: str) -> str:
        if text in aliases:
            return str(aliases[text])
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"invalid {what} {text!r}: expected one of {', '.join(choices)}"
            )
        return text

    convert.__name__ = what
    return convert


# --------------------------------------------------------------------------------------------
# Shared parser set-up
# --------------------------------------------------------------------------------------------


def add_ids(parser: CommandParser, nargs: str = "+", text: str | None = None) -> None:
    parser.add_argument("ids", type=task_id, nargs=nargs, metavar="ID", help=text)


def add_name(parser: CommandParser, text: str = NAME_HELP) -> None:
    parser.add_argument("--name", type=non_empty("task name"), help=text)


def add_limit(parser: CommandParser) -> None:
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"Show at most N rows (default: {DEFAULT_LIMIT}).",
    )


def add_status(
    parser: CommandParser,
    choices: Sequence[str],
    text: str,
    *,
    aliases: dict[str, str] | None = None,
    repeat: bool = False,
) -> None:
    """Add ``--status`` taking one of ``choices`` (``repeat``: as often as wanted, into a list)."""
    convert, metavar = one_of("status", choices, aliases), "{" + ",".join(choices) + "}"
    if repeat:
        parser.add_argument(
            "--status", type=convert, action="append", default=[], metavar=metavar, help=text
        )
    else:
        parser.add_argument("--status", type=convert, metavar=metavar, help=text)


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value
