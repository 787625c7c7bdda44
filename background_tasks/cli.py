"""What ``manage.py background_tasks`` does: argument types, queries, operator actions.

The command module only parses and prints; everything that reads or changes rows is here, as
small functions returning plain values, so that each one is testable on its own.

Operator actions never wait for a row another transaction has locked (a worker claiming or
finalizing it, an admin action): they lock the rows they change with ``SKIP LOCKED`` where the
database has it, and report the rows they skipped as busy. SQLite has no row locks; there a
write waits for the database lock instead (up to its busy timeout), as every writer does.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, models, router, transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from . import isolation, lifecycle
from .conf import app_settings
from .logs import shown
from .models import CompletedTask, Task, Worker
from .options import options_of
from .registry import registry

logger = logging.getLogger("background_tasks")

#: States of a live task; each row is in exactly one. "failing": waiting for its retry
#: after a failed attempt (its run_at is the retry time), whether that time has come or not.
#: "quarantined": set aside because it cannot be loaded or recorded (see isolation.py).
LIVE_STATUSES = ("ready", "scheduled", "running", "failing", "quarantined")
COMPLETED_STATUSES = tuple(str(value) for value in CompletedTask.Status.values)
#: Completed tasks read per query by ``retry`` (keeps ``IN`` lists short on every database).
RETRY_CHUNK = 500

# --------------------------------------------------------------------------------------------
# Argument types: each raises ArgumentTypeError naming the bad value.
# --------------------------------------------------------------------------------------------


#: Largest count an option takes (a 32-bit signed integer): any more is a typo, and a
#: database refuses a LIMIT past its integer range.
MAX_COUNT = 2**31 - 1
#: Largest task id: ids are 64-bit signed integers on every supported database.
MAX_ID = 2**63 - 1


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


def non_empty(what: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"a {what} cannot be empty")
        return text.strip()

    convert.__name__ = what  # argparse names the type in some messages
    return convert


def one_of(what: str, choices: Sequence[str]) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"invalid {what} {text!r}: expected one of {', '.join(choices)}"
            )
        return text

    convert.__name__ = what
    return convert


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _using() -> str:
    return router.db_for_write(Task)


def live_status_q(status: str, now: datetime) -> Q:
    """Return the filter selecting live tasks in ``status`` (one of LIVE_STATUSES)."""
    waiting = Q(locked_by__isnull=True)
    if status == "quarantined":
        return Q(locked_by=isolation.QUARANTINED)
    if status == "running":
        return Q(locked_by__isnull=False) & ~Q(locked_by=isolation.QUARANTINED)
    if status == "failing":
        return waiting & ~Q(last_error="")
    fresh = waiting & Q(last_error="")
    if status == "ready":
        return fresh & Q(run_at__lte=now)
    if status == "scheduled":
        return fresh & Q(run_at__gt=now)
    raise ValueError(f"unknown live task status {status!r}")


def live_status(task: Task, now: datetime) -> str:
    if task.locked_by == isolation.QUARANTINED:
        return "quarantined"
    if task.locked_by is not None:
        return "running"
    if task.last_error:
        return "failing"
    return "scheduled" if task.run_at > now else "ready"


def name_q(name: str) -> Q:
    """Match a name exactly or by its last dotted part(s): ``send`` finds ``app.tasks.send``."""
    return Q(task_name=name) | Q(task_name__endswith="." + name)


def live_tasks(
    now: datetime, *, queue: str | None = None, status: str | None = None, name: str | None = None
) -> models.QuerySet[Task]:
    tasks: models.QuerySet[Task] = Task.objects.using(_using()).order_by("run_at", "id")
    if queue:
        tasks = tasks.filter(queue=queue)
    if status:
        tasks = tasks.filter(live_status_q(status, now))
    if name:
        tasks = tasks.filter(name_q(name))
    return tasks


def completed_tasks(
    *, status: str | None = None, name: str | None = None
) -> models.QuerySet[CompletedTask]:
    records: models.QuerySet[CompletedTask] = CompletedTask.objects.using(_using()).order_by(
        "-finished_at", "-id"
    )
    if status:
        records = records.filter(status=status)
    if name:
        records = records.filter(name_q(name))
    return records


def finished_as(task_ids: Sequence[int]) -> dict[int, CompletedTask]:
    """Map each id of a task that has finished to its latest CompletedTask record."""
    found: dict[int, CompletedTask] = {}
    records = (
        CompletedTask.objects.using(_using()).filter(task_id__in=task_ids).order_by("finished_at")
    )
    for record in records:
        found[record.task_id] = record
    return found


def stats(now: datetime, window: timedelta = timedelta(hours=24)) -> list[dict[str, Any]]:
    """Count live tasks per queue and state, and tasks finished within ``window`` by outcome."""
    counts = {status: Count("id", filter=live_status_q(status, now)) for status in LIVE_STATUSES}
    rows: dict[str, dict[str, Any]] = {}

    def row(queue: str) -> dict[str, Any]:
        empty = dict.fromkeys((*LIVE_STATUSES, *COMPLETED_STATUSES), 0)
        return rows.setdefault(queue, {"queue": queue, **empty})

    for live in Task.objects.using(_using()).values("queue").annotate(**counts).order_by("queue"):
        row(live["queue"]).update({status: live[status] for status in LIVE_STATUSES})
    finished = (
        CompletedTask.objects.using(_using())
        .filter(finished_at__gte=now - window)
        .values("queue", "status")
        .annotate(n=Count("id"))
        .order_by("queue")
    )
    for done in finished:
        row(done["queue"])[done["status"]] = done["n"]
    return [rows[queue] for queue in sorted(rows)]


def workers(now: datetime) -> list[dict[str, Any]]:
    """Describe every registered worker; "lost" ones missed heartbeats for RESCUE_AFTER."""
    stale_before = now - timedelta(seconds=float(app_settings.RESCUE_AFTER))
    running = dict(
        Task.objects.using(_using())
        .locked()
        .values("locked_by")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("locked_by", "n")
    )
    return [
        {
            "id": worker.id,
            "host": worker.host,
            "pid": worker.pid,
            "queues": list(worker.queues or []),
            "concurrency": worker.concurrency,
            "running": running.get(worker.id, 0),
            "started_at": worker.started_at,
            "last_heartbeat_at": worker.last_heartbeat_at,
            "heartbeat_age_seconds": round((now - worker.last_heartbeat_at).total_seconds(), 1),
            "state": "lost" if worker.last_heartbeat_at < stale_before else "alive",
        }
        for worker in Worker.objects.using(_using()).order_by("host", "pid", "id")
    ]


def registered_tasks() -> list[dict[str, Any]]:
    """Describe every registered task with the options it runs with (defaults filled in)."""
    described = []
    for name in registry:
        options = options_of(name)
        described.append(
            {
                "name": name,
                "queue": options.queue,
                "priority": options.priority,
                "max_attempts": options.max_attempts,
                "timeout": options.time_limit,
            }
        )
    return described


# --------------------------------------------------------------------------------------------
# Changing
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What an action did with each id it was given."""

    done: list[int] = field(default_factory=list)
    #: Held by a worker (locked_by set): cancel asks it to stop; run-now leaves it alone.
    running: list[int] = field(default_factory=list)
    #: Locked by another transaction at this moment: skipped, not waited for.
    busy: list[int] = field(default_factory=list)
    #: run-now only: already ready, left in place.
    unchanged: list[int] = field(default_factory=list)
    finished: dict[int, CompletedTask] = field(default_factory=dict)
    unknown: list[int] = field(default_factory=list)


