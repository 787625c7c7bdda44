"""Scheduling under real concurrency: several processes against one database.

- Unique tasks: processes released together by a barrier enqueue the same unique calls at
  once; the unique index leaves exactly one row per call. Callers replacing a repeating
  unique task while busy workers run it never fail (on MySQL/MariaDB they used to deadlock).
- Cron: three ``process_tasks`` workers, no leader, several schedules; every tick is
  enqueued exactly once. The test plays the clock: each round it sets every schedule's
  ``next_fire_at`` to a new past tick and waits until the workers have fired it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from background_tasks.models import CompletedTask, Schedule, Task, Worker
from tests.helpers import REPO_ROOT, start_worker, wait_for, worker_env
from tests.testapp.models import TaskRun
from tests.testapp.tasks import CRON_TICK

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.concurrency]

Process = subprocess.Popen[str]


class ProcessGroup:
    """Subprocesses stopped on leaving the block: SIGTERM, then SIGKILL once ``grace`` passes.

    Their output is drained while waiting (a full pipe would block them) and kept for messages.
    """

    def __init__(self, processes: list[Process], grace: float = 20.0) -> None:
        self.processes = processes
        self.grace = grace
        self._outputs: dict[int, tuple[str, str]] = {}

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM every process still running, and collect their output (killing the late)."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        self.collect(self.grace, kill_late=True)

    def collect(self, timeout: float, *, kill_late: bool = False) -> list[tuple[str, str]]:
        """Wait (``timeout`` seconds in all) for every process to exit; return their output."""
        deadline = time.monotonic() + timeout
        for process in self.processes:
            if process.pid in self._outputs:
                continue
            try:
                left = max(0.0, deadline - time.monotonic())
                self._outputs[process.pid] = process.communicate(timeout=left)
            except subprocess.TimeoutExpired:
                if not kill_late:
                    raise
                process.kill()
                self._outputs[process.pid] = process.communicate()
        return [self._outputs[p.pid] for p in self.processes]

    @property
    def returncodes(self) -> list[int | None]:
        return [p.returncode for p in self.processes]

    def report(self) -> str:
        """Describe each process: its exit code and output, or that it is still running."""
        lines = []
        for process in self.processes:
            if process.pid not in self._outputs and process.poll() is not None:
                self._outputs[process.pid] = process.communicate()
            if process.pid in self._outputs:
                out, err = self._outputs[process.pid]
                lines.append(f"pid={process.pid} exit={process.returncode}")
                lines.append(f"stdout:\n{out}\nstderr:\n{err}")
            else:
                lines.append(f"pid={process.pid} still running")
        return "\n".join(lines)


# -- unique tasks ---------------------------------------------------------------------------------

ENQUEUER = """
import json, sys, time
from pathlib import Path

import django

django.setup()
from tests.testapp.tasks import unique_record

go, ready, job = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
ready.touch()
deadline = time.monotonic() + 60
while not go.exists():  # the barrier: every process starts enqueuing at the same moment
    if time.monotonic() > deadline:
        sys.exit("the go file never appeared")
    time.sleep(0.001)
seen = {}
if job == "race":
    for key in range(%(keys)d):
        for _ in range(%(repeats)d):
            seen.setdefault(key, set()).add(unique_record(f"race:{key}").pk)
else:
    from background_tasks.models import CompletedTask

    # Replace it at least this often, and on until the workers have run it once (the race the
    # test is about), within a deadline: how fast each side goes depends on the machine.
    done, deadline = 0, time.monotonic() + 20
    ran = CompletedTask.objects.filter(task_name="tests.unique_record")
    while done < %(replacements)d or (not ran.exists() and time.monotonic() < deadline):
        unique_record("swap", repeat=0.02, remove_existing_tasks=True)
        done += 1
