"""A busy runner thread records an outcome and claims its next task in one transaction.

In process, on the database of the run, with a real ``Worker`` in burst mode. Each test names
what the shared transaction must not change: fencing, stopping, ``--max-tasks``, a value the
database refuses, and a database failure at any point of the transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.db import DataError, OperationalError, connection
from django.db.models import CASCADE, SET_NULL, ForeignKey, Model
from django.utils import timezone

from background_tasks import lifecycle, liveness, recording, signals
from background_tasks import runner as runner_module
from background_tasks import worker as worker_module
from background_tasks.conf import app_settings
from background_tasks.exit_codes import (
    EXIT_DATABASE_UNAVAILABLE,
    EXIT_MEMORY_LIMIT,
    EXIT_RUNNER_ENDED,
)
from background_tasks.isolation import QUARANTINED
from background_tasks.models import CompletedTask, Task
from background_tasks.worker import Worker
from tests.fixtures import refuse_archiving
from tests.test_isolation import make, make_unloadable
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = pytest.mark.django_db(transaction=True)


def runs(key: str) -> int:
    return TaskRun.objects.filter(key=key).count()


def test_busy_runner__claims_and_runs_each_next_task_itself(
    runner_claims: list[list[int]],
) -> None:
    first, second, third = (tasks.record(key) for key in ("one", "two", "three"))

    assert Worker(burst=True, sleep=60, batch_size=1).run() == 0

    # The main thread claimed the first; each outcome's transaction claimed the next.
    assert runner_claims == [[second.pk], [third.pk], []]
    assert [runs(key) for key in ("one", "two", "three")] == [1, 1, 1]
    assert CompletedTask.objects.succeeded().count() == 3
    assert not Task.objects.exists()
    assert first.pk not in {pk for claim in runner_claims for pk in claim}


def test_claim_for_two_threads_with_an_unloadable_row__each_claimed_task_runs_once() -> None:
    make(priority=10, params={"args": ["best"], "kwargs": {}})
    bad = make_unloadable(priority=0)

    # The main thread claims for both idle threads: the best priority's row, then the next's.
    assert Worker(burst=True, sleep=60, concurrency=2).run() == 0

    assert runs("best") == 1
    assert Task.objects.filter(pk=bad).values_list("locked_by", flat=True).get() == QUARANTINED


def test_fencing__an_outcome_is_dropped_when_the_row_was_taken_and_the_next_task_still_runs(
    runner_claims: list[list[int]],
) -> None:
    lost = tasks.loses_its_row("succeed")
    after = tasks.record("after")

    assert Worker(burst=True, sleep=60).run() == 0

    assert runner_claims[0] == [after.pk]  # claimed in the transaction whose outcome was dropped
    assert not CompletedTask.objects.filter(task_id=lost.pk).exists()
    assert Task.objects.get(pk=lost.pk).locked_by == "tests:rescuer"
    assert runs("after") == 1
    assert CompletedTask.objects.get(task_id=after.pk).attempts == 1


@contextmanager
def stop_when_started(worker: Worker, key: str) -> Iterator[None]:
    def stop(sender: str, task: Task, **kwargs: Any) -> None:
        if task.params.get("args") == [key]:
            worker.request_stop()

    signals.task_started.connect(stop, dispatch_uid="test-stop-when-started")
    try:
        yield
    finally:
        signals.task_started.disconnect(dispatch_uid="test-stop-when-started")


def test_stop_requested_while_a_task_runs__the_runner_claims_nothing_more(
    runner_claims: list[list[int]],
) -> None:
    tasks.record("stopper")
    left = [tasks.record(f"left-{i}") for i in range(3)]
    worker = Worker(sleep=60)

    with stop_when_started(worker, "stopper"):
        assert worker.run() == 0

    assert runner_claims == []
    assert runs("stopper") == 1
    waiting = Task.objects.filter(pk__in=[task.pk for task in left])
    assert [(t.locked_by, t.attempts) for t in waiting] == [(None, 0)] * 3


@pytest.mark.parametrize("concurrency", [1, 2])
def test_max_tasks__is_respected_exactly_when_runners_claim_too(concurrency: int) -> None:
    for i in range(6):
        tasks.record(f"budget-{i}")

    assert Worker(sleep=60, max_tasks=4, concurrency=concurrency).run() == 0

    assert CompletedTask.objects.succeeded().count() == 4
    left = Task.objects.all()
    assert [(t.locked_by, t.attempts) for t in left] == [(None, 0)] * 2


def test_refused_outcome__is_failed_or_quarantined_alone_and_the_next_task_runs_once(
    monkeypatch: pytest.MonkeyPatch, runner_claims: list[list[int]]
) -> None:
    bad = tasks.record("bad")
    good = tasks.record("good")
    refuse_archiving(monkeypatch, bad.pk)

    assert Worker(burst=True, sleep=60).run() == 0

    # The transaction shared with the claim rolled back: nothing claimed by it was kept.
    quarantined = Task.objects.get(pk=bad.pk)
    assert quarantined.locked_by == QUARANTINED
    assert "could not be recorded" in quarantined.last_error
    assert runs("bad") == 1
    assert runs("good") == 1
    assert CompletedTask.objects.get(task_id=good.pk).attempts == 1
    assert not Task.objects.filter(locked_by__contains=":").exists()  # no worker holds a row


def lose_first_commit_reply(
    monkeypatch: pytest.MonkeyPatch, lost: threading.Event, then: Callable[[], None] = lambda: None
) -> None:
    """Let the first shared transaction commit, then report its reply lost (as a dropped
    connection would): ``lost`` is set and ``then`` called just before. Later ones go through."""
    real = lifecycle.shared_transaction

    @contextmanager
    def committed_then_lost(using: str, **options: Any) -> Iterator[list[Callable[[], None]]]:
        with real(using, **options) as pending:
            yield pending
        if not lost.is_set():
            lost.set()
            then()
            raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(runner_module.lifecycle, "shared_transaction", committed_then_lost)


@pytest.mark.parametrize("when", ["before_commit", "after_commit"])
def test_outage_in_the_shared_transaction__no_task_runs_twice_and_none_is_lost(
    monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """A lost reply at COMMIT: the commit may have happened. Neither case runs a task twice."""
    first = tasks.record("first")
    second = tasks.record("second")
    real = lifecycle.shared_transaction
    failures: list[str] = []

    @contextmanager
    def fails_once(using: str, **options: Any) -> Iterator[list[Callable[[], None]]]:
        if failures:
            with real(using, **options) as pending:
                yield pending
            return
        failures.append(when)
        if when == "before_commit":
            with real(using, **options) as pending:
                yield pending
                raise OperationalError("server closed the connection unexpectedly")
        with real(using, **options) as pending:
            yield pending
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(runner_module.lifecycle, "shared_transaction", fails_once)

    assert Worker(burst=True, sleep=60).run() == 0

    assert failures == [when]
    assert runs("first") == 1
    assert runs("second") == 1
    assert CompletedTask.objects.get(task_id=first.pk).attempts == 1
    # After a lost reply the claim was found and released uncounted before it ran.
    assert CompletedTask.objects.get(task_id=second.pk).attempts == 1
    assert not Task.objects.exists()


def test_stop_right_after_a_lost_reply_at_commit__the_claim_is_released_uncounted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The main thread has not looked for the lost claim yet when the stop ends its loop: the
    shutdown does, or the row would stay held until a rescue counted an attempt never run."""
    tasks.record("first")
    second = tasks.record("second")
    worker = Worker(sleep=60)
    lost = threading.Event()
    lose_first_commit_reply(monkeypatch, lost, then=worker.request_stop)

    assert worker.run() == 0

    assert lost.is_set()
    assert runs("first") == 1
    assert runs("second") == 0
    assert CompletedTask.objects.filter(task_id=second.pk).count() == 0
    left = Task.objects.get(pk=second.pk)
    assert (left.locked_by, left.attempts) == (None, 0)


