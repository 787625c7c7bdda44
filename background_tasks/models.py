"""The tables: live tasks, their history, and the workers that run them.

Over 400 lines on purpose: Django loads an app's models from this one module, and each model's
QuerySet (its states) sits with it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from .installed import require_contenttypes, require_installed

# Before the imports below, which fail with Django's generic errors when either app is missing.
require_installed("background_tasks.models was imported")
require_contenttypes()

from django.contrib.contenttypes.fields import GenericForeignKey  # noqa: E402
from django.contrib.contenttypes.models import ContentType  # noqa: E402
from django.db import models  # noqa: E402
from django.utils import timezone  # noqa: E402
from django.utils.translation import gettext_lazy as _  # noqa: E402

from . import timing  # noqa: E402
from .columns import (  # noqa: E402
    OBJECT_ID_LENGTH,
    QUEUE_LENGTH,
    TASK_NAME_LENGTH,
    VERBOSE_NAME_LENGTH,
)
from .serialization import params_hash  # noqa: E402
from .states import QUARANTINED, TaskState, state_q  # noqa: E402


def empty_params() -> dict[str, Any]:
    return {"args": [], "kwargs": {}}


# The text columns are indexed in ``Meta.indexes`` (and ``unique_key`` made unique in
# ``Meta.constraints``) rather than with ``db_index=True`` or ``unique=True``: on PostgreSQL those
# also build a second ``varchar_pattern_ops`` index per column, for ``LIKE 'prefix%'``, which no
# query of this app makes (the admin's search is ``icontains``, which no B-tree serves). Every
# task's insert, claim and archive paid for maintaining four such indexes on the queue and two on
# the history.


class TaskBase(models.Model):
    """Fields a task keeps from enqueue to its final record."""

    id = models.BigAutoField(primary_key=True)
    # Indexed through each model's Meta.indexes, not db_index (see the note above).
    task_name = models.CharField(_("task name"), max_length=TASK_NAME_LENGTH)
    params = models.JSONField(_("parameters"), default=empty_params, blank=True)
    task_hash = models.CharField(_("task hash"), max_length=40, editable=False)
    verbose_name = models.CharField(
        _("verbose name"), max_length=VERBOSE_NAME_LENGTH, blank=True, default=""
    )
    queue = models.CharField(_("queue"), max_length=QUEUE_LENGTH, default="default")
    priority = models.IntegerField(_("priority"), default=0)
    run_at = models.DateTimeField(_("run at"), default=timezone.now)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    max_attempts = models.PositiveIntegerField(
        _("max attempts"),
        null=True,
        blank=True,
        help_text=_("Empty: the task's or the global default."),
    )
    # Times the task was still running when its worker stopped, and was handed back; after
    # MAX_HANDBACKS such hand-backs, each further one counts as a failed attempt.
    handbacks = models.PositiveIntegerField(_("hand-backs"), default=0, editable=False)
    last_error = models.TextField(_("last error"), blank=True, default="")
    error_class = models.CharField(
        _("error class"),
        max_length=255,
        blank=True,
        default="",
        help_text=_("Dotted path of the exception of the last failed attempt."),
    )
    first_started_at = models.DateTimeField(_("first started at"), null=True, blank=True)
    worker_ids = models.JSONField(
        _("worker ids"),
        default=list,
        blank=True,
        help_text=_("The worker of each finished attempt, oldest first."),
    )
    repeat = models.JSONField(_("repeat"), null=True, blank=True)
    repeat_until = models.DateTimeField(_("repeat until"), null=True, blank=True)
    creator_content_type = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    creator_object_id = models.CharField(max_length=OBJECT_ID_LENGTH, null=True, blank=True)
    creator = GenericForeignKey("creator_content_type", "creator_object_id")
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    # Reported by the running task through set_progress(); written at most once per
    # PROGRESS_INTERVAL, and the last value is kept in the task's CompletedTask record.
    progress_done = models.PositiveBigIntegerField(_("progress done"), null=True, blank=True)
    progress_total = models.PositiveBigIntegerField(_("progress total"), null=True, blank=True)
    progress_message = models.CharField(
        _("progress message"), max_length=255, blank=True, default=""
    )
    progress_at = models.DateTimeField(_("progress reported at"), null=True, blank=True)

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
        """Whether an attempt failed (``last_error`` is not empty)."""
        return bool(self.last_error)


def name_q(name: str) -> models.Q:
    """Match a task name exactly or by its last dotted part(s): ``send``: ``app.tasks.send``."""
    return models.Q(task_name=name) | models.Q(task_name__endswith="." + name)


#: Builds the row of ``Task.objects.new_task()``. The enqueue path it needs is a layer above the
#: models, so ``AppConfig.ready()`` plugs it in here instead of the models importing it.
_new_task_builder: Callable[..., Task] | None = None


def plug_new_task_builder(builder: Callable[..., Task]) -> None:
    """Set what ``Task.objects.new_task()`` builds its row with (called from ``ready()``)."""
    global _new_task_builder
    _new_task_builder = builder


class TaskQuerySet(models.QuerySet["Task"]):
    """Filters of the live queue by state (``Task.objects``)."""

    # ``now`` is accepted for django-background-tasks' ``locked(now)``/``unlocked(now)``; a lock
    # here never expires by time (a lost worker's rows are rescued), so it changes nothing.
    def unlocked(self, now: datetime | None = None) -> TaskQuerySet:
        """Tasks no worker holds: waiting, ready or scheduled."""
        return self.filter(locked_by__isnull=True)

    def locked(self, now: datetime | None = None) -> TaskQuerySet:
        """Tasks a worker holds: running."""
        return self.filter(locked_by__isnull=False)

    def due(self, now: datetime | None = None) -> TaskQuerySet:
        """Unlocked tasks whose run time has come at ``now``: ready ones and due retries.

        What a worker claims (default ``now``: the current time).
        """
        return self.unlocked().filter(run_at__lte=now or timezone.now())

    def in_state(self, state: str, now: datetime | None = None) -> TaskQuerySet:
        """Tasks in ``state`` (a TaskState value, or an alias such as "failing") at ``now``."""
        return self.filter(state_q(state, now or timezone.now()))

    def ready(self, now: datetime | None = None) -> TaskQuerySet:
        """Tasks in the ready state: unlocked, never failed, due at ``now``."""
        return self.in_state(TaskState.READY, now)

    def scheduled(self, now: datetime | None = None) -> TaskQuerySet:
        """Tasks in the scheduled state: unlocked, never failed, due after ``now``."""
        return self.in_state(TaskState.SCHEDULED, now)

    def running(self) -> TaskQuerySet:
        """Tasks in the running state: held by a worker (not quarantined)."""
        return self.in_state(TaskState.RUNNING)

    def retrying(self) -> TaskQuerySet:
        """Tasks in the retrying state: unlocked, with a failed attempt behind them."""
        return self.in_state(TaskState.RETRYING)

    def quarantined(self) -> TaskQuerySet:
        """Tasks in the quarantined state: set aside, never claimed until an operator acts."""
        return self.in_state(TaskState.QUARANTINED)

    def named(self, name: str) -> TaskQuerySet:
        """Tasks named ``name``, or whose name ends with ``.name``."""
        return self.filter(name_q(name))

    def in_queues(self, queues: list[str] | None) -> TaskQuerySet:
        """Tasks of these queues; every task when ``queues`` is empty or None."""
        return self.filter(queue__in=queues) if queues else self

    # -- django-background-tasks' TaskManager API (see docs/migrating.md) ----------------------

    def find_available(self, queue: str | None = None) -> TaskQuerySet:
        """Ready tasks (of ``queue``) in the order a worker claims them."""
        from .conf import app_settings

        order = "-priority" if app_settings.priority_descending else "priority"
        return self.due().in_queues([queue] if queue else None).order_by(order, "run_at", "id")

    def failed(self) -> TaskQuerySet:
        """Return no rows: a task that gave up is a ``CompletedTask`` (``.failed()`` there).

        django-background-tasks also moved it there at once; only its in-between state had rows.
        """
        return self.none()

    def created_by(self, creator: models.Model) -> TaskQuerySet:
        return self.filter(**_creator_filter(creator))

    def new_task(
        self,
        task_name: str,
        args: list[Any] | tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        run_at: datetime | None = None,
        priority: int = 0,
        queue: str | None = None,
        verbose_name: str | None = None,
        creator: models.Model | None = None,
        repeat: Any = None,
        repeat_until: datetime | None = None,
        remove_existing_tasks: bool = False,
    ) -> Task:
        """Return an unsaved Task for a registered task, checked like a call; ``save()`` inserts it.

        django-background-tasks' ``Task.objects.new_task()``: ``remove_existing_tasks`` deletes
        the waiting copies (same name and arguments) at once, as there. A row saved this way
        sends no ``task_created`` signal and no PostgreSQL wake-up (workers find it by polling).
        """
        if _new_task_builder is None:  # pragma: no cover - plugged in by AppConfig.ready()
            raise RuntimeError("Task.objects.new_task() needs the background_tasks app ready.")
        return _new_task_builder(
            task_name,
            list(args or ()),
            dict(kwargs or {}),
            run_at=run_at,
            priority=priority,
            queue=queue,
            verbose_name=verbose_name,
            creator=creator,
            repeat=repeat,
            repeat_until=repeat_until,
            remove_existing_tasks=remove_existing_tasks,
        )

    def get_task(
        self,
        task_name: str,
        args: list[Any] | tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> TaskQuerySet:
        """The tasks with this name and these arguments."""
        params = {"args": list(args or ()), "kwargs": dict(kwargs or {})}
        return self.filter(task_hash=params_hash(task_name, params))

    def drop_task(
        self,
        task_name: str,
        args: list[Any] | tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, int]]:
        """Delete the waiting tasks with this name and these arguments (never a running one)."""
        return self.get_task(task_name, args, kwargs).unlocked().delete()


def _creator_filter(creator: models.Model) -> dict[str, Any]:
    return {
        "creator_content_type": ContentType.objects.get_for_model(creator),
        "creator_object_id": str(creator.pk),
    }


class Task(TaskBase):
    """A task waiting to run, or running now (``locked_by`` names the worker)."""

    HOURLY = timing.HOURLY
    DAILY = timing.DAILY
    WEEKLY = timing.WEEKLY
    EVERY_2_WEEKS = timing.EVERY_2_WEEKS
    EVERY_4_WEEKS = timing.EVERY_4_WEEKS
    NEVER = timing.NEVER

    scheduled_at = models.DateTimeField(
        _("scheduled at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("The time this occurrence was due; retries move run_at, never this."),
    )
    repeat_anchor = models.DateTimeField(_("repeat anchor"), null=True, blank=True, editable=False)
    last_attempted_at = models.DateTimeField(
        _("last attempted at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("Start of the last finished attempt (the running one's is locked_at)."),
    )
    # Unique through Meta.constraints, not unique=True (see the note above TaskBase).
    unique_key = models.CharField(max_length=64, null=True, blank=True, editable=False)
    # NULL, not "", means "not held": the claim, the fence and the indexes all test IS NULL.
    locked_by = models.CharField(_("locked by"), max_length=255, null=True, blank=True)
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
            models.Index(fields=["task_name"], name="bgtasks_task_name"),
            models.Index(fields=["task_hash"], name="bgtasks_task_hash"),
            # Rescue and the release of lost claims find a worker's rows by it.
            models.Index(fields=["locked_by"], name="bgtasks_task_locked_by"),
        ]
        constraints = [
            # One pending row per key: unique=True enqueues race on it (enqueue.py).
            models.UniqueConstraint(fields=["unique_key"], name="bgtasks_task_unique_key"),
        ]

    @property
    def state(self) -> TaskState:
        """The task's state now (see TaskState); ``state_at()`` for another moment."""
        return self.state_at(timezone.now())

    def state_at(self, now: datetime) -> TaskState:
        """The task's state at ``now``: the one ``Task.objects.in_state()`` puts it in."""
        if self.locked_by == QUARANTINED:
            return TaskState.QUARANTINED
        if self.locked_by is not None:
            return TaskState.RUNNING
        if self.last_error:
            return TaskState.RETRYING
        return TaskState.SCHEDULED if self.run_at > now else TaskState.READY

    @property
    def status(self) -> str:
        """The state's name (``state``), kept for code written before states had a type."""
        return str(self.state)

    @property
    def is_locked(self) -> bool:
        """Whether a worker holds the task (it is running)."""
        return self.locked_by is not None