def _unlocked_rows(rows: models.QuerySet[Task], using: str) -> models.QuerySet[Task]:
    """Lock ``rows`` for this transaction, leaving out (never waiting for) rows locked elsewhere."""
    if connections[using].features.has_select_for_update_skip_locked:
        rows = rows.select_for_update(skip_locked=True)
    return rows


def _account_for_missing(outcome: Outcome, ids: Sequence[int], seen: set[int], using: str) -> None:
    missing = [pk for pk in ids if pk not in seen]
    still_there = set(Task.objects.using(using).filter(pk__in=missing).values_list("id", flat=True))
    outcome.busy = [pk for pk in missing if pk in still_there]
    outcome.finished = finished_as([pk for pk in missing if pk not in still_there])
    outcome.unknown = [pk for pk in missing if pk not in still_there and pk not in outcome.finished]


def cancel(ids: Sequence[int]) -> Outcome:
    """Cancel waiting tasks and ask the workers running the others to stop them."""
    ids = list(dict.fromkeys(ids))
    using = _using()
    outcome = Outcome()
    with transaction.atomic(using=using):
        free = dict(
            _unlocked_rows(Task.objects.using(using).filter(pk__in=ids), using).values_list(
                "id", "locked_by"
            )
        )
        waiting = [pk for pk in ids if pk in free and free[pk] is None]
        running = [pk for pk in ids if pk in free and free[pk] is not None]
        if waiting:
            lifecycle.cancel_waiting(waiting)
        if running:
            lifecycle.request_cancel(running)
        left = set(Task.objects.using(using).filter(pk__in=waiting).values_list("id", flat=True))
    outcome.done = [pk for pk in waiting if pk not in left]
    outcome.running = running
    _account_for_missing(outcome, ids, set(free), using)
    # A row can only stay behind if a worker took it between our read and the cancel.
    outcome.busy += [pk for pk in waiting if pk in left]
    return outcome


