"""Retry policy: how long a failed attempt waits before the next one. Pure code, no database."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeGuard

from .exceptions import InvalidTaskError


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``attempts ** exponent + base`` seconds, capped, with jitter.

    ``None`` fields take the global ``BACKGROUND_TASKS_BACKOFF_*`` settings when the delay is
    computed. With the defaults the delays are close to django-background-tasks'
    ``attempts ** 4 + 5`` (6 s, 21 s, 86 s, 261 s, ...), spread by up to 10 % either way so
    that tasks failing together do not all retry in the same instant.
    """

    exponent: float | None = None
    base: float | None = None
    max_delay: float | None = None
    jitter: float | None = None

    def __post_init__(self) -> None:
        for name in ("exponent", "base", "max_delay", "jitter"):
            value = getattr(self, name)
            if value is None or (name == "max_delay" and value == math.inf):  # inf: no cap
                continue
            # Not NaN: it compares false with everything and would end up as a 0 s delay.
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise InvalidTaskError(
                    f"Backoff {name} must be a finite number >= 0, not {value!r}."
                )
        if self.jitter is not None and self.jitter > 1:
            raise InvalidTaskError(
                f"Backoff jitter is a fraction from 0 to 1, not {self.jitter!r}."
            )

    def seconds(self, attempts: int, rng: random.Random | None = None) -> float:
        """Return the delay after failed attempt number ``attempts`` (1 for the first)."""
        from .conf import app_settings

        exponent = app_settings.BACKOFF_EXPONENT if self.exponent is None else self.exponent
        base = app_settings.BACKOFF_BASE if self.base is None else self.base
        cap = app_settings.BACKOFF_MAX if self.max_delay is None else self.max_delay
        jitter = app_settings.BACKOFF_JITTER if self.jitter is None else self.jitter
        try:
            raw = float(attempts) ** exponent + base
        except OverflowError:
            raw = math.inf
        delay = min(raw, cap, MAX_DELAY_SECONDS)
        spread = (rng or random).uniform(-jitter, jitter) if jitter else 0.0
        return float(max(0.0, delay * (1 + spread)))


#: Longest delay ever used: far beyond any real retry, and small enough that adding it to now
#: cannot overflow a timedelta or a datetime (which would crash the worker recording a failure).
MAX_DELAY_SECONDS = 100 * 365 * 24 * 3600.0


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: What a task may give as its ``backoff``: a Backoff, a constant number of seconds, or a
#: function of the attempt number returning seconds or a timedelta.
BackoffSpec = Backoff | float | int | Callable[[int], "float | int | timedelta"]


def check_backoff(backoff: object, task_name: str) -> None:
    """Raise InvalidTaskError if ``backoff`` is not a usable retry policy."""
    if backoff is None or isinstance(backoff, Backoff) or callable(backoff):
        return
    if _is_number(backoff) and math.isfinite(backoff) and backoff >= 0:
        return
    raise InvalidTaskError(
        f"Task {task_name!r}: backoff must be a Backoff, a finite number of seconds >= 0 or a "
        f"function of the attempt number, not {backoff!r}."
    )


def retry_delay(backoff: object, attempts: int, rng: random.Random | None = None) -> timedelta:
    """Return how long to wait after failed attempt number ``attempts``."""
    if backoff is None:
        backoff = Backoff()
    if isinstance(backoff, Backoff):
        return timedelta(seconds=backoff.seconds(attempts, rng))
    if _is_number(backoff):
        return _clamped(backoff)
    if callable(backoff):
        value = backoff(attempts)
        if isinstance(value, timedelta):
            return _clamped(value.total_seconds())
        if _is_number(value) and math.isfinite(value):
            return _clamped(value)
        raise InvalidTaskError(
            f"A backoff function returned {value!r}; return seconds or a timedelta."
        )
    raise InvalidTaskError(f"Unusable backoff {backoff!r}.")


def _clamped(seconds: float) -> timedelta:
    return timedelta(seconds=min(max(float(seconds), 0.0), MAX_DELAY_SECONDS))
