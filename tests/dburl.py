"""A tiny ``DATABASE_URL`` parser for the test settings (no third-party dependency).

Supported forms::

    sqlite:///relative/path.sqlite3       (relative to the repository root)
    sqlite:////absolute/path.sqlite3
    sqlite://:memory:
    postgres://user:pass@host:port/name   (also postgresql://, pgsql://)
    mysql://user:pass@host:port/name      (also mariadb://)

Query-string parameters (``?sslmode=require``) are passed through as ``OPTIONS``.

``to_url(settings_dict)`` is the inverse: tests that spawn real worker
subprocesses use it on ``connection.settings_dict`` (whose ``NAME`` is the *test*
database once pytest-django has set it up) to build the ``DATABASE_URL`` they
put in the child's environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

SQLITE_ENGINE = "django.db.backends.sqlite3"
POSTGRES_ENGINE = "django.db.backends.postgresql"
MYSQL_ENGINE = "django.db.backends.mysql"

ENGINES = {
    "sqlite": SQLITE_ENGINE,
    "postgres": POSTGRES_ENGINE,
    "postgresql": POSTGRES_ENGINE,
    "pgsql": POSTGRES_ENGINE,
    "mysql": MYSQL_ENGINE,
    "mariadb": MYSQL_ENGINE,
}

SQLITE_OPTIONS: dict[str, Any] = {
    # Workers run in separate processes against the same file: wait for locks
    # instead of failing at once, use WAL so readers do not block the writer, and
    # take the write lock when a transaction starts (no deadlock on lock upgrade).
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
}


def _sqlite_test_name(name: str) -> str:
    path = Path(name)
    return str(path.with_name(f"test_{path.name}"))


def parse(url: str, base_dir: Path) -> dict[str, Any]:
    """Turn a database URL into a Django ``DATABASES`` entry."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ENGINES:
        raise ValueError(
            f"Unsupported DATABASE_URL {url!r}: expected sqlite:///path, "
            "postgres://user:pass@host:port/name or mysql://user:pass@host:port/name"
        )
    engine = ENGINES[scheme]

    if engine == SQLITE_ENGINE:
        path_part, _, query = rest.partition("?")
        options: dict[str, Any] = dict(SQLITE_OPTIONS)
        options.update(parse_qsl(query))
        if path_part in (":memory:", "/:memory:"):
            return {"ENGINE": engine, "NAME": ":memory:", "OPTIONS": options}
        if not path_part.startswith("/"):
            raise ValueError(f"Unsupported DATABASE_URL {url!r}: use sqlite:///path")
        # "sqlite:///rel/x" -> "/rel/x" -> "rel/x";  "sqlite:////abs/x" -> "//abs/x" -> "/abs/x"
        raw = unquote(path_part[1:])
        if not raw:
            raise ValueError(f"DATABASE_URL {url!r} names no database file")
        path = Path(raw)
        if not path.is_absolute():
            path = base_dir / path
        path.parent.mkdir(parents=True, exist_ok=True)
        name = str(path)
        return {
            "ENGINE": engine,
            "NAME": name,
            "OPTIONS": options,
            # A file, not ":memory:": worker subprocesses must open the same database.
            "TEST": {"NAME": _sqlite_test_name(name)},
        }

    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ValueError(f"DATABASE_URL {url!r} names no database")
    config: dict[str, Any] = {
        "ENGINE": engine,
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": dict(parse_qsl(parts.query)),
    }
    if engine == MYSQL_ENGINE:
        config["OPTIONS"].setdefault("charset", "utf8mb4")
        config["TEST"] = {"CHARSET": "utf8mb4"}
    return config


def to_url(settings_dict: dict[str, Any]) -> str:
    """Build a ``DATABASE_URL`` that :func:`parse` turns back into ``settings_dict``'s
    database (ENGINE, NAME, USER, PASSWORD, HOST, PORT and plain OPTIONS)."""
    engine = settings_dict["ENGINE"]
    name = str(settings_dict["NAME"])
    if engine == SQLITE_ENGINE:
        if name == ":memory:" or name.startswith("file:"):
            raise ValueError("an in-memory SQLite database cannot be shared with a subprocess")
        # An absolute path: "sqlite:///" + "/abs/path" -> "sqlite:////abs/path".
        return "sqlite:///" + quote(Path(name).resolve().as_posix(), safe="/")
    if engine == POSTGRES_ENGINE:
        scheme = "postgres"
    elif engine == MYSQL_ENGINE:
        scheme = "mysql"
    else:
        raise ValueError(f"unsupported ENGINE {engine!r}")
    user = quote(str(settings_dict.get("USER") or ""), safe="")
    password = quote(str(settings_dict.get("PASSWORD") or ""), safe="")
    auth = ""
    if user or password:
        auth = user + (f":{password}" if password else "") + "@"
    host = str(settings_dict.get("HOST") or "")
    if ":" in host and not host.startswith("["):  # IPv6 literal
        host = f"[{host}]"
    port = str(settings_dict.get("PORT") or "")
    netloc = auth + host + (f":{port}" if port else "")
    query = urlencode(
        {
            key: value
            for key, value in (settings_dict.get("OPTIONS") or {}).items()
            if isinstance(value, str | int) and not isinstance(value, bool)
        }
    )
    return f"{scheme}://{netloc}/{quote(name, safe='')}" + (f"?{query}" if query else "")
