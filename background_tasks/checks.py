"""System checks for misconfiguration, with stable ids (``background_tasks.E001`` ...)."""

from __future__ import annotations

import difflib
import importlib.util
import math
import sqlite3
from collections.abc import Sequence
from typing import Any

import django
from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DatabaseError, connections, router

from .charsets import table_charsets
from .conf import PREFIX, app_settings, setting_names

_NUMBERS = {
    "POLL_INTERVAL": 0.0,
    "HEARTBEAT_INTERVAL": 0.001,
    "RESCUE_AFTER": 0.001,
    "SHUTDOWN_GRACE": 0.0,
    "BACKOFF_EXPONENT": 0.0,
    "BACKOFF_BASE": 0.0,
    "BACKOFF_MAX": 0.0,
    "BACKOFF_JITTER": 0.0,
    "SCHEDULE_MISFIRE_GRACE": 0.0,
    "PROGRESS_INTERVAL": 0.0,
    "OUTAGE_BACKOFF_FIRST": 0.001,
    "OUTAGE_BACKOFF_MAX": 0.001,
    "BURST_OUTAGE_LIMIT": 0.0,
    "MAX_HANDBACKS": 0,
    "PRUNE_INTERVAL": 0.001,
    "PRUNE_BATCH_SIZE": 1,
    "BATCH_SIZE": 1,
    "BATCH_WINDOW": 0.0,
}
#: Settings that are a number of days >= 0, or None.
_OPTIONAL_DAYS = ("RETAIN_SUCCEEDED_DAYS", "RETAIN_FAILED_DAYS", "RETAIN_CANCELLED_DAYS")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@register(Tags.compatibility)
def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    max_attempts = app_settings.MAX_ATTEMPTS
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        errors.append(
            Error(
                f"MAX_ATTEMPTS must be an integer >= 1, not {max_attempts!r}.",
                hint=f"Set {PREFIX}MAX_ATTEMPTS (or the legacy MAX_ATTEMPTS) to e.g. 25.",
                id="background_tasks.E002",
            )
        )
    if str(app_settings.PRIORITY_ORDERING).upper() not in ("ASC", "DESC", "PRIORITY", "-PRIORITY"):
        errors.append(
            Error(
                "PRIORITY_ORDERING must be 'DESC' or 'ASC', "
                f"not {app_settings.PRIORITY_ORDERING!r}.",
                id="background_tasks.E003",
            )
        )
    for name, minimum in _NUMBERS.items():
        value = getattr(app_settings, name)
        if not _is_number(value) or not value >= minimum:  # "not >=" also catches NaN
            errors.append(
                Error(
                    f"{PREFIX}{name} must be a number >= {minimum:g}, not {value!r}.",
                    id="background_tasks.E004",
                )
            )
    for name in _OPTIONAL_DAYS:
        value = getattr(app_settings, name)
        if value is not None and (not _is_number(value) or not value >= 0):
            errors.append(
                Error(
                    f"{PREFIX}{name} must be a number of days >= 0 or None, not {value!r}.",
                    hint="None keeps that history for ever.",
                    id="background_tasks.E004",
                )
            )
    jitter = app_settings.BACKOFF_JITTER
    if _is_number(jitter) and jitter > 1:
        errors.append(
            Error(
                f"{PREFIX}BACKOFF_JITTER is a fraction from 0 to 1, not {jitter!r}.",
                hint="Above 1 some retries would get a negative delay and run at once.",
                id="background_tasks.E004",
            )
        )
    for name in ("MAX_HANDBACKS", "BATCH_SIZE"):
        whole = getattr(app_settings, name)
        if _is_number(whole) and math.isfinite(whole) and whole != int(whole):
            errors.append(
                Error(
                    f"{PREFIX}{name} must be a whole number, not {whole!r}.",
                    id="background_tasks.E004",
                )
            )
    first, cap = app_settings.OUTAGE_BACKOFF_FIRST, app_settings.OUTAGE_BACKOFF_MAX
    if _is_number(first) and _is_number(cap) and first > cap:
        errors.append(
            Error(
                f"{PREFIX}OUTAGE_BACKOFF_FIRST ({first!r}) must not be longer than "
                f"{PREFIX}OUTAGE_BACKOFF_MAX ({cap!r}).",
                id="background_tasks.E004",
            )
        )
    memory = app_settings.MAX_MEMORY
    if memory is not None and (not _is_number(memory) or not memory > 0):
        errors.append(
            Error(
                f"{PREFIX}MAX_MEMORY must be a number of megabytes > 0 or None, not {memory!r}.",
                id="background_tasks.E004",
            )
        )
    run_time = app_settings.MAX_RUN_TIME
    if run_time is not None and (not _is_number(run_time) or not run_time > 0):
        errors.append(
            Error(
                f"MAX_RUN_TIME must be a number of seconds > 0 or None, not {run_time!r}.",
                id="background_tasks.E005",
            )
        )
    concurrency = getattr(settings, PREFIX + "CONCURRENCY", 1)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        errors.append(
            Error(
                f"{PREFIX}CONCURRENCY must be an integer >= 1, not {concurrency!r}.",
                id="background_tasks.E006",
            )
        )
    rescue_after, heartbeat = app_settings.RESCUE_AFTER, app_settings.HEARTBEAT_INTERVAL
    if _is_number(rescue_after) and _is_number(heartbeat) and rescue_after <= heartbeat:
        errors.append(
            Error(
                f"{PREFIX}RESCUE_AFTER ({app_settings.RESCUE_AFTER}) must be longer than "
                f"{PREFIX}HEARTBEAT_INTERVAL ({app_settings.HEARTBEAT_INTERVAL}), or live workers "
                "would be taken for lost.",
                hint="Keep RESCUE_AFTER at several heartbeat intervals "
                "(the defaults are 60 and 10).",
                id="background_tasks.E007",
            )
        )
    known = set(setting_names())
    for name in dir(settings):
        if name.startswith(PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
            errors.append(
                Warning(
                    f"Unknown setting {name}: background_tasks has no such setting.",
                    hint=f"Did you mean {close[0]}?"
                    if close
                    else "The settings are listed in docs/settings.md.",
                    id="background_tasks.W001",
                )
            )
    errors.extend(_check_databases())
    errors.extend(_check_routing())
    errors.extend(_check_schedules())
    errors.extend(_check_tasks_framework())
    return errors


def _has_tasks_framework() -> bool:
    """Return True if ``django.tasks`` (Django 6.0+) or the django-tasks backport is importable."""
    return any(importlib.util.find_spec(name) for name in ("django.tasks", "django_tasks"))


def _check_tasks_framework() -> list[CheckMessage]:
    """``TASKS`` naming this backend where no tasks framework reads it: tasks would never run.

    Django 5.2 has no ``django.tasks`` and never reads ``TASKS``; without the backport, the
    setting and its backend are silently ignored (the backend's own checks never run either).
    """
    entries = getattr(settings, "TASKS", None)
    if not isinstance(entries, dict) or _has_tasks_framework():
        return []
    named = sorted(
        alias
        for alias, entry in entries.items()
        if isinstance(entry, dict) and str(entry.get("BACKEND", "")).startswith("background_tasks.")
    )
    if not named:
        return []
    return [
        Warning(
            f"TASKS names a background_tasks backend ({', '.join(map(repr, named))}), but this is "
            f"Django {django.get_version()} without a tasks framework: nothing reads TASKS.",
            hint="On Django 5.2 install the django-tasks backport: "
            "pip install 'django-background-tasks-db[django-tasks]' (see docs/django-tasks.md); "
            "or enqueue with @background.",
            id="background_tasks.W003",
        )
    ]


def _check_schedules() -> list[CheckMessage]:
    from .periodic import read_settings_schedules

    _definitions, errors = read_settings_schedules()
    return [Error(message, id="background_tasks.E009") for message in errors]


def _check_routing() -> list[CheckMessage]:
    """The tasks' table points at contenttypes' table: both must be in the tasks' database."""
    if not apps.is_installed("django.contrib.contenttypes"):
        return []  # models.py refuses to load without it
    from django.contrib.contenttypes.models import ContentType

    from .models import Task

    using = router.db_for_write(Task)
    if router.allow_migrate_model(using, Task) and not router.allow_migrate_model(
        using, ContentType
    ):
        return [
            Error(
                f"The background_tasks tables are routed to database {using!r}, but your "
                "routers do not migrate django.contrib.contenttypes there: the task table "
                "refers to the content type table, so no task could be written.",
                hint=f"Let allow_migrate() return True for app 'contenttypes' on {using!r} "
                "(see docs/installation.md, 'Another database for the tables').",
                id="background_tasks.E010",
            )
        ]
    return []


def _check_databases() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for alias, config in settings.DATABASES.items():
        if "sqlite3" not in config.get("ENGINE", ""):
            continue
        if sqlite3.sqlite_version_info < (3, 35):
            messages.append(
                Error(
                    f"SQLite {sqlite3.sqlite_version} is too old for background_tasks "
                    "(3.35+ needed, "
                    "for UPDATE ... RETURNING).",
                    hint="Use a Python built against a newer SQLite.",
                    id="background_tasks.E008",
                )
            )
        options = config.get("OPTIONS", {})
        if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
            messages.append(
                Warning(
                    f"Database {alias!r} is SQLite without "
                    "OPTIONS['transaction_mode'] = 'IMMEDIATE'.",
                    hint="With several workers, transactions that read before they write can fail "
                    "with 'database is locked'. Set 'transaction_mode': 'IMMEDIATE' and "
                    "'init_command': 'PRAGMA journal_mode=WAL;' (see docs/installation.md).",
                    id="background_tasks.W002",
                )
            )
    return messages


@register(Tags.database)
def check_table_charsets(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """Warn when the queue tables on MariaDB/MySQL cannot hold 4-byte characters.

    A database created as ``utf8`` (``utf8mb3``) keeps its tables so whatever charset the
    connection uses. Run by ``migrate`` and ``check --database``, like Django's own database
    checks; before the tables exist, the database's default character set is what they will get.
    """
    from .models import Task

    using = router.db_for_write(Task)
    if not databases or using not in databases or connections[using].vendor != "mysql":
        return []
    try:
        charsets = table_charsets(using)
        where = "tables"
        if not charsets:
            with connections[using].cursor() as cursor:
                cursor.execute("SELECT LOWER(@@character_set_database)")
                charsets = {cursor.fetchone()[0]}
            where = "database (whose character set new tables get)"
    except DatabaseError:
        return []  # not reachable: other checks and commands will say so
    narrow = sorted(charsets - {"utf8mb4"})
    if not narrow:
        return []
    return [
        Warning(
            f"The background_tasks {where} on database {using!r} use the character set "
            f"{', '.join(narrow)}, which cannot hold 4-byte characters (emoji, some CJK): "
            "a verbose_name with one is refused by the database, and the worker stores them "
            "in errors as \\U escapes.",
            hint=f"Convert the tables: ALTER TABLE {Task._meta.db_table} CONVERT TO CHARACTER "
            "SET utf8mb4; and the same for background_tasks_completedtask "
            "(see docs/installation.md).",
            id="background_tasks.W010",
        )
    ]
