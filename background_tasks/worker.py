"""The worker: claims ready tasks, runs them on threads, heartbeats, and stops cleanly.

The main thread claims only as many tasks as there are idle runner threads (a demand-sized
batch), hands them over, heartbeats and rescues tasks of lost workers. Each runner thread has
its own database connection and, while busy, claims its own next task in the transaction of
the outcome of the last (runner.py). Signal handlers only set flags the loop reads.

Over 400 lines on purpose: it is one class whose loop, runner threads and shutdown share the
same state (free slots, the inbox, the running set, the claim budget, the stop flags), and
cutting the class would spread that state over modules. What is not that state is elsewhere:
a runner thread's work (runner.py), the start-up wait (database_wait.py), exit codes
(exit_codes.py), outage policy (outage.py), recording (recording.py).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from django.db import (
    DatabaseError,
    InterfaceError,
    connection,
    connections,
    router,
)
from django.db.models import Q

from . import __version__, lifecycle, liveness, logs, periodic, retention
from .claims import claim_tasks
from .conf import app_settings
from .connection_reuse import refresh_connections
from .exit_codes import (
    BURST_HINT,
    EXIT_DATABASE_UNAVAILABLE,
    EXIT_FORCED,
    EXIT_MEMORY_LIMIT,
    EXIT_NOT_MIGRATED,
    EXIT_OK,
    EXIT_RUNNER_ENDED,
)
from .memory import resident_mb
from .models import Task
from .outage import Outage, is_missing_table, is_outage, pause_before_try
from .runner import Runner, write_held_by_main
from .wakeup import Alarm, Listener

if TYPE_CHECKING:
    from .claimed_ahead import ClaimedAhead

logger = logging.getLogger("background_tasks")

T = TypeVar("T")

_DB_ERRORS = (DatabaseError, InterfaceError)
_NOT_MIGRATED_HINT = "run 'python manage.py migrate' first"


class _StopWaiting(Exception):
    """The worker must stop instead of waiting longer for the database."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


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
        max_memory: float | None = None,
        batch_size: int | None = None,
        batch_window: float | None = None,
    ) -> None:
        self.id = worker_id or liveness.new_worker_id()
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
        self.max_memory = app_settings.MAX_MEMORY if max_memory is None else max_memory
        self.batch_size = int(app_settings.BATCH_SIZE if batch_size is None else batch_size)
        self.batch_window = float(
            app_settings.BATCH_WINDOW if batch_window is None else batch_window
        )
        self.claimed = 0
        self.processed = 0
        self._inbox: queue.Queue[Task | None] = queue.Queue()
        self._running: dict[int, Task] = {}
        #: Tasks whose outcome could not be recorded at all (runner.record_runner_error): held
        #: until this worker is gone and the rescue records the attempt as failed.
        self._unrecorded: list[Task] = []
        #: Runner threads waiting for a task from the main thread (its claims are for them).
        self._idle_runners = concurrency
        self._runners: list[Runner] = []
        #: Threads sending the signals of outcomes the main thread wrote (BATCH_SIZE > 1).
        self._signal_threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        # Runner threads claim their next task themselves (runner.py): the main thread's
        # release of lost claims waits for the claims in flight, and holds new ones back.
        self._gate = threading.Condition(self._lock)
        self._runner_claims = 0
        self._releasing = False
        self._closing = False
        self._wake = Alarm()
        self._stop_requested = False
        self._force_requested = False
        self._threads: list[threading.Thread] = []
        self._next_beat = 0.0
        self._next_schedule_check = 0.0
        self._claims_uncertain = False
        self._outage = Outage(self.id, clock)
        self._exit_code = EXIT_OK
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
        try:
            self._until_db_ok(
                lambda: liveness.register(self.id, self.queues, self.concurrency), waiting=True
            )
            self._until_db_ok(periodic.sync_schedules, waiting=True)
        except _StopWaiting as stop:
            logger.info("event=worker_stopped worker=%s processed=0 released=0", self.id)
            return stop.code
        except _DB_ERRORS as exc:
            if not is_missing_table(exc):
                raise
            self._log_not_migrated(exc)
            return EXIT_NOT_MIGRATED
        # The first loop heartbeats and rescues at once: rows left held by workers that died
        # (or by nobody) are released before this worker claims, not one interval later.
        self._next_beat = self.clock()
        self._runners = [Runner(self) for _ in range(self.concurrency)]
        self._threads = [
            threading.Thread(target=runner.run, name=f"background_tasks-runner-{i}", daemon=True)
            for i, runner in enumerate(self._runners)
        ]
        for thread in self._threads:
            thread.start()
        listener = self._start_listener()
        logger.info(
            "event=worker_started version=%s worker=%s database=%s queues=%s concurrency=%s "
            "batch_size=%s poll_interval=%gs wakeup=%s",
            __version__,
            self.id,
            logs.database_label(router.db_for_write(Task)),
            ",".join(self.queues) or "*",
            self.concurrency,
            self.batch_size,
            self.sleep,
            "listen" if listener is not None else "poll",
        )
        errors_in_a_row = 0
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
                if self._over_memory_limit() and not self._busy():
                    break
                try:
                    self._heartbeat_if_due()
                    self._fire_schedules_if_due()
                    self._pruner.prune_if_due()
                    self._write_overdue_outcomes()
                    if self._claims_uncertain:
                        self._release_lost_claims()
                    got_full_batch, idle = self._claim_and_dispatch()
                    self._outage.succeeded()
                    errors_in_a_row = 0
                except _DB_ERRORS as exc:
                    # A claim may have committed before its reply was lost: look for it later.
                    self._claims_uncertain = True
                    self._reset_connection()
                    if is_missing_table(exc):
                        self._log_not_migrated(exc)
                        self._exit_code = EXIT_NOT_MIGRATED
                        break
                    if is_outage(exc):
                        pause = self._outage.failed(exc)
                        if self._burst_gives_up():
                            break
                    else:
                        # A statement the database refused, not the connection: the same
                        # patience, but every occurrence is worth a line.
                        pause = pause_before_try(
                            errors_in_a_row,
                            float(app_settings.OUTAGE_BACKOFF_FIRST),
                            float(app_settings.OUTAGE_BACKOFF_MAX),
                        )
                        errors_in_a_row += 1
                        logger.error(
                            "event=database_error worker=%s retry_in=%.1fs error=%r",
                            self.id,
                            pause,
                            exc,
                        )
                    # Not capped by the heartbeat or the schedule check: both are overdue
                    # precisely because the database failed, and would make this a busy loop.
                    self._wait_out(pause, deadline)
                    continue
                if self.burst and idle and not self._claims_uncertain:
                    # Not while a runner's claim may have committed unseen: its rows, held by
                    # nobody, are released and claimed again first.
                    break
                if not got_full_batch or self._free_slots() == 0:
                    self._wait(self.sleep, deadline)
        finally:
            if listener is not None:
                listener.stop()
            code = self._shut_down()
        return code if code != EXIT_OK else self._exit_code

    def _log_not_migrated(self, exc: BaseException) -> None:
        logger.error(
            "event=tables_missing worker=%s error=%r hint=%r", self.id, exc, _NOT_MIGRATED_HINT
        )

    def _burst_gives_up(self) -> bool:
        """Under --burst, give up once the database has been unreachable for too long."""
        limit = float(app_settings.BURST_OUTAGE_LIMIT)
        if not self.burst or self._outage.down_for() < limit:
            return False
        logger.error(
            "event=database_unavailable_gave_up worker=%s waited=%.1fs limit=%gs hint=%r",
            self.id,
            self._outage.down_for(),
            limit,
            BURST_HINT,
        )
        self._exit_code = EXIT_DATABASE_UNAVAILABLE
        return True

    def _over_memory_limit(self) -> bool:
        """Stop claiming once resident memory passes --max-memory, to be restarted fresh.

        Checked between claims; running tasks finish first (the worker exits when none is left).
        """
        if self._exit_code == EXIT_MEMORY_LIMIT:
            return True
        if self.max_memory is None:
            return False
        used = resident_mb()
        if used is None or used <= self.max_memory:
            return False
        logger.warning(
            "event=memory_limit_reached worker=%s resident_mb=%.0f limit_mb=%g",
            self.id,
            used,
            self.max_memory,
        )
        if self._exit_code == EXIT_OK:  # a database or migration problem says more
            self._exit_code = EXIT_MEMORY_LIMIT
        return True

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
        if self._exit_code == EXIT_MEMORY_LIMIT:
            return False, False  # over --max-memory: claim nothing, wait for the running tasks
        with self._lock:
            free = self._idle_runners
            if self.max_tasks is not None:
                free = min(free, self.max_tasks - self.claimed)
            if free <= 0:
                # No idle runner, or the --max-tasks budget is spent: wait to be woken (a
                # runner that goes idle rings), not loop again at once.
                return False, False
            self.claimed += free  # reserved: runner threads claim too
        tasks: list[Task] = []
        try:
            tasks = claim_tasks(self.id, self.queues, free)
        finally:
            with self._lock:
                self.claimed -= free - len(tasks)
                self._idle_runners -= len(tasks)
                for task in tasks:
                    self._running[task.pk] = task
        for task in tasks:
            self._inbox.put(task)
        return len(tasks) == free, not tasks and not self._busy()

    def _release_lost_claims(self) -> int:
        """Release rows held by this worker that no runner has: claims whose reply was lost.

        After a database error the worker cannot tell whether its last claim committed. Rows it
        holds without running them would stay held by a live worker, so never be rescued.
        """
        with self._gate:
            self._releasing = True
            if not self._gate.wait_for(lambda: self._runner_claims == 0, timeout=1.0):
                # A runner's claim is still in flight (a slow database): look again next loop.
                self._releasing = False
                self._gate.notify_all()
                return 0
            self._claims_uncertain = False
            # Rows whose outcome could not be recorded are not lost claims: their attempt ran,
            # and the rescue counts it once this worker is gone.
            running = [*self._running.values(), *self._unrecorded]
        try:
            held = Task.objects.using(router.db_for_write(Task)).filter(locked_by=self.id)
            # By claim, not by id: the lost claim may have taken again the row of a retry due
            # at once, whose attempt is still being recorded (that task is running yet).
            ran = Q()
            for task in running:
                ran |= Q(pk=task.pk, locked_at=task.locked_at)
            lost = held.exclude(ran) if running else held
            released = lifecycle.release(list(lost.only("id", "locked_at")), self.id)
        except BaseException:
            self._claims_uncertain = True
            raise
        finally:
            with self._gate:
                self._releasing = False
                self._gate.notify_all()
        if released:
            logger.warning("event=lost_claims_released worker=%s count=%s", self.id, released)
        return released

    # -- what runner threads ask (runner.py) ------------------------------------------------

    def _claiming(self) -> bool:
        """Return True while the worker takes new tasks: not stopping, under --max-memory."""
        return not (
            self._stop_requested
            or self._closing
            or self._force_requested
            or self._exit_code == EXIT_MEMORY_LIMIT
        )

    def _reserve_claims(self, wanted: int) -> int:
        """Let a runner claim up to ``wanted`` tasks, if the worker may; return how many.

        A runner that got a number above 0 calls ``_claimed_by_runner`` with it once its claim
        is over, whatever the claim got.
        """
        if not self._claiming():
            return 0
        if self.max_memory is not None and self._over_memory_limit():
            return 0
        with self._gate:
            if not self._claiming() or self._releasing:
                return 0
            if self.max_tasks is not None:
                wanted = min(wanted, self.max_tasks - self.claimed)
            if wanted <= 0:
                return 0
            self.claimed += wanted
            self._runner_claims += 1
            return wanted

    def _claimed_by_runner(
        self, tasks: list[Task], reserved: int, ahead: ClaimedAhead | None = None
    ) -> None:
        """Take note of what a runner claim of ``reserved`` tasks got (nothing if it failed).

        ``ahead``: the runner's tasks claimed ahead, which get these in the same lock section,
        so that the shutdown never sees them running without seeing them there.
        """
        with self._gate:
            self.claimed -= reserved - len(tasks)
            for task in tasks:
                self._running[task.pk] = task
            if ahead is not None:
                ahead.add(tasks)
            self._runner_claims -= 1
            self._gate.notify_all()

    def _finished(self, task: Task) -> None:
        """A runner is done with ``task``, and its outcome is written (or it never started)."""
        with self._lock:
            # This very claim only: the row may have been claimed again already (a retry due
            # at once), and that claim is another Task object.
            if self._running.get(task.pk) is task:
                del self._running[task.pk]

    def _outcome_not_recorded(self, task: Task) -> None:
        """Even the failure of ``task``'s attempt could not be written: its row stays held."""
        with self._lock:
            self._unrecorded.append(task)

    def _outcomes_written(self, tasks: list[Task]) -> None:
        """Held outcomes (BATCH_SIZE > 1) of these tasks are written: they are done."""
        for task in tasks:
            self._finished(task)

    def _runner_ended(self) -> None:
        """A runner thread ended for good (runner.py): stop, to be restarted whole."""
        if self._exit_code == EXIT_OK:
            self._exit_code = EXIT_RUNNER_ENDED
        self._stop_requested = True  # not request_stop(): a stop under way must not turn forced
        self._wake.ring()

    def _runner_idle(self) -> None:
        """A runner has no task left: the main thread claims for it."""
        with self._lock:
            self._idle_runners += 1
        self._wake.ring()

    def _write_overdue_outcomes(self) -> None:
        """Write the outcomes runners have held longer than BATCH_WINDOW (busy with a task),
        and release the tasks of a batch waiting behind a task that ran longer than that."""
        using = router.db_for_write(Task)
        for runner in self._runners:
            write_held_by_main(self, runner, using, self.batch_window)
            self._release_behind_long_task(runner)

    def _release_behind_long_task(self, runner: Runner) -> None:
        """Release, unstarted and uncounted, the tasks ``runner`` claimed ahead for its batch,
        once the task before them has run BATCH_WINDOW or more: another runner or worker can
        take them instead of waiting for it (claimed_ahead.py)."""
        waiting = runner.ahead.take_if_behind(self.batch_window)
        if not waiting:
            return
        try:
            lifecycle.release(waiting, self.id)
        except _DB_ERRORS:
            # Held by nobody running them: the loop looks for them once the database answers
            # again, and releases them (after its pause, should this be an outage).
            self._claims_uncertain = True
            raise
        finally:
            with self._lock:
                self.claimed -= len(waiting)  # never run: --max-tasks may claim them again
            for task in waiting:
                self._finished(task)
        logger.debug(
            "event=batch_released worker=%s task_ids=%s",
            self.id,
            ",".join(str(task.pk) for task in waiting),
        )
        self._wake.ring()  # claim again for whatever is idle

    def _write_all_held_outcomes(self) -> None:
        """At shutdown: hold no more, and write every outcome still held (their tasks ended).

        One try each: what cannot be written now is written by its runner at the end of its
        task, or else handed back with the tasks still running when the grace period ends.
        """
        using = router.db_for_write(Task)
        # Every runner first, so that none goes on holding outcomes back should a write below
        # be interrupted (a KeyboardInterrupt in a Worker run embedded): each writes its own.
        for runner in self._runners:
            runner.held.close()
        for runner in self._runners:
            try:
                write_held_by_main(self, runner, using, 0.0)
            except _DB_ERRORS as exc:
                logger.error("event=held_outcomes_not_written worker=%s error=%r", self.id, exc)

    def _after_commit_elsewhere(self, pending: list[Callable[[], None]]) -> None:
        """Send the signals of outcomes the main thread wrote, from a thread of their own."""

        def send() -> None:
            try:
                lifecycle.after_commit(pending)
            except BaseException:
                logger.exception("event=signal_receiver_failed worker=%s", self.id)

        thread = threading.Thread(target=send, name="background_tasks-signals", daemon=True)
        with self._lock:
            self._signal_threads = [t for t in self._signal_threads if t.is_alive()]
            self._signal_threads.append(thread)
        thread.start()

    def _held_outcomes_due(self) -> float | None:
        """When the main thread next has held outcomes to write or a batch to release."""
        window = self.batch_window
        dues = [due for r in self._runners if (due := r.held.due_at(window)) is not None]
        dues += [due for r in self._runners if (due := r.ahead.due_at(window)) is not None]
        return min(dues, default=None)

    def _free_slots(self) -> int:
        with self._lock:
            return self._idle_runners

    def _busy(self) -> bool:
        with self._lock:
            return bool(self._running)

    def _wait_out(self, seconds: float, deadline: float | None) -> None:
        """Pause for an outage: a stop request or the deadline ends the pause, nothing else."""
        if deadline is not None:
            seconds = max(0.0, min(seconds, deadline - self.clock()))
        self._wake.wait(seconds)

    def _wait(self, seconds: float, deadline: float | None) -> None:
        if deadline is not None:
            seconds = max(0.0, min(seconds, deadline - self.clock()))
        seconds = min(seconds, max(0.0, self._next_beat - self.clock()))
        seconds = min(seconds, max(0.0, self._next_schedule_check - self.clock()))
        due = self._held_outcomes_due()
        if due is not None:
            seconds = min(seconds, max(0.0, due - self.clock()))
        self._wake.wait(seconds)

    def _heartbeat_if_due(self, rescue: bool = True) -> None:
        if self.clock() < self._next_beat:
            return
        # Replace a broken or obsolete connection (never inside a caller's transaction, when a
        # Worker runs embedded).
        refresh_connections()
        liveness.beat(self.id, self.queues, self.concurrency)
        if rescue:
            liveness.rescue_lost()
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

    def _until_db_ok(self, action: Callable[[], T], *, waiting: bool = False) -> T:
        """Run a database action, retrying through outages so that no outcome is lost.

        ``waiting`` is for the main thread before the loop starts: a stop request, or under
        --burst the outage limit, ends the wait by raising ``_StopWaiting``.
        """
        while True:
            try:
                result = action()
            except _DB_ERRORS as exc:
                if not is_outage(exc) or self._force_requested:
                    raise
                pause = self._outage.failed(exc)
                self._reset_connection()
                if not waiting:
                    time.sleep(pause)  # a runner thread has nothing to wait on but time
                    continue
                if self._burst_gives_up():
                    raise _StopWaiting(self._exit_code) from None
                self._wake.wait(pause)
                if self._stop_requested:
                    raise _StopWaiting(EXIT_FORCED if self._force_requested else EXIT_OK) from None
                continue
            self._outage.succeeded()
            return result

    @staticmethod
    def _reset_connection() -> None:
        for conn in connections.all(initialized_only=True):
            with contextlib.suppress(*_DB_ERRORS):
                conn.close()

    # -- shutdown ---------------------------------------------------------------------------

    def _shut_down(self) -> int:
        """Let running tasks finish up to the grace period, release the rest, unregister."""
        with self._lock:
            self._closing = True  # runner threads claim no more, nor hold outcomes back
        self._write_all_held_outcomes()
        unstarted = self._drain_inbox()
        if self._stop_requested and not self._force_requested:
            with self._lock:
                running = len(self._running) - len(unstarted)
            self._announce_stop(running)
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
                self._reset_connection()
                self._next_beat = self.clock() + self._outage.failed(exc)
            self._wake.wait(min(1.0, grace_end - self.clock(), self._next_beat - self.clock()))
        # The outcomes of tasks that finished while others still ran: a forced stop too.
        self._write_all_held_outcomes()
        if self._force_requested:
            logger.warning("event=worker_forced_exit worker=%s", self.id)
            return EXIT_FORCED
        with self._gate:
            # A runner's claim still in flight (begun before _closing) registers its task when
            # it ends: wait for it, or that row would be left held by nobody.
            while self._runner_claims and not self._force_requested:
                self._gate.wait(1.0)
            leftovers = list(self._running.values())
            # Tasks a runner claimed and has not started (it is still busy with a longer one,
            # or releasing them): released uncounted like the inbox's, not handed back. Read in
            # the lock section of the running ones: a runner takes its next task out of its
            # queue under this lock (runner.Runner._take_next).
            unstarted += [task for runner in self._runners for task in runner.queued()]
        unstarted_ids = {task.pk for task in unstarted}
        try:
            released = lifecycle.release(unstarted, self.id)
            released += lifecycle.hand_back(
                [task for task in leftovers if task.pk not in unstarted_ids], self.id
            )
            if self._claims_uncertain:
                # A claim whose reply was lost, that the loop ended before looking for: held
                # by nobody, it would wait for a rescue, which counts an attempt never run.
                released += self._release_lost_claims()
            liveness.unregister(self.id)
        except _DB_ERRORS as exc:
            logger.error("event=shutdown_db_error worker=%s error=%r", self.id, exc)
            released = 0
        if not self._wait_for_signal_threads():
            logger.warning("event=worker_forced_exit worker=%s", self.id)
            return EXIT_FORCED
        logger.info(
            "event=worker_stopped worker=%s processed=%s released=%s",
            self.id,
            self.processed,
            released,
        )
        if not connection.in_atomic_block:
            # Not when embedded in a caller's transaction (a Worker run in-process).
            with contextlib.suppress(*_DB_ERRORS):
                connection.close()
        return EXIT_OK

    def _wait_for_signal_threads(self) -> bool:
        """Wait until the signals of the outcomes the main thread wrote are sent; return False
        if a second stop request ended the wait.

        Not bounded by the grace period: it is for running tasks, and may be spent already (an
        outcome written as it ends would never be signalled, its thread cut off as the
        process exits). Receivers are short, as they are in a runner thread.
        """
        with self._lock:
            threads = [thread for thread in self._signal_threads if thread.is_alive()]
        if not threads:
            return True
        logger.info(
            "event=worker_stopping worker=%s stopping: waiting for the receivers of the signals "
            "of %s outcome write(s); press Ctrl-C again to stop now",
            self.id,
            len(threads),
        )
        for thread in threads:
            while thread.is_alive():
                if self._force_requested:
                    return False
                thread.join(0.5)  # a second stop request is seen within that time
        return True

    def _announce_stop(self, running: int) -> None:
        """Say what a stop request waits for, and how to cut it short."""
        if running:
            logger.info(
                "event=worker_stopping worker=%s stopping: waiting up to %g s for %s running "
                "task(s); press Ctrl-C again to stop now",
                self.id,
                self.shutdown_grace,
                running,
            )
        else:
            logger.info("event=worker_stopping worker=%s stopping: no task is running", self.id)

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
