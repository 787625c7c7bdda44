"""Cron schedules in the admin: create, edit, enable, disable and run them now.

A schedule defined in code or settings is written back from its definition whenever a worker
starts, so the admin lets an operator change only its ``enabled`` flag (which that sync keeps,
so a pause survives a deploy), and delete it only once it is orphaned (no longer defined).
Schedules made here are entirely the admin's.

A schedule enqueues tasks, so whatever makes one fire (creating it, editing what or when it
runs, enabling it, running it now) also takes the permission to add tasks (``add_task``):
``add_schedule`` or ``change_schedule`` alone cannot make any task run every minute. Disabling
takes ``change_schedule`` only.
"""

from __future__ import annotations

from datetime import datetime
from datetime import timezone as dt_timezone
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.contrib.auth import get_permission_codename
from django.db import router, transaction
from django.db.models import Exists, OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from .. import periodic, schedule_control
from ..enqueue import insert_task
from ..models import CompletedTask, Schedule, Task
from ..registry import registry
from ..timezones import aware
from .display import badge, pretty_json
from .schedule_form import DEFINITION_FIELDS, ScheduleForm

if TYPE_CHECKING:
    ScheduleModelAdmin = admin.ModelAdmin[Schedule]
else:
    ScheduleModelAdmin = admin.ModelAdmin

#: Changing any of these (or creating the schedule) restarts it from its next tick after now.
TIMING_FIELDS = frozenset({"cron", "time_zone", "enabled"})
#: What the workers record; never edited by hand.
STATE_FIELDS = (
    "source",
    "orphaned_at",
    "next_fire_display",
    "last_fired_at",
    "last_task_link",
    "created_at",
    "updated_at",
)

_DEFINED_ELSEWHERE = {
    "code": _(
        "This schedule is defined in code: its task, parameters and timing are written back "
        "from that definition whenever a worker starts, so they cannot be changed here. Only "
        "“enabled” can be changed; a disabled schedule stays disabled across deploys."
    ),
    "settings": _(
        "This schedule is defined in the BACKGROUND_TASKS_SCHEDULES setting: its task, "
        "parameters and timing are written back from that definition whenever a worker "
        "starts, so they cannot be changed here. Only “enabled” can be changed; a disabled "
        "schedule stays disabled across deploys."
    ),
}
_ORPHANED = _(
    "No worker that started since this schedule was orphaned defines it in its code or "
    "settings: it does not fire. A worker that defines it takes it back as it is (paused or "
    "not) when it starts. Delete it once no version of your code declares it any more."
)
# str() gives the value at run time; mypy with django-stubs 6.1 misreads nested choices members
# as their (value, label) tuples, and comparing against those fails type checking.
_FROM_ADMIN = str(Schedule.Source.ADMIN)
_VERBOSE_NAME_LENGTH = 255  # Task.verbose_name's max_length


def run_schedule_now(schedule: Schedule, now: datetime | None = None) -> Task:
    """Enqueue one task of ``schedule``, ready now, outside its series of ticks.

    The task is built exactly as a tick's task is (queue, priority, max attempts), but the
    schedule is left as it is: its next tick, last tick and last task do not move.
    """
    now = now or timezone.now()
    # The tick builder itself (private to periodic for now), so the two can never drift apart.
    task = periodic.task_for_tick(schedule, now, now)
    suffix = " (run now)"
    task.verbose_name = schedule.name[: _VERBOSE_NAME_LENGTH - len(suffix)] + suffix
    return insert_task(task, using=router.db_for_write(Task), robust_signal=True)


