"""A runner thread: run a task, then record its outcome and claim the next one in one commit.

The main thread hands a runner its first task (and any task it claims for an idle runner).
From then on, while the worker may claim (not stopping, within ``--max-tasks`` and
``--max-memory``), the runner records each outcome and claims its own next task in the same
transaction and runs it at once: a busy worker commits about once per task, and no task waits
for the main thread. When that claim finds nothing, the runner goes idle and the main thread
polls for it again.

The shared transaction changes no guarantee:

- the outcome is fenced as always (written only while this worker holds the row from the
  claim that attempt ran under);
- it commits or rolls back as a whole: any error inside it (a database's or not) rolls the
  outcome back with the claim, and the outcome is then recorded alone from the task as it was
  claimed (nothing is applied to the task object before the commit), as the worker always did
  (retried through outages; a value the database refuses is failed or quarantined). A failure
  at ``COMMIT`` may hide a commit that happened: the claimed rows are then held by nobody
  running them, so the worker's main thread looks for such rows and releases them
  (``_release_lost_claims``); the outcome written again names the earlier claim, so it cannot
  undo a claim of the same row;
- the claimed task is registered with the worker, then the outcome's signals are sent.

With ``BATCH_SIZE`` > 1 (the default), after a task shorter than ``BATCH_WINDOW`` the runner
claims up to that many tasks at once and runs them one after the other (claimed_ahead.py);
after a longer one it claims one. Each finished task's outcome is held (held_outcomes.py) until
the last of the batch is done, and all of them are written in the transaction that claims the
next batch. An outcome waits at most ``BATCH_WINDOW``: past that the runner writes what it
holds at its next outcome, or the worker's main thread writes it while the runner is still busy
with a longer task, and releases the tasks of the batch waiting behind that one.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from django.db import DatabaseError, InterfaceError, connections, router

from . import archive_sql, isolation, lifecycle, recording
from .claimed_ahead import ClaimedAhead
from .claims import claim_tasks, prepare_transaction
from .connection_reuse import refresh_connections
from .execution import execute
from .held_outcomes import HeldOutcome, HeldOutcomes
from .logs import shown
from .models import Task
from .outage import is_missing_table

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger("background_tasks")

T = TypeVar("T")

_DB_ERRORS = (DatabaseError, InterfaceError)


class Runner:
    """One runner thread of a worker: ``run()`` is the thread's body."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.using = router.db_for_write(Task)
        #: Tasks this runner claimed itself and has not started, in claim order.
        self.ahead = ClaimedAhead(worker.clock)
        #: Tasks taken out of ``ahead`` never to start (the worker is stopping), until they are
        #: released: the shutdown counts them among the unstarted (``queued()``).
        self._unstarted: list[Task] = []
        self._current: Task | None = None
        self.held = HeldOutcomes(worker.clock)
        self._first_task = True

    def run(self) -> None:
        worker = self.worker
        outages_seen = worker._outage.generation
        task: Task | None = None
        try:
            task, own = worker._inbox.get(), False
            while task is not None:
                self._current = task
                self.ahead.began()
                try:
                    if self._may_start(task, own):
                        if outages_seen != worker._outage.generation:
                            # Opened before an outage: likely to a server that restarted since.
                            outages_seen = worker._outage.generation
                            worker._reset_connection()
                        # Kept from task to task: see connection_reuse.py.
                        refresh_connections()
                        self._execute(task)
                finally:
                    self._current = None
                    self.ahead.ended()
                    if not self.held.holds(task):
                        worker._finished(task)
                    self._forget_unstarted([task])
                following = self._take_next()
                if following is not None:
                    task, own = following, True
                else:
                    self._write_held_before_idle()
                    worker._runner_idle()
                    task, own = worker._inbox.get(), False
        except BaseException:
            # Only what a signal receiver raised past signals.emit gets here (SystemExit,
            # KeyboardInterrupt): a task body's exceptions are its failures, and the runner's
            # own errors are caught per task. The outcome it followed is committed, the tasks
            # claimed with it were handed back. The worker stops rather than run on a thread
            # short, which would leave a --burst worker waiting for this one for ever.
            logger.critical("event=runner_ended worker=%s", shown(worker.id), exc_info=True)
            self._hand_back_after_end(task)
            worker._runner_ended()
        finally:
            connections.close_all()

    def queued(self) -> list[Task]:
        """The tasks this runner claimed and has not started, nor will (read by the main
        thread, holding the worker's lock: see ``_take_next``)."""
        return [*self._unstarted, *self.ahead.snapshot()]

    def _take_next(self) -> Task | None:
        """Take the next task this runner claimed, and decide there whether it may start.

        In the worker's lock, as the shutdown's look at the running and unstarted tasks is: a
        task taken out as the worker stops is seen there as unstarted, never as one that ran
        (it would be handed back, a hand-back counted in ``handbacks``).
        """
        worker = self.worker
        with worker._lock:
            task = self.ahead.start_next()
            if task is not None and not worker._claiming():
                self._unstarted.append(task)
            return task

    def _set_aside_all(self) -> list[Task]:
        """Take every task claimed ahead out, never to start (see ``_take_next``)."""
        with self.worker._lock:
            taken = self.ahead.take_all()
            self._unstarted.extend(taken)
        return taken

    def _forget_unstarted(self, tasks: list[Task]) -> None:
        """These tasks are released (or left for the shutdown to release) and no longer among
        the worker's running tasks: the shutdown need not see them here."""
        if self._unstarted:
            with self.worker._lock:
                self._unstarted = [t for t in self._unstarted if all(t is not x for x in tasks)]

    def _may_start(self, task: Task, own: bool) -> bool:
        """Return True to run ``task``; a task this runner claimed is released if it may not."""
        worker = self.worker
        if worker._force_requested:
            return False
        if not own:
            with worker._lock:
                if not worker._claiming():
                    # Taken from the inbox just as the worker began to stop, after the
                    # shutdown emptied it: unstarted, as the inbox's tasks. Decided in the
                    # lock where the shutdown reads the running tasks, so that it never hands
                    # this task back as one that ran while it starts anyway.
                    self._unstarted.append(task)
        if any(task is unstarted for unstarted in self._unstarted):
            # Claimed just as the worker began to stop (see _take_next): handed back
            # unstarted, uncounted, as the main thread's unstarted claims are.
            try:
                worker._until_db_ok(lambda: lifecycle.release([task], worker.id))
            except _DB_ERRORS:
                logger.exception(
                    "event=release_failed worker=%s task_id=%s", shown(worker.id), task.pk
                )
                worker._claims_uncertain = True  # the shutdown looks for it again
            return False
        return True

    def _execute(self, task: Task) -> None:
        try:
            execute(task, self.worker.id, persist=self._finish)
        except Exception as exc:
            record_runner_error(self.worker, task, exc)
        self.worker.processed += 1

    def _finish(self, action: Callable[[], T]) -> T | None:
        """Write an outcome (``action``) and, when the worker may claim, claim the next tasks.

        Run once per task, by ``execute``, for whichever outcome it writes. Within a batch the
        outcome is held instead, to be written with the last of the batch.
        """
        worker = self.worker
        if (
            self.ahead
            and worker.batch_size > 1
            and worker._claiming()
            and self._current is not None
            and not self.held.overdue(worker.batch_window)
        ):
            first = self.held.hold(self._current, action)
            if first is not None:  # None: the worker is stopping, write it now
                if first:
                    worker._wake.ring()  # the main thread writes them should the window close
                return None
        held = self.held.take()
        wanted = 0 if self.ahead else worker._reserve_claims(self._claim_size())
        self._first_task = False
        if not held and not wanted:
            return worker._until_db_ok(action)
        claimed: list[Task] = []
        try:
            if wanted:
                prepare_transaction(self.using)
            # A batch's moves to the history go in one round trip where the database allows.
            grouped = bool(held)
            with lifecycle.shared_transaction(self.using, group_moves=grouped) as pending:
                for outcome in held:
                    outcome.write()
                result = action()
                if wanted:
                    claimed = claim_tasks(
                        worker.id, worker.queues, wanted, using=self.using, shared=True
                    )
        except Exception as exc:
            # Rolled back, unless the error hid a commit that happened: the main thread then
            # releases what this transaction claimed. Whatever the error (a database's, or a
            # bug in the claim), each outcome is then recorded alone: the attempts ran, and
            # must not be taken for ones that failed.
            _log_rolled_back(worker, exc)
            if wanted:
                worker._claims_uncertain = True
                worker._claimed_by_runner([], wanted)
            write_each(worker, held)
            return worker._until_db_ok(action)
        except BaseException:
            self.held.put_back(held)
            if wanted:
                worker._claimed_by_runner([], wanted)
            raise
        # Registered before the outcome's signals run: while a slow receiver runs, the claimed
        # rows are known to the worker (a stop waits for them, a shutdown hands them back).
        if wanted:
            worker._claimed_by_runner(claimed, wanted, self.ahead)
            if len(claimed) > 1:
                # Tasks wait behind the first: the main thread is to release them should it
                # outrun the window (claimed_ahead.py), and must wake up for that.
                worker._wake.ring()
        worker._outcomes_written([outcome.task for outcome in held])
        try:
            lifecycle.after_commit(pending)
        except BaseException:
            # A receiver raised past signals.emit (KeyboardInterrupt, SystemExit): the thread
            # ends, and the tasks it claimed must not stay held by a live worker.
            self._give_back_queued()
            raise
        return result

    def _claim_size(self) -> int:
        """How many tasks to claim next: a batch after a task shorter than BATCH_WINDOW, else one.

        Tasks longer than the window gain nothing from a batch (their commit is a small part of
        their time), and tasks claimed behind one would wait for it. A runner's first task
        says nothing yet (its time includes opening the thread's connection): a batch.
        """
        worker = self.worker
        if worker.batch_size > 1 and (
            self._first_task or self.ahead.running_for() < worker.batch_window
        ):
            return worker.batch_size
        return 1

    def _write_held_before_idle(self) -> None:
        """Write what this runner still holds before it waits for the main thread.

        Normally nothing: a batch's last outcome writes the others. Outcomes the main thread
        took and gave back (its write failed) may be left, and nobody else would write them.
        """
        held = self.held.take_settled()
        if not held:
            return
        try:
            with lifecycle.shared_transaction(self.using) as pending:
                for outcome in held:
                    outcome.write()
        except Exception as exc:
            _log_rolled_back(self.worker, exc)
            write_each(self.worker, held)
            return
        except BaseException:
            self.held.put_back(held)  # for the shutdown to write
            raise
        self.worker._outcomes_written([outcome.task for outcome in held])
        lifecycle.after_commit(pending)

    def _hand_back_after_end(self, task: Task | None) -> None:
        """Release, uncounted, the task this thread was on and those it claimed and never ran.

        The release is fenced on each task's claim, so the task's own row is left alone if its
        outcome was written (deleted, or set to wait for its retry). One whose outcome is held
        for its batch is left to the worker's shutdown, which writes it.
        """
        left = [task] if task is not None and not self.held.holds(task) else []
        left += self._set_aside_all()
        worker = self.worker
        try:
            lifecycle.release(left, worker.id)
        except Exception:
            logger.exception("event=release_failed worker=%s", shown(worker.id))
            worker._claims_uncertain = True
        for each in left:
            worker._finished(each)
        self._forget_unstarted(left)

    def _give_back_queued(self) -> None:
        queued = self._set_aside_all()
        if not queued:
            return
        worker = self.worker
        try:
            lifecycle.release(queued, worker.id)
        except Exception:
            logger.exception(
                "event=release_failed worker=%s task_ids=%s",
                shown(worker.id),
                ",".join(str(task.pk) for task in queued),
            )
            worker._claims_uncertain = True  # the main thread looks for them again
        for task in queued:
            worker._finished(task)
        self._forget_unstarted(queued)


