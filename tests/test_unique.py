"""Unique tasks (``unique=True``) and replacing duplicates (``remove_existing_tasks=True``).

The concurrent case (several processes enqueuing the same unique task at once) is in
test_scheduling_processes.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
import time_machine
from django.db import IntegrityError, OperationalError, connection, connections, transaction

from background_tasks import enqueue as enqueue_module
from background_tasks.claims import claim_tasks
from background_tasks.execution import execute
from background_tasks.models import CompletedTask, Task
from background_tasks.serialization import params_hash
from background_tasks.testing import run_tasks
from tests.fixtures import CLOCK_START
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = pytest.mark.django_db

T0 = CLOCK_START  # where the shared ``clock`` fixture freezes time
HOUR = timedelta(hours=1)


# -- unique= --------------------------------------------------------------------------------------


def test_unique__a_second_call_returns_the_pending_task_instead_of_adding_one() -> None:
    first = tasks.record("same", unique=True)
    second = tasks.record("same", unique=True)

    assert second.pk == first.pk
    assert Task.objects.count() == 1


def test_unique__the_decorator_option_makes_every_call_unique() -> None:
    first = tasks.unique_record("same")
    second = tasks.unique_record("same")

    assert second.pk == first.pk
    assert Task.objects.get().unique_key == params_hash("tests.unique_record", first.params)


def test_unique__a_call_can_opt_out_of_the_decorator_option() -> None:
    tasks.unique_record("same")
    tasks.unique_record("same", unique=False)

    assert Task.objects.count() == 2


def test_unique__the_key_is_the_task_name_and_its_arguments() -> None:
    tasks.record("a", unique=True)
    tasks.record("b", unique=True)
    tasks.unique_record("a")

    assert Task.objects.count() == 3


def test_unique__the_returned_task_keeps_its_own_options() -> None:
    first = tasks.record("same", unique=True, schedule=HOUR, priority=3)

    second = tasks.record("same", unique=True, schedule=0, priority=9)

    assert second.pk == first.pk
    assert (second.run_at, second.priority) == (first.run_at, 3)


def test_unique__only_pending_tasks_count_so_after_it_finishes_a_new_one_is_enqueued() -> None:
    first = tasks.unique_record("once")
    assert run_tasks() == 1

    second = tasks.unique_record("once")

    assert second.pk != first.pk
    assert Task.objects.get().pk == second.pk
    assert CompletedTask.objects.get().task_id == first.pk


def test_unique__a_failed_task_frees_its_key() -> None:
    tasks.always_fails(unique=True)
    run_tasks()
    assert CompletedTask.objects.failed().count() == 1

    tasks.always_fails(unique=True)

    assert Task.objects.count() == 1


def test_unique__the_database_rejects_a_second_row_with_the_same_key() -> None:
    tasks.unique_record("k")
    twin = Task(task_name="tests.unique_record", params={"args": ["k"], "kwargs": {}})
    twin.unique_key = Task.objects.get().unique_key

    with pytest.raises(IntegrityError), transaction.atomic():
        twin.save(force_insert=True)

    assert Task.objects.count() == 1


def test_unique__the_call_joins_the_callers_transaction() -> None:
    # A unique enqueue that loses to an existing row must not break the caller's transaction.
    existing = tasks.unique_record("k")
    with transaction.atomic():
        again = tasks.unique_record("k")
        other = tasks.unique_record("other")
        assert TaskRun.objects.count() == 0  # the transaction is still usable

    assert again.pk == existing.pk
    assert set(Task.objects.values_list("pk", flat=True)) == {existing.pk, other.pk}


@pytest.fixture
def repeatable_read() -> Iterator[None]:
    """Connect at REPEATABLE READ (MySQL/MariaDB's own default, not Django's)."""
    if connection.vendor != "mysql":
        pytest.skip("the snapshot of a MySQL/MariaDB REPEATABLE READ transaction")
    options = connection.settings_dict["OPTIONS"]
    options["isolation_level"] = "repeatable read"
    connection.close()
    try:
        yield
    finally:
        del options["isolation_level"]
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_unique__at_repeatable_read_a_call_returns_the_task_committed_after_its_snapshot(
    repeatable_read: None,
) -> None:
    def enqueue_elsewhere() -> None:
        try:
            tasks.unique_record("k")
        finally:
            connections.close_all()

    with transaction.atomic():
        assert not Task.objects.exists()  # the transaction's snapshot is taken here
        elsewhere = threading.Thread(target=enqueue_elsewhere)
        elsewhere.start()
        elsewhere.join()
        found = tasks.unique_record("k")

    assert found.pk == Task.objects.get().pk


def test_unique__a_rolled_back_call_leaves_the_key_free() -> None:
    with transaction.atomic():
        tasks.unique_record("k")
        transaction.set_rollback(True)

    assert not Task.objects.exists()
    assert tasks.unique_record("k").pk == Task.objects.get().pk


def test_unique__a_repeating_tasks_follower_keeps_the_key(clock: time_machine.Traveller) -> None:
    first = tasks.record("tick", unique=True, repeat=Task.HOURLY)
    assert run_tasks() == 1

    follower = Task.objects.get()
    assert follower.pk != first.pk
    assert follower.unique_key == first.unique_key
    assert follower.scheduled_at == T0 + HOUR
    assert tasks.record("tick", unique=True, repeat=Task.HOURLY).pk == follower.pk
    assert Task.objects.count() == 1


def test_unique__a_running_task_keeps_its_key_until_it_is_archived() -> None:
    running = tasks.unique_record("busy")
    [claimed] = claim_tasks("w1", [], 1)

    assert tasks.unique_record("busy").pk == running.pk

    execute(claimed, "w1")
    assert tasks.unique_record("busy").pk != running.pk


# -- remove_existing_tasks= -----------------------------------------------------------------------


def test_remove_existing__a_call_replaces_the_pending_duplicate() -> None:
    old = tasks.record("dup", schedule=HOUR)

    new = tasks.record("dup", remove_existing_tasks=True)

    assert Task.objects.get().pk == new.pk != old.pk


def test_remove_existing__the_decorator_option_replaces_only_same_argument_duplicates() -> None:
    first_a = tasks.replaced_record("a")
    only_b = tasks.replaced_record("b")
    newest_a = tasks.replaced_record("a")

    rows = sorted((t.params["args"][0], t.pk) for t in Task.objects.all())
    assert rows == [("a", newest_a.pk), ("b", only_b.pk)]
    assert newest_a.pk != first_a.pk


def test_remove_existing__a_task_a_worker_holds_is_left_alone() -> None:
    running = tasks.record("dup")
    claim_tasks("w1", [], 1)

    new = tasks.record("dup", remove_existing_tasks=True)

    assert set(Task.objects.values_list("pk", flat=True)) == {running.pk, new.pk}


def test_remove_existing__with_unique_replaces_the_pending_task_with_the_new_call() -> None:
    old = tasks.unique_record("k", schedule=HOUR)

    new = tasks.unique_record("k", schedule=0, remove_existing_tasks=True)

    assert new.pk != old.pk
    assert Task.objects.get().pk == new.pk
    assert run_tasks() == 1


def test_remove_existing__with_unique_returns_the_running_task_it_could_not_replace() -> None:
    running = tasks.unique_record("k")
    claim_tasks("w1", [], 1)

    again = tasks.unique_record("k", remove_existing_tasks=True)

    assert again.pk == running.pk
    assert Task.objects.count() == 1


def _deadlocking_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the next replace hit an InnoDB deadlock once; return the list of calls made."""
    real = enqueue_module._delete_pending_duplicates
    calls: list[int] = []

    def delete(row: Task, using: str) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError(1213, "Deadlock found when trying to get lock")
        real(row, using)

    monkeypatch.setattr(enqueue_module, "_delete_pending_duplicates", delete)
    return calls


@pytest.mark.skipif(connection.vendor != "mysql", reason="only InnoDB deadlocks are retried")
@pytest.mark.django_db(transaction=True)
def test_remove_existing__a_deadlock_with_a_worker_is_retried_on_mysql(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = tasks.unique_record("k", schedule=HOUR)
    calls = _deadlocking_once(monkeypatch)

    new = tasks.unique_record("k", remove_existing_tasks=True)

    assert len(calls) == 2
    assert Task.objects.get().pk == new.pk != old.pk


def test_remove_existing__a_deadlock_inside_the_callers_transaction_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The database rolled the caller's whole transaction back: retrying alone would hide that.
    calls = _deadlocking_once(monkeypatch)

    with pytest.raises(OperationalError), transaction.atomic():
        tasks.unique_record("k", remove_existing_tasks=True)

    assert len(calls) == 1
