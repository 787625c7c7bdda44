"""Process mode: a supervising parent and child worker processes it can stop for good.

A thread cannot be killed, so hard time limits need a process boundary. The supervisor claims
nothing itself: it starts ``processes`` children (each an ordinary Worker running one task at a
time), watches the tasks they hold, and

- kills a child whose task overran its time limit, records that attempt as failed
  ("Timed out after N s", then retried per the task's policy) and starts a new child;
- records the task of a child that died mid-task as a failed attempt and starts a new child;
- on SIGTERM/SIGINT asks every child to stop cleanly (each finishes or releases its task within
  the grace period); a second signal makes the children exit at once.

Through a database outage it keeps enforcing time limits from the tasks it last saw held, tries
the database again with backoff (closing the broken connection), and records the attempts of
children that died meanwhile once the database is back.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from types import FrameType
from typing import Any

from django.db import DatabaseError, InterfaceError, connection, connections, router
from django.utils import timezone

from . import __version__, isolation, lifecycle, liveness, logs, recording
from .child import run_child
from .exceptions import TaskTimedOut, WorkerLost
from .exit_codes import EXIT_DATABASE_UNAVAILABLE, EXIT_MEMORY_LIMIT, EXIT_NOT_MIGRATED
from .models import Task
from .options import options_of
from .outage import Outage, is_missing_table
from .wakeup import Alarm

logger = logging.getLogger("background_tasks")

CHECK_INTERVAL = 0.25
FORCED_STOP = "The worker was stopped at once by a second stop signal while running this task."
DIED = "The worker process running this task exited unexpectedly (exit code {code})."
#: A child that dies sooner than this after its start is restarted only after a growing pause.
CRASH_WINDOW = 5.0
MAX_RESTART_DELAY = 60.0


def time_limit_of(task: Task) -> float | None:
    """Return the task's hard time limit in seconds: its own ``timeout``, else MAX_RUN_TIME."""
    return options_of(task).time_limit


@dataclass
class Child:
    worker_id: str
    process: multiprocessing.process.BaseProcess
    reaped: bool = False
    started_at: float = field(default_factory=time.monotonic)
    died_at: float = 0.0
    restart_at: float | None = None
    kill_reason: dict[int, str] = field(default_factory=dict)


