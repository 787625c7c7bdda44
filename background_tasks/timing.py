"""Timing maths: run times, repeat steps and cron fire times. Pure: no database, no clock.

Every function takes ``now``/``after`` as an argument and returns aware UTC datetimes.

Slightly over 400 lines: the run-time, repeat and cron maths share the DST rules below, which
are easier to check in one module than in three.

Wall-clock times that a time zone skips or repeats are resolved as follows:

* Naive datetimes (``resolve_run_at``) and calendar repeats (``relativedelta`` steps) follow
  PEP 495 ``fold=0``, exactly like ``django.utils.timezone.make_aware`` with zoneinfo: a time
  in a spring-forward gap is shifted forward by the gap length (02:30 -> 03:30 in Berlin) and
  an ambiguous fall-back time means its first occurrence (the earlier instant).
* Cron follows Vixie cron. Expressions whose hour field matches every hour (``*``, ``*/1``,
  ``0-23``: "periodic", e.g. ``*/30 * * * *``) track the clock on the wall: times skipped by
  a gap do not fire, times repeated by a fall-back fire in both passes, so every real hour
  gets its fires exactly once. Other expressions ("fixed-time", e.g. ``30 2 * * *``) fire
  once per wall-clock match: in a gap at the first instant after it (02:30 -> 03:00 in
  Berlin), in a fold only in the first pass. Matches that resolve to one instant fire once.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from dateutil.relativedelta import relativedelta

# Seconds, the same values as django-background-tasks' Task constants.
HOURLY = 3600
DAILY = 24 * HOURLY
WEEKLY = 7 * DAILY
EVERY_2_WEEKS = 2 * WEEKLY
EVERY_4_WEEKS = 4 * WEEKLY
NEVER = 0

RepeatSpec = int | dict[str, int]
"""A repeat step as JSON. An integer is an exact duration in whole seconds, as
django-background-tasks stored it (so ``task.repeat == Task.HOURLY`` holds);
``{"microseconds": N}`` is an exact duration finer than a second; any dict with ``years``,
``months`` or ``days`` is a calendar step (``relativedelta``). ``{"seconds": N}`` (the form
rows written by 0.1.0 hold) still decodes as N seconds."""

UTC = timezone.utc
_US = timedelta(microseconds=1)
_CALENDAR_KEYS = ("years", "months", "days")
_SPEC_KEYS = (*_CALENDAR_KEYS, "hours", "minutes", "seconds", "microseconds")
# Average lengths, only used to guess k before correcting it exactly.
_APPROX = (31_556_952, 2_629_746, 86_400, 3_600, 60, 1, 1e-6)  # 365.2425 d, 30.436875 d, ...
_APPROX_SECONDS = dict(zip(_SPEC_KEYS, _APPROX, strict=True))
_ABSOLUTE_FIELDS = ("year", "month", "day", "weekday", "hour", "minute", "second", "microsecond")
_CRON_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_EQUAL_RANGE = re.compile(r"([^-/]+)-([^-/]+)(/.*)?")
_HASHED = re.compile(r"(?<![A-Za-z])H(?![A-Za-z])", re.IGNORECASE)
# The five fields, with the values each takes, for error messages.
_CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-6 or SUN-SAT"),
)


def _require_aware(name: str, value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, not {value!r}.")
    return value.astimezone(UTC)


def _require_tz(tz: tzinfo) -> None:
    # pytz zones ignore replace(tzinfo=...) semantics and would silently use LMT offsets.
    if not isinstance(tz, tzinfo) or hasattr(tz, "localize"):
        raise TypeError(f"Expected a zoneinfo.ZoneInfo (or other PEP 495 tzinfo), not {tz!r}.")


def _from_wall(wall: datetime, tz: tzinfo) -> datetime:
    """Return the UTC instant of a naive wall-clock time in ``tz`` (PEP 495 fold=0)."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def resolve_run_at(schedule: object, now: datetime, tz: tzinfo) -> datetime:
    """Return when a task scheduled with ``schedule`` should run, as an aware UTC datetime.

    Accept None (now), int/float seconds from now (negative is in the past, so ready now), a
    timedelta from now, an aware datetime, or a naive datetime read as wall-clock time in
    ``tz`` (a time in a DST gap moves forward by the gap length; an ambiguous time means its
    first occurrence, as with Django's ``make_aware``). Past times are returned unchanged.
    """
    now = _require_aware("now", now)
    accepted = "None (run now), a number of seconds, a timedelta or a datetime"
    try:
        if schedule is None:
            return now
        if isinstance(schedule, bool):
            raise TypeError(f"Cannot schedule a task with {schedule!r}: expected {accepted}.")
        if isinstance(schedule, (int, float)):
            if not math.isfinite(schedule):
                raise ValueError(
                    f"Cannot schedule a task {schedule!r} seconds from now: expected {accepted}."
                )
            return now + timedelta(seconds=schedule)
        if isinstance(schedule, timedelta):
            return now + schedule
        if isinstance(schedule, datetime):
            if schedule.utcoffset() is not None:
                return schedule.astimezone(UTC)
            _require_tz(tz)
            return _from_wall(schedule, tz)
    except OverflowError as exc:
        raise ValueError(
            f"Cannot schedule a task with {schedule!r}: the time is out of range."
        ) from exc
    if isinstance(schedule, date):
        raise TypeError(
            f"Cannot schedule a task with the date {schedule!r}: a date has no "
            f"time of day; expected {accepted}."
        )
    raise TypeError(f"Cannot schedule a task with {schedule!r}: expected {accepted}.")


