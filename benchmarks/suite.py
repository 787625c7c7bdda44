"""Run the benchmark phases against the configured database and print what they measured."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, connection

from . import ceiling, claim_cost, dashboard, db, latency, machine, memory, report, throughput
from .workers import load_average


def _progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the selected phases; return 0, or 1 when a phase failed."""
    db.ensure_database()
    db.migrate()
    db.empty()
    description = machine.describe() + db.server_description() + db.latency_probe()
    width = max(len(label) for label, _ in description)
    print(f"background_tasks benchmarks on {connection.vendor}")
    for label, value in description:
        print(f"  {label.ljust(width)}  {value}")
    print(f"  {'Settings'.ljust(width)}  {_settings_line(args)}", flush=True)

    results: dict[str, Any] = {"machine": dict(description), "settings": vars(args).copy()}
    failed = False
    # The ceiling the enqueue and drain figures are shown as ratios to (None: not measured).
    measured: dict[str, ceiling.Ceiling | None] = {"ceiling": None}
    phases: dict[str, Callable[[], Any]] = {
        "ceiling": lambda: _ceiling(args, measured),
        "enqueue": lambda: _enqueue(args, measured["ceiling"]),
        "drain": lambda: _drain(args, measured["ceiling"]),
        "latency": lambda: _latency(args),
        "claims": lambda: _claims(args),
        "memory": lambda: _memory(args),
        "dashboard": lambda: _dashboard(args),
    }
    try:
        for name in args.phases:
            try:
                results[name] = phases[name]()
                print(f"(load average after this phase: {load_average()})", flush=True)
            except (DatabaseError, RuntimeError, OSError):
                failed = True
                print(f"\n!! phase {name} failed:\n{traceback.format_exc()}", flush=True)
                connection.close()  # start the next phase on a fresh connection
    finally:
        _clean_up()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2, default=_jsonable)
        print(f"\nresults written to {args.json}")
    return 1 if failed else 0


def _settings_line(args: argparse.Namespace) -> str:
    return (
        f"tasks={args.tasks} bulk_tasks={args.bulk_tasks} workers={args.workers} "
        f"conn_max_age={args.conn_max_age or '0 (default)'} "
        f"claim_history_rows={args.claim_history_rows} "
        f"claim_scheduled_rows={args.claim_scheduled_rows} "
        f"claim_backlog_rows={args.claim_backlog_rows} claim_rounds={args.claim_rounds} "
        f"memory_tasks={args.memory_tasks} memory_concurrency={args.memory_concurrency} "
        f"memory_conn_max_age={args.memory_conn_max_age} memory_backlog={args.memory_backlog} "
        f"memory_vacuum={args.memory_vacuum:g}s "
        f"quick={args.quick}"
    )


def _ceiling(args: argparse.Namespace, measured: dict[str, ceiling.Ceiling | None]) -> Any:
    _progress(
        f"ceiling: plain SQL loops through the driver, {args.tasks} rows each "
        f"({args.bulk_tasks} for the multi-row INSERTs)"
    )
    result = ceiling.measure(args.tasks, args.bulk_tasks)
    measured["ceiling"] = result
    print(report.heading("0. Ceiling: the same work in plain SQL through the driver, no Django"))
    print(report.ceiling(result), flush=True)
    return result


def _enqueue(args: argparse.Namespace, top: ceiling.Ceiling | None) -> Any:
    _progress(
        f"enqueue: {args.tasks} ORM inserts and calls of a @background no-op task, twice each; "
        f"one bulk call of {args.bulk_tasks}"
    )
    results = throughput.measure_enqueue(args.tasks, args.bulk_tasks)
    print(report.heading("1. Enqueue throughput (from this process)"))
    print(report.enqueue(results, top), flush=True)
    return results


