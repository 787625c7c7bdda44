"""Entry point of a supervised child process (kept free of model imports: it runs before setup)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from typing import Any


def run_child(
    worker_id: str, options: dict[str, Any], log_std: bool = False, verbosity: int | None = None
) -> None:
    """Set Django up in a fresh process and run a Worker with one runner thread."""
    if hasattr(os, "setsid"):
        # Out of the supervisor's process group: a stop signal sent to the whole group
        # (systemd, supervisord's stopasgroup, Ctrl-C) reaches only the supervisor, which
        # forwards exactly one to each child, so the two-stage shutdown keeps its meaning.
        os.setsid()
    import django

    django.setup()
    from .worker import Worker
    from .worker_logging import configure_logging, log_to_std_streams

    if verbosity is not None:
        configure_logging(log_std=log_std, verbosity=verbosity)
    elif log_std:
        log_to_std_streams()
    # One task at a time, never a batch: a child killed for overrunning its time limit must not
    # take with it the outcomes of other tasks held for a batch's commit.
    worker = Worker(worker_id=worker_id, **{**options, "concurrency": 1, "batch_size": 1})
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.request_stop())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _stop_when_orphaned(worker)
    raise SystemExit(worker.run())


def _stop_when_orphaned(worker: Any) -> None:
    """Stop cleanly if the supervisor dies (even by SIGKILL) instead of running on unsupervised."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        worker.request_stop()

    threading.Thread(target=watch, name="background_tasks-parent-watch", daemon=True).start()
