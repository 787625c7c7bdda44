"""Waiting, at start-up, for a database that does not answer yet (a worker started with it)."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from types import FrameType

from django.db import DatabaseError, InterfaceError, connections

from .exit_codes import BURST_HINT, EXIT_DATABASE_UNAVAILABLE, EXIT_OK
from .outage import Outage, is_outage
from .wakeup import Alarm

logger = logging.getLogger("background_tasks")

_DB_ERRORS = (DatabaseError, InterfaceError)


def wait_for_database(using: str, *, give_up_after: float | None = None) -> int | None:
    """Wait until the database ``using`` accepts a connection; return None then.

    Waits with the outage backoff and log lines. Returns an exit code instead when a
    SIGTERM/SIGINT arrives meanwhile (``EXIT_OK``), or after ``give_up_after`` seconds of outage
    (``EXIT_DATABASE_UNAVAILABLE``). Errors that are no outage are left to whoever comes next.
    """
    outage = Outage("process_tasks")
    wake = Alarm()
    stopped: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.append(signum)
        wake.ring()

    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT) if in_main}
    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        while True:
            try:
                connections[using].ensure_connection()
            except _DB_ERRORS as exc:
                if not is_outage(exc):
                    return None
                pause = outage.failed(exc)
                with contextlib.suppress(*_DB_ERRORS):
                    connections[using].close()
                if give_up_after is not None and outage.down_for() >= give_up_after:
                    logger.error(
                        "event=database_unavailable_gave_up worker=process_tasks waited=%.1fs "
                        "limit=%gs hint=%r",
                        outage.down_for(),
                        give_up_after,
                        BURST_HINT,
                    )
                    return EXIT_DATABASE_UNAVAILABLE
                wake.wait(pause)
                if stopped:
                    logger.info("event=worker_stopped worker=process_tasks processed=0 released=0")
                    return EXIT_OK
                continue
            outage.succeeded()
            return None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
