"""PostgreSQL LISTEN/NOTIFY: an idle worker picks up a new task without waiting for its poll."""

from __future__ import annotations

import subprocess
import threading

import pytest
from django.db import connection, transaction
from django.test import override_settings

from background_tasks.models import CompletedTask
from background_tasks.wakeup import CHANNEL, Listener
from tests.fixtures import Spawner
from tests.helpers import wait_for
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="NOTIFY is PostgreSQL's"),
]

POLL = 120.0
# Every other reason an idle worker has to wake up and claim is made far longer than PICKUP:
# its poll (--sleep), its heartbeat (which an idle worker otherwise wakes for every 10 s) and
# so its rescue window. Only a notification can explain a pickup within PICKUP seconds, however
# loaded the machine.
QUIET = {"BACKGROUND_TASKS_HEARTBEAT_INTERVAL": "600", "BACKGROUND_TASKS_RESCUE_AFTER": "1200"}
PICKUP = 30.0


def _listening_sessions() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE %s",
            [f"LISTEN {CHANNEL}%"],
        )
        return [row[0] for row in cursor.fetchall()]


def _idle_worker(spawn: Spawner) -> subprocess.Popen[str]:
    """Start a worker and return once it is idle: it has run a task and LISTENs."""
    proc = spawn("--sleep", str(POLL), env=QUIET)
    wait_for(_listening_sessions, message="the worker to LISTEN")
    # A first task, run whichever way it is found (the claim of the worker's first loop, or
    # the one the listener asks for once it listens): once it has run, the worker's claims
    # that follow it find nothing and the worker waits.
    warm_up = tasks.record("warm-up")
    wait_for(
        lambda: CompletedTask.objects.filter(task_id=warm_up.pk).exists(),
        timeout=PICKUP,
        message="the first task to finish",
    )
    return proc


def _ran(key: str) -> bool:
    return TaskRun.objects.filter(key=key).exists()


def test_notify__an_idle_worker_runs_a_new_task_long_before_its_next_poll(spawn: Spawner) -> None:
    _idle_worker(spawn)

    tasks.record("woken")

    wait_for(lambda: _ran("woken"), timeout=PICKUP, message="the pickup")


def test_notify__is_sent_on_commit_not_before(spawn: Spawner) -> None:
    _idle_worker(spawn)

    with transaction.atomic():
        tasks.record("after-commit")
        # Uncommitted: the worker cannot see the row, and PostgreSQL holds the notification.
        assert not _ran("after-commit")

    wait_for(lambda: _ran("after-commit"), timeout=PICKUP, message="the pickup")


def test_notify__a_task_enqueued_while_nobody_listened_runs_once_the_listener_is_back(
    spawn: Spawner,
) -> None:
    _idle_worker(spawn)
    with override_settings(BACKGROUND_TASKS_NOTIFY=False):
        tasks.record("unannounced")  # as if sent while the listener's connection was down

    # Cut the listener's connection: it reconnects, LISTENs again, and has the worker claim
    # once, for what it may have missed meanwhile.
    with connection.cursor() as cursor:
        for pid in _listening_sessions():
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])

    wait_for(lambda: _ran("unannounced"), timeout=PICKUP, message="the pickup")


@override_settings(BACKGROUND_TASKS_NOTIFY=False)
def test_notify__setting_off_sends_nothing() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"LISTEN {CHANNEL}")
    tasks.record("quiet")

    notifications = list(connection.connection.notifies(timeout=0.2))  # type: ignore[union-attr]

    assert notifications == []


class _Rings:
    """Stands in for the worker's Alarm: counts the rings."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def ring(self) -> None:
        with self._lock:
            self.count += 1


def _notify(queue: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, queue])


def test_listener__listens_before_start_returns_then_rings_for_its_queues_only() -> None:
    rings = _Rings()
    listener = Listener(connection.alias, ["emails"], rings)  # type: ignore[arg-type]
    listener.start()
    try:
        assert rings.count == 0
        # At once: the worker claims for the first time after start(), so LISTEN must hold by
        # then, or a task enqueued just after that claim would wait for the next poll.
        _notify("default")  # not a queue of this worker: no ring
        _notify("emails")
        # Notifications arrive in the order they were committed: by the time the second has
        # rung, the first has been read and passed over.
        wait_for(lambda: rings.count >= 1, timeout=PICKUP, message="the ring for 'emails'")

        assert rings.count == 1
    finally:
        listener.stop()
        listener.join(5)
    wait_for(lambda: not _listening_sessions(), message="the LISTEN session to end")
