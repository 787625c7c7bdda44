"""The tasks a runner thread claimed ahead for its batch and has not started (``BATCH_SIZE`` > 1).

A runner whose last task was shorter than ``BATCH_WINDOW`` claims up to ``BATCH_SIZE`` tasks at
once and runs them one after the other. They wait here, held by this worker, while it runs the
one before them. Should that one take longer than the window, the ones behind it would wait
for it where another runner or worker could take them: the worker's main thread then takes
them from here (:meth:`ClaimedAhead.take_if_behind`) and releases them, unstarted and
uncounted. So a task waits behind a longer one for about the window at most, whatever the
lengths of the tasks of its batch.

Shared by the runner (which adds, starts and hands back) and the main thread (which reads what
is here at a stop, and takes what waits behind a long task): every step holds the lock, so a
task is either started by the runner or taken by the main thread, never both, never neither.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Task


class ClaimedAhead:
    """One runner's claimed, unstarted tasks in claim order, and when its current task began."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tasks: deque[Task] = deque()
        #: When the runner's current task began (the worker's clock), None between tasks.
        self._began_at: float | None = None

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._tasks)

    def add(self, tasks: Iterable[Task]) -> None:
        with self._lock:
            self._tasks.extend(tasks)

    def began(self) -> None:
        """The runner begins a task (its own, or one the main thread handed it)."""
        with self._lock:
            self._began_at = self._clock()

    def ended(self) -> None:
        """The runner is done with its current task."""
        with self._lock:
            self._began_at = None

    def running_for(self) -> float:
        """How long the runner's current task has run (0 between tasks)."""
        with self._lock:
            return 0.0 if self._began_at is None else self._clock() - self._began_at

    def start_next(self) -> Task | None:
        """Take the next task for the runner to begin, or None when none is left."""
        with self._lock:
            if not self._tasks:
                return None
            self._began_at = self._clock()
            return self._tasks.popleft()

    def snapshot(self) -> list[Task]:
        with self._lock:
            return list(self._tasks)

    def take_all(self) -> list[Task]:
        with self._lock:
            taken = list(self._tasks)
            self._tasks.clear()
            return taken

    def due_at(self, window: float) -> float | None:
        """When the tasks here will have waited ``window`` behind the current one (or None)."""
        with self._lock:
            if not self._tasks or self._began_at is None:
                return None
            return self._began_at + window

    def take_if_behind(self, window: float) -> list[Task]:
        """Take every task here if the current one has run ``window`` seconds or more."""
        with self._lock:
            if not self._tasks or self._began_at is None:
                return []
            if self._clock() - self._began_at < window:
                return []
            taken = list(self._tasks)
            self._tasks.clear()
            return taken


__all__ = ["ClaimedAhead"]
