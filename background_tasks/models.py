"""The tables: live tasks, their history, and the workers that run them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import schedule
from .serialization import params_hash


def empty_params() -> dict[str, Any]:
    return {"args": [], "kwargs": {}}


class TaskBase(models.Model):
    """Fields a task keeps from enqueue to its final record."""

    id = models.BigAutoField(primary_key=True)
    task_name = models.CharField(_("task name"), max_length=255, db_index=True)
    params = models.JSONField(_("parameters"), default=empty_params, blank=True)
    task_hash = models.CharField(_("task hash"), max_length=40, db_index=True, editable=False)
    verbose_name = models.CharField(_("verbose name"), max_length=255, blank=True, default="")
    queue = models.CharField(_("queue"), max_length=100, default="default")
    priority = models.IntegerField(_("priority"), default=0)
    run_at = models.DateTimeField(_("run at"), default=timezone.now)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    max_attempts = models.PositiveIntegerField(
        _("max attempts"),
        null=True,
        blank=True,
        help_text=_("Empty: the task's or the global default."),
    )
    last_error = models.TextField(_("last error"), blank=True, default="")
    repeat = models.JSONField(_("repeat"), null=True, blank=True)
    repeat_until = models.DateTimeField(_("repeat until"), null=True, blank=True)
    creator_content_type = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    creator_object_id = models.CharField(max_length=255, null=True, blank=True)
    creator = GenericForeignKey("creator_content_type", "creator_object_id")
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.verbose_name or self.task_name

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Rows created by hand (Task.objects.create(task_name=...)) get their hash here.
        if not self.task_hash:
            self.task_hash = params_hash(self.task_name, self.params)
        super().save(*args, **kwargs)

    @property
    def has_error(self) -> bool:
        return bool(self.last_error)


class TaskQuerySet(models.QuerySet["Task"]):
    def unlocked(self) -> TaskQuerySet:
        return self.filter(locked_by__isnull=True)

    def locked(self) -> TaskQuerySet:
        return self.filter(locked_by__isnull=False)

    def ready(self, now: datetime | None = None) -> TaskQuerySet:
        return self.unlocked().filter(run_at__lte=now or timezone.now())

    def scheduled(self, now: datetime | None = None) -> TaskQuerySet:
        return self.unlocked().filter(run_at__gt=now or timezone.now())

    def in_queues(self, queues: list[str] | None) -> TaskQuerySet:
        return self.filter(queue__in=queues) if queues else self

    def failing(self) -> TaskQuerySet:
        return self.exclude(last_error="")


class Task(TaskBase):
    """A task waiting to run, or running now (``locked_by`` names the worker)."""

    HOURLY = schedule.HOURLY
    DAILY = schedule.DAILY
    WEEKLY = schedule.WEEKLY
    EVERY_2_WEEKS = schedule.EVERY_2_WEEKS
    EVERY_4_WEEKS = schedule.EVERY_4_WEEKS
    NEVER = schedule.NEVER

    scheduled_at = models.DateTimeField(
        _("scheduled at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("The time this occurrence was due; retries move run_at, never this."),
    )
    repeat_anchor = models.DateTimeField(_("repeat anchor"), null=True, blank=True, editable=False)
    unique_key = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)
    # NULL, not "", means "not held": the claim, the fence and the indexes all test IS NULL.
    locked_by = models.CharField(
        _("locked by"), max_length=255, null=True, blank=True, db_index=True
    )
    locked_at = models.DateTimeField(_("locked at"), null=True, blank=True)
    cancel_requested_at = models.DateTimeField(_("cancel requested at"), null=True, blank=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        verbose_name = _("task")
        verbose_name_plural = _("tasks")
        ordering = ["run_at", "id"]
        # The claim reads ready rows in (priority DESC, run_at, id) order and stops after LIMIT:
        # these indexes let it walk that order instead of sorting every ready row. On MySQL this
        # matters for correctness of throughput too: a locking read locks the rows it examines.
        indexes = [
            models.Index(fields=["-priority", "run_at", "id"], name="bgtasks_task_claim"),
            models.Index(
                fields=["queue", "-priority", "run_at", "id"], name="bgtasks_task_queue_claim"
            ),
        ]

    @property
    def status(self) -> str:
        if self.locked_by:
            return "running"
        return "scheduled" if self.run_at > timezone.now() else "ready"

    @property
    def is_locked(self) -> bool:
        return self.locked_by is not None


class CompletedTaskQuerySet(models.QuerySet["CompletedTask"]):
    def succeeded(self) -> CompletedTaskQuerySet:
        return self.filter(status=CompletedTask.Status.SUCCEEDED)

    def failed(self) -> CompletedTaskQuerySet:
        return self.filter(status=CompletedTask.Status.FAILED)

    def cancelled(self) -> CompletedTaskQuerySet:
        return self.filter(status=CompletedTask.Status.CANCELLED)


class CompletedTask(TaskBase):
    """The record of a task that succeeded, gave up or was cancelled."""

    class Status(models.TextChoices):
        SUCCEEDED = "succeeded", _("succeeded")
        FAILED = "failed", _("failed")
        CANCELLED = "cancelled", _("cancelled")

    task_id = models.BigIntegerField(
        _("task id"), db_index=True, help_text=_("Id of the Task row.")
    )
    # Indexed by bgtasks_completed_status (status, finished_at), which serves status lookups too.
    status = models.CharField(_("status"), max_length=20, choices=Status.choices)
    worker = models.CharField(_("worker"), max_length=255, blank=True, default="")
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), default=timezone.now, db_index=True)
    result = models.JSONField(_("result"), null=True, blank=True)

    objects = CompletedTaskQuerySet.as_manager()

    class Meta:
        verbose_name = _("completed task")
        verbose_name_plural = _("completed tasks")
        ordering = ["-finished_at", "-id"]
        # (status, finished_at) serves the dashboard's charts and latest failures and the
        # pruning of old rows as index range scans, so none of them reads the whole history.
        indexes = [
            models.Index(fields=["status", "finished_at"], name="bgtasks_completed_status"),
        ]

    @property
    def duration(self) -> float | None:
        """Seconds from the start of the last attempt to the end."""
        if self.started_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class Schedule(models.Model):
    """A cron schedule: enqueues its task once per tick, however many workers run.

    ``next_fire_at`` is the tick waiting to be enqueued. The worker that enqueues a tick moves
    it forward with a compare-and-set (``UPDATE ... WHERE next_fire_at = <tick>``) in the same
    transaction as the task insert, so exactly one of any number of workers wins each tick.
    """

    class Source(models.TextChoices):
        CODE = "code", _("code")
        SETTINGS = "settings", _("settings")
        ADMIN = "admin", _("admin")

    class CatchUp(models.TextChoices):
        ONCE = "once", _("run once")
        SKIP = "skip", _("skip")

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(_("name"), max_length=255, unique=True)
    task_name = models.CharField(_("task name"), max_length=255)
    params = models.JSONField(_("parameters"), default=empty_params, blank=True)
    cron = models.CharField(_("cron expression"), max_length=255)
    time_zone = models.CharField(
        _("time zone"),
        max_length=64,
        blank=True,
        default="",
        help_text=_("IANA name, e.g. Europe/Berlin. Empty: the TIME_ZONE setting."),
    )
    queue = models.CharField(_("queue"), max_length=100, blank=True, default="")
    priority = models.IntegerField(_("priority"), null=True, blank=True)
    catch_up = models.CharField(
        _("missed ticks"),
        max_length=10,
        choices=CatchUp.choices,
        default=CatchUp.ONCE,
        help_text=_("What to do with ticks missed while no worker ran."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    source = models.CharField(
        _("defined in"), max_length=10, choices=Source.choices, default=Source.ADMIN
    )
    next_fire_at = models.DateTimeField(_("next fire time"), null=True, blank=True)
    last_fired_at = models.DateTimeField(_("last tick enqueued"), null=True, blank=True)
    last_task_id = models.BigIntegerField(_("last task id"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("schedule")
        verbose_name_plural = _("schedules")
        ordering = ["name"]
        indexes = [models.Index(fields=["enabled", "next_fire_at"], name="bgtasks_schedule_due")]

    def __str__(self) -> str:
        return self.name


class WorkerQuerySet(models.QuerySet["Worker"]):
    def alive(self, stale_before: datetime) -> WorkerQuerySet:
        return self.filter(last_heartbeat_at__gte=stale_before)

    def lost(self, stale_before: datetime) -> WorkerQuerySet:
        return self.filter(last_heartbeat_at__lt=stale_before)


class Worker(models.Model):
    """A running ``process_tasks`` process, kept fresh by its heartbeat."""

    id = models.CharField(_("id"), max_length=255, primary_key=True)
    host = models.CharField(_("host"), max_length=255)
    pid = models.PositiveIntegerField(_("pid"))
    queues = models.JSONField(_("queues"), default=list, blank=True)
    concurrency = models.PositiveIntegerField(_("concurrency"), default=1)
    started_at = models.DateTimeField(_("started at"), default=timezone.now)
    last_heartbeat_at = models.DateTimeField(
        _("last heartbeat"), default=timezone.now, db_index=True
    )

    objects = WorkerQuerySet.as_manager()

    class Meta:
        verbose_name = _("worker")
        verbose_name_plural = _("workers")
        ordering = ["host", "pid"]

    def __str__(self) -> str:
        return self.id


__all__ = ["CompletedTask", "Schedule", "Task", "TaskBase", "Worker"]
