"""Resident memory of one worker process over a long drain (issue 4: it must stay flat)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from background_tasks.models import CompletedTask, Task

from . import db
from .workers import rss_kib, workers

SAMPLE_INTERVAL = 1.0  # seconds between two reads of /proc/<pid>/status
FLAT_GROWTH = 0.10  # "flat": the end is within 10 % of the RSS after the first tenth


@dataclass(frozen=True)
class Sample:
    seconds: float
    done: int
    rss_kib: int


@dataclass
class VacuumLog:
    """The ``VACUUM``s of the queue table the benchmark ran during the memory run (PostgreSQL).

    Every claim and every outcome leaves a dead row version in the queue table, and the claim
    index keeps pointing at them until a vacuum removes them. A production server's autovacuum
    does that as the table churns; the benchmark does it itself every ``interval`` seconds so
    that the run measures the worker, not a server whose autovacuum is off or lagging.
    """

    interval: float
    autovacuum: str  # the server's own setting, printed so a reader knows why this is done
    seconds: list[float] = field(default_factory=list)  # how long each VACUUM took

    def due(self, elapsed: float) -> bool:
        return elapsed >= self.interval * (len(self.seconds) + 1)

    def run(self) -> None:
        table = connection.ops.quote_name(Task._meta.db_table)
        start = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM {table}")  # autocommit: VACUUM cannot run in a transaction
        self.seconds.append(time.perf_counter() - start)


def vacuum_log(interval: float) -> VacuumLog | None:
    """Return the log of the queue table's vacuums to run, or None: not PostgreSQL, or off."""
    if connection.vendor != "postgresql" or interval <= 0:
        return None
    with connection.cursor() as cursor:
        cursor.execute("SHOW autovacuum")
        setting = cursor.fetchone()[0]
    return VacuumLog(interval, setting)


@dataclass(frozen=True)
class MemoryResult:
    tasks: int
    concurrency: int
    worker_settings: str
    wall_seconds: float
    samples: tuple[Sample, ...]
    peak_kib: int  # VmHWM: the kernel's own high-water mark, between samples too
    vacuum: VacuumLog | None = None  # PostgreSQL: the benchmark's own VACUUMs of the queue table

    def at(self, done: int) -> Sample:
        """Return the first sample taken once ``done`` tasks had finished."""
        return next((s for s in self.samples if s.done >= done), self.samples[-1])

    @property
    def warm(self) -> Sample:
        return self.at(self.tasks // 10)

    @property
    def end(self) -> Sample:
        return self.samples[-1]

    @property
    def growth(self) -> float:
        return (self.end.rss_kib - self.warm.rss_kib) / self.warm.rss_kib

    @property
    def flat(self) -> bool:
        return self.growth < FLAT_GROWTH

    def checkpoints(self, parts: int = 10) -> list[Sample]:
        return [self.at(self.tasks * i // parts) for i in range(1, parts + 1)]

    def rate_between(self, first: Sample, last: Sample) -> float:
        seconds = last.seconds - first.seconds
        return (last.done - first.done) / seconds if seconds > 0 else float("nan")

    @property
    def first_tenth_rate(self) -> float:
        started = next((s for s in self.samples if s.done > 0), self.samples[0])
        return self.rate_between(started, self.warm)

    @property
    def last_tenth_rate(self) -> float:
        before = [s for s in self.samples if s.done <= self.tasks * 9 // 10 and s is not self.end]
        return self.rate_between(before[-1], self.end) if before else float("nan")


def measure(
    count: int, concurrency: int, backlog: int, env: dict[str, str], vacuum_every: float = 0
) -> MemoryResult:
    """Drain ``count`` no-op tasks with one worker, reading its RSS once a second.

    With ``backlog`` > 0 the queue is topped up to that many ready rows whenever it falls to
    half of it, and the worker runs with ``--max-tasks count`` (it polls, rather than exits, if
    it ever outruns the top-ups). With ``backlog`` 0 every row is inserted first and the worker
    runs with ``--burst``. ``env`` holds the bench settings knobs of that worker. On
    PostgreSQL, ``vacuum_every`` > 0 vacuums the queue table every that many seconds.
    """
    vacuum = vacuum_log(vacuum_every)
    db.empty()
    inserted = _top_up(0, count, backlog or count)
    db.analyze()
    args = ["--max-tasks", str(count), "--sleep", "0.1"] if backlog else ["--burst"]
    samples: list[Sample] = []
    peak = 0
    start = time.perf_counter()
    with workers(1, [*args, "--concurrency", str(concurrency)], env) as group:
        process = group.members[0].process
        while True:
            reading = rss_kib(process.pid)
            if reading is not None:
                waiting = Task.objects.count()
                samples.append(Sample(time.perf_counter() - start, inserted - waiting, reading[0]))
                peak = max(peak, reading[1])
                if backlog and waiting <= backlog // 2:
                    inserted = _top_up(inserted, count, backlog - waiting)
                if vacuum is not None and vacuum.due(time.perf_counter() - start):
                    vacuum.run()
            try:
                process.wait(SAMPLE_INTERVAL)  # the sampling interval; returns early on exit
                break
            except subprocess.TimeoutExpired:
                continue
        wall = time.perf_counter() - start
        group.check()
    finished = CompletedTask.objects.filter(status=CompletedTask.Status.SUCCEEDED).count()
    if finished != count or not samples:
        raise RuntimeError(f"expected {count} succeeded tasks and RSS samples, found {finished}")
    db.empty()
    knobs = [f"{key}={value}" for key, value in sorted(env.items())]
    knobs.append(f"backlog={backlog:,} ready rows" if backlog else "all rows inserted first")
    return MemoryResult(count, concurrency, " ".join(knobs), wall, tuple(samples), peak, vacuum)


def _top_up(inserted: int, count: int, rows: int) -> int:
    """Insert up to ``rows`` more ready tasks without exceeding ``count``; return the new total."""
    rows = min(rows, count - inserted)
    if rows > 0:
        db.insert(Task, db.noop_task_rows(rows, run_at=timezone.now() - timedelta(seconds=1)))
    return inserted + max(rows, 0)
