"""JSON encoding of task calls: arguments go in as JSON or not at all (never pickle)."""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .exceptions import InvalidTaskArguments

Params = dict[str, Any]


def _describe(value: object) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")


def _string_problem(value: str) -> str | None:
    # PostgreSQL's jsonb cannot hold U+0000: refused everywhere, so that code moving from
    # SQLite to PostgreSQL fails at the call and not when the row is written or finished.
    if "\x00" in value:
        return "a string contains a NUL character (\\x00), which PostgreSQL cannot store"
    return None


def json_problem(value: object) -> str | None:
    """Return why ``value`` does not survive a JSON round trip unchanged, or None."""
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, str):
        return _string_problem(value)
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} is not a finite number"
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            problem = json_problem(item)
            if problem:
                return f"item {index}: {problem}"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"key {key!r} is of type {_describe(key)}, and JSON keys must be strings"
            problem = _string_problem(key) or json_problem(item)
            if problem:
                return f"key {key!r}: {problem}"
        return None
    return f"a value of type {_describe(value)} cannot be stored as JSON"


def _argument_names(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[str]:
    """Name each positional argument after the parameter it binds to, where that is known."""
    names = [f"positional argument {i}" for i in range(len(args))]
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return names
    for i, param in enumerate(params[: len(args)]):
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            names[i] = f"argument {param.name!r}"
    return names


def check_signature(
    task_name: str, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> None:
    """Raise InvalidTaskArguments when the call does not fit the function's signature."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise InvalidTaskArguments(
            f"Task {task_name!r} cannot be called with these arguments: {exc}."
        ) from None


def encode_params(
    task_name: str, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Params:
    """Return the JSON form of a call, or raise InvalidTaskArguments naming the bad argument.

    Tuples are stored as lists; everything else must come back from JSON exactly as it went in,
    so that the task body sees what the caller passed.
    """
    for name, value in zip(_argument_names(func, args, kwargs), args, strict=True):
        problem = json_problem(value)
        if problem:
            raise InvalidTaskArguments(
                f"Task {task_name!r}: {name} cannot be stored: {problem}. "
                "Pass JSON values (str, int, float, bool, None, lists and dicts of them), "
                "for example a model's primary key instead of the instance."
            )
    for key, value in kwargs.items():
        problem = json_problem(value)
        if problem:
            raise InvalidTaskArguments(
                f"Task {task_name!r}: argument {key!r} cannot be stored: {problem}. "
                "Pass JSON values (str, int, float, bool, None, lists and dicts of them), "
                "for example a model's primary key instead of the instance."
            )
    # The round trip turns tuples into lists, exactly as the worker will see them.
    params: Params = json.loads(json.dumps({"args": list(args), "kwargs": dict(kwargs)}))
    return params


def _quoted(value: object, limit: int = 200) -> str:
    """Return ``repr(value)``, cut short: an error must not copy a 10 MB value whole."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def decode_params(params: object) -> tuple[list[Any], dict[str, Any]]:
    """Return (args, kwargs) stored in a row, or raise InvalidTaskArguments if malformed.

    Empty params (``{}``, ``None``, ``""`` from rows created by hand) mean a call with no
    arguments. The django-background-tasks form ``[[args], {kwargs}]`` is accepted too.
    """
    if params in (None, "", {}, []):
        return [], {}
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError as exc:
            raise InvalidTaskArguments(f"Task parameters are not valid JSON: {exc}.") from None
    if isinstance(params, list) and len(params) == 2:
        params = {"args": params[0], "kwargs": params[1]}
    if not isinstance(params, dict) or set(params) - {"args", "kwargs"}:
        raise InvalidTaskArguments(
            f"Task parameters must be an object with 'args' and 'kwargs', not {_quoted(params)}."
        )
    args = params.get("args", [])
    kwargs = params.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise InvalidTaskArguments(
            "Task parameters need 'args' to be a list and 'kwargs' an object, got "
            f"{_quoted(params)}."
        )
    return args, kwargs


def params_hash(task_name: str, params: object) -> str:
    """Return a stable fingerprint of a task name and its parameters."""
    canonical = json.dumps([task_name, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(canonical.encode(), usedforsecurity=False).hexdigest()
