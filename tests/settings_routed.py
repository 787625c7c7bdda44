"""Test settings with background_tasks' tables routed to a second SQLite database.

``ROUTED_DB_DIR`` names the folder of the two files, ``ROUTER`` the router class in
``tests.routers`` (``QueueRouter`` unless set).
"""

from __future__ import annotations

import os
from pathlib import Path

from tests import dburl
from tests.settings import *  # noqa: F403

_DIR = Path(os.environ["ROUTED_DB_DIR"])

DATABASES = {
    alias: {
        "ENGINE": dburl.SQLITE_ENGINE,
        "NAME": str(_DIR / f"{alias}.sqlite3"),
        "OPTIONS": dict(dburl.SQLITE_OPTIONS),
    }
    for alias in ("default", "queue")
}
DATABASE_ROUTERS = ["tests.routers." + os.environ.get("ROUTER", "QueueRouter")]
