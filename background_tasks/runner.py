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
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from django.db import DatabaseError, InterfaceError, connections, router

from . import isolation, lifecycle, recording
from .claims import claim_tasks, prepare_transaction
from .connection_reuse import refresh_connections
from .execution import execute
from .logs import shown
from .models import Task

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
        self._next: Task | None = None

    def run(self) -> None:
        worker = self.worker
        outages_seen = worker._outage.generation
        try:
            task, own = worker._inbox.get(), False
            while task is not None:
                self._next = None
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
                    worker._finished(task, self._next)
                following = self._take_next()
                if following is not None:
                    task, own = following, True
                else:
                    task, own = worker._inbox.get(), False
        finally:
            connections.close_all()

    def _take_next(self) -> Task | None:
        following, self._next = self._next, None
        return following

    def _may_start(self, task: Task, own: bool) -> bool:
        """Return True to run ``task``; a task this runner claimed is released if it may not."""
        worker = self.worker
        if worker._force_requested:
            return False
        if own and not worker._claiming():
            # Claimed just as the worker began to stop: handed back unstarted, uncounted, as
            # the main thread's unstarted claims are.
            try:
                worker._until_db_ok(lambda: lifecycle.release([task], worker.id))
            except _DB_ERRORS:
                # Left held: once this worker exits, rescue releases the row.
                logger.exception(
                    "event=release_failed worker=%s task_id=%s", shown(worker.id), task.pk
                )
            return False
        return True

    def _execute(self, task: Task) -> None:
        worker = self.worker
        try:
            execute(task, worker.id, persist=self._finish)
        except Exception as raised:
            exc: Exception = raised
            # An error outside the task body: a value in the row that its outcome cannot be
            # written with (a database error other than a lost connection), or a bug in the
            # library or a custom hook. The attempt is recorded as failed, so the row is not
            # left held by a live worker, and the thread goes on. A database error would fail
            # the same way again, and the body may have finished: that attempt is the last.
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
                # Left held: once this worker exits, rescue releases the row.
                logger.exception(
                    "event=outcome_not_recorded worker=%s task_id=%s", shown(worker.id), task.pk
                )
        worker.processed += 1

    def _finish(self, action: Callable[[], T]) -> T:
        """Write an outcome (``action``) and, when the worker may claim, claim the next task.

        Run once per task, by ``execute``, for whichever outcome it writes.
        """
        worker = self.worker
        if self._next is not None or not worker._reserve_claim():
            return worker._until_db_ok(action)
        claimed: list[Task] = []
        try:
            prepare_transaction(self.using)
            with lifecycle.shared_transaction(self.using) as pending:
                result = action()
                claimed = claim_tasks(worker.id, worker.queues, 1, using=self.using, shared=True)
        except Exception as exc:
            # Rolled back, unless the error hid a commit that happened: the main thread then
            # releases what this transaction claimed. Whatever the error (a database's, or a
            # bug in the claim), the outcome is then recorded alone: the attempt ran, and must
            # not be taken for one that failed.
            worker._claims_uncertain = True
            if not isinstance(exc, _DB_ERRORS):
                logger.exception("event=shared_transaction_error worker=%s", shown(worker.id))
            elif isolation.is_outage(exc):
                worker._reset_connection()
            worker._claimed_by_runner([])
            return worker._until_db_ok(action)
        except BaseException:
            worker._claimed_by_runner([])
            raise
        # Registered before the outcome's signals run: while a slow receiver runs, the claimed
        # row is known to the worker (a stop waits for it, a shutdown hands it back).
        worker._claimed_by_runner(claimed)
        self._next = claimed[0] if claimed else None
        try:
            lifecycle.after_commit(pending)
        except BaseException:
            # A receiver raised past signals.emit (KeyboardInterrupt, SystemExit): the thread
            # ends, and the task it claimed must not stay held by a live worker.
            self._give_back_next()
            raise
        return result

    def _give_back_next(self) -> None:
        following = self._take_next()
        if following is None:
            return
        worker = self.worker
        try:
            lifecycle.release([following], worker.id)
        except Exception:
            logger.exception(
                "event=release_failed worker=%s task_id=%s", shown(worker.id), following.pk
            )
            worker._claims_uncertain = True  # the main thread looks for it again
        worker._finished(following, None)


__all__ = ["Runner"]
