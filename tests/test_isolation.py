"""Per-row isolation in process: one bad row is failed or quarantined, the others go on.

The same cases against a real worker subprocess are in test_bad_input.py; these call the
per-row steps directly (rescue, reap, outcome writes, schedule firing, log values).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from django.db import DatabaseError, DataError, OperationalError, connection, transaction
from django.utils import timezone

from background_tasks import isolation, lifecycle, liveness, periodic, recording
from background_tasks.claims import claim_tasks
from background_tasks.logs import shown
from background_tasks.models import QUARANTINED, CompletedTask, Schedule, Task, Worker
from background_tasks.outage import is_outage
from background_tasks.outcomes import Outcome
from background_tasks.supervisor import Child, Supervisor
from tests.fixtures import Clock

pytestmark = pytest.mark.django_db

RECORD = "tests.testapp.tasks.record"
#: A run_at each vendor stores but cannot hand to Python as a datetime.
UNLOADABLE_RUN_AT = {
    "postgresql": "-infinity",
    "sqlite": "0000-01-01 00:00:00",
    "mysql": "0000-00-00 00:00:00",
}


def make(**fields: Any) -> Task:
    fields.setdefault("task_name", RECORD)
    fields.setdefault("params", {"args": ["k"], "kwargs": {}})
    fields.setdefault("run_at", timezone.now() - timedelta(minutes=1))
    task: Task = Task.objects.create(**fields)
    return task


def make_unloadable(**fields: Any) -> int:
    """Insert a row whose run_at the database holds but Python cannot; return its id."""
    task_id = int(make(**fields).pk)
    table = connection.ops.quote_name(Task._meta.db_table)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET run_at = %s WHERE id = %s",
                [UNLOADABLE_RUN_AT[connection.vendor], task_id],
            )
    except DatabaseError as exc:
        pytest.skip(f"this server's SQL mode refuses the value: {exc}")
    return task_id


def claimed(**fields: Any) -> Task:
    """Insert a ready row and claim it as worker w:1:a."""
    make(**fields)
    (task,) = claim_tasks("w:1:a", [], 1)
    return task


def held_by(task_id: int) -> tuple[str | None, str]:
    row = Task.objects.filter(pk=task_id).values_list("locked_by", "last_error").get()
    return row[0], row[1]


def lost_worker(worker_id: str = "dead:1:abc") -> str:
    stale = timezone.now() - timedelta(days=1)
    Worker.objects.create(
        id=worker_id, host="dead", pid=1, queues=[], started_at=stale, last_heartbeat_at=stale
    )
    return worker_id


# -- claim ------------------------------------------------------------------------------------


def test_claim__skips_and_quarantines_a_row_it_cannot_load_and_fills_the_slot() -> None:
    bad = make_unloadable()
    good = make(run_at=timezone.now() - timedelta(seconds=1))

    claimed = claim_tasks("w:1:a", [], 1)

    assert [task.pk for task in claimed] == [good.pk]
    holder, error = held_by(bad)
    assert holder == QUARANTINED
    assert "cannot be run" in error
    assert claim_tasks("w:1:a", [], 5) == []


def test_claim__a_row_it_cannot_load_at_a_later_priority_leaves_each_claimed_row_once() -> None:
    # The first statement takes the one row of the best priority; the second's reply cannot
    # be read (PostgreSQL converts as it fetches), and is found again by the claim's stamp.
    good = make(priority=10)
    bad = make_unloadable(priority=0)

    claimed = claim_tasks("w:1:a", [], 2)

    assert [task.pk for task in claimed] == [good.pk]
    assert held_by(bad)[0] == QUARANTINED


def test_claim__a_reply_it_cannot_read_takes_no_row_of_another_claim_at_the_same_instant(
    clock: Clock,
) -> None:
    """Two claims of one worker read the same instant (two of its threads, a coarse clock). The
    second one's reply cannot be read, so its rows are found again by the claim's stamp: that
    stamp must name the second claim alone, or the first claim's row runs twice. (PostgreSQL and
    SQLite; MySQL/MariaDB's claim reads its rows before it marks them, and never looks again.)"""
    good = make(priority=10)
    bad = make_unloadable(priority=0)

    (first,) = claim_tasks("w:1:a", [], 1)
    second = claim_tasks("w:1:a", [], 1)

    assert first.pk == good.pk
    assert second == []
    assert held_by(bad)[0] == QUARANTINED
    assert held_by(good.pk)[0] == "w:1:a"


