"""The tasks the benchmarks enqueue and drain: no-ops, so the figures are the queue's, and a
time stamp for the pickup latency."""

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


@background(name="benchmarks.noop_with")
def noop_with(number: int) -> None:
    """Do nothing with ``number``: the enqueue figures are for calls with an argument, as most."""
