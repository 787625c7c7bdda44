"""Trying again what InnoDB rolled back to break a deadlock (MySQL/MariaDB).

InnoDB ends a deadlock by rolling back one of the transactions in it (error 1213), and a lock
wait that lasts ``innodb_lock_wait_timeout`` ends the statement (1205). A worker's own short
transactions (a claim, a pruning batch) and an enqueue outside the caller's transaction lose
nothing else by that rollback, so they are run again, after a short pause that lets the
transaction that won commit. Inside a caller's transaction nothing is tried again: the whole
transaction is gone, and the caller must know.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError

#: MySQL/MariaDB's deadlock and lock wait timeout.
MYSQL_RETRYABLE_ERRORS = (1213, 1205)
#: Tries in all, the first included.
MYSQL_RETRIES = 5

_T = TypeVar("_T")


def is_deadlock(exc: BaseException) -> bool:
    """Tell whether ``exc`` is MySQL/MariaDB's deadlock or lock wait timeout."""
    return (
        isinstance(exc, OperationalError)
        and bool(exc.args)
        and (exc.args[0] in MYSQL_RETRYABLE_ERRORS)
    )


def retry_deadlocks(
    action: Callable[[], _T], before_retry: Callable[[], None] = lambda: None
) -> _T:
    """Run ``action``; run it again, up to ``MYSQL_RETRIES`` tries in all, while it fails with
    a deadlock or a lock wait timeout. ``before_retry`` undoes what the failed try left on the
    caller's objects. The last failure is raised."""
    for attempt in range(1, MYSQL_RETRIES + 1):
        try:
            return action()
        except OperationalError as exc:
            if not is_deadlock(exc) or attempt == MYSQL_RETRIES:
                raise
            before_retry()
            time.sleep(0.01 * attempt)  # let the transaction that won the deadlock commit
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["MYSQL_RETRIES", "MYSQL_RETRYABLE_ERRORS", "is_deadlock", "retry_deadlocks"]
