"""Unit tests of background_tasks.timing: pure maths, fixed datetimes, no database."""

from __future__ import annotations

import math
import time
from datetime import date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from dateutil.relativedelta import MO, relativedelta

from background_tasks.timing import (
    DAILY,
    EVERY_2_WEEKS,
    EVERY_4_WEEKS,
    HOURLY,
    NEVER,
    WEEKLY,
    cron_fires_between,
    decode_repeat,
    encode_repeat,
    next_cron_fire,
    next_repeat,
    resolve_run_at,
    validate_cron,
    validate_timezone,
)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")
NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(tz: tzinfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=tz, fold=fold)  # type: ignore[misc]


def walls(fires: list[datetime], tz: tzinfo) -> list[str]:
    """Render fires as local wall time plus UTC offset, which is what a human checks."""
    return [f.astimezone(tz).strftime("%m-%d %H:%M%z") for f in fires]


# --------------------------------------------------------------------------- constants


def test_constants__match_django_background_tasks() -> None:
    assert (HOURLY, DAILY, WEEKLY) == (3600, 86400, 604800)
    assert (EVERY_2_WEEKS, EVERY_4_WEEKS, NEVER) == (1209600, 2419200, 0)


# --------------------------------------------------------------------------- resolve_run_at


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (None, NOW),
        (0, NOW),
        (90, NOW + timedelta(seconds=90)),
        (1.5, NOW + timedelta(seconds=1.5)),
        (timedelta(hours=2), NOW + timedelta(hours=2)),
        (utc(2024, 7, 1, 8, 30), utc(2024, 7, 1, 8, 30)),
        (local(BERLIN, 2024, 7, 1, 10, 30), utc(2024, 7, 1, 8, 30)),
        (datetime(2024, 7, 1, 10, 30), utc(2024, 7, 1, 8, 30)),  # naive: Berlin wall time
        (datetime(2024, 1, 1, 10, 30), utc(2024, 1, 1, 9, 30)),
    ],
)
def test_resolve_run_at__accepts_each_documented_form(schedule: object, expected: datetime) -> None:
    result = resolve_run_at(schedule, NOW, BERLIN)
    assert result == expected
    assert result.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "schedule", [-60, -0.5, timedelta(days=-3), utc(2001, 1, 1), datetime(2001, 1, 1)]
)
def test_resolve_run_at__returns_past_times_unchanged_so_they_are_ready_now(
    schedule: object,
) -> None:
    result = resolve_run_at(schedule, NOW, BERLIN)
    assert result < NOW
    if isinstance(schedule, (int, float)):
        assert result == NOW + timedelta(seconds=schedule)


def test_resolve_run_at__returns_now_in_utc_for_none() -> None:
    now = local(NEW_YORK, 2024, 6, 15, 8, 0)
    assert resolve_run_at(None, now, BERLIN) == now
    assert resolve_run_at(None, now, BERLIN).tzinfo is UTC


@pytest.mark.parametrize(
    ("tz", "naive", "expected"),
    [
        # Gap: shifted forward by the gap length (fold=0, like Django's make_aware).
        (BERLIN, datetime(2024, 3, 31, 2, 30), local(BERLIN, 2024, 3, 31, 3, 30)),
        (NEW_YORK, datetime(2024, 3, 10, 2, 30), local(NEW_YORK, 2024, 3, 10, 3, 30)),
        (SYDNEY, datetime(2024, 10, 6, 2, 30), local(SYDNEY, 2024, 10, 6, 3, 30)),
        # Fold: the first occurrence (summer time).
        (BERLIN, datetime(2024, 10, 27, 2, 30), utc(2024, 10, 27, 0, 30)),
        (NEW_YORK, datetime(2024, 11, 3, 1, 30), utc(2024, 11, 3, 5, 30)),
        (SYDNEY, datetime(2024, 4, 7, 2, 30), utc(2024, 4, 6, 15, 30)),
    ],
)
def test_resolve_run_at__resolves_naive_gap_forward_and_fold_to_first(
    tz: tzinfo, naive: datetime, expected: datetime
) -> None:
    assert resolve_run_at(naive, NOW, tz) == expected


