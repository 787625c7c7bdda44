"""The states of a live task: one definition, read by the admin, the CLI, the dashboard and the
django.tasks backend (``Task.state``, ``Task.objects.in_state()``; docs/tasks.md#task-states).
"""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

#: The ``locked_by`` of a row set aside because it cannot be loaded or recorded (isolation.py).
QUARANTINED = "quarantined"


class TaskState(models.TextChoices):
    """The state of a live task; every row is in exactly one (docs/tasks.md#task-states).

    The admin, the ``background_tasks`` command, the dashboard and the django.tasks backend all
    read it through ``Task.state`` and ``Task.objects.in_state()``.
    """

    #: No worker holds it, no attempt failed, and its run time has come.
    READY = "ready", _("ready")
    #: No worker holds it, no attempt failed, and its run time is still ahead.
    SCHEDULED = "scheduled", _("scheduled")
    #: A worker holds it (``cancel_requested_at`` says whether it was asked to stop).
    RUNNING = "running", _("running")
    #: No worker holds it and an attempt failed: it waits for (or is due for) its next attempt.
    RETRYING = "retrying", _("retrying")
    #: Set aside because it cannot be loaded or recorded (see isolation.py).
    QUARANTINED = "quarantined", _("quarantined")


#: Older names of states, still accepted where a state is given (``list --status failing``).
STATE_ALIASES = {"failing": TaskState.RETRYING}


def state_q(state: str, now: datetime) -> Q:
    """Return the filter of the live tasks in ``state`` (a TaskState or an alias) at ``now``."""
    state = STATE_ALIASES.get(state, state)
    waiting = Q(locked_by__isnull=True)
    if state == TaskState.QUARANTINED:
        return Q(locked_by=QUARANTINED)
    if state == TaskState.RUNNING:
        return Q(locked_by__isnull=False) & ~Q(locked_by=QUARANTINED)
    if state == TaskState.RETRYING:
        return waiting & ~Q(last_error="")
    fresh = waiting & Q(last_error="")
    if state == TaskState.READY:
        return fresh & Q(run_at__lte=now)
    if state == TaskState.SCHEDULED:
        return fresh & Q(run_at__gt=now)
    raise ValueError(f"unknown task state {state!r}: expected one of {', '.join(TaskState.values)}")


__all__ = ["QUARANTINED", "STATE_ALIASES", "TaskState", "state_q"]
