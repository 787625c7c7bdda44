from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures import clock, clock_start, created, runner_claims, spawn, staff
from tests.testapp import tasks as test_tasks

__all__ = ["clock", "clock_start", "created", "runner_claims", "spawn", "staff"]


@pytest.fixture(autouse=True)
def _clear_recorded_calls() -> Iterator[None]:
    test_tasks.CALLS.clear()
    yield
    test_tasks.CALLS.clear()
