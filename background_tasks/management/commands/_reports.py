"""The reports of ``background_tasks`` (``tasks``, ``workers``, ``stats``, ``health``,
``schedules``) and its ``import-legacy`` subcommand.

Parsing and printing only: the live counts are in ``overview``, the checks in ``health``, the
schedule actions in ``schedule_control`` and the copy in ``legacy_import``.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.core.management.base import CommandError, CommandParser
from django.db.models import Count
from django.utils import timezone

from background_tasks import legacy_import, operations, overview, schedule_control
from background_tasks.conf import app_settings
from background_tasks.health import check as health_check
from background_tasks.models import CompletedTask, Task, TaskState, Worker
from background_tasks.options import options_of
from background_tasks.registry import registry
from background_tasks.timezones import window_start

from . import _output
from ._args import COMPLETED_STATUSES, non_empty, positive_float, seconds

if TYPE_CHECKING:
    from .background_tasks import Command

#: Default of ``health --max-ready-age``: a ready task unclaimed for longer fails the probe.
DEFAULT_MAX_READY_AGE = 300.0
#: ``stats`` counts the tasks finished within this window.
STATS_WINDOW = timedelta(hours=24)


def add_report_subcommands(add: Callable[..., CommandParser]) -> None:
    """Add ``tasks``, ``workers`` and ``stats`` through the command's ``add()``."""
    add("tasks", "List the registered tasks and the options they run with.", json=True)
    add("workers", "List the workers, alive and lost (no heartbeat for RESCUE_AFTER).", json=True)
    add(
        "stats",
        "Count tasks per queue and state, and those finished in the last 24 hours.",
        json=True,
    )


def add_subcommands(add: Callable[..., CommandParser]) -> None:
    """Add ``health``, ``schedules`` and ``import-legacy`` through the command's ``add()``."""
    sub = add(
        "health",
        "Probe: exit 0 if live workers serve the queues and no ready task waits too long.",
        json=True,
    )
    sub.add_argument(
        "--queue",
        dest="queues",
        action="append",
        default=[],
        type=non_empty("queue name"),
        metavar="QUEUE",
        help="Check this queue (repeat for several; default: all): each needs a live worker.",
    )
    sub.add_argument(
        "--max-heartbeat-age",
        type=positive_float,  # 0 would call every worker dead
        metavar="SECONDS",
        help="A worker is alive if its last heartbeat is at most this old "
        "(default: BACKGROUND_TASKS_RESCUE_AFTER).",
    )
    sub.add_argument(
        "--max-ready-age",
        type=seconds,
        default=DEFAULT_MAX_READY_AGE,
        metavar="SECONDS",
        help="Fail if a ready task has waited longer than this for a worker "
        f"(default: {DEFAULT_MAX_READY_AGE:g}).",
    )
    sub.add_argument(
        "--no-backlog", action="store_true", help="Check the workers only, not the waiting tasks."
    )
    sub.add_argument(
        "--this-host",
        action="store_true",
        help="Count only workers running on this host (a liveness probe of one container).",
    )

    sub = add(
        "schedules",
        "List cron schedules with their next and last tick; pause or resume one.",
        json=True,
    )
    actions = sub.add_subparsers(dest="schedule_action", metavar="ACTION", title="actions")
    for action, text in (
        ("pause", "Stop a schedule from firing (kept across deploys)."),
        ("resume", "Let a paused schedule fire again from its next tick after now."),
    ):
        verb = actions.add_parser(action, help=text, description=text)
        verb.add_argument("name", type=non_empty("schedule name"), metavar="NAME")

    sub = add(
        "import-legacy",
        "Copy waiting tasks (--history: finished ones too) from django-background-tasks.",
    )
    sub.add_argument(
        "--history",
        action="store_true",
        help="Also copy background_task_completedtask (and tasks that gave up) as history.",
    )
    sub.add_argument(
        "--record-problems",
        action="store_true",
        help="Copy rows that cannot be queued (unknown task, bad arguments) as failed history "
        "records giving the reason, instead of leaving them behind.",
    )
    sub.add_argument(
        "--dry-run", action="store_true", help="Report what would be copied; write nothing."
    )


