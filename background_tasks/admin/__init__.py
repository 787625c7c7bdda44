"""The Django admin: the queue, its history, the workers and the cron schedules.

Importing this package (Django's admin autodiscovery does) registers the ModelAdmins with the
default admin site. Every action checks a Django permission and never waits for a row a
worker holds. Parameters, results, tracebacks and names are user data: they are always shown
escaped, never marked safe.
"""

from __future__ import annotations

from django.contrib import admin

from ..models import CompletedTask, Schedule, Task, Worker
from .completed import CompletedTaskAdmin, KnownQueueFilter, KnownTaskNameFilter
from .schedule_form import ScheduleForm
from .schedules import ScheduleAdmin, run_schedule_now
from .tasks import EDITABLE_TASK_FIELDS, TaskAdmin, TaskStatusFilter, WorkerFilter
from .workers import WorkerAdmin, WorkerStateFilter

admin.site.register(Task, TaskAdmin)
admin.site.register(CompletedTask, CompletedTaskAdmin)
admin.site.register(Worker, WorkerAdmin)
admin.site.register(Schedule, ScheduleAdmin)

__all__ = [
    "EDITABLE_TASK_FIELDS",
    "CompletedTaskAdmin",
    "KnownQueueFilter",
    "KnownTaskNameFilter",
    "ScheduleAdmin",
    "ScheduleForm",
    "TaskAdmin",
    "TaskStatusFilter",
    "WorkerAdmin",
    "WorkerFilter",
    "WorkerStateFilter",
    "run_schedule_now",
]
