"""Start the hourly housekeeping series; safe to run on every deploy."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from background_tasks.models import Task
from shop.tasks import expire_unpaid_orders


class Command(BaseCommand):
    help = "Enqueue the hourly expire_unpaid_orders series (does nothing if it is already pending)."

    def handle(self, *args: Any, **options: Any) -> None:
        task = expire_unpaid_orders(24, repeat=Task.HOURLY)
        self.stdout.write(
            f"expire_unpaid_orders: task {task.pk}, next run {task.run_at:%Y-%m-%d %H:%M:%S %Z}, "
            "then every hour."
        )
