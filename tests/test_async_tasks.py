"""``async def`` tasks run to completion, generator functions are refused, and async code enqueues.

A body is never reported as done unrun: the worker (in process and as a real subprocess) awaits
a coroutine function, a wrapper that hands back a coroutine is awaited too, and a generator is
refused at decoration or failed at once when a wrapper returns one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, override_settings

from background_tasks import background, registry
from background_tasks.exceptions import InvalidTaskError
from background_tasks.models import CompletedTask, Task
from background_tasks.testing import run_tasks
from tests.helpers import start_worker, wait_for
from tests.testapp import tasks
from tests.testapp.models import TaskRun


@pytest.fixture
def scratch_names() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        registry.unregister(name)


@pytest.mark.django_db
def test_worker__an_async_task_body_runs_and_its_return_value_is_recorded() -> None:
    task = tasks.async_record("a1")

    assert run_tasks() == 1

    assert TaskRun.objects.filter(key="a1").count() == 1
    record = CompletedTask.objects.get(task_id=task.pk)
    assert (record.status, record.result) == ("succeeded", "async a1")


@pytest.mark.django_db
def test_worker__an_async_task_that_raises_is_retried_then_failed_with_its_error() -> None:
    task = tasks.async_record("a2", fail=True)

    assert run_tasks() == 2  # max_attempts=2, backoff=0

    assert TaskRun.objects.filter(key="a2").count() == 2
    record = CompletedTask.objects.get(task_id=task.pk)
    assert record.status == "failed"
    assert "RuntimeError: async failure a2" in record.last_error


@pytest.mark.django_db
def test_worker__current_task_is_the_running_row_inside_an_async_task() -> None:
    task = tasks.async_knows_its_row()

    run_tasks()

    assert CompletedTask.objects.get(task_id=task.pk).result == task.pk


@pytest.mark.django_db
def test_now__runs_an_async_task_to_completion_and_returns_its_value() -> None:
    assert tasks.async_record.now("a3") == "async a3"
    assert TaskRun.objects.filter(key="a3").count() == 1


@pytest.mark.django_db
def test_anow__awaits_an_async_task_from_async_code() -> None:
    assert async_to_sync(tasks.async_record.anow)("a4") == "async a4"
    assert TaskRun.objects.filter(key="a4").count() == 1


@pytest.mark.django_db
@override_settings(BACKGROUND_TASKS_IMMEDIATE=True)
def test_immediate_mode__runs_an_async_task_body() -> None:
    tasks.async_record("a5")
    assert TaskRun.objects.filter(key="a5").count() == 1


def test_decorator__refuses_a_generator_function_with_the_reason(
    scratch_names: list[str],
) -> None:
    def numbers() -> Iterator[int]:
        yield 1

    with pytest.raises(InvalidTaskError, match=r"generator function.*without running its body"):
        background(name="tests.generator")(numbers)
    assert "tests.generator" not in registry


def test_decorator__refuses_an_async_generator_function() -> None:
    async def numbers() -> Any:
        yield 1

    with pytest.raises(InvalidTaskError, match="is a generator function"):
        background(name="tests.async_generator")(numbers)
    assert "tests.async_generator" not in registry


def _wrapped(inner: Any) -> Any:
    # A plain (sync) decorator around a coroutine or generator function: the kind of wrapper
    # that hides from inspect what the call returns.
    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return inner(*args, **kwargs)

    del wrapper.__wrapped__
    return wrapper


@pytest.mark.django_db
def test_worker__a_wrapper_that_returns_a_coroutine_has_it_awaited(
    scratch_names: list[str],
) -> None:
    async def body(key: str) -> str:
        await tasks.async_record.anow(key)
        return "awaited"

    wrapped = background(name="tests.wrapped_coroutine")(_wrapped(body))
    scratch_names.append(wrapped.name)
    task = wrapped("a6")

    run_tasks()

    assert TaskRun.objects.filter(key="a6").count() == 1
    assert CompletedTask.objects.get(task_id=task.pk).result == "awaited"


@pytest.mark.django_db
def test_worker__a_wrapper_that_returns_a_generator_fails_at_once_without_retries(
    scratch_names: list[str],
) -> None:
    def body() -> Iterator[int]:
        TaskRun.objects.create(key="never")
        yield 1

    wrapped = background(name="tests.wrapped_generator")(_wrapped(body))
    scratch_names.append(wrapped.name)
    task = wrapped()

    assert run_tasks() == 1

    record = CompletedTask.objects.get(task_id=task.pk)
    assert (record.status, record.attempts) == ("failed", 1)
    assert "returned a generator: its body did not run" in record.last_error
    assert not TaskRun.objects.filter(key="never").exists()


@pytest.mark.django_db
def test_async_view__aenqueue_inserts_the_row_and_afind_returns_it() -> None:
    response = async_to_sync(AsyncClient().get)("/async/newsletter/42/")

    assert response.status_code == 200
    body = response.json()
    assert body["found"] is True
    row = Task.objects.get(pk=body["id"])
    assert (row.task_name, row.params["args"], row.verbose_name) == (
        tasks.send_newsletter.name,
        [42],
        "from a view",
    )


@pytest.mark.django_db
def test_afind__returns_the_history_record_once_the_task_finished_and_none_for_others() -> None:
    task = tasks.send_newsletter(7)
    run_tasks()

    found = async_to_sync(tasks.send_newsletter.afind)(task.pk)

    assert isinstance(found, CompletedTask)
    assert found.task_id == task.pk
    assert async_to_sync(tasks.async_record.afind)(task.pk) is None  # another task's id


@pytest.mark.django_db(transaction=True)
def test_real_worker__runs_an_async_task_enqueued_from_an_async_view() -> None:
    response = async_to_sync(AsyncClient().get)("/async/record/a7/")
    task_id = response.json()["id"]

    proc = start_worker(["--burst"])
    _out, err = proc.communicate(timeout=60)

    assert proc.returncode == 0, err
    wait_for(lambda: CompletedTask.objects.filter(task_id=task_id).exists(), timeout=10)
    record = CompletedTask.objects.get(task_id=task_id)
    assert (record.status, record.result) == ("succeeded", "async a7")
    assert TaskRun.objects.filter(key="a7").count() == 1
    assert "never awaited" not in err
