"""The shop's background tasks. background_tasks imports this module of every installed app."""

from __future__ import annotations

import csv
import io
import os
import time
from datetime import date, timedelta
from decimal import Decimal

from django.core.mail import send_mail
from django.db.models import Count, Sum
from django.utils import timezone

from background_tasks import background, set_progress

from . import supplier
from .models import Order

#: Seconds import_orders waits after each row (0 in tests).
ROW_DELAY = float(os.environ.get("SHOP_IMPORT_ROW_DELAY", "0.2"))


@background
def send_order_confirmation(order_id: int) -> str:
    """A plain task: registered as "shop.tasks.send_order_confirmation", default queue."""
    order = Order.objects.get(pk=order_id)
    send_mail(
        subject=f"Your order #{order.pk}",
        message=f"Thank you! {order.quantity} x {order.product} ({order.amount}) are on their way.",
        from_email=None,
        recipient_list=[order.email],
    )
    order.confirmation_sent_at = timezone.now()
    order.save(update_fields=["confirmation_sent_at"])
    return f"confirmation sent to {order.email}"


# The supplier API fails now and then: retry up to 5 times, waiting 2 s between attempts
# (the default backoff grows as attempts ** 4 + 5 s, far too slow for a demo). A Backoff(...)
# or a function of the attempt number works here too.
@background(max_attempts=5, backoff=2)
def reserve_stock(order_id: int) -> str:
    """A task that fails once (the simulated supplier times out) and succeeds on retry."""
    order = Order.objects.get(pk=order_id)
    code = supplier.reserve(order)
    order.reservation_code = code
    order.save(update_fields=["reservation_code"])
    return code


@background(queue="reports", priority=10, max_attempts=3)
def build_sales_report(day: str) -> dict[str, object]:
    """A task on its own queue, run before lower-priority tasks that are ready at the same time.

    Arguments and results are JSON, so the day travels as an ISO string, and the amount comes
    back as a string.
    """
    start = date.fromisoformat(day)
    totals = Order.objects.filter(
        placed_at__date__gte=start, placed_at__date__lt=start + timedelta(days=1)
    ).aggregate(orders=Count("id"), revenue=Sum("amount"))
    revenue = Decimal(totals["revenue"] or 0).quantize(Decimal("0.01"))
    return {"day": day, "orders": totals["orders"], "revenue": str(revenue)}


# A cron schedule: the workers enqueue this task once a day at 06:00 (in TIME_ZONE), exactly
# once however many of them run. Cron tasks take no arguments; this one enqueues yesterday's report.
@background(cron="0 6 * * *")
def daily_sales_report() -> None:
    yesterday = timezone.localdate() - timedelta(days=1)
    build_sales_report(yesterday.isoformat())


# A repeating task, the django-background-tasks way: enqueued once with repeat=, it enqueues its
# next run (on the hour grid from its first run, so it never drifts) each time it finishes.
# unique=True makes starting it idempotent: `manage.py start_housekeeping` run on every deploy
# finds the pending run and adds no second series.
@background(unique=True)
def expire_unpaid_orders(max_age_hours: int = 24) -> int:
    """Delete orders that never got a stock reservation within ``max_age_hours``."""
    cutoff = timezone.now() - timedelta(hours=max_age_hours)
    deleted, _ = Order.objects.filter(placed_at__lt=cutoff, reservation_code="").delete()
    return deleted


# A long task that reports its progress: the import page (shop/import_views.py) polls it.
# set_progress() may be called for every row: at most one small write per
# BACKGROUND_TASKS_PROGRESS_INTERVAL seconds reaches the database, and the last value is kept.
@background(queue="imports", max_attempts=1)
def import_orders(csv_text: str, customer_id: int | None = None) -> dict[str, int]:
    """Create one order per CSV row (email,product,quantity,amount); skip invalid rows."""
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    created = skipped = 0
    set_progress(0, len(rows), "starting")
    for number, row in enumerate(rows, start=1):
        try:
            Order.objects.create(
                customer_id=customer_id,
                email=row["email"],
                product=row["product"],
                quantity=int(row["quantity"]),
                amount=Decimal(row["amount"]),
            )
            created += 1
        except (KeyError, TypeError, ValueError, ArithmeticError):
            skipped += 1
        set_progress(number, len(rows), f"row {number} of {len(rows)}: {skipped} skipped")
        if ROW_DELAY:
            time.sleep(ROW_DELAY)  # a slow import, so that the page has something to show
    return {"created": created, "skipped": skipped}