@pytest.mark.parametrize(
    ("schedule", "error"),
    [
        (True, TypeError),
        (False, TypeError),
        ("10", TypeError),
        ("2024-07-01T10:00", TypeError),
        (date(2024, 7, 1), TypeError),
        (Decimal("10"), TypeError),
        ([10], TypeError),
        (object(), TypeError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (-math.inf, ValueError),
        (10**20, ValueError),
        (1e300, ValueError),
        (timedelta(days=999_999_999), ValueError),
    ],
)
def test_resolve_run_at__rejects_with_a_message_naming_the_value(
    schedule: object, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        resolve_run_at(schedule, NOW, BERLIN)
    assert repr(schedule) in str(info.value)
    if error is TypeError:
        assert "timedelta" in str(info.value) and "datetime" in str(info.value)


def test_resolve_run_at__rejects_naive_now() -> None:
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        resolve_run_at(None, datetime(2024, 1, 1), BERLIN)


# --------------------------------------------------------------------------- encode/decode


@pytest.mark.parametrize("repeat", [None, 0, NEVER, 0.0])
def test_encode_repeat__never_means_no_repeat(repeat: object) -> None:
    assert encode_repeat(repeat) is None


@pytest.mark.parametrize(
    ("repeat", "spec"),
    [
        (HOURLY, 3600),
        (DAILY, 86400),
        (EVERY_4_WEEKS, 2419200),
        (30.0, 30),
        (1.5, {"microseconds": 1_500_000}),
        (timedelta(days=1), 86400),
        (timedelta(microseconds=1), {"microseconds": 1}),
        (relativedelta(months=1), {"months": 1}),
        (relativedelta(weeks=2), {"days": 14}),
        (
            relativedelta(years=1, months=2, days=3, hours=4),
            {"years": 1, "months": 2, "days": 3, "hours": 4},
        ),
        (relativedelta(months=18), {"years": 1, "months": 6}),
        (relativedelta(days=1.5), {"days": 1, "hours": 12}),
        (relativedelta(days=1, seconds=1.5), {"days": 1, "seconds": 1, "microseconds": 500_000}),
        # No calendar field: an exact duration, stored like a timedelta (whole seconds: an int).
        (relativedelta(hours=6), 21600),
        (relativedelta(minutes=90), 5400),
        (relativedelta(seconds=1.5), {"microseconds": 1_500_000}),
        # dateutil itself normalises hours=25 into days=1, hours=1: a calendar step.
        (relativedelta(hours=25), {"days": 1, "hours": 1}),
    ],
)
def test_encode_repeat__encodes_accepted_steps(repeat: object, spec: int | dict[str, int]) -> None:
    assert encode_repeat(repeat) == spec


@pytest.mark.parametrize(
    "repeat",
    [
        HOURLY,
        1.5,
        timedelta(days=1, microseconds=3),
        relativedelta(months=1),
        relativedelta(years=1, days=2, minutes=3),
        relativedelta(hours=6),
    ],
)
def test_encode_repeat__round_trips_through_decode(repeat: object) -> None:
    spec = encode_repeat(repeat)
    assert spec is not None
    decoded = decode_repeat(spec)
    expected = timedelta(seconds=repeat) if isinstance(repeat, (int, float)) else repeat
    if isinstance(repeat, relativedelta) and not (repeat.years or repeat.months or repeat.days):
        expected = timedelta(hours=repeat.hours)
    assert decoded == expected
    assert encode_repeat(decoded) == spec


@pytest.mark.parametrize(
    ("repeat", "error", "why"),
    [
        (True, TypeError, "expected None"),
        ("daily", TypeError, "expected None"),
        (b"60", TypeError, "expected None"),
        (object(), TypeError, "expected None"),
        (-1, ValueError, "at least one microsecond"),
        (-0.5, ValueError, "at least one microsecond"),
        (1e-9, ValueError, "at least one microsecond"),
        (math.nan, ValueError, "finite"),
        (math.inf, ValueError, "finite"),
        (1e300, ValueError, "too large"),
        (timedelta(0), ValueError, "at least one microsecond"),
        (timedelta(seconds=-1), ValueError, "at least one microsecond"),
        (relativedelta(), ValueError, "moves time forward"),
        (relativedelta(months=-1), ValueError, "moves time forward"),
        (relativedelta(months=1, days=-1), ValueError, "moves time forward"),
        (relativedelta(day=31), ValueError, "day cannot be repeated"),
        (relativedelta(months=1, day=1), ValueError, "day cannot be repeated"),
        (relativedelta(weeks=1, weekday=MO), ValueError, "weekday cannot be repeated"),
        (relativedelta(days=1, hour=9, minute=0), ValueError, "hour, minute cannot be repeated"),
        (relativedelta(years=1, month=2), ValueError, "month cannot be repeated"),
        (relativedelta(years=1, leapdays=1), ValueError, "leapdays cannot be repeated"),
    ],
)
def test_encode_repeat__rejects_with_a_message_naming_the_value(
    repeat: object, error: type[Exception], why: str
) -> None:
    with pytest.raises(error) as info:
        encode_repeat(repeat)
    assert repr(repeat) in str(info.value)
    assert why in str(info.value)


@pytest.mark.parametrize(
    ("spec", "step"),
    [
        (3600, timedelta(hours=1)),
        # The form 0.1.0 stored for whole seconds.
        ({"seconds": 3600}, timedelta(hours=1)),
        ({"microseconds": 1_500_000}, timedelta(seconds=1.5)),
        ({"hours": 2}, timedelta(hours=2)),
        ({"months": 1}, relativedelta(months=1)),
        ({"days": 1, "hours": 2}, relativedelta(days=1, hours=2)),
    ],
)
def test_decode_repeat__returns_duration_unless_a_calendar_field_is_present(
    spec: int | dict[str, int], step: object
) -> None:
    decoded = decode_repeat(spec)
    assert decoded == step
    assert type(decoded) is type(step)


@pytest.mark.parametrize(
    "spec",
    [
        {},
        0,
        -3600,
        True,
        3600.0,
        {"weeks": 1},
        {"day": 1},
        {"seconds": 0},
        {"seconds": -1},
        {"seconds": True},
        {"seconds": 1.5},
        {"months": "1"},
        None,
        "seconds=1",
        [("seconds", 1)],
    ],
)
def test_decode_repeat__rejects_malformed_specs(spec: object) -> None:
    with pytest.raises(ValueError) as info:
        decode_repeat(spec)  # type: ignore[arg-type]
    assert repr(spec) in str(info.value)


# --------------------------------------------------------------------------- next_repeat


def series(anchor: datetime, spec: dict[str, int], tz: tzinfo, count: int) -> list[datetime]:
    """Follow a repeat the way the worker does: each run asks for the next after itself."""
    out, after = [], anchor
    for _ in range(count):
        after = next_repeat(anchor, spec, after, tz)
        out.append(after)
    return out


def test_next_repeat__monthly_from_jan_31_lands_on_month_ends() -> None:
    anchor = local(BERLIN, 2024, 1, 31, 9, 0)
    runs = series(anchor, {"months": 1}, BERLIN, 12)
    assert [r.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M") for r in runs] == [
        "2024-02-29 09:00",
        "2024-03-31 09:00",
        "2024-04-30 09:00",
        "2024-05-31 09:00",
        "2024-06-30 09:00",
        "2024-07-31 09:00",
        "2024-08-31 09:00",
        "2024-09-30 09:00",
        "2024-10-31 09:00",
        "2024-11-30 09:00",
        "2024-12-31 09:00",
        "2025-01-31 09:00",
    ]


def test_next_repeat__yearly_from_feb_29_clips_then_returns_to_feb_29_in_leap_years() -> None:
    anchor = utc(2024, 2, 29, 12, 0)
    runs = series(anchor, {"years": 1}, UTC, 8)
    assert [r.date().isoformat() for r in runs] == [
        "2025-02-28",
        "2026-02-28",
        "2027-02-28",
        "2028-02-29",
        "2029-02-28",
        "2030-02-28",
        "2031-02-28",
        "2032-02-29",
    ]


def test_next_repeat__century_years_follow_the_gregorian_rule() -> None:
    anchor = utc(2096, 2, 29)
    assert next_repeat(anchor, {"years": 4}, anchor, UTC) == utc(2100, 2, 28)
    assert next_repeat(anchor, {"years": 4}, utc(2100, 2, 28), UTC) == utc(2104, 2, 29)


@pytest.mark.parametrize(
    "spec", [{"seconds": 3600}, {"days": 1}, {"months": 1}, {"microseconds": 250_000}]
)
def test_next_repeat__is_strictly_after_an_occurrence(spec: dict[str, int]) -> None:
    anchor = utc(2024, 1, 31, 9, 0)
    first = next_repeat(anchor, spec, anchor, UTC)
    second = next_repeat(anchor, spec, first, UTC)
    assert anchor < first < second
    # One microsecond earlier still yields the occurrence itself: the bound is exact.
    assert next_repeat(anchor, spec, second - timedelta(microseconds=1), UTC) == second


def test_next_repeat__repeat_until_boundary_is_exclusive_of_after() -> None:
    anchor = utc(2024, 1, 1)
    until = utc(2024, 1, 3)  # a grid point
    assert next_repeat(anchor, {"seconds": DAILY}, utc(2024, 1, 2), UTC) == until
    assert next_repeat(anchor, {"seconds": DAILY}, until, UTC) == utc(2024, 1, 4)


def test_next_repeat__after_before_anchor_gives_the_first_step() -> None:
    anchor = utc(2024, 5, 1)
    assert next_repeat(anchor, {"seconds": HOURLY}, utc(2020, 1, 1), UTC) == utc(2024, 5, 1, 1)
    assert next_repeat(anchor, {"months": 1}, utc(2020, 1, 1), UTC) == utc(2024, 6, 1)


def test_next_repeat__does_not_drift_after_many_steps() -> None:
    anchor = utc(2024, 1, 1, 9, 0, 0)
    runs = series(anchor, {"microseconds": 1_100_000}, UTC, 10_000)
    assert runs[-1] == anchor + timedelta(seconds=11_000)
    monthly = series(anchor, {"months": 1}, BERLIN, 240)
    assert monthly[-1] == local(BERLIN, 2044, 1, 1, 10, 0)
    assert {r.astimezone(BERLIN).strftime("%d %H:%M") for r in monthly} == {"01 10:00"}


def test_next_repeat__catches_up_after_downtime_with_one_run_back_on_the_grid() -> None:
    anchor = utc(2024, 1, 1, 9, 0)
    now = utc(2024, 1, 11, 15, 42)  # the worker was down for ten days
    for spec in ({"seconds": DAILY}, {"days": 1}):
        nxt = next_repeat(anchor, spec, now, UTC)
        assert nxt == utc(2024, 1, 12, 9, 0)
        assert next_repeat(anchor, spec, nxt, UTC) == utc(2024, 1, 13, 9, 0)


def test_next_repeat__seconds_steps_are_elapsed_time_across_dst() -> None:
    anchor = local(BERLIN, 2024, 3, 30, 9, 0)
    nxt = next_repeat(anchor, {"seconds": DAILY}, anchor, BERLIN)
    assert nxt - anchor == timedelta(hours=24)
    assert nxt.astimezone(BERLIN).hour == 10  # the wall clock moved, the interval did not


@pytest.mark.parametrize(
    ("tz", "spring_day", "fall_day"),
    [
        (BERLIN, (2024, 3, 30), (2024, 10, 26)),
        (NEW_YORK, (2024, 3, 9), (2024, 11, 2)),
        (SYDNEY, (2024, 10, 5), (2024, 4, 6)),
    ],
)
def test_next_repeat__calendar_days_keep_local_time_across_dst(
    tz: tzinfo, spring_day: tuple[int, int, int], fall_day: tuple[int, int, int]
) -> None:
    spring = local(tz, *spring_day, 9, 0)
    fall = local(tz, *fall_day, 9, 0)
    spring_next = next_repeat(spring, {"days": 1}, spring, tz)
    fall_next = next_repeat(fall, {"days": 1}, fall, tz)
    assert spring_next - spring == timedelta(hours=23)
    assert fall_next - fall == timedelta(hours=25)
    assert spring_next.astimezone(tz).hour == fall_next.astimezone(tz).hour == 9


def test_next_repeat__monthly_keeps_local_time_across_dst() -> None:
    anchor = local(NEW_YORK, 2024, 1, 15, 8, 0)
    runs = series(anchor, {"months": 1}, NEW_YORK, 12)
    assert {r.astimezone(NEW_YORK).strftime("%d %H:%M") for r in runs} == {"15 08:00"}
    assert {r.utcoffset() for r in runs} == {timedelta(0)}


@pytest.mark.parametrize(
    ("tz", "anchor", "gap_run", "after_gap"),
    [
        (
            BERLIN,
            (2024, 3, 30, 2, 30),
            local(BERLIN, 2024, 3, 31, 3, 30),
            local(BERLIN, 2024, 4, 1, 2, 30),
        ),
        (
            NEW_YORK,
            (2024, 3, 9, 2, 30),
            local(NEW_YORK, 2024, 3, 10, 3, 30),
            local(NEW_YORK, 2024, 3, 11, 2, 30),
        ),
        (
            SYDNEY,
            (2024, 10, 5, 2, 30),
            local(SYDNEY, 2024, 10, 6, 3, 30),
            local(SYDNEY, 2024, 10, 7, 2, 30),
        ),
    ],
)
def test_next_repeat__gap_shifts_forward_by_gap_length_then_returns_to_grid(
    tz: tzinfo, anchor: tuple[int, ...], gap_run: datetime, after_gap: datetime
) -> None:
    assert series(local(tz, *anchor), {"days": 1}, tz, 2) == [gap_run, after_gap]


@pytest.mark.parametrize(
    ("tz", "anchor", "fold_day"),
    [
        (BERLIN, (2024, 10, 26, 2, 30), (2024, 10, 27)),
        (NEW_YORK, (2024, 11, 2, 1, 30), (2024, 11, 3)),
        (SYDNEY, (2024, 4, 6, 2, 30), (2024, 4, 7)),
    ],
)
def test_next_repeat__fold_takes_the_first_occurrence_once(
    tz: tzinfo, anchor: tuple[int, ...], fold_day: tuple[int, int, int]
) -> None:
    start = local(tz, *anchor)
    fold_run, next_run = series(start, {"days": 1}, tz, 2)
    wall = (*fold_day, *anchor[3:])
    first, second = local(tz, *wall, fold=0), local(tz, *wall, fold=1)
    assert first.utcoffset() != second.utcoffset()  # really ambiguous
    # Compare in UTC: Python never calls an ambiguous time equal to one in another zone.
    assert fold_run == first.astimezone(UTC)
    assert next_run - fold_run == timedelta(hours=25)  # back on the 02:30 grid next day
    assert next_run.astimezone(tz).strftime("%H:%M") == f"{anchor[3]:02d}:{anchor[4]:02d}"


def test_next_repeat__large_k_with_a_seconds_step_is_computed_not_looped() -> None:
    anchor = datetime(1, 1, 1, tzinfo=UTC)
    after = utc(9000, 6, 15, 12, 34, 56)
    started = time.perf_counter()
    nxt = next_repeat(anchor, {"microseconds": 1}, after, UTC)
    assert nxt == after + timedelta(microseconds=1)  # about 2.8e17 steps
    nxt = next_repeat(utc(2000, 1, 1), {"seconds": 7}, after, UTC)
    assert after < nxt <= after + timedelta(seconds=7)
    assert (nxt - utc(2000, 1, 1)) % timedelta(seconds=7) == timedelta(0)
    assert time.perf_counter() - started < 1.0


def test_next_repeat__large_k_with_calendar_steps_is_exact() -> None:
    anchor = local(BERLIN, 1970, 1, 1, 0, 30)
    after = utc(2024, 6, 15, 12, 0)
    assert next_repeat(anchor, {"days": 1}, after, BERLIN) == local(BERLIN, 2024, 6, 16, 0, 30)
    assert next_repeat(anchor, {"months": 1}, after, BERLIN) == local(BERLIN, 2024, 7, 1, 0, 30)
    # k = 55 from the anchor: 2025-01-01 plus 55 days (k = 54 was 2024-02-24, before `after`).
    assert next_repeat(anchor, {"years": 1, "days": 1}, after, BERLIN) == local(
        BERLIN, 2025, 2, 25, 0, 30
    )


def test_next_repeat__rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="anchor must be an aware datetime"):
        next_repeat(datetime(2024, 1, 1), {"days": 1}, NOW, UTC)
    with pytest.raises(ValueError, match="after must be an aware datetime"):
        next_repeat(NOW, {"days": 1}, datetime(2024, 1, 1), UTC)


# --------------------------------------------------------------------------- validate_cron


@pytest.mark.parametrize(
    ("expression", "normalised"),
    [
        ("*/15 * * * *", "*/15 * * * *"),
        ("  0   3 * *\t*  ", "0 3 * * *"),
        ("0 9 * * MON-FRI", "0 9 * * MON-FRI"),
        ("0 9 1,15 * *", "0 9 1,15 * *"),
        ("0 0 29 2 *", "0 0 29 2 *"),
        ("0 0 L * *", "0 0 L * *"),
        ("0 0 * * 5#2", "0 0 * * 5#2"),
        ("0 0 15W * *", "0 0 15W * *"),
        ("0 0 ? * *", "0 0 ? * *"),
        ("0 0 * * 7", "0 0 * * 7"),
        ("0 0-23 * * *", "0 0-23 * * *"),
        ("@hourly", "@hourly"),
        ("@DAILY", "@daily"),
        (" @midnight ", "@midnight"),
        ("@weekly", "@weekly"),
        ("@monthly", "@monthly"),
        ("@yearly", "@yearly"),
        ("@annually", "@annually"),
    ],
)
def test_validate_cron__accepts_and_normalises(expression: str, normalised: str) -> None:
    assert validate_cron(expression) == normalised


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("", "0 fields"),
        ("   ", "0 fields"),
        ("* * * *", "4 fields"),
        ("0 0 1 1 * 30", "6 fields"),  # croniter would read 30 as *seconds*
        ("30 0 0 1 1 *", "6 fields"),  # Quartz style, seconds first
        ("0 0 0 1 1 * 2030", "7 fields"),
        ("60 * * * *", "the minute field '60' is not valid; use 0-59"),
        ("* 24 * * *", "the hour field '24' is not valid; use 0-23"),
        ("*/0 * * * *", "the minute field '*/0' is not valid"),
        ("a b c d e", "the minute field 'a' is not valid"),
        ("0 0 30 2 *", "never fires: the day-of-month '30' does not occur in month '2'"),
        ("0 0 31 4,6 *", "never fires"),
        ("5-5 * * * *", "equal ends"),
        ("1-1/3 * * * *", "equal ends"),
        ("0 0 * * mon-MON", "equal ends"),
        ("0 H * * *", "the hour field 'H' is not valid (hashed 'H' values are not supported)"),
        ("H * * * *", "the minute field 'H' is not valid (hashed"),
        ("0 0 * 13 *", "the month field '13' is not valid; use 1-12 or JAN-DEC"),
        ("0 0 * * 8", "the day-of-week field '8' is not valid"),
        ("@reboot", "Unknown cron alias"),
        ("@every 5m", "Unknown cron alias"),
    ],
)
def test_validate_cron__rejects_with_a_message_naming_the_expression(
    expression: str, why: str
) -> None:
    with pytest.raises(ValueError) as info:
        validate_cron(expression)
    assert repr(expression) in str(info.value)
    assert why.lower() in str(info.value).lower()
    for croniter_words in ("hash_id", "failed to find next date", "not acceptable"):
        assert croniter_words not in str(info.value)