def _duration_spec(step: timedelta, original: object) -> RepeatSpec:
    if step <= timedelta(0):
        raise ValueError(
            f"Repeat step {original!r} must be at least one microsecond; use "
            "None or NEVER for no repeat."
        )
    micros = step // _US
    # Whole seconds are a plain integer, like django-background-tasks' column (comparable with
    # Task.HOURLY, in Python and in a filter); anything finer is stored exactly.
    return micros // 10**6 if micros % 10**6 == 0 else {"microseconds": micros}


def encode_repeat(repeat: object) -> RepeatSpec | None:
    """Return the JSON spec of a repeat step, or None for no repeat.

    Accept None, 0 or NEVER (no repeat), positive seconds (int/float), a positive timedelta,
    or a ``relativedelta`` with relative fields only, all >= 0 (weeks are stored as days).
    Seconds and timedeltas are exact durations: the integer N of whole seconds (as
    django-background-tasks stored it), or ``{"microseconds": N}`` when not whole seconds. A
    relativedelta with years, months or days is calendar arithmetic and is stored field by
    field (``{"months": 1}``); one with only hours/minutes/seconds is
    an exact duration like a timedelta. Absolute fields (``day=31``, ``weekday=MO``, ...) are
    rejected: anchor the first run on the wanted day instead, or use a cron expression.
    """
    if repeat is None:
        return None
    if isinstance(repeat, (int, float)) and not isinstance(repeat, bool):
        if not math.isfinite(repeat):
            raise ValueError(f"Invalid repeat {repeat!r}: the number of seconds must be finite.")
        if repeat == 0:
            return None  # NEVER, as in django-background-tasks.
        try:
            return _duration_spec(timedelta(seconds=repeat), repeat)
        except OverflowError as exc:
            raise ValueError(f"Invalid repeat {repeat!r}: too large.") from exc
    if isinstance(repeat, timedelta):
        return _duration_spec(repeat, repeat)
    if isinstance(repeat, relativedelta):
        absolute = [f for f in _ABSOLUTE_FIELDS if getattr(repeat, f) is not None]
        if absolute or repeat.leapdays:
            names = ", ".join(absolute or ["leapdays"])
            raise ValueError(
                f"Invalid repeat {repeat!r}: {names} cannot be repeated; use "
                "relative fields (years, months, weeks, days, hours, minutes, "
                "seconds) and anchor the first run, or use a cron expression."
            )
        normalized = repeat.normalized()
        fields = {k: getattr(normalized, k) for k in _SPEC_KEYS}
        if any(v < 0 for v in fields.values()) or not any(fields.values()):
            raise ValueError(
                f"Invalid repeat {repeat!r}: every field must be >= 0 and one "
                "> 0, so that each step moves time forward."
            )
        if not any(fields[k] for k in _CALENDAR_KEYS):
            clock = {k: v for k, v in fields.items() if k not in _CALENDAR_KEYS}
            return _duration_spec(timedelta(**clock), repeat)
        return {k: int(v) for k, v in fields.items() if v}
    raise TypeError(
        f"Invalid repeat {repeat!r}: expected None, NEVER, a number of seconds, "
        "a timedelta or a dateutil relativedelta."
    )


def _as_kwargs(spec: dict[str, int]) -> dict[str, Any]:
    """Type a spec as keyword arguments (relativedelta's first positional is a date)."""
    return dict(spec)


