"""``task.bulk(calls)``: many calls of one task, checked first, then inserted together."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import DataError, connection, transaction
from django.db.models import Value
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from background_tasks import bulk, enqueue
from background_tasks.exceptions import InvalidTaskArguments, InvalidTaskError
from background_tasks.models import Task
from background_tasks.serialization import params_hash
from background_tasks.task_function import RESERVED_KWARGS
from tests.helpers import max_allowed_packet
from tests.testapp import tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def wakeups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every queue the insert path woke workers for."""
    woken: list[str] = []
    monkeypatch.setattr(enqueue, "notify_ready", lambda using, queue: woken.append(queue))
    monkeypatch.setattr(enqueue, "notify_clause", lambda using, queue: None)
    return woken


def inserts(queries: CaptureQueriesContext) -> int:
    return sum(1 for q in queries.captured_queries if q["sql"].upper().startswith("INSERT"))


def test_bulk__inserts_a_row_per_call_and_returns_them_saved_in_order() -> None:
    rows = tasks.send_newsletter.bulk([(1,), (2, "daily"), [3]])

    assert [row.pk for row in rows] == sorted(row.pk for row in rows)
    assert all(row.pk is not None for row in rows)
    stored = list(Task.objects.order_by("pk"))
    assert [r.pk for r in stored] == [r.pk for r in rows]
    assert [r.params for r in stored] == [
        {"args": [1], "kwargs": {}},
        {"args": [2, "daily"], "kwargs": {}},
        {"args": [3], "kwargs": {}},
    ]
    assert {(r.queue, r.max_attempts) for r in stored} == {("emails", 5)}
    assert all(r.task_hash == params_hash(r.task_name, r.params) for r in stored)


def test_bulk__a_row_is_the_row_a_single_call_writes() -> None:
    single = tasks.send_newsletter(user_id=7, template="daily", priority=3)
    [bulked] = tasks.send_newsletter.bulk([{"user_id": 7, "template": "daily"}], priority=3)

    fields = ["task_name", "params", "task_hash", "queue", "priority", "max_attempts", "repeat"]
    one, two = (Task.objects.values(*fields).get(pk=pk) for pk in (single.pk, bulked.pk))
    assert one == two


def test_bulk__shared_options_apply_to_every_item_and_an_item_s_own_win() -> None:
    later = timezone.now() + timedelta(hours=1)

    rows = tasks.send_newsletter.bulk(
        [
            (1,),
            tasks.send_newsletter.call(2, template="x", queue="urgent", priority=9),
            {"user_id": 3, "verbose_name": "third"},
        ],
        queue="bulk",
        priority=2,
        schedule=later,
    )

    stored = {r.pk: r for r in Task.objects.all()}
    got = [(stored[r.pk].queue, stored[r.pk].priority, stored[r.pk].verbose_name) for r in rows]
    assert got == [("bulk", 2, ""), ("urgent", 9, ""), ("bulk", 2, "third")]
    assert stored[rows[1].pk].params == {"args": [2], "kwargs": {"template": "x"}}
    assert {r.run_at for r in stored.values()} == {later}


