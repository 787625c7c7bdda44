"""The database goes away for several seconds under a real worker, then comes back.

PostgreSQL: a private cluster started by the test (the installed server binaries, found at run
time) is killed (``pg_ctl stop -m immediate``) and started again. MariaDB/MySQL: the worker
reaches the test database through a TCP proxy that cuts every connection and refuses new ones.
In both, the worker's connections go through the proxy, which counts the connection attempts.
Each test runs in the suite of its own database (the other is skipped there); SQLite has no
server to take away.

What must hold through the outage: the worker backs off (a bounded number of connection
attempts and log lines, little CPU), every task runs exactly once, and in process mode the
supervisor still kills an overrunning task on time and records it once the database is back.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection

from tests import dburl
from tests.dbserver import CuttingProxy, PrivatePostgres, cpu_seconds, postgres_bindir
from tests.helpers import REPO_ROOT, manage_command, run_command, wait_for, worker_env

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads CPU time from /proc"),
]

OUTAGE = 8.0  # seconds without a database
TASKS = 40


@dataclass
class Outage:
    """A database the test can take away: ``worker_url`` leads through ``proxy``."""

    worker_url: str
    direct_url: str
    proxy: CuttingProxy
    begin: Callable[[], None]
    end: Callable[[], None]

    def django(self, code: str) -> object:
        """Run ``code`` in ``manage.py shell`` on the database (not through the proxy)."""
        result = run_command(
            "shell", "-v", "0", "-c", code, env=worker_env(DATABASE_URL=self.direct_url)
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        return json.loads(lines[-1]) if lines else None


@pytest.fixture
def outage() -> Iterator[Outage]:
    if connection.vendor == "postgresql":
        yield from _private_postgres()
    elif connection.vendor == "mysql":
        yield from _mysql_behind_a_proxy()
    else:
        pytest.skip("SQLite has no database server to take away")


def _private_postgres() -> Iterator[Outage]:
    reason = PrivatePostgres.can_run()
    bindir = postgres_bindir()
    if reason or bindir is None:
        pytest.skip(f"no private PostgreSQL: {reason}")
    server = PrivatePostgres(bindir)
    proxy = CuttingProxy("127.0.0.1", server.port)
    try:
        server.init()
        server.start()
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres",
             "outages"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        direct = server.url("outages")
        migrated = run_command("migrate", "-v", "0", env=worker_env(DATABASE_URL=direct))
        assert migrated.returncode == 0, migrated.stderr
        yield Outage(server.url("outages", proxy.port), direct, proxy, server.kill, server.start)
    finally:
        proxy.close()
        server.stop()


def _mysql_behind_a_proxy() -> Iterator[Outage]:
    settings = connection.settings_dict
    proxy = CuttingProxy(settings["HOST"] or "127.0.0.1", int(settings["PORT"] or 3306))
    try:
        yield Outage(
            dburl.to_url({**settings, "HOST": "127.0.0.1", "PORT": str(proxy.port)}),
            dburl.to_url(settings),
            proxy,
            proxy.cut,
            proxy.resume,
        )
    finally:
        proxy.close()


@contextlib.contextmanager
def worker(outage: Outage, log_dir: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``process_tasks`` against the database through the proxy, logging to files."""
    with (log_dir / "worker.out").open("wb") as out, (log_dir / "worker.err").open("wb") as err:
        proc = subprocess.Popen(
            manage_command("process_tasks", "--log-std", "--sleep", "0.2", *args),
            env=worker_env(DATABASE_URL=outage.worker_url),
            cwd=REPO_ROOT,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def log_of(log_dir: Path) -> str:
    return (log_dir / "worker.err").read_text(errors="replace") + (
        log_dir / "worker.out"
    ).read_text(errors="replace")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def hold_outage_until(deadline: float) -> None:
    """Keep the database away until ``deadline``: the outage's length is the scenario."""
    time.sleep(max(0.0, deadline - time.monotonic()))


def test_outage__the_worker_backs_off_quietly_and_runs_every_task_exactly_once(
    outage: Outage, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    outage.django(
        "from tests.testapp.tasks import appends_line\n"
        f"for i in range({TASKS}): appends_line({str(runs)!r}, f'task-{{i:02d}}', 0.1)"
    )

    with worker(outage, tmp_path, "--concurrency", "2") as proc:
        wait_for(lambda: len(lines(runs)) >= TASKS // 4, 60, message="the first tasks to run")
        cpu_before, refused_before = cpu_seconds(proc.pid), outage.proxy.refused
        started = time.monotonic()
        outage.begin()
        wait_for(lambda: "event=database_unavailable" in log_of(tmp_path), 15, message="the log")
        hold_outage_until(started + OUTAGE)
        cpu_during = cpu_seconds(proc.pid) - cpu_before
        attempts = outage.proxy.refused - refused_before
        outage.end()
        wait_for(lambda: len(lines(runs)) >= TASKS, 60, message="every task to run")
        wait_for(
            lambda: (
                outage.django(
                    "import json; from background_tasks.models import Task; "
                    "print(json.dumps(Task.objects.count()))"
                )
                == 0
            ),
            60,
            interval=1,
            message="every outcome to be recorded",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_of(tmp_path)

    log = log_of(tmp_path)
    keys = Counter(line.split()[0] for line in lines(runs))
    assert sorted(keys) == [f"task-{i:02d}" for i in range(TASKS)]
    assert set(keys.values()) == {1}, [key for key, count in keys.items() if count > 1]
    assert (
        outage.django(
            "import json; from background_tasks.models import CompletedTask; "
            "print(json.dumps(CompletedTask.objects.succeeded().count()))"
        )
        == TASKS
    )
    # Backoff: 0.5 s doubling to 30 s, shared by the worker's threads (plus, on PostgreSQL,
    # the LISTEN connection's own). A busy loop makes thousands of attempts.
    assert 1 <= attempts <= 40, attempts
    assert log.count("event=database_unavailable ") == 1, log
    assert log.count("event=database_still_unavailable ") <= 8, log
    assert log.count("event=database_available ") == 1, log
    assert log.count("event=listener_error") <= 8, log
    assert "Traceback" not in log, log
    # Spinning through the outage would cost about one CPU-second per second.
    assert cpu_during < 0.1 * OUTAGE, cpu_during


def test_outage_in_process_mode__an_overrunning_task_is_killed_on_time_and_recorded(
    outage: Outage, tmp_path: Path
) -> None:
    pids = tmp_path / "pids.txt"
    task_id = outage.django(
        "import json; from tests.testapp.tasks import overruns_after_noting_its_pid as t\n"
        f"print(json.dumps(t({str(pids)!r}).pk))"
    )
    limit = 3.0

    with worker(outage, tmp_path, "--processes", "1") as proc:
        wait_for(lambda: lines(pids), 60, message="the task to start")
        started = time.monotonic()
        child = int(lines(pids)[0])
        # The outage begins a third of the way into the time limit and outlasts it.
        hold_outage_until(started + 1.0)
        outage.begin()
        wait_for(lambda: not Path(f"/proc/{child}").exists(), limit + 10, message="the kill")
        killed_after = time.monotonic() - started
        still_down = time.monotonic() < started + 1.0 + OUTAGE
        hold_outage_until(started + 1.0 + OUTAGE)
        outage.end()
        recorded = (
            "import json; from background_tasks.models import CompletedTask; "
            f"c = CompletedTask.objects.filter(task_id={task_id}).first(); "
            "print(json.dumps(c and [c.status, c.last_error]))"
        )
        wait_for(lambda: outage.django(recorded), 60, interval=1, message="the failure record")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_of(tmp_path)

    log = log_of(tmp_path)
    assert still_down  # killed during the outage, from what the supervisor last saw
    # Measured from the task's start, a little after its claim; the supervisor looks every
    # 0.25 s. Loaded test machines get a second more.
    assert killed_after <= limit + 1.5, killed_after
    assert outage.django(recorded) == [
        "failed",
        f"Timed out after {limit:g} s (hard time limit); the process was killed.",
    ]
    assert log.count("event=task_timed_out") == 1, log
    supervisor_errors = log.count("event=time_limit_check_failed") + log.count("reap_failed")
    assert supervisor_errors <= 1, log  # one line when the outage starts, not four a second
    assert log.count("event=database_unavailable worker=supervisor") == 1, log
    assert log.count("event=database_available worker=supervisor") == 1, log
    assert "Traceback" not in log, log