@pytest.mark.parametrize("expression", [None, 5, b"* * * * *", ["*"] * 5])
def test_validate_cron__rejects_non_strings(expression: object) -> None:
    with pytest.raises(TypeError) as info:
        validate_cron(expression)  # type: ignore[arg-type]
    assert repr(expression) in str(info.value)


# --------------------------------------------------------------------------- validate_timezone


@pytest.mark.parametrize("name", ["Europe/Berlin", "America/New_York", "Australia/Sydney", "UTC"])
def test_validate_timezone__returns_the_zone(name: str) -> None:
    assert validate_timezone(name) == ZoneInfo(name)


@pytest.mark.parametrize(
    "name",
    [
        "Mars/Olympus_Mons",
        "",
        "Europe",
        "Europe/",
        "Europe/Berlin ",
        "../etc/passwd",
        "/etc/localtime",
        "localtime",
        "a\x00b",
    ],
)
def test_validate_timezone__rejects_unknown_names(name: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_timezone(name)
    assert repr(name) in str(info.value)


def test_validate_timezone__rejects_non_strings() -> None:
    with pytest.raises(TypeError, match="not 5"):
        validate_timezone(5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- next_cron_fire


def test_next_cron_fire__is_strictly_after_and_in_utc() -> None:
    assert next_cron_fire("0 9 * * *", UTC, utc(2024, 1, 1, 8, 59, 59)) == utc(2024, 1, 1, 9)
    fire = next_cron_fire("0 9 * * *", UTC, utc(2024, 1, 1, 9))
    assert fire == utc(2024, 1, 2, 9)
    assert fire.tzinfo is UTC


def test_next_cron_fire__evaluates_the_expression_on_the_zone_wall_clock() -> None:
    after = local(NEW_YORK, 2024, 7, 1, 12, 0)  # any aware `after` works
    assert next_cron_fire("0 9 * * *", BERLIN, after) == local(BERLIN, 2024, 7, 2, 9, 0)
    fixed = timezone(timedelta(hours=5, minutes=30))
    assert next_cron_fire("0 9 * * *", fixed, after) == utc(2024, 7, 2, 3, 30)


@pytest.mark.parametrize(
    "expression",
    [
        "*/7 * * * *",
        "0 9 * * MON-FRI",
        "15 3 L * *",
        "0 0 * * 5#2",
        "@weekly",
        "5 4 1,15 2 *",
        "0 */6 * * *",
    ],
)
def test_next_cron_fire__agrees_with_croniter_where_there_is_no_dst(expression: str) -> None:
    it = croniter(expression, utc(2023, 12, 31, 23, 59), ret_type=datetime)
    after = utc(2023, 12, 31, 23, 59)
    for _ in range(50):
        after = next_cron_fire(expression, UTC, after)
        assert after == it.get_next(datetime)


@pytest.mark.parametrize(
    ("tz", "day", "expected"),
    [
        (BERLIN, (2024, 3, 31), ["03-31 03:00+0200", "04-01 02:30+0200"]),
        (NEW_YORK, (2024, 3, 10), ["03-10 03:00-0400", "03-11 02:30-0400"]),
        (SYDNEY, (2024, 10, 6), ["10-06 03:00+1100", "10-07 02:30+1100"]),
    ],
)
def test_next_cron_fire__spring_forward_daily_0230_fires_once_at_gap_end(
    tz: tzinfo, day: tuple[int, int, int], expected: list[str]
) -> None:
    start = local(tz, *day, 0, 0) - timedelta(hours=12)
    fires = cron_fires_between("30 2 * * *", tz, start, start + timedelta(hours=48), 10)
    assert walls(fires, tz) == expected


@pytest.mark.parametrize(
    ("tz", "expression", "day", "expected"),
    [
        (BERLIN, "30 2 * * *", (2024, 10, 27), ["10-27 02:30+0200", "10-28 02:30+0100"]),
        (NEW_YORK, "30 1 * * *", (2024, 11, 3), ["11-03 01:30-0400", "11-04 01:30-0500"]),
        (SYDNEY, "30 2 * * *", (2024, 4, 7), ["04-07 02:30+1100", "04-08 02:30+1000"]),
    ],
)
def test_next_cron_fire__fall_back_daily_fires_once_in_the_first_pass(
    tz: tzinfo, expression: str, day: tuple[int, int, int], expected: list[str]
) -> None:
    start = local(tz, *day, 0, 0) - timedelta(hours=12)
    fires = cron_fires_between(expression, tz, start, start + timedelta(hours=48), 10)
    assert walls(fires, tz) == expected


def test_next_cron_fire__fixed_time_job_does_not_refire_in_the_second_pass() -> None:
    second_pass = local(NEW_YORK, 2024, 11, 3, 1, 15, fold=1)
    assert next_cron_fire("30 1 * * *", NEW_YORK, second_pass) == local(
        NEW_YORK, 2024, 11, 4, 1, 30
    )


@pytest.mark.parametrize(
    ("tz", "night", "expected"),
    [
        (
            BERLIN,
            (2024, 10, 27),
            [
                "01:00+0200",
                "01:30+0200",
                "02:00+0200",
                "02:30+0200",
                "02:00+0100",
                "02:30+0100",
                "03:00+0100",
                "03:30+0100",
                "04:00+0100",
            ],
        ),
        (
            NEW_YORK,
            (2024, 11, 3),
            [
                "00:30-0400",
                "01:00-0400",
                "01:30-0400",
                "01:00-0500",
                "01:30-0500",
                "02:00-0500",
                "02:30-0500",
                "03:00-0500",
                "03:30-0500",
                "04:00-0500",
            ],
        ),
    ],
)
def test_next_cron_fire__every_30_minutes_across_fall_back_night_fires_each_real_half_hour(
    tz: tzinfo, night: tuple[int, int, int], expected: list[str]
) -> None:
    after = local(tz, *night, 0, 30) if tz is BERLIN else local(tz, *night, 0, 0)
    until = local(tz, *night, 4, 0)
    fires = cron_fires_between("*/30 * * * *", tz, after, until, 100)
    assert [f.astimezone(tz).strftime("%H:%M%z") for f in fires] == expected
    assert len(set(fires)) == len(fires)  # no duplicate instants
    assert {b - a for a, b in pairwise(fires)} == {timedelta(minutes=30)}
    # Documented count: every real half hour of the 5 real hours from 00:00 to 04:00 local.
    night_fires = cron_fires_between("*/30 * * * *", tz, local(tz, *night, 0, 0), until, 100)
    assert len(night_fires) == 10


def test_next_cron_fire__every_30_minutes_across_spring_forward_night_skips_missing_hour() -> None:
    fires = cron_fires_between(
        "*/30 * * * *",
        BERLIN,
        local(BERLIN, 2024, 3, 31, 0, 0),
        local(BERLIN, 2024, 3, 31, 4, 0),
        100,
    )
    assert [f.astimezone(BERLIN).strftime("%H:%M") for f in fires] == [
        "00:30",
        "01:00",
        "01:30",
        "03:00",
        "03:30",
        "04:00",
    ]
    assert {b - a for a, b in pairwise(fires)} == {timedelta(minutes=30)}


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, SYDNEY])
def test_next_cron_fire__hourly_fires_once_per_real_hour_all_year(tz: tzinfo) -> None:
    start = local(tz, 2024, 1, 1, 0, 0)
    fires = cron_fires_between("0 * * * *", tz, start, local(tz, 2025, 1, 1, 0, 0), 10_000)
    assert {b - a for a, b in pairwise(fires)} == {timedelta(hours=1)}
    assert len(fires) == (local(tz, 2025, 1, 1) - start) // timedelta(hours=1)


