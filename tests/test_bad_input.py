"""Malformed rows against a real ``process_tasks --burst``: each is failed or set aside with a
clear reason, the other rows still run, and the worker exits 0.

Rows are made through the ORM and then broken with raw SQL where the ORM would refuse the value
(JSON null in a NOT NULL column, an attempts counter at the column's maximum, dates Python
cannot hold). A row the database cannot even hand to Python is *quarantined*: ``locked_by`` is
set to ``"quarantined"`` so that no claim or rescue picks it again, and ``last_error`` says why
(see background_tasks/isolation.py). Cases that cannot exist on a vendor are skipped with the
reason.
"""

from __future__ import annotations

import subprocess
from datetime import timedelta
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from background_tasks.models import QUARANTINED, CompletedTask, Schedule, Task, Worker
from tests.helpers import run_command, worker_env
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = pytest.mark.django_db(transaction=True)

RECORD = "tests.testapp.tasks.record"
GOOD_ROWS = 3
#: The largest value each vendor's PositiveIntegerField column can hold.
ATTEMPTS_MAXIMUM = {"postgresql": 2**31 - 1, "mysql": 2**32 - 1, "sqlite": 2**63 - 1}


def task_table() -> str:
    return connection.ops.quote_name(Task._meta.db_table)


def set_raw(task_id: int, assignment: str, *params: Any) -> None:
    """Write a value the ORM would refuse (``assignment`` is SQL such as ``run_at = %s``)."""
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {task_table()} SET {assignment} WHERE id = %s", [*params, task_id])


def bad_row(**fields: Any) -> int:
    """Insert a task due before the good ones (so the claim meets it first); return its id."""
    fields.setdefault("task_name", RECORD)
    fields.setdefault("params", {"args": ["bad"], "kwargs": {}})
    fields.setdefault("run_at", timezone.now() - timedelta(hours=1))
    return int(Task.objects.create(**fields).pk)


def good_rows() -> list[str]:
    keys = [f"good-{index}" for index in range(GOOD_ROWS)]
    for key in keys:
        tasks.record(key)
    return keys


def drain(**env: str) -> subprocess.CompletedProcess[str]:
    """Run ``process_tasks --burst`` to the end; it must exit 0."""
    result = run_command("process_tasks", "--burst", "--log-std", env=worker_env(**env))
    assert result.returncode == 0, result.stderr
    return result


def assert_drained(keys: list[str], result: subprocess.CompletedProcess[str]) -> None:
    """Every good row ran once, and nothing is left held or ready."""
    ran = sorted(TaskRun.objects.filter(key__in=keys).values_list("key", flat=True))
    assert ran == sorted(keys), result.stderr


def live(task_id: int) -> tuple[str | None, str] | None:
    """Return (locked_by, last_error) of a live row without loading its other fields."""
    row = Task.objects.filter(pk=task_id).values_list("locked_by", "last_error").first()
    return None if row is None else (row[0], row[1])


def failed_record(task_id: int) -> CompletedTask:
    record: CompletedTask = CompletedTask.objects.get(task_id=task_id)
    assert record.status == CompletedTask.Status.FAILED
    return record


def require(*vendors: str) -> None:
    if connection.vendor not in vendors:
        pytest.skip(f"only {' and '.join(vendors)} can hold this value")


# -- rows that run, but whose outcome or follower used to be unwritable ------------------------


def test_bad_repeat__the_task_runs_once_is_recorded_and_the_series_stops_with_the_reason() -> None:
    task_id = bad_row(params={"args": ["repeat"], "kwargs": {}}, repeat={"foo": 1})
    keys = good_rows()

    result = drain()

    assert_drained(keys, result)
    assert TaskRun.objects.filter(key="repeat").count() == 1
    record = CompletedTask.objects.get(task_id=task_id)
    assert record.status == CompletedTask.Status.SUCCEEDED
    assert "No next occurrence was scheduled: its repeat could not be computed" in record.last_error
    assert "Invalid repeat spec {'foo': 1}" in record.last_error
    assert not Task.objects.exists()
    assert "event=repeat_stopped" in result.stderr


def test_params_json_null__runs_with_no_arguments_and_is_recorded() -> None:
    task_id = bad_row(task_name="tests.record_without_arguments")
    set_raw(task_id, "params = 'null'")
    keys = good_rows()

    result = drain()

    assert_drained(keys, result)
    assert TaskRun.objects.filter(key="without-arguments").count() == 1
    record = CompletedTask.objects.get(task_id=task_id)
    assert record.status == CompletedTask.Status.SUCCEEDED
    assert record.params == {"args": [], "kwargs": {}}


def test_attempts_at_the_column_maximum__fails_without_running_and_claims_go_on() -> None:
    maximum = ATTEMPTS_MAXIMUM[connection.vendor]
    task_id = bad_row(params={"args": ["at-maximum"], "kwargs": {}})
    set_raw(task_id, "attempts = %s", maximum)
    keys = good_rows()

    result = drain()

    assert_drained(keys, result)
    assert not TaskRun.objects.filter(key="at-maximum").exists()
    record = failed_record(task_id)
    assert record.attempts == maximum
    assert f"attempts counter of this row is at its maximum ({maximum})" in record.last_error