def run_now(ids: Sequence[int], now: datetime) -> Outcome:
    """Move waiting tasks' run_at to ``now``; tasks already due keep their place in the queue."""
    ids = list(dict.fromkeys(ids))
    using = _using()
    outcome = Outcome()
    with transaction.atomic(using=using):
        rows = Task.objects.using(using).filter(pk__in=ids)
        free = {
            pk: (locked_by, run_at)
            for pk, locked_by, run_at in _unlocked_rows(rows, using).values_list(
                "id", "locked_by", "run_at"
            )
        }
        outcome.running = [pk for pk in ids if pk in free and free[pk][0] is not None]
        outcome.done = [
            pk for pk in ids if pk in free and free[pk][0] is None and free[pk][1] > now
        ]
        outcome.unchanged = [
            pk for pk in ids if pk in free and free[pk][0] is None and free[pk][1] <= now
        ]
        if outcome.done:
            Task.objects.using(using).filter(pk__in=outcome.done, locked_by__isnull=True).update(
                run_at=now
            )
    _account_for_missing(outcome, ids, set(free), using)
    return outcome


def retry(ids: Sequence[int]) -> tuple[list[tuple[int, int]], list[int]]:
    """Enqueue a fresh copy of each CompletedTask.

    Return the (completed id, new task id) pairs, and the ids that name no CompletedTask.
    """
    ids = list(dict.fromkeys(ids))
    retried: list[tuple[int, int]] = []
    unknown: list[int] = []
    for start in range(0, len(ids), RETRY_CHUNK):
        chunk = ids[start : start + RETRY_CHUNK]
        records = CompletedTask.objects.using(_using()).in_bulk(chunk)
        retried += [
            (pk, lifecycle.retry_completed(records[pk]).pk) for pk in chunk if pk in records
        ]
        unknown += [pk for pk in chunk if pk not in records]
    return retried, unknown


def failed_to_retry(name: str | None = None) -> models.QuerySet[CompletedTask]:
    """Failed records whose call (same task and arguments) was not enqueued again since.

    Leaving those out makes ``retry --all-failed`` safe to repeat: a second run does not queue
    the same calls again, whether the first run's copies are still waiting or already ran.
    """

    def since(model: type[Task] | type[CompletedTask]) -> Exists:
        return Exists(
            model.objects.using(_using()).filter(
                task_hash=OuterRef("task_hash"), created_at__gt=OuterRef("finished_at")
            )
        )

    records = completed_tasks(status="failed", name=name).order_by("finished_at", "id")
    fresh: models.QuerySet[CompletedTask] = records.exclude(since(Task))
    fresh = fresh.exclude(since(CompletedTask))
    return fresh


def prunable(cutoff: datetime, statuses: Sequence[str]) -> models.QuerySet[CompletedTask]:
    records: models.QuerySet[CompletedTask] = CompletedTask.objects.using(_using()).filter(
        finished_at__lt=cutoff
    )
    if statuses:
        records = records.filter(status__in=statuses)
    return records


def prune(
    cutoff: datetime,
    statuses: Sequence[str],
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Delete CompletedTask rows finished before ``cutoff``; return (rows deleted, batches).

    Each batch deletes a list of at most ``batch_size`` ids in its own short transaction, so a
    huge history never holds locks (or a giant undo log) for long. A batch the database
    refuses because of one of its rows (a delete receiver that cannot load a row with a date
    out of range, say) is retried row by row; a row that still fails is left in place and
    logged (``event=prune_row_skipped``), and pruning goes on with the rest.
    """
    using = _using()
    deleted = batches = 0
    skipped: set[int] = set()
    while True:
        ids = list(
            prunable(cutoff, statuses)
            .exclude(pk__in=skipped)
            .order_by("finished_at", "id")
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return deleted, batches
        try:
            count = _delete_records(using, ids)
        except Exception as exc:
            if isolation.is_outage(exc):
                raise
            count = 0
            for record_id in ids:
                try:
                    count += _delete_records(using, [record_id])
                except Exception as row_exc:
                    if isolation.is_outage(row_exc):
                        raise
                    skipped.add(record_id)
                    logger.error(
                        "event=prune_row_skipped completed_task_id=%s error=%s",
                        record_id,
                        shown(isolation.describe(row_exc)),
                    )
        deleted += count
        batches += 1
        if on_batch is not None:
            on_batch(deleted)


def _delete_records(using: str, ids: list[int]) -> int:
    with transaction.atomic(using=using):
        count, _ = CompletedTask.objects.using(using).filter(pk__in=ids).delete()
    return count


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


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
        data["status"] = live_status(obj, now)
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
