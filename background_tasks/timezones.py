"""Datetimes between the database and the timing maths, whatever ``USE_TZ`` says.

The timing maths (``timing.py``) works on aware datetimes only. With ``USE_TZ = True``
everything Django hands out is aware already. With ``USE_TZ = False`` the clock
(``django.utils.timezone.now()``) and the columns hold naive wall-clock times in
``TIME_ZONE``, and the database refuses aware ones: values are made aware in that zone on the
way into the maths and naive again on the way back, as Django itself reads them.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.utils import timezone


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
