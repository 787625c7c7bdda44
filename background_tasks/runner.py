"""A runner thread: run a task, then record its outcome and claim the next one in one commit.

The main thread hands a runner its first task (and any task it claims for an idle runner).
From then on, while the worker may claim (not stopping, within ``--max-tasks`` and
``--max-memory``), the runner records each outcome and claims its own next task in the same
transaction and runs it at once: a busy worker commits about once per task, and no task waits
for the main thread. When that claim finds nothing, the runner goes idle and the main thread
polls for it again.

The shared transaction changes no guarantee:

- the outcome is fenced as always (written only while this worker holds the row);
- it commits or rolls back as a whole: any error inside it rolls the outcome back with the
  claim, and the outcome is then recorded alone, as the worker always did (retried through
  outages; a value the database refuses is failed or quarantined). A failure at ``COMMIT``
  may hide a commit that happened: the claimed rows are then held by nobody running them, so
  the worker's main thread looks for such rows and releases them (``_release_lost_claims``);
- the outcome's signals are sent after the commit.
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
            with lifecycle.shared_transaction(self.using):
                result = action()
                claimed = claim_tasks(worker.id, worker.queues, 1, using=self.using, shared=True)
        except _DB_ERRORS as exc:
            # Rolled back, unless the error hid a commit that happened: the main thread then
            # releases what this transaction claimed.
            worker._claims_uncertain = True
            if isolation.is_outage(exc):
                worker._reset_connection()
            worker._claimed_by_runner([])
            return worker._until_db_ok(action)
        except BaseException:
            worker._claimed_by_runner([])
            raise
        worker._claimed_by_runner(claimed)
        self._next = claimed[0] if claimed else None
        return result


__all__ = ["Runner"]
