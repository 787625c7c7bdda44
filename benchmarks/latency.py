"""Pickup latency: from the commit of an enqueue to the start of the task body in an idle worker.

One real ``process_tasks`` worker is started and left idle. Then tasks are enqueued one at a
time, each in its own transaction, each only once the previous one has finished and a short
random pause has passed, so that the worker is waiting (on PostgreSQL for a notification,
elsewhere for its next poll) every time. The body of the task returns ``time.time()`` as its
first act, and the worker stores that as the task's result; the benchmark takes ``time.time()``
as the enqueuing transaction's commit returns. Both clocks are the machine's CLOCK_REALTIME,
shared by every process on it, and nothing is written for the measurement but the result the
worker records anyway, after the body has run.

The figure is taken from the moment the enqueuer's COMMIT returns. The notification (or the
row, for a poll) can reach the worker while that reply is still on its way back, so the span
from the moment COMMIT was sent is printed too: an upper bound, which includes the commit's own
wait for the disk. ``locked_at`` (the worker's clock, read just before its claim statement)
splits it in two: to the claim (the commit, then the wake-up: a notification or a poll) and
from the claim to the body (the claim's round trip and commit, the hand-off to the runner
thread, what runs before the body).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from django.db import connection, transaction

from background_tasks.models import CompletedTask, Worker
from background_tasks.wakeup import Listener

from . import db
from .tasks import pickup
from .workers import WorkerGroup, workers

WARM_UP = 3  # untimed samples first: the worker's first claims and imports are not "idle"
READY_TIMEOUT = 60.0  # seconds for the worker to register (and, on PostgreSQL, to LISTEN)
# After a task has finished, the worker records its outcome, claims once more (finding
# nothing) and waits. The next task is enqueued a random pause after the benchmark saw the
# outcome: long enough for that, and random, so that arrivals do not keep step with the poll.
NOTIFIED_PAUSE = (0.02, 0.05)
# The benchmark does not look for the outcome while a pickup is likely under way: its queries
# would compete for the CPU with the worker and its database server (2 cores here).
FIRST_LOOK = 0.025  # seconds after the commit
COMPLETION_CHECK = 0.01  # seconds between two looks after that


@dataclass(frozen=True)
class LatencyResult:
    wakeup: str  # "listen" or "poll"
    poll_interval: float
    # Per sample, in ms: from the commit's return to the body (the figure), from the moment
    # COMMIT was sent to the body (an upper bound: it includes the commit's own wait), and
    # that second span split at the claim.
    samples_ms: tuple[float, ...] = field(repr=False)
    from_sent_ms: tuple[float, ...] = field(repr=False)
    sent_to_claim_ms: tuple[float, ...] = field(repr=False)

    @property
    def commit_ms(self) -> tuple[float, ...]:
        """The enqueuer's COMMIT round trips: what one durable commit cost during the run."""
        return tuple(f - s for f, s in zip(self.from_sent_ms, self.samples_ms, strict=True))

    @property
    def claim_to_body_ms(self) -> tuple[float, ...]:
        return tuple(s - c for s, c in zip(self.from_sent_ms, self.sent_to_claim_ms, strict=True))

    def percentile(self, p: float, values: tuple[float, ...] | None = None) -> float:
        """Return the nearest-rank percentile ``p`` (0-100) of the samples, in ms."""
        ordered = sorted(self.samples_ms if values is None else values)
        rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
        return ordered[int(rank) - 1]


def uses_listen() -> bool:
    """Whether an idle worker on this database is woken by NOTIFY (otherwise it polls)."""
    return Listener.available(connection.alias)