class CompletedTaskQuerySet(models.QuerySet["CompletedTask"]):
    """Filters of the history by outcome (``CompletedTask.objects``)."""

    # ``within`` (a timedelta: finished less than that long ago) as in django-background-tasks.
    def succeeded(self, within: timedelta | None = None) -> CompletedTaskQuerySet:
        """Records of tasks that returned."""
        return self._within(within).filter(status=CompletedTask.Status.SUCCEEDED)

    def failed(self, within: timedelta | None = None) -> CompletedTaskQuerySet:
        """Records of tasks that gave up."""
        return self._within(within).filter(status=CompletedTask.Status.FAILED)

    def created_by(self, creator: models.Model) -> CompletedTaskQuerySet:
        """Records of tasks whose creator is ``creator``."""
        return self.filter(**_creator_filter(creator))

    def _within(self, within: timedelta | None) -> CompletedTaskQuerySet:
        return self if within is None else self.filter(finished_at__gt=timezone.now() - within)

    def named(self, name: str) -> CompletedTaskQuerySet:
        """Records named ``name``, or whose name ends with ``.name``."""
        return self.filter(name_q(name))

    def cancelled(self) -> CompletedTaskQuerySet:
        """Records of tasks that were cancelled."""
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
    scheduled_at = models.DateTimeField(
        _("scheduled at"),
        null=True,
        blank=True,
        help_text=_("The time this occurrence was due (before any retry moved it)."),
    )
    finished_at = models.DateTimeField(_("finished at"), default=timezone.now, db_index=True)
    result = models.JSONField(_("result"), null=True, blank=True)
    note = models.TextField(
        _("note"),
        blank=True,
        default="",
        help_text=_("What the worker could not keep, e.g. a result it could not store."),
    )

    objects = CompletedTaskQuerySet.as_manager()

    class Meta:
        verbose_name = _("completed task")
        verbose_name_plural = _("completed tasks")
        ordering = ["-finished_at", "-id"]
        # (status, finished_at) serves the dashboard's charts and latest failures and the
        # pruning of old rows as index range scans, so none of them reads the whole history.
        indexes = [
            models.Index(fields=["status", "finished_at"], name="bgtasks_completed_status"),
            models.Index(fields=["task_name"], name="bgtasks_completed_name"),
            models.Index(fields=["task_hash"], name="bgtasks_completed_hash"),
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

    ``orphaned_at`` marks a code or settings schedule that a worker's definitions lacked when
    it started (an older version, during a rolling deploy, or the definition was removed): it
    is kept, with its pause and its tick, and does not fire until a definition takes it back.
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
    task_name = models.CharField(_("task name"), max_length=TASK_NAME_LENGTH)
    params = models.JSONField(_("parameters"), default=empty_params, blank=True)
    cron = models.CharField(_("cron expression"), max_length=255)
    time_zone = models.CharField(
        _("time zone"),
        max_length=64,
        blank=True,
        default="",
        help_text=_("IANA name, e.g. Europe/Berlin. Empty: the TIME_ZONE setting."),
    )
    queue = models.CharField(_("queue"), max_length=QUEUE_LENGTH, blank=True, default="")
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
    orphaned_at = models.DateTimeField(
        _("orphaned at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_(
            "When a worker started without this schedule's definition in code or settings. "
            "An orphaned schedule does not fire until a worker that defines it starts again."
        ),
    )
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
    """Filters of the workers by liveness (``Worker.objects``)."""

    def alive(self, stale_before: datetime) -> WorkerQuerySet:
        """Workers whose last heartbeat is at or after ``stale_before``."""
        return self.filter(last_heartbeat_at__gte=stale_before)

    def lost(self, stale_before: datetime) -> WorkerQuerySet:
        """Workers whose last heartbeat is before ``stale_before``: taken for dead."""
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


class LegacyImport(models.Model):
    """A row copied from django-background-tasks' tables, so that an import never repeats it."""

    id = models.BigAutoField(primary_key=True)
    source_table = models.CharField(_("source table"), max_length=64)
    source_id = models.BigIntegerField(_("source id"))
    #: "task" or "completedtask": the model ``target_id`` is an id of.
    target_model = models.CharField(_("imported as"), max_length=20)
    target_id = models.BigIntegerField(_("imported id"))
    imported_at = models.DateTimeField(_("imported at"), default=timezone.now)

    class Meta:
        verbose_name = _("legacy import")
        verbose_name_plural = _("legacy imports")
        constraints = [
            models.UniqueConstraint(
                fields=["source_table", "source_id"], name="bgtasks_legacy_import_source"
            )
        ]

    def __str__(self) -> str:
        return f"{self.source_table} {self.source_id} -> {self.target_model} {self.target_id}"


class OutcomeHour(models.Model):
    """The outcomes of one closed hour of the history, counted once.

    Why a table: the dashboard's day chart would otherwise count every outcome of the last
    24 hours on each page load, a cost that grows with the day's throughput. An hour is counted
    (an index range count on ``CompletedTask``) once it has closed, by a worker's pruning pass
    or by the dashboard, whichever comes first; the unique hour lets two of them store it at
    the same time without an error or a double. The counts stay what the history held then,
    even once retention has pruned the rows (see docs/admin.md).
    """

    id = models.BigAutoField(primary_key=True)
    #: Start of the hour: UTC (USE_TZ = True) or local wall-clock time (USE_TZ = False).
    hour = models.DateTimeField(_("hour"), unique=True)
    succeeded = models.PositiveIntegerField(_("succeeded"), default=0)
    failed = models.PositiveIntegerField(_("failed"), default=0)
    cancelled = models.PositiveIntegerField(_("cancelled"), default=0)
    counted_at = models.DateTimeField(_("counted at"), default=timezone.now)

    class Meta:
        verbose_name = _("outcome hour")
        verbose_name_plural = _("outcome hours")
        ordering = ["hour"]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00}"


__all__ = [
    "QUARANTINED",
    "CompletedTask",
    "LegacyImport",
    "OutcomeHour",
    "Schedule",
    "Task",
    "TaskBase",
    "TaskState",
    "Worker",
]