def test_burst_right_after_a_lost_reply_at_commit__the_claim_is_released_and_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The main thread's claim for its idle thread finds nothing (the lost claim holds the
    row) and its runner is done: before it takes the worker for idle, it looks for the claim."""
    tasks.record("first")
    worker = Worker(burst=True, sleep=60, concurrency=2)
    committed, finished = threading.Event(), threading.Event()
    claim = worker_module.claim_tasks
    main_claims: list[int] = []

    def enqueue_and_wake(sender: str, task: Task, **kwargs: Any) -> None:
        if task.params["args"] == ["first"]:
            tasks.record("second")
            worker._wake.ring()  # as a poll or a NOTIFY would

    def claim_as_the_runner_ends(*args: Any, **kwargs: Any) -> list[Task]:
        main_claims.append(1)
        if len(main_claims) == 2:  # the claim for the idle thread, while "first" ends
            assert committed.wait(10)
            claimed = claim(*args, **kwargs)
            assert finished.wait(10)
            return claimed
        return claim(*args, **kwargs)

    finish = worker._finished

    def finished_then_noted(task: Task) -> None:
        finish(task)
        if task.params["args"] == ["first"]:
            finished.set()

    lose_first_commit_reply(monkeypatch, committed)
    monkeypatch.setattr(worker_module, "claim_tasks", claim_as_the_runner_ends)
    monkeypatch.setattr(worker, "_finished", finished_then_noted)
    signals.task_started.connect(enqueue_and_wake, dispatch_uid="test-enqueue-and-wake")
    try:
        assert worker.run() == 0
    finally:
        signals.task_started.disconnect(dispatch_uid="test-enqueue-and-wake")

    assert committed.is_set()
    assert [runs("first"), runs("second")] == [1, 1]
    assert [r.attempts for r in CompletedTask.objects.all()] == [1, 1]
    assert not Task.objects.exists()


def test_lost_reply_after_a_retry_reclaimed_its_row__the_main_thread_releases_the_new_claim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The main thread looks for lost claims while the runner still writes the retry again: the
    row's id is still among the running tasks, but it is held by the lost claim, not by the
    attempt that ran."""
    task = tasks.fails_until("retried", 1)
    worker = Worker(burst=True, sleep=60)
    lost, looked = threading.Event(), threading.Event()

    claimed_by_runner = worker._claimed_by_runner
    release_lost_claims = worker._release_lost_claims

    def claimed_then_wait(claimed: list[Task], reserved: int, *queue: Any) -> None:
        claimed_by_runner(claimed, reserved, *queue)
        if lost.is_set() and not looked.is_set():
            worker._wake.ring()  # the main thread looks before this runner goes on
            assert looked.wait(10)

    def release_then_note() -> int:
        released = release_lost_claims()
        looked.set()
        return released

    lose_first_commit_reply(monkeypatch, lost)
    monkeypatch.setattr(worker, "_claimed_by_runner", claimed_then_wait)
    monkeypatch.setattr(worker, "_release_lost_claims", release_then_note)

    assert worker.run() == 0

    assert lost.is_set() and looked.is_set()
    assert runs("retried") == 2
    assert CompletedTask.objects.get(task_id=task.pk).attempts == 2
    assert not Task.objects.exists()