def measure(count: int, poll_interval: float | None, seed: int = 14) -> LatencyResult:
    """Enqueue ``count`` tasks one at a time into an idle worker; measure each pickup.

    ``poll_interval`` is the worker's ``--sleep`` (None: its default, POLL_INTERVAL).
    """
    from background_tasks.conf import app_settings

    listen = uses_listen()
    interval = float(app_settings.POLL_INTERVAL) if poll_interval is None else poll_interval
    rng = random.Random(seed)
    db.empty()
    args = [] if poll_interval is None else ["--sleep", str(poll_interval)]
    samples: list[float] = []
    from_sent: list[float] = []
    to_claim: list[float] = []
    with workers(1, args) as group:
        _wait_until_idle_worker(group, listen)
        for i in range(WARM_UP + count):
            pause = rng.uniform(*NOTIFIED_PAUSE) if listen else rng.uniform(0.02, 0.02 + interval)
            time.sleep(pause)
            with transaction.atomic():
                task = pickup()
                sent = time.time()  # the last thing before COMMIT
            committed = time.time()
            started, claimed = _wait_for_outcome(group, task.pk, timeout=interval * 2 + 30)
            if i >= WARM_UP:
                samples.append((started - committed) * 1000)
                from_sent.append((started - sent) * 1000)
                to_claim.append((claimed - sent) * 1000)
    db.empty()
    return LatencyResult(
        "listen" if listen else "poll",
        interval,
        tuple(samples),
        tuple(from_sent),
        tuple(to_claim),
    )


def _wait_until_idle_worker(group: WorkerGroup, listen: bool) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not Worker.objects.exists() or (listen and not _listening()):
        if not group.running():
            group.check()
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the worker did not get ready in {READY_TIMEOUT:g}s:\n"
                f"{group.members[0].log_tail()}"
            )
        time.sleep(0.05)


def _listening() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN %%'"
        )
        return bool(cursor.fetchone()[0])


def _wait_for_outcome(group: WorkerGroup, task_id: int, timeout: float) -> tuple[float, float]:
    """Wait for the task's outcome; return (body start, claim) in seconds since the epoch."""
    deadline = time.monotonic() + timeout
    time.sleep(FIRST_LOOK)
    while True:
        row = (
            CompletedTask.objects.filter(task_id=task_id)
            .values_list("status", "result", "started_at")
            .first()
        )
        if row is not None:
            status, result, claimed = row
            if status != CompletedTask.Status.SUCCEEDED or not isinstance(result, float):
                raise RuntimeError(f"task {task_id} ended {status} with result {result!r}")
            return result, claimed.timestamp()
        if not group.running():
            group.check()
            raise RuntimeError(f"the worker exited before it ran task {task_id}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"task {task_id} did not run within {timeout:g}s:\n{group.members[0].log_tail()}"
            )
        time.sleep(COMPLETION_CHECK)


def report(result: LatencyResult) -> str:
    """The percentiles of the samples, and what bounds them."""
    from .report import table

    rows = []
    for label, values in (
        ("commit returned -> body starts", result.samples_ms),
        ("COMMIT sent -> body starts", result.from_sent_ms),
        ("  COMMIT sent -> claim starts", result.sent_to_claim_ms),
        ("  claim starts -> body starts", result.claim_to_body_ms),
        ("(the enqueuer's COMMIT, for scale)", result.commit_ms),
    ):
        rows.append(
            (
                label,
                len(values),
                *(round(result.percentile(p, values), 2) for p in (50, 95, 99)),
                round(max(values), 2),
            )
        )
    text = table(["span (ms)", "samples", "p50", "p95", "p99", "max"], rows)
    if result.wakeup == "listen":
        verdict = "met" if result.percentile(50) <= 3 and result.percentile(95) <= 10 else "NOT met"
        return f"{text}\n\nWake-up: LISTEN/NOTIFY. Target p50 <= 3 ms, p95 <= 10 ms: {verdict}."
    return (
        f"{text}\n\nWake-up: polling every {result.poll_interval:g} s (no NOTIFY on this "
        "database): a task waits for the next poll, so pickup is bounded by the poll interval "
        "and, with arrivals at random times, about half of it on average."
    )
