"""The database connections a worker holds, counted on the server (docs/production.md).

A thread-mode worker holds one connection for its main loop, one per runner thread that has
run a task, and on PostgreSQL one more for LISTEN; a ``--processes N`` supervisor holds one and
each child is a worker with one runner thread. The counts are read from the server while the
worker is idle, after every runner thread has run a task (a runner opens its connection with its
first task and keeps it).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection

from background_tasks.models import CompletedTask, Worker
from tests import dburl
from tests.fixtures import Spawner
from tests.helpers import wait_for
from tests.testapp import tasks

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite has no server to count on"),
]

APP = "bt-connection-count"  # the application_name of the worker's PostgreSQL sessions
POLL = "120"  # the worker waits idle; only the tasks below and LISTEN open connections


def _worker_url() -> str:
    url = dburl.to_url(connection.settings_dict)
    if connection.vendor != "postgresql":
        return url
    return f"{url}{'&' if '?' in url else '?'}application_name={APP}"


def _counter() -> Callable[[], int]:
    """Return a function counting the client sessions the worker opened on the server."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            sql = (
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = %s"
            )
            params: list[object] = [APP]
        else:
            # MariaDB names no client program: count every session on this database but the
            # ones open before the worker started (this test's own).
            cursor.execute("SELECT id FROM information_schema.PROCESSLIST WHERE db = DATABASE()")
            before = [row[0] for row in cursor.fetchall()]
            marks = ", ".join(["%s"] * len(before))
            sql = (
                "SELECT count(*) FROM information_schema.PROCESSLIST "
                f"WHERE db = DATABASE() AND id NOT IN ({marks})"
            )
            params = list(before)

    def count() -> int:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return int(cursor.fetchone()[0])

    return count


def _listeners() -> int:
    """Count the worker's sessions in LISTEN (PostgreSQL only)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s AND query LIKE 'LISTEN %%'",
            [APP],
        )
        return int(cursor.fetchone()[0])


def _wakeup() -> int:
    """1 for the LISTEN session on PostgreSQL (NOTIFY is on by default), else 0."""
    return 1 if connection.vendor == "postgresql" else 0


def _held_when_idle(spawn: Spawner, args: list[str], runners: int, workers: int) -> int:
    """Start a worker whose ``runners`` runner threads each run one task; return its sessions.

    ``workers``: how many Worker loops (and so LISTEN sessions) the command runs.
    """
    count = _counter()
    for _ in range(runners):
        tasks.meets_another("conn", expected=runners)
    proc = spawn(*args, "--sleep", POLL, env={"DATABASE_URL": _worker_url()})
    wait_for(lambda: Worker.objects.count() == workers, message="the workers to register")
    done = CompletedTask.objects.filter(status=CompletedTask.Status.SUCCEEDED)
    # Each task waits until all the others have started, so each ran on a runner of its own.
    wait_for(lambda: done.count() == runners, message=f"{runners} tasks to succeed")
    if connection.vendor == "postgresql":
        wait_for(lambda: _listeners() == workers, message="every worker to LISTEN")
    assert proc.poll() is None
    return count()


@pytest.mark.parametrize("threads", [1, 3])
def test_connections__a_thread_worker_holds_one_per_runner_thread_plus_its_main_loop(
    spawn: Spawner, threads: int
) -> None:
    held = _held_when_idle(spawn, ["--concurrency", str(threads)], threads, workers=1)

    assert held == threads + 1 + _wakeup()


def test_connections__a_process_supervisor_holds_one_and_each_child_is_a_one_thread_worker(
    spawn: Spawner,
) -> None:
    children = 2

    held = _held_when_idle(spawn, ["--processes", str(children)], children, workers=children)

    assert held == 1 + children * (2 + _wakeup())
