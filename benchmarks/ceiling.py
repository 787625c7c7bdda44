"""What the database allows: the same work as a worker, in plain SQL through the same driver.

Each loop runs on a raw driver connection (psycopg, mysqlclient, sqlite3) with no Django in
the loop, against scratch tables shaped like the queue: claim the next ready row with the
claim's locking clause (``FOR UPDATE SKIP LOCKED``; on SQLite a write transaction), record its
completion (delete it, insert a history row) and commit. The drain and enqueue figures of a run
are printed as ratios to these, measured in the same run: on a shared machine absolute figures
are noise, ratios within one run are not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connection

QUEUE_TABLE = "bench_ceiling_queue"
DONE_TABLE = "bench_ceiling_done"
BATCH = 100


@dataclass(frozen=True)
class CeilingResult:
    label: str
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


@dataclass(frozen=True)
class Ceiling:
    drain_one: CeilingResult  # one row per transaction
    drain_batch: CeilingResult  # BATCH rows per transaction
    insert_one: CeilingResult  # one INSERT per transaction
    insert_batch: CeilingResult  # one INSERT of BATCH rows per transaction

    @property
    def results(self) -> tuple[CeilingResult, ...]:
        return (self.drain_one, self.drain_batch, self.insert_one, self.insert_batch)


def measure(rows: int, bulk_rows: int | None = None) -> Ceiling:
    """Run the four loops on a fresh driver connection, over ``rows`` rows each.

    The multi-row INSERT loop inserts ``bulk_rows`` (default ``rows``): at 100 rows a
    statement, a few thousand rows are over in milliseconds, too short to time.
    """
    raw = _raw_connection()
    try:
        sql = _Sql(connection.vendor, connection.ops.quote_name)
        _run(raw, sql.create, commit=True)
        try:
            insert_one = _timed(raw, "INSERT, 1 row per transaction", rows, sql.insert_loop)
            drain_one = _timed(raw, "claim + record, 1 row per transaction", rows, sql.drain_one)
            _run(raw, [sql.fill(rows)], commit=True)
            drain_batch = _timed(
                raw, f"claim + record, {BATCH} rows per transaction", rows, sql.drain_batch
            )
            # The drains left the queue empty, as the insert loops found it.
            insert_batch = _timed(
                raw,
                f"INSERT of {BATCH} rows per statement and transaction",
                bulk_rows or rows,
                sql.insert_batch_loop,
            )
        finally:
            _run(raw, sql.drop, commit=True)
    finally:
        raw.close()
    return Ceiling(drain_one, drain_batch, insert_one, insert_batch)


def _raw_connection() -> Any:
    """Open a driver connection with Django's connection parameters, in manual-commit mode."""
    raw = connection.get_new_connection(connection.get_connection_params())
    if connection.vendor == "sqlite":
        raw.isolation_level = None  # explicit BEGIN/COMMIT below, as the worker's atomic blocks
    elif connection.vendor == "postgresql":
        raw.autocommit = False
    else:
        raw.autocommit(False)
    return raw


def _run(raw: Any, statements: list[str], *, commit: bool) -> None:
    cursor = raw.cursor()
    for statement in statements:
        cursor.execute(statement)
    if commit and connection.vendor != "sqlite":
        raw.commit()
    cursor.close()


def _timed(raw: Any, label: str, rows: int, loop: Callable[[Any, int], int]) -> CeilingResult:
    start = time.perf_counter()
    done = loop(raw, rows)
    seconds = time.perf_counter() - start
    if done != rows:
        raise RuntimeError(f"ceiling loop {label!r} handled {done} rows, expected {rows}")
    return CeilingResult(label, rows, seconds)


