"""An outcome write that never stops the queue: record it, else fail the row, else quarantine it.

Above both ``lifecycle`` (which writes outcomes) and ``isolation`` (which quarantines): the
worker, the rescue of lost workers and the supervisor's reaping of dead children record through
here (see isolation.py for the rules).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from . import lifecycle
from .exceptions import MalformedRow
from .isolation import describe, is_database_fault, quarantine
from .logs import shown
from .models import Task
from .outcomes import Outcome

logger = logging.getLogger("background_tasks")

T = TypeVar("T")


def record_or_quarantine(
    task: Task, holder: str | None, record: Callable[[], T], what: str
) -> T | Outcome | None:
    """Run ``record`` (an outcome write); if the row makes it fail, fail the row or quarantine it.

    Return what ``record`` returned, else ``Outcome.GAVE_UP`` or ``Outcome.QUARANTINED`` (or
    None when the row was no longer held). Outage errors propagate.
    """
    try:
        return record()
    except Exception as exc:
        if is_database_fault(exc):
            raise
        reason = f"{what} could not be recorded because of a value in this row: {describe(exc)}"
        logger.error(
            "event=outcome_not_recordable task_id=%s worker=%s error=%s",
            task.pk,
            shown(holder),
            shown(describe(exc)),
        )
    try:
        return lifecycle.record_failure(
            task, holder, reason, MalformedRow(reason), permanent=True, schedule_next=False
        )
    except Exception as exc:
        if is_database_fault(exc):
            raise
        detail = f"{reason}\n\nRecording it as failed was refused too: {describe(exc)}"
        quarantined = quarantine(task.pk, holder, detail, locked_at=task.locked_at)
        return Outcome.QUARANTINED if quarantined else None
