"""Batching (``BATCH_SIZE`` > 1): a runner claims several tasks at once and records their
outcomes in one commit, within a time window.

In process, on the database of the run, with a real ``Worker``. Each test names a guarantee
the batch must keep: every task runs once, fencing, ``--max-tasks``, stopping, a value the
database refuses, a failed commit, and the window bounding how long an outcome waits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import DataError, OperationalError

from background_tasks import archive_sql, lifecycle, signals
from background_tasks import runner as runner_module
from background_tasks import worker as worker_module
from background_tasks.isolation import QUARANTINED
from background_tasks.models import CompletedTask, Task
from background_tasks.worker import Worker
from tests.fixtures import refuse_archiving
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = pytest.mark.django_db(transaction=True)

#: Long enough that only the end of a batch writes its outcomes, never the clock.
NO_WINDOW = 60.0


@pytest.fixture
def transactions(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """For each shared transaction that committed, the ids of the successes written in it."""
    committed: list[list[int]] = []
    real = lifecycle.shared_transaction
    current = threading.local()
    record_success = lifecycle.record_success

    @contextmanager
    def watched(using: str, **options: Any) -> Iterator[list[Callable[[], None]]]:
        current.written = []
        with real(using, **options) as pending:
            yield pending
        committed.append(current.written)

    def noted(task: Task, *args: Any, **kwargs: Any) -> Any:
        written = getattr(current, "written", None)
        if written is not None:
            written.append(task.pk)
        return record_success(task, *args, **kwargs)

    monkeypatch.setattr(lifecycle, "shared_transaction", watched)
    monkeypatch.setattr(lifecycle, "record_success", noted)
    return committed


@pytest.fixture
def released() -> Iterator[threading.Event]:
    tasks.RELEASE.clear()
    yield tasks.RELEASE
    tasks.RELEASE.set()  # never leave a runner thread waiting


@pytest.fixture
def tasks_stay_in_their_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tasks of a batch are not released behind a longer one (tested on its own below).

    Tests of outcomes held behind a slow task use a short window, which a quick task of a
    loaded machine may outrun: the tasks behind it would then be released and claimed one by
    one, and no outcome held.
    """
    monkeypatch.setattr(Worker, "_release_behind_long_task", lambda worker, runner: None)


def runs(key: str) -> int:
    return TaskRun.objects.filter(key=key).count()


def test_batch__claims_several_at_once_and_writes_their_outcomes_with_the_next_claim(
    runner_claims: list[list[int]], transactions: list[list[int]]
) -> None:
    made = [tasks.record(f"t{i}") for i in range(7)]
    ids = [task.pk for task in made]

    assert Worker(burst=True, sleep=60, batch_size=3, batch_window=NO_WINDOW).run() == 0

    # The main thread claimed the first; then each batch's last outcome claimed the next three.
    assert runner_claims == [ids[1:4], ids[4:7], []]
    assert transactions == [ids[0:1], ids[1:4], ids[4:7]]
    assert [runs(f"t{i}") for i in range(7)] == [1] * 7
    assert [r.attempts for r in CompletedTask.objects.order_by("task_id")] == [1] * 7
    assert not Task.objects.exists()


def test_batch__two_threads_each_claim_their_own_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first two only end once both run at once: each thread gets one from the main thread.
    tasks.meets_another("pair")
    tasks.meets_another("pair")
    for i in range(8):
        tasks.record(f"t{i}")
    claims: list[tuple[str, int]] = []
    claim = runner_module.claim_tasks

    def noted(*args: Any, **kwargs: Any) -> list[Task]:
        claimed = claim(*args, **kwargs)
        claims.append((threading.current_thread().name, len(claimed)))
        return claimed

    monkeypatch.setattr(runner_module, "claim_tasks", noted)
    ran_on: set[str] = set()

    def note_thread(sender: str, task: Task, **kwargs: Any) -> None:
        ran_on.add(threading.current_thread().name)

    signals.task_started.connect(note_thread, dispatch_uid="test-note-thread")
    try:
        assert (
            Worker(burst=True, sleep=60, concurrency=2, batch_size=3, batch_window=NO_WINDOW).run()
            == 0
        )
    finally:
        signals.task_started.disconnect(dispatch_uid="test-note-thread")

    assert [runs(f"t{i}") for i in range(8)] == [1] * 8
    assert runs("pair:arrived") == 2
    # The main thread gave each idle thread a first task (one claim of two); the threads
    # claimed the other eight themselves, in batches of up to three (which thread claimed
    # more depends on which finished first).
    assert ran_on == {"background_tasks-runner-0", "background_tasks-runner-1"}
    assert {name for name, _ in claims} <= ran_on
    assert sum(count for _, count in claims) == 8
    assert max(count for _, count in claims) == 3
    assert not Task.objects.exists()


