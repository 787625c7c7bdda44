"""Cron schedules: their definitions (code and settings), syncing them, and firing due ticks.

Exactly once per tick without a leader: every worker looks for due schedules, and the one
whose compare-and-set moves ``next_fire_at`` from the due tick to the next one inserts the task
in that same transaction. Any other worker's update matches no row, so it enqueues nothing.

About 450 lines: a definition is validated, synced and fired with the same rules
(names, queue, catch-up), and splitting them would spread one rule over three modules.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, router, transaction
from django.utils import timezone as dj_timezone

from . import isolation, timing
from .columns import TASK_NAME_LENGTH, queue_problem, text_problem
from .conf import PREFIX, app_settings
from .exceptions import DuplicateScheduleName, InvalidTaskError, ScheduleRedefinedWarning
from .logs import shown
from .serialization import check_signature, encode_params, params_hash
from .timezones import aware, first_storable, to_db

if TYPE_CHECKING:
    from .models import Schedule, Task
    from .task_function import TaskFunction

logger = logging.getLogger("background_tasks")

CATCH_UP_CHOICES = ("once", "skip")
SETTINGS_KEYS = frozenset(
    {"task", "cron", "args", "kwargs", "queue", "priority", "timezone", "catch_up"}
)


@dataclass(frozen=True)
class ScheduleDefinition:
    """A schedule declared in code or settings, validated."""

    name: str
    task_name: str
    cron: str
    params: dict[str, Any] = field(default_factory=lambda: {"args": [], "kwargs": {}})
    queue: str = ""
    priority: int | None = None
    time_zone: str = ""
    catch_up: str = "once"
    source: str = "code"

    def fields(self) -> dict[str, Any]:
        return {
            "task_name": self.task_name,
            "cron": self.cron,
            "params": self.params,
            "queue": self.queue,
            "priority": self.priority,
            "time_zone": self.time_zone,
            "catch_up": self.catch_up,
            "source": self.source,
        }


_code_definitions: dict[str, ScheduleDefinition] = {}
# Where each code definition was declared: the task's function and the line that called
# periodic(). The same place executed again (a test's setUp(), a module reloaded) replaces it.
_code_sites: dict[str, tuple[str, str, int]] = {}
_code_lock = threading.Lock()


def check_schedule_options(where: str, cron: object, tz_name: object, catch_up: object) -> str:
    """Validate what every schedule has; return the normalised cron expression."""
    if not isinstance(cron, str):
        raise InvalidTaskError(f"{where}: cron must be a string like '0 3 * * *', not {cron!r}.")
    try:
        normalised = timing.validate_cron(cron)
        if tz_name:
            if not isinstance(tz_name, str):
                raise ValueError(f"time zone must be a name like 'Europe/Berlin', not {tz_name!r}.")
            timing.validate_timezone(tz_name)
    except ValueError as exc:
        raise InvalidTaskError(f"{where}: {exc}") from None
    if catch_up not in CATCH_UP_CHOICES:
        raise InvalidTaskError(f"{where}: catch_up must be 'once' or 'skip', not {catch_up!r}.")
    return normalised


def check_schedule_text(where: str, name: object, queue: object) -> None:
    """Refuse a name or queue its column cannot hold, on any database, before a tick needs it."""
    if not isinstance(name, str) or not name:
        raise InvalidTaskError(f"{where}: the name must be a non-empty string, not {name!r}.")
    problem = text_problem(name, TASK_NAME_LENGTH)
    if problem:
        raise InvalidTaskError(f"{where}: the name is refused: {problem}.")
    problem = queue_problem(queue, blank=True)
    if problem:
        raise InvalidTaskError(f"{where}: queue {problem}.")


def periodic(
    task: TaskFunction[Any, Any],
    cron: str,
    *,
    name: str | None = None,
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    queue: str = "",
    priority: int | None = None,
    timezone: str = "",
    catch_up: str = "once",
) -> ScheduleDefinition:
    """Declare a cron schedule for ``task`` in code; workers sync it when they start.

    ``timezone`` names the zone the cron expression is read in (default: TIME_ZONE);
    ``catch_up`` says what happens to ticks missed while no worker ran: "once" runs the task
    once for all of them, "skip" drops them.
    """
    from .task_function import TaskFunction

    if not isinstance(task, TaskFunction):
        raise InvalidTaskError(
            f"periodic() takes a function decorated with @background, not {task!r}."
        )
    name = name or task.name
    where = f"Schedule {name!r}"
    normalised = check_schedule_options(where, cron, timezone, catch_up)
    check_schedule_text(where, name, queue)
    # Checked now, not at the first tick: a call that cannot work would fail at every tick.
    check_signature(task.name, task.func, list(args), dict(kwargs or {}))
    params = encode_params(task.name, task.func, list(args), dict(kwargs or {}))
    definition = ScheduleDefinition(
        name=name,
        task_name=task.name,
        cron=normalised,
        params=params,
        queue=queue,
        priority=priority,
        time_zone=timezone,
        catch_up=catch_up,
        source="code",
    )
    caller = sys._getframe(1)
    _declare(definition, (_origin(task.func), caller.f_code.co_filename, caller.f_lineno))
    return definition


def _declare(definition: ScheduleDefinition, site: tuple[str, str, int]) -> None:
    """Keep ``definition``; raise ``DuplicateScheduleName`` if another place declared its name."""
    name = definition.name
    with _code_lock:
        known = _code_sites.get(name)
        if known is not None and known != site:
            raise DuplicateScheduleName(
                f"Schedule name {name!r} is already declared for {known[0]} "
                f"({known[1]}:{known[2]}); {site[0]} ({site[1]}:{site[2]}) cannot use it too. "
                "Pass a distinct name= to periodic() (a schedule declared with cron= is named "
                "after its task)."
            )
        if known is not None:
            warnings.warn(
                f"Schedule {name!r} was declared again; the new definition replaces the old one.",
                ScheduleRedefinedWarning,
                stacklevel=3,
            )
        _code_sites[name] = site
        _code_definitions[name] = definition


def _origin(func: Any) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def settings_definitions() -> list[ScheduleDefinition]:
    """Read ``BACKGROUND_TASKS_SCHEDULES``; raise ImproperlyConfigured naming every bad entry."""
    definitions, errors = read_settings_schedules()
    if errors:
        raise ImproperlyConfigured("\n".join(errors))
    return definitions


def read_settings_schedules() -> tuple[list[ScheduleDefinition], list[str]]:
    """Read ``BACKGROUND_TASKS_SCHEDULES``: the valid entries, and one message per bad one."""
    raw = getattr(django_settings, PREFIX + "SCHEDULES", {})
    if not isinstance(raw, Mapping):
        return [], [f"{PREFIX}SCHEDULES must be a dict of name -> schedule, not {raw!r}."]
    definitions, errors = [], []
    for name, entry in raw.items():
        try:
            definitions.append(_settings_definition(name, entry))
        except ImproperlyConfigured as exc:
            errors.append(str(exc))
    return definitions, errors


def _settings_definition(name: object, entry: object) -> ScheduleDefinition:
    """One entry of ``BACKGROUND_TASKS_SCHEDULES``; raise ImproperlyConfigured naming the fault."""
    from .registry import registry

    where = f"{PREFIX}SCHEDULES[{name!r}]"
    if not isinstance(entry, Mapping):
        raise ImproperlyConfigured(f"{where} must be a dict, not {entry!r}.")
    unknown = set(entry) - SETTINGS_KEYS
    if unknown:
        raise ImproperlyConfigured(
            f"{where} has unknown key(s) {sorted(unknown)}; known: {sorted(SETTINGS_KEYS)}."
        )
    task_name = entry.get("task")
    if not isinstance(task_name, str) or task_name not in registry:
        raise ImproperlyConfigured(
            f"{where}: 'task' must name a registered task, not {task_name!r}."
            + (registry.suggestion(task_name) if isinstance(task_name, str) else "")
        )
    args, kwargs = entry.get("args", []), entry.get("kwargs", {})
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, Mapping):
        raise ImproperlyConfigured(f"{where}: 'args' must be a list and 'kwargs' a dict.")
    try:
        normalised = check_schedule_options(
            where, entry.get("cron"), entry.get("timezone", ""), entry.get("catch_up", "once")
        )
        check_schedule_text(where, str(name), entry.get("queue", ""))
        function = registry.get(task_name)
        check_signature(task_name, function.func, list(args), dict(kwargs))
        params = encode_params(task_name, function.func, list(args), dict(kwargs))
    except InvalidTaskError as exc:
        raise ImproperlyConfigured(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{where}: {exc}") from None
    return ScheduleDefinition(
        name=str(name),
        task_name=task_name,
        cron=normalised,
        params=params,
        queue=entry.get("queue", ""),
        priority=entry.get("priority"),
        time_zone=entry.get("timezone", ""),
        catch_up=entry.get("catch_up", "once"),
        source="settings",
    )


def all_definitions() -> dict[str, ScheduleDefinition]:
    """Code definitions, then settings ones (a settings entry overrides code of the same name)."""
    merged = dict(_code_definitions)
    merged.update({d.name: d for d in settings_definitions()})
    return merged


def zone_of(schedule: Schedule) -> tzinfo:
    if schedule.time_zone:
        return timing.validate_timezone(schedule.time_zone)
    return dj_timezone.get_default_timezone()


def first_fire(schedule: Schedule, now: datetime) -> datetime:
    """The first tick of ``schedule`` after ``now``, as its ``next_fire_at`` column holds it."""
    zone = zone_of(schedule)
    tick = timing.next_cron_fire(schedule.cron, zone, aware(now))
    # Without USE_TZ a tick in an hour repeated by a fall-back would read back an hour early,
    # be due at once, and be computed again as its own successor at every check: the ticks of
    # that second pass are not fired (see first_storable).
    storable = first_storable(tick)
    if storable != tick:
        tick = timing.next_cron_fire(schedule.cron, zone, storable - timedelta(microseconds=1))
    return to_db(tick)


def sync_schedules(now: datetime | None = None) -> None:
    """Make the schedule table match the definitions in code and settings.

    New definitions are created; changed ones updated (a new cron or time zone restarts from
    the next tick). A code or settings row this process has no definition for is marked
    orphaned, not deleted: during a rolling deploy a worker still running the older code
    starts next to the new ones, and deleting the schedules only the new code declares would
    lose an operator's pause on them (and their tick) when the new code created them again.
    An orphaned row does not fire; a definition of its name takes it back as it was.
    ``enabled`` is never touched, so that an operator's pause survives a deploy. Schedules made
    in the admin are left alone unless a definition in code or settings has the same name: the
    definition then takes the row over (the admin form refuses such names, so this only
    happens when a definition is added later).
    """
    from .models import Schedule

    now = now or dj_timezone.now()
    definitions = all_definitions()
    using = router.db_for_write(Schedule)
    for definition in definitions.values():
        existing = Schedule.objects.using(using).filter(name=definition.name).first()
        wanted: dict[str, Any] = {**definition.fields(), "orphaned_at": None}
        if existing is None:
            row = Schedule(name=definition.name, **wanted)
            row.next_fire_at = first_fire(row, now)
            try:
                with transaction.atomic(using=using):
                    row.save(using=using, force_insert=True)
            except IntegrityError:
                pass  # another worker created it at the same moment
            continue
        changed = {key: value for key, value in wanted.items() if getattr(existing, key) != value}
        if not changed:
            continue
        for key, value in changed.items():
            setattr(existing, key, value)
        if {"cron", "time_zone"} & set(changed):
            existing.next_fire_at = first_fire(existing, now)
            changed["next_fire_at"] = existing.next_fire_at
        existing.save(using=using, update_fields=[*changed, "updated_at"])
        if "orphaned_at" in changed:
            logger.info("event=schedule_adopted schedule=%s", shown(definition.name))
    _orphan_undefined(list(definitions), using, now)


def _orphan_undefined(defined: list[str], using: str, now: datetime) -> None:
    """Mark the code and settings schedules that ``defined`` does not name as orphaned."""
    from .models import Schedule

    rows = (
        Schedule.objects.using(using)
        .filter(
            source__in=[Schedule.Source.CODE, Schedule.Source.SETTINGS], orphaned_at__isnull=True
        )
        .exclude(name__in=defined)
    )
    for pk, name in list(rows.values_list("pk", "name")):
        # One row at a time, each only if still unmarked: a worker that defines it may have
        # taken it back meanwhile, and it is then left as that worker made it.
        if rows.filter(pk=pk).update(orphaned_at=now, updated_at=now):
            logger.warning(
                "event=schedule_orphaned schedule=%s hint=%r",
                shown(name),
                "no definition in this worker's code or settings; it does not fire until a "
                "worker that defines it starts (delete it in the admin if it was removed)",
            )


def fire_due(now: datetime | None = None) -> int:
    """Enqueue every due tick that no other worker enqueued first; return how many this one did.

    Each schedule is handled on its own: one whose row cannot be loaded or fired (a cron or
    zone made invalid by hand, a value the task table refuses, a date out of range) is
    disabled with a log line saying why, and the others fire all the same. Connection errors
    propagate, for the worker's outage handling.
    """
    from .models import Schedule

    now = now or dj_timezone.now()
    fired = 0
    due = Schedule.objects.filter(enabled=True, orphaned_at__isnull=True, next_fire_at__lte=now)
    for schedule_id, name in list(due.values_list("id", "name")):
        try:
            # Loaded one by one, so that a row that cannot be loaded stops only itself; and
            # read again under the due filter, since another worker may have fired it since.
            with isolation.savepoint(router.db_for_write(Schedule)):
                schedule = due.filter(pk=schedule_id).first()
            if schedule is not None and fire_one(schedule, now) is not None:
                fired += 1
        except Exception as exc:
            if isolation.is_database_fault(exc):
                raise
            # Firing it again would fail the same way at every check: pause it instead.
            logger.error(
                "event=schedule_invalid schedule=%s error=%s",
                shown(name),
                shown(isolation.describe(exc)),
            )
            Schedule.objects.filter(pk=schedule_id).update(enabled=False)
    return fired


def fire_one(schedule: Schedule, now: datetime) -> Task | None:
    """Enqueue the due tick of ``schedule`` if this worker wins it; return the task."""
    from .enqueue import insert_task
    from .models import Schedule

    tick = schedule.next_fire_at
    assert tick is not None
    # Missed ticks collapse: the schedule moves to its first tick after now.
    next_tick = first_fire(schedule, max(now, tick))
    late = (now - tick).total_seconds()
    skip = schedule.catch_up == Schedule.CatchUp.SKIP and late > float(
        app_settings.SCHEDULE_MISFIRE_GRACE
    )
    using = router.db_for_write(Schedule)
    with transaction.atomic(using=using):
        # enabled=True: a pause committed since this worker read the row stops the tick too
        # (and so does an orphaning).
        won = (
            Schedule.objects.using(using)
            .filter(pk=schedule.pk, next_fire_at=tick, enabled=True, orphaned_at__isnull=True)
            .update(next_fire_at=next_tick, **({} if skip else {"last_fired_at": tick}))
        )
        if not won or skip:
            if won:
                logger.info(
                    "event=schedule_tick_skipped schedule=%s tick=%s",
                    schedule.name,
                    tick.isoformat(),
                )
            return None
        task = insert_task(task_for_tick(schedule, tick, now), using=using, robust_signal=True)
        Schedule.objects.using(using).filter(pk=schedule.pk).update(last_task_id=task.pk)
    return task


def task_for_tick(schedule: Schedule, tick: datetime, now: datetime) -> Task:
    """Build the Task of one tick. A task name no longer registered still gets its row, which
    the worker then records as failed with the reason: nothing is silently dropped."""
    from .models import Task
    from .options import options_of
    from .registry import registry

    function = registry.get(schedule.task_name) if schedule.task_name in registry else None
    defaults = options_of(schedule.task_name)
    return Task(
        task_name=schedule.task_name,
        params=schedule.params,
        task_hash=params_hash(schedule.task_name, schedule.params),
        verbose_name=f"{schedule.name[:200]} @ {aware(tick).isoformat()}",
        queue=schedule.queue or defaults.queue,
        priority=defaults.priority if schedule.priority is None else schedule.priority,
        run_at=tick,
        scheduled_at=tick,
        max_attempts=function.max_attempts if function else None,
        created_at=now,
    )


def seconds_until_next_fire(now: datetime | None = None) -> float | None:
    """Return how long until the next enabled tick is due, or None if there is none."""
    from django.db.models import Min

    from .models import Schedule

    now = now or dj_timezone.now()
    live = Schedule.objects.filter(enabled=True, orphaned_at__isnull=True)
    soonest = live.aggregate(at=Min("next_fire_at"))["at"]
    if soonest is None:
        return None
    return float(max(0.0, (soonest - now) / timedelta(seconds=1)))
