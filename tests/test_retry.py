"""Retry policy maths (``background_tasks.retry``): pure, no database, seeded randomness."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.test import override_settings

from background_tasks import Backoff
from background_tasks.exceptions import InvalidTaskError
from background_tasks.retry import check_backoff, retry_delay

NO_JITTER = Backoff(jitter=0)


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(1, 6.0), (2, 21.0), (3, 86.0), (4, 261.0), (5, 630.0), (10, 10_005.0)],
)
def test_default_backoff__without_jitter_is_attempts_to_the_fourth_plus_five(
    attempts: int, seconds: float
) -> None:
    assert NO_JITTER.seconds(attempts) == seconds


def test_default_backoff__is_capped_at_seven_days() -> None:
    assert NO_JITTER.seconds(200) == 7 * 24 * 3600.0


def test_default_backoff__an_astronomical_attempt_count_is_capped_not_an_overflow() -> None:
    assert NO_JITTER.seconds(10**100) == 7 * 24 * 3600.0


def test_default_backoff__jitter_stays_within_ten_percent_either_way() -> None:
    rng = random.Random(1234)

    delays = [Backoff().seconds(3, rng) for _ in range(2000)]

    assert min(delays) >= 86.0 * 0.9
    assert max(delays) <= 86.0 * 1.1
    # Spread over the whole band, not stuck on one value or one side of it.
    assert min(delays) < 86.0 * 0.92
    assert max(delays) > 86.0 * 1.08


def test_jitter__the_same_seed_gives_the_same_delays() -> None:
    first = [Backoff().seconds(4, random.Random(7)) for _ in range(3)]
    second = [Backoff().seconds(4, random.Random(7)) for _ in range(3)]

    assert first == second


def test_jitter__applies_to_the_capped_delay_too() -> None:
    rng = random.Random(99)
    cap = 100.0

    delays = [Backoff(max_delay=cap, jitter=0.5).seconds(50, rng) for _ in range(500)]

    assert all(cap * 0.5 <= delay <= cap * 1.5 for delay in delays)
    assert max(delays) > cap


def test_backoff__explicit_fields_override_the_formula() -> None:
    backoff = Backoff(exponent=2, base=1, max_delay=50, jitter=0)

    assert [backoff.seconds(n) for n in (1, 2, 3, 7, 8)] == [2.0, 5.0, 10.0, 50.0, 50.0]


@override_settings(
    BACKGROUND_TASKS_BACKOFF_EXPONENT=1,
    BACKGROUND_TASKS_BACKOFF_BASE=10,
    BACKGROUND_TASKS_BACKOFF_MAX=12,
    BACKGROUND_TASKS_BACKOFF_JITTER=0,
)
def test_backoff__unset_fields_follow_the_settings() -> None:
    assert [Backoff().seconds(n) for n in (1, 2, 3)] == [11.0, 12.0, 12.0]


@override_settings(BACKGROUND_TASKS_BACKOFF_JITTER=0)
def test_retry_delay__none_means_the_default_backoff() -> None:
    assert retry_delay(None, 2) == timedelta(seconds=21)


def test_retry_delay__a_number_is_a_constant_delay() -> None:
    assert retry_delay(30, 1) == timedelta(seconds=30)
    assert retry_delay(2.5, 9) == timedelta(seconds=2.5)
    assert retry_delay(0, 4) == timedelta(0)


def test_retry_delay__a_function_gets_the_attempt_number_and_may_return_seconds() -> None:
    seen: list[int] = []

    def linear(attempts: int) -> float:
        seen.append(attempts)
        return attempts * 10

    assert retry_delay(linear, 3) == timedelta(seconds=30)
    assert seen == [3]


def test_retry_delay__a_function_may_return_a_timedelta() -> None:
    assert retry_delay(lambda attempts: timedelta(minutes=attempts), 2) == timedelta(minutes=2)


@pytest.mark.parametrize("value", [-5, timedelta(seconds=-5)])
def test_retry_delay__a_negative_delay_from_a_function_means_retry_at_once(value: object) -> None:
    assert retry_delay(lambda attempts: value, 1) == timedelta(0)


@pytest.mark.parametrize("value", ["soon", None, True, float("nan"), float("inf")])
def test_retry_delay__a_function_returning_no_usable_delay_raises(value: object) -> None:
    with pytest.raises(InvalidTaskError, match="backoff function returned"):
        retry_delay(lambda attempts: value, 1)


def test_retry_delay__a_huge_delay_is_clamped_instead_of_overflowing() -> None:
    delay = retry_delay(lambda attempts: 10.0**30, 1)

    assert delay >= timedelta(days=365)


def test_retry_delay__a_backoff_instance_uses_its_formula_and_the_given_rng() -> None:
    backoff = Backoff(exponent=1, base=0, jitter=0.5)

    delay = retry_delay(backoff, 100, random.Random(5))

    assert delay == timedelta(seconds=backoff.seconds(100, random.Random(5)))
    assert timedelta(seconds=50) <= delay <= timedelta(seconds=150)


@pytest.mark.parametrize(
    "backoff",
    [None, 0, 10, 2.5, Backoff(), lambda attempts: attempts],
)
def test_check_backoff__accepts_every_documented_form(backoff: object) -> None:
    check_backoff(backoff, "tests.some_task")


@pytest.mark.parametrize(
    "backoff",
    [-1, -0.5, True, "fast", [1, 2], float("nan"), float("inf")],
)
def test_check_backoff__rejects_unusable_values_naming_the_task(backoff: object) -> None:
    with pytest.raises(InvalidTaskError, match=r"tests\.some_task"):
        check_backoff(backoff, "tests.some_task")


@pytest.mark.parametrize(
    "fields",
    [
        {"exponent": -1},
        {"base": -1},
        {"max_delay": -1},
        {"jitter": -0.1},
        {"jitter": 1.5},
        {"base": "5"},
        {"exponent": True},
        {"jitter": float("nan")},
        {"base": float("inf")},
    ],
)
def test_backoff__rejects_bad_fields(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidTaskError, match="Backoff"):
        Backoff(**fields)  # type: ignore[arg-type]
