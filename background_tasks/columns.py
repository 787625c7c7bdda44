"""Text that goes into the tables' columns: their lengths, and what every database stores.

The column lengths live here, read by the model fields and by the checks made at the call, so
that the two cannot disagree. SQLite stores a string of any length and any character;
PostgreSQL and MariaDB/MySQL do not, so a call is checked against the strictest of them and
fails the same way on all three.
"""

from __future__ import annotations

import re

#: Length of ``task_name`` (and of a schedule's name).
TASK_NAME_LENGTH = 255
#: Length of ``queue``.
QUEUE_LENGTH = 100
#: Length of ``verbose_name``.
VERBOSE_NAME_LENGTH = 255
#: Length of ``creator_object_id`` (the creator's primary key as text).
OBJECT_ID_LENGTH = 255

_SURROGATE = re.compile("[\ud800-\udfff]")
UNICODE_MAX = 0x10FFFF


def text_problem(value: str, max_length: int) -> str | None:
    """Return why ``value`` cannot be stored in a column of ``max_length``, or None."""
    if len(value) > max_length:
        return f"it is longer than {max_length} characters ({len(value)})"
    if "\x00" in value:
        return "it contains a NUL character (\\x00), which PostgreSQL cannot store"
    surrogate = _SURROGATE.search(value)
    if surrogate:
        return (
            f"it contains the lone surrogate {surrogate.group()!r}, which is not text "
            "(say, an undecodable file name from os.listdir()) and no database can store"
        )
    return None


def queue_problem(queue: object, *, blank: bool = False) -> str | None:
    """Return why ``queue`` is not a queue name, or None: the one check of every queue name.

    Callers prefix the answer with what they were checking (``queue must be ...``).
    ``blank`` allows "" where it means "the task's own queue" (a cron schedule's).
    """
    if not isinstance(queue, str) or not (queue or blank):
        kind = "a string" if blank else "a non-empty string"
        return f"must be {kind}, not {queue!r}"
    problem = text_problem(queue, QUEUE_LENGTH)
    return f"{queue[:80]!r} is refused: {problem}" if problem else None


def priority_problem(priority: object) -> str | None:
    """Return why ``priority`` is not a priority (an integer; ``True`` is not one), or None."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        return f"must be an integer, not {priority!r}"
    return None


def storable_text(text: str, max_code_point: int = UNICODE_MAX) -> str:
    """Return ``text`` as a text column can hold it, escaping what it cannot.

    NUL becomes ``\\x00`` (PostgreSQL refuses it), lone surrogates and characters above
    ``max_code_point`` (4-byte characters in a ``utf8mb3`` table) become ``\\udcff``-style
    escapes. Text the worker writes after a task ran must be written whatever it holds, or the
    outcome could never be recorded.
    """
    text = text.replace("\x00", "\\x00")
    if text.isascii():
        return text
    return "".join(
        char
        if ord(char) <= max_code_point and not 0xD800 <= ord(char) <= 0xDFFF
        else char.encode("unicode_escape").decode("ascii")
        for char in text
    )
