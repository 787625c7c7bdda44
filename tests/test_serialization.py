"""Task calls as JSON: what goes in comes back unchanged, or the call is refused."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User

from background_tasks.exceptions import InvalidTaskArguments
from background_tasks.models import Task
from background_tasks.serialization import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    check_signature,
    decode_params,
    encode_params,
    json_problem,
    params_hash,
)
from background_tasks.testing import run_tasks
from tests.testapp import tasks

NAME = "tests.some_task"


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def two_and_rest(first: Any, second: Any = None, *rest: Any, **options: Any) -> None: ...


# -- json_problem -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -3,
        2**70,
        1.5,
        -0.25,
        "",
        "héllo ☃ 😀",
        [],
        [1, [2, [3]]],
        (1, "a"),
        {},
        {"a": {"b": [None, 1.0, "x"]}},
        10**MAX_INT_DIGITS - 1,
        -(10**MAX_INT_DIGITS - 1),
        nested(MAX_DEPTH),
        {"k": nested(MAX_DEPTH - 1)},
    ],
)
def test_json_problem__json_values_have_none(value: object) -> None:
    assert json_problem(value) is None


@pytest.mark.parametrize(
    ("value", "explanation"),
    [
        ({1, 2}, "a value of type set cannot be stored as JSON"),
        (frozenset(), "a value of type frozenset cannot be stored as JSON"),
        (b"raw", "a value of type bytes cannot be stored as JSON"),
        (object(), "a value of type object cannot be stored as JSON"),
        (decimal.Decimal("1.5"), "a value of type decimal.Decimal cannot be stored as JSON"),
        (dt.date(2026, 1, 1), "a value of type datetime.date cannot be stored as JSON"),
        (uuid.UUID(int=1), "a value of type uuid.UUID cannot be stored as JSON"),
        (float("nan"), "nan is not a finite number"),
        (float("-inf"), "-inf is not a finite number"),
        ({1: "x"}, "key 1 is of type int, and JSON keys must be strings"),
        ([1, [2, {3}]], "item 1: item 1: a value of type set cannot be stored as JSON"),
        ({"a": {"b": b"x"}}, "key 'a': key 'b': a value of type bytes cannot be stored as JSON"),
        ("nul\x00byte", "NUL character"),
        ({"k\x00": 1}, "NUL character"),
        ("file\udcff.txt", "lone surrogate '\\udcff'"),
        ({"\ud83d": 1}, "key '\\ud83d': a string contains the lone surrogate"),
        (10**MAX_INT_DIGITS, f"an integer has more than {MAX_INT_DIGITS} digits"),
        ([-(10**MAX_INT_DIGITS)], f"item 0: an integer has more than {MAX_INT_DIGITS} digits"),
        (nested(MAX_DEPTH + 1), f"nested more than {MAX_DEPTH} deep"),
        ({"k": nested(MAX_DEPTH)}, f"key 'k': {'item 0: ' * (MAX_DEPTH - 1)}lists and dicts"),
    ],
)
def test_json_problem__explains_what_cannot_be_stored(value: object, explanation: str) -> None:
    problem = json_problem(value)

    assert problem is not None
    assert explanation in problem


def test_json_problem__a_model_instance_is_named_by_its_class() -> None:
    problem = json_problem(User(username="ada"))

    assert problem == "a value of type django.contrib.auth.models.User cannot be stored as JSON"


# -- encode_params ----------------------------------------------------------------------------


def test_encode_params__stores_args_and_kwargs_with_tuples_as_lists() -> None:
    params = encode_params(NAME, two_and_rest, (1, (2, 3)), {"flag": {"nested": (True,)}})

    assert params == {"args": [1, [2, 3]], "kwargs": {"flag": {"nested": [True]}}}


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        (({1},), {}, "argument 'first'"),
        ((1, b"x"), {}, "argument 'second'"),
        ((1, 2, 3, object()), {}, "positional argument 3"),
        ((1,), {"second": {1}}, "argument 'second'"),
        ((1,), {"extra": dt.datetime(2026, 1, 1)}, "argument 'extra'"),
    ],
)
def test_encode_params__refuses_with_a_type_error_naming_task_and_argument(
    args: tuple[Any, ...], kwargs: dict[str, Any], named: str
) -> None:
    with pytest.raises(TypeError) as error:
        encode_params(NAME, two_and_rest, args, kwargs)

    assert isinstance(error.value, InvalidTaskArguments)
    assert f"Task {NAME!r}: {named} cannot be stored" in str(error.value)
    assert "primary key" in str(error.value)  # says what to do instead


# -- decode_params ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"args": [1], "kwargs": {"a": 2}}, ([1], {"a": 2})),
        ({"args": [1]}, ([1], {})),
        ({"kwargs": {"a": 2}}, ([], {"a": 2})),
        ({}, ([], {})),
        (None, ([], {})),
        ("", ([], {})),
        ([], ([], {})),
        ([[1], {"a": 2}], ([1], {"a": 2})),
        ('{"args": [1], "kwargs": {}}', ([1], {})),
        ('[[1], {"a": 2}]', ([1], {"a": 2})),
    ],
)
def test_decode_params__accepts_every_stored_form(params: object, expected: object) -> None:
    assert decode_params(params) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{broken", "not valid JSON"),
        ({"args": [], "other": 1}, "must be an object with 'args' and 'kwargs'"),
        ([1, 2, 3], "must be an object with 'args' and 'kwargs'"),
        (7, "must be an object with 'args' and 'kwargs'"),
        ({"args": {"a": 1}}, "'args' to be a list"),
        ({"kwargs": [1]}, "'kwargs' an object"),
        ([1, 2], "'args' to be a list"),
    ],
)
def test_decode_params__refuses_malformed_params(params: object, message: str) -> None:
    with pytest.raises(InvalidTaskArguments, match="parameters") as error:
        decode_params(params)

    assert message in str(error.value)


# -- params_hash ------------------------------------------------------------------------------


def test_params_hash__is_stable_and_ignores_keyword_order() -> None:
    first = params_hash(NAME, {"args": [1], "kwargs": {"a": 1, "b": 2}})
    second = params_hash(NAME, {"args": [1], "kwargs": {"b": 2, "a": 1}})

    assert first == second
    assert len(first) == 40


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("tests.other_task", {"args": [1], "kwargs": {}}),
        (NAME, {"args": [2], "kwargs": {}}),
        (NAME, {"args": [], "kwargs": {"x": 1}}),
    ],
)
def test_params_hash__differs_for_another_name_or_other_arguments(
    name: str, params: dict[str, Any]
) -> None:
    assert params_hash(name, params) != params_hash(NAME, {"args": [1], "kwargs": {}})


# -- check_signature --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1, 2, 3), {}), ((1,), {"first": 2}), ((1, 2), {"unknown": 1})],
)
def test_check_signature__accepts_calls_that_fit(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    def fits(*args: Any, **kwargs: Any) -> None: ...

    check_signature(NAME, fits, args, kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "reason"),
    [
        ((), {}, "missing a required argument: 'first'"),
        ((1,), {"first": 2}, "multiple values for argument 'first'"),
    ],
)
def test_check_signature__refuses_calls_that_do_not_fit(
    args: tuple[Any, ...], kwargs: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidTaskArguments) as error:
        check_signature(NAME, two_and_rest, args, kwargs)

    assert f"Task {NAME!r} cannot be called with these arguments" in str(error.value)
    assert reason in str(error.value)


def test_check_signature__too_many_positional_arguments_are_refused() -> None:
    with pytest.raises(InvalidTaskArguments, match="too many positional arguments"):
        check_signature(NAME, tasks.send_newsletter.func, (1, "weekly", "extra"), {})


# -- calls of real tasks ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("make_value", "kind"),
    [
        pytest.param(
            lambda: User.objects.create(username="ada"),
            "django.contrib.auth.models.User",
            id="model",
        ),
        pytest.param(lambda: {1, 2}, "set", id="set"),
        pytest.param(lambda: b"7", "bytes", id="bytes"),
        pytest.param(object, "object", id="object"),
    ],
)
@pytest.mark.parametrize("as_keyword", [False, True], ids=["positional", "keyword"])
def test_call__with_an_argument_that_is_not_json_raises_type_error_and_writes_no_row(
    make_value: Callable[[], object], kind: str, as_keyword: bool
) -> None:
    value = make_value()
    args, kwargs, named = (
        ((7,), {"template": value}, "argument 'template'")
        if as_keyword
        else ((value,), {}, "argument 'user_id'")
    )

    with pytest.raises(TypeError) as error:
        tasks.send_newsletter(*args, **kwargs)

    message = str(error.value)
    assert "'tests.testapp.tasks.send_newsletter'" in message
    assert named in message
    assert f"a value of type {kind} cannot be stored" in message
    assert not Task.objects.exists()


@pytest.mark.django_db
def test_call__with_a_nul_character_raises_type_error_on_every_database() -> None:
    with pytest.raises(TypeError, match="NUL character"):
        tasks.record("a\x00b")

    assert not Task.objects.exists()


@pytest.mark.django_db
def test_call__that_does_not_fit_the_signature_raises_type_error_and_writes_no_row() -> None:
    with pytest.raises(TypeError, match="cannot be called with these arguments"):
        tasks.send_newsletter(1, "weekly", "extra")  # type: ignore[call-arg]

    assert not Task.objects.exists()


@pytest.mark.django_db
def test_round_trip__the_task_gets_the_values_the_caller_passed() -> None:
    user_id = {"ids": (1, 2), "big": 2**62, "text": "héllo ☃ 😀\n\"'", "ratio": 0.1, "none": None}
    template = ["a", ["b", ["c"]], {"deep": {"er": True}}]

    tasks.send_newsletter(user_id, template=template)  # type: ignore[arg-type]
    assert Task.objects.get().params["args"][0]["text"] == "héllo ☃ 😀\n\"'"
    run_tasks()

    calls = list(tasks.CALLS)
    assert calls == [((dict(user_id, ids=[1, 2]),), {"template": template})]
