"""``background_tasks.backends.DatabaseBackend``, the path ``TASKS`` settings name.

The backend lives in ``background_tasks.django_tasks``; this module keeps the documented path.
"""

from __future__ import annotations

from .django_tasks.backend import DatabaseBackend
from .django_tasks.resolve import resolve_django_task

__all__ = ["DatabaseBackend", "resolve_django_task"]
