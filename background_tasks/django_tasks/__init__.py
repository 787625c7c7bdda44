"""The bridge to Django's tasks framework (``django.tasks``, or the ``django-tasks`` backport).

- ``framework``: the one guarded import of the framework's names.
- ``results``: a row read back as a ``TaskResult``.
- ``resolve``: a row's task name to the Django Task that runs it (the one guarded import of a
  task path read from the database).
- ``backend``: ``DatabaseBackend``, documented as ``background_tasks.backends.DatabaseBackend``.
- ``receivers``: Django's task signals sent from ours, connected from ``AppConfig.ready()``.

Nothing here is imported unless a tasks framework is installed.
"""

from __future__ import annotations

import functools
import importlib.util

import django


@functools.cache
def tasks_framework_available() -> bool:
    """Return True when a tasks framework is importable: django.tasks, or the backport."""
    return django.VERSION >= (6, 0) or importlib.util.find_spec("django_tasks") is not None


def connect() -> None:
    """Plug the bridge in (from ``AppConfig.ready()``): name resolution and the signals."""
    # Here, not at the top: this package is imported to ask whether a framework is installed.
    from ..registry import registry
    from .receivers import connect as connect_receivers
    from .resolve import resolve_django_task

    registry.add_resolver(resolve_django_task)
    connect_receivers()