def test_next_cron_fire__hourly_from_inside_a_fold_fires_the_replayed_hour() -> None:
    first_pass = utc(2024, 10, 27, 0, 45)  # 02:45 CEST
    assert walls([next_cron_fire("0 * * * *", BERLIN, first_pass)], BERLIN) == ["10-27 02:00+0100"]
    second_pass = utc(2024, 10, 27, 1, 15)  # 02:15 CET
    assert walls([next_cron_fire("*/30 * * * *", BERLIN, second_pass)], BERLIN) == [
        "10-27 02:30+0100"
    ]


def test_next_cron_fire__fixed_hour_matches_inside_a_gap_coalesce_into_one_fire() -> None:
    start = local(NEW_YORK, 2024, 3, 10, 0, 0)
    fires = cron_fires_between("* 2 * * *", NEW_YORK, start, start + timedelta(hours=6), 100)
    assert walls(fires, NEW_YORK) == ["03-10 03:00-0400"]
    fires = cron_fires_between(
        "0 */2 * * *",
        BERLIN,
        local(BERLIN, 2024, 3, 31, 0, 0),
        local(BERLIN, 2024, 3, 31, 6, 0),
        100,
    )
    assert walls(fires, BERLIN) == ["03-31 03:00+0200", "03-31 04:00+0200", "03-31 06:00+0200"]


