"""A task's effective options (``options_of``): the row, then the function, then the settings."""

from __future__ import annotations

import pytest
from django.test import override_settings

from background_tasks.models import Task
from background_tasks.options import EffectiveOptions, options_of
from background_tasks.registry import registry

FLAKY = "tests.flaky"  # backoff=300, nothing else set
OVERRUNS = "tests.overruns"  # timeout=1, max_attempts=2, backoff=0
NEWSLETTER = "tests.testapp.tasks.send_newsletter"  # queue="emails", max_attempts=5


def test_options_of__a_name_with_nothing_set_takes_every_option_from_the_settings() -> None:
    with override_settings(
        BACKGROUND_TASKS_DEFAULT_QUEUE="main",
        BACKGROUND_TASKS_DEFAULT_PRIORITY=3,
        BACKGROUND_TASKS_MAX_ATTEMPTS=7,
        BACKGROUND_TASKS_MAX_RUN_TIME=90,
    ):
        options = options_of("tests.testapp.tasks.record")

    assert options == EffectiveOptions(
        queue="main", priority=3, max_attempts=7, backoff=None, time_limit=90.0
    )


def test_options_of__the_task_function_s_options_come_before_the_settings() -> None:
    with override_settings(BACKGROUND_TASKS_MAX_RUN_TIME=90, BACKGROUND_TASKS_MAX_ATTEMPTS=7):
        overruns = options_of(OVERRUNS)
        newsletter = options_of(NEWSLETTER)

    assert (overruns.max_attempts, overruns.backoff, overruns.time_limit) == (2, 0, 1.0)
    assert (newsletter.queue, newsletter.max_attempts, newsletter.time_limit) == ("emails", 5, 90)


def test_options_of__a_task_function_and_its_name_give_the_same_options() -> None:
    assert options_of(registry.get(NEWSLETTER)) == options_of(NEWSLETTER)


def test_options_of__the_row_s_own_options_come_before_the_function_s() -> None:
    row = Task(task_name=NEWSLETTER, queue="urgent", priority=-4, max_attempts=9)

    options = options_of(row)

    assert (options.queue, options.priority, options.max_attempts) == ("urgent", -4, 9)


def test_options_of__a_row_without_a_budget_takes_the_function_s_then_the_setting() -> None:
    with override_settings(BACKGROUND_TASKS_MAX_ATTEMPTS=7):
        assert options_of(Task(task_name=NEWSLETTER, max_attempts=None)).max_attempts == 5
        assert options_of(Task(task_name=FLAKY, max_attempts=None)).max_attempts == 7


def test_options_of__a_row_s_backoff_and_time_limit_come_from_its_function() -> None:
    options = options_of(Task(task_name=FLAKY))

    assert options.backoff == 300
    assert options.time_limit is None


def test_options_of__a_name_no_longer_registered_takes_the_settings() -> None:
    with override_settings(BACKGROUND_TASKS_MAX_ATTEMPTS=7, BACKGROUND_TASKS_MAX_RUN_TIME=None):
        options = options_of(Task(task_name="gone.from.the.code", queue="q", priority=1))

    assert options == EffectiveOptions(
        queue="q", priority=1, max_attempts=7, backoff=None, time_limit=None
    )


def test_options_of__is_frozen() -> None:
    options = options_of(NEWSLETTER)

    with pytest.raises(AttributeError):
        options.queue = "other"  # type: ignore[misc]
