"""Printing helpers of the management commands: JSON, tables, times, escaped stored text.

Stored data (task names, errors, arguments) is escaped before it is printed, so that it cannot
drive the operator's terminal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.utils import timezone

from background_tasks.models import CompletedTask, Task


def record(obj: Task | CompletedTask, now: datetime) -> dict[str, Any]:
    """Return every field of a task row as JSON-ready values, plus its derived state."""
    data: dict[str, Any] = {}
    for model_field in obj._meta.concrete_fields:
        value = getattr(obj, model_field.attname)
        if model_field.related_model is ContentType and value is not None:
            content_type = ContentType.objects.db_manager(obj._state.db).get_for_id(value)
            value = f"{content_type.app_label}.{content_type.model}"
        data[model_field.name] = value
    if isinstance(obj, Task):
        data["status"] = str(obj.state_at(now))
    else:
        data["duration_seconds"] = obj.duration
    return data


class _Encoder(DjangoJSONEncoder):
    def default(self, o: Any) -> Any:
        # Full precision: DjangoJSONEncoder cuts datetimes to milliseconds.
        return o.isoformat() if isinstance(o, datetime) else super().default(o)


def to_json(value: Any) -> str:
    """Return ``value`` as indented JSON, readable text kept, control characters escaped.

    ``ensure_ascii=False`` keeps "é" readable but leaves C1 controls (U+0080-U+009F, such as
    U+009B, a terminal's CSI), line separators and other non-printable characters raw; those
    are escaped as ``\\uXXXX`` (outside strings the output holds only printable characters).
    """
    text = json.dumps(value, cls=_Encoder, indent=2, ensure_ascii=False)
    return "".join(
        char if char.isprintable() or char == "\n" else _json_escape(char) for char in text
    )


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON spells characters past U+FFFF
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def printable(text: str, *, multiline: bool = False) -> str:
    """Escape control characters, so that stored data cannot drive the operator's terminal."""
    kept = "\n\t" if multiline else ""
    return "".join(
        char
        if char.isprintable() or char in kept
        else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], max_width: int = 60
) -> list[str]:
    """Lay ``rows`` out in left-aligned columns under ``headers``; long cells are cut short."""

    def cell(value: object) -> str:
        text = printable("-" if value is None or value == "" else str(value))
        return text if len(text) <= max_width else text[: max_width - 3] + "..."

    cells = [[cell(value) for value in row] for row in rows]
    widths = [
        max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)
    ]
    lines = [[*headers], *cells]
    return [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]


def nothing_matches(what: str, options: dict[str, Any], everything: QuerySet[Any]) -> str:
    """Say that nothing was found, and what was searched when filters were given."""
    filters = [f"--{key} {options[key]}" for key in ("queue", "status", "name") if options.get(key)]
    if not filters:
        return f"No {what}s."
    searched = " ".join(filters)
    if options.get("name"):
        searched += f" (the name {options['name']!r} or a name ending in '.{options['name']}')"
    return f"No {what} matches {searched}; there are {everything.count()} {what}(s) in all."


def ids(values: list[int]) -> str:
    return ", ".join(str(pk) for pk in values)


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def plain(value: Any) -> str:
    """One field's value on one line: "-" for nothing, ISO times, compact JSON."""
    if value is None or value == "":
        return "-"
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    if isinstance(value, (dict, list)):
        return json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False)
    return str(value)
