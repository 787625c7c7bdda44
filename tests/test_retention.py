"""History retention: settings, bounded batches, the worker's background passes, and workers
pruning at the same time without taking the same rows or waiting for each other."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import DatabaseError, OperationalError, connection, connections, transaction
from django.test import override_settings
from django.utils import timezone

from background_tasks import retention, signals
from background_tasks.checks import check_settings
from background_tasks.claims import claim_tasks
from background_tasks.execution import execute
from background_tasks.models import CompletedTask, Task
from background_tasks.outcomes import Outcome
from background_tasks.worker import Worker
from tests.helpers import start_worker, wait_for, worker_env
from tests.testapp import tasks

SUCCEEDED = CompletedTask.Status.SUCCEEDED
FAILED = CompletedTask.Status.FAILED
CANCELLED = CompletedTask.Status.CANCELLED


def history(status: str, age: timedelta, count: int = 1, now: datetime | None = None) -> list[int]:
    """Insert ``count`` history rows of ``status`` that finished ``age`` ago; return their ids."""
    finished = (now or timezone.now()) - age
    rows = CompletedTask.objects.bulk_create(
        CompletedTask(
            task_id=index + 1,
            task_name="tests.history",
            task_hash="0" * 40,
            status=status,
            # A second apart, so that "oldest first" is well defined.
            finished_at=finished - timedelta(seconds=index),
        )
        for index in range(count)
    )
    if rows and rows[0].pk is None:  # MySQL/MariaDB return no ids from a bulk insert
        return list(
            CompletedTask.objects.filter(status=status, finished_at__lte=finished)
            .order_by("id")
            .values_list("id", flat=True)
        )[-count:]
    return [row.pk for row in rows]


def remaining(status: str) -> int:
    return CompletedTask.objects.filter(status=status).count()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- settings -----------------------------------------------------------------------------------


def test_retention_periods__default_to_7_30_and_30_days() -> None:
    assert retention.retention_periods() == {
        "succeeded": timedelta(days=7),
        "failed": timedelta(days=30),
        "cancelled": timedelta(days=30),
    }


@override_settings(
    BACKGROUND_TASKS_RETAIN_FAILED_DAYS=None, BACKGROUND_TASKS_RETAIN_SUCCEEDED_DAYS=0.5
)
def test_retention_periods__none_keeps_a_status_for_ever_and_fractions_of_days_work() -> None:
    assert retention.retention_periods() == {
        "succeeded": timedelta(hours=12),
        "cancelled": timedelta(days=30),
    }


@pytest.mark.parametrize("value", [-1, "7", float("nan"), True])
def test_check__a_retention_that_is_not_none_nor_days_is_an_error(value: object) -> None:
    with override_settings(BACKGROUND_TASKS_RETAIN_SUCCEEDED_DAYS=value):
        errors = [e for e in check_settings() if "RETAIN_SUCCEEDED_DAYS" in e.msg]
    assert [e.id for e in errors] == ["background_tasks.E004"]


@override_settings(BACKGROUND_TASKS_RETAIN_SUCCEEDED_DAYS=None, BACKGROUND_TASKS_PRUNE_BATCH_SIZE=0)
def test_check__none_is_a_valid_retention_and_a_batch_size_below_one_is_not() -> None:
    messages = [e.msg for e in check_settings()]
    assert not any("RETAIN_SUCCEEDED_DAYS" in m for m in messages)
    assert any("PRUNE_BATCH_SIZE" in m for m in messages)


# -- one pass -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_prune_expired__deletes_each_status_older_than_its_own_retention_only() -> None:
    old_success = history(SUCCEEDED, timedelta(days=8))
    young_success = history(SUCCEEDED, timedelta(days=6))
    month_old_failure = history(FAILED, timedelta(days=31))
    week_old_failure = history(FAILED, timedelta(days=8))
    old_cancel = history(CANCELLED, timedelta(days=31))

    deleted = retention.prune_expired()

    assert deleted == {"succeeded": 1, "failed": 1, "cancelled": 1}
    left = set(CompletedTask.objects.values_list("id", flat=True))
    assert left == {*young_success, *week_old_failure}
    assert not left & {*old_success, *month_old_failure, *old_cancel}


@pytest.mark.django_db
@override_settings(BACKGROUND_TASKS_RETAIN_FAILED_DAYS=None)
def test_prune_expired__keeps_a_status_whose_retention_is_none() -> None:
    history(FAILED, timedelta(days=3650), count=3)

    assert retention.prune_expired() == {"succeeded": 0, "cancelled": 0}
    assert remaining(FAILED) == 3


@pytest.mark.django_db
@pytest.mark.parametrize("days", [float("inf"), 10**6])
def test_prune_expired__a_retention_reaching_before_the_year_one_keeps_everything(
    days: float,
) -> None:
    # Both pass the system check (numbers >= 0); a pass must not raise and stop the worker.
    history(FAILED, timedelta(days=3650), count=3)

    with override_settings(BACKGROUND_TASKS_RETAIN_FAILED_DAYS=days):
        assert not [e for e in check_settings() if "RETAIN_FAILED_DAYS" in e.msg]
        assert retention.prune_expired() == {"succeeded": 0, "cancelled": 0}

    assert remaining(FAILED) == 3


@pytest.mark.django_db
def test_prune_batch__deletes_at_most_the_batch_size_oldest_first() -> None:
    now = timezone.now()
    ids = history(SUCCEEDED, timedelta(days=10), count=7, now=now)
    oldest_first = sorted(ids, key=lambda pk: CompletedTask.objects.get(pk=pk).finished_at)

    assert retention.prune_batch(SUCCEEDED, now - timedelta(days=7), limit=3) == 3

    assert set(CompletedTask.objects.values_list("id", flat=True)) == set(oldest_first[3:])


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "mysql", reason="InnoDB's deadlock error, 1213")
def test_prune_batch__on_mysql_a_batch_that_deadlocks_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = timezone.now()
    history(SUCCEEDED, timedelta(days=10), count=3, now=now)
    expired = retention._expired
    deadlocks: list[int] = []

    def deadlocks_once(*args: Any) -> Any:
        if not deadlocks:
            deadlocks.append(1)
            raise OperationalError(1213, "Deadlock found when trying to get lock")
        return expired(*args)

    monkeypatch.setattr(retention, "_expired", deadlocks_once)

    assert retention.prune_batch(SUCCEEDED, now - timedelta(days=7), limit=5) == 3
    assert deadlocks == [1]
    assert not CompletedTask.objects.exists()


# -- not recording successes ----------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(BACKGROUND_TASKS_RECORD_SUCCEEDED=False)
def test_record_succeeded_off__a_success_leaves_no_row_but_failures_are_kept() -> None:
    received: list[CompletedTask] = []

    def on_success(sender: str, completed: CompletedTask, **kwargs: Any) -> None:
        received.append(completed)

    signals.task_succeeded.connect(on_success, dispatch_uid="test-record-succeeded-off")
    try:
        task = tasks.record("quiet")
        [claimed] = claim_tasks("tests:worker", [], 1)
        assert execute(claimed, "tests:worker") is Outcome.SUCCEEDED
    finally:
        signals.task_succeeded.disconnect(dispatch_uid="test-record-succeeded-off")

    assert not Task.objects.filter(pk=task.pk).exists()
    assert not CompletedTask.objects.exists()
    # Receivers still learn of it, with the record that would have been written (unsaved).
    assert [(r.pk, r.task_id, r.status) for r in received] == [(None, task.pk, "succeeded")]

    tasks.fails_permanently()
    [claimed] = claim_tasks("tests:worker", [], 1)
    execute(claimed, "tests:worker")
    assert CompletedTask.objects.get().status == FAILED


# -- the worker's passes ------------------------------------------------------------------------


@override_settings(BACKGROUND_TASKS_PRUNE_INTERVAL=60.0, BACKGROUND_TASKS_PRUNE_BATCH_SIZE=10)
def test_pruner__first_pass_waits_an_interval_then_passes_recur_with_jitter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    passes: list[float] = []
    clock = FakeClock()
    monkeypatch.setattr(
        retention, "prune_expired", lambda batch_size: passes.append(clock.now) or {}
    )
    pruner = retention.Pruner("w", clock=clock, rng=lambda: 0.25)  # interval * 0.75 = 45 s

    pruner.prune_if_due()
    clock.now += 44.9
    pruner.prune_if_due()
    assert passes == []

    clock.now += 0.1
    pruner.prune_if_due()
    pruner.prune_if_due()
    assert passes == [1045.0]

    clock.now += 45
    pruner.prune_if_due()
    assert passes == [1045.0, 1090.0]


@override_settings(BACKGROUND_TASKS_PRUNE_INTERVAL=60.0, BACKGROUND_TASKS_PRUNE_BATCH_SIZE=10)
def test_pruner__comes_back_soon_after_a_full_batch_to_drain_a_backlog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    results = iter([{"succeeded": 10, "failed": 2}, {"succeeded": 4}, {}])
    passes: list[float] = []
    clock = FakeClock()

    def fake_pass(batch_size: int) -> dict[str, int]:
        passes.append(clock.now)
        return next(results)

    monkeypatch.setattr(retention, "prune_expired", fake_pass)
    pruner = retention.Pruner("w", clock=clock, rng=lambda: 0.5)  # interval 60 s

    for _ in range(300):  # 150 s in half-second steps
        pruner.prune_if_due()
        clock.now += 0.5

    assert passes == [1060.0, 1060.0 + retention.CATCH_UP_DELAY, 1121.0]


def test_pruner__a_database_error_is_logged_and_the_next_pass_still_comes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def broken(batch_size: int) -> dict[str, int]:
        calls.append(batch_size)
        raise DatabaseError("deadlock detected")

    monkeypatch.setattr(retention, "prune_expired", broken)
    clock = FakeClock()
    pruner = retention.Pruner("w", clock=clock, rng=lambda: 0.5)
    clock.now += 60
    pruner.prune_if_due()
    clock.now += 60
    pruner.prune_if_due()

    assert len(calls) == 2
    assert "event=prune_error worker=w" in caplog.text


@pytest.mark.django_db(transaction=True)
@override_settings(BACKGROUND_TASKS_PRUNE_INTERVAL=1.0, BACKGROUND_TASKS_PRUNE_BATCH_SIZE=2)
def test_worker__prunes_expired_history_in_its_loop_in_bounded_batches() -> None:
    history(SUCCEEDED, timedelta(days=8), count=3)
    kept = history(SUCCEEDED, timedelta(days=1))
    for key in "abcdef":
        tasks.record(key)
    ticks = iter(range(0, 10_000))

    # Every reading of this clock is a second later: each loop turn finds a pass due.
    Worker(burst=True, sleep=0.01, clock=lambda: float(next(ticks))).run()

    left = CompletedTask.objects.filter(task_name="tests.history")
    assert set(left.values_list("id", flat=True)) == set(kept)
    assert CompletedTask.objects.succeeded().exclude(task_name="tests.history").count() == 6


# -- several workers ----------------------------------------------------------------------------


@pytest.fixture
def other_connection_holding(transactional_db: None) -> Iterator[Any]:
    """Lock rows from another thread (its own connection), as a second pruner mid-batch would."""
    release = threading.Event()
    threads: list[threading.Thread] = []

    def hold(ids: list[int]) -> None:
        locked = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with transaction.atomic():
                    list(CompletedTask.objects.filter(id__in=ids).select_for_update())
                    locked.set()
                    release.wait(30)
            except BaseException as exc:
                errors.append(exc)
                locked.set()
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)
        wait_for(locked.is_set, message="the other connection to lock its rows")
        assert errors == []

    yield hold
    release.set()
    for thread in threads:
        thread.join(30)


@pytest.mark.concurrency
def test_prune_batch__skips_rows_another_pruner_holds_and_does_not_wait_for_them(
    other_connection_holding: Any,
) -> None:
    if not connection.features.has_select_for_update_skip_locked:
        pytest.skip("SQLite has no row locks: one writer at a time, a batch is one statement")
    now = timezone.now()
    ids = history(SUCCEEDED, timedelta(days=8), count=6, now=now)
    oldest_first = sorted(ids, key=lambda pk: CompletedTask.objects.get(pk=pk).finished_at)
    other_connection_holding(oldest_first[:3])

    started = time.monotonic()
    deleted = retention.prune_batch(SUCCEEDED, now - timedelta(days=7), limit=3)
    took = time.monotonic() - started

    assert deleted == 3
    assert set(CompletedTask.objects.values_list("id", flat=True)) == set(oldest_first[:3])
    assert took < 5, f"the prune waited {took:.1f}s for the other transaction's locks"


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
def test_two_workers__drain_the_backlog_together_in_bounded_batches_without_errors() -> None:
    expired = 600
    history(SUCCEEDED, timedelta(days=8), count=expired)
    history(FAILED, timedelta(days=31), count=expired // 2)
    kept = set(history(SUCCEEDED, timedelta(days=1), count=5))
    env = worker_env(
        BACKGROUND_TASKS_PRUNE_INTERVAL="0.05",
        BACKGROUND_TASKS_PRUNE_BATCH_SIZE="20",
    )
    procs = [start_worker(["--log-std", "--sleep", "0.05"], env=env) for _ in range(2)]
    try:
        wait_for(
            lambda: not CompletedTask.objects.exclude(id__in=kept).exists(),
            timeout=90,
            message="the expired history to be pruned",
        )
    finally:
        outputs = []
        for proc in procs:
            proc.terminate()
            out, err = proc.communicate(timeout=60)
            outputs.append((proc.returncode, out + err))

    assert set(CompletedTask.objects.values_list("id", flat=True)) == kept
    for code, output in outputs:
        assert code == 0, output
        assert "prune_error" not in output and "database_error" not in output, output
    pruned = [
        int(count)
        for _, output in outputs
        for count in re.findall(r"event=history_pruned .*deleted=(\d+)", output)
    ]
    # The workers' logged batches account for every expired row, none larger than the batch size.
    assert sum(pruned) == expired + expired // 2
    assert max(pruned) <= 20
