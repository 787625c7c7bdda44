"""Waiting out a database outage: which errors are one, how long to pause, what to log.

Every thread of a worker that meets an outage shares one ``Outage``: the first error logs
``event=database_unavailable``, each later try that fails logs at most one line per backoff
step, and the first success logs ``event=database_available``. The pause grows exponentially
from ``OUTAGE_BACKOFF_FIRST`` to ``OUTAGE_BACKOFF_MAX`` with jitter, so that workers which lost
the database together do not all knock again at the same instant.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from django.db import InterfaceError, OperationalError, ProgrammingError

from .conf import app_settings

logger = logging.getLogger("background_tasks")

# Errors of the connection, not of the statement: worth retrying once the database is back.
# (A DataError or IntegrityError would fail the same way for ever.)
OUTAGE_ERRORS = (OperationalError, InterfaceError)

# How each database says that a table does not exist: unapplied migrations, not an outage.
_MISSING_TABLE_CODES = {1146}  # MySQL/MariaDB ER_NO_SUCH_TABLE


def is_missing_table(exc: BaseException) -> bool:
    """Tell whether a database error says a table is missing (``migrate`` was not run)."""
    if not isinstance(exc, (OperationalError, ProgrammingError)):
        return False
    if exc.args and exc.args[0] in _MISSING_TABLE_CODES:
        return True
    text = str(exc).lower()
    # PostgreSQL: 'relation "background_tasks_task" does not exist' (a ProgrammingError).
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def is_outage(exc: BaseException) -> bool:
    """Tell whether a database error is the database being unreachable, worth waiting out."""
    return isinstance(exc, OUTAGE_ERRORS) and not is_missing_table(exc)


def pause_before_try(
    step: int, first: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Return the pause before try ``step + 1`` of an outage: doubling from ``first``, capped.

    The jitter takes up to half of each pause away (never adds to it), so the cap holds.
    """
    base = min(cap, first * 2.0 ** min(step, 64))
    return base * (1.0 - 0.5 * rand())


class Outage:
    """The outage state shared by the threads of one process, and its log lines."""

    def __init__(self, who: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.who = who
        self.clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._step = 0
        self._next_try_at = 0.0
        self._tries = 0
        #: Outages seen so far: a thread that saw fewer must drop its connections before use,
        #: since they may point at a server that restarted meanwhile.
        self.generation = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def down_for(self) -> float:
        """Seconds since the outage began (0 when the database is up)."""
        since = self._down_since
        return 0.0 if since is None else self.clock() - since

    def failed(self, exc: BaseException) -> float:
        """Note a failed try; return how long this thread should pause before the next one.

        Tries from several threads within one pause count as one step: only the first of them
        moves the backoff on and logs.
        """
        first = float(app_settings.OUTAGE_BACKOFF_FIRST)
        cap = float(app_settings.OUTAGE_BACKOFF_MAX)
        with self._lock:
            now = self.clock()
            self._tries += 1
            if self._down_since is None:
                self._down_since = now
                self.generation += 1
                self._step = 0
                pause = pause_before_try(0, first, cap)
                self._next_try_at = now + pause
                logger.error(
                    "event=database_unavailable worker=%s retry_in=%.1fs error=%r",
                    self.who,
                    pause,
                    exc,
                )
                return pause
            if now < self._next_try_at:
                return self._next_try_at - now
            self._step += 1
            pause = pause_before_try(self._step, first, cap)
            self._next_try_at = now + pause
            logger.warning(
                "event=database_still_unavailable worker=%s down_for=%.1fs tries=%s "
                "retry_in=%.1fs error=%r",
                self.who,
                now - self._down_since,
                self._tries,
                pause,
                exc,
            )
            return pause

    def succeeded(self) -> None:
        """Note a successful database action; log the end of the outage if there was one."""
        if not self.down:  # the common case, without taking the lock
            return
        with self._lock:
            since = self._down_since  # another thread may have ended the outage meanwhile
            if since is None:
                return
            logger.warning(
                "event=database_available worker=%s down_for=%.1fs tries=%s",
                self.who,
                self.clock() - since,
                self._tries,
            )
            self._down_since = None
            self._step = 0
            self._tries = 0
            self._next_try_at = 0.0


__all__ = ["OUTAGE_ERRORS", "Outage", "is_missing_table", "is_outage", "pause_before_try"]
