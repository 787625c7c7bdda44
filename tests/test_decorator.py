"""``@background``: registering tasks, their options, and the registry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from background_tasks import Backoff, background, registry
from background_tasks.exceptions import (
    DuplicateTaskName,
    InvalidTaskError,
    TaskNotRegistered,
    TaskRedefinedWarning,
)
from background_tasks.models import Task
from background_tasks.task_function import RESERVED_KWARGS, TaskFunction
from tests.testapp import tasks


@pytest.fixture(autouse=True)
def _forget_tasks_defined_here() -> Iterator[None]:
    """Unregister the tasks a test defines, so that names can be reused."""
    before = set(registry)
    yield
    for name in set(registry) - before:
        registry.unregister(name)


# -- registering --------------------------------------------------------------------------------


def test_bare_decorator__registers_under_the_dotted_path_of_the_function() -> None:
    assert isinstance(tasks.record, TaskFunction)
    assert tasks.record.name == "tests.testapp.tasks.record"
    assert registry.get("tests.testapp.tasks.record") is tasks.record
    assert "tests.testapp.tasks.record" in registry


def test_decorator_with_options__keeps_them_on_the_task() -> None:
    backoff = Backoff(exponent=2)

    @background(
        name="tests.with_options",
        schedule=60,
        queue="reports",
        priority=7,
        max_attempts=4,
        backoff=backoff,
        remove_existing_tasks=True,
    )
    def build_report(report_id: int) -> None: ...

    assert registry.get("tests.with_options") is build_report
    assert build_report.schedule == 60
    assert build_report.queue == "reports"
    assert build_report.priority == 7
    assert build_report.max_attempts == 4
    assert build_report.backoff is backoff
    assert build_report.remove_existing_tasks is True


def test_decorator_with_options__without_a_name_uses_the_dotted_path() -> None:
    @background(queue="reports")
    def nested() -> None: ...

    # <module>.<function name>, as django-background-tasks named nested functions too.
    assert nested.name == "tests.test_decorator.nested"
    assert nested.name in registry


def test_decorator__a_string_as_the_only_argument_is_the_name() -> None:
    @background("tests.named_positionally")
    def job() -> None: ...

    assert job.name == "tests.named_positionally"
    assert registry.get("tests.named_positionally") is job


def test_decorator__a_name_given_twice_is_an_error() -> None:
    with pytest.raises(InvalidTaskError, match="either positionally or as name="):
        background("tests.one", name="tests.two")


def test_decorator__keeps_the_functions_name_and_docstring() -> None:
    @background(name="tests.documented")
    def documented(x: int) -> int:
        """Double x."""
        return 2 * x

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Double x."
    assert documented.__wrapped__.__name__ == "documented"  # type: ignore[attr-defined]


def test_now__runs_the_function_inline_and_returns_its_value() -> None:
    @background(name="tests.doubles")
    def doubles(x: int) -> int:
        return 2 * x

    assert doubles.now(21) == 42


@pytest.mark.django_db
def test_now__writes_no_row() -> None:
    assert tasks.send_newsletter.now(5, template="direct") == "sent direct to 5"

    assert tasks.CALLS == [((5,), {"template": "direct"})]
    assert not Task.objects.exists()


@pytest.mark.django_db
def test_calling__enqueues_and_returns_the_task_instead_of_running_it() -> None:
    task = tasks.send_newsletter(5)

    assert isinstance(task, Task)
    assert task.pk is not None
    assert Task.objects.get() == task
    assert tasks.CALLS == []


# -- names --------------------------------------------------------------------------------------


def test_registry__two_different_functions_under_one_name_is_an_error() -> None:
    @background(name="tests.taken")
    def first() -> None: ...

    with pytest.raises(DuplicateTaskName) as error:

        @background(name="tests.taken")
        def second() -> None: ...

    assert isinstance(error.value, ImproperlyConfigured)
    assert "tests.taken" in str(error.value)
    assert "first" in str(error.value)
    assert "second" in str(error.value)
    assert registry.get("tests.taken") is first


def test_registry__a_name_clashing_with_an_existing_task_is_an_error() -> None:
    with pytest.raises(DuplicateTaskName, match=r"tests\.testapp\.tasks\.record"):

        @background(name="tests.testapp.tasks.record")
        def record(key: str) -> None: ...

    assert registry.get("tests.testapp.tasks.record") is tasks.record


def test_registry__the_same_function_registered_again_replaces_itself() -> None:
    def job() -> None: ...

    first = background(name="tests.reimported")(job)
    second = background(name="tests.reimported")(job)

    assert registry.get("tests.reimported") is second
    assert first is not second


def _define_in_set_up() -> TaskFunction[[], None]:
    # What a test's setUp() does: execute the same definition again, a new function each time.
    @background(name="tests.defined_in_set_up")
    def job() -> None: ...

    return job


def test_registry__the_same_definition_executed_again_replaces_it_with_a_warning() -> None:
    first = _define_in_set_up()

    with pytest.warns(TaskRedefinedWarning, match="'tests.defined_in_set_up'.*was defined again"):
        second = _define_in_set_up()

    assert registry.get("tests.defined_in_set_up") is second
    assert second.func is not first.func


def _outer_a() -> TaskFunction[[], None]:
    @background
    def shared_name() -> None: ...

    return shared_name


def _outer_b() -> TaskFunction[[], None]:
    @background
    def shared_name() -> None: ...

    return shared_name


def test_registry__two_nested_functions_of_one_name_in_one_module_clash_naming_the_fix() -> None:
    first = _outer_a()
    assert first.name == "tests.test_decorator.shared_name"

    with pytest.raises(DuplicateTaskName) as error:
        _outer_b()

    message = str(error.value)
    assert "'tests.test_decorator.shared_name'" in message
    assert "_outer_a.<locals>.shared_name" in message
    assert "_outer_b.<locals>.shared_name" in message
    assert "Pass a distinct name=" in message
    assert registry.get("tests.test_decorator.shared_name") is first


def test_registry__an_unknown_name_raises_task_not_registered() -> None:
    with pytest.raises(TaskNotRegistered) as error:
        registry.get("tests.nowhere")

    assert "No task is registered as 'tests.nowhere'" in str(error.value)

    assert isinstance(error.value, LookupError)


def test_registry__an_unknown_name_close_to_a_registered_one_offers_it() -> None:
    with pytest.raises(TaskNotRegistered) as error:
        registry.get("tests.testapp.tasks.recrod")

    assert "Did you mean 'tests.testapp.tasks.record'?" in str(error.value)


def test_registry__the_bare_function_name_offers_the_registered_full_name() -> None:
    with pytest.raises(TaskNotRegistered) as error:
        registry.get("send_newsletter")

    assert "Did you mean 'tests.testapp.tasks.send_newsletter'?" in str(error.value)


def test_registry__a_name_close_to_nothing_offers_nothing() -> None:
    with pytest.raises(TaskNotRegistered) as error:
        registry.get("tests.nowhere")

    assert "Did you mean" not in str(error.value)


def test_registry__iterates_over_names_in_order() -> None:
    names = list(registry)

    assert names == sorted(names)
    assert len(registry) == len(names)
    assert "tests.testapp.tasks.send_newsletter" in names


def test_registry__unregister_forgets_the_name() -> None:
    @background(name="tests.short_lived")
    def job() -> None: ...

    registry.unregister("tests.short_lived")

    assert "tests.short_lived" not in registry


# -- bad definitions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": 5}, "non-empty string"),
        ({"name": "x" * 256}, "longer than 255"),
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"queue": 5}, "queue must be a non-empty string"),
        ({"queue": "q" * 101}, "is refused: it is longer than 100 characters"),
        ({"priority": "high"}, "priority must be an integer"),
        ({"priority": True}, "priority must be an integer"),
        ({"max_attempts": 0}, "max_attempts must be an integer >= 1"),
        ({"max_attempts": 2.5}, "max_attempts must be an integer >= 1"),
        ({"backoff": -1}, "backoff must be"),
        ({"backoff": "exponential"}, "backoff must be"),
        ({"schedule": "tomorrow"}, "schedule must be seconds, a timedelta or a datetime"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"retries": 3}, "unknown option(s): ['retries']"),
    ],
)
def test_decorator__refuses_bad_options_and_registers_nothing(
    options: dict[str, Any], message: str
) -> None:
    before = set(registry)

    with pytest.raises(InvalidTaskError) as error:

        @background(**{"name": "tests.bad_options", **options})
        def job() -> None: ...

    assert message in str(error.value)
    assert set(registry) == before


def test_decorator__refuses_to_decorate_something_not_callable() -> None:
    with pytest.raises(InvalidTaskError, match="decorates functions"):
        background(name="tests.not_callable")(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("parameter", sorted(RESERVED_KWARGS))
def test_decorator__refuses_a_function_whose_parameter_clashes_with_a_call_option(
    parameter: str,
) -> None:
    namespace: dict[str, Any] = {}
    exec(f"def job({parameter}=None): pass", namespace)

    with pytest.raises(InvalidTaskError, match=f"\\['{parameter}'\\] clash"):
        background(name="tests.clashing")(namespace["job"])
    assert "tests.clashing" not in registry


def test_decorator__accepts_every_documented_backoff_form() -> None:
    forms = [0, 30, 2.5, Backoff(), lambda attempts: timedelta(seconds=attempts)]
    for index, backoff in enumerate(forms):

        @background(name=f"tests.backoff_{index}", backoff=backoff)
        def job() -> None: ...

        assert job.backoff is backoff
