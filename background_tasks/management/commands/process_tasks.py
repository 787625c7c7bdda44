"""``python manage.py process_tasks``: parse and check the options, then run a Worker."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import router

from background_tasks.conf import app_settings
from background_tasks.database_wait import wait_for_database
from background_tasks.exit_codes import EXIT_NOT_MIGRATED
from background_tasks.models import Task
from background_tasks.registry import registry
from background_tasks.schema import require_migrated_for_command
from background_tasks.supervisor import Supervisor
from background_tasks.worker import Worker
from background_tasks.worker_logging import configure_logging

from ._args import non_negative_float, positive_float, positive_int


def queue_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a queue name cannot be empty")
    return text.strip()


def _legacy_logging_option(option: str) -> Callable[[str], str]:
    def refuse(text: str) -> str:
        raise argparse.ArgumentTypeError(
            f"django-background-tasks' {option} is not supported: configure the "
            "'background_tasks' logger in LOGGING, or pass --log-std (see docs/worker.md, "
            "Logging)"
        )

    return refuse


class Command(BaseCommand):
    help = "Run tasks from the queue until stopped (SIGTERM/SIGINT stop it cleanly)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queue",
            action="append",
            type=queue_name,
            default=[],
            metavar="NAME",
            help="Only run tasks of this queue (repeat for several; default: all queues).",
        )
        parser.add_argument(
            "--sleep",
            type=non_negative_float,
            default=None,
            metavar="SECONDS",
            help="Seconds to wait between polls when idle "
            f"(default: {app_settings.POLL_INTERVAL}).",
        )
        parser.add_argument(
            "--duration",
            type=non_negative_float,
            default=None,
            metavar="SECONDS",
            help="Stop cleanly after this many seconds "
            "(default: run until stopped; 0 means the same).",
        )
        parser.add_argument("--burst", action="store_true", help="Exit once no task is ready.")
        parser.add_argument(
            "--max-tasks",
            type=positive_int,
            default=None,
            metavar="N",
            help="Stop cleanly after claiming N tasks.",
        )
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            default=None,
            metavar="N",
            help="Threads running tasks in this process, each with its own database connection "
            "(default: BACKGROUND_TASKS_CONCURRENCY, 1).",
        )
        parser.add_argument(
            "--processes",
            type=positive_int,
            default=None,
            metavar="N",
            help="Run tasks in N supervised child processes instead of threads. Needed for hard "
            "time limits (timeout=, MAX_RUN_TIME): an overrunning task's process is killed and "
            "replaced. Each child runs one task at a time.",
        )
        parser.add_argument(
            "--batch",
            type=positive_int,
            default=None,
            metavar="N",
            help="After a task shorter than BACKGROUND_TASKS_BATCH_WINDOW, each thread claims "
            "up to N tasks at once and records their outcomes in one commit (default: "
            "BACKGROUND_TASKS_BATCH_SIZE, 10; 1: no batching). A crash can then run again "
            "the tasks that finished in the last window; see docs/delivery-semantics.md.",
        )
        parser.add_argument(
            "--shutdown-grace",
            type=non_negative_float,
            default=None,
            metavar="SECONDS",
            help="On SIGTERM/SIGINT, how long running tasks may finish before they are released "
            f"(default: {app_settings.SHUTDOWN_GRACE}).",
        )
        parser.add_argument(
            "--max-memory",
            type=positive_float,
            default=None,
            metavar="MB",
            help="Stop claiming once the worker's resident memory passes MB megabytes, let the "
            "running tasks finish, and exit with code 3 so the process manager restarts it "
            "(with --processes, the supervisor replaces the child instead; default: "
            "BACKGROUND_TASKS_MAX_MEMORY, no limit).",
        )
        parser.add_argument(
            "--log-std",
            action="store_true",
            help="Write the worker's log to standard output and standard error.",
        )
        # django-background-tasks' logging options: refused with what to do instead, rather
        # than argparse's bare "unrecognized arguments".
        for legacy in ("--log-file", "--log-level"):
            parser.add_argument(legacy, type=_legacy_logging_option(legacy), help=argparse.SUPPRESS)

    def execute(self, *args: Any, **options: Any) -> str | None:
        # Checked before the system checks run, which may touch the database (Django 6.1).
        if options.get("processes") and options.get("concurrency") not in (None, 1):
            raise CommandError(
                "--processes and --concurrency cannot be combined: in process mode each child "
                "runs one task at a time, so use --processes N alone."
            )
        if options.get("processes") and options.get("batch") not in (None, 1):
            raise CommandError(
                "--processes and --batch cannot be combined: in process mode each child runs "
                "one task at a time, and a child killed for overrunning its time limit must not "
                "take a batch's outcomes with it."
            )
        # Before the wait below, so that a worker waiting for its database says so.
        configure_logging(
            log_std=bool(options.get("log_std")), verbosity=int(options.get("verbosity", 1))
        )
        if not options.get("skip_checks"):
            # The system checks query the database on Django 6.1: wait for it first, as the
            # worker would, rather than fail with a traceback when it is down.
            code = wait_for_database(
                router.db_for_write(Task),
                give_up_after=app_settings.BURST_OUTAGE_LIMIT if options.get("burst") else None,
            )
            if code is not None:
                sys.exit(code)
        return super().execute(*args, **options)

    def handle(self, *args: Any, **options: Any) -> None:
        require_migrated_for_command(router.db_for_write(Task), returncode=EXIT_NOT_MIGRATED)
        worker_options: dict[str, Any] = {
            "queues": options["queue"],
            "sleep": options["sleep"],
            "burst": options["burst"],
            "max_tasks": options["max_tasks"],
            "duration": options["duration"] or None,  # django-background-tasks: 0 means for ever
            "shutdown_grace": options["shutdown_grace"],
            "max_memory": options["max_memory"],
        }
        if options["batch"] is not None:
            worker_options["batch_size"] = options["batch"]
        runner: Worker | Supervisor
        if options["processes"]:
            runner = Supervisor(
                processes=options["processes"],
                worker_options=worker_options,
                log_std=options["log_std"],
                verbosity=options["verbosity"],
            )
        else:
            runner = Worker(
                concurrency=options["concurrency"] or app_settings.CONCURRENCY, **worker_options
            )
            _warn_about_unenforced_time_limits()
        # Restored afterwards, for callers that run the command in their own process. Only the
        # main thread can set handlers; elsewhere the worker installs none either.
        in_main = threading.current_thread() is threading.main_thread()
        previous = {
            sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT) if in_main
        }
        runner.install_signal_handlers()
        try:
            code = runner.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if code:
            sys.exit(code)


def _warn_about_unenforced_time_limits() -> None:
    limited = sorted(name for name in registry if registry.get(name).timeout)
    if app_settings.MAX_RUN_TIME or limited:
        logging.getLogger("background_tasks").warning(
            "event=time_limits_not_enforced reason=thread_mode tasks=%s max_run_time=%s hint=%r",
            ",".join(limited) or "-",
            app_settings.MAX_RUN_TIME,
            "run process_tasks with --processes N to enforce timeout= and MAX_RUN_TIME",
        )
