"""Database routers for the routed-setup tests (tests/test_routing.py)."""

from __future__ import annotations

from typing import Any

QUEUE_DB = "queue"


class QueueRouter:
    """background_tasks' tables in the ``queue`` database, contenttypes beside them."""

    #: Apps whose tables are migrated in the queue database.
    queue_apps = frozenset({"background_tasks", "contenttypes"})

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return QUEUE_DB if model._meta.app_label == "background_tasks" else None

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return self.db_for_read(model)

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        if app_label == "contenttypes":
            return True  # every database with a generic relation needs its own
        return (db == QUEUE_DB) == (app_label in self.queue_apps)


class QueueWithoutContentTypesRouter(QueueRouter):
    """The mistake: only background_tasks in the queue database."""

    queue_apps = frozenset({"background_tasks"})

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return (db == QUEUE_DB) == (app_label in self.queue_apps)