def test_params_of_the_wrong_shape_10mb__fail_with_a_reason_cut_short() -> None:
    task_id = bad_row(params={"args": "x" * 10_000_000, "kwargs": {}})
    keys = good_rows()

    result = drain()

    assert_drained(keys, result)
    record = failed_record(task_id)
    assert "need 'args' to be a list" in record.last_error
    assert "more characters" in record.last_error
    assert len(record.last_error) < 2_000
    assert len(result.stderr) < 100_000


def test_task_name_with_a_newline__cannot_forge_a_log_line() -> None:
    forged = "event=task_succeeded task=forged task_id=0"
    task_id = bad_row(task_name=f"no.such.task\n{forged}")
    keys = good_rows()

    result = drain()

    assert_drained(keys, result)
    assert "No task is registered as 'no.such.task\\n" in failed_record(task_id).last_error
    assert f"\n{forged}" not in result.stderr
    assert f'task="no.such.task\\n{forged}"' in result.stderr


# -- rows the database cannot hand to Python: skipped by the claim and quarantined ------------


@pytest.mark.parametrize(
    ("vendors", "value", "why"),
    [
        (("postgresql",), "-infinity", "timestamp too small"),
        (("postgresql",), "0044-03-15 12:00:00+00 BC", "timestamp too small"),
        (("sqlite",), "0000-01-01 00:00:00", "out of range"),
        (("mysql",), "0000-00-00 00:00:00", "run_at"),
    ],
    ids=["postgresql-infinity", "postgresql-bc", "sqlite-year-0", "mysql-zero-date"],
)
def test_run_at_that_cannot_be_loaded__is_quarantined_and_the_others_run(
    vendors: tuple[str, ...], value: str, why: str
) -> None:
    require(*vendors)
    task_id = bad_row(params={"args": ["unloadable"], "kwargs": {}})
    try:
        with transaction.atomic():
            set_raw(task_id, "run_at = %s", value)
    except DatabaseError as exc:
        pytest.skip(f"this server's SQL mode refuses {value!r}: {exc}")
    keys = good_rows()

    result = drain()

    assert_drained(keys, result)
    assert not TaskRun.objects.filter(key="unloadable").exists()
    holder, error = live(task_id) or (None, "")
    assert holder == QUARANTINED
    assert "cannot be run" in error and why in error
    assert "event=task_quarantined" in result.stderr
    # A second worker neither claims it again nor fails on it.
    second = drain()
    assert live(task_id) == (QUARANTINED, error), second.stderr


# -- rows held by nobody or by a lost worker: rescued -----------------------------------------


@pytest.mark.parametrize(
    ("locked_by", "locked_at"),
    [("", "old"), ("", None), ("gone:1:abc", None)],
    ids=["empty-holder", "empty-holder-no-lock-time", "unknown-holder-no-lock-time"],
)
def test_row_held_by_nobody__is_rescued_and_runs(locked_by: str, locked_at: str | None) -> None:
    lock_time = timezone.now() - timedelta(days=1) if locked_at else None
    task_id = bad_row(
        task_name="tests.record_retried_at_once",
        params={"args": ["stuck"], "kwargs": {}},
        locked_by=locked_by,
        locked_at=lock_time,
        attempts=1,
    )
    keys = good_rows()

    result = drain()

    assert_drained(keys, result)
    assert TaskRun.objects.filter(key="stuck").count() == 1
    record = CompletedTask.objects.get(task_id=task_id)
    assert record.status == CompletedTask.Status.SUCCEEDED
    assert "Worker lost" in record.last_error
    assert "event=task_rescued" in result.stderr


def test_lost_worker_row_with_a_bad_repeat__is_rescued_and_recorded_failed() -> None:
    stale = timezone.now() - timedelta(days=1)
    Worker.objects.create(
        id="dead:1:abc", host="dead", pid=1, queues=[], started_at=stale, last_heartbeat_at=stale
    )
    task_id = bad_row(
        params={"args": ["lost"], "kwargs": {}},
        repeat={"foo": 1},
        max_attempts=1,
        attempts=1,
        locked_by="dead:1:abc",
        locked_at=stale,
    )
    keys = good_rows()

    result = drain()

    assert_drained(keys, result)
    record = failed_record(task_id)
    assert "Worker lost: dead:1:abc" in record.last_error
    assert "its repeat could not be computed" in record.last_error
    assert not Task.objects.exists()


# -- schedules: a bad row is disabled, the others fire ----------------------------------------


def test_schedules_with_bad_rows__are_disabled_and_the_good_one_fires() -> None:
    due = timezone.now() - timedelta(minutes=1)

    def schedule(name: str, **fields: Any) -> int:
        fields.setdefault("params", {"args": [name], "kwargs": {}})
        return int(
            Schedule.objects.create(
                name=name, task_name=RECORD, cron="0 3 * * *", next_fire_at=due, **fields
            ).pk
        )

    bad_cron = schedule("bad-cron")
    Schedule.objects.filter(pk=bad_cron).update(cron="not a cron")
    null_params = schedule("null-params")
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(Schedule._meta.db_table)
        cursor.execute(f"UPDATE {table} SET params = 'null' WHERE id = %s", [null_params])
    schedule("good")

    result = drain()

    assert TaskRun.objects.filter(key="good").count() == 1, result.stderr
    enabled = dict(Schedule.objects.filter(source="admin").values_list("name", "enabled"))
    assert enabled == {"bad-cron": False, "null-params": False, "good": True}
    assert "event=schedule_invalid schedule=bad-cron" in result.stderr
    assert "event=schedule_invalid schedule=null-params" in result.stderr
