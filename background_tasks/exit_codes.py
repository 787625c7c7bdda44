"""The exit codes of ``process_tasks`` and of its child processes (see docs/worker.md)."""

from __future__ import annotations

#: A clean stop, or nothing left to do (``--burst``).
EXIT_OK = 0
#: A second SIGTERM/SIGINT stopped the worker without waiting for its running tasks.
EXIT_FORCED = 1
#: The worker stopped between tasks because its resident memory passed ``--max-memory``.
EXIT_MEMORY_LIMIT = 3
#: A ``--burst`` worker gave up waiting for an unreachable database.
EXIT_DATABASE_UNAVAILABLE = 4
#: The app's tables are missing: ``python manage.py migrate`` was not run.
EXIT_NOT_MIGRATED = 5
#: A runner thread ended on what a signal receiver raised past ``signals.emit`` (SystemExit,
#: KeyboardInterrupt): the worker stopped cleanly, to be restarted with all its threads.
EXIT_RUNNER_ENDED = 6

#: The hint logged when a ``--burst`` worker exits with ``EXIT_DATABASE_UNAVAILABLE``.
BURST_HINT = "--burst waits BACKGROUND_TASKS_BURST_OUTAGE_LIMIT seconds for the database"