def decode_repeat(spec: RepeatSpec) -> timedelta | relativedelta:
    """Return the timedelta (exact duration) or relativedelta (calendar step) of a spec."""
    if type(spec) is int and spec > 0:
        return timedelta(seconds=spec)
    if (
        not isinstance(spec, dict)
        or not spec
        or any(k not in _SPEC_KEYS or type(v) is not int or v <= 0 for k, v in spec.items())
    ):
        raise ValueError(
            f"Invalid repeat spec {spec!r}: expected a positive number of seconds or a "
            f"non-empty dict mapping {', '.join(_SPEC_KEYS)} to positive integers."
        )
    if any(k in spec for k in _CALENDAR_KEYS):
        return relativedelta(**_as_kwargs(spec))
    return timedelta(**spec)


def next_repeat(anchor: datetime, spec: RepeatSpec, after: datetime, tz: tzinfo) -> datetime:
    """Return the first ``anchor + k * step`` (k >= 1) strictly after ``after``, in UTC.

    Occurrences count from the anchor, never from the previous run, so nothing drifts and
    missed runs collapse into one. Durations are exact elapsed time. Calendar steps add
    ``k`` times each field to the anchor's wall-clock time in ``tz`` (months first, clipping
    to the month end: Jan 31 + 1 month = Feb 28/29), then resolve DST like naive datetimes:
    a gap moves forward by its length, an ambiguous time is its first occurrence.
    """
    anchor, after = _require_aware("anchor", anchor), _require_aware("after", after)
    step = decode_repeat(spec)
    if isinstance(step, timedelta):
        # Integer division keeps this O(1) however many steps lie between anchor and after.
        return anchor + max(1, (after - anchor) // step + 1) * step
    _require_tz(tz)
    assert isinstance(spec, dict)  # only a dict decodes to a calendar step
    wall = anchor.astimezone(tz).replace(tzinfo=None)

    def occurrence(k: int) -> datetime:
        return _from_wall(
            wall + relativedelta(**_as_kwargs({f: v * k for f, v in spec.items()})), tz
        )

    approx = sum(_APPROX_SECONDS[f] * v for f, v in spec.items())
    elapsed = (after.astimezone(tz).replace(tzinfo=None) - wall).total_seconds()
    k = max(1, int(elapsed // approx))
    # The guess is off by month-length and DST noise (a few days at most) while a calendar
    # step is at least a day long, so these loops run a handful of times.
    while k > 1 and occurrence(k - 1) > after:
        k -= 1
    while occurrence(k) <= after:
        k += 1
    return occurrence(k)


def _parse_cron(expression: str) -> tuple[str, Any]:
    """Return the normalised expression and a croniter that walks its naive wall times."""
    if not isinstance(expression, str):
        raise TypeError(f"A cron expression must be a string, not {expression!r}.")
    normalised = " ".join(expression.split())
    if normalised.startswith("@"):
        normalised = normalised.lower()
        if normalised not in _CRON_ALIASES:
            raise ValueError(
                f"Unknown cron alias {expression!r}; use one of {', '.join(_CRON_ALIASES)}."
            )
    else:
        fields = normalised.split(" ") if normalised else []
        if len(fields) != 5:
            # croniter reads a 6th field as seconds at the END, Quartz/Spring as seconds at
            # the start: accepting either would silently misread the other.
            raise ValueError(
                f"Invalid cron expression {expression!r}: it has {len(fields)} "
                "fields; expected 5 (minute hour day-of-month month day-of-week)."
            )
        for part in ",".join(fields).split(","):
            m = _EQUAL_RANGE.fullmatch(part)
            if m and m[1].lower() == m[2].lower():
                # croniter expands "5-5" to the whole field (every minute), not to "5".
                raise ValueError(
                    f"Invalid cron expression {expression!r}: the range "
                    f"{part!r} has equal ends; write {m[1]!r} instead."
                )
    walker = _walker(normalised)
    if walker is None:
        raise ValueError(f"Invalid cron expression {expression!r}: {_cron_fault(normalised)}")
    return normalised, walker


def _walker(expression: str) -> Any:
    """A croniter for the expression, or None when croniter refuses it or it never fires."""
    try:
        walker = croniter(expression, datetime(2000, 1, 1), ret_type=datetime)
        walker.get_next(datetime)  # Fails for expressions that never fire (Feb 30).
    except (ValueError, TypeError, KeyError):
        return None
    return walker


def _cron_fault(expression: str) -> str:
    """Say, in our words, which field of a refused 5-field expression is at fault.

    Each field is tried alone (the others ``*``); when each is fine alone, the fields together
    name no real date.
    """
    fields = expression.split(" ")
    for index, (field, (name, values)) in enumerate(zip(fields, _CRON_FIELDS, strict=True)):
        alone = " ".join(field if i == index else "*" for i in range(len(fields)))
        if _walker(alone) is None:
            hashed = " (hashed 'H' values are not supported)" if _HASHED.search(field) else ""
            return (
                f"the {name} field {field!r} is not valid{hashed}; use {values}, a range "
                "(1-5), a list (1,15), a step (*/10) or *."
            )
    return f"it never fires: the day-of-month {fields[2]!r} does not occur in month {fields[3]!r}."


def validate_cron(expression: str) -> str:
    """Return the expression with whitespace collapsed (aliases lower-cased) or raise ValueError.

    Accept standard 5-field cron (croniter's ``L``, ``W``, ``#`` and ``?`` extensions
    included) and the aliases ``@hourly @daily @midnight @weekly @monthly @yearly
    @annually``. Reject 6/7-field forms, hashed ``H`` fields, ``X-X`` ranges and expressions
    that never fire.
    """
    return _parse_cron(expression)[0]


def validate_timezone(name: str) -> ZoneInfo:
    """Return the ZoneInfo named ``name`` or raise ValueError naming it."""
    if not isinstance(name, str):
        raise TypeError(f"A time zone name must be a string, not {name!r}.")
    try:
        if name == "localtime":  # The host's own zone: it differs from machine to machine.
            raise ZoneInfoNotFoundError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(
            f"Unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin'."
        ) from exc


def _instants(wall: datetime, tz: tzinfo) -> tuple[datetime, ...]:
    """Return the instants showing ``wall`` in ``tz``: one, two (fold) or none (gap)."""
    first, second = _from_wall(wall, tz), wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return (first,)
    # PEP 495: in a fold fold=0 is the earlier instant; in a gap it is the later one.
    return (first, second) if first < second else ()


def _gap_end(wall: datetime, tz: tzinfo) -> datetime:
    """Return the first instant after the DST gap containing ``wall`` (bisection)."""
    before = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)  # Uses the post-gap offset.
    after = _from_wall(wall, tz)  # Uses the pre-gap offset, so lands past the transition.
    offset = after.astimezone(tz).utcoffset()
    while after - before > _US:
        middle = before + (after - before) / 2
        if middle.astimezone(tz).utcoffset() == offset:
            after = middle
        else:
            before = middle
    return after


def _next_fire(walker: Any, tz: tzinfo, after: datetime) -> datetime:
    periodic = walker.expanded[1] == ["*"]
    local = after.astimezone(tz)
    start = local.replace(tzinfo=None, fold=0, microsecond=0)
    here = _instants(start, tz)
    if periodic and len(here) == 2:
        # In a fold the second pass replays wall times earlier than ours: scan from the start
        # of the fold (fold length = here[1] - here[0]).
        start -= here[1] - here[0] + timedelta(minutes=1)
    best: datetime | None = None
    wall = start
    while True:
        wall = cast(datetime, walker.get_next(datetime, start_time=wall))
        found = _instants(wall, tz)
        if not periodic:
            # Instants of fixed-time fires never decrease as wall time grows, so the first
            # one past ``after`` is the answer.
            fire = found[0] if found else _gap_end(wall, tz)
            if fire > after:
                return fire
            continue
        for instant in found:
            if instant > after and (best is None or instant < best):
                best = instant
        # Later wall times are first shown no earlier than this one, so nothing can beat best.
        if found and found[0] > after and best is not None:
            return best


def next_cron_fire(expression: str, tz: tzinfo, after: datetime) -> datetime:
    """Return the first fire time strictly after ``after``, evaluated on ``tz``'s wall clock.

    DST handling (see the module docstring): a fixed-time job fires once per matching wall
    time, at the end of a gap (02:30 -> 03:00) or in the first pass of a fold; a job whose
    hour field is ``*`` fires at every real instant whose wall time matches.
    """
    after = _require_aware("after", after)
    _require_tz(tz)
    return _next_fire(_parse_cron(expression)[1], tz, after)


def cron_fires_between(
    expression: str, tz: tzinfo, after: datetime, until: datetime, limit: int
) -> list[datetime]:
    """Return the fire times in ``(after, until]``, oldest first, at most ``limit`` of them."""
    after, until = _require_aware("after", after), _require_aware("until", until)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an int >= 0, not {limit!r}.")
    _require_tz(tz)
    walker = _parse_cron(expression)[1]
    fires: list[datetime] = []
    while len(fires) < limit:
        after = _next_fire(walker, tz, after)
        if after > until:
            break
        fires.append(after)
    return fires