def test_window__an_outcome_held_behind_a_longer_task_is_written_by_the_main_thread(
    released: threading.Event, tasks_stay_in_their_batch: None
) -> None:
    tasks.record("first")
    tasks.record("quick")
    tasks.waits_for_release("slow")  # runs until the outcome of "quick" is written
    tasks.record("last")
    written_by: dict[str, str] = {}

    def release_once_written(sender: str, task: Task, **kwargs: Any) -> None:
        key = task.params["args"][0]
        written_by[key] = threading.current_thread().name
        if key == "quick":
            released.set()

    signals.task_succeeded.connect(release_once_written, dispatch_uid="test-release")
    try:
        assert Worker(burst=True, sleep=60, batch_size=3, batch_window=0.005).run() == 0
    finally:
        signals.task_succeeded.disconnect(dispatch_uid="test-release")

    assert runs("slow") == 1  # not failed by its 10 s timeout: "quick" was written meanwhile
    # Written by the worker's main thread, its signal sent from a thread of its own.
    assert written_by["quick"] == "background_tasks-signals"
    assert written_by["first"].startswith("background_tasks-runner")
    assert written_by["last"].startswith("background_tasks-runner")
    assert not Task.objects.exists()


def test_window__tasks_claimed_behind_a_longer_task_are_released_and_the_next_claim_is_one(
    released: threading.Event, runner_claims: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tasks.record("first")
    slow = tasks.waits_for_release("slow")  # runs until the two behind it are released
    behind = [tasks.record(f"behind-{i}") for i in range(2)]
    behind_ids = [task.pk for task in behind]
    release = lifecycle.release
    released_while_slow_ran: list[list[int]] = []

    def noted(claimed: list[Task], worker_id: str) -> int:
        count = release(claimed, worker_id)
        if not released.is_set():
            released_while_slow_ran.append([task.pk for task in claimed])
            released.set()
        return count

    monkeypatch.setattr(worker_module.lifecycle, "release", noted)

    assert Worker(burst=True, sleep=60, batch_size=3, batch_window=0.005).run() == 0

    # "first" was short: its outcome's claim took a batch of three. "slow" outran the window:
    # the main thread released the two behind it (unstarted, uncounted) while it ran, and the
    # claim after it took one task, not a batch.
    assert runner_claims[0] == [slow.pk, *behind_ids]
    assert released_while_slow_ran == [behind_ids]
    assert runner_claims[1] == behind_ids[:1]
    assert [runs(key) for key in ("first", "slow", "behind-0", "behind-1")] == [1, 1, 1, 1]
    history = CompletedTask.objects.filter(task_id__in=[first.pk, slow.pk, *behind_ids])
    assert [record.attempts for record in history.order_by("task_id")] == [1] * 4
    assert not Task.objects.exists()


def test_stop__the_outcomes_held_are_written_and_the_batch_s_unstarted_tasks_released(
    released: threading.Event,
) -> None:
    tasks.record("first")
    tasks.record("quick")
    tasks.waits_for_release("slow")
    rest = [tasks.record(f"rest-{i}").pk for i in range(2)]
    worker = Worker(sleep=60, batch_size=4, batch_window=NO_WINDOW)
    written_by: dict[str, str] = {}

    def stop_when_slow_starts(sender: str, task: Task, **kwargs: Any) -> None:
        if task.params["args"] == ["slow"]:
            worker.request_stop()

    def release_once_written(sender: str, task: Task, **kwargs: Any) -> None:
        written_by[task.params["args"][0]] = threading.current_thread().name
        if task.params["args"] == ["quick"]:
            released.set()

    signals.task_started.connect(stop_when_slow_starts, dispatch_uid="test-stop")
    signals.task_succeeded.connect(release_once_written, dispatch_uid="test-release")
    try:
        assert worker.run() == 0
    finally:
        signals.task_started.disconnect(dispatch_uid="test-stop")
        signals.task_succeeded.disconnect(dispatch_uid="test-release")

    # With no time window, only the shutdown could write "quick" while "slow" still ran.
    assert written_by["quick"] == "background_tasks-signals"
    assert [runs(key) for key in ("first", "quick", "slow")] == [1, 1, 1]
    waiting = Task.objects.filter(pk__in=rest)
    assert [(t.locked_by, t.attempts) for t in waiting] == [(None, 0)] * 2


def test_grace_over_as_the_runner_takes_its_next_task__it_is_released_unstarted_not_handed_back(
    monkeypatch: pytest.MonkeyPatch, released: threading.Event
) -> None:
    """The grace period is over just as the runner ends its long task and takes the next one of
    its batch, to release it unstarted (the worker is stopping). The shutdown must count that
    task among the unstarted ones, not among those still running: a hand-back is counted in
    ``handbacks``, and past MAX_HANDBACKS recorded as a failed attempt that never ran."""
    tasks.record("first")
    tasks.waits_for_release("slow")
    after = tasks.record("after")
    worker = Worker(sleep=60, batch_size=2, batch_window=NO_WINDOW, shutdown_grace=0)
    taken, handed_back = threading.Event(), threading.Event()
    write_all = worker._write_all_held_outcomes
    writes: list[int] = []
    release, hand_back = lifecycle.release, lifecycle.hand_back

    def stop_when_slow_starts(sender: str, task: Task, **kwargs: Any) -> None:
        if task.params["args"] == ["slow"]:
            worker.request_stop()

    def write_all_then_end_slow() -> None:
        write_all()
        writes.append(1)
        if len(writes) == 2:  # the grace period is over: "slow" ends now
            released.set()
            assert taken.wait(10), "the runner never took its next task"

    def runner_release(tasks_: list[Task], worker_id: str) -> int:
        if threading.current_thread().name.startswith("background_tasks-runner"):
            taken.set()  # "after" is out of the runner's queue, not yet released
            assert handed_back.wait(10), "the shutdown never handed back"
        return release(tasks_, worker_id)

    def hand_back_then_note(tasks_: list[Task], worker_id: str) -> int:
        try:
            return hand_back(tasks_, worker_id)
        finally:
            handed_back.set()

    monkeypatch.setattr(worker, "_write_all_held_outcomes", write_all_then_end_slow)
    monkeypatch.setattr(lifecycle, "release", runner_release)
    monkeypatch.setattr(lifecycle, "hand_back", hand_back_then_note)
    signals.task_started.connect(stop_when_slow_starts, dispatch_uid="test-stop")
    try:
        assert worker.run() == 0
    finally:
        signals.task_started.disconnect(dispatch_uid="test-stop")
        handed_back.set()
        for thread in worker._threads:
            thread.join(10)

    assert [runs(key) for key in ("first", "slow", "after")] == [1, 1, 0]
    left = Task.objects.get(pk=after.pk)
    assert (left.locked_by, left.attempts, left.handbacks) == (None, 0, 0)


def test_stop__the_signals_of_outcomes_the_main_thread_wrote_are_sent_before_the_worker_exits(
    released: threading.Event,
) -> None:
    """The shutdown writes the outcome held for "quick" once the grace period is spent (here it
    is 0): its signals go out from a thread of their own, and a process exits without waiting
    for such threads. The worker waits for them, and says so."""
    tasks.record("first")
    tasks.record("quick")
    tasks.waits_for_release("slow")
    worker = Worker(sleep=60, batch_size=3, batch_window=NO_WINDOW, shutdown_grace=0)
    said_so, sent = threading.Event(), []

    class NoteWaiting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "waiting for the receivers" in record.getMessage():
                said_so.set()

    def stop_when_slow_starts(sender: str, task: Task, **kwargs: Any) -> None:
        if task.params["args"] == ["slow"]:
            worker.request_stop()

    def slow_receiver(sender: str, task: Task, **kwargs: Any) -> None:
        # A receiver that takes longer than what is left of the grace period.
        if task.params["args"] == ["quick"] and said_so.wait(10):
            sent.append("quick")

    handler = NoteWaiting()
    logger = logging.getLogger("background_tasks")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    signals.task_started.connect(stop_when_slow_starts, dispatch_uid="test-stop")
    signals.task_succeeded.connect(slow_receiver, dispatch_uid="test-slow-receiver")
    try:
        assert worker.run() == 0
        done = list(sent)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        signals.task_started.disconnect(dispatch_uid="test-stop")
        signals.task_succeeded.disconnect(dispatch_uid="test-slow-receiver")
        said_so.set()
        released.set()
        for thread in [*worker._threads, *worker._signal_threads]:
            thread.join(10)

    assert done == ["quick"]
    assert [runs(key) for key in ("first", "quick")] == [1, 1]


@pytest.mark.parametrize("concurrency", [1, 2])
def test_max_tasks__is_respected_exactly_with_batches(concurrency: int) -> None:
    for i in range(9):
        tasks.record(f"budget-{i}")

    worker = Worker(sleep=60, max_tasks=5, concurrency=concurrency, batch_size=3)
    assert worker.run() == 0

    assert CompletedTask.objects.succeeded().count() == 5
    left = Task.objects.all()
    assert [(t.locked_by, t.attempts) for t in left] == [(None, 0)] * 4


def test_fencing__an_outcome_in_a_batch_is_dropped_alone_when_its_row_was_taken() -> None:
    tasks.record("first")
    before = tasks.record("before")
    lost = tasks.loses_its_row("succeed")
    after = tasks.record("after")

    assert Worker(burst=True, sleep=60, batch_size=3, batch_window=NO_WINDOW).run() == 0

    assert not CompletedTask.objects.filter(task_id=lost.pk).exists()
    assert Task.objects.get(pk=lost.pk).locked_by == "tests:rescuer"
    assert CompletedTask.objects.filter(task_id__in=[before.pk, after.pk]).count() == 2
    assert [runs(key) for key in ("first", "before", "after")] == [1, 1, 1]


def test_refused_outcome__in_a_batch_is_quarantined_alone_and_the_others_are_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tasks.record("first")
    good = [tasks.record("good-1"), tasks.record("good-2")]
    bad = tasks.record("bad")
    refuse_archiving(monkeypatch, bad.pk)

    assert Worker(burst=True, sleep=60, batch_size=3, batch_window=NO_WINDOW).run() == 0

    # The batch's transaction rolled back; each outcome was then written on its own.
    quarantined = Task.objects.get(pk=bad.pk)
    assert quarantined.locked_by == QUARANTINED
    assert "could not be recorded" in quarantined.last_error
    assert [runs(key) for key in ("first", "good-1", "good-2", "bad")] == [1, 1, 1, 1]
    recorded = CompletedTask.objects.filter(task_id__in=[task.pk for task in good])
    assert [r.attempts for r in recorded] == [1, 1]
    assert not Task.objects.filter(locked_by__contains=":").exists()  # no worker holds a row


@pytest.mark.parametrize("when", ["before_commit", "after_commit"])
def test_lost_reply_at_a_batch_s_commit__no_task_runs_twice_and_none_is_lost(
    monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The commit of a batch's outcomes and next claim may or may not have happened."""
    keys = [f"t{i}" for i in range(6)]
    for key in keys:
        tasks.record(key)
    real = lifecycle.shared_transaction
    calls: list[int] = []

    @contextmanager
    def second_fails(using: str, **options: Any) -> Iterator[list[Callable[[], None]]]:
        calls.append(1)
        if len(calls) != 2:  # the second: the first batch's outcomes and the next claim
            with real(using, **options) as pending:
                yield pending
            return
        if when == "before_commit":
            with real(using, **options) as pending:
                yield pending
                raise OperationalError("server closed the connection unexpectedly")
        with real(using, **options) as pending:
            yield pending
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(runner_module.lifecycle, "shared_transaction", second_fails)

    assert Worker(burst=True, sleep=60, batch_size=3, batch_window=NO_WINDOW).run() == 0

    assert [runs(key) for key in keys] == [1] * 6
    assert [r.attempts for r in CompletedTask.objects.all()] == [1] * 6
    assert not Task.objects.exists()


def test_refused_held_outcome__is_quarantined_alone_and_the_rest_of_its_batch_is_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tasks.record("first")
    before = tasks.record("before")
    bad = tasks.record("bad")  # held: the middle of the batch
    after = tasks.record("after")
    refuse_archiving(monkeypatch, bad.pk)

    assert Worker(burst=True, sleep=60, batch_size=3, batch_window=NO_WINDOW).run() == 0

    assert Task.objects.get(pk=bad.pk).locked_by == QUARANTINED
    recorded = CompletedTask.objects.filter(task_id__in=[before.pk, after.pk])
    assert [r.attempts for r in recorded] == [1, 1]
    assert [runs(key) for key in ("first", "before", "bad", "after")] == [1, 1, 1, 1]


def test_main_thread_write_failing__the_runner_writes_the_outcomes_with_its_next_one(
    monkeypatch: pytest.MonkeyPatch, released: threading.Event, tasks_stay_in_their_batch: None
) -> None:
    """The main thread tries once: after a lost connection it gives the outcomes back."""
    keys = ["first", "quick", "slow", "last"]
    tasks.record("first")
    tasks.record("quick")
    tasks.waits_for_release("slow")
    tasks.record("last")
    main = threading.current_thread()
    real = lifecycle.shared_transaction
    failed: list[int] = []

    @contextmanager
    def lost_in_the_main_thread(using: str, **options: Any) -> Iterator[list[Callable[[], None]]]:
        if threading.current_thread() is main:
            failed.append(1)
            released.set()  # the write of "quick" failed: let "slow" end
            raise OperationalError("server closed the connection unexpectedly")
        with real(using, **options) as pending:
            yield pending

    monkeypatch.setattr(lifecycle, "shared_transaction", lost_in_the_main_thread)

    assert Worker(burst=True, sleep=60, batch_size=3, batch_window=0.005).run() == 0

    assert failed
    assert [runs(key) for key in keys] == [1, 1, 1, 1]
    assert [r.attempts for r in CompletedTask.objects.all()] == [1] * 4
    assert not Task.objects.exists()


def test_stop_interrupted__while_writing_one_runner_s_outcomes_leaves_no_runner_holding_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A KeyboardInterrupt (a Worker run embedded) in the shutdown's write of the first
    runner's outcomes: every runner has stopped holding, so each writes its own outcomes."""
    worker = Worker(burst=True, sleep=60, concurrency=2, batch_size=3, batch_window=NO_WINDOW)
    worker._runners = [runner_module.Runner(worker), runner_module.Runner(worker)]

    def interrupted(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(worker_module, "write_held_by_main", interrupted)
    with pytest.raises(KeyboardInterrupt):
        worker._write_all_held_outcomes()

    task = Task(pk=1)
    assert [runner.held.hold(task, lambda: None) for runner in worker._runners] == [None, None]


def test_held_outcome_refused_in_the_main_thread__it_goes_on_claiming_for_idle_threads(
    monkeypatch: pytest.MonkeyPatch, released: threading.Event, tasks_stay_in_their_batch: None
) -> None:
    """A value the database refuses is no outage: the main thread leaves that write to the
    runner, instead of trying it again and again while idle threads wait for a claim."""
    tasks.record("first")
    main_refused = threading.Event()
    refused: list[int] = []
    move = archive_sql.move_held

    def refuse(connection: Any, moved_id: int, *args: Any) -> bool:
        if moved_id in refused:
            if threading.current_thread().name == "worker-main":
                main_refused.set()
            raise DataError("value out of range (as the database would say)")
        return move(connection, moved_id, *args)

    monkeypatch.setattr(archive_sql, "move_held", refuse)
    batch_claimed = threading.Event()
    runner_claim, main_claim = runner_module.claim_tasks, worker_module.claim_tasks

    def note_the_batch(*args: Any, **kwargs: Any) -> list[Task]:
        claimed = runner_claim(*args, **kwargs)
        if refused and claimed:
            batch_claimed.set()
        return claimed

    def not_before_the_batch(*args: Any, **kwargs: Any) -> list[Task]:
        # The main thread polls for the idle thread: until the runner has claimed "bad" and
        # "slow" as its batch, it would take one of them for that thread instead.
        if refused and not batch_claimed.is_set():
            return []
        return main_claim(*args, **kwargs)

    monkeypatch.setattr(runner_module, "claim_tasks", note_the_batch)
    monkeypatch.setattr(worker_module, "claim_tasks", not_before_the_batch)

    def after_first(sender: str, task: Task, **kwargs: Any) -> None:
        if task.params["args"] == ["first"]:  # claimed by its runner as one batch
            refused.append(tasks.record("bad").pk)
            tasks.waits_for_release("slow")  # runs until "other" is done

    def release_once_other_done(sender: str, task: Task, **kwargs: Any) -> None:
        if task.params["args"] == ["other"]:
            released.set()

    signals.task_started.connect(after_first, dispatch_uid="test-after-first")
    signals.task_succeeded.connect(release_once_other_done, dispatch_uid="test-release")
    worker = Worker(burst=True, sleep=0.05, concurrency=2, batch_size=3, batch_window=0.005)
    exit_codes: list[int] = []
    thread = threading.Thread(target=lambda: exit_codes.append(worker.run()), name="worker-main")
    try:
        thread.start()
        assert main_refused.wait(10), "the main thread never wrote the held outcome"
        tasks.record("other")  # for the idle thread, while "slow" runs
        thread.join(30)
    finally:
        signals.task_started.disconnect(dispatch_uid="test-after-first")
        signals.task_succeeded.disconnect(dispatch_uid="test-release")
        released.set()
        thread.join(30)

    assert exit_codes == [0]
    assert [runs(key) for key in ("first", "other", "slow", "bad")] == [1, 1, 1, 1]
    assert Task.objects.get(pk=refused[0]).locked_by == QUARANTINED
    assert CompletedTask.objects.succeeded().count() == 3
