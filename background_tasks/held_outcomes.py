"""Outcomes a runner thread holds back for its batch's commit (``BATCH_SIZE`` > 1).

A runner that claimed several tasks at once runs them one after the other and records their
outcomes together, in the transaction that claims its next batch. Until then each finished
task's outcome waits here, as the write that records it. The list is shared with the worker's
main thread, which writes outcomes that waited longer than ``BATCH_WINDOW`` (the runner being
busy with a longer task): whoever takes an outcome from here writes it, so each is written once.

The main thread tries once: if that fails it gives the outcomes back (``restore``), for itself
to try again after its outage pause, or for the runner to write with its next outcome. A runner
about to go idle first waits until no outcome of its own is out with the main thread
(``take_settled``), so that none given back is left behind with nobody to write it.
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
    """A finished task, the write of its outcome (a ``lifecycle.record_*`` call), and when it
    began to wait (the worker's clock)."""

    task: Task
    write: Callable[[], object]
    held_at: float


class HeldOutcomes:
    """The outcomes one runner holds (thread-safe)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._changed = threading.Condition(threading.Lock())
        self._items: list[HeldOutcome] = []
        #: What the main thread took and has not written or given back yet.
        self._out: list[HeldOutcome] = []
        self._closed = False
        self._left_to_runner = False

    def hold(self, task: Task, write: Callable[[], object]) -> bool | None:
        """Hold an outcome; return True if it is the first one held (the window opens).

        Return None, holding nothing, once closed (the worker is stopping): the caller then
        writes the outcome at once.
        """
        with self._changed:
            if self._closed:
                return None
            self._items.append(HeldOutcome(task, write, self._clock()))
            return len(self._items) == 1

    def close(self) -> None:
        """Hold nothing more (the worker is stopping)."""
        with self._changed:
            self._closed = True

    def take(self) -> list[HeldOutcome]:
        """Take every held outcome, to write them (the runner, or the shutdown)."""
        with self._changed:
            taken, self._items = self._items, []
            self._left_to_runner = False
            return taken

    def take_overdue(self, window: float) -> list[HeldOutcome]:
        """Take the held outcomes if the first has waited ``window`` seconds or more (the main
        thread); then ``written`` or ``restore`` must follow."""
        with self._changed:
            if not self._items or self._left_to_runner:
                return []
            if self._clock() - self._items[0].held_at < window:
                return []
            taken, self._items = self._items, []
            self._out = taken
            return taken

    def written(self) -> None:
        """The main thread wrote what it took."""
        with self._changed:
            self._out = []
            self._changed.notify_all()

    def restore(self, taken: list[HeldOutcome], *, to_runner: bool = False) -> None:
        """Give back outcomes the main thread took and could not write, oldest first.

        ``to_runner``: the main thread will not try them again; the runner writes them.
        """
        with self._changed:
            self._items[:0] = taken
            self._out = []
            self._left_to_runner = self._left_to_runner or to_runner
            self._changed.notify_all()

    def put_back(self, taken: list[HeldOutcome]) -> None:
        """Give back outcomes the runner itself took and did not write (oldest first)."""
        with self._changed:
            self._items[:0] = taken

    def take_settled(self) -> list[HeldOutcome]:
        """Wait until the main thread has no outcome of this runner out, then take every held
        outcome (a runner about to go idle).

        One lock section: were the wait and the take two, the main thread could take outcomes
        between them and, its write refused, give them back to a runner that has gone idle.
        """
        with self._changed:
            self._changed.wait_for(lambda: not self._out)
            taken, self._items = self._items, []
            self._left_to_runner = False
            return taken

    def due_at(self, window: float) -> float | None:
        """When the main thread should write the held outcomes (None: it has nothing to do)."""
        with self._changed:
            if not self._items or self._left_to_runner:
                return None
            return self._items[0].held_at + window

    def holds(self, task: Task) -> bool:
        """Return True if the outcome of ``task`` (this very object) is held, or is being
        written by the main thread (which then takes note that it is done)."""
        with self._changed:
            return any(outcome.task is task for outcome in (*self._items, *self._out))

    def overdue(self, window: float) -> bool:
        with self._changed:
            return bool(self._items) and self._clock() - self._items[0].held_at >= window

    def __bool__(self) -> bool:
        with self._changed:
            return bool(self._items)


__all__ = ["HeldOutcome", "HeldOutcomes"]