def test_claimed_as_the_worker_begins_to_stop__the_next_task_is_handed_back_unstarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tasks.record("first")
    second = tasks.record("second")
    worker = Worker(sleep=60)
    claim = runner_module.claim_tasks

    def claim_then_stop(*args: Any, **kwargs: Any) -> list[Task]:
        claimed = claim(*args, **kwargs)
        worker.request_stop()  # arrives after the claim, before the task starts
        return claimed

    monkeypatch.setattr(runner_module, "claim_tasks", claim_then_stop)

    assert worker.run() == 0

    assert runs("first") == 1
    assert runs("second") == 0
    handed_back = Task.objects.get(pk=second.pk)
    assert (handed_back.locked_by, handed_back.attempts) == (None, 0)


def test_hand_back_of_a_task_claimed_as_the_worker_stops_failing__the_shutdown_releases_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tasks.record("first")
    second = tasks.record("second")
    worker = Worker(sleep=60)
    claim = runner_module.claim_tasks
    release = lifecycle.release
    refused: list[int] = []

    def claim_then_stop(*args: Any, **kwargs: Any) -> list[Task]:
        claimed = claim(*args, **kwargs)
        worker.request_stop()
        return claimed

    def refused_once(tasks_: list[Task], worker_id: str) -> int:
        if not refused:
            refused.append(1)
            raise DataError("refused (as the database would say)")
        return release(tasks_, worker_id)

    monkeypatch.setattr(runner_module, "claim_tasks", claim_then_stop)
    monkeypatch.setattr(lifecycle, "release", refused_once)

    assert worker.run() == 0

    assert refused == [1]
    assert runs("second") == 0
    handed_back = Task.objects.get(pk=second.pk)
    assert (handed_back.locked_by, handed_back.attempts) == (None, 0)


