"""Real ``process_tasks`` worker processes, started against the bench database, and their memory."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 30.0


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    env["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    # BENCH_DATABASE_URL is already in os.environ: run.py sets it before Django starts.
    return env


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, limit: int = 2_000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:]


@dataclass
class WorkerGroup:
    """Worker processes started together; ``wait()`` returns once all of them have exited."""

    members: list[WorkerProcess] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [member.pid for member in self.members]

    def running(self) -> bool:
        return any(member.process.poll() is None for member in self.members)

    def wait(self) -> None:
        for member in self.members:
            member.process.wait()

    def check(self) -> None:
        """Raise if a worker exited with an error, quoting the end of its log."""
        for member in self.members:
            code = member.process.returncode
            if code != 0:
                raise RuntimeError(
                    f"worker pid {member.pid} exited with {code}:\n{member.log_tail()}"
                )


@contextmanager
def workers(
    count: int, args: Sequence[str], env: dict[str, str] | None = None
) -> Iterator[WorkerGroup]:
    """Start ``count`` ``process_tasks`` processes; stop any still running on the way out."""
    group = WorkerGroup()
    command = [sys.executable, "-m", "django", "process_tasks", *args]
    try:
        for _ in range(count):
            log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _stop()
            process = subprocess.Popen(
                command, env=worker_env(env), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
            )
            group.members.append(WorkerProcess(process, log))
        yield group
    finally:
        _stop(group)


def _stop(group: WorkerGroup) -> None:
    """Stop the workers we started, by pid: SIGTERM, then SIGKILL for any that hang."""
    for member in group.members:
        if member.process.poll() is None:
            member.process.terminate()
    for member in group.members:
        try:
            member.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            member.process.kill()
            member.process.wait()
        member.log.close()


def children_cpu_seconds() -> float:
    """Return the user + system CPU time of every child process reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_average() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as handle:
            return " ".join(handle.read().split()[:3])
    except OSError:
        return "unknown"


def rss_kib(pid: int) -> tuple[int, int] | None:
    """Return (VmRSS, VmHWM) of a live process in KiB, or None once it is gone."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return None
    if "VmRSS" not in values:  # a zombie: exited, not yet reaped
        return None
    return values["VmRSS"], values.get("VmHWM", values["VmRSS"])