def test_bulk__items_with_options_of_their_own_store_what_single_calls_store(
    django_user_model: Any,
) -> None:
    user = django_user_model.objects.create(username="creator")
    when = timezone.now() + timedelta(days=2)
    calls = [
        tasks.send_newsletter.call(1, queue="a", priority=-3, verbose_name="one"),
        tasks.send_newsletter.call(2, schedule=when, repeat=timedelta(hours=1)),
        tasks.send_newsletter.call(3, creator=user, repeat_until=when, repeat=60),
        tasks.send_newsletter.call(4, template="ü \u2603 'quoted' \"double\""),
        (5,),
    ]
    singles = [
        tasks.send_newsletter(1, queue="a", priority=-3, verbose_name="one"),
        tasks.send_newsletter(2, schedule=when, repeat=timedelta(hours=1)),
        tasks.send_newsletter(3, creator=user, repeat_until=when, repeat=60),
        tasks.send_newsletter(4, template="ü \u2603 'quoted' \"double\""),
        tasks.send_newsletter(5),
    ]

    rows = tasks.send_newsletter.bulk(calls)

    skip = {"id", "created_at", "run_at", "scheduled_at", "repeat_anchor"}
    fields = [f.attname for f in Task._meta.concrete_fields if f.attname not in skip]
    for single, bulked in zip(singles, rows, strict=True):
        one = Task.objects.values(*fields).get(pk=single.pk)
        two = Task.objects.values(*fields).get(pk=bulked.pk)
        assert one == two
    stored = Task.objects.get(pk=rows[1].pk)
    assert (stored.run_at, stored.scheduled_at, stored.repeat_anchor) == (when, when, when)


def test_bulk__json_values_equal_in_python_are_stored_apart() -> None:
    # 1 == True == 1.0 in Python; JSON tells them apart, and so must the stored arguments.
    rows = tasks.send_newsletter.bulk([(1,), (True,), (1.0,), ("1",)])

    stored = [Task.objects.get(pk=row.pk).params["args"][0] for row in rows]
    assert [(type(v), v) for v in stored] == [(int, 1), (bool, True), (float, 1.0), (str, "1")]


@pytest.mark.django_db(transaction=True)
def test_abulk__enqueues_from_async_code_with_the_same_options() -> None:
    async def enqueue_from_a_coroutine() -> list[Task]:
        return await tasks.send_newsletter.abulk([(1,), (2,)], queue="async", priority=4)

    rows = async_to_sync(enqueue_from_a_coroutine)()

    stored = Task.objects.filter(pk__in=[r.pk for r in rows]).values_list("queue", "priority")
    assert list(stored) == [("async", 4), ("async", 4)]


def test_bulk__an_empty_list_writes_nothing_and_sends_no_query() -> None:
    with CaptureQueriesContext(connection) as queries:
        assert tasks.send_newsletter.bulk([]) == []

    assert len(queries) == 0


# -- every call is checked before anything is written -------------------------------------------


@pytest.mark.parametrize(
    ("items", "error", "message"),
    [
        ([(1,), (2,), (object(),)], InvalidTaskArguments, r"^Item 2 of the bulk call: .*user_id"),
        ([(1,), (1, 2, 3)], InvalidTaskArguments, r"^Item 1 of the bulk call: .*arguments"),
        ([(1,), 5], InvalidTaskError, r"^Item 1 of the bulk call is 5: pass a tuple"),
        ([{"nobody": 1}], InvalidTaskArguments, r"^Item 0 of the bulk call: "),
        ([(1,), {"user_id": 1, "queue": ""}], InvalidTaskError, r"^Item 1 .*queue must be"),
        ([tasks.record.call("k")], InvalidTaskError, r"^Item 0 .* is a call of 'tests"),
        (
            [tasks.send_newsletter.call(1, remove_existing_tasks=True)],
            InvalidTaskError,
            "option of the whole bulk call",
        ),
    ],
)
def test_bulk__a_bad_item_is_named_by_its_index_and_nothing_is_written(
    items: list[object], error: type[Exception], message: str, created: list[Task]
) -> None:
    with pytest.raises(error, match=message):
        tasks.send_newsletter.bulk(items)

    assert Task.objects.count() == 0 and created == []


def test_bulk__a_bad_shared_option_or_batch_size_is_refused() -> None:
    with pytest.raises(InvalidTaskError, match=r"Item 0 .*priority must be an integer"):
        tasks.send_newsletter.bulk([(1,)], priority="high")  # type: ignore[arg-type]
    with pytest.raises(InvalidTaskError, match="batch_size must be an integer >= 1, not 0"):
        tasks.send_newsletter.bulk([(1,)], batch_size=0)

    assert Task.objects.count() == 0