def test_next_cron_fire__half_hour_dst_zone_is_handled() -> None:
    lord_howe = ZoneInfo("Australia/Lord_Howe")  # DST moves the clock by 30 minutes
    fires = cron_fires_between(
        "*/20 * * * *",
        lord_howe,
        local(lord_howe, 2024, 4, 7, 1, 0),
        local(lord_howe, 2024, 4, 7, 2, 0),
        100,
    )
    assert walls(fires, lord_howe) == [
        "04-07 01:20+1100",
        "04-07 01:40+1100",
        "04-07 01:40+1030",
        "04-07 02:00+1030",
    ]


def test_next_cron_fire__rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="after must be an aware datetime"):
        next_cron_fire("* * * * *", UTC, datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="'61 \\* \\* \\* \\*'"):
        next_cron_fire("61 * * * *", UTC, NOW)


# --------------------------------------------------------------------------- cron_fires_between


def test_cron_fires_between__is_open_at_after_and_closed_at_until() -> None:
    fires = cron_fires_between("0 * * * *", UTC, utc(2024, 1, 1, 0), utc(2024, 1, 1, 3), 10)
    assert fires == [utc(2024, 1, 1, 1), utc(2024, 1, 1, 2), utc(2024, 1, 1, 3)]


def test_cron_fires_between__stops_at_limit_for_catch_up_decisions() -> None:
    down_since, now = utc(2024, 1, 1), utc(2024, 3, 1)
    assert cron_fires_between("*/5 * * * *", UTC, down_since, now, 3) == [
        utc(2024, 1, 1, 0, 5),
        utc(2024, 1, 1, 0, 10),
        utc(2024, 1, 1, 0, 15),
    ]
    assert cron_fires_between("*/5 * * * *", UTC, down_since, now, 0) == []
    assert cron_fires_between("*/5 * * * *", UTC, now, down_since, 3) == []


