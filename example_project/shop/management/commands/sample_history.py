"""``python manage.py sample_history``: a day of made-up outcomes, so the dashboard has a shape.

It inserts history rows (succeeded, and now and then failed) spread over the last 24 hours,
denser in the last hour, plus a few waiting tasks. Every row's verbose name starts with
``[sample]``; a re-run replaces them. Real tasks run by ``process_tasks`` show the same way.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.utils import timezone

from background_tasks.models import CompletedTask, Task
from background_tasks.serialization import params_hash
from shop.tasks import build_sales_report, reserve_stock

SAMPLE_PREFIX = "[sample] "
ERRORS = (
    "TimeoutError: the supplier did not answer within 10 s",
    "ConnectionResetError: [Errno 104] Connection reset by peer",
    "ValueError: order 4711 has no delivery address",
)


class Command(BaseCommand):
    help = "Fill the history with a day of sample outcomes for the admin dashboard."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, default=1500, help="Outcomes to insert.")
        parser.add_argument("--seed", type=int, default=7, help="Random seed (same data again).")

    def handle(self, *args: Any, rows: int, seed: int, **options: Any) -> None:
        rng = random.Random(seed)
        now = timezone.now()
        name = "shop.tasks.send_order_confirmation"
        with transaction.atomic():
            CompletedTask.objects.filter(verbose_name__startswith=SAMPLE_PREFIX).delete()
            Task.objects.filter(verbose_name__startswith=SAMPLE_PREFIX).delete()
            outcomes = []
            for index in range(rows):
                # A third in the last hour, the rest over the day.
                span = 3600 if index % 3 == 0 else 24 * 3600
                finished = now - timedelta(seconds=rng.uniform(0, span))
                failed = rng.random() < 0.04
                error = f"Traceback (most recent call last):\n  ...\n{rng.choice(ERRORS)}"
                params = {"args": [1000 + index], "kwargs": {}}
                outcomes.append(
                    CompletedTask(
                        task_id=-(index + 1),  # no Task row ever had it
                        task_name=name,
                        params=params,
                        task_hash=params_hash(name, params),
                        verbose_name=f"{SAMPLE_PREFIX}Confirm order #{1000 + index}",
                        status="failed" if failed else "succeeded",
                        last_error=error if failed else "",
                        attempts=5 if failed else 1,
                        started_at=finished - timedelta(seconds=rng.uniform(0.05, 2)),
                        finished_at=finished,
                        worker="sample-host:1:sample",
                    )
                )
            CompletedTask.objects.bulk_create(outcomes, batch_size=500)
            today = timezone.localdate().isoformat()
            # Several calls of a task in one go: one INSERT for them all (docs/tasks.md).
            build_sales_report.bulk(
                [
                    build_sales_report.call(
                        today,
                        schedule=hours * 3600,
                        verbose_name=f"{SAMPLE_PREFIX}Sales report in {hours} h",
                    )
                    for hours in (1, 2, 3)
                ]
            )
            reserve_stock.bulk(
                [
                    reserve_stock.call(
                        order_id, verbose_name=f"{SAMPLE_PREFIX}Reserve stock for #{order_id}"
                    )
                    for order_id in (7, 8)
                ]
            )
        self.stdout.write(f"Inserted {rows} sample outcomes and 5 waiting tasks.")