def test_bulk__the_item_options_are_the_call_options() -> None:
    assert bulk.CALL_OPTIONS == RESERVED_KWARGS


# -- transactions, statements, wake-ups, signals -----------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_bulk__rolls_back_with_the_caller_s_transaction() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        rows = tasks.send_newsletter.bulk([(1,), (2,)])
        assert Task.objects.count() == 2 and all(r.pk for r in rows)
        raise RuntimeError("the caller fails")

    assert Task.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_bulk__outside_a_transaction_is_one_transaction_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written: list[int] = []
    real = enqueue._bulk_insert

    def fail_on_second_batch(
        rows: list[Task], using: str, batch_size: int | None, **options: Any
    ) -> None:
        real(rows, using, batch_size, **options)
        written.append(len(rows))
        raise RuntimeError("the database went away")

    monkeypatch.setattr(enqueue, "_bulk_insert", fail_on_second_batch)
    with pytest.raises(RuntimeError):
        tasks.send_newsletter.bulk([(1,), (2,), (3,)])

    assert written == [3] and Task.objects.count() == 0


def test_bulk__writes_multi_row_inserts_of_at_most_batch_size_rows(wakeups: list[str]) -> None:
    with CaptureQueriesContext(connection) as queries:
        rows = tasks.send_newsletter.bulk([(i,) for i in range(5)], batch_size=2)

    assert Task.objects.count() == 5 and all(r.pk for r in rows)
    expected = 3 if connection.features.can_return_rows_from_bulk_insert else 5
    assert inserts(queries) == expected


def test_bulk__wakes_each_queue_with_a_ready_row_once_per_call(wakeups: list[str]) -> None:
    later = timezone.now() + timedelta(hours=1)

    tasks.send_newsletter.bulk(
        [
            (1,),
            (2,),
            tasks.send_newsletter.call(3, queue="mail"),
            (4,),
            tasks.send_newsletter.call(5, queue="slow", schedule=later),
        ],
        batch_size=2,
    )

    assert wakeups == ["emails", "mail"]


def test_bulk__sends_task_created_for_every_row(created: list[Task]) -> None:
    rows = tasks.send_newsletter.bulk([(1,), (2,)])

    assert created == rows


@override_settings(BACKGROUND_TASKS_IMMEDIATE=True)
def test_bulk__immediate_mode_runs_every_call_inline_in_order() -> None:
    tasks.CALLS.clear()

    rows = tasks.send_newsletter.bulk([(1,), tasks.send_newsletter.call(2, template="daily")])

    assert tasks.CALLS == [((1,), {"template": "weekly"}), ((2,), {"template": "daily"})]
    assert [r.pk for r in rows] == [None, None] and Task.objects.count() == 0


@override_settings(BACKGROUND_TASKS_IMMEDIATE=True)
def test_bulk__immediate_mode_checks_every_call_before_running_any() -> None:
    tasks.CALLS.clear()

    with pytest.raises(InvalidTaskArguments, match=r"^Item 1"):
        tasks.send_newsletter.bulk([(1,), (object(),)])

    assert tasks.CALLS == []


# -- unique and remove_existing_tasks ----------------------------------------------------------


def test_bulk__unique_returns_the_pending_copy_in_place_of_a_duplicate(
    created: list[Task],
) -> None:
    pending = tasks.send_newsletter(1, unique=True)
    created.clear()

    rows = tasks.send_newsletter.bulk([(1,), (2,), (2,), (3,)], unique=True)

    assert rows[0].pk == pending.pk
    assert rows[2].pk == rows[1].pk
    assert Task.objects.count() == 3
    assert created == [rows[1], rows[3]]


def test_bulk__unique_items_and_plain_items_keep_the_order_given() -> None:
    rows = tasks.send_newsletter.bulk(
        [(1,), tasks.send_newsletter.call(2, unique=True), (3,), (4,)], batch_size=10
    )

    assert [r.pk for r in rows] == sorted(r.pk for r in rows)
    assert Task.objects.get(pk=rows[1].pk).unique_key


