"""Enqueue throughput (calls of a decorated task) and drain throughput (real worker processes)."""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone

from background_tasks.conf import app_settings
from background_tasks.models import CompletedTask, Task
from background_tasks.serialization import encode_params, params_hash

from . import db
from .tasks import noop_with
from .workers import children_cpu_seconds, workers


@dataclass(frozen=True)
class EnqueueResult:
    mode: str
    tasks: int
    seconds: float
    #: "orm" (a bare Task.objects.create()), "call" (noop_with(i)) or "bulk" (noop_with.bulk()).
    kind: str = "call"
    #: Whether all tasks were written in one transaction (else one transaction per statement).
    one_transaction: bool = False

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds

    @property
    def micros_per_task(self) -> float:
        return self.seconds / self.tasks * 1e6


@dataclass(frozen=True)
class StartupResult:
    """One ``process_tasks --burst`` run on an empty queue: start-up and shutdown only."""

    wall_seconds: float
    cpu_seconds: float


@dataclass(frozen=True)
class DrainResult:
    label: str
    processes: int
    concurrency: int
    conn_max_age: str
    tasks: int
    wall_seconds: float
    busy_seconds: float
    cpu_seconds: float  # all worker processes, user + system, start-up included
    startup_cpu_seconds: float
    per_worker: tuple[int, ...]
    batch: int = 1  # the worker's BATCH_SIZE (--batch, else the default); 1: no batching

    @property
    def wall_rate(self) -> float:
        return self.tasks / self.wall_seconds

    @property
    def busy_rate(self) -> float:
        return self.tasks / self.busy_seconds if self.busy_seconds > 0 else float("nan")

    @property
    def cpu_millis_per_task(self) -> float:
        work = self.cpu_seconds - self.processes * self.startup_cpu_seconds
        return max(work, 0.0) / self.tasks * 1000


def measure_enqueue(
    count: int, bulk_count: int, rounds: int = 20, bulk_repeats: int = 3
) -> list[EnqueueResult]:
    """Time enqueuing against a bare ORM insert of the same row.

    ``Task.objects.create()`` of the rows ``noop_with(i)`` writes (their parameters and hashes
    computed before the clock starts), then ``noop_with(i)`` calls, first one transaction per
    task, then all in one; then ``noop_with.bulk()`` of ``bulk_count`` calls in one call,
    ``bulk_repeats`` times (the median is kept). The ORM inserts and the calls alternate in
    ``rounds`` rounds, so that a burst of load on the machine weighs on both alike.
    """
    params = [encode_params(noop_with.name, noop_with.func, (i,), {}) for i in range(count)]
    hashes = [params_hash(noop_with.name, p) for p in params]

    def orm_create(i: int) -> None:
        now = timezone.now()
        Task.objects.create(
            task_name=noop_with.name,
            params=params[i],
            task_hash=hashes[i],
            queue="default",
            priority=0,
            run_at=now,
            scheduled_at=now,
        )

    results = []
    for one_transaction in (False, True):
        seconds = {"orm": 0.0, "call": 0.0}
        db.empty()
        for chunk in _chunks(count, rounds):
            for kind, write in (("orm", orm_create), ("call", noop_with)):
                start = time.perf_counter()
                with transaction.atomic() if one_transaction else nullcontext():
                    for i in chunk:
                        write(i)
                seconds[kind] += time.perf_counter() - start
        _expect_rows(Task, 2 * count)
        how = "one transaction" if one_transaction else "autocommit (1 tx per task)"
        for kind, label in (("orm", "Task.objects.create()"), ("call", "noop_with(i)")):
            results.append(
                EnqueueResult(f"{label}, {how}", count, seconds[kind], kind, one_transaction)
            )

    calls = [(i,) for i in range(bulk_count)]
    timings = []
    for _ in range(bulk_repeats):
        db.empty()
        start = time.perf_counter()
        noop_with.bulk(calls)
        timings.append(time.perf_counter() - start)
        _expect_rows(Task, bulk_count)
    label = f"noop_with.bulk() of {bulk_count:,} calls (median of {bulk_repeats})"
    results.append(EnqueueResult(label, bulk_count, statistics.median(timings), "bulk", True))
    db.empty()
    return results


def _chunks(count: int, rounds: int) -> list[range]:
    """Split ``range(count)`` into ``rounds`` consecutive ranges (fewer if count is smaller)."""
    size = -(-count // rounds)
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def measure_startup() -> StartupResult:
    """Time a worker that finds nothing to do, to tell start-up cost from per-task cost."""
    db.empty()
    cpu = children_cpu_seconds()
    start = time.perf_counter()
    with workers(1, ["--burst"]) as group:
        group.wait()
        wall = time.perf_counter() - start
        group.check()
    return StartupResult(wall, children_cpu_seconds() - cpu)


def measure_drain(
    count: int,
    processes: int,
    concurrency: int,
    label: str,
    startup: StartupResult,
    conn_max_age: str | None = None,
    batch: int | None = None,
) -> DrainResult:
    """Time real ``process_tasks --burst`` processes draining ``count`` ready no-op tasks.

    ``conn_max_age`` overrides CONN_MAX_AGE in the workers ("none": persistent connections);
    ``batch`` runs them with ``--batch`` (None: the default, BATCH_SIZE).
    """
    db.empty()
    db.insert(Task, db.noop_task_rows(count, run_at=timezone.now() - timedelta(seconds=1)))
    db.analyze()
    args = ["--burst", "--concurrency", str(concurrency)]
    if batch is not None:
        args += ["--batch", str(batch)]
    else:
        batch = int(app_settings.BATCH_SIZE)
    env = {"BENCH_CONN_MAX_AGE": conn_max_age} if conn_max_age is not None else None
    cpu = children_cpu_seconds()
    start = time.perf_counter()
    with workers(processes, args, env) as group:
        group.wait()
        wall = time.perf_counter() - start
        group.check()
    cpu = children_cpu_seconds() - cpu
    _expect_rows(Task, 0)
    done = CompletedTask.objects.filter(status=CompletedTask.Status.SUCCEEDED)
    _expect_rows(CompletedTask, count, done)
    span = done.aggregate(first=Min("started_at"), last=Max("finished_at"))
    busy = (span["last"] - span["first"]).total_seconds()
    per_worker = Counter(done.values_list("worker", flat=True))
    db.empty()
    effective = conn_max_age or os.environ.get("BENCH_CONN_MAX_AGE") or "0 (default)"
    return DrainResult(
        label,
        processes,
        concurrency,
        effective,
        count,
        wall,
        busy,
        cpu,
        startup.cpu_seconds,
        tuple(sorted(per_worker.values(), reverse=True)),
        batch,
    )


def _expect_rows(
    model: type[Task] | type[CompletedTask], expected: int, queryset: object = None
) -> None:
    rows = queryset if queryset is not None else model.objects.all()
    found = rows.count()  # type: ignore[attr-defined]
    if found != expected:
        raise RuntimeError(f"expected {expected} {model.__name__} rows, found {found}")
