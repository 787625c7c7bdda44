"""``python manage.py background_tasks <subcommand>``: inspect and steer the queue.

The command parses, calls ``background_tasks.operations`` (actions) or the model querysets
(reads) and prints; errors exit non-zero. The live-queue subcommands are here; the reports
(``tasks``, ``workers``, ``stats``, ``health``, ``schedules``) and ``import-legacy`` are in
``_reports``, argument types in ``_args`` and printing helpers in ``_output``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from background_tasks import operations
from background_tasks.lifecycle import max_attempts_of
from background_tasks.models import CompletedTask, Task
from background_tasks.schema import require_migrated_for_command
from background_tasks.states import STATE_ALIASES, TaskState

from . import _args, _output, _reports

CANCEL_REQUESTED = "Running; cancel requested (the task stops when it next checks is_cancelled())"
BUSY = "Skipped (locked by another transaction; try again)"
QUARANTINED = "Skipped (quarantined: no worker runs it; fix the row and release it, or delete it)"


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

        sub = add(
            "list",
            "List live tasks: ready, scheduled, running, retrying or quarantined.",
            json=True,
        )
        sub.add_argument(
            "--queue", type=_args.non_empty("queue name"), help="Only tasks of this queue."
        )
        _args.add_status(
            sub,
            TaskState.values,
            "Only tasks in this state (see docs/tasks.md#task-states). "
            "retrying: waiting for its next attempt after a failed one (also: failing).",
            aliases=dict(STATE_ALIASES),
        )
        _args.add_name(sub)
        _args.add_limit(sub)

        sub = add("history", "List completed tasks, newest first.", json=True)
        _args.add_status(sub, _args.COMPLETED_STATUSES, "Only tasks that ended this way.")
        _args.add_name(sub)
        _args.add_limit(sub)

        sub = add(
            "show", "Show every field of one task, with its arguments and last error.", json=True
        )
        sub.add_argument("id", type=_args.task_id, metavar="ID")
        sub.add_argument("--completed", action="store_true", help="ID is a completed task's id.")

        sub = add(
            "cancel", "Cancel waiting tasks; ask the workers running the others to stop them."
        )
        _args.add_ids(sub)

        sub = add("retry", "Enqueue completed tasks again, ready now.")
        _args.add_ids(sub, "*", "Completed task ids.")
        sub.add_argument(
            "--all-failed",
            action="store_true",
            help="Retry every failed task whose call was not enqueued again since it failed.",
        )
        _args.add_name(
            sub, "With --all-failed: " + _args.NAME_HELP[0].lower() + _args.NAME_HELP[1:]
        )

        _args.add_ids(add("run-now", "Make waiting tasks ready now."))
        _reports.add_report_subcommands(add)

        sub = add("prune", "Delete old completed tasks, in batches.")
        sub.add_argument(
            "--older-than",
            type=_args.days,
            required=True,
            metavar="DAYS",
            help="Delete tasks that finished more than DAYS days ago.",
        )
        _args.add_status(
            sub,
            _args.COMPLETED_STATUSES,
            "Only tasks that ended this way (repeat for several; default: all).",
            repeat=True,
        )
        sub.add_argument(
            "--batch-size",
            type=_args.positive_int,
            default=1000,
            metavar="N",
            help="Rows deleted per transaction (default: 1000).",
        )
        sub.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

        _reports.add_subcommands(add)

    def handle(self, *args: Any, **options: Any) -> None:
        require_migrated_for_command(operations.using())
        now = timezone.now()
        own = getattr(self, "_" + options["subcommand"].replace("-", "_"), None)
        if own is not None:
            own(now, options)
        else:
            _reports.HANDLERS[options["subcommand"]](self, now, options)

    # -- reading ------------------------------------------------------------------------------

    def _list(self, now: datetime, options: dict[str, Any]) -> None:
        everything = Task.objects.using(operations.using()).order_by("run_at", "id")
        tasks = everything
        if options["queue"]:
            tasks = tasks.filter(queue=options["queue"])
        if options["status"]:
            tasks = tasks.in_state(options["status"], now)
        if options["name"]:
            tasks = tasks.named(options["name"])
        rows = list(tasks[: options["limit"] + 1])
        more, rows = len(rows) > options["limit"], rows[: options["limit"]]
        if options["json"]:
            self.stdout.write(_output.to_json([_output.record(task, now) for task in rows]))
            return
        self.table(
            ["ID", "NAME", "QUEUE", "PRIORITY", "RUN AT", "ATTEMPTS", "STATUS", "WORKER"],
            [
                [
                    t.pk,
                    t.verbose_name or t.task_name,
                    t.queue,
                    t.priority,
                    _output.when(t.run_at),
                    f"{t.attempts}/{max_attempts_of(t)}",
                    t.state_at(now),
                    t.locked_by,
                ]
                for t in rows
            ],
            empty="" if rows else _output.nothing_matches("task", options, everything),
            more=more,
        )

    def _history(self, now: datetime, options: dict[str, Any]) -> None:
        everything = CompletedTask.objects.using(operations.using()).order_by("-finished_at", "-id")
        records = everything
        if options["status"]:
            records = records.filter(status=options["status"])
        if options["name"]:
            records = records.named(options["name"])
        rows = list(records[: options["limit"] + 1])
        more, rows = len(rows) > options["limit"], rows[: options["limit"]]
        if options["json"]:
            self.stdout.write(_output.to_json([_output.record(record, now) for record in rows]))
            return
        headers = ["ID", "TASK ID", "NAME", "QUEUE", "STATUS", "ATTEMPTS", "FINISHED AT"]
        self.table(
            [*headers, "DURATION", "WORKER"],
            [
                [
                    r.pk,
                    r.task_id,
                    r.verbose_name or r.task_name,
                    r.queue,
                    r.status,
                    r.attempts,
                    _output.when(r.finished_at),
                    _output.seconds(r.duration),
                    r.worker,
                ]
                for r in rows
            ],
            empty="" if rows else _output.nothing_matches("completed task", options, everything),
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
                record = operations.finished_as([pk]).get(pk)
                hint = (
                    f" It finished ({record.status}): see `show --completed {record.pk}`."
                    if record
                    else ""
                )
                raise CommandError(f"No live task has id {pk}.{hint}")
        data = _output.record(obj, now)
        if options["json"]:
            self.stdout.write(_output.to_json(data))
            return
        blocks = {key: data.pop(key) for key in ("params", "result", "last_error") if key in data}
        width = max(len(key) for key in data)
        for key, value in data.items():
            self.stdout.write(f"{key.ljust(width)}  {_output.printable(_output.plain(value))}")
        for key, value in blocks.items():
            if key == "result" and value is None:
                continue
            text = value if isinstance(value, str) else _output.to_json(value)
            self.stdout.write(f"\n{key}:\n{_output.printable(text or '-', multiline=True)}")

    # -- changing -----------------------------------------------------------------------------

    def _cancel(self, now: datetime, options: dict[str, Any]) -> None:
        outcome = operations.cancel(options["ids"])
        self._report(outcome.done, "Cancelled", self.style.SUCCESS)
        self._report(outcome.running, CANCEL_REQUESTED, self.style.SUCCESS)
        self._report(outcome.quarantined, QUARANTINED, self.style.WARNING)
        self._report(outcome.busy, BUSY, self.style.WARNING)
        self._report_finished(outcome)
        self._fail_on_unknown(outcome.unknown, "task")

    def _run_now(self, now: datetime, options: dict[str, Any]) -> None:
        outcome = operations.run_now(options["ids"], now)
        self._report(outcome.done, "Made ready now", self.style.SUCCESS)
        self._report(outcome.unchanged, "Already ready, left in place", self.style.SUCCESS)
        self._report(outcome.running, "Skipped (running on a worker)", self.style.WARNING)
        self._report(outcome.quarantined, QUARANTINED, self.style.WARNING)
        self._report(outcome.busy, BUSY, self.style.WARNING)
        self._report_finished(outcome)
        self._fail_on_unknown(outcome.unknown, "task")

    def _retry(self, now: datetime, options: dict[str, Any]) -> None:
        if options["all_failed"] and options["ids"]:
            raise CommandError("Give either completed task ids or --all-failed, not both.")
        if not options["all_failed"] and not options["ids"]:
            raise CommandError("Give the ids of completed tasks to retry, or --all-failed.")
        if options["name"] and not options["all_failed"]:
            raise CommandError("--name only goes with --all-failed.")
        ids = options["ids"]
        if options["all_failed"]:
            ids = list(operations.failed_to_retry(options["name"]).values_list("id", flat=True))
            if not ids:
                self.stdout.write("No failed tasks to retry.")
                return
        retried, unknown = operations.retry(ids)
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
        try:
            cutoff = now - timedelta(days=options["older_than"])
        except OverflowError:
            raise CommandError(
                f"--older-than {options['older_than']:g}: that many days ago is before the year 1."
            ) from None
        statuses = sorted(set(options["status"]))
        what = f"{'/'.join(statuses) or 'completed'} tasks finished before {_output.when(cutoff)}"
        if options["dry_run"]:
            count = operations.prunable(cutoff, statuses).count()
            self.stdout.write(f"Would delete {count} {what}.")
            return
        deleted, batches = operations.prune(cutoff, statuses, options["batch_size"])
        self.stdout.write(self.style.SUCCESS(f"Deleted {deleted} {what} in {batches} batch(es)."))

    # -- output -------------------------------------------------------------------------------

    def table(
        self, headers: list[str], rows: list[list[Any]], *, empty: str = "", more: bool = False
    ) -> None:
        """Print ``rows`` as a table, ``empty`` when there are none."""
        if not rows:
            self.stdout.write(empty)
            return
        for line in _output.table(headers, rows):
            self.stdout.write(line)
        if more:
            self.stdout.write(f"(first {len(rows)} shown; more match: raise --limit or filter)")

    def _report(self, ids: list[int], what: str, style: Any) -> None:
        if ids:
            self.stdout.write(style(f"{what}: {_output.ids(ids)}"))

    def _report_finished(self, outcome: operations.Outcome) -> None:
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
                f"No {what} has id {_output.ids(ids)}."
                if len(ids) == 1
                else f"No {what} has these ids: {_output.ids(ids)}."
            )