def test_claim__counts_no_further_at_the_attempts_ceiling() -> None:
    task = make(attempts=isolation.ATTEMPTS_CEILING)

    (claimed,) = claim_tasks("w:1:a", [], 1)

    assert claimed.pk == task.pk
    assert claimed.attempts == isolation.ATTEMPTS_CEILING


# -- outcomes ---------------------------------------------------------------------------------


def test_archive__a_follower_the_database_refuses_does_not_block_the_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = claimed(repeat={"seconds": 60})
    original = Task.save

    def refuse_followers(self: Task, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("force_insert") and self.repeat_anchor is not None:
            raise DataError("value out of range for the follower")
        original(self, *args, **kwargs)

    monkeypatch.setattr(Task, "save", refuse_followers)

    completed = lifecycle.record_success(task, "w:1:a", None)

    assert completed is not None
    assert completed.status == CompletedTask.Status.SUCCEEDED
    assert "No next occurrence was scheduled: the database refused it: DataError" in (
        completed.last_error
    )
    assert not Task.objects.exists()


def test_record_or_quarantine__a_row_no_outcome_can_be_written_for_is_quarantined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = claimed()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise DataError("value too long")

    monkeypatch.setattr(lifecycle, "_record", refuse)

    outcome = recording.record_or_quarantine(
        task, "w:1:a", lambda: lifecycle.record_success(task, "w:1:a", None), "The success"
    )

    assert outcome is Outcome.QUARANTINED
    holder, error = held_by(task.pk)
    assert holder == QUARANTINED
    assert "The success could not be recorded because of a value in this row" in error
    assert "Recording it as failed was refused too: DataError: value too long" in error


def test_record_or_quarantine__a_connection_error_is_left_to_the_outage_handling() -> None:
    task = claimed()

    def outage() -> None:
        raise OperationalError("server closed the connection")

    with pytest.raises(OperationalError):
        recording.record_or_quarantine(task, "w:1:a", outage, "The success")
    assert held_by(task.pk)[0] == "w:1:a"


# -- rescue -----------------------------------------------------------------------------------


def test_rescue__a_row_with_a_bad_repeat_is_failed_and_the_others_are_rescued() -> None:
    worker = lost_worker()
    stale = timezone.now() - timedelta(days=1)
    bad = make(repeat={"foo": 1}, attempts=1, max_attempts=1, locked_by=worker, locked_at=stale)
    good = make(attempts=1, locked_by=worker, locked_at=stale)

    assert liveness.rescue_lost() == 2

    record = CompletedTask.objects.get(task_id=bad.pk)
    assert record.status == CompletedTask.Status.FAILED
    assert "its repeat could not be computed" in record.last_error
    good.refresh_from_db()
    assert good.locked_by is None and "Worker lost" in good.last_error


def test_rescue__a_row_it_cannot_load_is_quarantined_and_the_others_are_rescued() -> None:
    worker = lost_worker()
    stale = timezone.now() - timedelta(days=1)
    bad = make_unloadable(locked_by=worker, locked_at=stale)
    good = make(attempts=1, locked_by=worker, locked_at=stale)

    assert liveness.rescue_lost() == 1

    assert held_by(bad)[0] == QUARANTINED
    good.refresh_from_db()
    assert good.locked_by is None


@pytest.mark.parametrize(
    ("locked_by", "lock_age"),
    [("", timedelta(days=1)), ("", None), ("never:1:registered", None)],
    ids=["empty-holder", "empty-holder-no-lock-time", "unknown-holder-no-lock-time"],
)
def test_rescue__a_hand_made_hold_by_nobody_is_released(
    locked_by: str, lock_age: timedelta | None
) -> None:
    locked_at = None if lock_age is None else timezone.now() - lock_age
    task = make(attempts=1, locked_by=locked_by, locked_at=locked_at)

    assert liveness.rescue_lost() == 1

    task.refresh_from_db()
    assert task.locked_by is None


def test_rescue__leaves_quarantined_rows_and_live_workers_rows_alone() -> None:
    now = timezone.now()
    Worker.objects.create(
        id="alive:1:a", host="h", pid=1, queues=[], started_at=now, last_heartbeat_at=now
    )
    quarantined = make(locked_by=QUARANTINED, locked_at=now - timedelta(days=1))
    running = make(locked_by="alive:1:a", locked_at=None)

    assert liveness.rescue_lost() == 0

    assert held_by(quarantined.pk)[0] == QUARANTINED
    assert held_by(running.pk)[0] == "alive:1:a"


# -- supervisor reaping -----------------------------------------------------------------------


class DeadProcess:
    """A child process that has already exited."""

    exitcode = -9

    def join(self) -> None:
        return None

    def is_alive(self) -> bool:
        return False


def test_reap__a_bad_row_of_a_dead_child_does_not_stop_the_others_being_recorded() -> None:
    child = Child("host:1:a:child0", DeadProcess())  # type: ignore[arg-type]
    now = timezone.now()
    bad_repeat = make(
        repeat={"foo": 1}, attempts=1, max_attempts=1, locked_by=child.worker_id, locked_at=now
    )
    unloadable = make_unloadable(locked_by=child.worker_id, locked_at=now)
    good = make(attempts=1, locked_by=child.worker_id, locked_at=now)

    Supervisor(processes=1, worker_options={})._reap(child)

    assert (
        "its repeat could not be computed"
        in CompletedTask.objects.get(task_id=bad_repeat.pk).last_error
    )
    assert held_by(unloadable)[0] == QUARANTINED
    good.refresh_from_db()
    assert good.locked_by is None
    assert "exited unexpectedly (exit code -9)" in good.last_error


# -- schedules --------------------------------------------------------------------------------


def test_fire_due__a_schedule_it_cannot_load_is_disabled_and_the_others_fire(
    caplog: pytest.LogCaptureFixture,
) -> None:
    due = timezone.now() - timedelta(minutes=1)
    bad = Schedule.objects.create(name="bad", task_name=RECORD, cron="0 3 * * *", next_fire_at=due)
    Schedule.objects.create(name="good", task_name=RECORD, cron="0 3 * * *", next_fire_at=due)
    table = connection.ops.quote_name(Schedule._meta.db_table)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET next_fire_at = %s WHERE id = %s",
                [UNLOADABLE_RUN_AT[connection.vendor], bad.pk],
            )
    except DatabaseError as exc:
        pytest.skip(f"this server's SQL mode refuses the value: {exc}")

    with caplog.at_level(logging.ERROR, "background_tasks"):
        fired = periodic.fire_due()

    assert fired == 1
    assert Task.objects.get().verbose_name.startswith("good @ ")
    assert dict(Schedule.objects.values_list("name", "enabled")) == {"bad": False, "good": True}
    assert "event=schedule_invalid schedule=bad" in caplog.text


