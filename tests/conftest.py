from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.testapp import tasks as test_tasks


@pytest.fixture(autouse=True)
def _clear_recorded_calls() -> Iterator[None]:
    test_tasks.CALLS.clear()
    yield
    test_tasks.CALLS.clear()
