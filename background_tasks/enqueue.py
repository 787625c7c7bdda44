"""Enqueuing a call of a registered task, and the one insert path of every new Task row."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import (
    DatabaseError,
    IntegrityError,
    connections,
    models,
    router,
    transaction,
)
from django.utils import timezone

from . import signals
from .bulk_insert import Measured, insert_rows, measure_rows
from .columns import (
    TASK_NAME_LENGTH,
    VERBOSE_NAME_LENGTH,
    priority_problem,
    queue_problem,
    text_problem,
)
from .conf import app_settings
from .deadlocks import retry_deadlocks
from .exceptions import InvalidTaskError
from .schema import require_migrated
from .serialization import decode_params, params_hash
from .task_rows import build_row, check_text
from .wakeup import notify_clause, notify_ready

if TYPE_CHECKING:
    from .models import Task
    from .task_function import TaskFunction

_UNIQUE_RETRIES = 5
#: Rows per multi-row INSERT of a bulk write (``batch_size`` overrides it). Larger batches gain
#: little, and keep the statement's parameters far below every driver's limit.
BATCH_SIZE = 500

_T = TypeVar("_T")


def enqueue(
    task: TaskFunction[Any, Any],
    args: tuple[Any, ...] | list[Any],
    kwargs: dict[str, Any],
    *,
    schedule: Any = None,
    priority: int | None = None,
    queue: str | None = None,
    verbose_name: str | None = None,
    creator: models.Model | None = None,
    repeat: Any = None,
    repeat_until: datetime | None = None,
    remove_existing_tasks: bool | None = None,
    unique: bool | None = None,
) -> Task:
    """Insert a Task row for ``task(*args, **kwargs)`` in the caller's transaction and return it.

    With ``BACKGROUND_TASKS_IMMEDIATE`` the call runs inline instead and an unsaved Task
    describing it is returned.
    """
    now = timezone.now()
    row = build_row(
        task,
        args,
        kwargs,
        now=now,
        schedule=schedule,
        priority=priority,
        queue=queue,
        verbose_name=verbose_name,
        creator=creator,
        repeat=repeat,
        repeat_until=repeat_until,
    )

    if app_settings.IMMEDIATE:
        call_args, call_kwargs = decode_params(row.params)
        task.run_body(call_args, call_kwargs)
        return row

    if unique if unique is not None else task.unique:
        row.unique_key = row.task_hash
    if remove_existing_tasks is None:
        remove_existing_tasks = task.remove_existing_tasks
    # unique=True may find a pending copy: that row is returned and nothing is created.
    using = router.db_for_write(type(row))
    return insert_task(row, using=using, replace=bool(remove_existing_tasks))


def insert_task(
    row: Task, *, using: str, replace: bool = False, robust_signal: bool = False
) -> Task:
    """Insert one new Task row through ``insert_tasks()``; return the row that stands."""
    return insert_tasks([row], using=using, replace=replace, robust_signal=robust_signal)[0]


def insert_tasks(
    rows: Sequence[Task],
    *,
    using: str,
    replace: bool = False,
    robust_signal: bool = False,
    batch_size: int | None = None,
    template: Task | None = None,
) -> list[Task]:
    """Insert new Task rows: the one way a task enters the queue. Return the rows that stand.

    Every producer inserts through here (a call, a bulk call, a django.tasks enqueue, a cron
    tick, *Run now* on a schedule, a retry of a finished task, the legacy import), so each row
    is checked the same way, a row with a ``unique_key`` is not inserted while a pending copy
    exists (that copy stands in its place), ``replace`` first deletes pending tasks with the
    same name and arguments (``remove_existing_tasks``), idle PostgreSQL workers are woken
    once per queue with a row ready now, and ``task_created`` is sent for every row inserted.

    Every row is checked before any is written (on MySQL/MariaDB also its size: a row too
    large to send is refused with a DataError naming its index in ``rows``). Several rows are
    written in one transaction (the caller's, if there is one), the plain ones (no unique key,
    no ``replace``) in multi-row ``INSERT`` statements of at most ``batch_size`` rows (and, on
    MySQL/MariaDB, at most half of ``max_allowed_packet`` bytes).

    ``robust_signal``: send ``task_created`` so that a raising receiver is only logged (for
    inserts by a worker or an operator, where the row must stand whatever a receiver does);
    otherwise a receiver's exception propagates to the caller, as for a call of a task.

    ``template``: a row that every row of ``rows`` equals but for ``params`` and ``task_hash``
    (as a ``task_rows.RowMaker`` makes them, none with a ``unique_key``). It is checked
    instead of each row, and its values are written once per statement.
    """
    if len(rows) == 1:
        return [_insert_one(rows[0], using, replace, robust_signal)]
    if template is not None and not replace:
        check_row(template)
        return _insert_alike(rows, template, using, robust_signal, batch_size)
    checked: tuple[int, ...] = ()
    for row in rows:
        # The rows of a bulk call share these objects: checking them once is enough.
        shared = (id(row.task_name), id(row.queue), id(row.priority), id(row.verbose_name))
        if shared != checked:
            check_row(row)
            checked = shared
        # The hash finds the pending duplicates ``replace`` deletes, before the row is saved.
        row.task_hash = row.task_hash or params_hash(row.task_name, row.params)
    if not rows:
        return []
    require_migrated(using)
    measure_rows(rows, using)  # MySQL/MariaDB: a row too large to send is refused first
    standing = _retried(using, rows, lambda: _write_all(rows, using, replace, batch_size))
    # A row that is not the one standing lost to a pending copy: nothing was created for it.
    created = [row for row, stood in zip(rows, standing, strict=True) if stood is row]
    now = timezone.now()
    for queue in dict.fromkeys(row.queue for row in created if row.run_at <= now):
        notify_ready(using, queue)
    for row in created:
        _send_created(row, using, robust=robust_signal)
    return standing


def _insert_alike(
    rows: Sequence[Task], template: Task, using: str, robust_signal: bool, batch_size: int | None
) -> list[Task]:
    """``insert_tasks()`` of rows equal to ``template`` but for their arguments: all stand."""
    require_migrated(using)
    # MySQL/MariaDB: a row too large to send is refused before the transaction begins.
    measured = measure_rows(rows, using, template=template)

    def write() -> None:
        # In a caller's transaction no savepoint, as in _write_all().
        with transaction.atomic(using=using, savepoint=False):
            _bulk_insert(rows, using, batch_size, template=template, measured=measured)

    _retried(using, rows, write)
    if template.run_at <= timezone.now():
        notify_ready(using, template.queue)
    # Every row has the template's name, the signal's sender: asked once, not per row.
    if signals.task_created.has_listeners(template.task_name):
        for row in rows:
            _send_created(row, using, robust=robust_signal)
    return list(rows)


def _insert_one(row: Task, using: str, replace: bool, robust_signal: bool) -> Task:
    """``insert_tasks()`` of one row, the path of every single call: kept short."""
    check_row(row)
    row.task_hash = row.task_hash or params_hash(row.task_name, row.params)
    require_migrated(using)
    ready = row.run_at <= timezone.now()
    # A plain ready row carries its wake-up in its own INSERT: no round trip of its own.
    clause = (
        notify_clause(using, row.queue) if ready and not replace and not row.unique_key else None
    )
    notifying = _Notifying(*clause) if clause is not None else None
    stood = _retried(using, (row,), lambda: _write(row, using, replace, notifying))
    if stood is not row:
        return stood  # a pending copy stands in its place: nothing was created
    if ready and (notifying is None or not notifying.sent):
        notify_ready(using, row.queue)
    _send_created(row, using, robust=robust_signal)
    return row


def check_row(row: Task) -> None:
    """Refuse a row whose queue, priority or texts the columns of every database cannot hold."""
    name = row.task_name
    problem = text_problem(name, TASK_NAME_LENGTH) if isinstance(name, str) and name else None
    if not isinstance(name, str) or not name or problem:
        raise InvalidTaskError(f"Task name {name!r} is refused: {problem or 'it is empty'}.")
    problem = queue_problem(row.queue)
    if problem:
        raise InvalidTaskError(f"Task {name!r}: queue {problem}.")
    problem = priority_problem(row.priority)
    if problem:
        raise InvalidTaskError(f"Task {name!r}: priority {problem}.")
    if row.verbose_name:
        check_text(name, "verbose_name", row.verbose_name, VERBOSE_NAME_LENGTH)


def _send_created(row: Task, using: str, *, robust: bool) -> None:
    if not robust:
        signals.task_created.send(sender=row.task_name, task=row)
        return
    if not signals.task_created.has_listeners(row.task_name):
        return
    # A receiver's failed query must not break the transaction that inserted the row (a cron
    # tick's): inside one, the receivers run in a savepoint of their own.
    if not connections[using].in_atomic_block:
        signals.emit(signals.task_created, sender=row.task_name, task=row)
        return
    try:
        with transaction.atomic(using=using):
            signals.emit(signals.task_created, sender=row.task_name, task=row)
    except DatabaseError:
        # emit() logged the receiver's error; its savepoint is rolled back, the insert stands.
        pass


def delete_pending_duplicates(row: Task, using: str) -> None:
    """Delete pending tasks with the same name and arguments as ``row`` (in a transaction)."""
    with transaction.atomic(using=using):
        _delete_pending_duplicates(row, using)


def _retried(using: str, rows: Sequence[Task], write: Callable[[], _T]) -> _T:
    """Run ``write``, again if MySQL/MariaDB rolled it back to break a deadlock.

    On MySQL/MariaDB a worker archiving the same unique task (delete, then insert its follower
    with the same key) can deadlock with a delete and insert here; InnoDB then rolls back one
    of the two transactions. Outside a caller's transaction that rollback lost nothing else,
    so the write is retried; inside one, the caller's whole transaction is gone and it must
    know.
    """
    connection = connections[using]
    if connection.vendor != "mysql" or connection.in_atomic_block:
        return write()

    def unsaved() -> None:
        for row in rows:
            row.pk = None
            row._state.adding = True

    return retry_deadlocks(write, before_retry=unsaved)


def _write(row: Task, using: str, replace: bool, notifying: _Notifying | None = None) -> Task:
    """Insert ``row``, first deleting pending duplicates if ``replace``; return the row that stands.

    ``notifying``: the wake-up to add to the row's ``INSERT`` statement.
    """
    # Replacing is a delete and an insert, which must commit together.
    with transaction.atomic(using=using) if replace else nullcontext():
        if replace:
            _delete_pending_duplicates(row, using)
        if row.unique_key:
            return _insert_unique(row, using)
        if notifying is None:
            row.save(using=using, force_insert=True)
            return row
        # What ``connection.execute_wrapper()`` does, without a context manager's cost.
        wrappers = connections[using].execute_wrappers
        wrappers.append(notifying)
        try:
            row.save(using=using, force_insert=True)
        finally:
            wrappers.pop()
        return row


class _Notifying:
    """An execute wrapper adding a wake-up expression to the ``RETURNING`` list of an INSERT.

    PostgreSQL returns the new id in the same statement; the ``pg_notify()`` beside it costs
    no round trip, and is delivered on commit like one sent on its own.
    """

    def __init__(self, sql: str, params: list[str]) -> None:
        self.sql, self.params = sql, params
        #: Whether an INSERT carried the expression (else the wake-up is still to be sent).
        self.sent = False

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        if not many and sql.startswith("INSERT ") and " RETURNING " in sql:
            sql = f"{sql}, {self.sql}"
            params = (*params, *self.params)
            self.sent = True
        return execute(sql, params, many, context)


def _write_all(
    rows: Sequence[Task], using: str, replace: bool, batch_size: int | None
) -> list[Task]:
    """Write ``rows`` in one transaction, runs of plain rows in multi-row INSERTs, in order."""
    standing = list(rows)
    plain: list[Task] = []
    # In a caller's transaction no savepoint: a failure fails the caller's transaction, as the
    # failure of a single insert would.
    with transaction.atomic(using=using, savepoint=False):
        for index, row in enumerate(rows):
            if replace or row.unique_key:
                _bulk_insert(plain, using, batch_size)
                plain = []
                standing[index] = _write(row, using, replace)
            else:
                plain.append(row)
        _bulk_insert(plain, using, batch_size)
    return standing


def _bulk_insert(
    rows: Sequence[Task],
    using: str,
    batch_size: int | None,
    *,
    template: Task | None = None,
    measured: Measured | None = None,
) -> None:
    """INSERT ``rows`` in statements of at most ``batch_size`` rows, setting their ids."""
    insert_rows(rows, using, batch_size or BATCH_SIZE, template=template, measured=measured)


def _delete_pending_duplicates(row: Task, using: str) -> None:
    """Delete pending tasks with the same name and arguments that no worker has picked up.

    That is django-background-tasks' ``remove_existing_tasks``. The rows are deleted by primary
    key: a delete through the ``task_hash`` index would lock that index before the rows, the
    opposite order to a worker deleting the row it finished, and the two would deadlock.
    """
    from .models import Task

    pending = Task.objects.using(using).filter(task_hash=row.task_hash, locked_by__isnull=True)
    ids = list(pending.values_list("pk", flat=True))
    if ids:
        Task.objects.using(using).filter(pk__in=ids, locked_by__isnull=True).delete()


def _insert_unique(row: Task, using: str) -> Task:
    """Insert ``row`` unless a pending task has the same key; return whichever row stands.

    The database's unique index on ``unique_key`` decides, so concurrent enqueues from many
    processes cannot both win.
    """
    from .models import Task

    for _ in range(_UNIQUE_RETRIES):
        try:
            with transaction.atomic(using=using):
                row.save(using=using, force_insert=True)
            return row
        except IntegrityError:
            same_key = Task.objects.using(using).filter(unique_key=row.unique_key)
            existing = same_key.first()
            connection = connections[using]
            if existing is None and connection.vendor == "mysql" and connection.in_atomic_block:
                # Under REPEATABLE READ a plain read sees the caller's snapshot, which may
                # predate the row the insert collided with; a locking read sees the row as
                # committed (it then stays locked until the caller's transaction ends).
                existing = same_key.select_for_update().first()
            if existing is not None:
                return existing
            # The other row finished between our insert and our read: try again.
            row.pk = None
    raise InvalidTaskError(
        f"Could not enqueue unique task {row.task_name!r}: it kept changing underneath."
    )


def new_task(
    task_name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    run_at: datetime | None,
    priority: int,
    queue: str | None,
    verbose_name: str | None,
    creator: models.Model | None,
    repeat: Any,
    repeat_until: datetime | None,
    remove_existing_tasks: bool,
) -> Task:
    """Build the unsaved row of django-background-tasks' ``Task.objects.new_task()``, checked."""
    from .models import Task
    from .registry import registry

    now = timezone.now()
    row = build_row(
        registry.get(task_name),
        args,
        kwargs,
        now=now,
        schedule=run_at if run_at is not None else now,
        priority=priority,
        queue=queue,
        verbose_name=verbose_name,
        creator=creator,
        repeat=repeat,
        repeat_until=repeat_until,
    )
    if remove_existing_tasks:
        delete_pending_duplicates(row, router.db_for_write(Task))
    return row
