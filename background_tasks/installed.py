"""Errors naming the fix when an app background_tasks needs is missing from INSTALLED_APPS."""

from __future__ import annotations

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured


def require_installed(subject: str) -> None:
    """Raise ``ImproperlyConfigured`` naming the fix when background_tasks is not installed.

    Called where the app is first used (``@background``, the ``django.tasks`` backend, the
    models), so that a missing INSTALLED_APPS entry is reported in those words rather than by
    Django's "doesn't declare an explicit app_label". Before the app registry is ready it
    cannot tell, and does nothing.
    """
    if apps.apps_ready and not apps.is_installed("background_tasks"):
        raise ImproperlyConfigured(
            f"{subject}, but 'background_tasks' is not in INSTALLED_APPS: add "
            "'background_tasks' to INSTALLED_APPS in your settings (then run "
            "`python manage.py migrate`)."
        )


def require_contenttypes() -> None:
    """Raise ``ImproperlyConfigured`` naming the fix when contenttypes is not installed.

    The models need it (a task records its creator, any model, through a generic foreign key);
    without this, Django stops with a long RuntimeError about ContentType's app_label.
    """
    if apps.apps_ready and not apps.is_installed("django.contrib.contenttypes"):
        raise ImproperlyConfigured(
            "background_tasks needs 'django.contrib.contenttypes' (a task records its creator "
            "through it): add 'django.contrib.contenttypes' to INSTALLED_APPS in your settings."
        )


__all__ = ["require_contenttypes", "require_installed"]
