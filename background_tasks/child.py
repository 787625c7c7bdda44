"""Entry point of a supervised child process (kept free of model imports: it runs before setup)."""

from __future__ import annotations

import signal
from typing import Any


def run_child(worker_id: str, options: dict[str, Any]) -> None:
    """Set Django up in a fresh process and run a Worker with one runner thread."""
    import django

    django.setup()
    from .worker import Worker

    # Ctrl-C in a terminal reaches the whole process group; only the supervisor acts on it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = Worker(worker_id=worker_id, concurrency=1, **options)
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.request_stop())
    raise SystemExit(worker.run())
