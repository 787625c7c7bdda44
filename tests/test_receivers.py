"""A broken signal receiver costs a log line, never a task or a worker thread."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from background_tasks import periodic, signals
from background_tasks.exceptions import InvalidTaskArguments
from background_tasks.models import CompletedTask, Task
from background_tasks.worker import Worker
from tests.testapp import tasks
from tests.testapp.models import TaskRun


def _explode(**kwargs: Any) -> None:
    raise RuntimeError("receiver bug")


@pytest.fixture
def broken_receivers() -> Iterator[None]:
    hooked = [signals.task_started, signals.task_succeeded, signals.task_failed]
    for signal in hooked:
        signal.connect(_explode, dispatch_uid="test-broken")
    yield
    for signal in hooked:
        signal.disconnect(dispatch_uid="test-broken")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("broken_receivers")
def test_worker__keeps_running_tasks_when_receivers_raise(caplog: pytest.LogCaptureFixture) -> None:
    for key in ("a", "b", "c"):
        tasks.record(key)
    tasks.always_fails()

    Worker(burst=True, sleep=0.01, concurrency=1).run()

    assert sorted(TaskRun.objects.values_list("key", flat=True)) == ["a", "b", "c"]
    assert CompletedTask.objects.succeeded().count() == 3
    # Retried with no backoff until it gave up: every failure was recorded despite the receiver.
    assert CompletedTask.objects.failed().get().attempts == 3
    assert not Task.objects.exists()
    assert "event=signal_receiver_failed" in caplog.text


@pytest.mark.django_db
def test_unique_enqueue__of_a_pending_copy_sends_no_created_signal() -> None:
    created: list[Task] = []

    def remember(task: Task, **kwargs: Any) -> None:
        created.append(task)

    signals.task_created.connect(remember, dispatch_uid="test-remember")
    try:
        first = tasks.record("once", unique=True)
        second = tasks.record("once", unique=True)
    finally:
        signals.task_created.disconnect(dispatch_uid="test-remember")

    assert second.pk == first.pk
    assert [t.pk for t in created] == [first.pk]


def test_periodic__rejects_arguments_that_do_not_fit_the_function() -> None:
    with pytest.raises(InvalidTaskArguments, match="record"):
        periodic.periodic(tasks.record, "* * * * *", name="misfit", args=["a", "b"])

    assert "misfit" not in periodic.all_definitions()
