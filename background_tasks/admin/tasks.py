"""The live queue in the admin: inspect tasks, run them now, cancel them, edit a waiting one.

Every action checks a Django permission, then calls ``background_tasks.operations`` (which
never waits for a row a worker holds) and reports what it did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .. import lifecycle, operations
from ..models import QUARANTINED, Task, TaskQuerySet
from ..states import STATE_ALIASES, TaskState
from .dashboard import DashboardUrls
from .display import TaskColumns, badge

if TYPE_CHECKING:
    from django.forms import ModelForm

    TaskModelAdmin = admin.ModelAdmin[Task]
else:
    TaskModelAdmin = admin.ModelAdmin

#: Fields an operator may change on a task no worker holds.
EDITABLE_TASK_FIELDS = ("queue", "priority", "run_at")

_NOT_SAVED = "_background_tasks_not_saved"


#: Filter choices that need a word of explanation.
_STATE_HINTS = {
    TaskState.RETRYING: _("retrying (an attempt failed; waits for the next)"),
    TaskState.QUARANTINED: _("quarantined (cannot be run or recorded)"),
}


class TaskStatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [(state.value, _STATE_HINTS.get(state, state.label)) for state in TaskState]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        # "failing", the filter's older name, still works in saved links.
        if value in TaskState.values or value in STATE_ALIASES:
            return cast(TaskQuerySet, queryset).in_state(value)
        return queryset


class WorkerFilter(admin.AllValuesFieldListFilter):
    """The ``locked_by`` values, titled after what they are."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.title = _("worker")


class TaskAdmin(DashboardUrls, TaskColumns, TaskModelAdmin):
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
        "progress_display",
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
        (_("Progress"), {"fields": ("progress_display", "progress_at")}),
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
        "progress_display",
        "progress_at",
        "repeat_display",
        "repeat_until",
        "scheduled_at",
        "repeat_anchor",
        "created_at",
        "unique_key",
    )

    @admin.display(description=_("status"))
    def status_display(self, obj: Task) -> SafeString:
        state = obj.state
        label: object = state.label
        if state == TaskState.RUNNING and obj.cancel_requested_at is not None:
            label = _("running, cancel requested")
        return badge(state.value, label)

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
        # Only a quarantined row, which no worker will ever run or record: deleting it is the
        # operator's way to be rid of one. Every other task ends through a worker or a cancel,
        # with a record in the completed tasks.
        return (
            obj is not None
            and obj.locked_by == QUARANTINED
            and super().has_delete_permission(request, obj)
        )

    def delete_model(self, request: HttpRequest, obj: Task) -> None:
        # Fenced: a row released meanwhile (and perhaps claimed since) is left alone.
        Task.objects.using(operations.using()).filter(pk=obj.pk, locked_by=QUARANTINED).delete()

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
                    _(
                        "This task is quarantined: no worker will run it (the reason is its "
                        "last error). Fix the row in the database and set its locked_by back "
                        "to NULL to run it again, or delete it."
                    )
                    if obj.locked_by == QUARANTINED
                    else _("A worker is running this task: it cannot be changed."),
                    messages.WARNING if obj.locked_by == QUARANTINED else messages.INFO,
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
        if obj.is_locked or (values and not operations.update_waiting([obj.pk], **values)):
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
        outcome = operations.run_now(ids)
        # A task already due keeps its place in the queue: it runs now too.
        done = len(outcome.done) + len(outcome.unchanged)
        self.message_user(
            request,
            ngettext("%(count)d task will run now.", "%(count)d tasks will run now.", done)
            % {"count": done},
            messages.SUCCESS,
        )
        self._report_quarantined(request, len(outcome.quarantined))
        if len(ids) > done + len(outcome.quarantined):
            self._report_skipped(request, len(ids) - done - len(outcome.quarantined))

    @admin.action(permissions=["change"], description=_("Cancel selected %(verbose_name_plural)s"))
    def cancel(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        """Cancel tasks; needs ``change_task`` (the same as Run now: it changes a task's state).

        A waiting task is recorded as cancelled in the completed tasks at once. A running one
        is asked to stop: it sees ``is_cancelled()`` return True and stops when it next checks.
        """
        ids = list(queryset.values_list("pk", flat=True))
        reason = f"Cancelled by {request.user.get_username()} in the admin."
        outcome = operations.cancel(ids, reason)
        cancelled, requested = len(outcome.done), len(outcome.running)
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
        self._report_quarantined(request, len(outcome.quarantined))
        untouched = len(ids) - cancelled - requested - len(outcome.quarantined)
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

    def _report_quarantined(self, request: HttpRequest, count: int) -> None:
        if count:
            self.message_user(
                request,
                ngettext(
                    "%(count)d task skipped: it is quarantined, and no worker will run it. Open "
                    "it to see why; fix it and release it, or delete it.",
                    "%(count)d tasks skipped: they are quarantined, and no worker will run "
                    "them. Open each to see why; fix it and release it, or delete it.",
                    count,
                )
                % {"count": count},
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