def _drain(args: argparse.Namespace, top: ceiling.Ceiling | None) -> Any:
    # None: the worker's default batching (BATCH_SIZE, for tasks shorter than BATCH_WINDOW).
    runs: list[tuple[str, int, int, str | None, int | None]] = [
        ("a", 1, 1, None, None),
        ("b", args.workers, 1, None, None),
    ]
    if args.conn_max_age is None:
        # The same as (a) with persistent connections: what Django's default CONN_MAX_AGE costs.
        runs.append(("c", 1, 1, "none", None))
    # The scaling the targets name, as ratios to (a): threads of one process, and processes.
    runs += [("d", 1, 4, None, None), ("e", 2, 1, None, None)]
    # (a) without batching (--batch 1): one commit per task, what a crash can re-run is least.
    runs.append(("f", 1, 1, None, 1))
    _progress("drain: start-up cost of one worker on an empty queue")
    startup = throughput.measure_startup()
    results = []
    for label, processes, concurrency, conn_max_age, batch in runs:
        _progress(
            f"drain ({label}): {args.tasks} tasks, {processes} process_tasks --burst process(es)"
        )
        results.append(
            throughput.measure_drain(
                args.tasks, processes, concurrency, f"({label})", startup, conn_max_age, batch
            )
        )
    print(report.heading("2. Drain throughput (real process_tasks --burst processes)"))
    print(report.drain(startup, results, top), flush=True)
    return {"startup": startup, "runs": results}


def _latency(args: argparse.Namespace) -> Any:
    listen = latency.uses_listen()
    # Where the worker polls, each sample waits about half a poll interval: fewer samples.
    sizes = (200, 10) if listen else (12, 4)
    count = args.latency_tasks or sizes[args.quick]
    poll = args.latency_poll
    if poll is None and args.quick and not listen:
        poll = 0.2  # a few seconds in CI; the figure is then the 0.2 s poll's, not the default's
    _progress(
        f"latency: {count} tasks enqueued one at a time into an idle worker "
        f"({'LISTEN/NOTIFY' if listen else 'polling'})"
    )
    result = latency.measure(count, poll)
    print(report.heading("2b. Pickup latency of an idle worker (commit to task body)"))
    print(latency.report(result), flush=True)
    return result


def _claims(args: argparse.Namespace) -> Any:
    sizes = claim_cost.ClaimSizes(
        args.claim_history_rows, args.claim_scheduled_rows, args.claim_backlog_rows
    )
    _progress(
        f"claims: 6 scenarios ({sizes.history:,} history rows, {sizes.scheduled:,} far-future "
        f"rows at each of 3 priorities, {sizes.backlog:,} more ready rows), "
        f"{args.claim_rounds} claims per query"
    )
    results = claim_cost.measure(sizes, args.claim_rounds)
    print(report.heading("3. Claim cost vs history and far-future scheduled rows"))
    print(report.claims(results))
    print(report.heading("Claim plans"))
    print(report.plans(results, everything=args.plans), flush=True)
    return results


def _memory(args: argparse.Namespace) -> Any:
    _progress(
        f"memory: one process_tasks --concurrency {args.memory_concurrency} "
        f"draining {args.memory_tasks:,} tasks"
    )
    env = {"BENCH_CONN_MAX_AGE": args.memory_conn_max_age}
    if connection.vendor == "postgresql" and not args.memory_durable:
        env["BENCH_PG_ASYNC_COMMIT"] = "1"
    result = memory.measure(
        args.memory_tasks, args.memory_concurrency, args.memory_backlog, env, args.memory_vacuum
    )
    print(report.heading(f"4. Worker resident memory over {args.memory_tasks:,} tasks"))
    print(report.memory(result), flush=True)
    return result


def _dashboard(args: argparse.Namespace) -> Any:
    _progress(
        f"dashboard: {args.dashboard_rows:,} history rows, twice (30 days, 24 hours), "
        f"{args.dashboard_rounds} page loads each"
    )
    results = dashboard.measure(args.dashboard_rows, args.dashboard_rounds)
    print(report.heading("5. Admin dashboard with a large history (whole page, logged in)"))
    print(report.dashboard(results), flush=True)
    return results


def _clean_up() -> None:
    """Leave the bench tables empty, even after a failure or Ctrl-C, if the database lets us."""
    try:
        connection.close()
        db.empty()
    except (DatabaseError, KeyboardInterrupt):
        pass


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)
