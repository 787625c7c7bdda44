"""Settings: prefixed names read on every access, legacy names, and the system checks."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.core import checks as django_checks
from django.test import override_settings

from background_tasks import checks
from background_tasks.conf import PREFIX, app_settings, setting_names


def ids(**overrides: Any) -> list[str]:
    """Run background_tasks' system checks with these settings; return the message ids."""
    with override_settings(**overrides):
        return [message.id for message in checks.check_settings()]


def messages(check_id: str, **overrides: Any) -> list[str]:
    with override_settings(**overrides):
        return [m.msg for m in checks.check_settings() if m.id == check_id]


@contextmanager
def databases(config: dict[str, Any]) -> Iterator[None]:
    """Show the checks another DATABASES setting (Django warns about overriding it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with override_settings(DATABASES=config):
            yield


# -- reading settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("IMMEDIATE", False),
        ("AUTODISCOVER", True),
        ("DEFAULT_QUEUE", "default"),
        ("DEFAULT_PRIORITY", 0),
        ("PRIORITY_ORDERING", "DESC"),
        ("MAX_ATTEMPTS", 25),
        ("MAX_RUN_TIME", None),
        ("BACKOFF_EXPONENT", 4.0),
        ("BACKOFF_BASE", 5.0),
        ("BACKOFF_MAX", 7 * 24 * 3600.0),
        ("BACKOFF_JITTER", 0.1),
        ("POLL_INTERVAL", 5.0),
        ("HEARTBEAT_INTERVAL", 10.0),
        ("RESCUE_AFTER", 60.0),
        ("SHUTDOWN_GRACE", 30.0),
        ("STORE_RESULTS", True),
        ("CONCURRENCY", 1),
    ],
)
def test_setting__has_its_documented_default(name: str, default: object) -> None:
    assert getattr(app_settings, name) == default


def test_setting__defaults_are_never_written_into_django_settings() -> None:
    assert app_settings.MAX_ATTEMPTS == 25

    assert not hasattr(settings, "BACKGROUND_TASKS_MAX_ATTEMPTS")


def test_setting__is_read_from_the_prefixed_name_on_every_access() -> None:
    with override_settings(BACKGROUND_TASKS_POLL_INTERVAL=0.5):
        assert app_settings.POLL_INTERVAL == 0.5
        with override_settings(BACKGROUND_TASKS_POLL_INTERVAL=2):
            assert app_settings.POLL_INTERVAL == 2
    assert app_settings.POLL_INTERVAL == 5.0


@pytest.mark.parametrize(
    ("legacy", "name", "value"),
    [
        ("MAX_ATTEMPTS", "MAX_ATTEMPTS", 7),
        ("MAX_RUN_TIME", "MAX_RUN_TIME", 120),
        ("BACKGROUND_TASK_PRIORITY_ORDERING", "PRIORITY_ORDERING", "ASC"),
    ],
)
def test_legacy_name__is_honoured_when_the_prefixed_name_is_not_set(
    legacy: str, name: str, value: object
) -> None:
    with override_settings(**{legacy: value}):
        assert getattr(app_settings, name) == value


@pytest.mark.parametrize(
    ("legacy", "name", "legacy_value", "value"),
    [
        ("MAX_ATTEMPTS", "MAX_ATTEMPTS", 7, 3),
        ("MAX_RUN_TIME", "MAX_RUN_TIME", 120, 30),
        ("BACKGROUND_TASK_PRIORITY_ORDERING", "PRIORITY_ORDERING", "ASC", "DESC"),
    ],
)
def test_legacy_name__loses_to_the_prefixed_name(
    legacy: str, name: str, legacy_value: object, value: object
) -> None:
    with override_settings(**{legacy: legacy_value, PREFIX + name: value}):
        assert getattr(app_settings, name) == value


def test_concurrency__legacy_run_async_uses_the_async_threads_setting() -> None:
    with override_settings(BACKGROUND_TASK_RUN_ASYNC=True, BACKGROUND_TASK_ASYNC_THREADS=3):
        assert app_settings.CONCURRENCY == 3


def test_concurrency__legacy_run_async_without_threads_uses_the_cpu_count() -> None:
    with override_settings(BACKGROUND_TASK_RUN_ASYNC=True):
        concurrency = app_settings.CONCURRENCY

    assert concurrency == (os.cpu_count() or 1)


def test_concurrency__legacy_threads_without_run_async_change_nothing() -> None:
    with override_settings(BACKGROUND_TASK_ASYNC_THREADS=3):
        assert app_settings.CONCURRENCY == 1


def test_concurrency__the_prefixed_name_wins_over_the_legacy_ones() -> None:
    with override_settings(
        BACKGROUND_TASKS_CONCURRENCY=2,
        BACKGROUND_TASK_RUN_ASYNC=True,
        BACKGROUND_TASK_ASYNC_THREADS=8,
    ):
        assert app_settings.CONCURRENCY == 2


@pytest.mark.parametrize(
    ("ordering", "descending"),
    [
        ("DESC", True),
        ("desc", True),
        ("-priority", True),
        ("ASC", False),
        ("asc", False),
        ("priority", False),
    ],
)
def test_priority_ordering__accepts_both_spellings(ordering: str, descending: bool) -> None:
    with override_settings(BACKGROUND_TASKS_PRIORITY_ORDERING=ordering):
        assert app_settings.priority_descending is descending


def test_setting_names__lists_every_prefixed_setting() -> None:
    names = setting_names()

    assert "BACKGROUND_TASKS_MAX_ATTEMPTS" in names
    assert "BACKGROUND_TASKS_CONCURRENCY" in names
    assert "BACKGROUND_TASKS_SCHEDULES" in names
    assert all(name.startswith(PREFIX) for name in names)


# -- system checks ------------------------------------------------------------------------------


def test_checks__the_test_settings_pass() -> None:
    assert checks.check_settings() == []


def test_checks__are_registered_with_django() -> None:
    with override_settings(BACKGROUND_TASKS_PRIORITY_ORDERING="RANDOM"):
        found = [m.id for m in django_checks.run_checks(tags=[django_checks.Tags.compatibility])]

    assert "background_tasks.E003" in found


@pytest.mark.parametrize(
    "overrides",
    [
        {"BACKGROUND_TASKS_MAX_ATTEMPTS": 0},
        {"BACKGROUND_TASKS_MAX_ATTEMPTS": "5"},
        {"BACKGROUND_TASKS_MAX_ATTEMPTS": True},
        {"MAX_ATTEMPTS": -1},
    ],
)
def test_e002__max_attempts_must_be_a_positive_integer(overrides: dict[str, Any]) -> None:
    assert ids(**overrides) == ["background_tasks.E002"]


@pytest.mark.parametrize(
    "overrides",
    [{"BACKGROUND_TASKS_PRIORITY_ORDERING": "RANDOM"}, {"BACKGROUND_TASK_PRIORITY_ORDERING": "up"}],
)
def test_e003__priority_ordering_must_be_asc_or_desc(overrides: dict[str, Any]) -> None:
    assert ids(**overrides) == ["background_tasks.E003"]


@pytest.mark.parametrize(
    "name",
    [
        "POLL_INTERVAL",
        "SHUTDOWN_GRACE",
        "BACKOFF_EXPONENT",
        "BACKOFF_BASE",
        "BACKOFF_MAX",
        "BACKOFF_JITTER",
        "OUTAGE_BACKOFF_FIRST",
        "BURST_OUTAGE_LIMIT",
        "MAX_HANDBACKS",
        "BATCH_SIZE",
        "BATCH_WINDOW",
    ],
)
@pytest.mark.parametrize("value", [-1, "5", None, float("nan")])
def test_e004__numeric_settings_must_be_numbers_not_below_their_minimum(
    name: str, value: object
) -> None:
    errors = messages("background_tasks.E004", **{PREFIX + name: value})

    assert len(errors) == 1
    assert PREFIX + name in errors[0]


@pytest.mark.parametrize("name", ["HEARTBEAT_INTERVAL", "RESCUE_AFTER"])
def test_e004__heartbeat_and_rescue_window_must_be_above_zero(name: str) -> None:
    assert "background_tasks.E004" in ids(**{PREFIX + name: 0})


def test_e004__backoff_jitter_is_a_fraction_no_larger_than_one() -> None:
    errors = messages("background_tasks.E004", BACKGROUND_TASKS_BACKOFF_JITTER=1.5)

    assert len(errors) == 1
    assert "BACKGROUND_TASKS_BACKOFF_JITTER" in errors[0]


def test_e004__the_first_outage_pause_must_not_be_longer_than_the_cap() -> None:
    errors = messages(
        "background_tasks.E004",
        BACKGROUND_TASKS_OUTAGE_BACKOFF_FIRST=10.0,
        BACKGROUND_TASKS_OUTAGE_BACKOFF_MAX=5.0,
    )

    assert len(errors) == 1
    assert "OUTAGE_BACKOFF_FIRST (10.0) must not be longer than" in errors[0]


@pytest.mark.parametrize("value", [0, -1, "5", None])
def test_e004__the_outage_pause_cap_must_be_a_positive_number(value: object) -> None:
    errors = messages("background_tasks.E004", BACKGROUND_TASKS_OUTAGE_BACKOFF_MAX=value)

    assert errors
    assert all("OUTAGE_BACKOFF" in error for error in errors)


@pytest.mark.parametrize("name", ["MAX_HANDBACKS", "BATCH_SIZE"])
def test_e004__whole_number_settings_must_be_whole_numbers(name: str) -> None:
    errors = messages("background_tasks.E004", **{PREFIX + name: 2.5})

    assert errors == [f"{PREFIX}{name} must be a whole number, not 2.5."]


def test_e004__a_batch_holds_at_least_one_task() -> None:
    errors = messages("background_tasks.E004", BACKGROUND_TASKS_BATCH_SIZE=0)

    assert errors == ["BACKGROUND_TASKS_BATCH_SIZE must be a number >= 1, not 0."]


@pytest.mark.parametrize("value", [0, -100, "1G", float("nan")])
def test_e004__max_memory_must_be_positive_megabytes_or_none(value: object) -> None:
    errors = messages("background_tasks.E004", BACKGROUND_TASKS_MAX_MEMORY=value)

    assert len(errors) == 1
    assert "BACKGROUND_TASKS_MAX_MEMORY must be a number of megabytes > 0 or None" in errors[0]


def test_e004__max_memory_none_and_a_number_are_fine() -> None:
    assert not messages("background_tasks.E004", BACKGROUND_TASKS_MAX_MEMORY=None)
    assert not messages("background_tasks.E004", BACKGROUND_TASKS_MAX_MEMORY=512)


@pytest.mark.parametrize("value", [0, -5, "1h", float("nan")])
def test_e005__max_run_time_must_be_positive_seconds_or_none(value: object) -> None:
    assert ids(BACKGROUND_TASKS_MAX_RUN_TIME=value) == ["background_tasks.E005"]


@pytest.mark.parametrize("value", [0, "2", 1.5, True])
def test_e006__concurrency_must_be_a_positive_integer(value: object) -> None:
    assert ids(BACKGROUND_TASKS_CONCURRENCY=value) == ["background_tasks.E006"]


@pytest.mark.parametrize(("rescue_after", "heartbeat"), [(10, 10), (5, 10)])
def test_e007__the_rescue_window_must_be_longer_than_the_heartbeat_interval(
    rescue_after: float, heartbeat: float
) -> None:
    assert ids(
        BACKGROUND_TASKS_RESCUE_AFTER=rescue_after, BACKGROUND_TASKS_HEARTBEAT_INTERVAL=heartbeat
    ) == ["background_tasks.E007"]


SQLITE = {"ENGINE": "django.db.backends.sqlite3", "NAME": "x.sqlite3"}


def test_e008__sqlite_older_than_3_35_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks.sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(checks.sqlite3, "sqlite_version", "3.31.1")

    with databases({"default": {**SQLITE, "OPTIONS": {"transaction_mode": "IMMEDIATE"}}}):
        found = checks.check_settings()

    assert [m.id for m in found] == ["background_tasks.E008"]
    assert "3.31.1" in found[0].msg


def test_e009__a_bad_schedule_in_settings_is_reported() -> None:
    bad = {"nightly": {"task": "tests.testapp.tasks.record", "cron": "every night"}}

    assert ids(BACKGROUND_TASKS_SCHEDULES=bad) == ["background_tasks.E009"]


def test_w001__an_unknown_prefixed_setting_is_probably_a_typo() -> None:
    found = messages("background_tasks.W001", BACKGROUND_TASKS_MAX_ATTEMPT=3)

    assert found == [
        "Unknown setting BACKGROUND_TASKS_MAX_ATTEMPT: background_tasks has no such setting."
    ]


def test_w001__a_typo_gets_the_setting_it_probably_meant_as_hint() -> None:
    with override_settings(BACKGROUND_TASKS_MAX_ATTEMPT=3):
        (found,) = [m for m in checks.check_settings() if m.id == "background_tasks.W001"]

    assert found.hint == "Did you mean BACKGROUND_TASKS_MAX_ATTEMPTS?"


def test_w001__a_name_close_to_no_setting_points_to_the_settings_page() -> None:
    with override_settings(BACKGROUND_TASKS_FLAVOUR="vanilla"):
        (found,) = [m for m in checks.check_settings() if m.id == "background_tasks.W001"]

    assert found.hint == "The settings are listed in docs/settings.md."


def test_e009__every_bad_schedule_is_reported_at_once() -> None:
    bad = {
        "nightly": {"task": "tests.testapp.tasks.record", "cron": "every night"},
        "good": {"task": "tests.testapp.tasks.record", "cron": "0 3 * * *", "args": ["k"]},
        "typo": {"task": "tests.testapp.tasks.recrod", "cron": "0 4 * * *"},
        "not_a_dict": "0 5 * * *",
    }

    found = messages("background_tasks.E009", BACKGROUND_TASKS_SCHEDULES=bad)

    assert len(found) == 3
    assert "SCHEDULES['nightly']" in found[0] and "'every night'" in found[0]
    assert found[1] == (
        "BACKGROUND_TASKS_SCHEDULES['typo']: 'task' must name a registered task, not "
        "'tests.testapp.tasks.recrod'. Did you mean 'tests.testapp.tasks.record'?"
    )
    assert found[2].startswith("BACKGROUND_TASKS_SCHEDULES['not_a_dict'] must be a dict")


@pytest.mark.parametrize("options", [{}, {"transaction_mode": "DEFERRED"}])
def test_w002__sqlite_without_immediate_transactions_is_warned_about(
    options: dict[str, str],
) -> None:
    with databases({"default": {**SQLITE, "OPTIONS": options}}):
        found = [m.id for m in checks.check_settings()]

    assert found == ["background_tasks.W002"]


def test_w002__other_databases_are_not_warned_about() -> None:
    with databases({"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}}):
        assert checks.check_settings() == []


BACKEND = {"default": {"BACKEND": "background_tasks.backends.DatabaseBackend"}}


def test_w003__tasks_naming_this_backend_without_a_tasks_framework_is_warned_about(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(checks, "_has_tasks_framework", lambda: False)

    with override_settings(TASKS=BACKEND):
        (found,) = [m for m in checks.check_settings() if m.id == "background_tasks.W003"]

    assert "TASKS names a background_tasks backend ('default')" in found.msg
    assert "nothing reads TASKS" in found.msg
    assert "django-background-tasks-db[django-tasks]" in found.hint


def test_w003__not_with_a_tasks_framework_nor_for_other_backends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
    monkeypatch.setattr(checks, "_has_tasks_framework", lambda: True)
    with override_settings(TASKS=BACKEND):
        assert "background_tasks.W003" not in [m.id for m in checks.check_settings()]

    monkeypatch.setattr(checks, "_has_tasks_framework", lambda: False)
    with override_settings(TASKS=other):
        assert "background_tasks.W003" not in [m.id for m in checks.check_settings()]


def test_has_tasks_framework__matches_what_this_django_can_import() -> None:
    try:
        import django.tasks  # noqa: F401
    except ImportError:
        try:
            import django_tasks  # noqa: F401
        except ImportError:
            expected = False
        else:
            expected = True
    else:
        expected = True

    assert checks._has_tasks_framework() is expected
