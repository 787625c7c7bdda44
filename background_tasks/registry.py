"""The name -> task map. Only functions registered here are ever run: a name read from the
database is looked up in this registry, never imported.
"""

from __future__ import annotations

import difflib
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .exceptions import (
    DuplicateTaskName,
    TaskNotRegistered,
    TaskRedefinedWarning,
)

if TYPE_CHECKING:
    from .task_function import TaskFunction


class TaskRegistry:
    """Name -> TaskFunction, filled by the decorator when ``tasks`` modules are imported."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskFunction[Any, Any]] = {}
        self._lock = threading.Lock()
        # Asked, in order, for a name nobody registered (the django.tasks bridge adds one).
        self._resolvers: list[Callable[[str], TaskFunction[Any, Any] | None]] = []

    def register(self, task: TaskFunction[Any, Any]) -> None:
        """Add ``task`` under its name; raise ``DuplicateTaskName`` if another function has it."""
        with self._lock:
            existing = self._tasks.get(task.name)
            if existing is not None and existing.func is not task.func:
                old, new = _origin(existing.func), _origin(task.func)
                if old != new:
                    raise DuplicateTaskName(
                        f"Task name {task.name!r} is already registered for {old}; {new} cannot "
                        "use it too. Pass a distinct name= (a default name is "
                        "'<module>.<function name>', so two functions of one name in one "
                        "module, nested or in classes, need one)."
                    )
                # The same definition executed again (a test's setUp(), a module reloaded):
                # the last one wins, as in django-background-tasks, but not silently.
                warnings.warn(
                    f"Task {task.name!r} ({new}) was defined again; the new definition replaces "
                    "the old one.",
                    TaskRedefinedWarning,
                    stacklevel=4,
                )
            self._tasks[task.name] = task

    def add_resolver(self, resolver: Callable[[str], TaskFunction[Any, Any] | None]) -> None:
        """Ask ``resolver`` for names nobody registered, before giving up (once per resolver)."""
        with self._lock:
            if resolver not in self._resolvers:
                self._resolvers.append(resolver)

    def unregister(self, name: str) -> None:
        """Remove the task registered as ``name``, if any."""
        with self._lock:
            self._tasks.pop(name, None)

    def get(self, name: str) -> TaskFunction[Any, Any]:
        """Return the task registered as ``name``; raise ``TaskNotRegistered`` if none is."""
        try:
            return self._tasks[name]
        except KeyError:
            pass
        # The one guarded exception to "names are never imported": a django.tasks Task of an
        # installed app, enqueued through our backend (django_tasks.resolve, added from ready()).
        for resolver in self._resolvers:
            function = resolver(name)
            if function is not None:
                return function
        raise TaskNotRegistered(
            f"No task is registered as {name!r}.{self.suggestion(name)} Is the function "
            "decorated with @background in an installed app's tasks module, and does the worker "
            "run the same code?"
        )

    def suggestion(self, name: str) -> str:
        """Return " Did you mean 'x'?" for registered names close to ``name``, else ""."""
        with self._lock:
            names = list(self._tasks)
        short = name.rsplit(".", 1)[-1]
        # The function name alone, or the right one in another module, is the likeliest slip.
        matches = sorted(n for n in names if n != name and n.rsplit(".", 1)[-1] == short)
        matches = matches or difflib.get_close_matches(name, names, n=1, cutoff=0.8)
        if not matches:
            return ""
        return " Did you mean " + " or ".join(repr(m) for m in matches[:3]) + "?"

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)


def _origin(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


registry = TaskRegistry()