def write_held_by_main(worker: Worker, runner: Runner, using: str, window: float) -> None:
    """The main thread: write what ``runner`` has held ``window`` seconds or more, in one
    transaction.

    One try, so that nothing keeps the main thread from its loop (a stop, its heartbeats,
    claims for idle runners): after an outage (or a missing table) the outcomes go back to the
    runner and the error is raised, for the loop's pause and a try after it; after any other
    error (a value the database refuses: trying again would fail alike) they are left to the
    runner, which writes them with its next outcome (one by one if need be). The outcomes'
    signals are sent from a thread of their own: a slow receiver must not hold up the
    heartbeats.
    """
    held = runner.held.take_overdue(window)
    if not held:
        return
    try:
        with lifecycle.shared_transaction(using) as pending:
            for outcome in held:
                outcome.write()
    except _DB_ERRORS as exc:
        if not (isolation.is_database_fault(exc) or is_missing_table(exc)):
            logger.exception("event=shared_transaction_error worker=%s", shown(worker.id))
            runner.held.restore(held, to_runner=True)
            return
        runner.held.restore(held)
        raise
    except Exception:
        logger.exception("event=shared_transaction_error worker=%s", shown(worker.id))
        runner.held.restore(held, to_runner=True)
        return
    except BaseException:
        runner.held.restore(held)
        raise
    worker._outcomes_written([outcome.task for outcome in held])
    runner.held.written()
    worker._after_commit_elsewhere(pending)


