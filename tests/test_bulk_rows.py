"""The rows of a bulk call whose items share their options: made from one template, written once.

``task.bulk()`` makes the rows of the calls without options of their own as copies of one
checked template (``task_rows.RowMaker``), as a single call does, and hands the first row to the
insert path as their template; the rows must be what single calls write, each its own object.
"""

from __future__ import annotations

import gc
import sqlite3
from datetime import timedelta
from typing import Any
from unittest.mock import patch

import pytest
from django.db import connection
from django.db.models.signals import post_init
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from background_tasks import enqueue, signals
from background_tasks.exceptions import InvalidTaskArguments
from background_tasks.models import Task
from background_tasks.serialization import encode_params, params_hash, params_hasher
from tests.testapp import tasks

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "params",
    [
        {"args": [1, 2.5, True, None, "text"], "kwargs": {}},
        {"args": ['é \u2603 \U0001f600 "quoted" \\ back'], "kwargs": {"z": 1, "a": [2, 3]}},
        {"args": [{"b": {"y": 1, "x": [None, {"k": -0.0}]}, "a": 1e300}], "kwargs": {}},
        {"args": [10**600, -(10**600)], "kwargs": {"only": ""}},
        {"args": [], "kwargs": {}},
    ],
)
def test_params_hasher__gives_params_hash_of_checked_parameters(params: dict[str, Any]) -> None:
    checked = encode_params("tests.x", lambda *a, **k: None, params["args"], params["kwargs"])

    assert params_hasher("tests.x")(checked) == params_hash("tests.x", checked)
    assert params_hasher("tests.other")(checked) == params_hash("tests.other", checked)


def test_bulk__rows_with_shared_options_store_what_single_calls_store(
    django_user_model: Any,
) -> None:
    user = django_user_model.objects.create(username="creator")
    when = timezone.now() + timedelta(days=2)
    options: dict[str, Any] = {
        "queue": "shared",
        "priority": 7,
        "verbose_name": "shared",
        "creator": user,
        "schedule": when,
        "repeat": timedelta(hours=1),
        "repeat_until": when + timedelta(days=1),
    }
    singles = [
        tasks.send_newsletter(1, "daily", **options),
        tasks.send_newsletter(2, "daily", **options),
        tasks.send_newsletter(user_id=3, template="daily", **options),
    ]

    rows = tasks.send_newsletter.bulk(
        [(1, "daily"), (2, "daily"), {"user_id": 3, "template": "daily"}], **options
    )

    skip = {"id", "created_at"}
    fields = [f.attname for f in Task._meta.concrete_fields if f.attname not in skip]
    for single, bulked in zip(singles, rows, strict=True):
        assert Task.objects.values(*fields).get(pk=bulked.pk) == Task.objects.values(*fields).get(
            pk=single.pk
        )
    stored = Task.objects.get(pk=rows[2].pk)
    assert stored.creator == user and stored.run_at == when


def test_bulk__calls_without_options_copy_the_template_single_calls_copy(clock: Any) -> None:
    single = tasks.send_newsletter(1, schedule=60)  # builds the task's template
    built: list[Task] = []

    def remember(instance: Task, **kwargs: object) -> None:
        built.append(instance)

    post_init.connect(remember, sender=Task, dispatch_uid="test-bulk-rows-inits")
    try:
        rows = tasks.send_newsletter.bulk([(1,), (2,), (3,)], schedule=60)
    finally:
        post_init.disconnect(sender=Task, dispatch_uid="test-bulk-rows-inits")

    assert built == []
    fields = [f.attname for f in Task._meta.concrete_fields if f.attname != "id"]
    assert Task.objects.values(*fields).get(pk=rows[0].pk) == Task.objects.values(*fields).get(
        pk=single.pk
    )
    assert [row.params["args"] for row in rows] == [[1], [2], [3]]


