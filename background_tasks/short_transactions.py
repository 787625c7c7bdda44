"""The worker's own short transactions: one round trip less each on MySQL/MariaDB.

The transactions are an outcome recorded with the next claim, and a claim.

Django opens a transaction on MySQL/MariaDB by turning autocommit off (``SET autocommit=0``, a
round trip) and closes it with ``COMMIT`` and ``SET autocommit=1`` (another). A busy worker
pays both for every task, on transactions of a few milliseconds. MySQL also allows an explicit
transaction on a connection that stays in autocommit mode: ``START TRANSACTION`` opens it,
``COMMIT`` or ``ROLLBACK`` ends it, and the session is back in autocommit mode with nothing to
restore. Opened that way, the driver (mysqlclient reads the autocommit flag from the server's
replies) sends nothing when Django turns autocommit back on after the ``COMMIT``: one round
trip where there were two.

Where the connection takes several statements in one round trip (mysqlclient enables
multi-statement mode by default, and Django leaves it on), ``START TRANSACTION`` is not even
sent alone: it goes with the block's first statement, ``START TRANSACTION; <statement>``, and
the cursor is moved on to that statement's own result (:func:`next_result`), so the caller
reads its rows, row count and last id as usual. Nothing else changes: if the block sends no
statement, no transaction was begun and the ``COMMIT`` that ends the block finds none.

Everything else stays Django's ``atomic``: its block state, so that nested ``atomic()`` blocks
(the outcome's, a repeating task's follower in a savepoint, the ORM's, receivers of model
signals) nest as they always do instead of committing early; its rollback on any exception;
its commit hooks. Only the statement that begins the transaction differs, through the hook
Django's ``set_autocommit()`` offers backends that must begin one explicitly
(``_start_transaction_under_autocommit``, which SQLite's backend defines), set on this
connection for the time this block opens and removed at once: task bodies and every other
transaction keep Django's own way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from django.db import connections, transaction

#: The hook ``BaseDatabaseWrapper.set_autocommit()`` calls, when a backend has it, to begin the
#: transaction of an outermost ``atomic`` block instead of turning autocommit off.
_BEGIN_HOOK = "_start_transaction_under_autocommit"


@contextmanager
def short_transaction(using: str, *, savepoint: bool = True) -> Iterator[None]:
    """Run the block in ``transaction.atomic``, begun by ``START TRANSACTION`` on MySQL.

    Inside a transaction already (or on a connection with autocommit off) this is plain
    ``atomic``: nothing is begun there.
    """
    connection = connections[using]
    if (
        connection.vendor != "mysql"
        or connection.in_atomic_block
        or not connection.get_autocommit()
        or hasattr(connection, _BEGIN_HOOK)
    ):
        with transaction.atomic(using=using, savepoint=savepoint):
            yield
        return

    def begin() -> None:
        if takes_batches(connection):
            connection.execute_wrappers.append(begin_with_first)
        else:
            with connection.cursor() as cursor:
                cursor.execute("START TRANSACTION")

    begin_with_first = _BeginWithFirstStatement(connection)

    with ExitStack() as stack:
        setattr(connection, _BEGIN_HOOK, begin)
        try:
            stack.enter_context(transaction.atomic(using=using))
        finally:
            # Only the outermost block begins a transaction: the hook is gone before the body
            # runs, so nothing else on this connection ever begins one this way.
            delattr(connection, _BEGIN_HOOK)
        # Nothing sent in the block: nothing was begun, and the next block begins afresh.
        stack.callback(begin_with_first.withdraw)
        yield


#: ``CLIENT_MULTI_STATEMENTS`` of the MySQL client protocol.
_MULTI_STATEMENTS = 1 << 16


def takes_batches(connection: Any) -> bool:
    """Return True if this open MySQL connection runs ``a; b`` as two statements, one round trip.

    mysqlclient asks for that mode unless told otherwise (``OPTIONS={"multi_statements": False}``),
    and its connection reports what was agreed in ``client_flag``.
    """
    return bool(getattr(connection.connection, "client_flag", 0) & _MULTI_STATEMENTS)


class _BeginWithFirstStatement:
    """An execute wrapper, once: sends ``START TRANSACTION`` with the first statement."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def withdraw(self) -> None:
        if self in self.connection.execute_wrappers:
            self.connection.execute_wrappers.remove(self)

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.withdraw()
        cursor = context["cursor"]
        if many:  # executemany() runs its statement once per row: begin alone first
            cursor.execute("START TRANSACTION")
            return execute(sql, params, many, context)
        try:
            execute(f"START TRANSACTION; {sql}", params, many, context)
        except Exception as exc:
            if _server_error_code(exc) is None:
                # Refused by the driver before anything was sent (a placeholder without its
                # value, text it cannot encode): nothing was begun. Begin alone, so that what
                # the block sends next, should the caller go on, is inside its transaction.
                cursor.execute("START TRANSACTION")
            raise
        next_result(self.connection, cursor)
        return cursor.rowcount


def _server_error_code(exc: BaseException) -> int | None:
    """The MySQL error code of what the server refused (None: the client refused it)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    code = cause.args[0] if cause.args else None
    return code if isinstance(code, int) and code >= 1000 else None


def next_result(connection: Any, cursor: Any) -> None:
    """Move ``cursor`` to the result of the next statement of its batch.

    An error of that statement is raised here, as Django raises it from ``execute()``: as
    Django's exception, with MySQL's codes for a refused value taken as ``IntegrityError``.
    """
    database = connection.Database
    # Django's cursor wrapper would turn the driver's error into Django's before the code below
    # sees it: the backend's own cursor (which knows the codes) is asked instead.
    backend_cursor = getattr(cursor, "cursor", cursor)
    codes = getattr(backend_cursor, "codes_for_integrityerror", ())
    with connection.wrap_database_errors:
        try:
            backend_cursor.nextset()
        except database.OperationalError as exc:
            if exc.args and exc.args[0] in codes:
                raise database.IntegrityError(*exc.args) from exc
            raise


__all__ = ["next_result", "short_transaction", "takes_batches"]
