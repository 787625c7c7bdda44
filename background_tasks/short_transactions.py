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
        with connection.cursor() as cursor:
            cursor.execute("START TRANSACTION")

    with ExitStack() as stack:
        setattr(connection, _BEGIN_HOOK, begin)
        try:
            stack.enter_context(transaction.atomic(using=using))
        finally:
            # Only the outermost block begins a transaction: the hook is gone before the body
            # runs, so nothing else on this connection ever begins one this way.
            delattr(connection, _BEGIN_HOOK)
        yield


__all__ = ["short_transaction"]