def test_fire_due__a_missing_table_is_the_databases_fault_and_disables_no_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Not an outage to wait out (outage.is_outage), yet not the schedule's fault either: it
    # propagates, for the worker to stop and say that migrate was not run.
    due = timezone.now() - timedelta(minutes=1)
    Schedule.objects.create(name="nightly", task_name=RECORD, cron="0 3 * * *", next_fire_at=due)
    missing = OperationalError("no such table: background_tasks_task")

    def fire_one(schedule: Schedule, now: object) -> None:
        raise missing

    monkeypatch.setattr(periodic, "fire_one", fire_one)
    with pytest.raises(OperationalError) as raised:
        periodic.fire_due()

    assert raised.value is missing
    assert isolation.is_database_fault(missing) and not is_outage(missing)
    assert Schedule.objects.get().enabled


# -- log values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("app.tasks.send", "app.tasks.send"),
        ("x\nevent=task_succeeded", '"x\\nevent=task_succeeded"'),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("csi\x9b", '"csi\\x9b"'),
        ("", '""'),
        (None, "None"),
    ],
)
def test_shown__quotes_and_escapes_what_could_forge_a_key_or_a_line(
    value: object, expected: str
) -> None:
    assert str(shown(value)) == expected


def test_shown__cuts_a_huge_value_short_with_a_note() -> None:
    text = str(shown("x" * 10_000_000))

    assert len(text) < 3_000
    assert text.endswith('...(9998000 more characters)"')


@pytest.mark.parametrize("shared", [False, True], ids=["alone", "in_an_outcome_transaction"])
def test_claim__on_two_queues_quarantines_a_row_it_cannot_load(shared: bool) -> None:
    # Rows of several queues are sorted by run_at in Python: one that reads as None (a zero
    # date on MySQL/MariaDB) must not fail the claim.
    bad = make_unloadable(queue="a")
    good = make(queue="b", run_at=timezone.now() - timedelta(seconds=1))

    with transaction.atomic():
        claimed = claim_tasks("w:1:a", ["a", "b"], 2, shared=shared)

    assert [task.pk for task in claimed] == [good.pk]
    holder, error = held_by(bad)
    assert holder == QUARANTINED
    assert "cannot be run" in error
