"""The archive's plain statements store what the ORM would store, and know when they may not run."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta

import pytest
from django.apps import apps
from django.db import IntegrityError, connection, connections, transaction
from django.db.models import SET_NULL, ForeignKey, Model
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy

from background_tasks import archive_sql, lifecycle
from background_tasks.models import CompletedTask, Task

WORKER = "w:1:a"


def _held_task(**fields: object) -> Task:
    now = timezone.now()
    values: dict[str, object] = {
        "task_name": "tests.testapp.tasks.record",
        "params": {"args": ["k"], "kwargs": {}},
        "run_at": now,
        "locked_by": WORKER,
        "locked_at": now,
        "attempts": 1,
    }
    values.update(fields)
    return Task.objects.create(**values)


def _field_by_field(record: CompletedTask) -> list[object]:
    """What ``save()`` would send: each field's own ``get_db_prep_save``."""
    db = connections[connection.alias]
    return [
        f.get_db_prep_save(f.pre_save(record, True), db)
        for f in CompletedTask._meta.concrete_fields
        if not f.primary_key
    ]


def _comparable(values: list[object]) -> list[tuple[type, object]]:
    """Each value with its type; a driver's JSON wrapper (psycopg's Jsonb) by what it wraps and
    its encoder."""
    return [
        (type(v), (v.obj, getattr(v, "dumps", None)) if hasattr(v, "obj") else v) for v in values
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "values",
    [
        {},  # what a worker writes: text, ints, aware datetimes, JSON objects and lists
        {"result": [1, "two", {"three": None}], "note": "", "progress_done": 3},
        # Values the shortcuts do not take, left to the field: a lazy and a safe string, a
        # bool in an integer column, JSON that is a bare string, a number, or JSON null.
        {"note": gettext_lazy("lazy"), "error_class": mark_safe("safe"), "attempts": True},
        {"result": "just text", "progress_total": None},
        {"result": 12.5},
    ],
)
def test_values__are_what_each_fields_own_conversion_gives(values: dict[str, object]) -> None:
    task = _held_task(worker_ids=["w:0:z"], first_started_at=timezone.now())
    record = lifecycle._record(task, CompletedTask.Status.SUCCEEDED, WORKER, timezone.now())
    for name, value in values.items():
        setattr(record, name, value)
    quick = archive_sql._values(connections[connection.alias], record)
    assert _comparable(quick) == _comparable(_field_by_field(record))


@pytest.mark.django_db(transaction=True)
def test_values__a_naive_datetime_takes_the_fields_way_with_its_warning() -> None:
    task = _held_task()
    record = lifecycle._record(task, CompletedTask.Status.SUCCEEDED, WORKER, timezone.now())
    record.finished_at = datetime(2026, 1, 2, 3, 4, 5)  # naive, with USE_TZ on
    with pytest.warns(RuntimeWarning, match="naive datetime"):
        values = archive_sql._values(connections[connection.alias], record)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert _comparable(values) == _comparable(_field_by_field(record))


@pytest.mark.django_db(transaction=True)
def test_record__has_the_values_a_keyword_build_gives_it() -> None:
    task = _held_task(worker_ids=["w:0:z"], scheduled_at=timezone.now() - timedelta(hours=1))
    now = timezone.now()
    record = lifecycle._record(task, CompletedTask.Status.FAILED, WORKER, now, last_error="boom")

    expected = {f.attname: getattr(task, f.attname) for f in Task._meta.concrete_fields}
    expected.update(
        id=None,
        task_id=task.pk,
        status=CompletedTask.Status.FAILED,
        worker=WORKER,
        started_at=task.locked_at,
        scheduled_at=task.scheduled_at,
        finished_at=now,
        first_started_at=task.locked_at,
        worker_ids=["w:0:z", WORKER],
        last_error="boom",
        result=None,  # the field defaults
        note="",
    )
    got = {f.attname: getattr(record, f.attname) for f in CompletedTask._meta.concrete_fields}
    assert got == {name: expected[name] for name in got}
    assert record._state.adding


@pytest.mark.django_db
def test_record__a_field_the_history_does_not_have_is_refused_by_name() -> None:
    task = _held_task()
    with pytest.raises(TypeError, match="CompletedTask has no field resutl"):
        lifecycle._record(task, CompletedTask.Status.SUCCEEDED, WORKER, timezone.now(), resutl=1)


