"""MySQL/MariaDB's ``max_allowed_packet``: what a statement's values take to send, and the limit.

The server refuses a statement larger than its ``max_allowed_packet`` and drops the connection;
the client is told so with an error it cannot tell from an outage (1153, or "server has gone
away" when the server closed first). So statements that may be large are measured before they
are sent: the history row of a finished task (``archive_sql``), the rows of a bulk enqueue
(``bulk_insert``), which are also split into statements that fit.

The driver sends each value as an escaped literal in the statement's text. A quick bound on
that size, without converting anything, serves for most values: at most 2 bytes per ASCII
character (escaped), at most 4 per other character (never escaped, at most 4 bytes in UTF-8).
Values whose bound says they might not fit are measured exactly, as the driver escapes them.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any

from django.db import DataError

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

#: The most bytes the SQL text of a statement takes beyond its values, with room to spare: the
#: table and column names, the clauses around the values.
SQL_ALLOWANCE = 16 * 1024

#: Beyond its escaped characters, the most a value takes: its quotes (or ``_binary''``), the
#: comma and space after it, a row's parentheses shared out.
_PER_VALUE = 16
#: The most a value of a type of known short literal takes, separators included.
_SHORT = 64
_SHORT_TYPES = (int, float, datetime, date, time, type(None))

#: ``max_allowed_packet`` per connection to the server (the driver's connection object, so that
#: a new connection reads it again), read on first use.
_limits: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def packet_limit(connection: BaseDatabaseWrapper) -> int:
    """Return the server's ``max_allowed_packet``, read once per connection."""
    connection.ensure_connection()
    raw = connection.connection
    limit = _limits.get(raw)
    if limit is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@max_allowed_packet")
            limit = _limits[raw] = int(cursor.fetchone()[0])
    return limit


def size_bound(values: Iterable[Any]) -> int | None:
    """Return the most bytes ``values`` take in a statement, without converting any.

    None if a value is of a type whose literal has no bound known here: measure it with
    ``sent_size()``.
    """
    total = 0
    for value in values:
        if isinstance(value, str):
            total += (2 if value.isascii() else 4) * len(value) + _PER_VALUE
        elif isinstance(value, (bytes, bytearray)):
            total += 2 * len(value) + _PER_VALUE
        elif isinstance(value, _SHORT_TYPES):
            total += _SHORT
        else:
            return None
    return total


def sent_size(connection: BaseDatabaseWrapper, values: Sequence[Any]) -> int:
    """Return the bytes ``values`` take in a statement, as the driver escapes them."""
    connection.ensure_connection()
    literal = connection.connection.literal
    return sum(len(literal(value)) for value in values) + _PER_VALUE * len(values)


def checked_size(
    connection: BaseDatabaseWrapper, values: Sequence[Any], what: str, bound: int | None = None
) -> int:
    """Return at least the bytes ``values`` take in a statement; refuse them if too large.

    The quick bound (``bound``, when the caller has it) where a statement of ``values`` alone
    fits ``max_allowed_packet`` with it, else their exact size. Raise DataError naming ``what``
    if that statement cannot be sent at all.
    """
    room = packet_limit(connection) - SQL_ALLOWANCE
    if bound is None:
        bound = size_bound(values)
    if bound is not None and bound <= room:
        return bound
    size = sent_size(connection, values)
    if size > room:
        raise DataError(
            f"{what} would take about {size + SQL_ALLOWANCE:,} bytes to send, more than the "
            f"database's max_allowed_packet ({room + SQL_ALLOWANCE:,} bytes)"
        )
    return size
