"""django-background-tasks' ``background_task.tasks``, for code that drives the queue by hand.

``from background_task.tasks import tasks`` becomes ``from background_tasks.tasks import tasks``:
``tasks.background`` is ``@background`` and ``tasks.run_next_task()`` runs one ready task in the
calling thread, as there. New code uses ``@background`` from ``background_tasks`` and, in
tests, ``background_tasks.testing.run_tasks()``.
"""

from __future__ import annotations

from typing import Any

from .decorator import background


class Tasks:
    """The ``tasks`` object of django-background-tasks, reduced to its public methods."""

    def background(self, *args: Any, **kwargs: Any) -> Any:
        """``@tasks.background(...)``: the same as ``@background(...)``."""
        return background(*args, **kwargs)

    def run_next_task(self, queue: str | None = None) -> bool:
        """Claim and run the next ready task (of ``queue``) here; return False if none was ready.

        The task runs in this thread, under a worker id of its own that has no heartbeat: use it
        in tests and scripts, not in place of ``process_tasks``.
        """
        from .claims import claim_tasks
        from .execution import execute
        from .liveness import new_worker_id

        worker_id = "run_next_task:" + new_worker_id()
        claimed = claim_tasks(worker_id, [queue] if queue else [], 1)
        if not claimed:
            return False
        execute(claimed[0], worker_id)
        return True


tasks = Tasks()
