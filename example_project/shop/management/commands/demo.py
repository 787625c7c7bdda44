"""``python manage.py demo``: enqueue three tasks, run a worker in this process, report.

The worker is the one ``process_tasks`` runs, in burst mode: it exits as soon as no task is
*ready*. A retry waiting for its backoff, or a task scheduled for later, is not ready yet, so
the demo waits until the next one is due and runs another burst, until all three are done.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from background_tasks.models import CompletedTask, Task
from background_tasks.worker import Worker
from shop.models import Order, SupplierRequest
from shop.tasks import build_sales_report, reserve_stock, send_order_confirmation

#: Every task the demo enqueues has a verbose name starting with this, so a re-run can find and
#: remove what an earlier run left behind without touching anyone else's tasks.
DEMO_PREFIX = "[demo] "
DEMO_EMAIL = "demo-customer@example.com"
#: Shortest pause between two bursts, so a task held by another worker is not polled in a spin.
MIN_PAUSE = 0.2


@dataclass
class Enqueued:
    label: str
    task: Task


class Command(BaseCommand):
    help = (
        "Enqueue a task that succeeds, one that fails once and succeeds on retry, and one "
        "scheduled 3 s ahead; run a worker in this process until they are done; report."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--timeout",
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="Give up if the tasks are not all done after this long (default: 60).",
        )

    def handle(self, *args: Any, timeout: float, **options: Any) -> None:
        self._check_migrated()
        self._remove_earlier_runs()
        started = timezone.now()
        enqueued = self._enqueue()
        self._say(f"Enqueued {len(enqueued)} tasks at {started:%H:%M:%S}. Starting the worker.\n")

        done = self._work_until_done([e.task.pk for e in enqueued], timeout)

        self._report(enqueued, started)
        if not done:
            raise CommandError(
                f"Not every task was done after {timeout:g} s; see the report above."
            )
        succeeded = CompletedTask.objects.filter(
            task_id__in=[e.task.pk for e in enqueued], status=CompletedTask.Status.SUCCEEDED
        ).count()
        if succeeded != len(enqueued):
            raise CommandError(f"Only {succeeded} of {len(enqueued)} tasks succeeded.")
        elapsed = (timezone.now() - started).total_seconds()
        self.stdout.write(
            self.style.SUCCESS(f"All {len(enqueued)} tasks succeeded in {elapsed:.1f} s.")
        )
        self.stdout.write(
            "\nNext:\n"
            f"  {manage_command('createsuperuser')}\n"
            f"  {manage_command('runserver')}\n"
            "then see these tasks at http://127.0.0.1:8000/admin/, or place an order at\n"
            f"http://127.0.0.1:8000/ and run {manage_command('process_tasks')}"
        )

    # -- steps ------------------------------------------------------------------------------

    def _check_migrated(self) -> None:
        connection = connections[DEFAULT_DB_ALIAS]
        executor = MigrationExecutor(connection)
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            raise CommandError(
                f"The database is not migrated: run {manage_command('migrate')} first."
            )

    def _remove_earlier_runs(self) -> None:
        with transaction.atomic():
            Task.objects.filter(verbose_name__startswith=DEMO_PREFIX).delete()
            CompletedTask.objects.filter(verbose_name__startswith=DEMO_PREFIX).delete()
            Order.objects.filter(email=DEMO_EMAIL).delete()

    def _enqueue(self) -> list[Enqueued]:
        # One transaction: the order and its three tasks appear together, or not at all.
        with transaction.atomic():
            order = Order.objects.create(
                email=DEMO_EMAIL, product="Blue teapot", quantity=2, amount=Decimal("39.80")
            )
            today = timezone.localdate().isoformat()
            return [
                Enqueued(
                    "1. plain task, succeeds",
                    send_order_confirmation(
                        order.pk, verbose_name=f"{DEMO_PREFIX}Confirm order #{order.pk}"
                    ),
                ),
                Enqueued(
                    "2. fails once, succeeds on retry (backoff=2)",
                    reserve_stock(
                        order.pk, verbose_name=f"{DEMO_PREFIX}Reserve stock for #{order.pk}"
                    ),
                ),
                Enqueued(
                    "3. scheduled 3 s ahead (schedule=3), queue 'reports'",
                    build_sales_report(
                        today, schedule=3, verbose_name=f"{DEMO_PREFIX}Sales report {today}"
                    ),
                ),
            ]

    def _work_until_done(self, task_ids: list[int], timeout: float) -> bool:
        """Run burst workers until none of ``task_ids`` is left in the queue; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            Worker(burst=True).run()
            rows = list(Task.objects.filter(pk__in=task_ids).order_by("run_at", "id"))
            if not rows:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            pause = min(max((rows[0].run_at - timezone.now()).total_seconds(), MIN_PAUSE), left)
            self._say("\nNothing is ready now; still waiting:")
            for row in rows:
                self._say(f"  - {row.task_name} (id {row.pk}): {_why_waiting(row)}")
            self._say(f"Next burst in {pause:.1f} s.\n")
            # Waiting for a time on the clock is the point here; a real worker (process_tasks)
            # keeps polling instead.
            time.sleep(pause)

    # -- the report -------------------------------------------------------------------------

    def _report(self, enqueued: list[Enqueued], started: datetime) -> None:
        def at(moment: datetime | None) -> str:
            if moment is None:
                return "-"
            return f"{moment:%H:%M:%S} (+{(moment - started).total_seconds():.1f} s)"

        self.stdout.write("\n" + self.style.MIGRATE_HEADING("What happened"))
        for item in enqueued:
            self.stdout.write("")
            self.stdout.write(self.style.MIGRATE_LABEL(item.label))
            self.stdout.write(f"   task:       {item.task.task_name} (id {item.task.pk})")
            self.stdout.write(f"   queue:      {item.task.queue}, priority {item.task.priority}")
            self.stdout.write(
                f"   enqueued:   {at(item.task.created_at)}, due {at(item.task.run_at)}"
            )
            record = CompletedTask.objects.filter(task_id=item.task.pk).first()
            if record is None:
                pending = Task.objects.filter(pk=item.task.pk).first()
                state = pending.status if pending else "gone"
                self.stdout.write(self.style.ERROR(f"   status:     not finished ({state})"))
                if pending is not None and pending.last_error:
                    self.stdout.write(f"   last error: {_last_line(pending.last_error)}")
                continue
            style = (
                self.style.SUCCESS
                if record.status == CompletedTask.Status.SUCCEEDED
                else self.style.ERROR
            )
            self.stdout.write(
                style(f"   status:     {record.status} after {record.attempts} attempt(s)")
            )
            if item.task.task_name == reserve_stock.name:
                self._report_supplier_requests(item.task, at)
            self.stdout.write(
                f"   last run:   {at(record.started_at)} to {at(record.finished_at)}, "
                f"on worker {record.worker}"
            )
            if record.last_error:
                self.stdout.write(
                    f"   error of the failed attempt: {_last_line(record.last_error)}"
                )
            self.stdout.write(f"   result:     {record.result!r}")
        self.stdout.write("")

    def _report_supplier_requests(self, task: Task, at: Any) -> None:
        order_id = task.params["args"][0]
        for number, request in enumerate(SupplierRequest.objects.filter(order_id=order_id), 1):
            outcome = "ok" if request.succeeded else f"failed: {request.error}"
            self.stdout.write(f"   attempt {number}:  {at(request.made_at)} {outcome}")

    def _say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()


def _why_waiting(task: Task) -> str:
    if task.locked_by:
        return f"running on worker {task.locked_by}"
    why = "a retry after a failed attempt" if task.attempts else "scheduled"
    return f"{why}, due {task.run_at:%H:%M:%S}"


def _last_line(traceback_text: str) -> str:
    """Return the exception line of a traceback ("SupplierUnavailable: ...")."""
    lines = [line for line in traceback_text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def manage_command(subcommand: str) -> str:
    """Return the command line that runs ``subcommand`` with this Python and this manage.py.

    Printed hints must work as printed: a bare ``python`` may not be the virtualenv's.
    """
    python = _shortest(Path(sys.executable))
    manage = _shortest(Path(__file__).resolve().parents[3] / "manage.py")
    return f"{python} {manage} {subcommand}"


def _shortest(path: Path) -> str:
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative
