"""Calling a task: the row it writes, the call-time options, and the caller's transaction."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models.signals import post_init
from django.test import override_settings

from background_tasks.exceptions import InvalidTaskError
from background_tasks.models import Task
from background_tasks.serialization import params_hash
from background_tasks.task_function import RESERVED_KWARGS
from background_tasks.testing import run_tasks
from tests.fixtures import CLOCK_START
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = pytest.mark.django_db

UTC = timezone.utc
T0 = CLOCK_START  # where the shared ``clock`` fixture freezes time
APRIL_FIRST = datetime(2026, 4, 1, 8, 30, tzinfo=UTC)
Clock = time_machine.Traveller


def keys_in_run_order() -> list[str]:
    return list(TaskRun.objects.order_by("id").values_list("key", flat=True))


def test_call__writes_a_ready_row_describing_the_call(clock: Clock) -> None:
    task = tasks.send_newsletter(42, template="daily")

    row = Task.objects.get(pk=task.pk)
    assert row.task_name == "tests.testapp.tasks.send_newsletter"
    assert row.params == {"args": [42], "kwargs": {"template": "daily"}}
    assert row.task_hash == params_hash(row.task_name, row.params)
    assert row.queue == "emails"  # from the decorator
    assert row.priority == 0
    assert row.run_at == T0
    assert row.scheduled_at == T0
    assert row.attempts == 0
    assert row.max_attempts == 5  # from the decorator
    assert row.locked_by is None
    assert row.verbose_name == ""
    assert row.repeat is None
    assert row.created_at == T0


def test_call__without_options_uses_the_default_queue_and_priority() -> None:
    task = tasks.record("k")

    assert (task.queue, task.priority, task.max_attempts) == ("default", 0, None)


@override_settings(BACKGROUND_TASKS_DEFAULT_QUEUE="misc", BACKGROUND_TASKS_DEFAULT_PRIORITY=3)
def test_call__default_queue_and_priority_come_from_the_settings() -> None:
    task = tasks.record("k")

    assert (task.queue, task.priority) == ("misc", 3)


@pytest.fixture
def model_inits() -> Iterator[list[Task]]:
    """Every Task instance built by ``Model.__init__`` (not a copy of a template), in order."""
    built: list[Task] = []

    def remember(instance: Task, **kwargs: object) -> None:
        built.append(instance)

    post_init.connect(remember, sender=Task, dispatch_uid="tests-model-inits")
    yield built
    post_init.disconnect(sender=Task, dispatch_uid="tests-model-inits")


def test_call__without_options_copies_the_task_s_checked_template(
    clock: Clock, model_inits: list[Task]
) -> None:
    first = tasks.send_newsletter(1)
    model_inits.clear()

    rows = [
        tasks.send_newsletter(2, template="daily"),
        tasks.send_newsletter(3, schedule=60),
        tasks.send_newsletter(4, unique=True),
    ]

    # No model instance built field by field: each row is a copy of the task's template.
    assert model_inits == []
    first.worker_ids.append("changed in place")
    assert [row.worker_ids for row in rows] == [[], [], []]
    # Each row is the one a call with its options spelled out stores.
    spelled = tasks.send_newsletter(2, template="daily", queue="emails", verbose_name="")
    fields = [f.attname for f in Task._meta.concrete_fields if f.attname not in {"id"}]
    assert Task.objects.values(*fields).get(pk=rows[0].pk) == Task.objects.values(*fields).get(
        pk=spelled.pk
    )
    assert rows[1].run_at == T0 + timedelta(seconds=60) and rows[1].created_at == T0
    assert rows[2].unique_key == rows[2].task_hash
    assert len({id(row) for row in rows}) == 3 and all(row.pk for row in rows)


def test_call__without_options_follows_a_changed_default_queue_or_priority(
    model_inits: list[Task],
) -> None:
    assert tasks.record("before").queue == "default"
    model_inits.clear()

    with override_settings(
        BACKGROUND_TASKS_DEFAULT_QUEUE="misc", BACKGROUND_TASKS_DEFAULT_PRIORITY=1
    ):
        changed = [tasks.record(str(key)) for key in range(3)]
        # One new template for the new defaults, not one instance per call.
        assert len(model_inits) == 1
        with (
            override_settings(BACKGROUND_TASKS_DEFAULT_QUEUE=""),
            pytest.raises(InvalidTaskError, match="queue must be a non-empty string"),
        ):
            tasks.record("refused")  # a new template is checked as the first was

    assert [(row.queue, row.priority) for row in changed] == [("misc", 1)] * 3
    after = tasks.record("after")
    assert (after.queue, after.priority) == ("default", 0)
    assert Task.objects.filter(priority=1).count() == 3 and Task.objects.count() == 5


# -- schedule= ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "run_at"),
    [
        pytest.param(90, T0 + timedelta(seconds=90), id="seconds"),
        pytest.param(0.5, T0 + timedelta(seconds=0.5), id="float-seconds"),
        pytest.param(timedelta(hours=2), T0 + timedelta(hours=2), id="timedelta"),
        pytest.param(APRIL_FIRST, APRIL_FIRST, id="aware-datetime"),
        pytest.param(APRIL_FIRST.replace(tzinfo=None), APRIL_FIRST, id="naive-datetime-is-utc"),
    ],
)
def test_schedule__sets_when_the_task_becomes_ready(
    clock: Clock, schedule: object, run_at: datetime
) -> None:
    task = tasks.record("k", schedule=schedule)

    assert Task.objects.get(pk=task.pk).run_at == run_at


def test_schedule__a_scheduled_task_does_not_run_before_its_time(clock: Clock) -> None:
    tasks.record("later", schedule=60)

    assert run_tasks() == 0
    assert run_tasks(now=T0 + timedelta(seconds=60)) == 1
    assert TaskRun.objects.filter(key="later").exists()


def test_schedule__the_decorator_default_applies_and_a_call_overrides_it(clock: Clock) -> None:
    default = tasks.delayed_record("a")  # decorated with schedule=60
    overridden = tasks.delayed_record("b", schedule=timedelta(0))

    assert default.run_at == T0 + timedelta(seconds=60)
    assert overridden.run_at == T0


# -- priority, queue, verbose_name, creator -----------------------------------------------------


def test_call_options__override_the_decorator() -> None:
    task = tasks.send_newsletter(1, queue="urgent", priority=9, verbose_name="Newsletter for 1")

    row = Task.objects.get(pk=task.pk)
    assert (row.queue, row.priority, row.verbose_name) == ("urgent", 9, "Newsletter for 1")
    assert str(row) == "Newsletter for 1"
    assert row.params == {"args": [1], "kwargs": {}}  # the options are not arguments


@pytest.mark.parametrize(
    ("option", "make_value"),
    [
        ("schedule", lambda: 60),
        ("priority", lambda: 5),
        ("queue", lambda: "other"),
        ("verbose_name", lambda: "Label"),
        ("creator", lambda: User.objects.create(username="ada")),
        ("repeat", lambda: Task.HOURLY),
        ("repeat_until", lambda: datetime(2030, 1, 1, tzinfo=UTC)),
        ("remove_existing_tasks", lambda: True),
        ("unique", lambda: True),
    ],
)
def test_call_options__are_taken_by_the_call_and_never_passed_to_the_function(
    option: str, make_value: Callable[[], object]
) -> None:
    task = tasks.record("k", **{option: make_value()})

    assert Task.objects.get(pk=task.pk).params == {"args": ["k"], "kwargs": {}}
    assert run_tasks(now=T0.replace(year=2031), max_tasks=1) == 1
    assert TaskRun.objects.filter(key="k").exists()


def test_call_options__include_every_django_background_tasks_keyword() -> None:
    assert {
        "schedule",
        "priority",
        "queue",
        "verbose_name",
        "creator",
        "repeat",
        "repeat_until",
        "remove_existing_tasks",
    } <= RESERVED_KWARGS


def test_priority__higher_runs_first_by_default() -> None:
    for key, priority in [("low", -1), ("high", 10), ("normal", 0)]:
        tasks.record(key, priority=priority)

    run_tasks()

    assert keys_in_run_order() == ["high", "normal", "low"]


@override_settings(BACKGROUND_TASK_PRIORITY_ORDERING="ASC")
def test_priority__asc_ordering_runs_lower_first() -> None:
    for key, priority in [("low", -1), ("high", 10), ("normal", 0)]:
        tasks.record(key, priority=priority)

    run_tasks()

    assert keys_in_run_order() == ["low", "normal", "high"]


def test_creator__is_recorded_as_a_generic_relation() -> None:
    user = User.objects.create(username="ada")

    task = tasks.record("k", creator=user)

    row = Task.objects.get(pk=task.pk)
    assert row.creator == user
    assert row.creator_object_id == str(user.pk)


@pytest.mark.parametrize(
    ("make_creator", "message"),
    [
        pytest.param(
            lambda: User(username="unsaved"), "creator must be a saved model instance", id="unsaved"
        ),
        pytest.param(lambda: "ada", "creator must be a saved model instance", id="not-a-model"),
    ],
)
def test_creator__must_be_a_saved_model_instance(make_creator: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        tasks.record("k", creator=make_creator())

    assert not Task.objects.exists()


# -- repeat, remove_existing_tasks, unique ------------------------------------------------------


def test_repeat__is_stored_with_its_end(clock: Clock) -> None:
    task = tasks.record("k", repeat=Task.DAILY, repeat_until=T0 + timedelta(days=7))

    row = Task.objects.get(pk=task.pk)
    assert row.repeat == 86400 == Task.DAILY
    assert row.repeat_until == T0 + timedelta(days=7)
    assert row.repeat_anchor == T0


def test_repeat__never_means_no_repeat() -> None:
    assert tasks.record("k", repeat=Task.NEVER).repeat is None


def test_remove_existing_tasks__replaces_a_pending_call_with_the_same_arguments() -> None:
    old = tasks.record("same")
    other = tasks.record("different")

    new = tasks.record("same", remove_existing_tasks=True)

    assert set(Task.objects.values_list("pk", flat=True)) == {other.pk, new.pk}
    assert new.pk != old.pk


def test_unique__returns_the_pending_task_instead_of_adding_another() -> None:
    first = tasks.record("once", unique=True)

    again = tasks.record("once", unique=True)

    assert again.pk == first.pk
    assert Task.objects.count() == 1


# -- bad call-time options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"queue": ""}, ValueError, "queue must be a non-empty string"),
        ({"priority": "high"}, ValueError, "priority must be an integer"),
        ({"priority": True}, ValueError, "priority must be an integer"),
        ({"verbose_name": 5}, ValueError, "verbose_name must be a string"),
        ({"schedule": "tomorrow"}, TypeError, "Cannot schedule a task with 'tomorrow'"),
        ({"repeat": -5}, ValueError, "Repeat step"),
        ({"repeat": "daily"}, TypeError, "Invalid repeat"),
        ({"repeat_until": "2030-01-01"}, TypeError, "repeat_until must be a datetime"),
    ],
)
def test_call_options__bad_values_raise_and_write_no_row(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        tasks.record("k", **options)

    assert not Task.objects.exists()


def test_call__an_unknown_keyword_is_an_argument_the_function_does_not_take() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'delay'"):
        tasks.record("k", delay=5)  # type: ignore[call-arg]

    assert not Task.objects.exists()


# -- transactions -------------------------------------------------------------------------------


def test_transaction__a_rollback_leaves_no_task() -> None:
    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        tasks.record("rolled back")
        assert Task.objects.count() == 1
        raise Abort

    assert not Task.objects.exists()


def count_from_another_connection() -> int:
    """Count Task rows as a worker would see them: from a connection of its own."""
    seen: list[int] = []

    def count() -> None:
        try:
            seen.append(Task.objects.count())
        finally:
            connection.close()

    thread = threading.Thread(target=count)
    thread.start()
    thread.join(30)
    assert seen, "the other connection did not answer"
    return seen[0]


@pytest.mark.django_db(transaction=True)
def test_transaction__no_other_connection_sees_the_row_before_commit() -> None:
    with transaction.atomic():
        tasks.record("pending commit")
        assert count_from_another_connection() == 0

    assert count_from_another_connection() == 1
