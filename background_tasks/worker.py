"""The worker: claims ready tasks, runs them on threads, heartbeats, and stops cleanly.

The main thread claims only as many tasks as there are idle runner threads (a demand-sized
batch), hands them over, heartbeats and rescues tasks of lost workers. Each runner thread has
its own database connection. Signal handlers only set flags the loop reads.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TypeVar

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    connections,
    router,
)

from . import heartbeat, lifecycle, periodic, retention
from .claims import claim_tasks
from .conf import app_settings
from .execution import execute
from .models import Task
from .wakeup import Alarm, Listener

logger = logging.getLogger("background_tasks")

T = TypeVar("T")

#: Exit codes of ``process_tasks``.
EXIT_OK = 0
EXIT_FORCED = 1

_DB_ERRORS = (DatabaseError, InterfaceError)
# Errors of the connection, not of the statement: worth retrying once the database is back.
# (A DataError or IntegrityError would fail the same way for ever.)
_OUTAGE_ERRORS = (OperationalError, InterfaceError)
_MAX_OUTAGE_BACKOFF = 30.0


class Worker:
    """A worker process's loop. ``run()`` returns the process exit code."""

    def __init__(
        self,
        *,
        queues: Sequence[str] = (),
        concurrency: int = 1,
        sleep: float | None = None,
        burst: bool = False,
        max_tasks: int | None = None,
        duration: float | None = None,
        shutdown_grace: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        worker_id: str | None = None,
    ) -> None:
        self.id = worker_id or heartbeat.new_worker_id()
        self.queues = list(queues)
        self.concurrency = concurrency
        self.sleep = app_settings.POLL_INTERVAL if sleep is None else sleep
        self.burst = burst
        self.max_tasks = max_tasks
        self.duration = duration
        self.shutdown_grace = (
            app_settings.SHUTDOWN_GRACE if shutdown_grace is None else shutdown_grace
        )
        self.clock = clock
        self.claimed = 0
        self.processed = 0
        self._inbox: queue.Queue[Task | None] = queue.Queue()
        self._running: dict[int, Task] = {}
        self._lock = threading.Lock()
        self._wake = Alarm()
        self._stop_requested = False
        self._force_requested = False
        self._threads: list[threading.Thread] = []
        self._next_beat = 0.0
        self._next_schedule_check = 0.0
        self._claims_uncertain = False
        self._pruner = retention.Pruner(self.id, clock)

    # -- control ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming; a second request stops at once."""
        if self._stop_requested:
            self._force_requested = True
        self._stop_requested = True
        self._wake.ring()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request_stop()

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)

    # -- main loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped, out of time or task budget, or (burst) out of ready tasks."""
        deadline = None if self.duration is None else self.clock() + self.duration
        self._until_db_ok(lambda: heartbeat.register(self.id, self.queues, self.concurrency))
        self._until_db_ok(periodic.sync_schedules)
        self._next_beat = self.clock() + float(app_settings.HEARTBEAT_INTERVAL)
        logger.info(
            "event=worker_started worker=%s queues=%s concurrency=%s",
            self.id,
            ",".join(self.queues) or "*",
            self.concurrency,
        )
        self._threads = [
            threading.Thread(target=self._runner, name=f"background_tasks-runner-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()
        listener = self._start_listener()
        outage_backoff = 0.0
        try:
            while not self._stop_requested:
                if deadline is not None and self.clock() >= deadline:
                    break
                if (
                    self.max_tasks is not None
                    and self.claimed >= self.max_tasks
                    and not self._busy()
                ):
                    break
                try:
                    self._heartbeat_if_due()
                    self._fire_schedules_if_due()
                    self._pruner.prune_if_due()
                    if self._claims_uncertain:
                        self._release_lost_claims()
                    got_full_batch, idle = self._claim_and_dispatch()
                    outage_backoff = 0.0
                except _DB_ERRORS as exc:
                    # A claim may have committed before its reply was lost: look for it later.
                    self._claims_uncertain = True
                    outage_backoff = min(max(outage_backoff * 2, 0.5), _MAX_OUTAGE_BACKOFF)
                    logger.error(
                        "event=database_error worker=%s retry_in=%.1fs error=%r",
                        self.id,
                        outage_backoff,
                        exc,
                    )
                    self._reset_connection()
                    self._wait(outage_backoff, deadline)
                    continue
                if self.burst and idle:
                    break
                if not got_full_batch or self._free_slots() == 0:
                    self._wait(self.sleep, deadline)
        finally:
            if listener is not None:
                listener.stop()
            code = self._shut_down()
        return code

    def _start_listener(self) -> Listener | None:
        """On PostgreSQL, wake up as soon as a ready task is enqueued, not at the next poll."""
        using = router.db_for_write(Task)
        if self.burst or not Listener.available(using):
            return None
        listener = Listener(using, self.queues, self._wake)
        listener.start()
        return listener

    def _claim_and_dispatch(self) -> tuple[bool, bool]:
        """Claim for the free slots; return (filled every slot, nothing running nor ready)."""
        free = self._free_slots()
        if self.max_tasks is not None:
            free = min(free, self.max_tasks - self.claimed)
        if free <= 0:
            return True, False
        tasks = claim_tasks(self.id, self.queues, free)
        with self._lock:
            for task in tasks:
                self._running[task.pk] = task
        for task in tasks:
            self._inbox.put(task)
        self.claimed += len(tasks)
        return len(tasks) == free, not tasks and not self._busy()

    def _release_lost_claims(self) -> None:
        """Release rows held by this worker that no runner has: claims whose reply was lost.

        After a database error the worker cannot tell whether its last claim committed. Rows it
        holds without running them would stay held by a live worker, so never be rescued.
        """
        with self._lock:
            running = list(self._running)
        held = Task.objects.using(router.db_for_write(Task)).filter(locked_by=self.id)
        released = lifecycle.release(list(held.exclude(pk__in=running)), self.id)
        if released:
            logger.warning("event=lost_claims_released worker=%s count=%s", self.id, released)
        self._claims_uncertain = False

    def _free_slots(self) -> int:
        with self._lock:
            return self.concurrency - len(self._running)

    def _busy(self) -> bool:
        with self._lock:
            return bool(self._running)

    def _wait(self, seconds: float, deadline: float | None) -> None:
        if deadline is not None:
            seconds = max(0.0, min(seconds, deadline - self.clock()))
        seconds = min(seconds, max(0.0, self._next_beat - self.clock()))
        seconds = min(seconds, max(0.0, self._next_schedule_check - self.clock()))
        self._wake.wait(seconds)

    def _heartbeat_if_due(self, rescue: bool = True) -> None:
        if self.clock() < self._next_beat:
            return
        if not connection.in_atomic_block:
            # Recycle this thread's connection by CONN_MAX_AGE and health checks, as a request
            # would (never inside a caller's transaction, when a Worker runs embedded).
            close_old_connections()
        heartbeat.beat(self.id, self.queues, self.concurrency)
        if rescue:
            heartbeat.rescue_lost()
        self._next_beat = self.clock() + float(app_settings.HEARTBEAT_INTERVAL)

    def _fire_schedules_if_due(self) -> None:
        """Enqueue due cron ticks, and plan the next look for when the soonest one is due."""
        if self.clock() < self._next_schedule_check:
            return
        periodic.fire_due()
        wait = periodic.seconds_until_next_fire()
        # Capped, so that schedules added or edited in the admin are seen within a poll interval.
        wait = self.sleep if wait is None else min(wait, self.sleep)
        self._next_schedule_check = self.clock() + max(wait, 0.01)

    # -- runner threads ---------------------------------------------------------------------

    def _runner(self) -> None:
        try:
            while True:
                task = self._inbox.get()
                if task is None:
                    return
                try:
                    if not self._force_requested:
                        close_old_connections()
                        self._execute(task)
                finally:
                    with self._lock:
                        self._running.pop(task.pk, None)
                    self._wake.ring()
        finally:
            connections.close_all()

    def _execute(self, task: Task) -> None:
        try:
            execute(task, self.id, persist=self._until_db_ok)
        except Exception as raised:
            exc: Exception = raised
            # A bug outside the task body (in the library or a custom hook): record the attempt
            # as failed so the row is not left held by a live worker, and keep the thread alive.
            logger.exception("event=runner_error worker=%s task_id=%s", self.id, task.pk)
            error = "".join(traceback.format_exception(exc))
            try:
                self._until_db_ok(lambda: lifecycle.record_failure(task, self.id, error, exc))
            except Exception:
                # Left held: once this worker exits, rescue releases the row.
                logger.exception(
                    "event=outcome_not_recorded worker=%s task_id=%s", self.id, task.pk
                )
        self.processed += 1

    def _until_db_ok(self, action: Callable[[], T]) -> T:
        """Run a database action, retrying through outages so that no outcome is lost."""
        backoff = 0.5
        while True:
            try:
                return action()
            except _OUTAGE_ERRORS as exc:
                if self._force_requested:
                    raise
                logger.error(
                    "event=database_error worker=%s retry_in=%.1fs error=%r", self.id, backoff, exc
                )
                self._reset_connection()
                time.sleep(backoff)  # outage backoff: nothing to wait on but time
                backoff = min(backoff * 2, _MAX_OUTAGE_BACKOFF)

    @staticmethod
    def _reset_connection() -> None:
        for conn in connections.all(initialized_only=True):
            with contextlib.suppress(*_DB_ERRORS):
                conn.close()

    # -- shutdown ---------------------------------------------------------------------------

    def _shut_down(self) -> int:
        """Let running tasks finish up to the grace period, release the rest, unregister."""
        unstarted = self._drain_inbox()
        for _ in self._threads:
            self._inbox.put(None)
        grace_end = self.clock() + self.shutdown_grace
        while (
            self._busy_beyond(unstarted) and not self._force_requested and self.clock() < grace_end
        ):
            # Still healthy while finishing: keep the heartbeat, or others would rescue our tasks.
            try:
                self._heartbeat_if_due(rescue=False)
            except _DB_ERRORS as exc:
                logger.error("event=database_error worker=%s error=%r", self.id, exc)
            self._wake.wait(min(1.0, grace_end - self.clock(), self._next_beat - self.clock()))
        if self._force_requested:
            logger.warning("event=worker_forced_exit worker=%s", self.id)
            return EXIT_FORCED
        with self._lock:
            leftovers = list(self._running.values())
        try:
            released = lifecycle.release(leftovers, self.id)
            heartbeat.unregister(self.id)
        except _DB_ERRORS as exc:
            logger.error("event=shutdown_db_error worker=%s error=%r", self.id, exc)
            released = 0
        logger.info(
            "event=worker_stopped worker=%s processed=%s released=%s",
            self.id,
            self.processed,
            released,
        )
        if not connection.in_atomic_block:
            # Not when embedded in a caller's transaction (a Worker run in-process).
            connection.close()
        return EXIT_OK

    def _drain_inbox(self) -> list[Task]:
        """Take back tasks claimed but not yet started."""
        taken: list[Task] = []
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return taken
            if item is not None:
                taken.append(item)

    def _busy_beyond(self, unstarted: list[Task]) -> bool:
        with self._lock:
            return len(self._running) > len(unstarted)
