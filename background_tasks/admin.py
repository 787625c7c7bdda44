"""The Django admin: inspect the queue, run tasks now, cancel and retry them, see the workers.

Every action checks a Django permission and never waits for a row a worker holds: such rows
are fenced out with ``locked_by IS NULL`` and, where the database can, skipped with
``SELECT ... FOR UPDATE SKIP LOCKED``. Parameters, results and tracebacks are user data: they
are always shown escaped, never marked safe.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.contrib.auth import get_permission_codename
from django.db import connections, router, transaction
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import lifecycle
from .conf import app_settings
from .models import CompletedTask, Task, TaskBase, TaskQuerySet, Worker, WorkerQuerySet
from .registry import registry

if TYPE_CHECKING:
    from django.forms import ModelForm

    TaskModelAdmin = admin.ModelAdmin[Task]
    CompletedTaskModelAdmin = admin.ModelAdmin[CompletedTask]
    WorkerModelAdmin = admin.ModelAdmin[Worker]
else:
    TaskModelAdmin = CompletedTaskModelAdmin = WorkerModelAdmin = admin.ModelAdmin

#: Fields an operator may change on a task no worker holds.
EDITABLE_TASK_FIELDS = ("queue", "priority", "run_at")

_NOT_SAVED = "_background_tasks_not_saved"

_BADGE_COLOURS = {
    "ready": "#1565c0",
    "scheduled": "#616161",
    "running": "#ef6c00",
    CompletedTask.Status.SUCCEEDED: "#2e7d32",
    CompletedTask.Status.FAILED: "#c62828",
    CompletedTask.Status.CANCELLED: "#616161",
}


def _badge(key: str, label: object) -> SafeString:
    # The colour comes from a fixed table, never from the row; the label is escaped.
    return format_html(
        '<span style="background:{};color:#fff;padding:1px 6px;border-radius:8px;'
        'white-space:nowrap">{}</span>',
        _BADGE_COLOURS.get(key, "#616161"),
        label,
    )


def _pre(text: str) -> SafeString:
    return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', text)


def _pretty_json(value: Any) -> SafeString:
    return _pre(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _stale_before() -> datetime:
    return timezone.now() - timedelta(seconds=float(app_settings.RESCUE_AFTER))


def _is_alive(worker: Worker) -> bool:
    return worker.last_heartbeat_at >= _stale_before()


def _update_unlocked(ids: list[int], **values: Any) -> int:
    """Update the selected tasks no worker holds; return how many were updated.

    Rows a claim is locking right now are skipped, not waited for, where the database has
    SKIP LOCKED; the ``locked_by IS NULL`` fence keeps rows held by a worker out everywhere.
    """
    using = router.db_for_write(Task)
    with transaction.atomic(using=using):
        rows = Task.objects.using(using).filter(pk__in=ids, locked_by__isnull=True)
        if connections[using].features.has_select_for_update_skip_locked:
            free = list(rows.select_for_update(skip_locked=True).values_list("pk", flat=True))
            rows = Task.objects.using(using).filter(pk__in=free, locked_by__isnull=True)
        return int(rows.order_by().update(**values))


class _TaskDisplay:
    """Columns and detail fields shared by the Task and CompletedTask admins."""

    admin_site: admin.AdminSite
    #: Integer fields a number typed into the search box is matched against, exactly.
    id_search_fields: tuple[str, ...] = ("pk",)

    if TYPE_CHECKING:  # provided by ModelAdmin

        def get_empty_value_display(self) -> SafeString: ...

    @admin.display(description=_("task"), ordering="task_name")
    def name(self, obj: TaskBase) -> str | SafeString:
        if obj.verbose_name:
            return format_html('<span title="{}">{}</span>', obj.task_name, obj.verbose_name)
        return obj.task_name

    @admin.display(description=_("parameters"))
    def params_display(self, obj: TaskBase) -> SafeString:
        return _pretty_json(obj.params)

    @admin.display(description=_("repeat"))
    def repeat_display(self, obj: TaskBase) -> str:
        return self.get_empty_value_display() if obj.repeat is None else _pretty_json(obj.repeat)

    @admin.display(description=_("last error"))
    def last_error_display(self, obj: TaskBase) -> str:
        return _pre(obj.last_error) if obj.last_error else self.get_empty_value_display()

    @admin.display(description=_("has error"), boolean=True)
    def has_error(self, obj: TaskBase) -> bool:
        return obj.has_error

    @admin.display(description=_("creator"))
    def creator_link(self, obj: TaskBase) -> str:
        if obj.creator_content_type_id is None or obj.creator_object_id is None:
            return self.get_empty_value_display()
        try:
            creator = obj.creator
        except (AttributeError, ValueError):  # the model is gone, or the id no longer fits it
            creator = None
        if creator is None:
            return f"{obj.creator_content_type} #{obj.creator_object_id}"
        opts = creator._meta
        if self.admin_site.is_registered(type(creator)):
            try:
                url = reverse(
                    f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change",
                    args=[quote(creator.pk)],
                )
            except NoReverseMatch:
                pass
            else:
                return format_html('<a href="{}">{}</a>', url, str(creator))
        return str(creator)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """Also find a task by its id when the search term is a number."""
        results, may_have_duplicates = super().get_search_results(  # type: ignore[misc]
            request, queryset, search_term
        )
        term = search_term.strip()
        if term.isdigit() and len(term) < 19:  # fits a bigint
            by_id = Q()
            for field in self.id_search_fields:
                by_id |= Q(**{field: int(term)})
            results = results | queryset.filter(by_id)
        return results, may_have_duplicates


class TaskStatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("ready", _("ready")),
            ("scheduled", _("scheduled")),
            ("running", _("running")),
            ("failing", _("failing (has an error, will retry)")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        tasks = cast(TaskQuerySet, queryset)
        value = self.value()
        if value == "ready":
            return tasks.ready()
        if value == "scheduled":
            return tasks.scheduled()
        if value == "running":
            return tasks.locked()
        if value == "failing":
            return tasks.failing()
        return queryset


class WorkerFilter(admin.AllValuesFieldListFilter):
    """The ``locked_by`` values, titled after what they are."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.title = _("worker")


