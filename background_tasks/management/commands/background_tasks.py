"""``python manage.py background_tasks <subcommand>``: inspect and steer the queue.

The command parses, calls ``background_tasks.cli`` and prints; errors exit non-zero.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import router
from django.db.models import QuerySet
from django.utils import timezone

from background_tasks import cli
from background_tasks.conf import app_settings
from background_tasks.lifecycle import max_attempts_of
from background_tasks.models import CompletedTask, Task
from background_tasks.schema import require_migrated_for_command

from . import _operations

DEFAULT_LIMIT = 50
STATS_WINDOW = timedelta(hours=24)
CANCEL_REQUESTED = "Running; cancel requested (the task stops when it next checks is_cancelled())"


class Command(BaseCommand):
    help = "Inspect, cancel, retry and prune background tasks; see each subcommand's --help."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(
            dest="subcommand", metavar="SUBCOMMAND", required=True, title="subcommands"
        )

        def add(name: str, text: str, *, json: bool = False) -> CommandParser:
            sub: CommandParser = commands.add_parser(name, help=text, description=text)
            if json:
                sub.add_argument(
                    "--json", action="store_true", help="Print JSON instead of a table."
                )
            return sub

        live_status = cli.one_of("status", cli.LIVE_STATUSES)
        done_status = cli.one_of("status", cli.COMPLETED_STATUSES)
        name = cli.non_empty("task name")
        limit_help = f"Show at most N rows (default: {DEFAULT_LIMIT})."
        name_help = "Only tasks of this name (the full name, or its last dotted part(s))."

        sub = add("list", "List live tasks: waiting, scheduled, running or failing.", json=True)
        sub.add_argument(
            "--queue", type=cli.non_empty("queue name"), help="Only tasks of this queue."
        )
        sub.add_argument(
            "--status",
            type=live_status,
            metavar="{" + ",".join(cli.LIVE_STATUSES) + "}",
            help="Only tasks in this state. failing: waiting to retry after a failed attempt.",
        )
        sub.add_argument("--name", type=name, help=name_help)
        sub.add_argument(
            "--limit", type=cli.positive_int, default=DEFAULT_LIMIT, metavar="N", help=limit_help
        )

        sub = add("history", "List completed tasks, newest first.", json=True)
        sub.add_argument(
            "--status",
            type=done_status,
            metavar="{" + ",".join(cli.COMPLETED_STATUSES) + "}",
            help="Only tasks that ended this way.",
        )
        sub.add_argument("--name", type=name, help=name_help)
        sub.add_argument(
            "--limit", type=cli.positive_int, default=DEFAULT_LIMIT, metavar="N", help=limit_help
        )

        sub = add(
            "show", "Show every field of one task, with its arguments and last error.", json=True
        )
        sub.add_argument("id", type=cli.task_id, metavar="ID")
        sub.add_argument("--completed", action="store_true", help="ID is a completed task's id.")

        sub = add(
            "cancel", "Cancel waiting tasks; ask the workers running the others to stop them."
        )
        sub.add_argument("ids", type=cli.task_id, nargs="+", metavar="ID")

        sub = add("retry", "Enqueue completed tasks again, ready now.")
        sub.add_argument(
            "ids", type=cli.task_id, nargs="*", metavar="ID", help="Completed task ids."
        )
        sub.add_argument(
            "--all-failed",
            action="store_true",
            help="Retry every failed task whose call was not enqueued again since it failed.",
        )
        sub.add_argument(
            "--name", type=name, help="With --all-failed: " + name_help[0].lower() + name_help[1:]
        )

        sub = add("run-now", "Make waiting tasks ready now.")
        sub.add_argument("ids", type=cli.task_id, nargs="+", metavar="ID")

        add("tasks", "List the registered tasks and the options they run with.", json=True)
        add(
            "workers",
            "List the workers, alive and lost (no heartbeat for RESCUE_AFTER).",
            json=True,
        )
        add(
            "stats",
            "Count tasks per queue and state, and those finished in the last 24 hours.",
            json=True,
        )

        sub = add("prune", "Delete old completed tasks, in batches.")
        sub.add_argument(
            "--older-than",
            type=cli.days,
            required=True,
            metavar="DAYS",
            help="Delete tasks that finished more than DAYS days ago.",
        )
        sub.add_argument(
            "--status",
            type=done_status,
            action="append",
            default=[],
            metavar="{" + ",".join(cli.COMPLETED_STATUSES) + "}",
            help="Only tasks that ended this way (repeat for several; default: all).",
        )
        sub.add_argument(
            "--batch-size",
            type=cli.positive_int,
            default=1000,
            metavar="N",
            help="Rows deleted per transaction (default: 1000).",
        )
        sub.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

        _operations.add_subcommands(add)

    def handle(self, *args: Any, **options: Any) -> None:
        require_migrated_for_command(router.db_for_write(Task))
        handler = getattr(self, "_" + options["subcommand"].replace("-", "_"))
        handler(timezone.now(), options)

    # -- reading ------------------------------------------------------------------------------

    def _list(self, now: datetime, options: dict[str, Any]) -> None:
        tasks = cli.live_tasks(
            now, queue=options["queue"], status=options["status"], name=options["name"]
        )
        rows = list(tasks[: options["limit"] + 1])
        more, rows = len(rows) > options["limit"], rows[: options["limit"]]
        if options["json"]:
            self.stdout.write(cli.to_json([cli.record(task, now) for task in rows]))
            return
        self._table(
            ["ID", "NAME", "QUEUE", "PRIORITY", "RUN AT", "ATTEMPTS", "STATUS", "WORKER"],
            [
                [
                    t.pk,
                    t.verbose_name or t.task_name,
                    t.queue,
                    t.priority,
                    cli.when(t.run_at),
                    f"{t.attempts}/{self._budget(t)}",
                    cli.live_status(t, now),
                    t.locked_by,
                ]
                for t in rows
            ],
            empty="" if rows else _nothing_matches("task", options, cli.live_tasks(now)),
            more=more,
        )

    def _history(self, now: datetime, options: dict[str, Any]) -> None:
        records = cli.completed_tasks(status=options["status"], name=options["name"])
        rows = list(records[: options["limit"] + 1])
        more, rows = len(rows) > options["limit"], rows[: options["limit"]]
        if options["json"]:
            self.stdout.write(cli.to_json([cli.record(record, now) for record in rows]))
            return
        self._table(
            [
                "ID",
                "TASK ID",
                "NAME",
                "QUEUE",
                "STATUS",
                "ATTEMPTS",
                "FINISHED AT",
                "DURATION",
                "WORKER",
            ],
            [
                [
                    r.pk,
                    r.task_id,
                    r.verbose_name or r.task_name,
                    r.queue,
                    r.status,
                    r.attempts,
                    cli.when(r.finished_at),
                    _seconds(r.duration),
                    r.worker,
                ]
                for r in rows
            ],
            empty=""
            if rows
            else _nothing_matches("completed task", options, cli.completed_tasks()),
            more=more,
        )

    def _show(self, now: datetime, options: dict[str, Any]) -> None:
        pk = options["id"]
        obj: Task | CompletedTask | None
        if options["completed"]:
            obj = CompletedTask.objects.filter(pk=pk).first()
            if obj is None:
                raise CommandError(f"No completed task has id {pk}.")
        else:
            obj = Task.objects.filter(pk=pk).first()
            if obj is None:
                record = cli.finished_as([pk]).get(pk)
                hint = (
                    f" It finished ({record.status}): see `show --completed {record.pk}`."
                    if record
                    else ""
                )
                raise CommandError(f"No live task has id {pk}.{hint}")
        data = cli.record(obj, now)
        if options["json"]:
            self.stdout.write(cli.to_json(data))
            return
        blocks = {key: data.pop(key) for key in ("params", "result", "last_error") if key in data}
        width = max(len(key) for key in data)
        for key, value in data.items():
            self.stdout.write(f"{key.ljust(width)}  {cli.printable(_plain(value))}")
        for key, value in blocks.items():
            if key == "result" and value is None:
                continue
            text = value if isinstance(value, str) else cli.to_json(value)
            self.stdout.write(f"\n{key}:\n{cli.printable(text or '-', multiline=True)}")

    def _tasks(self, now: datetime, options: dict[str, Any]) -> None:
        described = cli.registered_tasks()
        if options["json"]:
            self.stdout.write(cli.to_json(described))
            return
        self._table(
            ["NAME", "QUEUE", "PRIORITY", "MAX ATTEMPTS", "TIMEOUT"],
            [
                [t["name"], t["queue"], t["priority"], t["max_attempts"], _seconds(t["timeout"])]
                for t in described
            ],
            empty="No tasks are registered.",
        )

    def _workers(self, now: datetime, options: dict[str, Any]) -> None:
        described = cli.workers(now)
        if options["json"]:
            self.stdout.write(cli.to_json(described))
            return
        self._table(
            ["ID", "HOST", "PID", "QUEUES", "THREADS", "RUNNING", "STARTED", "HEARTBEAT", "STATE"],
            [
                [
                    w["id"],
                    w["host"],
                    w["pid"],
                    ",".join(w["queues"]) or "*",
                    w["concurrency"],
                    w["running"],
                    cli.when(w["started_at"]),
                    f"{w['heartbeat_age_seconds']:.0f}s ago",
                    w["state"],
                ]
                for w in described
            ],
            empty="No workers are registered.",
        )
        lost = sum(w["state"] == "lost" for w in described)
        if lost:
            self.stdout.write(
                self.style.WARNING(
                    f"{lost} worker(s) sent no heartbeat for {app_settings.RESCUE_AFTER}s: "
                    "a running worker releases their tasks."
                )
            )

    def _stats(self, now: datetime, options: dict[str, Any]) -> None:
        rows = cli.stats(now, STATS_WINDOW)
        columns = [*cli.LIVE_STATUSES, *cli.COMPLETED_STATUSES]
        if options["json"]:
            total = {column: sum(row[column] for row in rows) for column in columns}
            since = now - STATS_WINDOW
            self.stdout.write(
                cli.to_json({"finished_since": since, "queues": rows, "total": total})
            )
            return
        if not rows:
            self.stdout.write("No tasks.")
            return
        if len(rows) > 1:
            rows = [*rows, {"queue": "(all)", **{c: sum(row[c] for row in rows) for c in columns}}]
        self.stdout.write("Live tasks now; finished tasks in the last 24 hours.")
        self._table(
            ["QUEUE", *(c.upper() for c in columns)],
            [[row["queue"], *(row[c] for c in columns)] for row in rows],
        )

    # -- changing -----------------------------------------------------------------------------

    def _cancel(self, now: datetime, options: dict[str, Any]) -> None:
        outcome = cli.cancel(options["ids"])
        self._report(outcome.done, "Cancelled", self.style.SUCCESS)
        self._report(outcome.running, CANCEL_REQUESTED, self.style.SUCCESS)
        self._report(
            outcome.busy, "Skipped (locked by another transaction; try again)", self.style.WARNING
        )
        self._report_finished(outcome)
        self._fail_on_unknown(outcome.unknown, "task")

    def _run_now(self, now: datetime, options: dict[str, Any]) -> None:
        outcome = cli.run_now(options["ids"], now)
        self._report(outcome.done, "Made ready now", self.style.SUCCESS)
        self._report(outcome.unchanged, "Already ready, left in place", self.style.SUCCESS)
        self._report(outcome.running, "Skipped (running on a worker)", self.style.WARNING)
        self._report(
            outcome.busy, "Skipped (locked by another transaction; try again)", self.style.WARNING
        )
        self._report_finished(outcome)
        self._fail_on_unknown(outcome.unknown, "task")

    def _retry(self, now: datetime, options: dict[str, Any]) -> None:
        if options["all_failed"] == bool(options["ids"]):
            raise CommandError("Give either completed task ids or --all-failed (not both).")
        if options["name"] and not options["all_failed"]:
            raise CommandError("--name only goes with --all-failed.")
        ids = options["ids"]
        if options["all_failed"]:
            ids = list(cli.failed_to_retry(options["name"]).values_list("id", flat=True))
            if not ids:
                self.stdout.write("No failed tasks to retry.")
                return
        retried, unknown = cli.retry(ids)
        for completed_id, task_id in retried:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Completed task {completed_id} enqueued again as task {task_id}."
                )
            )
        if options["all_failed"]:
            self.stdout.write(f"Enqueued {len(retried)} failed task(s) again.")
        self._fail_on_unknown(unknown, "completed task")

    def _prune(self, now: datetime, options: dict[str, Any]) -> None:
        cutoff = now - timedelta(days=options["older_than"])
        statuses = sorted(set(options["status"]))
        what = f"{'/'.join(statuses) or 'completed'} tasks finished before {cli.when(cutoff)}"
        if options["dry_run"]:
            count = cli.prunable(cutoff, statuses).count()
            self.stdout.write(f"Would delete {count} {what}.")
            return
        deleted, batches = cli.prune(cutoff, statuses, options["batch_size"])
        self.stdout.write(self.style.SUCCESS(f"Deleted {deleted} {what} in {batches} batch(es)."))

    # -- health, schedules, import-legacy (in _operations) ----------------------------------

    def _health(self, now: datetime, options: dict[str, Any]) -> None:
        _operations.health_command(self, now, options)

    def _schedules(self, now: datetime, options: dict[str, Any]) -> None:
        _operations.schedules_command(self, now, options)

    def _import_legacy(self, now: datetime, options: dict[str, Any]) -> None:
        _operations.import_legacy_command(self, now, options)

    # -- output -------------------------------------------------------------------------------

    def _table(
        self, headers: list[str], rows: list[list[Any]], *, empty: str = "", more: bool = False
    ) -> None:
        if not rows:
            self.stdout.write(empty)
            return
        for line in cli.table(headers, rows):
            self.stdout.write(line)
        if more:
            self.stdout.write(f"(first {len(rows)} shown; more match: raise --limit or filter)")

    def _report(self, ids: list[int], what: str, style: Any) -> None:
        if ids:
            self.stdout.write(style(f"{what}: {_ids(ids)}"))

    def _report_finished(self, outcome: cli.Outcome) -> None:
        for pk, record in outcome.finished.items():
            self.stdout.write(
                self.style.WARNING(
                    f"Task {pk} already finished ({record.status}); "
                    f"see `show --completed {record.pk}`."
                )
            )

    def _fail_on_unknown(self, ids: list[int], what: str) -> None:
        if ids:
            raise CommandError(
                f"No {what} has id {_ids(ids)}."
                if len(ids) == 1
                else f"No {what} has these ids: {_ids(ids)}."
            )

    @staticmethod
    def _budget(task: Task) -> int:
        return max_attempts_of(task)


def _nothing_matches(what: str, options: dict[str, Any], everything: QuerySet[Any]) -> str:
    """Say that nothing was found, and what was searched when filters were given."""
    filters = [f"--{key} {options[key]}" for key in ("queue", "status", "name") if options.get(key)]
    if not filters:
        return f"No {what}s."
    searched = " ".join(filters)
    if options.get("name"):
        searched += f" (the name {options['name']!r} or a name ending in '.{options['name']}')"
    return f"No {what} matches {searched}; there are {everything.count()} {what}(s) in all."


def _ids(ids: list[int]) -> str:
    return ", ".join(str(pk) for pk in ids)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _plain(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    if isinstance(value, (dict, list)):
        return json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False)
    return str(value)