print(json.dumps({key: sorted(pks) for key, pks in seen.items()}))
"""

ENQUEUERS = 4
KEYS = 25
REPEATS = 4
REPLACEMENTS = 150
SCRIPT = ENQUEUER % {"keys": KEYS, "repeats": REPEATS, "replacements": REPLACEMENTS}


def run_enqueuers(tmp_path: Path, job: str, count: int) -> list[tuple[str, str]]:
    """Start ``count`` enqueuer processes, release them together, return their outputs."""
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(count)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(go), str(flag), job],
            env=worker_env(),
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag in ready
    ]
    with ProcessGroup(processes) as group:
        wait_for(
            lambda: all(f.exists() for f in ready) or any(p.poll() is not None for p in processes),
            timeout=60,
            message="every enqueuer to reach the barrier",
        )
        go.touch()
        results = group.collect(60)
    assert group.returncodes == [0] * count, f"an enqueuer failed:\n{group.report()}"
    return results


def unique_rows() -> list[Task]:
    return list(Task.objects.filter(task_name="tests.unique_record"))


def test_unique__processes_enqueuing_the_same_calls_at_once_leave_one_row_per_call(
    tmp_path: Path,
) -> None:
    results = run_enqueuers(tmp_path, "race", ENQUEUERS)

    rows = unique_rows()
    assert Counter(t.params["args"][0] for t in rows) == Counter(
        {f"race:{key}": 1 for key in range(KEYS)}
    )
    pk_of = {t.params["args"][0]: t.pk for t in rows}
    for out, _ in results:
        # Every call, in every process, got the one row back: never a row that lost the race.
        assert json.loads(out) == {str(key): [pk_of[f"race:{key}"]] for key in range(KEYS)}


def test_unique__replacing_a_repeating_task_while_busy_workers_run_it_never_fails_a_caller(
    tmp_path: Path,
) -> None:
    # Busy workers archive the task and insert its follower (same unique key) while the
    # callers delete and re-insert it: on MySQL/MariaDB this races into InnoDB deadlocks.
    workers = [start_worker(["--sleep", "0.01", "--concurrency", "2"]) for _ in range(2)]
    with ProcessGroup(workers) as group:
        wait_for(
            lambda: Worker.objects.count() == 2 or any(w.poll() is not None for w in workers),
            timeout=30,
            message="every worker to register",
        )
        run_enqueuers(tmp_path, "replace", 3)
        ran = CompletedTask.objects.filter(task_name="tests.unique_record").count()
    assert group.returncodes == [0, 0], group.report()

    assert ran > 0, "the workers never ran the task, so nothing raced"
    [pending] = unique_rows()
    assert pending.params["args"] == ["swap"]


# -- cron: exactly once, leaderless ---------------------------------------------------------------

WORKERS = 3
SCHEDULES = 4
ROUNDS = 10


#: A cron whose real ticks are years apart. Firing a tick moves a schedule to its first real
#: tick after now; with "* * * * *" that tick came due whenever the test ran across a minute
#: boundary, and the workers fired it between two rounds: its task broke the exactly-once
#: count, and its last_fired_at could replace a round's before the test saw it.
NEVER_DUE_DURING_THE_TEST = "0 0 29 2 *"


def make_schedules() -> list[Schedule]:
    """Admin schedules (worker start-up sync leaves those alone), not due until a round says so."""
    return [
        Schedule.objects.create(
            name=f"race-{i}",
            task_name=CRON_TICK,
            params={"args": [f"cron:{i}"], "kwargs": {}},
            cron=NEVER_DUE_DURING_THE_TEST,
            source=Schedule.Source.ADMIN,
            next_fire_at=None,
        )
        for i in range(SCHEDULES)
    ]


def play_rounds(schedule_ids: Sequence[int], ticks: Sequence[datetime]) -> None:
    """Make each tick due on every schedule in turn, waiting until the workers have fired it."""
    for tick in ticks:
        Schedule.objects.filter(pk__in=schedule_ids).update(next_fire_at=tick)
        wait_for(
            lambda tick=tick: (
                Schedule.objects.filter(pk__in=schedule_ids, last_fired_at=tick).count()
                == len(schedule_ids)
            ),
            # A round takes well under a second. The deadline is not a speed limit: a tick lost
            # never fires at all (its schedule moves to a real tick, years away), while on
            # SQLite a loaded machine can keep a worker waiting for the write lock up to the
            # test settings' 20 s busy timeout.
            timeout=60,
            message=f"every schedule to fire the tick {tick.isoformat()}",
        )


def test_cron__three_workers_enqueue_every_tick_of_every_schedule_exactly_once() -> None:
    schedule_ids = [s.pk for s in make_schedules()]
    base = (timezone.now() - timedelta(days=1)).replace(second=0, microsecond=0)
    ticks = [base + timedelta(minutes=n) for n in range(ROUNDS)]

    # --log-std: the workers' log lines (ticks fired, errors) are in the report of a failure.
    workers = [start_worker(["--sleep", "0.05", "--log-std"]) for _ in range(WORKERS)]
    with ProcessGroup(workers) as group:
        wait_for(
            lambda: Worker.objects.count() == WORKERS or any(w.poll() is not None for w in workers),
            timeout=30,
            message="every worker to register",
        )
        assert all(w.poll() is None for w in workers), group.report()

        try:
            play_rounds(schedule_ids, ticks)
        except AssertionError as timed_out:
            group.stop()
            schedules = list(
                Schedule.objects.filter(pk__in=schedule_ids).values(
                    "name", "enabled", "next_fire_at", "last_fired_at"
                )
            )
            raise AssertionError(f"{timed_out}\nschedules: {schedules}\n{group.report()}") from None
        wait_for(
            lambda: not Task.objects.filter(task_name=CRON_TICK).exists(),
            timeout=20,
            message="the workers to run every enqueued tick",
        )
        # Every schedule has moved on to its next real tick, in the future.
        left_due = Schedule.objects.filter(pk__in=schedule_ids, next_fire_at__lte=timezone.now())
        assert not left_due.exists()
    assert group.returncodes == [0] * WORKERS, group.report()

    done = CompletedTask.objects.filter(task_name=CRON_TICK)
    for i in range(SCHEDULES):
        mine = [t for t in done if t.params["args"][0] == f"cron:{i}"]
        # One task per tick: none enqueued twice, none lost.
        assert sorted(t.run_at for t in mine) == ticks, f"schedule race-{i}"
        assert {t.status for t in mine} == {CompletedTask.Status.SUCCEEDED}
    runs = Counter(TaskRun.objects.values_list("key", flat=True))
    assert runs == Counter(
        {f"cron:{i}": ROUNDS for i in range(SCHEDULES)}
        | {f"fired:cron:{i}": ROUNDS for i in range(SCHEDULES)}
    )

    # Leaderless: ticks were won by more than one of the worker processes.
    worker_pids = {w.pid for w in workers}
    firers = Counter(
        TaskRun.objects.filter(key__startswith="fired:").values_list("worker_pid", flat=True)
    )
    assert set(firers) <= worker_pids
    assert len(firers) > 1, f"every tick was fired by one worker: {firers}"