@admin.register(Task)
class TaskAdmin(_TaskDisplay, TaskModelAdmin):
    """The live queue. Rows are enqueued by code, so there is no add and no delete (cancel
    instead: it keeps a record). Queue, priority and run time of a row no worker holds may be
    changed; a row a worker holds is read-only."""

    list_display = (
        "name",
        "queue",
        "priority",
        "run_at",
        "attempts_display",
        "status_display",
        "worker",
        "has_error",
    )
    # Choices by DISTINCT are cheap here: queue leads the claim index, task_name and locked_by
    # have their own, and the live table stays far smaller than the history.
    list_filter = (TaskStatusFilter, "queue", "task_name", ("locked_by", WorkerFilter))
    search_fields = ("task_name", "verbose_name", "=task_hash", "queue")
    date_hierarchy = "run_at"
    # The order workers take them in, give or take priority: what runs next comes first.
    ordering = ("run_at", "id")
    # No relation is shown in the list, so there is nothing to join: one query per page.
    list_select_related = False
    show_full_result_count = False
    actions = ("run_now", "cancel")
    fieldsets = (
        (None, {"fields": ("task_name", "verbose_name", "status_display", *EDITABLE_TASK_FIELDS)}),
        (_("Call"), {"fields": ("params_display", "task_hash", "creator_link")}),
        (_("Attempts"), {"fields": ("attempts_display", "last_error_display")}),
        (_("Worker"), {"fields": ("worker_link", "locked_at", "cancel_requested_at")}),
        (
            _("Repetition"),
            {"fields": ("repeat_display", "repeat_until", "scheduled_at", "repeat_anchor")},
        ),
        (_("Record"), {"fields": ("created_at", "unique_key")}),
    )
    readonly_fields = (
        "task_name",
        "verbose_name",
        "status_display",
        "params_display",
        "task_hash",
        "creator_link",
        "attempts_display",
        "last_error_display",
        "worker_link",
        "locked_at",
        "cancel_requested_at",
        "repeat_display",
        "repeat_until",
        "scheduled_at",
        "repeat_anchor",
        "created_at",
        "unique_key",
    )

    @admin.display(description=_("status"))
    def status_display(self, obj: Task) -> SafeString:
        status = obj.status
        label: object = _(status)
        if status == "running" and obj.cancel_requested_at is not None:
            label = _("running, cancel requested")
        return _badge(status, label)

    @admin.display(description=_("attempts"), ordering="attempts")
    def attempts_display(self, obj: Task) -> str:
        return f"{obj.attempts} / {lifecycle.max_attempts_of(obj)}"

    @admin.display(description=_("worker"), ordering="locked_by")
    def worker(self, obj: Task) -> str | None:
        return obj.locked_by

    @admin.display(description=_("worker"))
    def worker_link(self, obj: Task) -> str:
        if obj.locked_by is None:
            return self.get_empty_value_display()
        url = reverse(
            f"{self.admin_site.name}:background_tasks_worker_change", args=[quote(obj.locked_by)]
        )
        return format_html('<a href="{}">{}</a>', url, obj.locked_by)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Task | None = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Task | None = None) -> Any:
        if obj is None or obj.is_locked:
            return (*self.readonly_fields, *EDITABLE_TASK_FIELDS)
        return self.readonly_fields

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Task | None = None,
    ) -> HttpResponse:
        if obj is not None and obj.is_locked:
            context.update(show_save=False, show_save_and_continue=False)
            if request.method == "GET":
                self.message_user(
                    request,
                    _("A worker is running this task: it cannot be changed."),
                    messages.INFO,
                )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(
        self, request: HttpRequest, obj: Task, form: ModelForm[Task], change: bool
    ) -> None:
        """Write only the changed editable fields, and only while no worker holds the row.

        A full ``save()`` would write back every column read when the page was opened and so
        could clear the lock of a worker that claimed the task meanwhile.
        """
        changed = [name for name in EDITABLE_TASK_FIELDS if name in form.changed_data]
        values = {name: getattr(obj, name) for name in changed}
        if obj.is_locked or (values and not _update_unlocked([obj.pk], **values)):
            setattr(obj, _NOT_SAVED, True)

    def log_change(self, request: HttpRequest, obj: Task, message: Any) -> Any:
        if getattr(obj, _NOT_SAVED, False):
            return None
        return super().log_change(request, obj, message)

    def response_change(self, request: HttpRequest, obj: Task) -> HttpResponse:
        if getattr(obj, _NOT_SAVED, False):
            self.message_user(
                request,
                _("The task was not changed: a worker took it, or it finished, meanwhile."),
                messages.WARNING,
            )
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    @admin.action(permissions=["change"], description=_("Run selected %(verbose_name_plural)s now"))
    def run_now(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        """Make waiting tasks ready now; needs ``change_task``. Running tasks are skipped."""
        ids = list(queryset.values_list("pk", flat=True))
        done = _update_unlocked(ids, run_at=timezone.now())
        self.message_user(
            request,
            ngettext("%(count)d task will run now.", "%(count)d tasks will run now.", done)
            % {"count": done},
            messages.SUCCESS,
        )
        if len(ids) > done:
            self._report_skipped(request, len(ids) - done)

    @admin.action(permissions=["change"], description=_("Cancel selected %(verbose_name_plural)s"))
    def cancel(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        """Cancel tasks; needs ``change_task`` (the same as Run now: it changes a task's state).

        A waiting task is recorded as cancelled in the completed tasks at once. A running one
        is asked to stop: it sees ``is_cancelled()`` return True and stops when it next checks.
        """
        ids = list(queryset.values_list("pk", flat=True))
        reason = f"Cancelled by {request.user.get_username()} in the admin."
        cancelled, _skipped = lifecycle.cancel_waiting(ids, reason)
        # A row claimed after cancel_waiting skipped it is caught here, as a running one.
        requested = lifecycle.request_cancel(ids)
        if cancelled:
            self.message_user(
                request,
                ngettext("%(count)d task cancelled.", "%(count)d tasks cancelled.", cancelled)
                % {"count": cancelled},
                messages.SUCCESS,
            )
        if requested:
            self.message_user(
                request,
                ngettext(
                    "Cancel requested for %(count)d running task: it stops when it next checks "
                    "is_cancelled().",
                    "Cancel requested for %(count)d running tasks: they stop when they next "
                    "check is_cancelled().",
                    requested,
                )
                % {"count": requested},
                messages.SUCCESS,
            )
        untouched = len(ids) - cancelled - requested
        if untouched > 0:
            self.message_user(
                request,
                ngettext(
                    "%(count)d task was not cancelled: a worker was taking it, or it finished or "
                    "was released meanwhile. Try again.",
                    "%(count)d tasks were not cancelled: a worker was taking them, or they "
                    "finished or were released meanwhile. Try again.",
                    untouched,
                )
                % {"count": untouched},
                messages.WARNING,
            )

    def _report_skipped(self, request: HttpRequest, skipped: int) -> None:
        self.message_user(
            request,
            ngettext(
                "%(count)d task skipped: a worker is running it, or it finished.",
                "%(count)d tasks skipped: a worker is running them, or they finished.",
                skipped,
            )
            % {"count": skipped},
            messages.WARNING,
        )


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


@admin.register(CompletedTask)
class CompletedTaskAdmin(_TaskDisplay, CompletedTaskModelAdmin):
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
        (_("Outcome"), {"fields": ("result_display", "last_error_display", "attempts")}),
        (
            _("Times"),
            {"fields": ("run_at", "started_at", "finished_at", "duration_display", "created_at")},
        ),
        (_("Worker"), {"fields": ("worker", "task_id")}),
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
        "last_error_display",
        "attempts",
        "run_at",
        "started_at",
        "finished_at",
        "duration_display",
        "created_at",
        "worker",
        "task_id",
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
        return _badge(obj.status, obj.get_status_display())

    @admin.display(description=_("duration"), ordering="duration_delta")
    def duration_display(self, obj: CompletedTask) -> str:
        seconds = obj.duration
        return self.get_empty_value_display() if seconds is None else _format_duration(seconds)

    @admin.display(description=_("result"))
    def result_display(self, obj: CompletedTask) -> str:
        return self.get_empty_value_display() if obj.result is None else _pretty_json(obj.result)

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
        with transaction.atomic(using=router.db_for_write(Task)):
            count = 0
            for completed in queryset:
                lifecycle.retry_completed(completed)
                count += 1
        self.message_user(
            request,
            ngettext("%(count)d task queued again.", "%(count)d tasks queued again.", count)
            % {"count": count},
            messages.SUCCESS,
        )


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


@admin.register(Worker)
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
    fields = (
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

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
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
