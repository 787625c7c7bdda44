"""JSON encoding of task calls: arguments go in as JSON or not at all (never pickle)."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from .exceptions import InvalidTaskArguments

Params = dict[str, Any]


#: Lists and dicts nest at most this deep in an argument or a result. MariaDB's JSON columns
#: refuse documents nested deeper than 32 levels, and arguments are stored two levels down
#: (``{"args": [...]}``); 20 leaves room and is deeper than any sane call needs.
MAX_DEPTH = 20
#: Integers have at most this many decimal digits. 640 is the least any Python can be set to
#: print (``sys.set_int_max_str_digits``), so whatever the limit of the worker reading a value
#: back, it can; larger numbers go as strings.
MAX_INT_DIGITS = 640

_INT_LIMIT = 10**MAX_INT_DIGITS
_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")

_ADVICE_JSON = (
    "Pass JSON values (str, int, float, bool, None, lists and dicts of them), "
    "for example a model's primary key instead of the instance."
)
_ADVICE_FLOAT = "Pass a finite number, or None."
_ADVICE_KEY = "Use string keys, e.g. {str(key): value for key, value in data.items()}."
_ADVICE_NUL = "Remove the NUL characters, or pass the data encoded (e.g. base64)."
_ADVICE_SURROGATE = (
    "Pass valid text: decode bytes with errors='replace', or pass file names "
    "as os.fsencode(name).hex()."
)
_ADVICE_INT = f"Pass integers of more than {MAX_INT_DIGITS} digits as strings: str(value)."
_ADVICE_DEPTH = f"Flatten the data to at most {MAX_DEPTH} levels, or pass it as a JSON string."


@dataclass(frozen=True)
class JsonProblem:
    """Why a value cannot be stored as JSON, and what to pass instead."""

    reason: str
    advice: str

    def at(self, where: str) -> JsonProblem:
        return JsonProblem(f"{where}: {self.reason}", self.advice)


def _describe(value: object) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")


def _string_problem(value: str) -> JsonProblem | None:
    # Both are refused everywhere, so that code moving from SQLite to PostgreSQL or MariaDB
    # fails at the call and not when the row is written or the task finished.
    if value.isascii() and "\x00" not in value:
        return None
    found = _UNSTORABLE_CHAR.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return JsonProblem(
            "a string contains a NUL character (\\x00), which PostgreSQL cannot store",
            _ADVICE_NUL,
        )
    return JsonProblem(
        f"a string contains the lone surrogate {found.group()!r} (not text: say, an "
        "undecodable file name from os.listdir()), which PostgreSQL and MariaDB cannot store",
        _ADVICE_SURROGATE,
    )


def find_json_problem(value: object, depth: int = 0) -> JsonProblem | None:
    """Return why ``value`` does not survive a JSON round trip on every database, or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if -_INT_LIMIT < value < _INT_LIMIT:
            return None
        return JsonProblem(f"an integer has more than {MAX_INT_DIGITS} digits", _ADVICE_INT)
    if isinstance(value, str):
        return _string_problem(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return JsonProblem(f"{value!r} is not a finite number", _ADVICE_FLOAT)
    if isinstance(value, (list, tuple, dict)) and depth >= MAX_DEPTH:
        return JsonProblem(f"lists and dicts are nested more than {MAX_DEPTH} deep", _ADVICE_DEPTH)
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            problem = find_json_problem(item, depth + 1)
            if problem:
                return problem.at(f"item {index}")
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return JsonProblem(
                    f"key {key!r} is of type {_describe(key)}, and JSON keys must be strings",
                    _ADVICE_KEY,
                )
            problem = _string_problem(key) or find_json_problem(item, depth + 1)
            if problem:
                return problem.at(f"key {key!r}")
        return None
    return JsonProblem(f"a value of type {_describe(value)} cannot be stored as JSON", _ADVICE_JSON)


def json_problem(value: object) -> str | None:
    """Return why ``value`` does not survive a JSON round trip on every database, or None."""
    problem = find_json_problem(value)
    return problem.reason if problem else None


#: Values stored as they are: a JSON round trip gives back an equal value of the same type.
_SCALARS = frozenset({str, int, float, bool, type(None)})
_STR = frozenset({str})


def _signature(func: Any) -> _Shape | None:
    """Return the signature of ``func`` (None when it has none), computed once per function.

    Enqueuing checks every call against it; ``inspect.signature()`` is a large part of the
    cost of a call when computed each time.
    """
    try:
        hash(func)
    except TypeError:
        return _uncached_signature(func)
    return _cached_signature(func)


@dataclass(frozen=True)
class _Shape:
    signature: inspect.Signature
    #: The fewest and most positional arguments a call without keywords binds to; (1, 0),
    #: nothing, where a keyword-only parameter has no default (bind() names the problem).
    positional: tuple[float, float]


def _uncached_signature(func: Any) -> _Shape | None:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    return _Shape(signature, _positional_counts(signature))


_cached_signature = functools.lru_cache(maxsize=1024)(_uncached_signature)


def _positional_counts(signature: inspect.Signature) -> tuple[float, float]:
    fewest, most = 0, 0.0
    for param in signature.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            most += 1
            if param.default is param.empty:
                fewest = int(most)
        elif param.kind is param.VAR_POSITIONAL:
            most = math.inf
        elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
            return 1, 0
    return fewest, most


def _argument_names(func: Any, args: Sequence[Any]) -> list[str]:
    """Name each positional argument after the parameter it binds to, where that is known."""
    names = [f"positional argument {i}" for i in range(len(args))]
    shape = _signature(func)
    if shape is None:
        return names
    params = list(shape.signature.parameters.values())
    for i, param in enumerate(params[: len(args)]):
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            names[i] = f"argument {param.name!r}"
    return names


def check_signature(
    task_name: str, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> None:
    """Raise InvalidTaskArguments when the call does not fit the function's signature."""
    shape = _signature(func)
    if shape is None:
        return
    if not kwargs:
        fewest, most = shape.positional
        if fewest <= len(args) <= most:
            return  # what bind() would say, without its cost (a bulk call checks thousands)
    try:
        shape.signature.bind(*args, **kwargs)
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
    for index, value in enumerate(args):
        problem = find_json_problem(value)
        if problem:
            name = _argument_names(func, args)[index]
            raise InvalidTaskArguments(
                f"Task {task_name!r}: {name} cannot be stored: {problem.reason}. {problem.advice}"
            )
    for key, value in kwargs.items():
        problem = find_json_problem(value)
        if problem:
            raise InvalidTaskArguments(
                f"Task {task_name!r}: argument {key!r} cannot be stored: {problem.reason}. "
                f"{problem.advice}"
            )
    params: Params = {"args": list(args), "kwargs": dict(kwargs)}
    # Set operations over map(type, ...): no Python frame per value (a bulk call checks
    # thousands of calls).
    if _SCALARS.issuperset(map(type, args)) and (
        not kwargs
        or (_SCALARS.issuperset(map(type, kwargs.values())) and _STR.issuperset(map(type, kwargs)))
    ):
        return params
    # The round trip turns tuples into lists (and str or int subclasses into str and int),
    # exactly as the worker will see them.
    decoded: Params = json.loads(json.dumps(params))
    return decoded


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


#: What ``json.dumps(value, sort_keys=True, separators=(",", ":"))`` encodes with, made once:
#: ``dumps()`` with options builds an encoder per call, which is most of a hash's cost.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def params_hash(task_name: str, params: object) -> str:
    """Return a stable fingerprint of a task name and its parameters."""
    canonical = _CANONICAL.encode([task_name, params])
    return hashlib.sha1(canonical.encode(), usedforsecurity=False).hexdigest()


def params_hasher(task_name: str) -> Callable[[Params], str]:
    """Return ``params_hash`` for ``task_name``, for parameters that ``encode_params()`` returned.

    For the calls of a bulk call: ``JSONEncoder.encode()`` builds its C encoder anew on every
    call, which costs more than the encoding itself. This one is built once, and without the
    check for circular references: checked parameters are nested at most ``MAX_DEPTH`` deep,
    so they hold no cycle.
    """
    if c_make_encoder is None:  # pragma: no cover - a Python without the json C accelerator
        return functools.partial(params_hash, task_name)
    encode = c_make_encoder(
        None,  # no circular-reference markers (see above)
        _CANONICAL.default,
        encode_basestring_ascii,  # ensure_ascii, as _CANONICAL
        None,  # no indent
        _CANONICAL.key_separator,
        _CANONICAL.item_separator,
        True,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan, as _CANONICAL
    )
    # The canonical form of [task_name, params] is this prefix, then the params', then "]".
    prefix = hashlib.sha1(
        _CANONICAL.encode([task_name])[:-1].encode() + b",", usedforsecurity=False
    )

    def hash_params(params: Params) -> str:
        digest = prefix.copy()
        digest.update("".join(encode(params, 0)).encode())
        digest.update(b"]")
        return digest.hexdigest()

    return hash_params