def write_each(worker: Worker, held: list[HeldOutcome]) -> None:
    """Write held outcomes one by one, as a runner writes an outcome outside any batch."""
    for outcome in held:
        try:
            worker._until_db_ok(outcome.write)
        except Exception as exc:
            record_runner_error(worker, outcome.task, exc)
        worker._outcomes_written([outcome.task])


def _log_rolled_back(worker: Worker, exc: Exception) -> None:
    if isinstance(exc, archive_sql.MovesNotHeld):
        # Not an error: a task of the batch was taken meanwhile (a rescue, an operator). Each
        # outcome is now written alone, and the one not held is dropped (event=outcome_dropped).
        logger.info(
            "event=batch_written_one_by_one worker=%s reason=%r", shown(worker.id), str(exc)
        )
    elif not isinstance(exc, _DB_ERRORS):
        logger.exception("event=shared_transaction_error worker=%s", shown(worker.id))
    elif isolation.is_database_fault(exc):
        worker._reset_connection()


def record_runner_error(worker: Worker, task: Task, exc: Exception) -> None:
    """Record as failed an attempt whose outcome could not be written (an error outside its body).

    A value in the row that its outcome cannot be written with (a database error other than a
    lost connection), or a bug in the library or a custom hook. The attempt is recorded as
    failed, so the row is not left held by a live worker, and the thread goes on. A database
    error would fail the same way again, and the body may have finished: that attempt is the
    last.
    """
    logger.exception("event=runner_error worker=%s task_id=%s", shown(worker.id), task.pk)
    error = "".join(traceback.format_exception(exc))
    final = isinstance(exc, DatabaseError)

    def record() -> str | None:
        return lifecycle.record_failure(task, worker.id, error, exc, permanent=final)

    try:
        worker._until_db_ok(
            lambda: recording.record_or_quarantine(
                task,
                worker.id,
                record,
                f"The failure of this attempt ({isolation.describe(exc)})",
            )
        )
    except Exception:
        # Left held: once this worker exits, the rescue records the attempt as failed. Not a
        # lost claim: released uncounted, it would run again with its attempt never counted.
        worker._outcome_not_recorded(task)
        logger.exception(
            "event=outcome_not_recorded worker=%s task_id=%s", shown(worker.id), task.pk
        )


__all__ = ["Runner", "record_runner_error", "write_each", "write_held_by_main"]
