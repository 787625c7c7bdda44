"""Datetimes between the database and the timing maths, whatever ``USE_TZ`` says.

The timing maths (``timing.py``) works on aware datetimes only. With ``USE_TZ = True``
everything Django hands out is aware already. With ``USE_TZ = False`` the clock
(``django.utils.timezone.now()``) and the columns hold naive wall-clock times in
``TIME_ZONE``, and the database refuses aware ones: values are made aware in that zone on the
way into the maths and naive again on the way back, as Django itself reads them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.conf import settings
from django.utils import timezone

UTC = dt_timezone.utc


def aware(value: datetime) -> datetime:
    """Return ``value`` aware: a naive one is wall-clock time in ``TIME_ZONE``."""
    if timezone.is_aware(value):
        return value
    return timezone.make_aware(value, timezone.get_default_timezone())


def to_db(value: datetime) -> datetime:
    """Return ``value`` as a DateTimeField holds it: aware with USE_TZ, else naive in TIME_ZONE."""
    if settings.USE_TZ or timezone.is_naive(value):
        return value
    return timezone.make_naive(value, timezone.get_default_timezone())


def first_storable(value: datetime) -> datetime:
    """Return the aware ``value``, or the first instant after it that a column can give back.

    Without ``USE_TZ`` a column holds wall-clock time in ``TIME_ZONE`` and no fold: an instant
    in the second pass of an hour a fall-back repeats reads back as the first pass, an hour
    early. A time computed to be stored (a cron tick, a repeat's next run) that lands there is
    moved to the end of that pass, where the wall clock shows times it has not shown before.
    """
    if settings.USE_TZ:
        return value

    def gives_back(instant: datetime) -> bool:
        # Timestamps, since == between zones is False for a time in a fold (PEP 495).
        return aware(to_db(instant).replace(fold=0)).timestamp() == instant.timestamp()

    if gives_back(value):
        return value
    # ``value`` shows the wall time of an instant ``fold`` earlier; ``fold`` later, the wall
    # clock is past the repeated times. Bisect for the first instant that reads back.
    fold = value - aware(to_db(value).replace(fold=0))
    before, after = value, value + fold
    while after - before > timedelta(microseconds=1):
        middle = before + (after - before) / 2
        if gives_back(middle):
            after = middle
        else:
            before = middle
    return after


def window_start(now: datetime, window: timedelta) -> datetime:
    """Return the column value ``window`` before ``now``, for "is this older than" tests.

    With ``USE_TZ`` it is ``now - window``. Without it the columns hold wall-clock time, which
    jumps when the clocks change: forward in spring (a heartbeat written a second before reads
    an hour old a second after) and back in autumn (the wall time ``window`` earlier, by the
    instants, is ahead of every value written since). The earlier of the two readings is
    returned, so that nothing is judged older than it is: around a change, something can only
    be judged younger, by up to the jump.
    """
    # In UTC: within one zone, Python subtracts wall-clock time.
    return min(now - window, to_db(aware(now).astimezone(UTC) - window))
