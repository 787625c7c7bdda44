"""Health of the queue for probes: fresh workers for the queues, and no ready task left waiting.

``background_tasks health`` prints the result of ``check()``; Kubernetes probes, systemd and
monitoring scripts read its exit code or its JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, router
from django.db.models import Min

from .models import Task, Worker
from .timezones import window_start


@dataclass(frozen=True)
class Check:
    """One check's verdict, with the sentence an operator reads when it fails."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Health:
    """The verdicts of one probe: healthy when every check passed."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def summary(self) -> str:
        """Return one line: the failed checks' details, or every check's when all passed."""
        failed = [check for check in self.checks if not check.ok]
        shown = failed or list(self.checks)
        state = "unhealthy" if failed else "healthy"
        return f"{state}: " + "; ".join(f"{check.name}: {check.detail}" for check in shown)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [
                {"name": check.name, "ok": check.ok, "detail": check.detail}
                for check in self.checks
            ],
        }


def _serves(worker_queues: Sequence[str], queue: str) -> bool:
    # A worker started without --queue takes tasks of every queue.
    return not worker_queues or queue in worker_queues


def check_workers(
    now: datetime, queues: Sequence[str], max_heartbeat_age: float, host: str | None = None
) -> Check:
    """Pass if each of ``queues`` (or, without queues, the queue as a whole) has a worker whose
    last heartbeat is at most ``max_heartbeat_age`` seconds old; only workers on ``host`` count
    when it is given."""
    fresh_after = window_start(now, timedelta(seconds=max_heartbeat_age))
    workers = Worker.objects.using(router.db_for_write(Worker)).alive(fresh_after)
    if host is not None:
        workers = workers.filter(host=host)
    alive = [
        list(worker_queues or []) for worker_queues in workers.values_list("queues", flat=True)
    ]
    within = f"a heartbeat in the last {max_heartbeat_age:g}s"
    if host is not None:
        within += f" on {host}"
    if not queues:
        if not alive:
            return Check("workers", False, f"no worker has sent {within}")
        return Check("workers", True, f"{len(alive)} worker(s) with {within}")
    unserved = [queue for queue in queues if not any(_serves(w, queue) for w in alive)]
    if unserved:
        names = ", ".join(repr(queue) for queue in unserved)
        return Check("workers", False, f"no worker with {within} serves queue {names}")
    counts = ", ".join(f"{queue!r}: {sum(_serves(w, queue) for w in alive)}" for queue in queues)
    return Check("workers", True, f"workers with {within} per queue: {counts}")


def check_backlog(now: datetime, queues: Sequence[str], max_ready_age: float) -> Check:
    """Pass if no task of ``queues`` (all queues without them) has been ready and unclaimed for
    more than ``max_ready_age`` seconds.

    A task is ready from its ``run_at`` (a retry: from its retry time) until a worker claims it,
    so its age is how long the workers have left it waiting.
    """
    using = router.db_for_write(Task)
    oldest = (
        Task.objects.using(using).due(now).in_queues(list(queues)).aggregate(at=Min("run_at"))["at"]
    )
    if oldest is None:
        return Check("backlog", True, "no task is waiting")
    age = (now - oldest).total_seconds()
    if age > max_ready_age:
        return Check(
            "backlog",
            False,
            f"the oldest ready task has waited {age:.0f}s (more than {max_ready_age:g}s)",
        )
    return Check("backlog", True, f"the oldest ready task has waited {age:.0f}s")


def check(
    now: datetime,
    queues: Sequence[str],
    *,
    max_heartbeat_age: float,
    max_ready_age: float | None,
    host: str | None = None,
) -> Health:
    """Run the checks; a database that cannot be read fails them with its error.

    ``max_ready_age`` None leaves the backlog out; ``host`` counts only that host's workers.
    """
    try:
        checks = [check_workers(now, queues, max_heartbeat_age, host)]
        if max_ready_age is not None:
            checks.append(check_backlog(now, queues, max_ready_age))
    except DatabaseError as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return Health((Check("database", False, f"{type(exc).__name__}: {first_line}"),))
    return Health(tuple(checks))


__all__ = ["Check", "Health", "check", "check_backlog", "check_workers"]