def test_over_max_memory__the_runner_claims_nothing_more(
    monkeypatch: pytest.MonkeyPatch, runner_claims: list[list[int]]
) -> None:
    tasks.record("first")
    left = [tasks.record(f"left-{i}").pk for i in range(2)]
    resident = [10.0]
    monkeypatch.setattr(worker_module, "resident_mb", lambda: resident[0])

    def grow(sender: str, task: Task, **kwargs: Any) -> None:
        resident[0] = 1000.0

    signals.task_started.connect(grow, dispatch_uid="test-grow")
    try:
        assert Worker(sleep=60, max_memory=100).run() == EXIT_MEMORY_LIMIT
    finally:
        signals.task_started.disconnect(dispatch_uid="test-grow")

    assert runner_claims == []
    assert runs("first") == 1
    waiting = Task.objects.filter(pk__in=left)
    assert [(t.locked_by, t.attempts) for t in waiting] == [(None, 0)] * 2


# -- what the shared transaction must not change ------------------------------------------------


@pytest.fixture
def task_references(transactional_db: None) -> Iterator[tuple[type[Model], type[Model]]]:
    """Two project models with a foreign key to Task: one SET_NULL, one CASCADE.

    Made for the test only and removed after it: with them, every delete of a task goes through
    Django's deletion collector, and the other tests must keep the plain statements.
    """

    class TaskReport(Model):
        task = ForeignKey(Task, null=True, on_delete=SET_NULL, related_name="+")

        class Meta:
            app_label = "testapp"

        def __str__(self) -> str:
            return f"report of {self.task_id}"

    class TaskAttachment(Model):
        task = ForeignKey(Task, on_delete=CASCADE, related_name="+")

        class Meta:
            app_label = "testapp"

        def __str__(self) -> str:
            return f"attachment of {self.task_id}"

    models = (TaskReport, TaskAttachment)
    with connection.schema_editor() as editor:
        for model in models:
            editor.create_model(model)
    try:
        yield models
    finally:
        for model in models:
            model.objects.all().delete()
        with connection.schema_editor() as editor:
            for model in reversed(models):
                editor.delete_model(model)
        for model in models:
            del apps.all_models["testapp"][model._meta.model_name]
        apps.clear_cache()


def test_foreign_key_to_task__an_outcome_is_recorded_and_the_references_follow_django_rules(
    task_references: tuple[type[Model], type[Model]],
) -> None:
    report_model, attachment_model = task_references
    first = tasks.record("first")
    second = tasks.always_fails()
    report = report_model.objects.create(task_id=first.pk)
    attachment_model.objects.create(task_id=second.pk)

    assert Worker(burst=True, sleep=60).run() == 0

    assert CompletedTask.objects.get(task_id=first.pk).status == CompletedTask.Status.SUCCEEDED
    assert CompletedTask.objects.get(task_id=second.pk).status == CompletedTask.Status.FAILED
    assert not Task.objects.exists()  # none quarantined
    report.refresh_from_db()
    assert report.task_id is None  # SET_NULL
    assert not attachment_model.objects.exists()  # CASCADE


def _claim_failing_once(monkeypatch: pytest.MonkeyPatch, error: Exception) -> list[int]:
    """Make the first runner-side claim raise ``error``, after the outcome was written."""
    calls: list[int] = []
    claim = runner_module.claim_tasks

    def fails_once(*args: Any, **kwargs: Any) -> list[Task]:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return claim(*args, **kwargs)

    monkeypatch.setattr(runner_module, "claim_tasks", fails_once)
    return calls