def test_bulk__remove_existing_tasks_replaces_pending_copies_as_calls_one_after_another() -> None:
    old = tasks.send_newsletter(1)

    rows = tasks.send_newsletter.bulk([(1,), (2,)], remove_existing_tasks=True)

    assert not Task.objects.filter(pk=old.pk).exists()
    assert sorted(Task.objects.values_list("pk", flat=True)) == [r.pk for r in rows]


# -- the one-row path stays one statement --------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: tasks.send_newsletter(1), id="ready"),
        pytest.param(lambda: tasks.send_newsletter(1, schedule=3600), id="scheduled"),
        pytest.param(lambda: tasks.send_newsletter.bulk([(1,)]), id="bulk-of-one"),
    ],
)
def test_single_enqueue__costs_one_statement_wake_up_included(call: object) -> None:
    tasks.record("warm-up")  # the migrations check is cached after the first enqueue

    with CaptureQueriesContext(connection) as queries:
        call()  # type: ignore[operator]

    assert [q["sql"].split()[0].upper() for q in queries.captured_queries] == ["INSERT"]


@pytest.mark.django_db(transaction=True)
def test_single_enqueue__in_autocommit_is_one_statement_and_no_transaction_of_its_own() -> None:
    tasks.record("warm-up")

    with CaptureQueriesContext(connection) as queries:
        tasks.send_newsletter(1)

    assert [q["sql"].split()[0].upper() for q in queries.captured_queries] == ["INSERT"]
    assert Task.objects.filter(task_name=tasks.send_newsletter.name).count() == 1


def test_bulk__of_many_rows_costs_its_inserts_and_one_wake_up_per_queue() -> None:
    # Read once per process and connection: whether the tables are migrated, and on
    # MySQL/MariaDB the server's max_allowed_packet.
    tasks.send_newsletter.bulk([(0,), (1,)])

    with CaptureQueriesContext(connection) as queries:
        tasks.send_newsletter.bulk([(i,) for i in range(10)], batch_size=4)

    kinds = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    batches = 3 if connection.features.can_return_rows_from_bulk_insert else 10
    wake = ["SELECT"] if connection.vendor == "postgresql" else []
    # In a test's transaction: no BEGIN or COMMIT of its own.
    assert kinds == ["INSERT"] * batches + wake


# -- PostgreSQL: the wake-ups a listener receives ------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="NOTIFY is PostgreSQL's")
def test_notify__a_listener_gets_one_wake_up_per_call_and_per_queue_of_a_bulk() -> None:
    from background_tasks.wakeup import CHANNEL

    listener = connection.get_new_connection(connection.get_connection_params())
    try:
        listener.autocommit = True
        listener.execute(f"LISTEN {CHANNEL}")

        def received() -> list[str]:
            return [n.payload for n in listener.notifies(timeout=0.5, stop_after=100)]

        tasks.send_newsletter(1)
        assert received() == ["emails"]

        tasks.send_newsletter(2, schedule=3600)
        assert received() == []

        tasks.send_newsletter.bulk(
            [(i,) for i in range(5)] + [tasks.send_newsletter.call(9, queue="mail")],
            batch_size=2,
        )
        assert sorted(received()) == ["emails", "mail"]
    finally:
        listener.close()


# -- how the rows are written, per database -----------------------------------------------------


def test_insert_tasks__values_only_django_can_write_fall_back_to_bulk_create(
    wakeups: list[str],
) -> None:
    now = timezone.now()
    rows = [
        Task(task_name="tests.testapp.tasks.record", params={"args": [key]}, run_at=now)
        for key in ("a", "b")
    ]
    rows[1].last_error = Value("written by the database")

    enqueue.insert_tasks(rows, using="default")

    assert all(r.pk for r in rows)
    assert Task.objects.get(pk=rows[1].pk).last_error == "written by the database"


