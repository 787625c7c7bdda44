"""A database-backed task queue for Django: ``@background`` today, run by ``process_tasks``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "PermanentFailure",
    "TaskCancelled",
    "__version__",
    "background",
    "current_task",
    "is_cancelled",
    "progress",
    "registry",
    "set_progress",
]

from .decorator import background
from .exceptions import PermanentFailure, TaskCancelled
from .registry import registry
from .retry import Backoff

if TYPE_CHECKING:
    from .execution import current_task, is_cancelled, set_progress
    from .task_progress import progress


def __getattr__(name: str) -> Any:
    # These need the models, which must not be imported before the app registry is ready.
    if name in ("current_task", "is_cancelled", "set_progress"):
        from . import execution

        return getattr(execution, name)
    if name == "progress":
        from .task_progress import progress

        return progress
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
