"""Rendering shared by the admins: JSON, tracebacks, status badges, durations, and the columns
the Task and CompletedTask admins have in common.

Everything shown here is user data (parameters, results, errors, names): it goes through
``format_html`` and is never marked safe as it is.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import CompletedTask, TaskBase

_BADGE_COLOURS = {
    "ready": "#1565c0",
    "scheduled": "#616161",
    "running": "#ef6c00",
    "retrying": "#ad1457",
    "quarantined": "#4e342e",
    CompletedTask.Status.SUCCEEDED: "#2e7d32",
    CompletedTask.Status.FAILED: "#c62828",
    CompletedTask.Status.CANCELLED: "#616161",
}


def badge(key: str, label: object) -> SafeString:
    """Render ``label`` as a coloured pill; the colour comes from a fixed table keyed by state."""
    return format_html(
        '<span style="background:{};color:#fff;padding:1px 6px;border-radius:8px;'
        'white-space:nowrap">{}</span>',
        _BADGE_COLOURS.get(key, "#616161"),
        label,
    )


def pre(text: str) -> SafeString:
    """Render text (a traceback, say) escaped, keeping its line breaks."""
    return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', text)


def pretty_json(value: Any) -> SafeString:
    """Render a JSON value indented and escaped."""
    return pre(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def format_duration(seconds: float) -> str:
    """Return a duration as "1.25 s", "3 min 4 s" or "2 h 5 min"."""
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class TaskColumns:
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
        return pretty_json(obj.params)

    @admin.display(description=_("repeat"))
    def repeat_display(self, obj: TaskBase) -> str:
        return self.get_empty_value_display() if obj.repeat is None else pretty_json(obj.repeat)

    @admin.display(description=_("last error"))
    def last_error_display(self, obj: TaskBase) -> str:
        return pre(obj.last_error) if obj.last_error else self.get_empty_value_display()

    @admin.display(description=_("progress"))
    def progress_display(self, obj: TaskBase) -> str:
        """Render what the task last reported with set_progress() as a bar and its numbers."""
        if obj.progress_done is None:
            return self.get_empty_value_display()
        if obj.progress_total:
            shown = format_html(
                '<progress value="{}" max="{}"></progress> {} / {}',
                min(obj.progress_done, obj.progress_total),
                obj.progress_total,
                obj.progress_done,
                obj.progress_total,
            )
        else:
            shown = format_html("{}", obj.progress_done)
        if obj.progress_message:
            shown = format_html("{}<br><small>{}</small>", shown, obj.progress_message)
        return shown

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
        # isascii(): isdigit() is also true of "²" and other digits int() refuses.
        if term.isascii() and term.isdigit() and len(term) < 19:  # fits a bigint
            by_id = Q()
            for field in self.id_search_fields:
                by_id |= Q(**{field: int(term)})
            results = results | queryset.filter(by_id)
        return results, may_have_duplicates
