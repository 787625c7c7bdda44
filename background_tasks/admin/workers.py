"""Worker processes in the admin, as their heartbeats report them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..conf import app_settings
from ..models import Task, Worker, WorkerQuerySet
from ..timezones import window_start

if TYPE_CHECKING:
    WorkerModelAdmin = admin.ModelAdmin[Worker]
else:
    WorkerModelAdmin = admin.ModelAdmin


def _stale_before() -> datetime:
    return window_start(timezone.now(), timedelta(seconds=float(app_settings.RESCUE_AFTER)))


def _is_alive(worker: Worker) -> bool:
    return worker.last_heartbeat_at >= _stale_before()


class WorkerStateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("alive", _("alive")), ("lost", _("lost"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        workers = cast(WorkerQuerySet, queryset)
        if self.value() == "alive":
            return workers.alive(_stale_before())
        if self.value() == "lost":
            return workers.lost(_stale_before())
        return queryset


class WorkerAdmin(WorkerModelAdmin):
    """Worker processes, as their heartbeats report them. Read-only; a worker whose heartbeat
    is older than ``BACKGROUND_TASKS_RESCUE_AFTER`` counts as lost and only such a row may be
    deleted (its tasks are rescued either way)."""

    list_display = (
        "id",
        "host",
        "pid",
        "queues_display",
        "concurrency",
        "running_tasks",
        "started_at",
        "last_heartbeat_at",
        "alive",
    )
    list_filter = (WorkerStateFilter, "host")
    search_fields = ("id", "host")
    ordering = ("host", "pid")
    actions = ("delete_lost",)
    fields = list_display  # the detail page shows the same, all read-only
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Worker]:
        # One subquery per page instead of one count per worker.
        running = (
            Task.objects.filter(locked_by=OuterRef("pk"))
            .order_by()
            .values("locked_by")
            .annotate(count=Count("pk"))
            .values("count")
        )
        running_count = Coalesce(Subquery(running, output_field=IntegerField()), 0)
        return cast(
            "QuerySet[Worker]", super().get_queryset(request).annotate(running_count=running_count)
        )

    @admin.display(description=_("queues"))
    def queues_display(self, obj: Worker) -> str:
        return ", ".join(str(queue) for queue in obj.queues) if obj.queues else str(_("all"))

    @admin.display(description=_("running tasks"), ordering="running_count")
    def running_tasks(self, obj: Worker) -> SafeString:
        url = reverse(f"{self.admin_site.name}:background_tasks_task_changelist")
        count = getattr(obj, "running_count", 0)
        return format_html('<a href="{}?{}">{}</a>', url, urlencode({"locked_by": obj.pk}), count)

    @admin.display(description=_("alive"), boolean=True, ordering="last_heartbeat_at")
    def alive(self, obj: Worker) -> bool:
        return _is_alive(obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Worker | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Worker | None = None) -> bool:
        if obj is not None and _is_alive(obj):
            return False
        return super().has_delete_permission(request, obj)

    # Django 6.1 passes ``action_location`` (and warns about overrides without it); 5.2 does not.
    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        extra = {} if action_location is None else {"action_location": action_location}
        actions = super().get_actions(request, **extra)
        # Django's bulk delete would remove live workers too; delete_lost replaces it.
        actions.pop("delete_selected", None)
        return actions

    def delete_model(self, request: HttpRequest, obj: Worker) -> None:
        # Fenced: a worker that heartbeated since the page was opened keeps its row.
        Worker.objects.filter(pk=obj.pk).lost(_stale_before()).delete()

    @admin.action(permissions=["delete"], description=_("Delete selected lost workers"))
    def delete_lost(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        """Delete the selected workers that are lost; needs ``delete_worker``. Live ones stay."""
        stale_before = _stale_before()
        selected = queryset.count()
        lost = queryset.filter(last_heartbeat_at__lt=stale_before)
        ids = list(lost.values_list("pk", flat=True))
        if ids:
            self.log_deletions(request, lost)
        deleted, _by_model = Worker.objects.filter(
            pk__in=ids, last_heartbeat_at__lt=stale_before
        ).delete()
        self.message_user(
            request,
            ngettext("%(count)d lost worker deleted.", "%(count)d lost workers deleted.", deleted)
            % {"count": deleted},
            messages.SUCCESS,
        )
        if selected > deleted:
            self.message_user(
                request,
                ngettext(
                    "%(count)d worker kept: it is alive.",
                    "%(count)d workers kept: they are alive.",
                    selected - deleted,
                )
                % {"count": selected - deleted},
                messages.WARNING,
            )
