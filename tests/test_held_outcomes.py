"""The outcomes a runner holds for its batch, shared with the worker's main thread
(``held_outcomes.HeldOutcomes``): each is taken by one thread only, and none given back is left
with nobody to write it."""

from __future__ import annotations

import threading
from typing import Any

from background_tasks.held_outcomes import HeldOutcome, HeldOutcomes


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def holding(*names: str) -> tuple[HeldOutcomes, Clock]:
    clock = Clock()
    held = HeldOutcomes(clock)
    for name in names:
        held.hold(name, lambda: None)  # type: ignore[arg-type]
    return held, clock


def tasks_of(outcomes: list[HeldOutcome]) -> list[Any]:
    return [outcome.task for outcome in outcomes]


def test_take_settled__waits_for_what_the_main_thread_took_and_takes_it_back() -> None:
    held, clock = holding("a", "b")
    clock.now = 1.0
    taken_by_main = held.take_overdue(window=0.5)
    result: list[list[HeldOutcome]] = []
    runner = threading.Thread(target=lambda: result.append(held.take_settled()))
    runner.start()

    runner.join(0.05)
    assert runner.is_alive(), "took while the main thread still had outcomes out"
    held.restore(taken_by_main, to_runner=True)  # the main thread's write was refused
    runner.join(5)

    assert not runner.is_alive()
    assert [tasks_of(r) for r in result] == [["a", "b"]]
    assert held.take_overdue(window=0.0) == [] and not held


def test_take_settled__after_the_main_thread_wrote_what_it_took_takes_only_the_rest() -> None:
    held, clock = holding("a")
    clock.now = 1.0
    held.take_overdue(window=0.5)
    held.hold("b", lambda: None)  # type: ignore[arg-type]
    held.written()

    assert tasks_of(held.take_settled()) == ["b"]
    assert not held
