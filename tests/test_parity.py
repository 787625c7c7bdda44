"""What passes on SQLite passes on PostgreSQL and MariaDB, and what fails, fails at the call.

Every value here is enqueued, run and recorded through the same code on each database the suite
runs against (``DATABASE_URL``): accepted values come back exactly as they went in, refused ones
are refused at the call with the same error and no row, and a result or an error the database
could not hold never makes a finished task run again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DataError, connection
from django.test import override_settings
from django.utils import timezone

from background_tasks import background, isolation, lifecycle, periodic
from background_tasks.charsets import forget_charsets
from background_tasks.claims import claim_tasks
from background_tasks.exceptions import InvalidTaskArguments, InvalidTaskError
from background_tasks.execution import execute
from background_tasks.models import CompletedTask, Task
from background_tasks.serialization import MAX_DEPTH, MAX_INT_DIGITS
from background_tasks.testing import run_tasks
from background_tasks.worker import Worker
from tests.helpers import max_allowed_packet

pytestmark = pytest.mark.django_db

#: Every call of a body below, so that a test can tell it ran exactly once.
calls: list[Any] = []

UNDECODABLE_FILE_NAME = os.fsdecode(b"file\xff.txt")  # "file\udcff.txt", as os.listdir() gives


@pytest.fixture(autouse=True)
def _clear_ran() -> Iterator[None]:
    calls.clear()
    yield
    calls.clear()


@background(name="tests.parity.echo")
def echo(value: Any) -> Any:
    calls.append(value)
    return value


@background(name="tests.parity.returns", max_attempts=3, backoff=0)
def returns(kind: str) -> Any:
    calls.append(kind)
    return unstorable_results()[kind]


@background(name="tests.parity.raises", max_attempts=1)
def raises(message: str) -> None:
    calls.append(message)
    raise RuntimeError(message + UNDECODABLE_FILE_NAME[-5] + "\x00")


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def unstorable_results() -> dict[str, Any]:
    return {
        "surrogate": {"file": UNDECODABLE_FILE_NAME},
        "huge_int": 10**MAX_INT_DIGITS,
        "too_deep": nested(MAX_DEPTH + 1),
        "set": {1, 2},
        "nul": "a\x00b",
    }


def record_of(task: Task) -> CompletedTask:
    return CompletedTask.objects.get(task_id=task.pk)


# -- arguments that every database stores ---------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("héllo ☃ 😀 𝄞", id="4-byte-characters"),
        pytest.param("\ufffd\uffff", id="replacement-and-noncharacter"),
        pytest.param(2**63, id="beyond-64-bits"),
        pytest.param(-(10**MAX_INT_DIGITS - 1), id="largest-integer"),
        pytest.param(nested(MAX_DEPTH), id="deepest-nesting"),
        pytest.param({"z": 1, "a": [0.1, -0.0, 1e-7, True, None]}, id="mixed"),
        pytest.param({"😀": {"": ""}}, id="odd-keys"),
    ],
)
def test_argument__comes_back_exactly_as_it_went_in_and_is_recorded(value: Any) -> None:
    task = echo(value)

    assert run_tasks() == 1

    assert calls == [value]
    record = record_of(task)
    assert record.status == CompletedTask.Status.SUCCEEDED
    assert record.result == value
    assert record.params == {"args": [value], "kwargs": {}}
    assert record.note == ""


def test_argument__a_float_written_with_an_exponent_comes_back_equal() -> None:
    # PostgreSQL keeps JSON numbers as numeric and prints 1e16 as its digits: the task gets a
    # value equal to the one passed (an int there, a float elsewhere), as docs/tasks.md says.
    echo(1e16)

    run_tasks()

    assert calls == [1e16]


@pytest.mark.parametrize(
    ("value", "reason", "advice"),
    [
        pytest.param(
            UNDECODABLE_FILE_NAME, "lone surrogate '\\udcff'", "os.fsencode", id="surrogate"
        ),
        pytest.param({"k": "a\x00b"}, "key 'k': a string contains a NUL", "NUL", id="nul"),
        pytest.param({"a\x00": 1}, "key 'a\\x00': a string contains a NUL", "NUL", id="nul-key"),
        pytest.param(
            10**MAX_INT_DIGITS, f"more than {MAX_INT_DIGITS} digits", "str(value)", id="int"
        ),
        pytest.param(
            nested(MAX_DEPTH + 1), f"nested more than {MAX_DEPTH} deep", "Flatten", id="deep"
        ),
        pytest.param(float("inf"), "inf is not a finite number", "finite number", id="inf"),
        pytest.param({1: "a"}, "key 1 is of type int", "string keys", id="int-key"),
        pytest.param(
            User(username="ada"), "django.contrib.auth.models.User", "primary key", id="model"
        ),
    ],
)
def test_argument__that_a_database_would_refuse_is_refused_at_the_call_with_fitting_advice(
    value: Any, reason: str, advice: str
) -> None:
    with pytest.raises(InvalidTaskArguments) as error:
        echo(value)

    message = str(error.value)
    assert message.startswith("Task 'tests.parity.echo': argument 'value' cannot be stored: ")
    assert reason in message
    assert advice in message
    # The model-instance hint only where the value is an object.
    assert ("primary key" in message) == isinstance(value, User)
    assert not Task.objects.exists()


def test_argument__a_self_containing_list_is_refused_not_a_recursion_error() -> None:
    loop: list[Any] = []
    loop.append(loop)

    with pytest.raises(InvalidTaskArguments, match="nested more than"):
        echo(loop)


# -- call options and names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("queue", "q" * 101, "longer than 100 characters (101)"),
        ("queue", "a\x00b", "NUL character"),
        ("queue", "q\udcff", "lone surrogate"),
        ("verbose_name", "v" * 256, "longer than 255 characters (256)"),
        ("verbose_name", "a\x00b", "NUL character"),
        ("verbose_name", UNDECODABLE_FILE_NAME, "lone surrogate"),
    ],
)
def test_call_option__that_the_column_cannot_hold_is_refused_at_the_call(
    option: str, value: str, problem: str
) -> None:
    with pytest.raises(InvalidTaskError) as error:
        echo(1, **{option: value})

    assert isinstance(error.value, ValueError)
    assert f"Task 'tests.parity.echo': {option} " in str(error.value)
    assert problem in str(error.value)
    assert not Task.objects.exists()


def test_call_option__at_the_column_lengths_is_stored_and_runs() -> None:
    task = echo(1, queue="q" * 100, verbose_name="ü" * 255)

    assert run_tasks(queues=["q" * 100]) == 1

    record = record_of(task)
    assert (record.queue, record.verbose_name) == ("q" * 100, "ü" * 255)


@pytest.mark.parametrize(
    ("name", "problem"),
    [("n" * 256, "longer than 255 characters"), ("a\x00b", "NUL character")],
)
def test_task_name__that_the_column_cannot_hold_is_refused_at_decoration(
    name: str, problem: str
) -> None:
    with pytest.raises(InvalidTaskError, match=problem):
        background(name=name)(echo.func)


def test_schedule__a_queue_or_name_the_columns_cannot_hold_is_refused_when_declared() -> None:
    with pytest.raises(InvalidTaskError, match=r"queue 'qqq.* is refused: it is longer than 100"):
        periodic.periodic(echo, "* * * * *", name="long-queue", args=[1], queue="q" * 101)
    with pytest.raises(InvalidTaskError, match="name is refused: it contains a NUL"):
        periodic.periodic(echo, "* * * * *", name="a\x00b", args=[1])
    entry = {"task": echo.name, "cron": "* * * * *", "args": [1], "queue": "a\x00b"}
    with (
        override_settings(BACKGROUND_TASKS_SCHEDULES={"bad": entry}),
        pytest.raises(
            ImproperlyConfigured, match=r"SCHEDULES\['bad'\]: queue 'a\\x00b' is refused"
        ),
    ):
        periodic.settings_definitions()


# -- results --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(unstorable_results()))
def test_result__that_cannot_be_stored_is_dropped_and_the_body_runs_once(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    task = returns(kind)

    with caplog.at_level(logging.WARNING, logger="background_tasks"):
        assert run_tasks() == 1

    assert calls == [kind]
    record = record_of(task)
    assert record.status == CompletedTask.Status.SUCCEEDED
    assert record.attempts == 1
    assert record.result is None
    assert record.note.startswith("The result was not stored: ")
    assert "event=result_not_stored" in caplog.text
    assert not Task.objects.exists()


def test_result__that_the_database_refuses_is_dropped_and_the_success_recorded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    archive = lifecycle.archive

    def refusing_results(*args: Any, **fields: Any) -> Any:
        if fields.get("result") is not None:
            raise DataError("invalid input syntax for type json")
        return archive(*args, **fields)

    monkeypatch.setattr(lifecycle, "archive", refusing_results)
    task = echo("fine")

    assert run_tasks() == 1

    assert calls == ["fine"]
    record = record_of(task)
    assert (record.status, record.result) == (CompletedTask.Status.SUCCEEDED, None)
    assert "the database refused it (invalid input syntax for type json)" in record.note
    assert "event=result_not_stored" in caplog.text


# -- text the worker writes -----------------------------------------------------------------


def test_error__with_a_lone_surrogate_and_nul_is_escaped_recorded_and_logged_whole(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = raises("bad name: ")

    with caplog.at_level(logging.WARNING, logger="background_tasks"):
        assert run_tasks() == 1

    record = record_of(task)
    assert record.status == CompletedTask.Status.FAILED
    assert "RuntimeError: bad name: \\udcff\\x00" in record.last_error
    assert "event=text_escaped" in caplog.text
    assert "bad name: \\udcff\\x00" in caplog.text  # the original, as its repr


# -- creator --------------------------------------------------------------------------------


def test_creator__an_unsaved_instance_with_its_primary_key_set_is_refused() -> None:
    # What a UUID primary key with a default looks like before save(): pk set, nothing saved.
    unsaved = User(pk=987654, username="not-saved")

    with pytest.raises(TypeError, match="creator must be a saved model instance"):
        echo(1, creator=unsaved)

    assert not Task.objects.exists()


def test_creator__a_saved_instance_is_recorded() -> None:
    user = User.objects.create(username="ada")

    task = echo(1, creator=user)

    assert Task.objects.get(pk=task.pk).creator == user


# -- MariaDB/MySQL tables that cannot hold 4-byte characters --------------------------------

TABLES = [Task._meta.db_table, CompletedTask._meta.db_table]


@pytest.fixture
def utf8mb3_tables() -> Iterator[None]:
    """Convert the queue tables to utf8mb3, as on a database created as ``utf8`` long ago."""
    if connection.vendor != "mysql":
        pytest.skip("only MariaDB/MySQL tables have a character set of their own")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (%s, %s)",
            TABLES,
        )
        collations = dict(cursor.fetchall())
        for table in TABLES:
            cursor.execute(f"ALTER TABLE {table} CONVERT TO CHARACTER SET utf8mb3")
    forget_charsets()
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for table in TABLES:
                cursor.execute(
                    f"ALTER TABLE {table} CONVERT TO CHARACTER SET utf8mb4 "
                    f"COLLATE {collations[table]}"
                )
        forget_charsets()


@pytest.mark.django_db(transaction=True)
def test_utf8mb3_tables__an_error_with_an_emoji_is_recorded_with_the_emoji_escaped(
    utf8mb3_tables: None, caplog: pytest.LogCaptureFixture
) -> None:
    task = raises("no 😀 here: ")

    with caplog.at_level(logging.WARNING, logger="background_tasks"):
        assert run_tasks() == 1

    record = record_of(task)
    assert record.status == CompletedTask.Status.FAILED
    assert "RuntimeError: no \\U0001f600 here: \\udcff\\x00" in record.last_error
    assert "no 😀 here" in caplog.text
    assert not Task.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_utf8mb3_tables__a_quarantine_reason_with_an_emoji_is_stored_escaped(
    utf8mb3_tables: None,
) -> None:
    task = raises("unused")
    Task.objects.filter(pk=task.pk).update(locked_by="w:1:a", locked_at=timezone.now())

    assert isolation.quarantine(task.pk, "w:1:a", "cannot load 😀")

    row = Task.objects.get(pk=task.pk)
    assert (row.locked_by, row.last_error) == (isolation.QUARANTINED, "cannot load \\U0001f600")


@pytest.mark.django_db(transaction=True)
def test_utf8mb3_tables__a_burst_worker_records_the_failure_and_exits_0(
    utf8mb3_tables: None,
) -> None:
    task = raises("no 😀 here: ")

    assert Worker(burst=True, sleep=0.01).run() == 0

    assert record_of(task).status == CompletedTask.Status.FAILED
    assert not Task.objects.exists()  # nothing left held for a rescue to misreport later


@pytest.mark.django_db(transaction=True)
def test_utf8mb3_tables__a_result_with_an_emoji_is_stored_since_json_escapes_it(
    utf8mb3_tables: None,
) -> None:
    task = echo({"mood": "😀"})

    run_tasks()

    assert record_of(task).result == {"mood": "😀"}


@pytest.fixture
def utf8mb3_connection() -> Iterator[None]:
    """Connect with ``OPTIONS={"charset": "utf8"}`` (utf8mb3), as older settings do."""
    if connection.vendor != "mysql":
        pytest.skip("only MariaDB/MySQL connections have a character set of their own")
    options = connection.settings_dict["OPTIONS"]
    before = options.get("charset")
    options["charset"] = "utf8"
    connection.close()
    forget_charsets()
    try:
        yield
    finally:
        if before is None:
            options.pop("charset", None)
        else:
            options["charset"] = before
        connection.close()
        forget_charsets()


@pytest.mark.django_db(transaction=True)
def test_utf8mb3_connection__an_error_with_an_emoji_is_recorded_with_the_emoji_escaped(
    utf8mb3_connection: None,
) -> None:
    """utf8mb4 tables, but a connection that cannot send 4-byte characters: the database
    refuses them as it does for utf8mb3 tables, with an OperationalError the worker would take
    for an outage and wait out for ever."""
    task = raises("no 😀 here: ")
    (claimed,) = claim_tasks("w:1:a", [], 1)

    execute(claimed, "w:1:a")  # the outcome written once, as the worker's first try does

    record = record_of(task)
    assert record.status == CompletedTask.Status.FAILED
    assert "RuntimeError: no \\U0001f600 here: " in record.last_error
    assert not Task.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_result__too_large_for_one_mysql_packet_with_the_arguments_is_left_out() -> None:
    """The history row holds the arguments and the result: MySQL/MariaDB refuse a statement
    larger than ``max_allowed_packet`` (and drop the connection), with an OperationalError the
    worker would take for an outage and wait out for ever."""
    packet = max_allowed_packet()
    task = echo("x" * (packet * 6 // 10))  # fits alone, not twice
    (claimed,) = claim_tasks("w:1:a", [], 1)

    execute(claimed, "w:1:a")  # the outcome written once, as the worker's first try does

    record = record_of(task)
    assert (record.status, record.result) == (CompletedTask.Status.SUCCEEDED, None)
    assert "The result was not stored" in record.note
    assert "max_allowed_packet" in record.note
    assert not Task.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_utf8mb3_tables__the_system_check_warns(utf8mb3_tables: None) -> None:
    messages = run_checks(databases=["default"])

    warning = next(m for m in messages if m.id == "background_tasks.W010")
    assert "utf8mb3" in warning.msg
    assert "CONVERT TO CHARACTER SET utf8mb4" in (warning.hint or "")


def test_utf8mb4_tables__the_system_check_is_silent() -> None:
    messages = run_checks(databases=["default"])

    assert not [m for m in messages if m.id == "background_tasks.W010"]
