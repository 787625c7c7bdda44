"""The schedule form: a schedule is checked as a worker will read it before it is saved."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django import forms
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .. import periodic
from ..exceptions import InvalidTaskArguments, InvalidTaskError
from ..models import Schedule, empty_params
from ..registry import registry
from ..serialization import check_signature, encode_params

if TYPE_CHECKING:
    ScheduleModelForm = forms.ModelForm[Schedule]
else:
    ScheduleModelForm = forms.ModelForm

#: What a schedule is: editable in the admin only for schedules made there.
DEFINITION_FIELDS = (
    "name",
    "task_name",
    "params",
    "cron",
    "time_zone",
    "catch_up",
    "queue",
    "priority",
)


def _checked(code: str, cron: object, tz_name: object, catch_up: object) -> str:
    """Check schedule options as ``periodic`` does; return the normalised cron expression.

    Raise a ValidationError with ``periodic``'s message, which names the bad value.
    """
    where = "schedule"
    try:
        return periodic.check_schedule_options(where, cron, tz_name, catch_up)
    except InvalidTaskError as exc:
        raise ValidationError(str(exc).removeprefix(f"{where}: "), code=code) from None


def _names_defined_elsewhere() -> set[str]:
    try:
        return set(periodic.all_definitions())
    except ImproperlyConfigured:
        # A broken setting is reported by the system checks and the worker, not by this form.
        return set()


class ScheduleForm(ScheduleModelForm):
    """Validate a schedule as a worker would read it: a registered task, arguments that fit
    its signature as JSON, a valid cron expression and time zone."""

    class Meta:
        model = Schedule
        fields = (*DEFINITION_FIELDS, "enabled")
        widgets = {"params": forms.Textarea(attrs={"rows": 4, "cols": 80})}
        help_texts = {
            "params": _(
                'The call, as JSON: {"args": [1, "two"], "kwargs": {"key": "value"}}. '
                "Empty: no arguments."
            ),
            "cron": _(
                "Five fields (minute hour day-of-month month day-of-week), e.g. "
                "“0 3 * * *”, or @hourly, @daily, @weekly, @monthly, @yearly."
            ),
            "queue": _("Empty: the task's queue, else the default queue."),
            "priority": _("Empty: the task's priority, else the default priority."),
        }
        error_messages = {
            "params": {"invalid": _('Enter valid JSON, like {"args": [1], "kwargs": {}}.')},
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "task_name" in self.fields:
            choices = [("", "---------"), *((name, name) for name in registry)]
            current = self.instance.task_name
            if current and current not in registry:
                # Shown as it is, so that saving never silently picks another task.
                choices.append((current, gettext("%s (not registered)") % current))
            self.fields["task_name"] = forms.ChoiceField(
                label=self.fields["task_name"].label, choices=choices
            )

    def clean_task_name(self) -> str:
        name = str(self.cleaned_data["task_name"])
        if name not in registry:
            raise ValidationError(
                _("No task is registered as %(name)s; choose a registered task."),
                code="not_registered",
                params={"name": repr(name)},
            )
        return name

    def clean_params(self) -> dict[str, Any]:
        value = self.cleaned_data.get("params")
        if value is None or value == "":
            return empty_params()
        if not isinstance(value, dict) or set(value) - {"args", "kwargs"}:
            raise ValidationError(
                _(
                    'The parameters must be a JSON object like {"args": [...], "kwargs": {...}}, '
                    "not %(value)s."
                ),
                code="shape",
                params={"value": json.dumps(value, ensure_ascii=False)},
            )
        args, kwargs = value.get("args", []), value.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise ValidationError(
                _('"args" must be a list and "kwargs" an object, not %(value)s.'),
                code="shape",
                params={"value": json.dumps(value, ensure_ascii=False)},
            )
        return {"args": args, "kwargs": kwargs}

    def clean_cron(self) -> str:
        return _checked("cron", self.cleaned_data["cron"], "", "once")

    def clean_time_zone(self) -> str:
        tz_name = str(self.cleaned_data.get("time_zone") or "").strip()
        _checked("time_zone", "* * * * *", tz_name, "once")
        return tz_name

    def clean_catch_up(self) -> str:
        catch_up = str(self.cleaned_data["catch_up"])
        _checked("catch_up", "* * * * *", "", catch_up)
        return catch_up

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"])
        if "name" in self.changed_data and name in _names_defined_elsewhere():
            raise ValidationError(
                _(
                    "A schedule named %(name)s is defined in code or settings; a worker would "
                    "overwrite this one with it. Choose another name."
                ),
                code="defined_elsewhere",
                params={"name": repr(name)},
            )
        return name

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        task_name, params = cleaned.get("task_name"), cleaned.get("params")
        if "params" in self.fields and isinstance(params, dict) and isinstance(task_name, str):
            self._check_call(cleaned, task_name, params)
        if cleaned.get("enabled") and not self.errors:
            # A cron or zone broken by hand in the database (code-defined schedules only show
            # "enabled") must be refused here, not fail when save computes the next tick.
            probe = Schedule(
                cron=cleaned.get("cron", self.instance.cron),
                time_zone=cleaned.get("time_zone", self.instance.time_zone),
            )
            try:
                periodic.first_fire(probe, timezone.now())
            except ValueError as exc:
                raise ValidationError(
                    _("This schedule cannot be enabled: %(error)s"),
                    code="invalid_timing",
                    params={"error": str(exc)},
                ) from None
        return cleaned

    def _check_call(self, cleaned: dict[str, Any], task_name: str, params: dict[str, Any]) -> None:
        """Check the arguments fit the task and store them as its worker will see them."""
        if task_name not in registry:
            return  # clean_task_name has said so
        function = registry.get(task_name)
        args, kwargs = params["args"], params["kwargs"]
        try:
            check_signature(task_name, function.func, args, kwargs)
            cleaned["params"] = encode_params(task_name, function.func, args, kwargs)
        except InvalidTaskArguments as exc:
            self.add_error("params", str(exc))
