"""The history in the admin: finished tasks, read-only, retried as fresh tasks.

The history grows large, so nothing here scans it whole on every page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import DurationField, ExpressionWrapper, F, QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .. import operations
from ..conf import app_settings
from ..models import CompletedTask, Task, Worker
from ..registry import registry
from .display import TaskColumns, badge, format_duration, pretty_json

if TYPE_CHECKING:
    CompletedTaskModelAdmin = admin.ModelAdmin[CompletedTask]
else:
    CompletedTaskModelAdmin = admin.ModelAdmin


class _KnownValuesFilter(admin.SimpleListFilter):
    """Filter on a field, offering the values the running system knows of as choices."""

    field_name = ""

    def known_values(self) -> set[str]:
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        values = self.known_values()
        if self.value():  # a value typed into the URL, or no longer known, stays selectable
            values.add(str(self.value()))
        return [(value, value) for value in sorted(values)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        if not self.value():
            return queryset
        filtered: QuerySet[Any] = queryset.filter(**{self.field_name: self.value()})
        return filtered


class KnownTaskNameFilter(_KnownValuesFilter):
    """Every registered task (a name found only in old history rows is still searchable)."""

    title = _("task name")
    parameter_name = field_name = "task_name"

    def known_values(self) -> set[str]:
        return set(registry)


class KnownQueueFilter(_KnownValuesFilter):
    """The default queue, the queues of registered tasks and those workers serve."""

    title = _("queue")
    parameter_name = field_name = "queue"

    def known_values(self) -> set[str]:
        values = {str(app_settings.DEFAULT_QUEUE)}
        values.update(registry.get(name).queue or "" for name in registry)
        for queues in Worker.objects.values_list("queues", flat=True):
            values.update(str(queue) for queue in queues or ())
        values.discard("")
        return values


class CompletedTaskAdmin(TaskColumns, CompletedTaskModelAdmin):
    """The history. Read-only; rows may be deleted, and retried by users who may add tasks.

    The history grows large, so the list avoids whole-table scans on every page: no full
    count, no date hierarchy, and filter choices that do not come from a DISTINCT over it.
    """

    id_search_fields = ("pk", "task_id")
    list_display = (
        "name",
        "queue",
        "status_badge",
        "attempts",
        "finished_at",
        "duration_display",
        "worker",
    )
    list_filter = ("status", KnownQueueFilter, KnownTaskNameFilter, "finished_at")
    search_fields = ("task_name", "verbose_name", "last_error")
    ordering = ("-finished_at", "-id")
    list_select_related = False
    show_full_result_count = False
    actions = ("retry",)
    fieldsets = (
        (None, {"fields": ("task_name", "verbose_name", "status_badge", "queue", "priority")}),
        (_("Call"), {"fields": ("params_display", "task_hash", "creator_link")}),
        (
            _("Outcome"),
            {"fields": ("result_display", "note", "last_error_display", "attempts")},
        ),
        (
            _("Times"),
            {"fields": ("run_at", "started_at", "finished_at", "duration_display", "created_at")},
        ),
        (_("Worker"), {"fields": ("worker", "task_id")}),
        (_("Progress"), {"fields": ("progress_display", "progress_at")}),
        (_("Repetition"), {"fields": ("repeat_display", "repeat_until")}),
    )
    readonly_fields = (
        "task_name",
        "verbose_name",
        "status_badge",
        "queue",
        "priority",
        "params_display",
        "task_hash",
        "creator_link",
        "result_display",
        "note",
        "last_error_display",
        "attempts",
        "run_at",
        "started_at",
        "finished_at",
        "duration_display",
        "created_at",
        "worker",
        "task_id",
        "progress_display",
        "progress_at",
        "repeat_display",
        "repeat_until",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[CompletedTask]:
        # Lets the list sort by duration.
        duration = ExpressionWrapper(
            F("finished_at") - F("started_at"), output_field=DurationField()
        )
        return cast(
            "QuerySet[CompletedTask]",
            super().get_queryset(request).annotate(duration_delta=duration),
        )

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: CompletedTask) -> SafeString:
        return badge(obj.status, obj.get_status_display())

    @admin.display(description=_("duration"), ordering="duration_delta")
    def duration_display(self, obj: CompletedTask) -> str:
        seconds = obj.duration
        return self.get_empty_value_display() if seconds is None else format_duration(seconds)

    @admin.display(description=_("result"))
    def result_display(self, obj: CompletedTask) -> str:
        return self.get_empty_value_display() if obj.result is None else pretty_json(obj.result)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: CompletedTask | None = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        """Retrying enqueues a new task, so it takes the permission to add tasks."""
        opts = Task._meta
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('add', opts)}")

    @admin.action(permissions=["retry"], description=_("Retry selected %(verbose_name_plural)s"))
    def retry(self, request: HttpRequest, queryset: QuerySet[CompletedTask]) -> None:
        """Enqueue a fresh copy of each selected task, ready now; needs ``add_task``."""
        retried, _gone = operations.retry(list(queryset.values_list("pk", flat=True)))
        count = len(retried)
        self.message_user(
            request,
            ngettext("%(count)d task queued again.", "%(count)d tasks queued again.", count)
            % {"count": count},
            messages.SUCCESS,
        )
