"""Waiting out an unreachable database: the pause, the log lines, stopping, giving up.

The pure backoff and log policy are tested with a fake clock; the worker's loop in-process with
the database calls made to fail; Ctrl-C and ``--burst`` against a database that is really
unreachable, in real ``process_tasks`` subprocesses. The real outages (a server killed, a proxy
cutting connections) are in tests/test_database_outages.py.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import InterfaceError, OperationalError, ProgrammingError, connection
from django.test import override_settings

from background_tasks import liveness
from background_tasks import worker as worker_module
from background_tasks.exit_codes import EXIT_DATABASE_UNAVAILABLE, EXIT_NOT_MIGRATED
from background_tasks.outage import Outage, is_missing_table, is_outage, pause_before_try
from background_tasks.worker import Worker
from tests import dburl
from tests.helpers import REPO_ROOT, manage_command, run_command, wait_for, worker_env

# -- the pause -------------------------------------------------------------------------------


def test_pause_before_try__doubles_from_the_first_wait_up_to_the_cap() -> None:
    no_jitter = [pause_before_try(step, 0.5, 30.0, rand=lambda: 0.0) for step in range(10)]

    assert no_jitter == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert pause_before_try(10_000, 0.5, 30.0, rand=lambda: 0.0) == 30.0  # no overflow


def test_pause_before_try__jitter_takes_at_most_half_away_and_never_passes_the_cap() -> None:
    assert pause_before_try(3, 0.5, 30.0, rand=lambda: 0.999999) == pytest.approx(2.0, abs=1e-4)
    assert pause_before_try(20, 0.5, 30.0, rand=lambda: 0.5) == 22.5
    pauses = {pause_before_try(2, 1.0, 30.0) for _ in range(200)}
    assert all(2.0 < pause <= 4.0 for pause in pauses)
    assert len(pauses) > 100  # really random: workers do not retry in step


# -- the log ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().split()[0] for r in caplog.records if "database_" in r.getMessage()]


@override_settings(
    BACKGROUND_TASKS_OUTAGE_BACKOFF_FIRST=1.0, BACKGROUND_TASKS_OUTAGE_BACKOFF_MAX=4.0
)
def test_outage_log__one_line_at_the_start_at_most_one_per_step_and_one_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    outage = Outage("w1", clock)
    error = OperationalError("server closed the connection unexpectedly")

    with caplog.at_level(logging.INFO, logger="background_tasks"):
        first = outage.failed(error)
        # Other threads fail within the same pause: no line, and they wait for the same moment.
        clock.now += 0.1
        assert outage.failed(error) == pytest.approx(first - 0.1)
        assert outage.failed(error) == pytest.approx(first - 0.1)
        assert outage_lines(caplog) == ["event=database_unavailable"]
        for _ in range(5):  # five more steps, each after its pause
            clock.now += 4.0
            assert 0.5 <= outage.failed(error) <= 4.0
        assert outage.down_for() == pytest.approx(20.1)
        outage.succeeded()
        outage.succeeded()

    assert outage_lines(caplog) == [
        "event=database_unavailable",
        *["event=database_still_unavailable"] * 5,
        "event=database_available",
    ]
    assert "down_for=20.1s tries=8" in caplog.records[-1].getMessage()
    assert not outage.down
    assert outage.generation == 1


def test_is_outage__connection_errors_are_outages_and_missing_tables_are_not() -> None:
    sqlite_missing = OperationalError("no such table: background_tasks_worker")
    postgres_missing = ProgrammingError('relation "background_tasks_worker" does not exist')
    mysql_missing = ProgrammingError(1146, "Table 'app.background_tasks_worker' doesn't exist")

    for missing in (sqlite_missing, postgres_missing, mysql_missing):
        assert is_missing_table(missing)
        assert not is_outage(missing)
    assert is_outage(OperationalError("server closed the connection unexpectedly"))
    assert is_outage(InterfaceError("connection already closed"))
    assert not is_outage(ProgrammingError("syntax error at or near"))


# -- the worker's loop, in-process ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@override_settings(
    BACKGROUND_TASKS_HEARTBEAT_INTERVAL=0.01,
    BACKGROUND_TASKS_OUTAGE_BACKOFF_FIRST=0.2,
    BACKGROUND_TASKS_OUTAGE_BACKOFF_MAX=0.8,
)
def test_worker_loop__an_outage_is_waited_out_with_backoff_though_the_heartbeat_is_overdue(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[float] = []

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        raise OperationalError("could not connect to server: Connection refused")

    monkeypatch.setattr(liveness, "beat", unreachable)
    monkeypatch.setattr(worker_module, "claim_tasks", unreachable)

    with caplog.at_level(logging.INFO, logger="background_tasks"):
        assert Worker(duration=2.5, sleep=0.01).run() == 0

    # 0.1-0.2 s, then 0.2-0.4, 0.4-0.8, 0.4-0.8 ... : at most 8 tries in 2.5 s. Capping the
    # pause at the overdue heartbeat (the old behaviour) made thousands.
    assert 3 <= len(calls) <= 9, len(calls)
    assert outage_lines(caplog).count("event=database_unavailable") == 1
    assert outage_lines(caplog).count("event=database_still_unavailable") == len(calls) - 1


@pytest.mark.django_db(transaction=True)
def test_worker_loop__a_missing_table_stops_the_worker_at_once_with_exit_code_5(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def table_missing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise OperationalError("no such table: background_tasks_task")

    monkeypatch.setattr(worker_module, "claim_tasks", table_missing)

    with caplog.at_level(logging.INFO, logger="background_tasks"):
        assert Worker(sleep=0.01).run() == EXIT_NOT_MIGRATED  # not --burst: it would wait for ever

    assert calls == [1]
    assert "event=tables_missing" in caplog.text
    assert "python manage.py migrate" in caplog.text
    assert "database_unavailable" not in caplog.text


# -- real processes against a database that is not there ----------------------------------


def unreachable_database_url(tmp_path: Path) -> str:
    """A URL of this test run's database vendor that no connection can be opened to."""
    if connection.vendor == "sqlite":
        directory = tmp_path / "a-directory-not-a-database"
        directory.mkdir()
        return dburl.to_url({"ENGINE": dburl.SQLITE_ENGINE, "NAME": str(directory)})
    return dburl.to_url({**connection.settings_dict, "HOST": "127.0.0.1", "PORT": "1"})


