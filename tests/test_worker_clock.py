"""The ``Worker`` loop in process, through its clock seam: no real waiting, no sleeps.

``Worker(clock=...)`` reads time from a fake clock, and its alarm is replaced by one that
records each wait and moves the fake clock on by it, so a run of many (fake) seconds takes
milliseconds and every wait the loop chose can be checked exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from django.db import OperationalError
from django.test import override_settings

from background_tasks import liveness, outage
from background_tasks import worker as worker_module
from background_tasks.models import Task
from background_tasks.worker import Worker
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

START = 1000.0


class FakeTime:
    """A monotonic clock that only moves when the worker waits."""

    def __init__(self) -> None:
        self.now = START
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now


class FakeAlarm:
    """Stands in for ``wakeup.Alarm``: a wait is recorded and passes at once on the fake clock."""

    def __init__(self, time: FakeTime) -> None:
        self.time = time

    def ring(self) -> None:
        pass

    def wait(self, timeout: float) -> bool:
        self.time.waits.append(round(timeout, 6))
        self.time.now += max(timeout, 0.0)
        return False


@pytest.fixture
def fake_time() -> Iterator[FakeTime]:
    # No LISTEN thread (it would wake the real alarm), no pruning or outage jitter to vary.
    with override_settings(
        BACKGROUND_TASKS_NOTIFY=False,
        BACKGROUND_TASKS_HEARTBEAT_INTERVAL=4,
        BACKGROUND_TASKS_PRUNE_INTERVAL=10_000,
        BACKGROUND_TASKS_OUTAGE_BACKOFF_FIRST=1,
        BACKGROUND_TASKS_OUTAGE_BACKOFF_MAX=100,
    ):
        yield FakeTime()


def worker_on(time: FakeTime, **options: object) -> Worker:
    worker = Worker(clock=time, **options)  # type: ignore[arg-type]
    worker._wake = FakeAlarm(time)  # type: ignore[assignment]
    return worker


def test_idle_worker__waits_the_poll_interval_cut_short_by_the_next_heartbeat(
    fake_time: FakeTime,
) -> None:
    # Poll every 3 s, heartbeat every 4 s, stop after 10 s: each wait ends at whichever of the
    # next poll, the next heartbeat, the next cron check or the deadline comes first.
    code = worker_on(fake_time, sleep=3, duration=10).run()

    assert code == 0
    assert fake_time.waits == [3, 1, 2, 2, 1, 1]


def test_idle_worker__heartbeats_at_start_and_then_every_heartbeat_interval(
    fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    beats: list[float] = []
    real_beat = liveness.beat

    def beat(*args: object) -> None:
        beats.append(fake_time.now - START)
        real_beat(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(liveness, "beat", beat)

    worker_on(fake_time, sleep=3, duration=10).run()

    assert beats == [0, 4, 8]


def test_duration__the_worker_stops_at_its_deadline_and_never_waits_past_it(
    fake_time: FakeTime,
) -> None:
    code = worker_on(fake_time, sleep=7, duration=10).run()

    assert code == 0
    assert fake_time.now == START + 10
    assert sum(fake_time.waits) == 10


def test_max_tasks__claims_exactly_that_many_then_stops_and_leaves_the_rest(
    fake_time: FakeTime,
) -> None:
    for key in ("a", "b", "c"):
        tasks.record(key)

    worker = worker_on(fake_time, sleep=3, max_tasks=2, concurrency=2)
    code = worker.run()

    assert code == 0
    assert worker.claimed == 2 and worker.processed == 2
    assert Task.objects.count() == 1
    assert Task.objects.get().locked_by is None


def test_burst__runs_what_is_ready_then_stops(fake_time: FakeTime) -> None:
    tasks.record("a")

    worker = worker_on(fake_time, sleep=3, burst=True)
    code = worker.run()

    assert code == 0
    assert worker.processed == 1
    assert Task.objects.count() == 0


def test_burst__an_empty_queue_ends_the_run_without_a_single_wait(fake_time: FakeTime) -> None:
    code = worker_on(fake_time, sleep=3, burst=True).run()

    assert code == 0
    assert fake_time.waits == []


def test_outage__pauses_double_each_failed_claim_and_are_not_cut_short_by_the_heartbeat(
    fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    unjittered = outage.pause_before_try
    monkeypatch.setattr(
        outage, "pause_before_try", lambda step, first, cap: unjittered(step, first, cap, lambda: 0)
    )
    real_claim = worker_module.claim_tasks
    failures = iter([True, True, True])

    def claim(*args: object) -> list[Task]:
        if next(failures, False):
            raise OperationalError("server closed the connection unexpectedly")
        return real_claim(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(worker_module, "claim_tasks", claim)

    with caplog.at_level(logging.INFO, logger="background_tasks"):
        code = worker_on(fake_time, sleep=3, duration=12).run()

    assert code == 0
    # 1 + 2 + 4 s of outage pauses (the 4 s one outlasts the 4 s heartbeat interval), then
    # polling again: the wait to the next heartbeat at 8 s, then to the deadline.
    assert fake_time.waits[:3] == [1, 2, 4]
    assert sum(fake_time.waits) == 12
    assert "event=database_unavailable " in caplog.text
    assert "event=database_available " in caplog.text
