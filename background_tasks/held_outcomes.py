"""Outcomes a runner thread holds back for its batch's commit (``BATCH_SIZE`` > 1).

A runner that claimed several tasks at once runs them one after the other and records their
outcomes together, in the transaction that claims its next batch. Until then each finished
task's outcome waits here, as the write that records it. The list is shared with the worker's
main thread, which writes outcomes that waited longer than ``BATCH_WINDOW`` (the runner being
busy with a longer task): whoever takes an outcome from here writes it, so each is written once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Task


@dataclass(frozen=True)
class HeldOutcome:
    """A finished task and the write of its outcome (a ``lifecycle.record_*`` call)."""

    task: Task
    write: Callable[[], object]


class HeldOutcomes:
    """The outcomes one runner holds, and since when (thread-safe)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._items: list[HeldOutcome] = []
        self._since = 0.0

    def hold(self, task: Task, write: Callable[[], object]) -> bool:
        """Hold an outcome; return True if it is the first one held (the window opens)."""
        with self._lock:
            first = not self._items
            if first:
                self._since = self._clock()
            self._items.append(HeldOutcome(task, write))
            return first

    def take(self) -> list[HeldOutcome]:
        """Take every held outcome, to write them."""
        with self._lock:
            taken, self._items = self._items, []
            return taken

    def take_overdue(self, window: float) -> list[HeldOutcome]:
        """Take the held outcomes if the first has waited ``window`` seconds or more."""
        with self._lock:
            if not self._items or self._clock() - self._since < window:
                return []
            taken, self._items = self._items, []
            return taken

    def due_at(self, window: float) -> float | None:
        """When the held outcomes must be written at the latest (None: none is held)."""
        with self._lock:
            return self._since + window if self._items else None

    def holds(self, task: Task) -> bool:
        """Return True if the outcome of ``task`` (this very object) is held."""
        with self._lock:
            return any(outcome.task is task for outcome in self._items)

    def overdue(self, window: float) -> bool:
        due = self.due_at(window)
        return due is not None and self._clock() >= due


__all__ = ["HeldOutcome", "HeldOutcomes"]
