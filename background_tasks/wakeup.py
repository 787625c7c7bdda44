"""Prompt pickup on PostgreSQL: NOTIFY when a ready task is enqueued, LISTEN in the worker.

Polling stays the fallback everywhere (and is all there is on other databases, through a
PgBouncer in transaction mode, or with psycopg2): a missed notification only delays a task
until the next poll. No session-level state other than LISTEN is used.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from django.db import connections

from .conf import app_settings
from .outage import pause_before_try

logger = logging.getLogger("background_tasks")

CHANNEL = "background_tasks"
#: Seconds a starting worker waits for its listener's first LISTEN before its first claim.
FIRST_LISTEN_WAIT = 5.0


class Alarm:
    """Wakes a waiting loop; safe to ring from signal handlers and other threads.

    ``threading.Event`` is not: its ``set()`` takes a non-reentrant lock that the interrupted
    main thread may be holding (inside ``clear()`` or ``wait()``), which would hang a worker
    on SIGTERM. ``queue.SimpleQueue.put()`` is documented as reentrant.
    """

    def __init__(self) -> None:
        self._rings: queue.SimpleQueue[None] = queue.SimpleQueue()

    def ring(self) -> None:
        self._rings.put(None)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a ring; return whether one came (consuming all)."""
        try:
            self._rings.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return False
        while True:
            try:
                self._rings.get_nowait()
            except queue.Empty:
                return True


def notify_ready(using: str, queue: str) -> None:
    """Tell listening workers that a task of ``queue`` is ready (delivered on commit)."""
    clause = notify_clause(using, queue)
    if clause is None:
        return
    sql, params = clause
    with connections[using].cursor() as cursor:
        cursor.execute(f"SELECT {sql}", params)


def notify_clause(using: str, queue: str) -> tuple[str, list[str]] | None:
    """Return the SQL expression (and its parameters) that wakes the workers of ``queue``.

    None where there is nothing to send (another database, or ``NOTIFY`` off). The expression
    can ride along in a statement that runs anyway, such as the ``RETURNING`` list of the
    ``INSERT`` of the task, which spares the enqueue a round trip of its own.
    """
    if not app_settings.NOTIFY or not _is_postgresql(using):
        return None
    return "pg_notify(%s, %s)", [CHANNEL, queue]


#: Database alias -> whether it is PostgreSQL; asked on every enqueue, and a lookup in
#: ``django.db.connections`` costs more than the rest of the answer.
_postgresql: dict[str, bool] = {}


def _is_postgresql(using: str) -> bool:
    try:
        return _postgresql[using]
    except KeyError:
        answer = _postgresql[using] = connections[using].vendor == "postgresql"
        return answer


class Listener:
    """A thread holding its own connection in LISTEN mode; rings ``wake`` on a notification."""

    def __init__(self, using: str, queues: Sequence[str], wake: Alarm) -> None:
        self.using = using
        self.queues = set(queues)
        self.wake = wake
        self._stop = threading.Event()
        self._first_try_done = threading.Event()
        self._failures = 0
        self._thread = threading.Thread(
            target=self._run, name="background_tasks-listener", daemon=True
        )

    @staticmethod
    def available(using: str) -> bool:
        connection = connections[using]
        if connection.vendor != "postgresql" or not app_settings.NOTIFY:
            return False
        # notifies(timeout=) arrived in psycopg 3.2; psycopg 2 and older 3.x poll only.
        try:
            major, minor = (int(part) for part in metadata.version("psycopg").split(".")[:2])
        except (metadata.PackageNotFoundError, ValueError):
            return False
        return (major, minor) >= (3, 2)

    def start(self, wait: float = FIRST_LISTEN_WAIT) -> None:
        """Start the thread; return once its first LISTEN worked or failed (``wait`` at most).

        So the worker's first claim comes after LISTEN: a task enqueued in between is either
        seen by that claim or announced to this listener.
        """
        self._thread.start()
        self._first_try_done.wait(wait)

    def stop(self) -> None:
        """Ask the thread to end; it closes its connection within a second."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        self._failures = 0
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as exc:
                self._first_try_done.set()
                # The same backoff as the worker's outages, restarted by each LISTEN that worked.
                pause = pause_before_try(
                    self._failures,
                    float(app_settings.OUTAGE_BACKOFF_FIRST),
                    float(app_settings.OUTAGE_BACKOFF_MAX),
                )
                self._failures += 1
                logger.warning("event=listener_error error=%r retry_in=%.1fs", exc, pause)
                self._stop.wait(pause)

    def _listen(self) -> None:
        wrapper = connections[self.using]
        raw: Any = wrapper.get_new_connection(wrapper.get_connection_params())
        try:
            raw.autocommit = True
            raw.execute(f"LISTEN {CHANNEL}")
            self._failures = 0
            if self._first_try_done.is_set():
                # Listening again after a failure: a task committed while this connection was
                # down sent its notification to nobody. One claim now finds it, not the next poll.
                self.wake.ring()
            self._first_try_done.set()
            while not self._stop.is_set():
                # notifies() waits on the socket (no polling): a notification is handed over as
                # soon as it arrives. The timeout only bounds how late a stop is noticed.
                for notification in raw.notifies(timeout=1.0):
                    if not self.queues or notification.payload in self.queues:
                        self.wake.ring()
        finally:
            raw.close()
