"""The worker's short transactions behave as Django's atomic(), whatever begins them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import IntegrityError, connection, connections, transaction

from background_tasks import short_transactions
from background_tasks.models import Task
from background_tasks.short_transactions import short_transaction
from tests.testapp.tasks import no_arguments

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


def _seen_elsewhere() -> int:
    """Count the queue's rows as another connection sees them: only committed ones."""
    other = connections.create_connection(connection.alias)
    try:
        with other.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {Task._meta.db_table}")
            return int(cursor.fetchone()[0])
    finally:
        other.close()


def test_short_transaction__commits_its_writes_and_those_of_nested_atomic_blocks_together() -> None:
    with short_transaction(connection.alias):
        no_arguments()
        with transaction.atomic():
            no_arguments()
        # The nested block released its savepoint, it did not commit: the outer one can still
        # roll both back.
        assert connection.in_atomic_block
        transaction.set_rollback(True)
    assert not Task.objects.exists()

    with short_transaction(connection.alias):
        no_arguments()
        with transaction.atomic():
            no_arguments()
    assert Task.objects.count() == 2


def test_short_transaction__rolls_back_on_an_exception_and_leaves_autocommit_on() -> None:
    with pytest.raises(Boom), short_transaction(connection.alias):
        no_arguments()
        raise Boom
    assert not Task.objects.exists()
    assert connection.get_autocommit()
    assert not connection.in_atomic_block
    # The next statement commits on its own, as Django's autocommit mode promises.
    no_arguments()
    with transaction.atomic():
        transaction.set_rollback(True)
    assert Task.objects.count() == 1


def test_short_transaction__runs_commit_hooks_after_the_commit_only() -> None:
    ran: list[str] = []
    with short_transaction(connection.alias):
        transaction.on_commit(lambda: ran.append("committed"))
        assert ran == []
    assert ran == ["committed"]
    with pytest.raises(Boom), short_transaction(connection.alias):
        transaction.on_commit(lambda: ran.append("rolled back"))
        raise Boom
    assert ran == ["committed"]


@pytest.mark.skipif(connection.vendor != "mysql", reason="MySQL/MariaDB only")
def test_short_transaction__on_mysql_leaves_the_session_in_autocommit_mode() -> None:
    for fail in (False, True):
        with contextlib.suppress(Boom), short_transaction(connection.alias):
            no_arguments()
            if fail:
                raise Boom
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@autocommit")
            assert cursor.fetchone()[0] == 1
        # No transaction is left open: a write outside atomic() is seen by others at once.
        no_arguments()
        assert _seen_elsewhere() == Task.objects.count() == (3 if fail else 2)
        # Only the worker's own transactions begin this way: a later atomic() is Django's own.
        assert not hasattr(connection, "_start_transaction_under_autocommit")


class _Statements:
    """An execute wrapper that notes every statement sent through Django's cursors."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.sent.append(sql)
        return execute(sql, params, many, context)


@contextlib.contextmanager
def _noted() -> Iterator[_Statements]:
    noted = _Statements()
    connection.ensure_connection()
    with connection.execute_wrapper(noted):
        yield noted


mysql_only = pytest.mark.skipif(connection.vendor != "mysql", reason="MySQL/MariaDB only")


@mysql_only
def test_short_transaction__on_mysql_begins_with_its_first_statement_in_one_round_trip() -> None:
    wrappers = list(connection.execute_wrappers)
    with _noted() as noted, short_transaction(connection.alias):
        task = no_arguments()
        # Begun: the row is not seen elsewhere before the commit.
        assert _seen_elsewhere() == 0
        assert Task.objects.get().pk == task.pk  # the insert's own result was read
    assert _seen_elsewhere() == 1
    assert not any(sql.strip().upper() == "START TRANSACTION" for sql in noted.sent)
    assert connection.execute_wrappers == wrappers


@mysql_only
def test_short_transaction__on_mysql_a_failing_first_statement_raises_djangos_error() -> None:
    table = connection.ops.quote_name(Task._meta.db_table)
    with (
        pytest.raises(IntegrityError),
        short_transaction(connection.alias),
        connection.cursor() as cursor,
    ):
        cursor.execute(f"INSERT INTO {table} (task_name) VALUES (NULL)")
    assert connection.get_autocommit()
    assert not connection.in_atomic_block
    no_arguments()  # the connection is usable, and in autocommit mode
    assert _seen_elsewhere() == 1


@mysql_only
def test_short_transaction__on_mysql_a_value_a_check_refuses_first_is_an_integrity_error() -> None:
    """The same error class as outside the block: the worker takes an IntegrityError for a
    value the database refuses, an OperationalError for an outage."""
    if not connection.mysql_is_mariadb:
        pytest.skip("MariaDB's JSON columns are text with a CHECK constraint")
    no_arguments()
    table = connection.ops.quote_name(Task._meta.db_table)
    with connection.cursor() as cursor, pytest.raises(IntegrityError):
        cursor.execute(f"UPDATE {table} SET params = 'not JSON'")  # the control

    with (
        pytest.raises(IntegrityError),
        short_transaction(connection.alias),
        connection.cursor() as cursor,
    ):
        cursor.execute(f"UPDATE {table} SET params = 'not JSON'")
    assert connection.execute_wrappers == []


@mysql_only
def test_short_transaction__on_mysql_a_statement_the_driver_refuses_first_still_begins() -> None:
    """Refused before it was sent: what the block sends next is still inside its transaction."""
    with short_transaction(connection.alias):
        with connection.cursor() as cursor, pytest.raises(Exception, match="format string"):
            cursor.execute("SELECT %s, %s", [1])
        no_arguments()
        transaction.set_rollback(True)
    assert not Task.objects.exists()
    assert _seen_elsewhere() == 0


@mysql_only
def test_short_transaction__on_mysql_a_block_with_no_statement_leaves_nothing_behind() -> None:
    wrappers = list(connection.execute_wrappers)
    with short_transaction(connection.alias):
        pass
    assert connection.execute_wrappers == wrappers
    no_arguments()  # not inside a transaction begun late
    assert _seen_elsewhere() == 1


@mysql_only
def test_short_transaction__on_mysql_without_multi_statements_begins_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(short_transactions, "takes_batches", lambda connection: False)
    with _noted() as noted, short_transaction(connection.alias):
        no_arguments()
        assert _seen_elsewhere() == 0
    assert noted.sent[0] == "START TRANSACTION"
    assert _seen_elsewhere() == 1
