"""Django settings for the background_tasks test suite.

The database comes from the ``DATABASE_URL`` environment variable (see
``tests/dburl.py``); without it, a SQLite *file* under ``.test-dbs/`` in the
repository is used, so that worker subprocesses started by the tests can open
the very same test database.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests import dburl

BASE_DIR = Path(__file__).resolve().parent.parent

DEFAULT_DATABASE_URL = "sqlite:///.test-dbs/default.sqlite3"
DATABASE_URL = os.environ.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL

DATABASES = {"default": dburl.parse(DATABASE_URL, BASE_DIR)}

SECRET_KEY = "background-tasks-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    "background_tasks",
    "tests.testapp",
    "tests.legacy_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Fast hashing for the admin users the tests create.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = True

STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "root": {"handlers": ["null"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": ["null"], "level": "ERROR", "propagate": False},
        "background_tasks": {"handlers": ["null"], "level": "WARNING", "propagate": True},
    },
}

# Worker subprocesses started by the real-process tests (tests/test_worker_process.py) need
# heartbeats and rescues in fractions of a second; the test passes them in the environment.
if os.environ.get("BACKGROUND_TASKS_HEARTBEAT_INTERVAL"):
    BACKGROUND_TASKS_HEARTBEAT_INTERVAL = float(os.environ["BACKGROUND_TASKS_HEARTBEAT_INTERVAL"])
if os.environ.get("BACKGROUND_TASKS_RESCUE_AFTER"):
    BACKGROUND_TASKS_RESCUE_AFTER = float(os.environ["BACKGROUND_TASKS_RESCUE_AFTER"])
# Pruning passes often and in small batches, for the retention tests' worker subprocesses.
if os.environ.get("BACKGROUND_TASKS_PRUNE_INTERVAL"):
    BACKGROUND_TASKS_PRUNE_INTERVAL = float(os.environ["BACKGROUND_TASKS_PRUNE_INTERVAL"])
if os.environ.get("BACKGROUND_TASKS_PRUNE_BATCH_SIZE"):
    BACKGROUND_TASKS_PRUNE_BATCH_SIZE = int(os.environ["BACKGROUND_TASKS_PRUNE_BATCH_SIZE"])
# The legacy name of the default hard time limit, for the process-mode tests
# (tests/test_process_mode.py); only the supervised worker subprocesses get it.
if os.environ.get("MAX_RUN_TIME"):
    MAX_RUN_TIME = float(os.environ["MAX_RUN_TIME"])

# Worker subprocesses of the django.tasks conformance tests (tests/test_django_tasks_conformance.py)
# must find the backend in TASKS, as a project's workers do; in process the tests set it with
# override_settings.
if os.environ.get("BACKGROUND_TASKS_TEST_DJANGO_TASKS"):
    TASKS = {"default": {"BACKEND": "background_tasks.backends.DatabaseBackend", "QUEUES": []}}

# The outage and poison-task tests (tests/test_database_outages.py, tests/test_poison_tasks.py)
# shorten these for their worker subprocesses.
for _name in ("BURST_OUTAGE_LIMIT", "OUTAGE_BACKOFF_FIRST", "OUTAGE_BACKOFF_MAX"):
    if os.environ.get("BACKGROUND_TASKS_" + _name):
        globals()["BACKGROUND_TASKS_" + _name] = float(os.environ["BACKGROUND_TASKS_" + _name])
if os.environ.get("BACKGROUND_TASKS_MAX_HANDBACKS"):
    BACKGROUND_TASKS_MAX_HANDBACKS = int(os.environ["BACKGROUND_TASKS_MAX_HANDBACKS"])