def test_retry_rolled_back_with_its_claim__is_recorded_again_as_the_claim_left_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failing = tasks.always_fails()  # 3 attempts, no backoff
    _claim_failing_once(monkeypatch, OperationalError("deadlock found (as MySQL would say)"))
    after_first: list[tuple[Any, ...]] = []

    def read_row(sender: str, task: Task, **kwargs: Any) -> None:
        if not after_first:
            row = Task.objects.filter(pk=task.pk)
            after_first.append(row.values_list("last_attempted_at", "worker_ids").get())

    signals.task_failed.connect(read_row, dispatch_uid="test-read-row")
    worker = Worker(burst=True, sleep=60)
    try:
        assert worker.run() == 0
    finally:
        signals.task_failed.disconnect(dispatch_uid="test-read-row")

    last_attempted_at, worker_ids = after_first[0]
    assert last_attempted_at is not None
    assert worker_ids == [worker.id]
    done = CompletedTask.objects.get(task_id=failing.pk)
    assert (done.attempts, done.worker_ids) == (3, [worker.id] * 3)


def test_error_other_than_the_database_in_the_claim__a_success_is_not_run_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = tasks.record("first")
    second = tasks.record("second")
    _claim_failing_once(monkeypatch, TypeError("a bug in the claim"))

    assert Worker(burst=True, sleep=60).run() == 0

    assert (runs("first"), runs("second")) == (1, 1)
    for task in (first, second):
        done = CompletedTask.objects.get(task_id=task.pk)
        assert (done.status, done.attempts) == (CompletedTask.Status.SUCCEEDED, 1)
    assert not Task.objects.exists()


def test_commit_reported_failed_after_a_retry_reclaimed_its_row__every_attempt_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No backoff: the retry's own transaction claims the row again. Its COMMIT happens, but
    is reported failed: writing the retry again must not undo the new claim unrun."""
    failing = tasks.always_fails()
    lost = threading.Event()
    lose_first_commit_reply(monkeypatch, lost)
    started: list[int] = []

    def count(sender: str, task: Task, **kwargs: Any) -> None:
        started.append(task.attempts)

    signals.task_started.connect(count, dispatch_uid="test-count-starts")
    try:
        assert Worker(burst=True, sleep=60).run() == 0
    finally:
        signals.task_started.disconnect(dispatch_uid="test-count-starts")

    assert lost.is_set()
    assert started == [1, 2, 3]
    done = CompletedTask.objects.get(task_id=failing.pk)
    assert (done.status, done.attempts) == (CompletedTask.Status.FAILED, 3)


def test_claimed_next_task__is_the_worker_s_before_the_outcome_s_signals_run(
    runner_claims: list[list[int]],
) -> None:
    first = tasks.record("first")
    second = tasks.record("second")
    worker = Worker(burst=True, sleep=60)
    seen: list[bool] = []

    def look(sender: str, task: Task, **kwargs: Any) -> None:
        if task.pk == first.pk:
            with worker._lock:
                seen.append(second.pk in worker._running)

    signals.task_succeeded.connect(look, dispatch_uid="test-look")
    try:
        assert worker.run() == 0
    finally:
        signals.task_succeeded.disconnect(dispatch_uid="test-look")

    assert runner_claims[0] == [second.pk]  # claimed in the first outcome's transaction
    assert seen == [True]


def test_over_max_memory_while_stopping_for_the_database__the_exit_code_says_the_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A runner asking to claim as the worker stops (its database gone) must not turn the exit
    code into the memory limit's: a supervisor would restart it for the wrong reason."""
    monkeypatch.setattr(worker_module, "resident_mb", lambda: 1000.0)
    worker = Worker(sleep=60, max_memory=100)
    worker._exit_code = EXIT_DATABASE_UNAVAILABLE
    worker._closing = True

    assert not worker._reserve_claims(1)
    assert worker._exit_code == EXIT_DATABASE_UNAVAILABLE

    worker._closing = False  # even when the limit is checked
    assert worker._over_memory_limit()
    assert worker._exit_code == EXIT_DATABASE_UNAVAILABLE


