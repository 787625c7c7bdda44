"""What the queue tables' text columns hold on each database, and text made storable there.

Only MariaDB/MySQL can have tables that hold less than all of Unicode; their character sets are
read from ``information_schema`` (the only vendor SQL outside ``claims.py``).
"""

from __future__ import annotations

import logging

from .columns import UNICODE_MAX, storable_text

logger = logging.getLogger("background_tasks")

# The highest code point each MariaDB/MySQL character set holds; any other set is taken as
# holding ASCII only, which is always safe.
_CHARSET_MAX = {"utf8mb4": 0x10FFFF, "utf8mb3": 0xFFFF, "utf8": 0xFFFF}
# Per database alias, read on first use: tables do not change character set under a process.
_max_code_points: dict[str, int] = {}


def max_code_point(using: str) -> int:
    """Return the highest code point the text columns of the queue tables hold on ``using``.

    Only MariaDB/MySQL can have tables that hold less than all of Unicode: a database created
    with ``utf8`` (which is ``utf8mb3``) keeps its tables so, whatever charset the connection
    uses. A connection opened with ``OPTIONS={"charset": "utf8"}`` cannot send such characters
    either, whatever the tables hold: its character set counts too. Read once per process and
    database; ``forget_charsets()`` clears it.
    """
    from django.db import connections

    connection = connections[using]
    if connection.vendor != "mysql":
        return UNICODE_MAX
    if using not in _max_code_points:
        charsets = table_charsets(using)
        if not charsets:
            return UNICODE_MAX  # no tables yet: nothing to write to, nothing to remember
        charsets.add(connection.connection.character_set_name().lower())
        _max_code_points[using] = min(_CHARSET_MAX.get(name, 0x7F) for name in charsets)
    return _max_code_points[using]


def table_charsets(using: str) -> set[str]:
    """Return the character sets of the text columns of the queue tables (MariaDB/MySQL)."""
    from django.db import connections

    from .models import CompletedTask, Task

    tables = [Task._meta.db_table, CompletedTask._meta.db_table]
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT LOWER(CHARACTER_SET_NAME) FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (%s, %s) "
            "AND CHARACTER_SET_NAME IS NOT NULL",
            tables,
        )
        return {row[0] for row in cursor.fetchall()}


def forget_charsets() -> None:
    """Forget the character sets read so far (after the tables were converted)."""
    _max_code_points.clear()


def storable_for(using: str, text: str, *, what: str, task_id: object) -> str:
    """Return ``text`` made storable on ``using``; log the original when it had to change."""
    stored = storable_text(text, max_code_point(using))
    if stored != text:
        logger.warning(
            "event=text_escaped task_id=%s field=%s reason=%s original=%r",
            task_id,
            what,
            "not storable as is in this database's text columns",
            text,
        )
    return stored