@pytest.mark.skipif(connection.vendor == "postgresql", reason="PostgreSQL always returns ids")
def test_insert_tasks__without_ids_from_a_multi_row_insert_saves_row_by_row(
    monkeypatch: pytest.MonkeyPatch, wakeups: list[str]
) -> None:
    # MySQL (not MariaDB) cannot return the ids of a multi-row INSERT.
    monkeypatch.setattr(type(connection.features), "can_return_rows_from_bulk_insert", False)

    with CaptureQueriesContext(connection) as queries:
        rows = tasks.send_newsletter.bulk([(1,), (2,), (3,)])

    assert inserts(queries) == 3
    assert sorted(Task.objects.values_list("pk", flat=True)) == [r.pk for r in rows]


# -- MySQL/MariaDB: statements within max_allowed_packet ----------------------------------------


def test_bulk__on_mysql_rows_larger_together_than_max_allowed_packet_are_all_written(
    wakeups: list[str],
) -> None:
    packet = max_allowed_packet()
    # Quotes and backslashes: each is escaped in the JSON text, and each character of that
    # again by the driver. About 60 KB of JSON a row, more than 100 KB sent.
    payload = 'ab"\\' * 10_000
    count = packet // 80_000

    with CaptureQueriesContext(connection) as queries:
        rows = tasks.send_newsletter.bulk(
            [(n, f"{n:06d}{payload}") for n in range(count)], batch_size=count
        )

    statements = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert sum(map(len, statements)) > packet  # together, more than one statement can send
    assert len(statements) > 1 and all(len(sql.encode()) <= packet for sql in statements)
    assert [row.pk for row in rows] == sorted(Task.objects.values_list("pk", flat=True))
    stored = {row.params["args"][0]: row.params["args"][1] for row in Task.objects.all()}
    assert stored == {n: f"{n:06d}{payload}" for n in range(count)}


@pytest.mark.parametrize("path", ["alike", "own options", "row by row"])
def test_bulk__on_mysql_a_row_too_large_to_send_is_refused_by_its_index_and_nothing_written(
    path: str, monkeypatch: pytest.MonkeyPatch, wakeups: list[str]
) -> None:
    packet = max_allowed_packet()
    if path == "row by row":  # MySQL (not MariaDB): no ids from a multi-row INSERT
        monkeypatch.setattr(type(connection.features), "can_return_rows_from_bulk_insert", False)
    calls: list[Any] = [(n, "small") for n in range(3)]
    calls[2] = (2, "x" * packet)
    if path == "own options":
        calls[0] = tasks.send_newsletter.call(0, "small", priority=3)

    with pytest.raises(DataError) as refused:
        tasks.send_newsletter.bulk(calls)

    assert re.fullmatch(
        rf"Item 2 of the bulk call would take about [\d,]+ bytes to send, more than the "
        rf"database's max_allowed_packet \({packet:,} bytes\)",
        str(refused.value),
    )
    # Refused before anything was sent: the caller's transaction goes on.
    assert Task.objects.count() == 0


# -- PostgreSQL: statements within what one jsonb value holds ------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's jsonb")
def test_bulk__on_postgresql_rows_larger_together_than_one_jsonb_value_are_all_written(
    wakeups: list[str],
) -> None:
    # A jsonb value holds at most 256 MB (2**28 - 1 bytes), and the rows of a statement are
    # sent as one: together, more than that.
    payload = "x" * (1024 * 1024)
    count = 270

    rows = tasks.send_newsletter.bulk([(n, payload) for n in range(count)], batch_size=count)

    assert [row.pk for row in rows] == sorted(Task.objects.values_list("pk", flat=True))
    stored = Task.objects.order_by("pk").values_list("params__args__0", flat=True)
    assert list(stored) == list(range(count))
