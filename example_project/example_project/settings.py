"""Settings of the example shop: SQLite, the admin, and background_tasks.

For development only (DEBUG, a published SECRET_KEY). The database is always the SQLite file
below (``EXAMPLE_DB_PATH`` moves it); ``DATABASE_URL`` is deliberately not read.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-insecure-not-for-production")
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "background_tasks",
    "shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB_PATH") or BASE_DIR / "db.sqlite3",
        # The settings background_tasks recommends for SQLite: the web process and the
        # workers share one file, so wait for the write lock (timeout), let readers go on
        # while a worker writes (WAL), and take the write lock when a transaction begins
        # (IMMEDIATE) instead of failing with "database is locked" when it upgrades.
        "OPTIONS": {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL;",
            "transaction_mode": "IMMEDIATE",
        },
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

LOGIN_URL = "admin:login"

# Order confirmations are "sent" by printing them to the console.
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = "shop@example.com"

# background_tasks: every setting is optional; see docs/settings.md. A worker started with
# ``process_tasks`` looks for new tasks every POLL_INTERVAL seconds when idle.
BACKGROUND_TASKS_POLL_INTERVAL = 1.0
BACKGROUND_TASKS_MAX_ATTEMPTS = 5
# Recycle a worker whose memory grew past 512 MB: it finishes its tasks and exits with code 3,
# for the process manager to restart it (docs/worker.md#memory).
BACKGROUND_TASKS_MAX_MEMORY = 512
# A task still running when its worker stops is handed back free 3 times; each later hand-back
# counts as a failed attempt (the default, shown for the record).
BACKGROUND_TASKS_MAX_HANDBACKS = 3

# Show what the worker does (task started / succeeded / failed ...) on the console.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "console": {"format": "{asctime} {levelname:<7} {name}: {message}", "style": "{"},
    },
    "handlers": {
        # stdout, like the demo's report, so that the two stay in order when piped.
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "console",
        },
    },
    "loggers": {
        "background_tasks": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "shop": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