def tasks(command: Command, now: datetime, options: dict[str, Any]) -> None:
    described: list[dict[str, Any]] = [
        {
            "name": name,
            "queue": effective.queue,
            "priority": effective.priority,
            "max_attempts": effective.max_attempts,
            "timeout": effective.time_limit,
        }
        for name, effective in ((name, options_of(name)) for name in registry)
    ]
    if options["json"]:
        command.stdout.write(_output.to_json(described))
        return
    command.table(
        ["NAME", "QUEUE", "PRIORITY", "MAX ATTEMPTS", "TIMEOUT"],
        [
            [t["name"], t["queue"], t["priority"], t["max_attempts"], _output.seconds(t["timeout"])]
            for t in described
        ],
        empty="No tasks are registered.",
    )


def workers(command: Command, now: datetime, options: dict[str, Any]) -> None:
    """Describe every registered worker; "lost" ones missed heartbeats for RESCUE_AFTER."""
    db = operations.using()
    stale_before = window_start(now, timedelta(seconds=float(app_settings.RESCUE_AFTER)))
    running = dict(
        Task.objects.using(db)
        .locked()
        .values("locked_by")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("locked_by", "n")
    )
    described: list[dict[str, Any]] = [
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
        for worker in Worker.objects.using(db).order_by("host", "pid", "id")
    ]
    if options["json"]:
        command.stdout.write(_output.to_json(described))
        return
    command.table(
        ["ID", "HOST", "PID", "QUEUES", "THREADS", "RUNNING", "STARTED", "HEARTBEAT", "STATE"],
        [
            [
                w["id"],
                w["host"],
                w["pid"],
                ",".join(w["queues"]) or "*",
                w["concurrency"],
                w["running"],
                _output.when(w["started_at"]),
                f"{w['heartbeat_age_seconds']:.0f}s ago",
                w["state"],
            ]
            for w in described
        ],
        empty="No workers are registered.",
    )
    lost = sum(w["state"] == "lost" for w in described)
    if lost:
        command.stdout.write(
            command.style.WARNING(
                f"{lost} worker(s) sent no heartbeat for {app_settings.RESCUE_AFTER}s: "
                "a running worker releases their tasks."
            )
        )


def stats(command: Command, now: datetime, options: dict[str, Any]) -> None:
    """Count live tasks per queue and state, and tasks finished within STATS_WINDOW."""
    columns = [*TaskState.values, *COMPLETED_STATUSES]
    found: dict[str, dict[str, Any]] = {}

    def row(queue: str) -> dict[str, Any]:
        return found.setdefault(queue, {"queue": queue, **dict.fromkeys(columns, 0)})

    for live in overview.queue_states(now):
        row(live.queue).update(live.counts)
    finished = (
        CompletedTask.objects.using(operations.using())
        .filter(finished_at__gte=now - STATS_WINDOW)
        .values("queue", "status")
        .annotate(n=Count("id"))
        .order_by("queue")
    )
    for done in finished:
        row(done["queue"])[done["status"]] = done["n"]
    rows = [found[queue] for queue in sorted(found)]
    if options["json"]:
        total = {column: sum(row[column] for row in rows) for column in columns}
        since = now - STATS_WINDOW
        command.stdout.write(
            _output.to_json({"finished_since": since, "queues": rows, "total": total})
        )
        return
    if not rows:
        command.stdout.write("No tasks.")
        return
    if len(rows) > 1:
        rows = [*rows, {"queue": "(all)", **{c: sum(row[c] for row in rows) for c in columns}}]
    command.stdout.write("Live tasks now; finished tasks in the last 24 hours.")
    command.table(
        ["QUEUE", *(c.upper() for c in columns)],
        [[row["queue"], *(row[c] for c in columns)] for row in rows],
    )


def health(command: Command, now: datetime, options: dict[str, Any]) -> None:
    max_age = options["max_heartbeat_age"]
    result = health_check(
        now,
        options["queues"],
        max_heartbeat_age=float(app_settings.RESCUE_AFTER) if max_age is None else max_age,
        max_ready_age=None if options["no_backlog"] else options["max_ready_age"],
        host=socket.gethostname() if options["this_host"] else None,
    )
    if options["json"]:
        command.stdout.write(_output.to_json(result.as_dict()))
    elif result.ok:
        command.stdout.write(result.summary())
    if not result.ok:
        if not options["json"]:
            command.stderr.write(result.summary())
        # Not CommandError: a probe's log gets exactly the one line above.
        sys.exit(1)


