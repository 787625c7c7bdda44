"""Django settings for the benchmarks and the worker processes they start.

The database comes from ``BENCH_DATABASE_URL`` (set by ``benchmarks/run.py`` from ``--db``), in
the URL forms of ``tests/dburl.py``. Only the apps the queue needs are installed, so that no
test task or schedule of the test suite runs during a measurement.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests import dburl

BASE_DIR = Path(__file__).resolve().parent.parent

DEFAULT_DATABASE_URL = "sqlite:///.test-dbs/bench.sqlite3"
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL

DATABASES = {"default": dburl.parse(DATABASE_URL, BASE_DIR)}

# Knobs set by benchmarks/run.py for the processes it starts (see docs/benchmarks.md):
# CONN_MAX_AGE ("none" = persistent; unset = Django's default, 0) ...
_conn_max_age = os.environ.get("BENCH_CONN_MAX_AGE", "").strip().lower()
if _conn_max_age:
    DATABASES["default"]["CONN_MAX_AGE"] = None if _conn_max_age == "none" else int(_conn_max_age)
# ... and, for the long memory run only, commits that do not wait for the disk on PostgreSQL.
if (
    os.environ.get("BENCH_PG_ASYNC_COMMIT")
    and DATABASES["default"]["ENGINE"] == dburl.POSTGRES_ENGINE
):
    DATABASES["default"]["OPTIONS"]["options"] = "-c synchronous_commit=off"

SECRET_KEY = "background-tasks-benchmarks-not-secret"
DEBUG = False  # with DEBUG, Django keeps every query in memory: it would distort RSS figures
# The dashboard phase requests the admin page through Django's test client.
ALLOWED_HOSTS: list[str] = ["testserver"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    "background_tasks",
    "benchmarks",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "benchmarks.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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
STATIC_URL = "/static/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