def start_logging_to(log: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            manage_command("process_tasks", "--log-std", *args),
            env=worker_env(**env),
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_database_down__the_first_sigterm_stops_the_waiting_worker_promptly_and_cleanly(
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker.log"
    proc = start_logging_to(log, DATABASE_URL=unreachable_database_url(tmp_path))
    try:
        wait_for(lambda: "event=database_unavailable" in log.read_text(), 60, message="the wait")
        asked = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        took = time.monotonic() - asked
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    output = log.read_text()
    assert code == 0, output
    assert took < 2.0, took  # not after the pause in progress, nor at the next retry
    assert "event=worker_stopped" in output
    assert "Traceback" not in output, output


MODES = pytest.mark.parametrize("mode", [[], ["--processes", "1"]], ids=["threads", "processes"])


@MODES
def test_database_down__burst_gives_up_after_the_outage_limit_with_exit_code_4(
    tmp_path: Path, mode: list[str]
) -> None:
    started = time.monotonic()
    result = run_command(
        "process_tasks",
        "--burst",
        "--log-std",
        *mode,
        env=worker_env(
            DATABASE_URL=unreachable_database_url(tmp_path),
            BACKGROUND_TASKS_BURST_OUTAGE_LIMIT="2",
        ),
        timeout=60,
    )
    took = time.monotonic() - started

    output = result.stdout + result.stderr
    assert result.returncode == EXIT_DATABASE_UNAVAILABLE, output
    assert "event=database_unavailable_gave_up" in output
    assert "limit=2s" in output
    assert took < 30, took  # Django's start-up plus 2 s and one pause at most
    assert "Traceback" not in output, output


@MODES
def test_unmigrated_database__process_tasks_exits_non_zero_and_says_to_run_migrate(
    tmp_path: Path, mode: list[str]
) -> None:
    empty = dburl.to_url({"ENGINE": dburl.SQLITE_ENGINE, "NAME": str(tmp_path / "empty.db")})

    result = run_command(
        "process_tasks", "--log-std", *mode, env=worker_env(DATABASE_URL=empty), timeout=60
    )  # not --burst: without the check it would retry for ever

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "python manage.py migrate" in output
    assert "database_unavailable" not in output  # not taken for an outage
    assert "Traceback" not in output, output