class Supervisor:
    """Runs and watches ``processes`` child workers; ``run()`` returns the exit code."""

    def __init__(
        self,
        *,
        processes: int,
        worker_options: dict[str, Any],
        log_std: bool = False,
        verbosity: int | None = None,
    ) -> None:
        self.processes = processes
        self.worker_options = worker_options
        self.log_std = log_std
        # The children set their logging up as the command did; None: they leave it to LOGGING.
        self.verbosity = verbosity
        self.started = 0
        self.children: list[Child] = []
        self.restarts = 0
        self._stop_signals = 0
        self._wake = Alarm()
        self._context = multiprocessing.get_context("spawn")
        self._restart_delay = 0.0
        self._outage = Outage("supervisor")
        self._next_db_try = 0.0
        # The tasks children held at the last look, for time limits while the database is down.
        self._held: list[Task] = []
        self._unrecorded: list[Child] = []
        self._exit_code = 0

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_signals += 1
        self._wake.ring()

    def request_stop(self) -> None:
        self._on_signal(signal.SIGTERM, None)

    def _start_child(self) -> Child:
        worker_id = liveness.new_worker_id() + f":child{self.started}"
        self.started += 1
        process = self._context.Process(
            target=run_child,
            args=(worker_id, self.worker_options, self.log_std, self.verbosity),
            name=f"background_tasks-{worker_id}",
        )
        process.start()
        logger.info("event=child_started worker=%s pid=%s", worker_id, process.pid)
        return Child(worker_id, process)

    def run(self) -> int:
        logger.info(
            "event=supervisor_started version=%s database=%s queues=%s processes=%s",
            __version__,
            logs.database_label(router.db_for_write(Task)),
            ",".join(self.worker_options.get("queues") or ()) or "*",
            self.processes,
        )
        # Children open their own connections; the parent's must not be shared with them.
        connections.close_all()
        self.children = [self._start_child() for _ in range(self.processes)]
        forwarded = 0
        while True:
            if self._stop_signals > forwarded:
                forwarded = self._stop_signals
                self._forward_stop()
            stopping = forwarded > 0
            for index, child in enumerate(self.children):
                if not child.process.is_alive():
                    self._reap(child)
                    code = child.process.exitcode
                    if code in (EXIT_NOT_MIGRATED, EXIT_DATABASE_UNAVAILABLE) and not stopping:
                        # No tables, or (--burst) no database: every new child would end the
                        # same way, so stop them all and exit with the child's code.
                        self._exit_code = code
                        self._stop_signals = max(self._stop_signals, 1)
                        self._wake.ring()
                    if not stopping and self._should_replace(child) and self._may_restart(child):
                        self.restarts += 1
                        self.children[index] = self._start_child()
            if all(not c.process.is_alive() for c in self.children) and (
                stopping or not any(self._should_replace(c) for c in self.children)
            ):
                break
            if self._unrecorded and self._database_may_be_tried():
                self._record_dead_children()
            if not stopping:
                self._enforce_time_limits()
            self._wake.wait(CHECK_INTERVAL)
        if self._unrecorded:
            self._record_dead_children()
        connections.close_all()
        logger.info("event=supervisor_stopped restarts=%s", self.restarts)
        return 1 if forwarded > 1 else self._exit_code

    @staticmethod
    def _should_replace(child: Child) -> bool:
        """Replace children that died or were killed, not ones that ended their work cleanly.

        A child ends by itself with exit code 0 under --burst, --duration or --max-tasks.
        """
        return child.process.exitcode != 0

    def _may_restart(self, child: Child) -> bool:
        """Back off when children die right after they start (a crash loop, e.g. no database)."""
        now = time.monotonic()
        if child.restart_at is None:
            # A child the supervisor killed for overrunning, or one that stopped to be recycled
            # for memory, is no crash: replace it at once.
            crashed_at_start = (
                not child.kill_reason
                and child.process.exitcode != EXIT_MEMORY_LIMIT
                and child.died_at - child.started_at < CRASH_WINDOW
            )
            self._restart_delay = (
                min(max(self._restart_delay * 2, 1.0), MAX_RESTART_DELAY)
                if crashed_at_start
                else 0.0
            )
            child.restart_at = now + self._restart_delay
            if crashed_at_start:
                logger.error(
                    "event=child_crash_loop worker=%s restart_in=%.0fs",
                    child.worker_id,
                    self._restart_delay,
                )
        return now >= child.restart_at

    def _forward_stop(self) -> None:
        for child in self.children:
            if child.process.is_alive() and child.process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signal.SIGTERM)

    def _reap(self, child: Child) -> None:
        """Join a dead child, once, and record the attempt it left behind."""
        child.process.join()
        if child.reaped:
            return
        child.reaped = True
        child.died_at = time.monotonic()
        code = child.process.exitcode
        if code:
            logger.warning("event=child_exited worker=%s exit_code=%s", child.worker_id, code)
        self._unrecorded.append(child)
        if self._database_may_be_tried():
            self._record_dead_children()

    def _record_dead_children(self) -> None:
        """Record the tasks dead children still hold as failed attempts; retried after outages."""
        for child in list(self._unrecorded):
            code = child.process.exitcode
            try:
                using = router.db_for_write(Task)
                held = list(
                    Task.objects.using(using)
                    .filter(locked_by=child.worker_id)
                    .values_list("id", flat=True)
                )
                # One row at a time: a row that cannot be loaded or recorded is quarantined and
                # the others are still recorded (see isolation.py).
                for task in isolation.load_held(held, child.worker_id, using):
                    reason = child.kill_reason.get(task.pk) or (
                        FORCED_STOP if self._stop_signals > 1 else DIED.format(code=code)
                    )
                    error = (
                        TaskTimedOut(reason) if task.pk in child.kill_reason else WorkerLost(reason)
                    )
                    recording.record_or_quarantine(
                        task,
                        child.worker_id,
                        partial(lifecycle.record_failure, task, child.worker_id, reason, error),
                        "The attempt of the dead worker process",
                    )
                liveness.unregister(child.worker_id)
            except (DatabaseError, InterfaceError) as exc:
                if is_missing_table(exc):
                    self._unrecorded.clear()  # no tables, so no rows to record
                    return
                # Kept for the next try; if this supervisor stops first, the rescue of lost
                # workers releases the rows.
                if not self._outage.down:
                    logger.error("event=reap_failed worker=%s error=%r", child.worker_id, exc)
                self._database_failed(exc)
                return
            self._database_ok()
            self._unrecorded.remove(child)

    def _enforce_time_limits(self) -> None:
        ids = {c.worker_id: c for c in self.children if c.process.is_alive()}
        if self._database_may_be_tried():
            try:
                self._held = list(Task.objects.filter(locked_by__in=list(ids)))
            except (DatabaseError, InterfaceError) as exc:
                if is_missing_table(exc):
                    return  # the children stop with exit code 5, and so will the supervisor
                # Go on with the tasks last seen held: a child cannot finish one (nor claim
                # another) while the database is down, so they are still its tasks.
                if not self._outage.down:
                    logger.error("event=time_limit_check_failed error=%r", exc)
                self._database_failed(exc)
            else:
                self._database_ok()
        now = timezone.now()
        for task in self._held:
            child = ids.get(task.locked_by or "")
            limit = time_limit_of(task)
            if (
                child is None
                or task.pk in child.kill_reason
                or limit is None
                or task.locked_at is None
                or _elapsed(task.locked_at, now) <= limit
            ):
                continue
            child.kill_reason[task.pk] = (
                f"Timed out after {limit:g} s (hard time limit); the process was killed."
            )
            logger.error(
                "event=task_timed_out task=%s task_id=%s worker=%s limit=%gs",
                task.task_name,
                task.pk,
                child.worker_id,
                limit,
            )
            child.process.kill()
            child.process.join()

    def _database_may_be_tried(self) -> bool:
        """Tell whether the outage backoff allows a database query now."""
        return time.monotonic() >= self._next_db_try

    def _database_failed(self, exc: BaseException) -> None:
        """Close the broken connection and back off before the next database query.

        The caller logs the first error of an outage (``self._outage.down`` still False) under
        its own event name; the later ones are the outage's lines.
        """
        self._next_db_try = time.monotonic() + self._outage.failed(exc)
        with contextlib.suppress(DatabaseError, InterfaceError):
            connection.close()

    def _database_ok(self) -> None:
        self._outage.succeeded()
        self._next_db_try = 0.0


def _elapsed(since: datetime, now: datetime) -> float:
    return (now - since).total_seconds()


__all__ = ["Supervisor", "time_limit_of"]