@pytest.mark.django_db(transaction=True)
def test_move__writes_the_record_only_while_the_row_is_held() -> None:
    task = _held_task()
    record = lifecycle._record(task, CompletedTask.Status.SUCCEEDED, WORKER, timezone.now())
    db = connections[connection.alias]
    with transaction.atomic():
        assert not archive_sql.move_held(db, task.pk, "someone-else", task.locked_at, record)
        assert record.pk is None
        assert archive_sql.move_held(db, task.pk, WORKER, task.locked_at, record)
    assert not Task.objects.filter(pk=task.pk).exists()
    assert CompletedTask.objects.get().pk == record.pk
    assert CompletedTask.objects.get().task_id == task.pk


def _grouping() -> None:
    if not archive_sql.groups_moves(connections[connection.alias]):
        pytest.skip("moves are grouped on MariaDB 10.5+ only")


@pytest.mark.django_db(transaction=True)
def test_grouped_moves__go_in_one_round_trip_at_the_end_and_set_each_record_s_key() -> None:
    _grouping()
    held = [_held_task(params={"args": [f"k{i}"], "kwargs": {}}) for i in range(3)]
    records = [
        lifecycle._record(task, CompletedTask.Status.SUCCEEDED, WORKER, timezone.now())
        for task in held
    ]
    db = connections[connection.alias]
    with CaptureQueriesContext(db) as sent, transaction.atomic():
        with archive_sql.grouped_moves(db):
            for task, record in zip(held, records, strict=True):
                assert archive_sql.move_held(db, task.pk, WORKER, task.locked_at, record)
            assert len(sent.captured_queries) == 0  # noted, not sent yet
            assert Task.objects.count() == 3
        assert len(sent.captured_queries) == 2  # Task.objects.count(), then the group
    assert not Task.objects.exists()
    stored = {row.task_id: row.pk for row in CompletedTask.objects.all()}
    assert stored == {task.pk: record.pk for task, record in zip(held, records, strict=True)}


@pytest.mark.django_db(transaction=True)
def test_grouped_moves__a_row_no_longer_held_raises_and_the_transaction_rolls_back() -> None:
    _grouping()
    kept, taken = _held_task(), _held_task()
    Task.objects.filter(pk=taken.pk).update(locked_by="another-worker")
    db = connections[connection.alias]
    with (
        pytest.raises(archive_sql.MovesNotHeld),
        transaction.atomic(),
        archive_sql.grouped_moves(db),
    ):
        for task in (kept, taken):
            record = lifecycle._record(task, CompletedTask.Status.SUCCEEDED, WORKER, timezone.now())
            archive_sql.move_held(db, task.pk, WORKER, task.locked_at, record)
    assert set(Task.objects.values_list("pk", flat=True)) == {kept.pk, taken.pk}
    assert not CompletedTask.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "mysql", reason="MariaDB only")
def test_move__a_history_value_the_database_refuses_is_an_integrity_error() -> None:
    """Not an OperationalError, which the worker would take for an outage and retry for ever."""
    if not connection.mysql_is_mariadb:
        pytest.skip("MariaDB's JSON columns are text with a CHECK constraint")
    task = _held_task()
    record = lifecycle._record(
        task, CompletedTask.Status.SUCCEEDED, WORKER, timezone.now(), result={"x": float("nan")}
    )
    db = connections[connection.alias]
    with pytest.raises(IntegrityError), transaction.atomic():
        archive_sql.move_held(db, task.pk, WORKER, task.locked_at, record)
    assert Task.objects.filter(pk=task.pk).exists()  # rolled back with it


def test_orm_needed__follows_a_model_referring_to_task_registered_and_removed_later() -> None:
    assert not archive_sql.orm_needed(connection.alias)
    assert not archive_sql.orm_needed(connection.alias)  # the kept answer

    class TaskNote(Model):
        task = ForeignKey(Task, null=True, on_delete=SET_NULL, related_name="+")

        class Meta:
            app_label = "testapp"

        def __str__(self) -> str:
            return f"note on {self.task_id}"

    try:
        # Deleting a task must now null the notes' references: Django's collector does that.
        assert archive_sql.orm_needed(connection.alias)
    finally:
        del apps.all_models["testapp"][TaskNote._meta.model_name]
        apps.clear_cache()
    assert not archive_sql.orm_needed(connection.alias)


def test_orm_needed__when_a_project_listens_to_task_deletes() -> None:
    from django.db.models.signals import post_delete

    def noop(**kwargs: object) -> None:
        pass

    assert not archive_sql.orm_needed(connection.alias)
    post_delete.connect(noop, sender=Task, dispatch_uid="test-archive-sql")
    try:
        assert archive_sql.orm_needed(connection.alias)
    finally:
        post_delete.disconnect(sender=Task, dispatch_uid="test-archive-sql")
    assert not archive_sql.orm_needed(connection.alias)
