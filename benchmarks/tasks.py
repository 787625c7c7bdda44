"""The tasks the benchmarks enqueue and drain: they do nothing, so the figures are the queue's."""

from __future__ import annotations

from background_tasks import background

NOOP_NAME = "benchmarks.noop"


@background(name=NOOP_NAME)
def noop() -> None:
    """Do nothing."""


@background(name="benchmarks.noop_with")
def noop_with(number: int) -> None:
    """Do nothing with ``number``: the enqueue figures are for calls with an argument, as most."""
