"""Chaos: workers SIGKILLed at random while they drain a queue lose nothing.

Four real ``process_tasks`` workers (two runner threads each) drain 2,000 tasks while a killer
SIGKILLs a random one every half second, whatever it is doing (starting up, claiming, running
tasks, finalising them), and starts a replacement in its slot. Short heartbeat and rescue
windows (passed in the environment, read by tests/settings.py) let the survivors release a
killed worker's tasks within seconds, and the task retries at once (``backoff=0``; with the
default backoff a task lost three or four times would wait for minutes).

Afterwards every task has succeeded exactly once in CompletedTask (outcomes are fenced by the
worker id), none was lost (each ran at least once), and the only ones run twice are tasks a
killed worker held, each after a "Worker lost" attempt: the one each thread was running, and
with batching (on by default, and no-op tasks are short) those of its batch whose outcomes it
held, so at most kills x concurrency x BATCH_SIZE runs.

Logs go to files, not pipes: 2,000 tasks log more than a pipe buffer holds.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection, transaction

from background_tasks.conf import app_settings
from background_tasks.models import CompletedTask, Task, Worker
from tests.helpers import REPO_ROOT, manage_command, wait_for, worker_env
from tests.testapp import tasks
from tests.testapp.models import TaskRun

pytestmark = [
    pytest.mark.slow,
    pytest.mark.concurrency,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

WORKERS = 4
CONCURRENCY = 2
TASKS = 2_000
KILL_EVERY = 0.5
DEADLINE = 240.0
QUICK_RESCUE = {
    "BACKGROUND_TASKS_HEARTBEAT_INTERVAL": "0.2",
    "BACKGROUND_TASKS_RESCUE_AFTER": "1.5",
}


class Pool:
    """``WORKERS`` slots, each running one worker process; a killed one is replaced at once."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.slots: list[subprocess.Popen[bytes]] = []
        self.every: list[subprocess.Popen[bytes]] = []
        self.kills = 0
        self.kills_holding_tasks = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        index = len(self.every)
        with (
            (self.log_dir / f"worker-{index}.out").open("wb") as out,
            (self.log_dir / f"worker-{index}.err").open("wb") as err,
        ):
            # The child keeps its own copies of the descriptors; ours close with the block.
            proc = subprocess.Popen(
                manage_command(
                    "process_tasks",
                    "--concurrency",
                    str(CONCURRENCY),
                    "--sleep",
                    "0.1",
                    "--log-std",
                ),
                env=worker_env(**QUICK_RESCUE),
                cwd=REPO_ROOT,
                stdout=out,
                stderr=err,
            )
        self.every.append(proc)
        return proc

    def start(self) -> None:
        self.slots = [self._spawn() for _ in range(WORKERS)]

    def registered(self) -> dict[int, str]:
        """Map the slot of each running worker that has registered to its worker id."""
        ids = dict(Worker.objects.values_list("pid", "id"))
        return {
            slot: ids[proc.pid]
            for slot, proc in enumerate(self.slots)
            if proc.poll() is None and proc.pid in ids
        }

    def kill_one(self, rng: random.Random) -> None:
        """SIGKILL the worker of a random slot, whatever it is doing, and start a new one there."""
        slot = rng.randrange(WORKERS)
        worker_id = self.registered().get(slot)
        holding = worker_id is not None and Task.objects.filter(locked_by=worker_id).exists()
        self.slots[slot].kill()
        self.slots[slot].wait()
        self.kills += 1
        self.kills_holding_tasks += holding
        self.slots[slot] = self._spawn()

    def kill_until_drained(self, rng: random.Random) -> float:
        """Kill a worker every KILL_EVERY seconds until no task is left; return the time taken."""
        began = time.monotonic()
        while Task.objects.exists():
            if time.monotonic() - began > DEADLINE:
                left, held = Task.objects.count(), Task.objects.locked().count()
                pytest.fail(
                    f"{left} tasks left ({held} held) after {DEADLINE:g}s and {self.kills} "
                    f"kills; the running workers' logs end with:\n{self.stderr_tails()}"
                )
            self.kill_one(rng)
            time.sleep(KILL_EVERY)  # the killer's pace, not a synchronisation
        return time.monotonic() - began

    def stop(self) -> None:
        """SIGTERM every running worker and wait for each to exit cleanly."""
        for proc in self.slots:
            proc.terminate()
        for slot, proc in enumerate(self.slots):
            code = proc.wait(timeout=60)
            assert code == 0, f"worker in slot {slot} exited with {code}:\n{self.stderr(proc)}"

    def kill_all(self) -> None:
        for proc in self.every:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def stderr_tails(self) -> str:
        return "\n".join(f"--- pid {p.pid}:\n{self.stderr(p)[-2000:]}" for p in self.slots)

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.log_dir / f"worker-{self.every.index(proc)}.err").read_text(errors="replace")


def test_sigkill_chaos__every_task_succeeds_once_and_none_is_lost(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    keys = [f"chaos-{index:04d}" for index in range(TASKS)]
    with transaction.atomic():
        for key in keys:
            tasks.record_retried_at_once(key)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    pool = Pool(tmp_path)
    try:
        pool.start()
        drained = pool.kill_until_drained(rng)

        # Replacements started by the last kills register, and the rows of the killed workers
        # are given up for lost and removed by the survivors' rescue.
        def settled() -> bool:
            running = pool.registered()
            return len(running) == WORKERS and Worker.objects.count() == WORKERS

        wait_for(settled, timeout=60, message="only the running workers to be registered")
        pool.stop()
    finally:
        pool.kill_all()

    for proc in pool.every:
        assert "Traceback" not in pool.stderr(proc), pool.stderr(proc)
    assert not Task.objects.exists()
    assert not Worker.objects.exists()
    completed = CompletedTask.objects.filter(task_name=tasks.record_retried_at_once.name)
    assert completed.count() == TASKS
    assert completed.succeeded().count() == TASKS
    assert completed.values("task_id").distinct().count() == TASKS
    runs = Counter(TaskRun.objects.values_list("key", flat=True))
    assert set(runs) == set(keys), "lost tasks: " + ", ".join(sorted(set(keys) - set(runs)))
    repeated = {key: count for key, count in runs.items() if count > 1}
    duplicates = sum(count - 1 for count in repeated.values())
    rescued = completed.filter(last_error__startswith="Worker lost")
    # A task ran again only after its worker was lost while running it.
    rescued_keys = {params["args"][0] for params in rescued.values_list("params", flat=True)}
    assert set(repeated) <= rescued_keys
    message = (
        f"chaos on {connection.vendor}: {TASKS} tasks drained in {drained:.1f}s by "
        f"{WORKERS} workers x {CONCURRENCY} threads; {pool.kills} SIGKILLs "
        f"({pool.kills_holding_tasks} of a worker holding tasks), {rescued.count()} tasks "
        f"rescued, {duplicates} duplicate runs (seed {seed})"
    )
    with capsys.disabled():
        print(f"\n{message}")
    record_property("chaos", message)
    assert pool.kills > 0
    assert duplicates <= pool.kills * CONCURRENCY * app_settings.BATCH_SIZE, message