class _Sql:
    """The statements of the loops, per vendor."""

    def __init__(self, vendor: str, quote: Callable[[str], str]) -> None:
        self.vendor = vendor
        self.queue, self.done = quote(QUEUE_TABLE), quote(DONE_TABLE)
        key = {
            "postgresql": "bigserial PRIMARY KEY",
            "mysql": "bigint AUTO_INCREMENT PRIMARY KEY",
        }.get(vendor, "integer PRIMARY KEY AUTOINCREMENT")
        stamp = "datetime(6)" if vendor == "mysql" else "timestamp"
        self.now = "CURRENT_TIMESTAMP(6)" if vendor == "mysql" else "CURRENT_TIMESTAMP"
        self.param = "?" if vendor == "sqlite" else "%s"
        self.create = [
            *self.drop,
            f"CREATE TABLE {self.queue} (id {key}, priority integer NOT NULL, "
            f"run_at {stamp} NOT NULL, locked_by varchar(64) NULL, params text NOT NULL)",
            f"CREATE INDEX {QUEUE_TABLE}_claim ON {self.queue} (priority DESC, run_at, id)",
            f"CREATE TABLE {self.done} (id {key}, task_id bigint NOT NULL, "
            f"finished_at {stamp} NOT NULL)",
        ]
        self.lock = "" if vendor == "sqlite" else " FOR UPDATE SKIP LOCKED"

    @property
    def drop(self) -> list[str]:
        return [f"DROP TABLE IF EXISTS {self.queue}", f"DROP TABLE IF EXISTS {self.done}"]

    def fill(self, rows: int) -> str:
        values = ", ".join([f"(0, {self.now}, NULL, '[]')"] * rows)
        return f"INSERT INTO {self.queue} (priority, run_at, locked_by, params) VALUES {values}"

    def _begin(self, cursor: Any) -> None:
        # SQLite: take the write lock up front, as the worker's claim does. The other drivers
        # open a transaction by themselves at the first statement (autocommit is off).
        if self.vendor == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")

    def _commit(self, raw: Any, cursor: Any) -> None:
        if self.vendor == "sqlite":
            cursor.execute("COMMIT")
        else:
            raw.commit()

    def insert_loop(self, raw: Any, rows: int) -> int:
        cursor = raw.cursor()
        sql = (
            f"INSERT INTO {self.queue} (priority, run_at, locked_by, params) "
            f"VALUES (0, {self.now}, NULL, {self.param})"
        )
        for _ in range(rows):
            if self.vendor == "sqlite":
                cursor.execute("BEGIN")
            cursor.execute(sql, ["[]"])
            self._commit(raw, cursor)
        cursor.close()
        return rows

    def insert_batch_loop(self, raw: Any, rows: int) -> int:
        """Insert ``rows`` rows with multi-row INSERTs of BATCH rows, one per transaction."""
        cursor = raw.cursor()
        done = 0
        while done < rows:
            size = min(BATCH, rows - done)
            values = ", ".join([f"(0, {self.now}, NULL, {self.param})"] * size)
            if self.vendor == "sqlite":
                cursor.execute("BEGIN")
            cursor.execute(
                f"INSERT INTO {self.queue} (priority, run_at, locked_by, params) VALUES {values}",
                ["[]"] * size,
            )
            self._commit(raw, cursor)
            done += size
        cursor.close()
        return done

    def drain_one(self, raw: Any, rows: int) -> int:
        return self._drain(raw, 1)

    def drain_batch(self, raw: Any, rows: int) -> int:
        return self._drain(raw, BATCH)

    def _drain(self, raw: Any, limit: int) -> int:
        """Claim up to ``limit`` ready rows, record them done and commit, until none is left."""
        cursor = raw.cursor()
        claim = (
            f"SELECT id FROM {self.queue} WHERE locked_by IS NULL AND run_at <= {self.now} "
            f"ORDER BY priority DESC, run_at, id LIMIT {limit}{self.lock}"
        )
        handled = 0
        while True:
            self._begin(cursor)
            cursor.execute(claim)
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                self._commit(raw, cursor)
                return handled
            marks = ", ".join([self.param] * len(ids))
            cursor.execute(f"DELETE FROM {self.queue} WHERE id IN ({marks})", ids)
            cursor.executemany(
                f"INSERT INTO {self.done} (task_id, finished_at) VALUES ({self.param}, {self.now})",
                [(i,) for i in ids],
            )
            self._commit(raw, cursor)
            handled += len(ids)
