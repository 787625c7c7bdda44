"""``Outcome``: what became of a claimed task once its attempt was recorded."""

from __future__ import annotations

import enum


class Outcome(str, enum.Enum):
    """The kinds of outcome ``execute()`` and the recording functions return.

    A ``str`` enum (Python 3.10 has no ``StrEnum``), so a value equals its text:
    ``Outcome.RETRY == "retry"``.
    """

    #: The task returned; its record is in the history (or dropped, per RECORD_SUCCEEDED).
    SUCCEEDED = "succeeded"
    #: The attempt failed and the row waits for its next attempt, after the backoff.
    RETRY = "retry"
    #: The attempt failed and no attempt is left (or the failure was permanent).
    GAVE_UP = "gave_up"
    #: An operator's cancel ended it.
    CANCELLED = "cancelled"
    #: Not even a failure could be recorded: the row is set aside (see isolation.py).
    QUARANTINED = "quarantined"

    def __str__(self) -> str:
        return self.value