def test_bulk__each_returned_row_is_its_own_object_equal_to_what_is_stored() -> None:
    rows = tasks.send_newsletter.bulk([(n,) for n in range(5)], queue="own")

    assert len({id(row) for row in rows}) == 5
    assert len({id(row._state) for row in rows}) == 5
    assert len({id(row.worker_ids) for row in rows}) == 5
    assert all(not row._state.adding and row._state.db == "default" for row in rows)
    rows[1].worker_ids.append("changed in place")
    assert [row.worker_ids for row in rows if row is not rows[1]] == [[]] * 4
    for row in rows:
        stored = Task.objects.get(pk=row.pk)
        assert (row.params, row.task_hash, row.queue) == (
            stored.params,
            stored.task_hash,
            stored.queue,
        )
        assert row.unique_key is None and stored.unique_key is None


def test_bulk__rows_with_shared_options_are_checked_and_written_once_per_statement() -> None:
    tasks.record("warm-up")  # the migrations check is cached after the first enqueue
    checked: list[Task] = []
    real_check = enqueue.check_row

    def counting_check(row: Task) -> None:
        checked.append(row)
        real_check(row)

    with pytest.MonkeyPatch.context() as patch, CaptureQueriesContext(connection) as queries:
        patch.setattr(enqueue, "check_row", counting_check)
        rows = tasks.send_newsletter.bulk([(n,) for n in range(7)], batch_size=3)

    assert checked == [rows[0]]
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == (3 if connection.features.can_return_rows_from_bulk_insert else 7)
    assert sorted(
        Task.objects.exclude(task_name=tasks.record.name).values_list("pk", flat=True)
    ) == [r.pk for r in rows]


def test_bulk__a_bad_call_after_many_good_ones_names_its_index_and_writes_nothing() -> None:
    calls: list[Any] = [(n,) for n in range(1000)]
    calls[777] = ("not", "one", "argument")

    with pytest.raises(InvalidTaskArguments, match=r"^Item 777 of the bulk call: "):
        tasks.send_newsletter.bulk(calls)

    assert Task.objects.count() == 0


def test_bulk__pauses_the_garbage_collector_while_it_runs_and_restores_it() -> None:
    assert gc.isenabled()
    during: list[bool] = []

    def note(sender: str, task: Task, **kwargs: object) -> None:
        during.append(gc.isenabled())

    signals.task_created.connect(note, dispatch_uid="test-bulk-rows-gc")
    try:
        tasks.send_newsletter.bulk([(n,) for n in range(3)])
        assert during == [False] * 3 and gc.isenabled()
        with pytest.raises(InvalidTaskArguments):
            tasks.send_newsletter.bulk([(1,), (object(),)])
        assert gc.isenabled()

        gc.disable()
        try:
            tasks.send_newsletter.bulk([(n,) for n in range(3)])
            assert not gc.isenabled()
        finally:
            gc.enable()
    finally:
        signals.task_created.disconnect(dispatch_uid="test-bulk-rows-gc")


@override_settings(BACKGROUND_TASKS_IMMEDIATE=True)
def test_bulk__immediate_mode_runs_task_bodies_with_the_garbage_collector_on() -> None:
    during: list[bool] = []
    run_body = tasks.send_newsletter.run_body

    def noted(args: Any, kwargs: Any) -> Any:
        during.append(gc.isenabled())
        return run_body(args, kwargs)

    with patch.object(tasks.send_newsletter, "run_body", noted):
        tasks.send_newsletter.bulk([(n,) for n in range(2)])

    assert during == [True, True]
    assert gc.isenabled()


def test_bulk__on_sqlite_a_statement_holds_as_many_rows_as_the_library_s_limit_allows() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's limit on the parameters of a statement")
    connection.ensure_connection()
    getlimit = getattr(connection.connection, "getlimit", None)
    if getlimit is None or getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) < 100 * 40:
        pytest.skip("a Python or SQLite that cannot tell, or allows less than 100 rows")

    with CaptureQueriesContext(connection) as queries:
        rows = tasks.send_newsletter.bulk([(n,) for n in range(100)], batch_size=100)

    # Django's own batches would be of 33 rows (999 parameters, 30 columns): 4 statements.
    assert [q["sql"].split()[0] for q in queries.captured_queries].count("INSERT") == 1
    assert Task.objects.count() == 100 and all(row.pk for row in rows)