def schedules(command: Command, now: datetime, options: dict[str, Any]) -> None:
    action = options["schedule_action"]
    if action is None:
        _list_schedules(command, options)
        return
    schedule = schedule_control.find(options["name"])
    if schedule is None:
        raise CommandError(
            f"No schedule is named {options['name']!r}; `background_tasks schedules` lists them."
        )
    try:
        change = (schedule_control.pause if action == "pause" else schedule_control.resume)(
            schedule, now
        )
    except ValueError as exc:
        raise CommandError(f"Schedule {schedule.name!r} was not resumed: {exc}") from None
    state = "paused" if action == "pause" else "resumed"
    if options["json"]:
        command.stdout.write(
            _output.to_json({"name": schedule.name, "action": action, "changed": change.changed})
        )
    elif change.changed:
        command.stdout.write(command.style.SUCCESS(f"Schedule {schedule.name!r} {state}."))
    else:
        command.stdout.write(f"Schedule {schedule.name!r} was already {state}; left as it is.")


def _list_schedules(command: Command, options: dict[str, Any]) -> None:
    described = schedule_control.overview()
    if options["json"]:
        command.stdout.write(_output.to_json(described))
        return
    if not described:
        command.stdout.write("No schedules.")
        return
    rows = [
        [
            s["name"],
            s["task"],
            s["cron"],
            s["time_zone"] or timezone.get_default_timezone_name(),
            _schedule_state(s),
            _output.when(s["next_fire_at"]),
            _output.when(s["last_fired_at"]),
            "-" if s["last_task_id"] is None else f"#{s['last_task_id']} {s['last_task_status']}",
        ]
        for s in described
    ]
    headers = ["NAME", "TASK", "CRON", "ZONE", "ENABLED", "NEXT TICK", "LAST TICK", "LAST TASK"]
    for line in _output.table(headers, rows):
        command.stdout.write(line)


def _schedule_state(schedule: dict[str, Any]) -> str:
    """``yes``, ``paused``, and ``orphaned`` (which does not fire either) added when it is."""
    state = "yes" if schedule["enabled"] else "paused"
    if schedule["orphaned_at"] is None:
        return state
    return "orphaned" if schedule["enabled"] else "paused,orphaned"


def import_legacy(command: Command, now: datetime, options: dict[str, Any]) -> None:
    dry_run = options["dry_run"]
    report = legacy_import.import_legacy(
        history=options["history"],
        dry_run=dry_run,
        record_problems=options["record_problems"],
        now=now,
    )
    if not report.tables:
        raise CommandError(
            f"Neither {legacy_import.TASK_TABLE} nor {legacy_import.COMPLETED_TABLE} exists in "
            "this database: nothing to import."
        )
    recorded = report.problems_recorded
    label = "Not imported"
    if options["record_problems"]:
        label = "Would record as failed" if dry_run else "Recorded as failed"
    for problem in report.problems:
        command.stderr.write(f"{label}: {problem}")
    if report.were_locked:
        command.stdout.write(
            command.style.WARNING(
                f"{len(report.were_locked)} task(s) were held by a django-background-tasks "
                "worker and are copied as waiting, so they run again: "
                + ", ".join(str(pk) for pk in report.were_locked)
            )
        )
    if report.already_queued:
        command.stdout.write(
            f"{len(report.already_queued)} task(s) of unique=True functions were already queued "
            "with the same arguments; not copied again: "
            + ", ".join(str(pk) for pk in report.already_queued)
        )
    if report.failed_left:
        command.stdout.write(
            f"{len(report.failed_left)} task(s) in {legacy_import.TASK_TABLE} had given up; "
            "left there (add --history to copy them as failed history)."
        )
    verb = "Would import" if dry_run else "Imported"
    left = len(report.problems) - recorded
    command.stdout.write(
        f"{verb} {report.tasks} waiting task(s) and {report.history} history record(s) "
        f"({recorded} of them for rows that could not be queued); "
        f"{report.already_imported} row(s) were imported before; {left} row(s) left behind."
    )
    if left:
        raise CommandError(
            f"{left} row(s) were not imported (listed above): fix them and run the import "
            "again (rows already copied are skipped), or add --record-problems to keep them "
            "as failed records."
        )


#: The handler of each subcommand added by ``add_subcommands``.
HANDLERS: dict[str, Callable[[Command, datetime, dict[str, Any]], None]] = {
    "tasks": tasks,
    "workers": workers,
    "stats": stats,
    "health": health,
    "schedules": schedules,
    "import-legacy": import_legacy,
}
