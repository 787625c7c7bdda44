"""What a worker pays per task: its statements, transactions and connections, per database.

The counts are exact on purpose: a change that adds a round trip per task must show up here,
and be argued for (docs/worker.md lists what the statements are).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import connection, connections
from django.db.backends.signals import connection_created

from background_tasks.models import Task
from background_tasks.worker import Worker
from tests.testapp.tasks import no_arguments

#: Statements per no-op task at Django's default CONN_MAX_AGE (0), one runner thread, in one
#: transaction: the outcome of a task and the claim of the next (runner.py).
#: PostgreSQL: the move to the history (the fenced DELETE feeding the INSERT, one statement),
#: then the claim, which returns the claimed rows.
#: SQLite: BEGIN IMMEDIATE (a statement there), the fenced DELETE, the INSERT, the claim.
#: MySQL/MariaDB: three round trips. One batch of START TRANSACTION, the DELETE and the
#: INSERT (which asks the DELETE's row count; the connection takes several statements at once,
#: mysqlclient's default: short_transactions.py, archive_sql.py); the locking read (which
#: returns the whole rows, and asks whether any row of a better priority exists: a busy worker
#: tries the priority of its last claim first and reads the priorities only when that finds
#: nothing or a better priority exists); the UPDATE. (Plus SET TRANSACTION ISOLATION LEVEL READ
#: COMMITTED where the connection's isolation_level is not that already, as Django's default
#: is.) START TRANSACTION stands for the two autocommit switches (SET autocommit=0, then =1
#: after the COMMIT) that the driver sends for Django's atomic(), which no execute wrapper
#: sees; sent with the first statement, it costs no round trip of its own.
QUERIES_PER_TASK = {"sqlite": 4, "postgresql": 2, "mysql": 3}

#: Autocommit switches the MySQL driver sends to the server per no-op task (each a round trip
#: no execute wrapper sees): none, the worker's transactions begin with START TRANSACTION.
AUTOCOMMIT_SWITCHES_PER_TASK = 0

#: Transactions per no-op task: one, whatever the database. The outcome of a task and the claim
#: of the next commit together (before: the claim committed on its own, then the outcome).
TRANSACTIONS_PER_TASK = 1

#: With ``--batch 10`` (BATCH_SIZE): one transaction per ten tasks, holding their ten outcomes
#: and the claim of the next ten, so per task the outcome's statements and a tenth of the rest:
#: PostgreSQL 1.1, SQLite 2.2 (BEGIN IMMEDIATE and the claim per ten), MySQL 1.2 (the archive's
#: one batch per task; the locking read and the UPDATE per ten), MariaDB 0.3 (the ten moves
#: grouped in one batch of two statements, archive_sql.grouped_moves; the locking read and the
#: UPDATE), in tenths of statements.
BATCH = 10
TENTHS_PER_BATCHED_TASK = {"sqlite": 22, "postgresql": 11, "mysql": 12, "mariadb": 3}

_WRITES = ("INSERT", "UPDATE", "DELETE", "WITH")


@dataclass
class Tally:
    """Every statement and every new connection of any thread, while it listens."""

    statements: list[str] = field(default_factory=list)
    connects: int = 0
    #: Transactions: each COMMIT, and each write run in autocommit mode (its own transaction).
    transactions: int = 0
    #: MySQL: the driver's autocommit switches that reach the server.
    switches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        conn = context["connection"]
        own_transaction = not conn.in_atomic_block and sql.lstrip().upper().startswith(_WRITES)
        with self.lock:
            self.statements.append(sql)
            self.transactions += own_transaction
        return execute(sql, params, many, context)

    def committed(self) -> None:
        with self.lock:
            self.transactions += 1

    def switched(self) -> None:
        with self.lock:
            self.switches += 1

    def watch(self, sender: object, connection: Any, **kwargs: object) -> None:
        with self.lock:
            self.connects += 1
        if self not in connection.execute_wrappers:
            connection.execute_wrappers.append(self)


@contextmanager
def tallied() -> Iterator[Tally]:
    tally = Tally()
    wrapper = type(connections["default"])
    commit = wrapper.commit

    def counted_commit(self: Any) -> None:
        tally.committed()
        commit(self)

    wrapper.commit = counted_commit  # type: ignore[method-assign]
    restore_driver = _count_switches(tally) if connection.vendor == "mysql" else None
    connection_created.connect(tally.watch)
    for conn in connections.all(initialized_only=True):
        conn.execute_wrappers.append(tally)
    try:
        yield tally
    finally:
        wrapper.commit = commit  # type: ignore[method-assign]
        if restore_driver is not None:
            restore_driver()
        connection_created.disconnect(tally.watch)
        for conn in connections.all(initialized_only=True):
            if tally in conn.execute_wrappers:
                conn.execute_wrappers.remove(tally)


def _count_switches(tally: Tally) -> Callable[[], None]:
    """Count the autocommit switches mysqlclient sends; return what undoes the counting.

    Its ``autocommit()`` sends ``SET autocommit`` only when the server's last reply showed the
    other mode, so a switch is counted only then.
    """
    from MySQLdb.connections import Connection

    switch = Connection.autocommit

    def counted_switch(self: Any, on: bool) -> None:
        if self.get_autocommit() != bool(on):
            tally.switched()
        switch(self, on)

    Connection.autocommit = counted_switch  # type: ignore[method-assign]

    def restore() -> None:
        Connection.autocommit = switch  # type: ignore[method-assign]

    return restore


def drain(tasks: int, batch: int = 1) -> Tally:
    """Enqueue ``tasks`` no-op tasks, then count what one --burst worker spends draining them."""
    Task.objects.all().delete()
    for _ in range(tasks):
        no_arguments()
    with tallied() as tally:
        # No time window: a slow machine must not cut a batch short and change the counts.
        worker = Worker(burst=True, sleep=60, concurrency=1, batch_size=batch, batch_window=60)
        assert worker.run() == 0
    assert not Task.objects.exists()
    return tally


@pytest.mark.django_db(transaction=True)
def test_worker__a_no_op_task_costs_a_fixed_number_of_statements_and_no_connection() -> None:
    few, many = drain(3), drain(13)

    per_task = (len(many.statements) - len(few.statements)) / 10
    extra = "\n".join(many.statements[len(few.statements) :][:20])
    # Rounded: the fixed cost of a run (start-up, the last empty claim, the shutdown) varies
    # by a statement or two between runs; one more statement per task would still show.
    assert round(per_task) == QUERIES_PER_TASK[connection.vendor], (per_task, extra)
    transactions = (many.transactions - few.transactions) / 10
    assert round(transactions) == TRANSACTIONS_PER_TASK, transactions
    if connection.vendor == "mysql":
        switches = (many.switches - few.switches) / 10
        assert round(switches) == AUTOCOMMIT_SWITCHES_PER_TASK, switches
    # The worker's connections are opened once, not once per task, at Django's default
    # CONN_MAX_AGE = 0.
    assert many.connects == few.connects


@pytest.mark.django_db(transaction=True)
def test_batched_worker__ten_tasks_share_one_transaction_and_their_claim() -> None:
    drain(3, batch=BATCH)  # the first run of a test database writes the schedules once
    # A whole number of batches apart, so that both runs end their last batch alike.
    few, many = drain(3 + BATCH, batch=BATCH), drain(3 + 3 * BATCH, batch=BATCH)

    tasks = 2 * BATCH
    per_task = (len(many.statements) - len(few.statements)) / tasks
    vendor = "mariadb" if getattr(connection, "mysql_is_mariadb", False) else connection.vendor
    assert round(per_task * 10) == TENTHS_PER_BATCHED_TASK[vendor], per_task
    transactions = (many.transactions - few.transactions) / tasks
    assert transactions == pytest.approx(1 / BATCH), transactions
    assert many.connects == few.connects
