"""The worker's short transactions behave as Django's atomic(), whatever begins them."""

from __future__ import annotations

import contextlib

import pytest
from django.db import connection, connections, transaction

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
