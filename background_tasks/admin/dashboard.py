"""The dashboard: the queue's health on one admin page, plain HTML with inline SVG charts.

It needs ``view_task``; the history, workers and schedules sections appear for users who may
view those too. Every number comes from ``overview``, a handful of index-served queries (and
the day chart's closed hours from their summary).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import overview
from ..conf import app_settings
from ..states import TaskState

#: Auto-refresh periods offered, in seconds (``?refresh=N``; anything else: no refresh).
REFRESH_CHOICES = (10, 30, 60)

CHART_WIDTH = 600
CHART_HEIGHT = 100


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    succeeded_y: float
    succeeded_height: float
    failed_y: float
    failed_height: float
    title: str


@dataclass(frozen=True)
class Chart:
    title: str
    bars: list[Bar]
    peak: int
    succeeded: int
    failed: int
    first_label: str
    last_label: str
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT


def _local(moment: datetime) -> datetime:
    return timezone.localtime(moment) if timezone.is_aware(moment) else moment


def chart(title: str, buckets: list[overview.Bucket], label_format: str) -> Chart:
    """Lay buckets out as stacked bars (succeeded below, failed on top) scaled to the peak."""
    peak = max((b.succeeded + b.failed for b in buckets), default=0)
    slot = CHART_WIDTH / max(len(buckets), 1)
    scale = (CHART_HEIGHT - 2) / peak if peak else 0.0
    bars = []
    for index, bucket in enumerate(buckets):
        ok_height = bucket.succeeded * scale
        failed_height = bucket.failed * scale
        when = _local(bucket.start).strftime(label_format)
        bars.append(
            Bar(
                x=round(index * slot + slot * 0.1, 2),
                width=round(slot * 0.8, 2),
                succeeded_y=round(CHART_HEIGHT - ok_height, 2),
                succeeded_height=round(ok_height, 2),
                failed_y=round(CHART_HEIGHT - ok_height - failed_height, 2),
                failed_height=round(failed_height, 2),
                title=f"{when}: {bucket.succeeded} succeeded, {bucket.failed} failed",
            )
        )

    return Chart(
        title=title,
        bars=bars,
        peak=peak,
        succeeded=sum(b.succeeded for b in buckets),
        failed=sum(b.failed for b in buckets),
        first_label=_local(buckets[0].start).strftime(label_format) if buckets else "",
        last_label=_local(buckets[-1].start).strftime(label_format) if buckets else "",
    )


def _refresh_of(request: HttpRequest) -> int | None:
    try:
        seconds = int(request.GET.get("refresh", ""))
    except ValueError:
        return None
    return seconds if seconds in REFRESH_CHOICES else None


def _retention() -> list[tuple[Any, Any]]:
    def kept(days: float | None) -> Any:
        return _("for ever") if days is None else _("%(days)g days") % {"days": days}

    recorded = bool(app_settings.RECORD_SUCCEEDED)
    return [
        (_("succeeded"), kept(app_settings.RETAIN_SUCCEEDED_DAYS) if recorded else _("not kept")),
        (_("failed"), kept(app_settings.RETAIN_FAILED_DAYS)),
        (_("cancelled"), kept(app_settings.RETAIN_CANCELLED_DAYS)),
    ]


def dashboard_view(request: HttpRequest, site: admin.AdminSite) -> HttpResponse:
    """Render the dashboard; needs ``view_task``, and more for the other sections."""
    user: Any = request.user
    if not user.has_perm("background_tasks.view_task"):
        raise PermissionDenied
    now = timezone.now()
    show_history = user.has_perm("background_tasks.view_completedtask")
    show_workers = user.has_perm("background_tasks.view_worker")
    show_schedules = user.has_perm("background_tasks.view_schedule")
    context: dict[str, Any] = {
        **site.each_context(request),
        "title": _("Background tasks dashboard"),
        "now": now,
        "statuses": TaskState.values,
        "queues": overview.queue_states(now),
        "refresh": _refresh_of(request),
        "refresh_choices": REFRESH_CHOICES,
        "show_history": show_history,
        "show_workers": show_workers,
        "show_schedules": show_schedules,
        "retention": _retention(),
        "record_succeeded": bool(app_settings.RECORD_SUCCEEDED),
    }
    if show_history:
        charts = overview.outcome_charts(now)
        context["charts"] = [
            chart(str(_("Last hour, per minute")), charts.minutes, "%H:%M"),
            chart(str(_("Last 24 hours, per hour")), charts.hours, "%a %H:00"),
        ]
        context["failures"] = overview.latest_failures()
    if show_workers:
        context["workers"] = overview.worker_states(now)
    if show_schedules:
        context["schedules"] = overview.next_ticks()
    request.current_app = site.name
    return TemplateResponse(request, "admin/background_tasks/dashboard.html", context)


class DashboardUrls:
    """Adds the dashboard's URL (``admin:background_tasks_dashboard``) to a ModelAdmin's URLs."""

    admin_site: admin.AdminSite

    def get_urls(self) -> list[URLPattern]:
        site = self.admin_site

        def view(request: HttpRequest) -> HttpResponse:
            return dashboard_view(request, site)

        dashboard = path("dashboard/", site.admin_view(view), name="background_tasks_dashboard")
        # First: the ModelAdmin's catch-all "<object_id>/" would take "dashboard/" otherwise.
        return [dashboard, *super().get_urls()]  # type: ignore[misc]
