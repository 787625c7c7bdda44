"""Whether background_tasks' migrations are applied: checked before anything uses the tables.

Without the check a worker started before ``migrate`` would take "no such table" for a database
outage and retry for ever, and a web request would fail with a bare database error. The answer
is cached per database alias once it is yes, so an enqueue pays for it once per process.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading

from django.db import connections
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder

from .exceptions import NotMigrated

APP_LABEL = "background_tasks"

_migrated: set[str] = set()
_lock = threading.Lock()


def require_migrated(using: str) -> None:
    """Raise ``NotMigrated`` unless this app's migrations are applied on database ``using``."""
    if using in _migrated:
        return
    problem = missing_schema(using)
    if problem:
        raise NotMigrated(
            f"background_tasks is not set up in database {using!r} ({problem}): "
            "run `python manage.py migrate` first."
        )
    with _lock:
        _migrated.add(using)


def require_migrated_for_command(using: str, returncode: int = 1) -> None:
    """``require_migrated`` for a command: one line and exit ``returncode``, no traceback.

    A database that cannot be reached is not an answer: the command goes on and meets the outage
    where it knows how to wait for the database.
    """
    from django.core.management.base import CommandError
    from django.db import InterfaceError, OperationalError

    try:
        require_migrated(using)
    except NotMigrated as exc:
        raise CommandError(str(exc), returncode=returncode) from None
    except (OperationalError, InterfaceError):
        pass


def missing_schema(using: str) -> str | None:
    """Say what is missing from database ``using`` (None when nothing is)."""
    names = _migration_names()
    if names is None:
        # Migrations disabled for this app (MIGRATION_MODULES): the tables are all we can check.
        return _missing_tables(using)
    recorder = MigrationRecorder(connections[using])
    applied = {name for app, name in recorder.applied_migrations() if app == APP_LABEL}
    unapplied = sorted(set(names) - applied)
    if unapplied:
        return "unapplied migrations: " + ", ".join(f"{APP_LABEL}.{n}" for n in unapplied)
    return None


def forget() -> None:
    """Forget earlier answers (for tests that drop and re-create the tables)."""
    with _lock:
        _migrated.clear()


def _migration_names() -> list[str] | None:
    module_name, _explicit = MigrationLoader.migrations_module(APP_LABEL)
    if module_name is None:
        return None
    module = importlib.import_module(module_name)
    return [
        info.name
        for info in pkgutil.iter_modules(module.__path__)
        if not info.ispkg and info.name[0] not in "_~"
    ]


def _missing_tables(using: str) -> str | None:
    from django.apps import apps

    existing = set(connections[using].introspection.table_names())
    missing = sorted(
        model._meta.db_table
        for model in apps.get_app_config(APP_LABEL).get_models()
        if model._meta.db_table not in existing
    )
    return "missing tables: " + ", ".join(missing) if missing else None