@pytest.mark.parametrize("signal", ["task_started", "task_succeeded"])
def test_receiver_raising_past_the_worker__the_worker_stops_and_hands_its_tasks_back(
    signal: str,
) -> None:
    """SystemExit from a receiver ends its runner thread: the worker must stop, not hang."""
    first = tasks.record("first")
    second = tasks.record("second")
    raised: list[int] = []

    def exits_once(sender: str, task: Task, **kwargs: Any) -> None:
        if not raised:
            raised.append(task.pk)
            raise SystemExit("a receiver's own exit")

    getattr(signals, signal).connect(exits_once, dispatch_uid="test-exits-once")
    worker = Worker(burst=True, sleep=60)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run()), daemon=True)
    try:
        thread.start()
        thread.join(timeout=30)
    finally:
        getattr(signals, signal).disconnect(dispatch_uid="test-exits-once")
        if thread.is_alive():
            worker.request_stop()
            worker.request_stop()
            thread.join(timeout=30)

    assert codes == [EXIT_RUNNER_ENDED]
    assert raised == [first.pk]
    assert runs("second") == 0
    waiting = Task.objects.get(pk=second.pk)
    assert (waiting.locked_by, waiting.attempts) == (None, 0)  # handed back uncounted
    if signal == "task_started":  # it never ran: handed back uncounted too
        assert runs("first") == 0
        assert (Task.objects.get(pk=first.pk).locked_by, first.attempts) == (None, 0)
    else:  # it ran, and its outcome was committed before the receiver ran
        assert runs("first") == 1
        assert CompletedTask.objects.get(task_id=first.pk).attempts == 1


def test_outcome_not_recorded__the_row_is_left_to_the_rescue_not_released_uncounted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Neither the outcome, nor the failure, nor the quarantine could be written: the attempt
    ran, so the row stays held until this worker is gone and the rescue records it as failed.
    The release of lost claims (its transaction with the next claim rolled back) must not hand
    it back uncounted, to run again (and again) with its attempt never counted."""
    task = tasks.record("unrecordable")
    refuse_archiving(monkeypatch, task.pk)
    quarantine = recording.quarantine

    def refuse_quarantine(task_id: int, *args: Any, **kwargs: Any) -> bool:
        if task_id == task.pk:
            raise DataError("value too long (as the database would say)")
        return quarantine(task_id, *args, **kwargs)

    monkeypatch.setattr(recording, "quarantine", refuse_quarantine)
    worker = Worker(burst=True, sleep=60, max_tasks=2)

    assert worker.run() == 0

    assert runs("unrecordable") == 1
    held = Task.objects.get(pk=task.pk)
    assert (held.locked_by, held.attempts) == (worker.id, 1)
    # Once this worker is gone, the rescue records the attempt as failed (and retries it).
    later = timezone.now() + timedelta(seconds=float(app_settings.RESCUE_AFTER) + 1)
    assert liveness.rescue_lost(now=later) == 1
    rescued = Task.objects.get(pk=task.pk)
    assert (rescued.locked_by, rescued.attempts) == (None, 1)
    assert rescued.last_error.startswith(f"Worker lost: {worker.id}")


def test_stop_as_a_runner_takes_a_task_from_the_inbox__it_is_released_not_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The runner took the main thread's claim from the inbox just before the stop emptied it:
    the task is unstarted, and released uncounted as the inbox's are, never started (with a
    short grace the shutdown would hand it back while it ran)."""
    task = tasks.record("taken")
    worker = Worker(sleep=60, shutdown_grace=10)
    emptied = threading.Event()
    drain_inbox = worker._drain_inbox
    may_start = runner_module.Runner._may_start

    def drain_then_note() -> list[Task]:
        try:
            return drain_inbox()
        finally:
            emptied.set()

    def stop_then_decide(runner: runner_module.Runner, claimed: Task, own: bool) -> bool:
        if not own and not emptied.is_set():
            worker.request_stop()
            assert emptied.wait(10), "the shutdown never emptied the inbox"
        return may_start(runner, claimed, own)

    monkeypatch.setattr(worker, "_drain_inbox", drain_then_note)
    monkeypatch.setattr(runner_module.Runner, "_may_start", stop_then_decide)

    assert worker.run() == 0

    assert runs("taken") == 0
    left = Task.objects.get(pk=task.pk)
    assert (left.locked_by, left.attempts, left.handbacks) == (None, 0, 0)