@pytest.mark.parametrize("limit", [-1, 1.5, True, "3"])
def test_cron_fires_between__rejects_a_bad_limit(limit: object) -> None:
    with pytest.raises(ValueError, match="limit"):
        cron_fires_between("* * * * *", UTC, NOW, NOW, limit)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("zone", "transition"),
    [
        ("Europe/Berlin", utc(2024, 3, 31, 1)),
        ("Europe/Berlin", utc(2024, 10, 27, 1)),
        ("America/New_York", utc(2024, 3, 10, 7)),
        ("America/New_York", utc(2024, 11, 3, 6)),
        ("Australia/Sydney", utc(2024, 4, 6, 16)),
        ("Australia/Sydney", utc(2024, 10, 5, 16)),
        ("Australia/Lord_Howe", utc(2024, 4, 6, 15)),
        ("Australia/Lord_Howe", utc(2024, 10, 5, 15, 30)),
        ("Europe/Dublin", utc(2024, 3, 31, 1)),  # "negative DST" in the tz database
        ("Europe/Dublin", utc(2024, 10, 27, 1)),
        ("America/Havana", utc(2024, 3, 10, 5)),  # skips midnight
        ("America/Havana", utc(2024, 11, 3, 5)),
    ],
)
@pytest.mark.parametrize(
    ("expression", "minutes"),
    [
        ("*/30 * * * *", {0, 30}),
        ("0 * * * *", {0}),
        ("15,45 * * * *", {15, 45}),
        ("*/20 * * * *", {0, 20, 40}),
    ],
)
def test_next_cron_fire__periodic_jobs_fire_at_every_instant_whose_wall_clock_matches(
    zone: str, transition: datetime, expression: str, minutes: set[int]
) -> None:
    tz = ZoneInfo(zone)
    before, after = transition - timedelta(seconds=1), transition
    assert before.astimezone(tz).utcoffset() != after.astimezone(tz).utcoffset()
    start, end = transition - timedelta(hours=3), transition + timedelta(hours=3)
    # Brute force: walk real time minute by minute and read the wall clock.
    minute_marks = (start + timedelta(minutes=m) for m in range(1, 6 * 60 + 1))
    expected = [i for i in minute_marks if i.astimezone(tz).minute in minutes]
    assert cron_fires_between(expression, tz, start, end, 1000) == expected
