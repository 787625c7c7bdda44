"""The tasks the benchmarks enqueue: a no-op, so the figures are the queue's, and a time stamp."""

from __future__ import annotations

import time

from background_tasks import background

NOOP_NAME = "benchmarks.noop"


@background(name=NOOP_NAME)
def noop() -> None:
    """Do nothing."""


PICKUP_NAME = "benchmarks.pickup"


@background(name=PICKUP_NAME)
def pickup() -> float:
    """Return when the body started (seconds since the epoch): the latency phase's stamp."""
    return time.time()