class ScheduleAdmin(ScheduleModelAdmin):
    """Cron schedules: what runs when, when it next runs, and what its last tick enqueued."""

    form = ScheduleForm
    list_display = (
        "name",
        "task_name",
        "cron",
        "time_zone_display",
        "enabled",
        "source",
        "next_fire_display",
        "last_fired_at",
        "last_task_link",
        "catch_up",
    )
    list_filter = ("enabled", "source", "task_name")
    search_fields = ("name", "task_name")
    ordering = ("name",)
    list_select_related = False
    actions = ("enable", "disable", "run_now")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Schedule]:
        # Where the last task is now, in two subqueries per page rather than queries per row.
        completed = CompletedTask.objects.filter(task_id=OuterRef("last_task_id")).order_by(
            "-finished_at", "-id"
        )
        return cast(
            "QuerySet[Schedule]",
            super()
            .get_queryset(request)
            .annotate(
                last_task_pending=Exists(Task.objects.filter(pk=OuterRef("last_task_id"))),
                last_completed_id=Subquery(completed.values("pk")[:1]),
                last_completed_status=Subquery(completed.values("status")[:1]),
            ),
        )

    def _definition_editable(self, request: HttpRequest, obj: Schedule | None) -> bool:
        if obj is None:
            return True
        return (
            obj.source == _FROM_ADMIN
            and self.has_change_permission(request, obj)
            and self.has_run_permission(request)
        )

    def get_fieldsets(self, request: HttpRequest, obj: Schedule | None = None) -> Any:
        editable = self._definition_editable(request, obj)
        what: dict[str, Any] = {
            "fields": ("name", "task_name", "params" if editable else "params_display")
        }
        if obj is not None and obj.source != _FROM_ADMIN:
            # Static text only: the admin template renders a fieldset description unescaped.
            what["description"] = _DEFINED_ELSEWHERE.get(obj.source, _DEFINED_ELSEWHERE["code"])
            if obj.orphaned_at is not None:
                what["description"] = _ORPHANED
        fieldsets: list[tuple[Any, dict[str, Any]]] = [
            (None, what),
            (_("When"), {"fields": ("cron", "time_zone", "catch_up", "enabled")}),
            (_("Where"), {"fields": ("queue", "priority")}),
        ]
        if obj is not None:
            fieldsets.append((_("State"), {"fields": STATE_FIELDS}))
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Schedule | None = None) -> Any:
        if obj is None:
            return ()
        if not self.has_run_permission(request):
            # Without add_task nothing here may make the schedule fire (enabling it included).
            definition = ("params_display", *(f for f in DEFINITION_FIELDS if f != "params"))
            return (*definition, "enabled", *STATE_FIELDS)
        if obj.source != _FROM_ADMIN:
            definition = ("params_display", *(f for f in DEFINITION_FIELDS if f != "params"))
            return (*definition, *STATE_FIELDS)
        return STATE_FIELDS

    def has_delete_permission(self, request: HttpRequest, obj: Schedule | None = None) -> bool:
        # A deleted code or settings schedule comes back, enabled, at the next worker start;
        # an orphaned one only if a worker that defines it starts again.
        if obj is not None and obj.source != _FROM_ADMIN and obj.orphaned_at is None:
            return False
        return super().has_delete_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """A new schedule fires, so it takes ``add_task`` as well as ``add_schedule``."""
        return super().has_add_permission(request) and self.has_run_permission(request)

    def has_enable_permission(self, request: HttpRequest) -> bool:
        """Enabling makes a schedule fire: ``change_schedule`` and ``add_task``."""
        return self.has_change_permission(request) and self.has_run_permission(request)

    def has_run_permission(self, request: HttpRequest) -> bool:
        """Firing a schedule enqueues a task, so it takes the permission to add tasks."""
        opts = Task._meta
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('add', opts)}")

    def save_model(
        self, request: HttpRequest, obj: Schedule, form: forms.ModelForm[Schedule], change: bool
    ) -> None:
        """Restart the schedule from its next tick after now when its timing changed.

        An existing schedule is written field by field: a full ``save()`` would write back the
        tick state read with the form and so could undo a tick a worker enqueued meanwhile,
        which would then be enqueued again.
        """
        retime = obj.enabled and (not change or bool(TIMING_FIELDS & set(form.changed_data)))
        if retime:
            obj.next_fire_at = periodic.first_fire(obj, timezone.now())
        if not change:
            obj.source = _FROM_ADMIN
            obj.save()
            return
        fields = list(form.changed_data)
        if retime:
            fields.append("next_fire_at")
        if fields:
            obj.save(update_fields=[*fields, "updated_at"])

    # --- columns ----------------------------------------------------------------------------

    @admin.display(description=_("time zone"), ordering="time_zone")
    def time_zone_display(self, obj: Schedule) -> str:
        return obj.time_zone or f"TIME_ZONE ({timezone.get_default_timezone_name()})"

    @admin.display(description=_("next fire time"), ordering="next_fire_at")
    def next_fire_display(self, obj: Schedule) -> str:
        if obj.next_fire_at is None:
            return self.get_empty_value_display()
        utc = aware(obj.next_fire_at).astimezone(dt_timezone.utc)
        utc_text = f"{utc:%Y-%m-%d %H:%M} UTC"
        try:
            zone = periodic.zone_of(obj)
        except ValueError:
            shown = format_html(
                "{}<br><small>{}</small>",
                utc_text,
                gettext("unknown time zone %r") % obj.time_zone,
            )
        else:
            local = aware(obj.next_fire_at).astimezone(zone)
            if local.utcoffset() or local.tzname() != "UTC":
                local_text = f"{local:%Y-%m-%d %H:%M} {local.tzname()}"
                shown = format_html("{}<br><small>{}</small>", local_text, utc_text)
            else:
                shown = format_html("{}", utc_text)
        if not obj.enabled:
            shown = format_html("{}<br><small>{}</small>", shown, _("disabled: will not fire"))
        if obj.orphaned_at is not None:
            shown = format_html("{}<br><small>{}</small>", shown, _("orphaned: will not fire"))
        return shown

    @admin.display(description=_("last task"))
    def last_task_link(self, obj: Schedule) -> str:
        task_id = obj.last_task_id
        if task_id is None:
            return self.get_empty_value_display()
        site = self.admin_site.name
        if self._annotation(obj, "last_task_pending"):
            url = reverse(f"{site}:background_tasks_task_change", args=[quote(task_id)])
            return format_html('<a href="{}">#{}</a> {}', url, task_id, _("pending"))
        completed_id = self._annotation(obj, "last_completed_id")
        if completed_id is None:
            return format_html("#{} ({})", task_id, _("no longer recorded"))
        status = str(self._annotation(obj, "last_completed_status"))
        url = reverse(f"{site}:background_tasks_completedtask_change", args=[quote(completed_id)])
        label = (
            CompletedTask.Status(status).label if status in CompletedTask.Status.values else status
        )
        return format_html('<a href="{}">#{}</a> {}', url, task_id, badge(status, label))

    @admin.display(description=_("parameters"))
    def params_display(self, obj: Schedule) -> SafeString:
        return pretty_json(obj.params)

    @staticmethod
    def _annotation(obj: Schedule, name: str) -> Any:
        """Read an annotation of ``get_queryset``, or query it for a row loaded without it."""
        if hasattr(obj, name):
            return getattr(obj, name)
        if obj.last_task_id is None:
            return None
        if name == "last_task_pending":
            return Task.objects.filter(pk=obj.last_task_id).exists()
        completed = (
            CompletedTask.objects.filter(task_id=obj.last_task_id)
            .order_by("-finished_at", "-id")
            .values("pk", "status")
            .first()
        )
        if completed is None:
            return None
        return completed["pk"] if name == "last_completed_id" else completed["status"]

    # --- actions ----------------------------------------------------------------------------

    @admin.action(permissions=["enable"], description=_("Enable selected %(verbose_name_plural)s"))
    def enable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        """Enable schedules from their next tick after now (ticks missed meanwhile are not
        caught up); needs ``change_schedule`` and ``add_task``."""
        now = timezone.now()
        count = 0
        for schedule in queryset.filter(enabled=False):
            try:
                resumed = schedule_control.resume(schedule, now).changed
            except ValueError as exc:
                self.message_user(
                    request,
                    gettext("Schedule %(name)r was not enabled: %(error)s")
                    % {"name": schedule.name, "error": exc},
                    messages.ERROR,
                )
                continue
            if resumed:
                count += 1
                self.log_change(request, schedule, [{"changed": {"fields": ["enabled"]}}])
        self.message_user(
            request,
            ngettext("%(count)d schedule enabled.", "%(count)d schedules enabled.", count)
            % {"count": count},
            messages.SUCCESS,
        )

    @admin.action(permissions=["change"], description=_("Disable selected %(verbose_name_plural)s"))
    def disable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        """Stop schedules from firing; needs ``change_schedule``. Their next tick is kept."""
        now = timezone.now()
        count = 0
        for schedule in queryset.filter(enabled=True):
            if schedule_control.pause(schedule, now).changed:
                count += 1
                self.log_change(request, schedule, [{"changed": {"fields": ["enabled"]}}])
        self.message_user(
            request,
            ngettext("%(count)d schedule disabled.", "%(count)d schedules disabled.", count)
            % {"count": count},
            messages.SUCCESS,
        )

    @admin.action(permissions=["run"], description=_("Run selected %(verbose_name_plural)s now"))
    def run_now(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        """Enqueue one task per selected schedule, ready now, whether enabled or not; needs
        ``add_task``. The schedules' ticks are not moved."""
        enqueued: list[str] = []
        with transaction.atomic(using=router.db_for_write(Task)):
            for schedule in queryset:
                if schedule.task_name not in registry:
                    self.message_user(
                        request,
                        gettext("Schedule %(name)r was not run: no task is registered as %(task)r.")
                        % {"name": schedule.name, "task": schedule.task_name},
                        messages.ERROR,
                    )
                    continue
                task = run_schedule_now(schedule)
                enqueued.append(f"{schedule.name} (task #{task.pk})")
        if enqueued:
            self.message_user(
                request,
                ngettext(
                    "%(count)d task enqueued: %(tasks)s.",
                    "%(count)d tasks enqueued: %(tasks)s.",
                    len(enqueued),
                )
                % {"count": len(enqueued), "tasks": ", ".join(enqueued)},
                messages.SUCCESS,
            )
