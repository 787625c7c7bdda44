"""The task the benchmarks enqueue and drain: it does nothing, so the figures are the queue's."""

from __future__ import annotations

from background_tasks import background

NOOP_NAME = "benchmarks.noop"


@background(name=NOOP_NAME)
def noop() -> None:
    """Do nothing."""
